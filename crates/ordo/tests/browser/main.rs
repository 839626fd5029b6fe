//! Browser tests: the web interface in a real headless Chromium (through chromedriver),
//! against the real service on port 0. They run once (on the embedded stores), not per
//! store combination: the pages only use the HTTP API, which the API tests cover on
//! every store. Chromium and chromedriver must be installed (scripts/test.sh installs
//! them); without them these tests fail and say what to install.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
mod pages;
mod webdriver;
