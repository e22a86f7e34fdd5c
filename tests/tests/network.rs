//! Outbound HTTP end to end, from a real guest component through the SDK's
//! client to a loopback server the tests start: each test is a grant that
//! must work or an attack that must fail. The guest (`FETCHER`, and its
//! twins `PY_FETCHER` and `JS_FETCHER`) sends whatever request the test
//! describes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use modhost::identity::RequestMeta;
use modhost::tasks::store::Status;
use modhost::{CallError, SdkError};
use modhost_tests::*;
use serde_json::{Value, json};

/// A file the download tests fetch: 3 MiB of a repeating, uneven pattern.
fn file_bytes() -> Vec<u8> {
    (0..3u32 << 20)
        .map(|i| u8::try_from((i * 31 + i / 7) % 251).unwrap())
        .collect()
}

/// A loopback HTTP server with what the tests need: a greeting, an echo,
/// large bodies with and without a length, a slow server, a stalling body,
/// redirects and a file.
async fn server() -> SocketAddr {
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the test server" }))
        .route(
            "/echo",
            post(|body: String| async move { format!("echo: {body}") }),
        )
        .route(
            "/big/{n}",
            get(|Path(n): Path<usize>| async move { vec![b'x'; n] }),
        )
        .route(
            "/chunked/{n}",
            get(|Path(n): Path<usize>| async move {
                let chunks = (0..n.div_ceil(65536)).map(move |i| {
                    let len = (n - i * 65536).min(65536);
                    Ok::<_, std::io::Error>(vec![b'y'; len])
                });
                Body::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        )
        .route(
            "/stall",
            get(|| async {
                let first =
                    futures::stream::once(async { Ok::<_, std::io::Error>(vec![b'z'; 10]) });
                let never = futures::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, std::io::Error>(vec![b'z'; 10])
                });
                Body::from_stream(futures::StreamExt::chain(first, never))
            }),
        )
        .route(
            "/redirect",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                let to = q.get("to").cloned().unwrap_or_default();
                (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
            }),
        )
        .route(
            "/headers",
            get(|headers: axum::http::HeaderMap| async move {
                let mut names: Vec<String> = headers.keys().map(|k| k.to_string()).collect();
                names.sort();
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                format!("host={host} names={}", names.join(","))
            }),
        )
        .route(
            "/file",
            get(|| async { Response::new(Body::from(file_bytes())) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A `[network]` section allowing `allow`, with `extra` keys.
fn grants(allow: &[String], extra: &str) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[filesystem]\ndata = true\n\n[network]\nallow = [{}]\n{extra}\n",
        allow.join(", ")
    )
}

async fn host_allowing(allow: &[String], extra: &str) -> TestHost {
    host_of(FETCHER, allow, extra).await
}

/// A host with the fetcher `guest` loaded as `net`, allowed `allow`.
async fn host_of(guest: &str, allow: &[String], extra: &str) -> TestHost {
    TestHost::with("net", guest, &grants(allow, extra)).await
}

/// The tests of the client's behaviour, each run through the Rust SDK's
/// fetcher and through its Python and JavaScript twins
/// (`tests/programs-py/fetcher`, `tests/programs-js/fetcher`): the host
/// decides alike, and every SDK reports its decisions alike.
macro_rules! on_every_sdk {
    ($($test:ident),* $(,)?) => {
        on_every_sdk!(@sdk rust FETCHER; $($test),*);
        on_every_sdk!(@sdk python PY_FETCHER; $($test),*);
        on_every_sdk!(@sdk javascript JS_FETCHER; $($test),*);
    };
    (@sdk $sdk:ident $guest:ident; $($test:ident),*) => {
        mod $sdk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::$guest).await
                }
            )*
        }
    };
}

on_every_sdk!(
    a_host_granted_by_address_is_reached_and_answers,
    a_destination_not_granted_is_refused_naming_it,
    a_module_without_a_network_grant_reaches_nothing,
    a_granted_name_resolving_to_loopback_is_refused_without_a_grant_of_the_address,
    a_redirect_is_followed_within_the_grant_and_refused_outside_it,
    a_redirect_to_another_origin_carries_no_credentials,
    a_redirect_to_the_metadata_address_is_refused,
    a_response_larger_than_the_grant_is_cut_with_a_typed_error,
    a_slow_server_and_a_stalled_body_are_timed_out,
    the_whole_request_is_held_to_its_timeout,
    requests_beyond_max_concurrent_are_refused_until_one_is_done,
    a_background_task_downloads_into_its_data_directory_with_progress,
    a_body_larger_than_the_modules_memory_is_saved_whole,
    an_https_destination_is_reached_over_tls_with_the_operators_roots,
    an_https_server_the_roots_do_not_vouch_for_is_refused_for_its_certificate,
);

async fn call(t: &TestHost, action: &str, args: Value) -> Result<Value, SdkError> {
    call_as(t, &principal("alice", "acme"), action, args).await
}

async fn call_as(
    t: &TestHost,
    who: &modhost::Principal,
    action: &str,
    args: Value,
) -> Result<Value, SdkError> {
    let out = t
        .host
        .call_action("net", action, &args.to_string(), who, RequestMeta::fresh())
        .await;
    match out {
        Ok(out) => Ok(out.data.expect("the action returns data")),
        Err(CallError::Guest { error, .. }) => Err(error),
        Err(other) => panic!("unexpected call failure: {other}"),
    }
}

async fn send(t: &TestHost, request: Value) -> Result<Value, SdkError> {
    call(t, "send", request).await
}

async fn a_host_granted_by_address_is_reached_and_answers(guest: &'static str) {
    let addr = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "").await;
    let got = send(&t, json!({"url": format!("http://{addr}/hello")}))
        .await
        .unwrap();
    assert_eq!(got["status"], 200);
    assert_eq!(got["body"], "hello from the test server");
    let echoed = send(
        &t,
        json!({"url": format!("http://{addr}/echo"), "method": "POST", "body": "ping"}),
    )
    .await
    .unwrap();
    assert_eq!(echoed["body"], "echo: ping");
}

async fn a_destination_not_granted_is_refused_naming_it(guest: &'static str) {
    let addr = server().await;
    let other = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "").await;
    let reason = denied(send(&t, json!({"url": format!("http://{other}/hello")})).await);
    assert!(
        reason.contains(&format!("http://{other}")) && reason.contains("[network] allow"),
        "{reason}"
    );
    // The grant is for plain HTTP: TLS to the same port is another destination.
    let reason = denied(send(&t, json!({"url": format!("https://{addr}/hello")})).await);
    assert!(reason.contains(&format!("https://{addr}")), "{reason}");
}

async fn a_module_without_a_network_grant_reaches_nothing(guest: &'static str) {
    let addr = server().await;
    let t = TestHost::with("net", guest, "").await;
    let reason = denied(send(&t, json!({"url": format!("http://{addr}/hello")})).await);
    assert!(reason.contains("[network] allow"), "{reason}");
}

async fn a_granted_name_resolving_to_loopback_is_refused_without_a_grant_of_the_address(
    guest: &'static str,
) {
    let addr = server().await;
    let port = addr.port();
    let t = host_of(guest, &[format!("localhost:{port}")], "").await;
    let reason = denied(send(&t, json!({"url": format!("http://localhost:{port}/hello")})).await);
    assert!(
        reason.contains("internal address") && reason.contains(&format!("localhost:{port}")),
        "{reason}"
    );
}

async fn a_redirect_is_followed_within_the_grant_and_refused_outside_it(guest: &'static str) {
    let addr = server().await;
    let other = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "").await;
    let within = send(
        &t,
        json!({"url": format!("http://{addr}/redirect?to=/hello")}),
    )
    .await
    .unwrap();
    assert_eq!(within["status"], 200);
    assert_eq!(within["url"], format!("http://{addr}/hello"));
    let to = format!("http://{other}/hello");
    let reason = denied(
        send(
            &t,
            json!({"url": format!("http://{addr}/redirect?to={to}")}),
        )
        .await,
    );
    assert!(reason.contains(&format!("http://{other}")), "{reason}");
    // Not following returns the redirect itself.
    let raw = send(
        &t,
        json!({"url": format!("http://{addr}/redirect?to={to}"), "max_redirects": 0}),
    )
    .await
    .unwrap();
    assert_eq!(raw["status"], 302);
}

async fn a_redirect_to_another_origin_carries_no_credentials(guest: &'static str) {
    let addr = server().await;
    let other = server().await;
    let t = host_of(
        guest,
        &[format!("http://{addr}"), format!("http://{other}")],
        "",
    )
    .await;
    let headers = json!([
        ["x-api-key", "secret"],
        ["authorization", "Bearer t"],
        ["accept", "text/plain"]
    ]);
    let same = send(
        &t,
        json!({"url": format!("http://{addr}/redirect?to=/headers"), "headers": headers}),
    )
    .await
    .unwrap();
    let body = same["body"].as_str().unwrap();
    assert!(
        body.contains("x-api-key") && body.contains("authorization"),
        "{body}"
    );
    assert!(body.starts_with(&format!("host={addr} ")), "{body}");
    let to = format!("http://{other}/headers");
    let moved = send(
        &t,
        json!({"url": format!("http://{addr}/redirect?to={to}"), "headers": headers}),
    )
    .await
    .unwrap();
    let body = moved["body"].as_str().unwrap();
    assert!(body.contains("accept"), "{body}");
    assert!(
        !body.contains("x-api-key") && !body.contains("authorization"),
        "{body}"
    );
}

async fn a_redirect_to_the_metadata_address_is_refused(guest: &'static str) {
    let addr = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "").await;
    let to = "http://169.254.169.254/latest/meta-data/";
    let reason = denied(
        send(
            &t,
            json!({"url": format!("http://{addr}/redirect?to={to}")}),
        )
        .await,
    );
    assert!(reason.contains("http://169.254.169.254:80"), "{reason}");
}

async fn a_response_larger_than_the_grant_is_cut_with_a_typed_error(guest: &'static str) {
    let addr = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "max-response-mib = 1").await;
    let fits = send(&t, json!({"url": format!("http://{addr}/big/{}", 1 << 20)}))
        .await
        .unwrap();
    assert_eq!(fits["len"], 1 << 20);
    for url in [
        format!("http://{addr}/big/{}", 2 << 20),
        format!("http://{addr}/chunked/{}", 2 << 20),
    ] {
        let reason = limited(send(&t, json!({ "url": url })).await);
        assert!(reason.contains("max-response-mib"), "{url}: {reason}");
    }
}

async fn a_slow_server_and_a_stalled_body_are_timed_out(guest: &'static str) {
    let addr = server().await;
    let t = host_of(
        guest,
        &[format!("http://{addr}")],
        "first-byte-timeout-ms = 300",
    )
    .await;
    let reason = limited(send(&t, json!({"url": format!("http://{addr}/slow")})).await);
    assert!(reason.contains("timed out"), "{reason}");
    let reason = limited(
        send(
            &t,
            json!({"url": format!("http://{addr}/stall"), "stall_ms": 300}),
        )
        .await,
    );
    assert!(reason.contains("stalled"), "{reason}");
}

async fn the_whole_request_is_held_to_its_timeout(guest: &'static str) {
    let addr = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "timeout-ms = 400").await;
    let reason = limited(send(&t, json!({"url": format!("http://{addr}/stall")})).await);
    assert!(reason.contains("timed out"), "{reason}");
}

async fn requests_beyond_max_concurrent_are_refused_until_one_is_done(guest: &'static str) {
    let addr = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "max-concurrent = 2").await;
    let got = call(
        &t,
        "hold",
        json!({"url": format!("http://{addr}/hello"), "n": 3}),
    )
    .await
    .unwrap();
    assert_eq!(got["answered"], 2, "{got}");
    assert_eq!(got["refused"]["kind"], "limit-exceeded", "{got}");
    assert!(
        got["refused"]["message"]
            .as_str()
            .unwrap()
            .contains("max-concurrent"),
        "{got}"
    );
    assert_eq!(got["again"], true, "{got}");
}

/// More than a module's linear memory (64 MiB by default) holds.
const LARGER_THAN_MEMORY: usize = 80 << 20;

async fn a_body_larger_than_the_modules_memory_is_saved_whole(guest: &'static str) {
    let addr = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "max-response-mib = 100").await;
    let got = call(
        &t,
        "save",
        json!({"url": format!("http://{addr}/big/{LARGER_THAN_MEMORY}"), "name": "big.bin"}),
    )
    .await
    .unwrap();
    assert_eq!(got["bytes"], LARGER_THAN_MEMORY);
    let saved = std::fs::read(t.state.path().join("data/net/org-acme/big.bin")).unwrap();
    assert_eq!(saved.len(), LARGER_THAN_MEMORY);
    assert!(saved.iter().all(|&b| b == b'x'));
}

async fn a_background_task_downloads_into_its_data_directory_with_progress(guest: &'static str) {
    let addr = server().await;
    let t = host_of(guest, &[format!("http://{addr}")], "").await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let started = call(
        &t,
        "download",
        json!({"url": format!("http://{addr}/file"), "name": "file.bin"}),
    )
    .await
    .unwrap();
    let id = started["task_id"].as_str().unwrap();
    let row = wait_final(&t.host, id, &alice).await;
    assert_eq!(row.status, Status::Completed, "{row:?}");
    let saved = t.state.path().join("data/net/org-acme/file.bin");
    assert_eq!(std::fs::read(&saved).unwrap(), file_bytes());
    assert!(!saved.with_extension("bin.partial").exists());
    let label = row.label.unwrap_or_default();
    assert!(label.ends_with(&format!("of {} bytes", 3 << 20)), "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_example_downloads_a_file_and_checks_its_sha256() {
    use sha2::Digest;
    let addr = server().await;
    let manifest = grants(&[format!("http://{addr}")], "");
    let t = TestHost::with("fetch", EXAMPLE_FETCH, &manifest).await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let sha256 = hex::encode(sha2::Sha256::digest(file_bytes()));
    let start = |name: &str, sha: &str| {
        let args = json!({"url": format!("http://{addr}/file"), "name": name, "sha256": sha});
        let host = t.host.clone();
        let alice = alice.clone();
        async move {
            let out = host
                .call_action(
                    "fetch",
                    "download",
                    &args.to_string(),
                    &alice,
                    RequestMeta::fresh(),
                )
                .await
                .unwrap();
            out.data.unwrap()["task_id"].as_str().unwrap().to_owned()
        }
    };
    let good = start("good.bin", &sha256).await;
    let row = wait_final(&t.host, &good, &alice).await;
    assert_eq!(row.status, Status::Completed, "{row:?}");
    let result: Value = serde_json::from_str(row.result_json.as_deref().unwrap()).unwrap();
    assert_eq!(result["sha256"], sha256);
    assert_eq!(result["bytes"], 3 << 20);
    let dir = t.state.path().join("data/fetch/org-acme/downloads");
    assert_eq!(std::fs::read(dir.join("good.bin")).unwrap(), file_bytes());
    assert!(row.progress > 0.9, "{row:?}");

    let bad = start("bad.bin", &"0".repeat(64)).await;
    let row = wait_final(&t.host, &bad, &alice).await;
    assert_eq!(row.status, Status::Failed, "{row:?}");
    assert!(
        row.failure_message
            .as_deref()
            .unwrap_or("")
            .contains("SHA-256"),
        "{row:?}"
    );
    assert!(!dir.join("bad.bin").exists());
}

/// A TLS server on 127.0.0.1 whose certificate a test authority signed,
/// answering every request `hello over tls`; and the authority's PEM file.
async fn tls_server(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let pem = dir.join("test-ca.pem");
    std::fs::write(&pem, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello over tls";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, pem)
}

async fn an_https_destination_is_reached_over_tls_with_the_operators_roots(guest: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let (addr, pem) = tls_server(dir.path()).await;
    let mut t = TestHost::with_options(|o| o.network.extra_roots = vec![pem]);
    t.load("net", guest, &grants(&[format!("https://{addr}")], ""))
        .await;
    let got = send(&t, json!({"url": format!("https://{addr}/x")}))
        .await
        .unwrap();
    assert_eq!(got["status"], 200);
    assert_eq!(got["body"], "hello over tls");
}

async fn an_https_server_the_roots_do_not_vouch_for_is_refused_for_its_certificate(
    guest: &'static str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _pem) = tls_server(dir.path()).await;
    let t = host_of(guest, &[format!("https://{addr}")], "").await;
    match send(&t, json!({"url": format!("https://{addr}/x")})).await {
        Err(SdkError::Internal(reason)) => {
            assert!(reason.contains("TLS certificate"), "{reason}")
        }
        other => panic!("expected a certificate failure, got {other:?}"),
    }
}

#[test]
fn a_host_with_an_unreadable_roots_file_does_not_start_and_names_it() {
    let state = tempfile::tempdir().unwrap();
    let mut options = modhost::HostOptions::new(state.path());
    options.network.extra_roots = vec![state.path().join("missing.pem")];
    let e = modhost::Host::new(options).unwrap_err().to_string();
    assert!(e.contains("missing.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_of_an_http_import_without_a_grant_and_not_with_one() {
    let env = modhost::manifest::LoadEnv::host_default();
    let bare = ModuleDir::new("net", FETCHER, "");
    let report = modhost::check::check_dir(bare.path(), &env).await;
    assert!(report.ok(), "{:?}", report.errors);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("wasi:http/outgoing-handler") && w.contains("refused")),
        "{:?}",
        report.warnings
    );
    let granted = ModuleDir::new(
        "net",
        FETCHER,
        "[network]\nallow = [\"https://example.com\"]",
    );
    let report = modhost::check::check_dir(granted.path(), &env).await;
    assert!(
        !report
            .warnings
            .iter()
            .any(|w| w.contains("network") || w.contains("http")),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .grants
            .iter()
            .any(|g| g.contains("https://example.com")),
        "{:?}",
        report.grants
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_notes_rather_than_warns_that_a_module_of_an_sdks_http_world_imports_wasi_http() {
    let env = modhost::manifest::LoadEnv::host_default();
    for (guest, sdk) in [(PY_FETCHER, "Python"), (JS_FETCHER, "JavaScript")] {
        let bare = ModuleDir::new("net", guest, "");
        let report = modhost::check::check_dir(bare.path(), &env).await;
        assert!(report.ok(), "{sdk}: {:?}", report.errors);
        assert_eq!(report.warnings, Vec::<String>::new(), "{sdk}");
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("wasi:http/outgoing-handler")
                    && n.contains(&format!("the {sdk} SDK's module-http world"))
                    && n.contains("refused")),
            "{sdk}: {:?}",
            report.notes
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_sent_or_refused_is_on_the_audit_trail_without_its_query() {
    use modhost::audit::{Capability, Decision, Detail};
    let addr = server().await;
    let other = server().await;
    let port = addr.port();
    let t = host_allowing(&[format!("http://{addr}"), format!("localhost:{port}")], "").await;
    send(
        &t,
        json!({"url": format!("http://{addr}/hello?token=secret")}),
    )
    .await
    .unwrap();
    denied(send(&t, json!({"url": format!("http://{other}/hello")})).await);
    denied(send(&t, json!({"url": format!("http://localhost:{port}/hello")})).await);
    let trail = trail_of(&t.host, Capability::Http, 3).await;
    let seen: Vec<(String, Decision)> = trail
        .iter()
        .map(|r| (r.entry.subject.clone(), r.entry.decision))
        .collect();
    assert_eq!(
        seen,
        [
            (format!("http://localhost:{port}/hello"), Decision::Denied),
            (format!("http://{other}/hello"), Decision::Denied),
            (format!("http://{addr}/hello"), Decision::Allowed),
        ],
        "newest first, and the query is not kept"
    );
    assert!(reason_of(&trail[0]).contains("internal address"));
    assert!(reason_of(&trail[1]).contains("[network] allow"));
    let Detail::Http(sent) = &trail[2].entry.detail else {
        panic!("an http record")
    };
    assert_eq!((sent.method.as_str(), sent.status), ("GET", Some(200)));
    assert_eq!(trail[2].entry.user_id, "alice");
    assert_eq!(trail[2].entry.module, "net");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learning_host_never_grants_an_internal_address_and_the_suggestion_names_it() {
    use modhost::audit::{Capability, Decision};
    let addr = server().await;
    let port = addr.port();
    let mut t = TestHost::with_options(|o| {
        o.learn = Some(modhost::host::Learning {
            module: "net".into(),
            organization: "acme".parse().unwrap(),
        });
    });
    t.load("net", FETCHER, "").await;
    // An internal address reaches a module only when an operator names it,
    // by address or behind a name.
    for url in [
        format!("http://{addr}/hello?k=v"),
        format!("http://localhost:{port}/hello"),
    ] {
        let reason = denied(send(&t, json!({ "url": url })).await);
        assert!(reason.contains("[network] allow"), "{reason}");
    }
    let trail = trail_of(&t.host, Capability::Http, 2).await;
    assert!(trail.iter().all(|r| r.entry.decision == Decision::Denied));
    // The suggestion names the address (a grant of the name would not
    // reach it); once the operator grants it, it is reached.
    let suggestion = modhost::learn::suggest(&trail);
    assert_eq!(
        suggestion.network.iter().collect::<Vec<_>>(),
        [&format!("http://{addr}")]
    );
    let granted = host_allowing(&[format!("http://{addr}")], "").await;
    let got = send(&granted, json!({"url": format!("http://{addr}/hello")}))
        .await
        .unwrap();
    assert_eq!(got["status"], 200);
}
