//! A small W3C WebDriver client (JSON over HTTP) driving Debian's headless Chromium
//! through chromedriver, started on a free port for each browser.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use ordo_testkit::{eventually, free_port};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait polls before it fails.
const WAIT: Duration = Duration::from_secs(30);

const INSTALL: &str = "the browser tests need Chromium and its WebDriver: \
    apt-get install chromium chromium-driver";

fn program(var: &str, candidates: &[&str]) -> PathBuf {
    if let Ok(path) = std::env::var(var) {
        return PathBuf::from(path);
    }
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} not found ({var} unset): {INSTALL}", candidates[0]))
}

/// One headless Chromium session, with its own chromedriver and profile directory.
pub struct Browser {
    http: Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Element {
    /// The element as a script argument.
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT: self.0 })
    }
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub async fn start() -> Browser {
        let chromedriver = program(
            "ORDO_TEST_CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        );
        let chromium = program(
            "ORDO_TEST_CHROMIUM",
            &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
        );
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", chromedriver.display()));
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        eventually(WAIT, || async {
            let response = http.get(format!("{base}/status")).send().await;
            match response {
                Ok(r) => match r.json::<Value>().await {
                    Ok(body) if body["value"]["ready"] == json!(true) => Ok(()),
                    Ok(body) => Err(body.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|last| panic!("chromedriver did not answer on port {port}: {last}"));

        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,800".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session answer");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver opened no session: {answer}; {INSTALL}"))
            .to_string();
        Browser {
            http,
            base,
            session,
            driver,
            _profile: profile,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == Method::POST {
            request = request.json(&json!({}));
        }
        let response = request.send().await.expect("webdriver request");
        let status = response.status();
        let body: Value = response.json().await.expect("webdriver answer");
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body["value"].clone()
    }

    /// Like `call`, but an error answer is `None` (an element gone stale, none found).
    async fn try_call(&self, method: Method, path: &str, body: Value) -> Option<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let response = self
            .http
            .request(method, &url)
            .json(&body)
            .send()
            .await
            .ok()?;
        let ok = response.status().is_success();
        let body: Value = response.json().await.ok()?;
        ok.then(|| body["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Every element matching a CSS selector now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.try_call(
            Method::POST,
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )
        .await
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_string())))
        .collect()
    }

    /// The first element matching `css`, waiting until there is one.
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(&format!("an element {css}"), || async {
            self.find_all(css).await.into_iter().next()
        })
        .await
    }

    pub async fn click(&self, element: &Element) {
        self.call(Method::POST, &format!("/element/{}/click", element.0), None)
            .await;
    }

    /// Waits for `css` to be there, then clicks it.
    pub async fn click_on(&self, css: &str) {
        let element = self.find(css).await;
        self.click(&element).await;
    }

    pub async fn clear(&self, element: &Element) {
        self.call(Method::POST, &format!("/element/{}/clear", element.0), None)
            .await;
    }

    pub async fn type_text(&self, element: &Element, text: &str) {
        self.call(
            Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The rendered text of an element (None when it went away meanwhile).
    pub async fn text(&self, element: &Element) -> Option<String> {
        let url = format!(
            "{}/session/{}/element/{}/text",
            self.base, self.session, element.0
        );
        let response = self.http.get(url).send().await.ok()?;
        let ok = response.status().is_success();
        let body: Value = response.json().await.ok()?;
        ok.then(|| body["value"].as_str().unwrap_or_default().to_string())
    }

    /// The text of the first element matching `css` now, if any.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let element = self.find_all(css).await.into_iter().next()?;
        self.text(&element).await
    }

    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        let url = format!(
            "{}/session/{}/element/{}/attribute/{name}",
            self.base, self.session, element.0
        );
        let response = self.http.get(url).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        body["value"].as_str().map(str::to_string)
    }

    /// Polls `probe` until it gives a value (at most 30 s), or fails naming `what`.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let probed = eventually(WAIT, || {
            let probe = probe();
            async move { probe.await.ok_or(()) }
        })
        .await;
        if let Ok(value) = probed {
            return value;
        }
        let text = self
            .script(
                "return document.body ? document.body.innerText : ''",
                json!([]),
            )
            .await;
        panic!(
            "waited {WAIT:?} for {what}; the page at {} shows:\n{}",
            self.current_url().await,
            text.as_str().unwrap_or_default()
        );
    }

    /// Waits until the text of `css` satisfies `test`, and returns it.
    pub async fn wait_text(&self, css: &str, what: &str, test: impl Fn(&str) -> bool) -> String {
        self.wait_for(what, || async {
            self.text_of(css).await.filter(|t| test(t))
        })
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call(Method::GET, "/screenshot", None).await;
        base64_decode(encoded.as_str().expect("base64 screenshot"))
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Ends the session (Chromium quits), then chromedriver.
    pub async fn quit(mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
        self.session.clear();
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    /// A failed test still ends its session, so no Chromium outlives the tests. Blocking
    /// on purpose: this runs during a panic, outside any runtime's reach.
    fn drop(&mut self) {
        if self.session.is_empty() {
            return;
        }
        let address = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut stream) = TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.start_kill();
    }
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (d << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_padded_and_unpadded_text() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
