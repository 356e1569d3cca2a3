//! The storefront widget and the explorer in a real browser: headless Chromium driven through
//! chromedriver (WebDriver), against a real server on a fresh Postgres. `scripts/test` installs
//! Debian's chromium and chromium-driver when missing and fetches axe-core into target/; these
//! tests fail, never skip, without them.
//!
//! Each test also reads the browser's log (no console error allowed), runs axe-core on the page
//! (no serious or critical violation allowed) and saves a screenshot under
//! target/browser-screenshots/. The widget's render time after the response and its requests
//! per render are printed (measured, not asserted).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tandem::experiments::{ExperimentConfig, VariantConfig};

use crate::helpers::{
    demo_server, fresh_database, spawn_app_with, test_settings, write_version, TestApp, ADMIN_TOKEN,
};

/// The experiment every browser test's server runs: one variant with all the traffic, so a
/// shopper with an id is served `widget/warm` and an anonymous one `control`.
const VARIANT: &str = "widget/warm";

fn screenshots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver process of this test's own, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Driver {
    async fn start() -> Self {
        let binary = std::env::var("TANDEM_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary} ({e}): the browser tests need Debian's chromium and \
                     chromium-driver. Run them with scripts/test, which installs them."
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        while !client
            .get(format!("{url}/status"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver never answered on {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url }
    }

    /// A headless Chromium session; `do_not_track` turns the browser's own DNT setting on.
    async fn browser(&self, do_not_track: bool) -> Client {
        let binary =
            std::env::var("TANDEM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1100", "--no-first-run", "--disable-extensions"],
                "prefs": {"enable_do_not_track": do_not_track},
            },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver did not start a Chromium session")
    }
}

/// chromedriver's own commands, beyond W3C WebDriver.
#[derive(Debug)]
enum Chrome {
    /// The browser log since the last call (console messages, failed loads).
    BrowserLog,
    /// A Chrome DevTools Protocol command.
    Cdp(&'static str, Value),
}

impl WebDriverCompatibleCommand for Chrome {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        match self {
            Chrome::BrowserLog => base_url.join(&format!("session/{session}/se/log")),
            Chrome::Cdp(..) => base_url.join(&format!("session/{session}/goog/cdp/execute")),
        }
    }

    fn method_and_body(&self, _url: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = match self {
            Chrome::BrowserLog => json!({"type": "browser"}),
            Chrome::Cdp(cmd, params) => json!({"cmd": cmd, "params": params}),
        };
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// Fails on any error in the browser log (console errors, failed loads, uncaught exceptions).
async fn assert_no_console_errors(browser: &Client, page: &str) {
    let log = browser.issue_cmd(Chrome::BrowserLog).await.unwrap();
    let errors: Vec<&Value> = log
        .as_array()
        .map(|entries| entries.iter().filter(|e| e["level"] == "SEVERE").collect())
        .unwrap_or_default();
    assert!(
        errors.is_empty(),
        "{page}: errors in the browser log: {errors:#?}"
    );
}

/// Runs axe-core on the page: no serious or critical violation.
async fn assert_accessible(browser: &Client, page: &str) {
    let path = std::env::var("TANDEM_AXE_JS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/axe-core/node_modules/axe-core/axe.min.js"
        )
        .into()
    });
    let axe = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read axe-core at {path} ({e}); scripts/test fetches it into target/axe-core")
    });
    browser.execute(&axe, vec![]).await.unwrap();
    let violations = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']})
               .then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => ({id: v.id, impact: v.impact, help: v.help,
                             nodes: v.nodes.map(n => n.html)}))))
               .catch(e => done([{id: 'axe-failed', help: String(e)}]));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(violations, json!([]), "{page}: accessibility violations");
}

async fn screenshot(browser: &Client, name: &str) -> PathBuf {
    let png = browser.screenshot().await.unwrap();
    let path = screenshots_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

/// A shop's image server: `/img/{id}.svg` is a small picture for any id.
async fn image_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/img/{name}",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "image/svg+xml")],
                r##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120"><rect width="120" height="120" fill="#d9c7a7"/><circle cx="60" cy="60" r="34" fill="#7a2e0e"/></svg>"##,
            )
        }),
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    (origin, server)
}

/// A server on a fresh database serving a small synthetic version whose items have images,
/// with the one-variant experiment; and the image server, which lives as long as it is kept.
async fn shop() -> (TestApp, tokio::task::JoinHandle<()>) {
    let db = fresh_database().await;
    write_version(&db.pool, 200, 28).await;
    // Every item gets an image_link attribute, read when the version loads.
    let (images, image_server) = image_server().await;
    sqlx::query(
        "UPDATE items SET attributes = attributes || jsonb_build_object('image_link', $1 || '/img/' || id || '.svg')",
    )
    .bind(&images)
    .execute(&db.pool)
    .await
    .unwrap();
    let mut settings = test_settings(&db);
    let mut warm = VariantConfig::new("warm", 1.0);
    warm.popularity = Some(0.2);
    settings.experiments = vec![ExperimentConfig {
        name: "widget".into(),
        touchpoints: vec![],
        variants: vec![warm],
    }];
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    (app, image_server)
}

/// Waits until the widget on the page has rendered; returns (request id, variant, item ids).
async fn rendered(browser: &Client) -> (String, String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = browser
            .execute(
                "const el = document.querySelector('[data-tandem]');
                 return {state: el.dataset.tandemState, request: el.dataset.tandemRequest || '',
                         variant: el.dataset.tandemVariant || '',
                         items: [...el.querySelectorAll('.tandem-item')].map(li => li.dataset.itemId)};",
                vec![],
            )
            .await
            .unwrap();
        match state["state"].as_str() {
            Some("rendered") => {
                let items = state["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                return (
                    state["request"].as_str().unwrap().to_string(),
                    state["variant"].as_str().unwrap().to_string(),
                    items,
                );
            }
            Some("error") | Some("empty") => panic!("the widget did not render: {state}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the widget never rendered: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type EventRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn events(app: &TestApp) -> Vec<EventRow> {
    sqlx::query_as(
        "SELECT kind, item_id, request_id::text, variant, shopper, session FROM events ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

/// Waits until a stored event satisfies `wanted`; returns every stored event.
async fn wait_for_event(
    app: &TestApp,
    what: &str,
    wanted: impl Fn(&EventRow) -> bool,
) -> Vec<EventRow> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = events(app).await;
        if rows.iter().any(&wanted) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} reached the events table: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The widget's render time (ms) after its last response was parsed and after its headers
/// arrived, and its requests since the page loaded: (recommendation calls, event calls).
async fn widget_figures(browser: &Client) -> (f64, f64, usize, usize) {
    let figures = browser
        .execute(
            "const m = performance.getEntriesByName('tandem:render');
             const t = performance.getEntriesByName('tandem:response-to-render');
             const r = performance.getEntriesByType('resource').map(e => e.name);
             return {render: m.length ? m[m.length - 1].duration : -1,
                     total: t.length ? t[t.length - 1].duration : -1,
                     recs: r.filter(n => n.includes('/recommendations')).length,
                     events: r.filter(n => n.includes('/events')).length};",
            vec![],
        )
        .await
        .unwrap();
    (
        figures["render"].as_f64().unwrap(),
        figures["total"].as_f64().unwrap(),
        figures["recs"].as_u64().unwrap() as usize,
        figures["events"].as_u64().unwrap() as usize,
    )
}

fn storefront_url(app: &TestApp, session: &str) -> String {
    format!(
        "{}/examples/storefront?cart=S0000001,S0000002&k=4&session={session}",
        app.address
    )
}

#[tokio::test]
async fn the_widget_renders_reports_events_and_forgets_a_dismissed_item() {
    let (app, _images) = shop().await;
    let driver = Driver::start().await;
    let browser = driver.browser(false).await;
    browser
        .goto(&storefront_url(&app, "shopper-1"))
        .await
        .unwrap();
    let (request_id, variant, items) = rendered(&browser).await;
    assert_eq!(
        variant, VARIANT,
        "a shopper with a session is in the experiment"
    );
    assert_eq!(items.len(), 4, "{items:?}");
    let reasons = browser
        .execute(
            "return [...document.querySelectorAll('.tandem-item')].map(li =>
               [li.querySelector('.tandem-title').textContent, li.querySelector('.tandem-reason').textContent]);",
            vec![],
        )
        .await
        .unwrap();
    for pair in reasons.as_array().unwrap() {
        assert!(!pair[0].as_str().unwrap().is_empty(), "{reasons}");
        assert!(
            !pair[1].as_str().unwrap().is_empty(),
            "every item has a reason: {reasons}"
        );
    }
    // Each item's image_link, loaded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let images = browser
            .execute(
                "return [...document.querySelectorAll('.tandem-item')].map(li => {
                   const img = li.querySelector('img.tandem-image');
                   return !!img && img.complete && img.naturalWidth > 0
                     && img.src.endsWith('/img/' + li.dataset.itemId + '.svg');
                 });",
                vec![],
            )
            .await
            .unwrap();
        if images
            .as_array()
            .unwrap()
            .iter()
            .all(|loaded| loaded == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "images not shown: {images}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    screenshot(&browser, "storefront.png").await;

    // Seen for a second: impressions, with the list's request id and variant.
    let rows = wait_for_event(&app, "impression", |r| r.0 == "impression").await;
    for row in rows.iter().filter(|r| r.0 == "impression") {
        assert_eq!(row.2.as_deref(), Some(request_id.as_str()), "{row:?}");
        assert_eq!(row.3.as_deref(), Some(VARIANT), "{row:?}");
        assert!(row.5.is_some(), "the shop gave a session id: {row:?}");
    }
    let (render_ms, total_ms, recs, event_calls) = widget_figures(&browser).await;
    eprintln!(
        "widget figures: render {render_ms:.1} ms after the parsed response ({total_ms:.1} ms \
         after its headers); {recs} recommendation request(s) and {event_calls} event call(s) \
         for one render with its impressions"
    );

    // A click on the first item.
    let first = browser
        .find(Locator::Css(&format!(
            ".tandem-item[data-item-id='{}'] .tandem-link",
            items[0]
        )))
        .await
        .unwrap();
    first.click().await.unwrap();
    wait_for_event(&app, "click", |r| {
        r.0 == "click"
            && r.1 == items[0]
            && r.2.as_deref() == Some(request_id.as_str())
            && r.3.as_deref() == Some(VARIANT)
    })
    .await;

    // "Not interested" on the second: gone at once, and from the next render for this shopper.
    let dismiss = browser
        .find(Locator::Css(&format!(
            ".tandem-item[data-item-id='{}'] .tandem-dismiss",
            items[1]
        )))
        .await
        .unwrap();
    assert_eq!(
        dismiss
            .attr("aria-label")
            .await
            .unwrap()
            .as_deref()
            .map(|l| l.starts_with("Not interested in ")),
        Some(true)
    );
    // From the keyboard: Tab from the item's link reaches its button, Enter presses it, and
    // focus moves on to the next item rather than being lost with the removed one.
    browser
        .find(Locator::Css(&format!(
            ".tandem-item[data-item-id='{}'] .tandem-link",
            items[1]
        )))
        .await
        .unwrap()
        .send_keys("")
        .await
        .unwrap();
    browser
        .active_element()
        .await
        .unwrap()
        .send_keys("\u{E004}")
        .await
        .unwrap();
    let focused = browser
        .execute(
            "return document.activeElement.getAttribute('aria-label');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(focused, dismiss.attr("aria-label").await.unwrap().unwrap());
    browser
        .active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    let after = browser
        .execute(
            "return {left: [...document.querySelectorAll('.tandem-item')].map(li => li.dataset.itemId),
                     focus: document.activeElement.closest('.tandem-item')?.dataset.itemId};",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(after["left"].as_array().unwrap().len(), 3, "{after}");
    assert!(
        !after["left"]
            .to_string()
            .contains(&format!("\"{}\"", items[1])),
        "{after}"
    );
    assert_eq!(
        after["focus"],
        json!(items[2]),
        "focus moves to the next item: {after}"
    );
    wait_for_event(&app, "dismiss", |r| r.0 == "dismiss" && r.1 == items[1]).await;
    assert_no_console_errors(&browser, "storefront").await;
    assert_accessible(&browser, "storefront").await;

    browser
        .goto(&storefront_url(&app, "shopper-1"))
        .await
        .unwrap();
    let (_, _, again) = rendered(&browser).await;
    assert!(
        !again.contains(&items[1]),
        "the dismissed item came back: {again:?}"
    );
    let (render_ms, total_ms, recs, event_calls) = widget_figures(&browser).await;
    eprintln!(
        "widget figures (second page): render {render_ms:.1} ms after the parsed response \
         ({total_ms:.1} ms after its headers); {recs} recommendation request(s), {event_calls} \
         event call(s) so far"
    );
    assert_no_console_errors(&browser, "storefront, second render").await;

    // A large cart goes as a POST body and renders the same way.
    browser
        .execute(
            "const el = document.querySelector('[data-tandem]');
             const ids = ['S0000001'];
             for (let n = 0; n < 99; n++) ids.push('not-in-the-catalogue-' + n);
             el.dataset.cart = ids.join(',');
             performance.clearResourceTimings();
             Tandem.refresh();",
            vec![],
        )
        .await
        .unwrap();
    let (large_request, _, large) = rendered(&browser).await;
    assert!(!large.is_empty() && large_request != request_id);
    let calls = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)
               .filter(n => n.includes('/recommendations'));",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        calls
            .as_array()
            .unwrap()
            .iter()
            .all(|url| url.as_str().unwrap().ends_with("/recommendations")),
        "a large cart is posted, not put in the query: {calls}"
    );
    assert_no_console_errors(&browser, "storefront, large cart").await;
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn with_global_privacy_control_no_shopper_id_is_sent_or_stored() {
    let (app, _images) = shop().await;
    let driver = Driver::start().await;
    let browser = driver.browser(false).await;
    // The signal as a browser with GPC on gives it: the property and the request header.
    browser
        .issue_cmd(Chrome::Cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"}),
        ))
        .await
        .unwrap();
    browser
        .issue_cmd(Chrome::Cdp("Network.enable", json!({})))
        .await
        .unwrap();
    browser
        .issue_cmd(Chrome::Cdp(
            "Network.setExtraHTTPHeaders",
            json!({"headers": {"Sec-GPC": "1"}}),
        ))
        .await
        .unwrap();
    browser
        .goto(&storefront_url(&app, "shopper-2"))
        .await
        .unwrap();
    let (request_id, variant, items) = rendered(&browser).await;
    assert_eq!(
        variant, "control",
        "an opted-out shopper is in no experiment"
    );
    let first = browser
        .find(Locator::Css(&format!(
            ".tandem-item[data-item-id='{}'] .tandem-link",
            items[0]
        )))
        .await
        .unwrap();
    first.click().await.unwrap();
    wait_for_event(&app, "click", |r| r.0 == "click").await;
    let rows = wait_for_event(&app, "impression", |r| r.0 == "impression").await;
    for row in &rows {
        assert_eq!(row.2.as_deref(), Some(request_id.as_str()), "{row:?}");
        assert_eq!(
            (&row.4, &row.5),
            (&None, &None),
            "an id was stored: {row:?}"
        );
    }
    let sent = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)
               .filter(n => n.includes('/recommendations'));",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        !sent.to_string().contains("shopper-2"),
        "the session id left the page: {sent}"
    );
    assert_no_console_errors(&browser, "storefront with GPC").await;
    browser.close().await.unwrap();

    // The browser's own Do Not Track setting has the same effect.
    let browser = driver.browser(true).await;
    browser
        .goto(&storefront_url(&app, "shopper-3"))
        .await
        .unwrap();
    let (_, variant, _) = rendered(&browser).await;
    assert_eq!(variant, "control");
    let rows = events(&app).await;
    assert!(
        rows.iter().all(|r| r.4.is_none() && r.5.is_none()),
        "{rows:#?}"
    );
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_explorer_finds_an_item_builds_a_cart_and_shows_contributions() {
    let (app, _images) = shop().await;
    let driver = Driver::start().await;
    let browser = driver.browser(false).await;
    browser
        .goto(&format!("{}/explore", app.address))
        .await
        .unwrap();
    browser
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    browser
        .find(Locator::Css("#token-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let search = browser.find(Locator::Id("search")).await.unwrap();
    search.send_keys("synthetic PRODUCT 3 of").await.unwrap();
    browser
        .find(Locator::Css("#search-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let add = browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#search-results li button"))
        .await
        .unwrap();
    let found = browser
        .find(Locator::Css("#search-results li span"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        found.starts_with("Synthetic product ") && found.contains('3'),
        "{found}"
    );
    add.click().await.unwrap();
    let in_cart = browser
        .find(Locator::Css("#cart li span"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(in_cart, found);

    // Side by side: the experiment's variant against control, both forced with the token.
    browser
        .find(Locator::Id("compare"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css(&format!(
            "#variant-a option[value='{VARIANT}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css("#variant-b option[value='control']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Css("#list-form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(".list li .bar"))
        .await
        .unwrap();
    let lists = browser
        .execute(
            "return [...document.querySelectorAll('.list')].map(list => ({
               caption: list.querySelector('h3').textContent,
               items: list.querySelectorAll('li').length,
               widest: Math.max(...[...list.querySelectorAll('.bar')].map(b => parseFloat(b.style.width) || 0)),
               reasons: [...list.querySelectorAll('.reason')].every(r => r.textContent.length > 0)}));",
            vec![],
        )
        .await
        .unwrap();
    let lists = lists.as_array().unwrap();
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(
        lists[0]["caption"].as_str().unwrap().contains(VARIANT),
        "{lists:?}"
    );
    assert!(
        lists[1]["caption"].as_str().unwrap().contains("control"),
        "{lists:?}"
    );
    for list in lists {
        assert!(list["items"].as_u64().unwrap() > 0, "{list}");
        assert_eq!(
            list["widest"], 100.0,
            "the largest contribution fills its bar: {list}"
        );
        assert_eq!(list["reasons"], true);
    }
    browser
        .execute(
            "document.getElementById('lists-heading').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
    screenshot(&browser, "explorer.png").await;
    let blend = browser
        .execute(
            "return [...document.querySelectorAll('#touchpoints tbody th')].map(th => th.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        blend,
        json!(["checkout", "cart", "product"]),
        "the model's blend per touchpoint"
    );
    assert_no_console_errors(&browser, "explorer").await;
    assert_accessible(&browser, "explorer").await;
    browser.close().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn the_sample_storefront_works_on_the_embedded_demo() {
    let server = demo_server().await;
    let driver = Driver::start().await;
    let browser = driver.browser(false).await;
    // The page as README links it: its own cart, the regency cake stand and teacup.
    browser
        .goto(&format!("{}/examples/storefront", server.address))
        .await
        .unwrap();
    let (_, variant, items) = rendered(&browser).await;
    assert_eq!(variant, "control");
    assert_eq!(items.len(), 4, "{items:?}");
    let texts = browser
        .execute(
            "return [...document.querySelectorAll('.tandem-reason')].map(r => r.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        texts
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_str().unwrap().starts_with("Often bought with")),
        "{texts}"
    );
    // Impressions are accepted (202) though the demo stores none; no error in the log.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let posted = browser
        .execute(
            "return performance.getEntriesByType('resource').filter(e => e.name.includes('/events'))
               .map(e => e.responseStatus);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(posted, json!([202]), "one batched event call, accepted");
    screenshot(&browser, "storefront-demo.png").await;
    assert_no_console_errors(&browser, "storefront on the demo").await;
    assert_accessible(&browser, "storefront on the demo").await;
    browser.close().await.unwrap();
    server.stop().await;
}

/// A shop's page on an origin of its own (another port), with the widget from `tandem` and
/// `script_attributes` on its script tag.
async fn shop_page(tandem: &str, script_attributes: &str) -> (String, tokio::task::JoinHandle<()>) {
    let page = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Another shop</title>
<link rel="icon" href="data:,"></head><body><main><h1>Basket</h1>
<div data-tandem data-cart="S0000001,S0000002" data-k="3" data-session="cross-1" data-link="/p/{{id}}"></div>
</main><script src="{tandem}/widget.js" {script_attributes} defer></script></body></html>"#
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    (origin, server)
}

#[tokio::test]
async fn a_shop_on_another_origin_is_served_only_when_configured() {
    // Tandem on a known port, so the shop's page can name it before either starts.
    let port = free_port();
    let tandem = format!("http://127.0.0.1:{port}");
    let (shop_origin, shop_server) = shop_page(&tandem, "").await;

    let db = fresh_database().await;
    write_version(&db.pool, 200, 28).await;
    let mut settings = test_settings(&db);
    settings.server.port = port;
    settings.server.cors_origins = vec![shop_origin.clone()];
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let driver = Driver::start().await;
    let browser = driver.browser(false).await;
    browser.goto(&shop_origin).await.unwrap();
    let (request_id, _, items) = rendered(&browser).await;
    assert_eq!(items.len(), 3);
    wait_for_event(&app, "cross-origin impression", |r| {
        r.0 == "impression" && r.2.as_deref() == Some(request_id.as_str()) && r.5.is_some()
    })
    .await;
    assert_no_console_errors(&browser, "a shop on an allowed origin").await;
    browser.close().await.unwrap();
    app.stop().await;

    // The same page against a Tandem that allows no origin: nothing rendered, one warning,
    // the page itself intact.
    let db = fresh_database().await;
    write_version(&db.pool, 200, 28).await;
    let mut settings = test_settings(&db);
    settings.server.port = port;
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let browser = driver.browser(false).await;
    browser.goto(&shop_origin).await.unwrap();
    let (warnings, entries) = widget_failed(&browser).await;
    assert_eq!(warnings, 1, "one warning from the widget: {entries:#?}");
    for entry in entries.iter().filter(|e| e["level"] == "SEVERE") {
        let message = entry["message"].as_str().unwrap_or("");
        assert!(
            message.contains("CORS")
                || message.contains("Failed to load resource")
                || message.contains("Failed to fetch"),
            "only the refused call may fail: {entry:#?}"
        );
    }
    browser.close().await.unwrap();
    app.stop().await;
    shop_server.abort();
}

/// Waits for the widget's element to reach `error`; returns how many console messages came
/// from the widget, and the log.
async fn widget_failed(browser: &Client) -> (usize, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = browser
            .execute(
                "const el = document.querySelector('[data-tandem]');
                 return {state: el.dataset.tandemState || '', children: el.children.length,
                         heading: document.querySelector('h1').textContent};",
                vec![],
            )
            .await
            .unwrap();
        if state["state"] == "error" {
            assert_eq!(state["children"], 0, "nothing rendered: {state}");
            assert_eq!(state["heading"], "Basket", "the page is intact: {state}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the widget never gave up: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = browser.issue_cmd(Chrome::BrowserLog).await.unwrap();
    let entries = log.as_array().cloned().unwrap_or_default();
    let ours = entries
        .iter()
        .filter(|e| e["message"].as_str().unwrap_or("").contains("[tandem]"))
        .count();
    (ours, entries)
}

#[tokio::test]
async fn a_slow_tandem_renders_nothing_and_warns_once() {
    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let db = fresh_database().await;
    write_version(&db.pool, 200, 28).await;
    let settings = test_settings(&db);
    let app = spawn_app_with(db, settings).await;
    app.wait_until_ready().await;
    let attributes = format!(r#"data-endpoint="{silent_url}" data-timeout="300""#);
    let (shop_origin, shop_server) = shop_page(&app.address, &attributes).await;
    let driver = Driver::start().await;
    let browser = driver.browser(false).await;
    browser.goto(&shop_origin).await.unwrap();
    let (warnings, entries) = widget_failed(&browser).await;
    assert_eq!(warnings, 1, "one warning from the widget: {entries:#?}");
    assert!(
        entries
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("timed out")),
        "{entries:#?}"
    );
    assert!(
        entries.iter().all(|e| e["level"] != "SEVERE"),
        "a timeout is no page error: {entries:#?}"
    );
    browser.close().await.unwrap();
    app.stop().await;
    shop_server.abort();
    held.abort();
}
