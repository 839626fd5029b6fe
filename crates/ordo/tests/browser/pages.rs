//! The dashboard, the order page and the API reference, driven as a user would.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::webdriver::{Browser, Element};

/// An app and a browser, for one test.
async fn start() -> (TestApp, Browser) {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    (app, browser)
}

/// Creates an order and waits until the read models show it.
async fn create_visible(app: &TestApp, name: &str, email: &str, product: &str) -> CommandAnswer {
    let created = app
        .create_order(&order_body(name, email, &[(product, 1, "12.50")]))
        .await;
    let response = app
        .get_after(
            &format!("/api/v1/orders/order/{}", created.order_id),
            &created.token,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    created
}

async fn row_texts(browser: &Browser) -> Vec<String> {
    let mut texts = Vec::new();
    for row in browser.find_all("#orders tbody tr").await {
        texts.push(browser.text(&row).await.unwrap_or_default());
    }
    texts
}

async fn timeline_versions(browser: &Browser) -> Vec<String> {
    let mut versions = Vec::new();
    for item in browser.find_all("#timeline li").await {
        versions.push(
            browser
                .attribute(&item, "data-version")
                .await
                .unwrap_or_default(),
        );
    }
    versions
}

async fn order_json(app: &TestApp, id: &str) -> Value {
    json_of(
        app.get(&format!("/api/v1/orders/order/{id}")).await,
        StatusCode::OK,
    )
    .await
}

/// Whether the first element matching `css` is rendered (not hidden, in any way).
async fn visible(browser: &Browser, css: &str) -> bool {
    let Some(element) = browser.find_all(css).await.into_iter().next() else {
        return false;
    };
    browser
        .script(
            "return arguments[0].getClientRects().length > 0",
            json!([element.as_arg()]),
        )
        .await
        == json!(true)
}

/// Waits for an element to be rendered, and returns it.
async fn shown(browser: &Browser, css: &str) -> Element {
    browser
        .wait_for(&format!("{css} to be shown"), || async {
            if visible(browser, css).await {
                browser.find_all(css).await.into_iter().next()
            } else {
                None
            }
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_an_order_created_through_the_api() {
    let (app, browser) = start().await;
    let created =
        create_visible(&app, "Ada Lovelace", "ada@example.com", "Difference Engine").await;

    browser.goto(&app.url("/")).await;
    let link = browser
        .find(&format!(
            "#orders tbody a[href='/orders/{}']",
            created.order_id
        ))
        .await;
    let rows = row_texts(&browser).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].contains("Ada Lovelace")
            && rows[0].contains("ada@example.com")
            && rows[0].contains("pending"),
        "{rows:?}"
    );
    browser
        .wait_text("#total-orders", "the summary's order count", |t| t == "1")
        .await;
    browser
        .wait_text("#top-chart", "top customers to name Ada", |t| {
            t.contains("Ada Lovelace")
        })
        .await;
    browser
        .wait_text("#ready", "the readiness line", |t| t.starts_with("Ready"))
        .await;
    browser
        .wait_text("#projections tbody", "the projection's position", |t| {
            t.contains("orders")
        })
        .await;

    browser.click(&link).await;
    browser
        .wait_text("#state", "the order page's state", |t| {
            t.contains("Difference Engine")
        })
        .await;
    assert_eq!(
        browser.current_url().await,
        app.url(&format!("/orders/{}", created.order_id))
    );
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_an_order_created_while_it_is_open() {
    let (app, browser) = start().await;
    create_visible(&app, "Ada Lovelace", "ada@example.com", "Difference Engine").await;

    browser.goto(&app.url("/")).await;
    browser
        .wait_for("the first order", || async {
            (row_texts(&browser).await.len() == 1).then_some(())
        })
        .await;
    browser
        .wait_text("#live", "the live stream to be connected", |t| t == "Live")
        .await;

    app.create_order(&order_body(
        "Linus Torvalds",
        "linus@example.com",
        &[("Kernel", 1, "1.00")],
    ))
    .await;
    let rows = browser
        .wait_for("the new order's row, without a reload", || async {
            let rows = row_texts(&browser).await;
            (rows.len() == 2).then_some(rows)
        })
        .await;
    assert!(rows[0].contains("Linus Torvalds"), "newest first: {rows:?}");
    browser
        .wait_text("#total-orders", "the summary to follow", |t| t == "2")
        .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_narrows_the_table_and_the_url_carries_the_term() {
    let (app, browser) = start().await;
    create_visible(&app, "Grace Hopper", "grace@navy.mil", "Compiler").await;
    create_visible(&app, "Alan Turing", "alan@bletchley.uk", "Bombe").await;
    create_visible(
        &app,
        "Grace Murray",
        "murray@example.com",
        "Nanosecond Wire",
    )
    .await;

    browser.goto(&app.url("/")).await;
    browser
        .wait_for("three rows", || async {
            (row_texts(&browser).await.len() == 3).then_some(())
        })
        .await;

    // By keyboard: type the term, Enter submits.
    let search = browser.find("#q").await;
    browser.type_text(&search, "grace\u{E007}").await;
    let rows = browser
        .wait_for("the two orders of the Graces", || async {
            let rows = row_texts(&browser).await;
            (rows.len() == 2).then_some(rows)
        })
        .await;
    assert!(rows.iter().all(|r| r.contains("Grace")), "{rows:?}");
    let url = browser.current_url().await;
    assert!(url.ends_with("/?q=grace"), "{url}");
    browser
        .wait_text("#list-message", "the match count", |t| {
            t.contains("2 orders matching")
        })
        .await;

    // An empty search shows every order again.
    browser.clear(&search).await;
    browser.click_on("#filters button[type=submit]").await;
    browser
        .wait_for("all three rows again", || async {
            (row_texts(&browser).await.len() == 3).then_some(())
        })
        .await;
    assert!(browser.current_url().await.ends_with('/'));

    // The URL is the view: opened afresh, it shows the same search.
    browser.goto(&app.url("/?q=turing&sort=totalAmount")).await;
    let rows = browser
        .wait_for("the one Turing order", || async {
            let rows = row_texts(&browser).await;
            (rows.len() == 1 && rows[0].contains("Alan Turing")).then_some(rows)
        })
        .await;
    assert_eq!(rows.len(), 1);
    let q = browser
        .script(
            "return [document.getElementById('q').value, document.getElementById('sort').value]",
            json!([]),
        )
        .await;
    assert_eq!(q, json!(["turing", "totalAmount"]));

    // Sorting by a header goes into the URL too.
    browser.goto(&app.url("/")).await;
    browser
        .wait_for("three rows", || async {
            (row_texts(&browser).await.len() == 3).then_some(())
        })
        .await;
    browser.click_on("th[data-sort=totalAmount] button").await;
    browser
        .wait_for("the sort in the URL", || async {
            browser
                .current_url()
                .await
                .ends_with("?sort=-totalAmount")
                .then_some(())
        })
        .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_page_shows_its_timeline_moves_through_versions_and_advances_the_status() {
    let (app, browser) = start().await;
    let created = create_visible(&app, "Edsger Dijkstra", "ewd@example.com", "Semaphore").await;
    let id = created.order_id.clone();
    let confirmed = app.set_status(&id, "confirmed").await;
    app.get_after(&format!("/api/v1/orders/order/{id}"), &confirmed.token)
        .await;

    browser.goto(&app.url(&format!("/orders/{id}"))).await;
    browser
        .wait_for("two events", || async {
            (timeline_versions(&browser).await == ["1", "2"]).then_some(())
        })
        .await;
    let timeline = browser.text_of("#timeline").await.unwrap_or_default();
    assert!(
        timeline.contains("OrderCreated") && timeline.contains("OrderStatusChanged"),
        "{timeline}"
    );
    assert!(timeline.contains("pending → confirmed"), "{timeline}");
    assert!(timeline.contains("Correlation"), "{timeline}");
    browser
        .wait_text("#state", "the current state", |t| {
            t.contains("confirmed") && t.contains("Semaphore")
        })
        .await;
    browser
        .wait_text("#version-label", "the newest version selected", |t| {
            t == "Version 2 of 2"
        })
        .await;
    browser
        .wait_text("#past [data-version='2']", "version 2's state", |t| {
            t.contains("confirmed")
        })
        .await;

    // Back to version 1: the order as it was, folded from the store.
    browser.click_on("#version-prev").await;
    browser
        .wait_text("#version-label", "version 1 selected", |t| {
            t == "Version 1 of 2"
        })
        .await;
    let past = browser
        .wait_text("#past [data-version='1']", "version 1's state", |t| {
            t.contains("pending")
        })
        .await;
    assert!(!past.contains("confirmed"), "{past}");

    // The next step: processing, sent with If-Match on version 2.
    let advance = shown(&browser, "#advance").await;
    assert_eq!(
        browser.text(&advance).await.as_deref(),
        Some("Mark as processing")
    );
    browser.click(&advance).await;
    browser
        .wait_for("the third event", || async {
            (timeline_versions(&browser).await == ["1", "2", "3"]).then_some(())
        })
        .await;
    browser
        .wait_text("#state", "the state after the command", |t| {
            t.contains("processing")
        })
        .await;
    browser
        .wait_text("#command-result", "the command's answer", |t| {
            t.contains("version 3")
        })
        .await;
    let order = order_json(&app, &id).await;
    assert_eq!(order["status"], json!("processing"));
    assert_eq!(order["version"], json!(3));

    // Cancel with a reason, from the page.
    let reason = browser.find("#cancel-reason").await;
    browser
        .type_text(&reason, "customer changed their mind")
        .await;
    browser.click_on("#cancel").await;
    browser
        .wait_text("#timeline", "the cancellation in the timeline", |t| {
            t.contains("“customer changed their mind”")
        })
        .await;
    browser
        .wait_text("#state", "the cancelled state", |t| t.contains("cancelled"))
        .await;
    assert!(
        !visible(&browser, "#advance").await,
        "a cancelled order has no next step"
    );
    assert!(
        !visible(&browser, "#cancel-form").await,
        "nor can it be cancelled again"
    );
    assert!(
        visible(&browser, "#delete").await,
        "it can still be deleted"
    );
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stored_through_the_api_arrives_live_on_the_open_order_page() {
    let (app, browser) = start().await;
    let created = create_visible(&app, "Barbara Liskov", "liskov@example.com", "CLU").await;
    let id = created.order_id.clone();

    browser.goto(&app.url(&format!("/orders/{id}"))).await;
    browser
        .wait_for("the first event", || async {
            (timeline_versions(&browser).await == ["1"]).then_some(())
        })
        .await;
    browser
        .wait_text("#live", "the live stream to be connected", |t| t == "Live")
        .await;

    app.set_status(&id, "confirmed").await;
    browser.find("#timeline li.fresh[data-version='2']").await;
    browser
        .wait_text("#state", "the state to follow the event", |t| {
            t.contains("confirmed")
        })
        .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_if_match_shows_the_problem_and_offers_a_reload() {
    let (app, browser) = start().await;
    let created = create_visible(&app, "Tony Hoare", "hoare@example.com", "Quicksort").await;
    let id = created.order_id.clone();

    browser.goto(&app.url(&format!("/orders/{id}"))).await;
    shown(&browser, "#advance").await;
    browser
        .wait_text("#if-match-version", "the page's version", |t| t == "1")
        .await;
    // Live updates would bring the page up to date by themselves; this page is stale
    // on purpose.
    browser
        .wait_for("the live stream to settle", || async {
            let state = browser.text_of("#live").await?;
            (state != "Connecting…").then_some(())
        })
        .await;
    browser.click_on("#live-toggle").await;

    app.set_status(&id, "confirmed").await;
    browser.click_on("#advance").await;
    let problem = shown(&browser, "#problem").await;
    let text = browser.text(&problem).await.unwrap_or_default();
    assert!(text.contains("changed since this page showed it"), "{text}");
    assert!(text.contains("If-Match"), "{text}");
    let order = order_json(&app, &id).await;
    assert_eq!(
        order["version"],
        json!(2),
        "the stale command stored nothing"
    );

    browser.click(&shown(&browser, "#reload").await).await;
    browser
        .wait_text("#if-match-version", "the reloaded version", |t| t == "2")
        .await;
    browser
        .wait_text("#advance", "the next step after the reload", |t| {
            t == "Mark as processing"
        })
        .await;
    let hidden = browser
        .script(
            "return document.getElementById('problem').hidden",
            json!([]),
        )
        .await;
    assert_eq!(hidden, json!(true));
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_order_shows_its_history_and_says_it_was_deleted() {
    let (app, browser) = start().await;
    let created = create_visible(&app, "Niklaus Wirth", "wirth@example.com", "Pascal").await;
    let id = created.order_id.clone();
    assert_eq!(app.delete(&id).await.status(), StatusCode::OK);

    browser.goto(&app.url(&format!("/orders/{id}"))).await;
    browser
        .wait_text("#state", "the deletion notice", |t| {
            t.contains("This order was deleted")
        })
        .await;
    browser
        .wait_for("both events", || async {
            (timeline_versions(&browser).await == ["1", "2"]).then_some(())
        })
        .await;
    let commands_hidden = browser
        .script(
            "return document.getElementById('commands-panel').hidden",
            json!([]),
        )
        .await;
    assert_eq!(commands_hidden, json!(true));
    browser.click_on("#version-prev").await;
    browser
        .wait_text(
            "#past [data-version='1']",
            "version 1 of the deleted order",
            |t| t.contains("Pascal"),
        )
        .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_lists_the_operations() {
    let (app, browser) = start().await;
    browser.goto(&app.url("/docs")).await;
    let operations = browser
        .wait_for("Swagger UI's operations", || async {
            let n = browser.find_all(".opblock").await.len();
            (n > 0).then_some(n)
        })
        .await;
    assert!(operations >= 10, "{operations} operations");
    let text = browser.text_of(".swagger-ui").await.unwrap_or_default();
    assert!(text.contains("/api/v1/orders/order/{id}"), "{text}");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_on_the_pages_has_a_label_and_every_table_its_headers() {
    let (app, browser) = start().await;
    let created = create_visible(&app, "Frances Allen", "allen@example.com", "Optimizer").await;
    for (path, ready) in [
        ("/", "#orders tbody tr"),
        (&*format!("/orders/{}", created.order_id), "#timeline li"),
    ] {
        browser.goto(&app.url(path)).await;
        browser.find(ready).await;
        let unlabelled = browser
            .script(
                "return [...document.querySelectorAll('input, select, textarea, button')]\
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())\
                 .map(e => e.outerHTML)",
                json!([]),
            )
            .await;
        assert_eq!(unlabelled, json!([]), "{path}: controls without a name");
        let headless = browser
            .script(
                "return [...document.querySelectorAll('table')].filter(t => !t.querySelector('th[scope]')).map(t => t.id || t.outerHTML.slice(0, 80))",
                json!([]),
            )
            .await;
        assert_eq!(headless, json!([]), "{path}: tables without header cells");
        let charts = browser
            .script(
                "return [...document.querySelectorAll('svg')].filter(s => !s.getAttribute('aria-label')).length",
                json!([]),
            )
            .await;
        assert_eq!(
            charts,
            json!(0),
            "{path}: a chart without a text alternative"
        );
    }
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_requests_anything_from_another_host() {
    let (app, browser) = start().await;
    let created = create_visible(&app, "Ken Thompson", "ken@example.com", "Unix").await;
    let origin = app.address.clone();
    let pages = [
        ("/", "#orders tbody tr"),
        (&*format!("/orders/{}", created.order_id), "#timeline li"),
        ("/docs", ".swagger-ui"),
    ];
    for (path, ready) in pages {
        browser.goto(&app.url(path)).await;
        browser.find(ready).await;
        // Let the page's first requests (charts, metrics, stream) start.
        browser
            .wait_for("the page's requests", || async {
                let n = browser
                    .script(
                        "return performance.getEntriesByType('resource').length",
                        json!([]),
                    )
                    .await;
                (n.as_u64().unwrap_or(0) >= 3).then_some(())
            })
            .await;
        let urls = browser
            .script(
                "return performance.getEntriesByType('resource').map(e => e.name)\
                 .concat([...document.querySelectorAll('script[src],link[href],img[src],iframe[src],source[src]')].map(e => e.src || e.href))\
                 .filter(u => typeof u === 'string' && !u.startsWith('data:') && !u.startsWith('#'))",
                json!([]),
            )
            .await;
        let urls: Vec<String> = serde_json::from_value(urls).expect("urls");
        let foreign: Vec<&String> = urls
            .iter()
            .filter(|u| !u.starts_with(&format!("{origin}/")))
            .collect();
        assert!(foreign.is_empty(), "{path} asked other hosts: {foreign:?}");
    }
    browser.quit().await;
}

/// The width and height a PNG's header declares (its IHDR chunk), or `None` when `bytes`
/// is not a PNG.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let header = bytes.get(..24)?;
    if &header[..8] != b"\x89PNG\r\n\x1a\n" || &header[12..16] != b"IHDR" {
        return None;
    }
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    Some((word(16), word(20)))
}

/// A full dashboard (30 orders of 8 customers in every status) and an order page with five
/// events render completely and screenshot as a 1280-wide image. The same run makes the
/// README's pictures: with `ORDO_WRITE_SCREENSHOTS=1` it writes them to docs/images/
/// (`ORDO_WRITE_SCREENSHOTS=1 cargo test -p ordo --test browser full_pages`), else to a
/// temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pages_render_completely_and_screenshot_at_the_window_size() {
    let (app, browser) = start().await;
    let customers = [
        ("Ada Lovelace", "ada@example.com"),
        ("Charles Babbage", "charles@example.com"),
        ("Grace Hopper", "grace@navy.mil"),
        ("Alan Turing", "alan@bletchley.uk"),
        ("Edsger Dijkstra", "ewd@example.com"),
        ("Barbara Liskov", "liskov@example.com"),
        ("Donald Knuth", "knuth@example.com"),
        ("Margaret Hamilton", "hamilton@example.com"),
    ];
    let products = [
        ("Difference Engine", "149.00"),
        ("Punched Cards", "4.50"),
        ("Compiler", "89.90"),
        ("Bombe", "420.00"),
        ("Semaphore", "12.00"),
        ("Core Rope Memory", "260.00"),
    ];
    let walks: [&[&str]; 6] = [
        &[],
        &["confirmed"],
        &["confirmed", "processing"],
        &["confirmed", "processing", "shipped"],
        &["confirmed", "processing", "shipped", "delivered"],
        &["confirmed", "processing", "shipped", "delivered"],
    ];
    let mut last = None;
    let mut showcase = None;
    for n in 0..30usize {
        let (name, email) = customers[(n * 3 + n / 8) % customers.len()];
        let (product, price) = products[(n * 7) % products.len()];
        let quantity = u32::try_from(1 + n % 4).expect("small");
        let created = app
            .create_order(&order_body(name, email, &[(product, quantity, price)]))
            .await;
        let mut token = created.token.clone();
        for status in walks[n % walks.len()] {
            token = app.set_status(&created.order_id, status).await.token;
        }
        if n % 7 == 3 {
            let response = app
                .cancel(
                    &created.order_id,
                    Some(&json!({"reason": "found a better price"})),
                )
                .await;
            if response.status() == StatusCode::OK {
                token = CommandAnswer::from(response).await.token;
            }
        }
        if n == 28 {
            showcase = Some(created.order_id.clone());
        }
        last = Some(token);
    }
    let token = last.expect("orders");
    app.get_after("/api/v1/orders/summary", &token).await;

    let scratch = tempfile::tempdir().expect("temp dir");
    let images = if std::env::var_os("ORDO_WRITE_SCREENSHOTS").is_some_and(|v| v == "1") {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images")
    } else {
        scratch.path().to_path_buf()
    };
    std::fs::create_dir_all(&images).expect("the screenshots' directory");
    let save = |name: &str, png: Vec<u8>| {
        let (width, height) = png_size(&png).expect("the screenshot is a PNG");
        assert_eq!(width, 1280, "{name}: {width}x{height}");
        assert!((700..=943).contains(&height), "{name}: {width}x{height}");
        std::fs::write(images.join(name), png).expect("write the screenshot");
    };
    // The window's frame takes part of its height; this leaves a viewport of about 800.
    browser.set_window_size(1280, 943).await;
    browser.goto(&app.url("/")).await;
    browser
        .wait_text("#total-orders", "the summary", |t| t == "30")
        .await;
    browser.find("#top-chart svg").await;
    browser.find("#status-chart svg").await;
    browser
        .wait_for("the order rows", || async {
            (row_texts(&browser).await.len() == 20).then_some(())
        })
        .await;
    browser
        .wait_text("#projections tbody", "the projections", |t| {
            t.contains("orders")
        })
        .await;
    save("dashboard.png", browser.screenshot().await);

    let id = showcase.expect("a showcase order");
    browser.goto(&app.url(&format!("/orders/{id}"))).await;
    browser.find("#timeline li[data-version='5']").await;
    browser
        .click_on("#timeline li[data-version='3'] button")
        .await;
    browser.find("#past [data-version='3']").await;
    browser
        .wait_text("#state", "the state", |t| t.contains("delivered"))
        .await;
    browser.script("window.scrollTo(0, 0)", json!([])).await;
    save("order.png", browser.screenshot().await);
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_api_tokens_the_dashboard_asks_for_a_token_then_shows_the_orders_live() {
    const READ: &str = "dashboard-read-token-01";
    const WRITE: &str = "dashboard-write-token-1";
    let tokens =
        ordo_http::ApiTokens::parse(&format!("{READ} read\n{WRITE} write\n")).expect("token file");
    let app = TestApp::spawn_configured(ordo::Settings {
        admin_token: Some(ADMIN_TOKEN.into()),
        api_tokens: Some(std::sync::Arc::new(tokens)),
        ..ordo::Settings::default()
    })
    .await;
    let create = |name: &'static str| {
        app.request(reqwest::Method::POST, "/api/v1/orders/order")
            .bearer_auth(WRITE)
            .json(&order_body(
                name,
                "token@example.com",
                &[("Key", 1, "3.00")],
            ))
            .send()
    };
    let first = CommandAnswer::from(create("Alice Token").await.expect("request")).await;
    let seen = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/orders/order/{}", first.order_id),
        )
        .bearer_auth(READ)
        .header("X-Consistency-Token", &first.token)
        .header("X-Consistency-Timeout-Ms", "30000")
        .send()
        .await
        .expect("request");
    assert_eq!(seen.status(), StatusCode::OK);

    let browser = Browser::start().await;
    browser.goto(&app.url("/")).await;
    shown(&browser, "#api-token-box").await;
    assert!(
        row_texts(&browser)
            .await
            .iter()
            .all(|r| !r.contains("Alice"))
    );
    let field = browser.find("#api-token").await;
    browser.type_text(&field, READ).await;
    browser
        .click_on("#api-token-form button[type=submit]")
        .await;
    browser
        .wait_for("the orders, with the token", || async {
            let rows = row_texts(&browser).await;
            rows.iter().any(|r| r.contains("Alice Token")).then_some(())
        })
        .await;
    assert!(!visible(&browser, "#api-token-box").await);
    assert_eq!(
        browser
            .script(
                "return [sessionStorage.getItem('ordo.apiToken'), localStorage.length]",
                json!([])
            )
            .await,
        json!([READ, 0]),
        "the token is kept in this tab only"
    );
    browser
        .wait_text("#live", "the live stream to be connected", |t| t == "Live")
        .await;
    create("Bob Token").await.expect("request");
    browser
        .wait_for("the new order, live", || async {
            let rows = row_texts(&browser).await;
            rows.iter().any(|r| r.contains("Bob Token")).then_some(())
        })
        .await;
    browser.quit().await;
}
