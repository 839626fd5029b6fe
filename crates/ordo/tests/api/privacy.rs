//! Personal data erasure (crypto-shredding), through the real service on the run's store
//! combination: what the stores hold before and after, every way of reading an order,
//! replays and restarts, and an erasure racing the customer's own orders.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{start_job, wait_for_job};
use crate::cli::ordo;
use crate::helpers::*;
use crate::raw::{Scope, raw_storage};

const ADA_NAME: &str = "Ada Quillfeather";
const ADA_EMAIL: &str = "Ada.Quillfeather@Example.org";
const BOB_NAME: &str = "Bob Marrowgate";
const BOB_EMAIL: &str = "bob.marrowgate@example.net";

/// Text of Ada's personal data as any store could hold it (the e-mail lower-cased, the
/// search text lower-cased).
const ADA_TRACES: [&str; 5] = [
    "Quillfeather",
    "quillfeather",
    "Zebrafinch",
    "zebrafinch",
    "Quillton",
];
const BOB_TRACES: [&str; 3] = ["Marrowgate", "marrowgate", "Larkspur"];

fn ada_order(product: &str) -> Value {
    let mut body = order_body(ADA_NAME, ADA_EMAIL, &[(product, 2, "19.99")]);
    body["shippingAddress"] = json!({
        "line1": "17 Zebrafinch Row", "city": "Quillton", "postalCode": "QX9 7ZZ", "country": "GB"
    });
    body
}

fn bob_order() -> Value {
    let mut body = order_body(BOB_NAME, BOB_EMAIL, &[("Loom", 1, "5.00")]);
    body["shippingAddress"] = json!({
        "line1": "3 Larkspur Close", "city": "Leeds", "postalCode": "LS1 1AA", "country": "GB"
    });
    body
}

fn found<'a>(raw: &str, traces: &[&'a str]) -> Vec<&'a str> {
    traces.iter().copied().filter(|t| raw.contains(t)).collect()
}

async fn erase(app: &TestApp, email: &str) -> reqwest::Response {
    app.admin(
        Method::DELETE,
        &format!("/api/v1/admin/customers/{email}/personal-data"),
    )
    .send()
    .await
    .expect("request")
}

/// The view of an order once the read models have caught up with `token`.
async fn view(app: &TestApp, id: &str, token: &str) -> Value {
    json_of(
        app.get_after(&format!("/api/v1/orders/order/{id}"), token)
            .await,
        StatusCode::OK,
    )
    .await
}

fn assert_erased(view: &Value) {
    assert_eq!(view["customerName"], Value::Null, "{view}");
    assert_eq!(view["customerEmail"], Value::Null, "{view}");
    assert_eq!(view["shippingAddress"], Value::Null, "{view}");
    assert_eq!(view["personalDataErased"], json!(true), "{view}");
}

fn assert_not_erased(view: &Value, name: &str) {
    assert_eq!(view["customerName"], json!(name), "{view}");
    assert_eq!(view["personalDataErased"], json!(false), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_customer_is_gone_from_every_answer_and_every_store_and_the_other_stays() {
    let app = TestApp::spawn().await;
    let ada_first = app.create_order(&ada_order("Difference Engine")).await;
    let confirmed = app.set_status(&ada_first.order_id, "confirmed").await;
    let ada_second = app.create_order(&ada_order("Analytical Engine")).await;
    let bob = app.create_order(&bob_order()).await;
    view(&app, &ada_second.order_id, &ada_second.token).await;
    view(&app, &bob.order_id, &bob.token).await;
    view(&app, &ada_first.order_id, &confirmed.token).await;

    // A snapshot, and a create with an idempotency key: both kept beside the events.
    let snapshot = app
        .admin(
            Method::POST,
            &format!("/api/v1/admin/snapshots/{}", ada_first.order_id),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(snapshot.status(), StatusCode::CREATED);
    let keyed = app
        .request(Method::POST, "/api/v1/orders/order")
        .header("Idempotency-Key", "ada-keyed-1")
        .json(&ada_order("Keyed Engine"))
        .send()
        .await
        .expect("request");
    let keyed = CommandAnswer::from(keyed).await;
    view(&app, &keyed.order_id, &keyed.token).await;

    // Before: the event store holds nobody's personal data in clear.
    let events = raw_storage(&app.args, Scope::EventStore).await;
    assert_eq!(found(&events, &ADA_TRACES), Vec::<&str>::new());
    assert_eq!(found(&events, &BOB_TRACES), Vec::<&str>::new());
    assert!(
        events.contains("Difference Engine"),
        "the raw event storage was read: items stay in clear"
    );
    let summary_before = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;

    let response = erase(&app, "ada.quillfeather@EXAMPLE.org").await;
    let erased = json_of(response, StatusCode::OK).await;
    assert_eq!(erased["customerEmail"], "ada.quillfeather@example.org");
    assert_eq!(erased["ordersAffected"], 3);
    let erased_at = erased["erasedAt"].as_str().expect("erasedAt").to_owned();
    // Repeating changes nothing.
    let again = json_of(erase(&app, ADA_EMAIL).await, StatusCode::OK).await;
    assert_eq!(again["ordersAffected"], 0);
    assert_eq!(again["erasedAt"].as_str(), Some(erased_at.as_str()));

    // Every answer about Ada's orders: no personal data, items and totals kept.
    for id in [&ada_first.order_id, &ada_second.order_id] {
        let v = json_of(
            app.get(&format!("/api/v1/orders/order/{id}")).await,
            StatusCode::OK,
        )
        .await;
        assert_erased(&v);
        assert_eq!(v["items"][0]["quantity"], 2);
        for past in ["asOfVersion=1", "asOf=2999-01-01T00:00:00Z"] {
            let old = json_of(
                app.get(&format!("/api/v1/orders/order/{id}?{past}")).await,
                StatusCode::OK,
            )
            .await;
            assert_erased(&old);
        }
        let history = json_of(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::OK,
        )
        .await;
        let created = &history["events"][0];
        assert_eq!(created["eventType"], "OrderCreated");
        assert_eq!(created["personalDataErased"], json!(true), "{created}");
        assert_eq!(created["data"]["personalDataErased"], json!(true));
        assert_eq!(created["data"]["customerName"], Value::Null);
        assert_eq!(created["data"]["customerEmail"], Value::Null);
        assert_eq!(created["data"]["shippingAddress"], Value::Null);
        assert!(created["data"]["items"].is_array());
    }
    assert_eq!(
        view(&app, &ada_first.order_id, &confirmed.token).await["status"],
        "confirmed"
    );
    let by_email = json_of(
        app.get("/api/v1/orders?customerEmail=ada.quillfeather@example.org")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_email["total"], 0, "{by_email}");
    let by_name = json_of(
        app.get("/api/v1/orders/search?q=quillfeather").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_name["total"], 0, "{by_name}");
    let by_product = json_of(
        app.get("/api/v1/orders/search?q=analytical").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_product["total"], 1, "erased orders are still orders");
    let top = json_of(
        app.get("/api/v1/orders/top-customers").await,
        StatusCode::OK,
    )
    .await;
    let top_text = top.to_string();
    assert_eq!(found(&top_text, &ADA_TRACES), Vec::<&str>::new(), "{top}");
    assert!(top_text.contains(BOB_EMAIL), "{top}");
    let all = json_of(app.get("/api/v1/orders?limit=100").await, StatusCode::OK).await;
    assert_eq!(found(&all.to_string(), &ADA_TRACES), Vec::<&str>::new());
    let summary_after = json_of(app.get("/api/v1/orders/summary").await, StatusCode::OK).await;
    assert_eq!(summary_after, summary_before, "the summary does not change");

    // The idempotent replay of the first create answers as first, with nothing personal,
    // and the order stays erased.
    let replayed = app
        .request(Method::POST, "/api/v1/orders/order")
        .header("Idempotency-Key", "ada-keyed-1")
        .json(&ada_order("Keyed Engine"))
        .send()
        .await
        .expect("request");
    assert_eq!(replayed.status(), StatusCode::CREATED);
    let replayed_text = replayed.text().await.expect("body");
    assert!(replayed_text.contains(&keyed.order_id), "{replayed_text}");
    assert_eq!(found(&replayed_text, &ADA_TRACES), Vec::<&str>::new());
    assert_erased(&view(&app, &keyed.order_id, &keyed.token).await);

    // Bob is untouched.
    let bob_view = view(&app, &bob.order_id, &bob.token).await;
    assert_not_erased(&bob_view, BOB_NAME);
    assert_eq!(bob_view["shippingAddress"]["line1"], "3 Larkspur Close");

    // Unknown and malformed e-mails are refused, and so is a caller without the token.
    expect_problem(
        erase(&app, "nobody@example.com").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(erase(&app, "not-an-email").await, StatusCode::BAD_REQUEST).await;
    let anonymous = app
        .request(
            Method::DELETE,
            "/api/v1/admin/customers/bob.marrowgate@example.net/personal-data",
        )
        .send()
        .await
        .expect("request");
    expect_problem(anonymous, StatusCode::UNAUTHORIZED).await;

    // Nothing of Ada is left in any store; Bob's data is where it belongs.
    let everything = raw_storage(&app.args, Scope::Everything).await;
    assert_eq!(found(&everything, &ADA_TRACES), Vec::<&str>::new());
    assert!(
        !found(&everything, &BOB_TRACES).is_empty(),
        "the read models hold Bob's orders in clear: the raw read was of them"
    );

    // A new order with Ada's e-mail has a new key and is not erased.
    let later = app.create_order(&ada_order("Jacquard Loom")).await;
    let later_view = view(&app, &later.order_id, &later.token).await;
    assert_not_erased(&later_view, ADA_NAME);
    let listed = json_of(
        app.get_after(
            "/api/v1/orders?customerEmail=ada.quillfeather@example.org",
            &later.token,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["total"], 1);

    // A full rebuild (blue-green) projects Ada's old orders erased, the new one not.
    let job = start_job(&app, None).await;
    assert_eq!(wait_for_job(&app, &job).await["state"], "done");
    for id in [&ada_first.order_id, &ada_second.order_id] {
        let v = json_of(
            app.get(&format!("/api/v1/orders/order/{id}")).await,
            StatusCode::OK,
        )
        .await;
        assert_erased(&v);
    }
    assert_not_erased(&view(&app, &later.order_id, &later.token).await, ADA_NAME);
    let everything = raw_storage(&app.args, Scope::Everything).await;
    assert_eq!(
        found(&everything, &["Difference Engine"]).len(),
        1,
        "the rebuilt read models were read"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_restarts_and_the_command_line_keep_an_erased_customer_erased() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = store_args(dir.path());
    let app = TestApp::spawn_with(args.clone()).await;
    let ada = app.create_order(&ada_order("Difference Engine")).await;
    let bob = app.create_order(&bob_order()).await;
    view(&app, &ada.order_id, &ada.token).await;
    view(&app, &bob.order_id, &bob.token).await;
    json_of(erase(&app, ADA_EMAIL).await, StatusCode::OK).await;
    let later = app.create_order(&ada_order("Jacquard Loom")).await;
    view(&app, &later.order_id, &later.token).await;

    // A repair of one order and a repair from a timestamp (the full rebuild through
    // the API is in the test above; here `ordo replay` rebuilds).
    for body in [
        Some(json!({"aggregateId": ada.order_id})),
        Some(json!({"fromTimestamp": "2000-01-01T00:00:00Z"})),
    ] {
        let job = start_job(&app, body.clone()).await;
        let status = wait_for_job(&app, &job).await;
        assert_eq!(status["state"], "done", "{body:?}: {status}");
        let v = json_of(
            app.get(&format!("/api/v1/orders/order/{}", ada.order_id))
                .await,
            StatusCode::OK,
        )
        .await;
        assert_erased(&v);
        let new = json_of(
            app.get(&format!("/api/v1/orders/order/{}", later.order_id))
                .await,
            StatusCode::OK,
        )
        .await;
        assert_not_erased(&new, ADA_NAME);
    }
    app.shutdown().await;

    // The command line on the stores: the events, an offline rebuild.
    let events = ordo(&args, &["events"]).await;
    assert!(events.status.success(), "{events:?}");
    let printed = String::from_utf8_lossy(&events.stdout).into_owned();
    assert_eq!(printed.lines().count(), 3);
    let lines: Vec<Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let of = |id: &str| {
        lines
            .iter()
            .find(|e| e["streamId"].as_str().is_some_and(|s| s.contains(id)))
            .unwrap_or_else(|| panic!("no event of {id} in {printed}"))
            .clone()
    };
    let erased_event = of(&ada.order_id);
    assert_eq!(erased_event["personalDataErased"], json!(true));
    assert_eq!(erased_event["data"]["customerName"], Value::Null);
    assert_eq!(of(&bob.order_id)["data"]["customerName"], json!(BOB_NAME));
    assert_eq!(of(&later.order_id)["data"]["customerName"], json!(ADA_NAME));
    let replay = ordo(&args, &["replay"]).await;
    assert!(replay.status.success(), "{replay:?}");

    // A restart, after the offline rebuild: still erased, the others still readable.
    let app = TestApp::spawn_with(args.clone()).await;
    let token = app.create_order(&bob_order()).await.token;
    assert_erased(&view(&app, &ada.order_id, &token).await);
    assert_not_erased(&view(&app, &later.order_id, &token).await, ADA_NAME);
    assert_not_erased(&view(&app, &bob.order_id, &token).await, BOB_NAME);
    app.shutdown().await;

    // `ordo erase` on the stores directly, as the endpoint answers.
    let erased = ordo(&args, &["erase", BOB_EMAIL]).await;
    assert!(erased.status.success(), "{erased:?}");
    let answer: Value = serde_json::from_slice(&erased.stdout).expect("json answer");
    assert_eq!(answer["customerEmail"], BOB_EMAIL);
    assert_eq!(answer["ordersAffected"], 2);
    let unknown = ordo(&args, &["erase", "nobody@example.com"]).await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no order ever had"),
        "{unknown:?}"
    );
    let everything = raw_storage(&args, Scope::Everything).await;
    assert_eq!(found(&everything, &BOB_TRACES), Vec::<&str>::new());
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_racing_the_customers_orders_loses_no_command_and_leaves_nothing_readable() {
    let app = TestApp::spawn().await;
    let mut before = Vec::new();
    for n in 0..6 {
        before.push(app.create_order(&ada_order(&format!("Engine {n}"))).await);
    }
    for answer in &before {
        view(&app, &answer.order_id, &answer.token).await;
    }

    // While the erasure runs: status changes of Ada's orders and new orders of hers.
    let client = app.client.clone();
    let base = app.address.clone();
    let racing = {
        let ids: Vec<String> = before.iter().map(|a| a.order_id.clone()).collect();
        tokio::spawn(async move {
            // (order id, the token of its last write), for the changed and the new.
            let mut written = Vec::new();
            for (n, id) in ids.iter().enumerate() {
                let status = client
                    .put(format!("{base}/api/v1/orders/order/{id}/status"))
                    .json(&json!({"status": "confirmed"}))
                    .send()
                    .await
                    .expect("status change");
                assert_eq!(status.status(), StatusCode::OK);
                let answer: Value = status.json().await.expect("json");
                let token = answer["consistencyToken"].as_str().expect("token");
                written.push((id.clone(), token.to_owned()));
                let body = ada_order(&format!("Racing {n}"));
                let made = client
                    .post(format!("{base}/api/v1/orders/order"))
                    .json(&body)
                    .send()
                    .await
                    .expect("create");
                assert_eq!(made.status(), StatusCode::CREATED);
                let answer: Value = made.json().await.expect("json");
                written.push((
                    answer["orderId"].as_str().expect("id").to_owned(),
                    answer["consistencyToken"]
                        .as_str()
                        .expect("token")
                        .to_owned(),
                ));
            }
            written
        })
    };
    let erased = json_of(erase(&app, ADA_EMAIL).await, StatusCode::OK).await;
    let written = racing.await.expect("racing commands");
    assert!(erased["ordersAffected"].as_u64().expect("count") >= 6);
    let (changed, created): (Vec<_>, Vec<_>) = written
        .iter()
        .partition(|(id, _)| before.iter().any(|b| &b.order_id == id));

    // Nothing lost: every order is there with every status change.
    for (id, token) in &changed {
        let v = view(&app, id, token).await;
        assert_eq!(v["status"], "confirmed", "{v}");
        assert_erased(&v);
    }
    // Each racing order shows exactly what its events open to: in clear if it was
    // sealed under the new key, erased if under the destroyed one.
    for (id, token) in &created {
        let v = view(&app, id, token).await;
        let history = json_of(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::OK,
        )
        .await;
        let opened = &history["events"][0];
        assert_eq!(
            v["personalDataErased"], opened["personalDataErased"],
            "the read model agrees with the events: {v} {opened}"
        );
        assert_eq!(v["customerName"], opened["data"]["customerName"]);
    }
    assert_eq!((changed.len(), created.len()), (6, 6));
    // After the erasure answered, the customer's new orders are in clear.
    let after = app.create_order(&ada_order("After")).await;
    assert_not_erased(&view(&app, &after.order_id, &after.token).await, ADA_NAME);
    // And the erased ones stay erased in the stores' raw contents: only the orders in
    // clear (new key) may hold Ada's name.
    let events = raw_storage(&app.args, Scope::EventStore).await;
    assert_eq!(found(&events, &ADA_TRACES), Vec::<&str>::new());
    app.shutdown().await;
}

/// Stores the events of a fixture file (an older ordo's events, in plain text) straight
/// into the event store, with `mark` as the second-last character of each order's id.
async fn store_fixture(events: &dyn ordo_es::EventStore, fixture: &str, mark: char) {
    for event in ordo_testkit::recorded_fixture(fixture) {
        let id = event.stream_id.as_str();
        let stream = format!("{}{mark}{}", &id[..34], &id[35..]);
        let new = ordo_es::NewEvent {
            event_id: event.event_id,
            aggregate_type: event.aggregate_type.clone(),
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            occurred_at: event.occurred_at,
            data: event.data.clone(),
            metadata: event.metadata.clone(),
        };
        events
            .append(
                &ordo_es::StreamId::new(stream),
                ordo_es::ExpectedVersion::Exact(event.version - 1),
                vec![new],
            )
            .await
            .expect("store a fixture event");
    }
}

/// The view of an order stored before the service started, once projected.
async fn projected(app: &TestApp, id: &str) -> Value {
    ordo_testkit::eventually(std::time::Duration::from_secs(30), || async {
        let response = app.get(&format!("/api/v1/orders/order/{id}")).await;
        if response.status() == StatusCode::OK {
            Ok(response.json::<Value>().await.expect("json"))
        } else {
            Err(response.status())
        }
    })
    .await
    .unwrap_or_else(|status| panic!("order {id} never projected: {status}"))
}

const FIXTURE_TRACES: [&str; 4] = ["Lovelace", "Babbage", "Hopper", "Analytical Row"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_before_encryption_are_sealed_in_place_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = store_args(dir.path());
    {
        let stored = ordo::open_stored_events(&args).await.expect("event store");
        store_fixture(stored.as_ref(), "orders-v1.json", '1').await;
        store_fixture(stored.as_ref(), "orders-v2.json", '2').await;
    }
    let before = raw_storage(&args, Scope::EventStore).await;
    assert_eq!(
        found(&before, &FIXTURE_TRACES),
        FIXTURE_TRACES.to_vec(),
        "the fixtures are stored in plain text, as an older ordo stored them"
    );

    // The first start seals them.
    let app = TestApp::spawn_with(args.clone()).await;
    let after = raw_storage(&args, Scope::EventStore).await;
    assert_eq!(found(&after, &FIXTURE_TRACES), Vec::<&str>::new());
    assert!(after.contains("Difference Engine"), "items stay in clear");
    for mark in ['1', '2'] {
        let id = format!("0193a0c0-0000-7000-8000-0000000000{mark}1");
        let history = json_of(
            app.get(&format!("/api/v1/orders/order/{id}/events")).await,
            StatusCode::OK,
        )
        .await;
        let created = &history["events"][0];
        assert_eq!(created["schemaVersion"], 3, "{created}");
        assert_eq!(created["data"]["customerName"], "Ada Lovelace");
        assert_eq!(created["data"]["customerEmail"], "ada@example.com");
        assert_eq!(
            created["data"]["shippingAddress"]["line1"],
            "12 Analytical Row"
        );
        assert_eq!(created["personalDataErased"], json!(false));
        let v = projected(&app, &id).await;
        assert_eq!(v["customerName"], "Ada Lovelace", "{v}");
        assert_eq!(v["totalAmount"].to_string(), "44.98");
    }
    // Ada's orders of both fixtures are one customer's: erased together.
    let erased = json_of(erase(&app, "ada@example.com").await, StatusCode::OK).await;
    assert_eq!(erased["ordersAffected"], 2, "{erased}");
    app.shutdown().await;

    // A second start finds nothing left to seal, and the erasure holds.
    let app = TestApp::spawn_with(args.clone()).await;
    assert_erased(&projected(&app, "0193a0c0-0000-7000-8000-000000000011").await);
    app.shutdown().await;
    let everything = raw_storage(&args, Scope::Everything).await;
    assert_eq!(
        found(&everything, &["Lovelace", "Analytical Row"]),
        Vec::<&str>::new()
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_of_a_served_process_names_no_customer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = store_args(dir.path());
    let served =
        crate::served::Served::start_with(&args, "all", dir.path(), &[("RUST_LOG", "debug")]).await;
    served.wait_until_ready().await;
    let created = crate::served::Served::send(
        served
            .request(Method::POST, "/api/v1/orders/order")
            .json(&ada_order("Logged Engine")),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let erased = crate::served::Served::send(served.admin(
        Method::DELETE,
        "/api/v1/admin/customers/ada.quillfeather@example.org/personal-data",
    ))
    .await;
    assert_eq!(erased.status(), StatusCode::OK);
    let log = served.log_text();
    served.stop().await;
    assert!(
        log.contains("personal data erased"),
        "the erasure is logged: {log}"
    );
    assert_eq!(found(&log, &ADA_TRACES), Vec::<&str>::new(), "{log}");
    drop(dir);
}

/// An order body's create through a served process, once its read models show it.
async fn create_on(served: &crate::served::Served, body: &Value) -> CommandAnswer {
    let response = crate::served::Served::send(
        served
            .request(Method::POST, "/api/v1/orders/order")
            .json(body),
    )
    .await;
    let answer = CommandAnswer::from(response).await;
    let path = format!("/api/v1/orders/order/{}", answer.order_id);
    json_of(served.get_after(&path, &answer.token).await, StatusCode::OK).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_through_an_api_process_reaches_what_a_projector_process_projects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stores = store_args_of(dir.path(), "postgres", "postgres");
    let projector = crate::served::Served::start(&stores, "projector", dir.path()).await;
    let api = crate::served::Served::start(&stores, "api", dir.path()).await;
    projector.wait_until_ready().await;
    api.wait_until_ready().await;
    let mut ada = Vec::new();
    for n in 0..3 {
        ada.push(create_on(&api, &ada_order(&format!("Engine {n}"))).await);
    }
    let bob = create_on(&api, &bob_order()).await;

    let erased = crate::served::Served::send(api.admin(
        Method::DELETE,
        "/api/v1/admin/customers/ada.quillfeather@example.org/personal-data",
    ))
    .await;
    let erased = json_of(erased, StatusCode::OK).await;
    assert_eq!(erased["ordersAffected"], 3, "{erased}");
    for answer in &ada {
        let path = format!("/api/v1/orders/order/{}", answer.order_id);
        assert_erased(&json_of(api.get_after(&path, &answer.token).await, StatusCode::OK).await);
    }
    let path = format!("/api/v1/orders/order/{}", bob.order_id);
    assert_not_erased(
        &json_of(api.get_after(&path, &bob.token).await, StatusCode::OK).await,
        BOB_NAME,
    );
    // The projector process held Ada's key in its cache: a new order of hers, projected
    // there, is sealed under a new key and shown in clear; the old ones stay erased.
    let later = create_on(&api, &ada_order("Later")).await;
    let path = format!("/api/v1/orders/order/{}", later.order_id);
    assert_not_erased(
        &json_of(api.get_after(&path, &later.token).await, StatusCode::OK).await,
        ADA_NAME,
    );
    let path = format!("/api/v1/orders/order/{}", ada[0].order_id);
    assert_erased(&json_of(api.get(&path).send().await.expect("get"), StatusCode::OK).await);
    api.stop().await;
    projector.stop().await;
    let everything = raw_storage(&stores, Scope::Everything).await;
    assert_eq!(
        found(&everything, &["Engine 0", "Engine 1"]).len(),
        2,
        "the raw read was of these stores"
    );
    let events = raw_storage(&stores, Scope::EventStore).await;
    assert_eq!(found(&events, &ADA_TRACES), Vec::<&str>::new());
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_master_key_keeps_every_customer_readable_under_the_new_key_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = store_args(dir.path());
    let app = TestApp::spawn_with(args.clone()).await;
    let ada = app.create_order(&ada_order("Difference Engine")).await;
    view(&app, &ada.order_id, &ada.token).await;
    app.shutdown().await;

    let old = dir.path().join("master.key");
    assert!(
        old.exists(),
        "the first start generated the master key in the data dir"
    );
    let new = dir.path().join("new.key");
    std::fs::write(&new, format!("{}\n", "7e".repeat(32))).expect("new key file");
    let new_text = new.to_str().expect("utf-8 path");
    let old_text = old.to_str().expect("utf-8 path");
    // Without the previous key the rotation refuses, naming the flag.
    let refused = ordo(&args, &["rotate-master-key", "--master-key-file", new_text]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--previous-master-key-file"));
    let rotated = ordo(
        &args,
        &[
            "rotate-master-key",
            "--master-key-file",
            new_text,
            "--previous-master-key-file",
            old_text,
        ],
    )
    .await;
    assert!(rotated.status.success(), "{rotated:?}");
    assert!(
        String::from_utf8_lossy(&rotated.stderr).contains("rewrapped 3 keys"),
        "the subject key, the migration's mark and Ada's: {rotated:?}"
    );

    // The new key alone opens everything; the old one is refused at start.
    let mut with_new = args.clone();
    with_new.master_key_file = Some(new.clone());
    let app = TestApp::spawn_with(with_new).await;
    let history = json_of(
        app.get(&format!("/api/v1/orders/order/{}/events", ada.order_id))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(history["events"][0]["data"]["customerName"], ADA_NAME);
    app.shutdown().await;
    let stale = ordo(&args, &["events"]).await;
    assert!(
        !stale.status.success(),
        "the old master key opens nothing now"
    );
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("master key"),
        "{stale:?}"
    );
    drop(dir);
}
