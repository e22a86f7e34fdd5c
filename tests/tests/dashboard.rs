//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! against a host serving on a real socket.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`;
//! where they are missing and the tests run as root with apt, they are
//! installed first. The run leaves a screenshot in the target directory, and
//! with `MODHOST_UPDATE_SCREENSHOT=1` also as `docs/dashboard.png`.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use modhost::auth::Tokens;
use modhost::db::Db;
use modhost::http::AppState;
use modhost_tests::*;
use serde_json::json;

const REPORTS_MANIFEST: &str =
    "[tasks]\nmax-active-per-user = 4\nmax-concurrent = 2\n[limits]\ntask-deadline-ms = 600000";
const LONG_TASKS: &str = "[limits]\ntask-deadline-ms = 600000\n[tasks]\nmax-concurrent = 8";
/// How long a step in the browser may take before the test gives up.
const STEP: Duration = Duration::from_secs(30);

/// chromedriver, installed with apt where it is missing and we may.
fn chromedriver() -> PathBuf {
    if let Some(p) = on_path("chromedriver") {
        return p;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root && on_path("apt-get").is_some(),
        "the dashboard test needs Chromium and chromedriver: apt-get install chromium chromium-driver"
    );
    eprintln!("installing chromium and chromium-driver with apt-get for the dashboard test");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "chromium", "chromium-driver"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("running apt-get");
        assert!(status.success(), "apt-get {args:?} failed: {status}");
    }
    on_path("chromedriver").expect("chromedriver after installing chromium-driver")
}

/// A chromedriver process, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let program = chromedriver();
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(started.elapsed() < STEP, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
            ],
        });
        if let Some(binary) = on_path("chromium") {
            options["binary"] = json!(binary);
        }
        caps.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session with headless Chromium")
    }
}

/// Polls `read` until `done` holds for what it returns, for at most [`STEP`].
async fn until<T: std::fmt::Debug, F: Future<Output = T>>(
    what: &str,
    mut read: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    loop {
        let v = read().await;
        if done(&v) {
            return v;
        }
        assert!(
            started.elapsed() < STEP,
            "{what}: still {v:?} after {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The card of task `id`: `(status, data-progress, label text, title text)`.
async fn card(c: &Client, id: &str) -> Option<(String, String, String, String)> {
    let card = c
        .find(Locator::Css(&format!(".task-card[data-task-id='{id}']")))
        .await
        .ok()?;
    let status = card.attr("data-status").await.ok()??;
    let bar = card.find(Locator::Css(".progress-bar")).await.ok()?;
    let progress = bar.attr("data-progress").await.ok()??;
    let label = card
        .find(Locator::Css(".label"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let title = card
        .find(Locator::Css(".title"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some((status, progress, label, title))
}

/// The text of the element `css` selects, or nothing while it is missing.
async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn status_of(c: &Client, id: &str) -> String {
    card(c, id).await.map(|c| c.0).unwrap_or_default()
}

async fn click(c: &Client, css: &str) {
    let el = until(
        css,
        || async { c.find(Locator::Css(css)).await.ok() },
        Option::is_some,
    )
    .await
    .unwrap();
    el.click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Clicks a task card's Answer button and returns the dialog it opens.
async fn open_question(c: &Client, id: &str) -> fantoccini::elements::Element {
    click(c, &format!(".task-card[data-task-id='{id}'] button.answer")).await;
    c.wait()
        .for_element(Locator::Css("dialog#confirmation[open]"))
        .await
        .unwrap()
}

fn target_dir() -> PathBuf {
    // The test binary lives in <target>/debug/deps.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_watches_a_report_answer_its_question_and_cancels_another_task() {
    let driver = Driver::start().await;
    let mut t = TestHost::new();
    t.load("reports", EXAMPLE_REPORTS, REPORTS_MANIFEST).await;
    t.load("tb", TASKS_BASIC, LONG_TASKS).await;
    t.load("confirm", CONFIRM, LONG_TASKS).await;
    t.host.start_tasks().await.unwrap();
    let tokens = Tokens::new(Db::in_memory().unwrap());
    let alice = principal("alice", "acme");
    let token = tokens.create(&alice, "browser").await.unwrap().secret;
    let served = serve_socket(
        AppState::new(t.host.clone(), tokens),
        modhost::http::serve::HEADER_READ_TIMEOUT,
    )
    .await;
    let url = served.url.clone();

    let c = driver.browser().await;
    c.goto(&url).await.unwrap();
    let input = c.wait().for_element(Locator::Id("token")).await.unwrap();
    input.send_keys(&token).await.unwrap();
    click(&c, "#sign-in").await;
    until(
        "signed in",
        || text_of(&c, "#whoami"),
        |who| who.contains("alice") && who.contains("acme"),
    )
    .await;

    // A module-supplied title that is markup; a label that flips text is
    // refused by the host itself, and text that flips inside a question
    // reaches the page, which must neutralise it.
    let hostile_title = "<img src=x onerror=alert(1)>";
    let hostile_label = "\u{202E}gnp.exe";
    let hostile_text = "\u{202E}gnp.exe <img src=y onerror=alert(2)>";
    let out = t
        .host
        .call_action(
            "tb",
            "submit",
            &json!({"task": "sleep", "title": hostile_title}).to_string(),
            &alice,
            modhost::RequestMeta::fresh(),
        )
        .await
        .unwrap();
    let sleeper = out.data.unwrap()["id"].as_str().unwrap().to_owned();
    let refused = t
        .host
        .call_action(
            "tb",
            "progress_of",
            &json!({"id": sleeper, "label": hostile_label}).to_string(),
            &alice,
            modhost::RequestMeta::fresh(),
        )
        .await;
    assert!(
        matches!(&refused, Err(modhost::CallError::Guest { error: modhost::SdkError::InvalidInput(m), .. }) if m.contains("control character")),
        "{refused:?}"
    );
    t.host
        .call_action(
            "tb",
            "progress_of",
            &json!({"id": sleeper, "label": "<b>bold</b> & co"}).to_string(),
            &alice,
            modhost::RequestMeta::fresh(),
        )
        .await
        .unwrap();
    let out = t
        .host
        .call_action(
            "confirm",
            "start",
            &json!({"text": hostile_text}).to_string(),
            &alice,
            modhost::RequestMeta::fresh(),
        )
        .await
        .unwrap();
    let asker = out.data.unwrap()["id"].as_str().unwrap().to_owned();

    // Start the report from the page, as a person would.
    let select = c.find(Locator::Id("action-select")).await.unwrap();
    select.select_by_value("reports/start").await.unwrap();
    let args = c.find(Locator::Id("action-args")).await.unwrap();
    args.clear().await.unwrap();
    args.send_keys(r#"{"month": "2026-11"}"#).await.unwrap();
    click(&c, "#action-run").await;
    let report = until(
        "the report's card",
        || async {
            let cards = c
                .find_all(Locator::Css(".task-card"))
                .await
                .unwrap_or_default();
            for card in cards {
                let text = card.text().await.unwrap_or_default();
                if text.contains("Monthly report 2026-11") {
                    return card.attr("data-task-id").await.ok().flatten();
                }
            }
            None
        },
        Option::is_some,
    )
    .await
    .unwrap();

    // The bar moves page by page, fed by the event stream, until the
    // question halfway.
    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        let (status, progress, _, _) = card(&c, &report).await.unwrap_or_default();
        if seen.last() != Some(&progress) {
            seen.push(progress);
        }
        if status == "waiting-confirmation" {
            break;
        }
        assert!(
            started.elapsed() < STEP,
            "no confirmation; progress {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.len() >= 3,
        "the progress bar should move through several values before the question: {seen:?}"
    );
    let (_, progress, label, _) = card(&c, &report).await.unwrap();
    assert_eq!(progress, "0.5");
    assert_eq!(label, "page 5 of 10");

    let shot = c.screenshot().await.unwrap();
    let path = target_dir().join("dashboard.png");
    std::fs::write(&path, &shot).unwrap();
    if std::env::var_os("MODHOST_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("dashboard.png"), &shot).unwrap();
    }

    // Answer in the dialog rendered from the task's surface.
    let dialog = open_question(&c, &report).await;
    let question = dialog.text().await.unwrap();
    assert!(
        question.contains("Include drafts in the 2026-11 report?"),
        "{question}"
    );
    click(
        &c,
        "dialog#confirmation button.surface-button[data-button-id='yes']",
    )
    .await;
    until(
        "the report completes",
        || status_of(&c, &report),
        |s| s == "completed",
    )
    .await;
    let done = t.host.tasks().get(&report, &alice).await.unwrap();
    assert!(
        done.result_json
            .unwrap()
            .contains("\"include_drafts\":true"),
        "the answer reached the task"
    );
    assert_eq!(card(&c, &report).await.unwrap().1, "1");

    // The hostile strings are inert text: no element made from them, no
    // script run, the override shown as a marker.
    let (_, _, label, title) = card(&c, &sleeper).await.unwrap();
    assert_eq!(title, hostile_title);
    assert_eq!(label, "<b>bold</b> & co");
    until(
        "the asking task waits",
        || status_of(&c, &asker),
        |s| s == "waiting-confirmation",
    )
    .await;
    let dialog = open_question(&c, &asker).await;
    let shown = until(
        "the question's text",
        || async { dialog.text().await.unwrap_or_default() },
        |t| t.contains("gnp.exe"),
    )
    .await;
    assert!(shown.contains("⟦U+202E⟧gnp.exe <img src=y"), "{shown:?}");
    assert!(!shown.contains('\u{202E}'), "{shown:?}");
    click(&c, "#dialog-close").await;
    let images = c
        .find_all(Locator::Css("#tasks img, dialog img"))
        .await
        .unwrap();
    assert!(images.is_empty(), "markup from a module became an element");
    assert!(c.get_alert_text().await.is_err(), "a script from data ran");

    // Cancel the other task from its card.
    click(
        &c,
        &format!(".task-card[data-task-id='{sleeper}'] button.cancel"),
    )
    .await;
    until(
        "the sleeper is cancelled",
        || status_of(&c, &sleeper),
        |s| s == "cancelled",
    )
    .await;
    assert_eq!(
        t.host.tasks().get(&sleeper, &alice).await.unwrap().status,
        modhost::tasks::store::Status::Cancelled
    );

    // The modules with their grants in plain words, and the audit trail.
    click(&c, "#nav-modules").await;
    let modules = until(
        "the module list",
        || text_of(&c, "#modules"),
        |t| t.contains("reports") && t.contains("Launches no programs."),
    )
    .await;
    assert!(
        modules.contains("Runs background tasks: at most 2 at once"),
        "{modules}"
    );
    click(&c, "#nav-audit").await;
    let audit = c
        .wait()
        .for_element(Locator::Css("#view-audit:not([hidden]) #audit"))
        .await;
    assert!(audit.is_ok(), "the audit view opens");
    c.close().await.unwrap();
}
