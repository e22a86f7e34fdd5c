//! The event stream's fan-out over real sockets, beside the same work with
//! nobody watching, in one run.
//!
//! Run: `cargo bench -p modhost-tests --bench events` (`-- SUBSCRIBERS N`,
//! default 1000 subscribers and 2000 progress updates).
//!
//! 1. One task stores its progress N times (`update-progress`, each an event)
//!    with no subscriber, then with SUBSCRIBERS clients reading
//!    `GET /v1/events` over TCP: the task's time with and without them, and
//!    the events delivered per second.
//! 2. The hub alone: N events published as fast as one loop can, delivered
//!    to the same clients: the fan-out's own ceiling.
//!    1b. The same with a pause between updates: a steady rate around the
//!    goal's 100k deliveries a second instead of flat out.
//! 3. One stuck client (connected, never reading) beside the readers: the
//!    task's time does not move.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use modhost::Host;
use modhost::auth::Tokens;
use modhost::events::{EventKind, Subject};
use modhost::http::{AppState, StreamLimits};
use modhost::identity::RequestMeta;
use modhost::tasks::SubmitOptions;
use modhost_tests::{ModuleDir, TASKS_BASIC, host_on, principal, serve_socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Updates of the paced run, and the pause between them: a steady stream
/// of about a hundred and fifty events a second, ~150k deliveries to 1,000.
const PACED: u32 = 300;
const PAUSE_MS: u64 = 5;

/// Counts complete events (`data:` lines) in a byte stream cut anywhere.
struct Counter {
    tail: Vec<u8>,
}

impl Counter {
    fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(chunk);
        // A SIMD search: the client's own cost should not weigh on the host.
        let n = memchr::memmem::find_iter(&joined, b"\ndata: ").count() as u64;
        let keep = joined.len().saturating_sub(6);
        self.tail = joined[keep..].to_vec();
        n
    }
}

/// Opens a stream as `token`; counts what arrives into `delivered`.
async fn subscribe(addr: std::net::SocketAddr, token: &str, delivered: Arc<AtomicU64>, read: bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    if !read {
        // Holds the socket open without reading: a stuck client.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    }
    let mut counter = Counter { tail: Vec::new() };
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                delivered.fetch_add(counter.feed(&buf[..n]), Ordering::Relaxed);
            }
        }
    }
}

async fn run_burst(host: &Host, n: u32) -> Duration {
    run_paced(host, n, 0).await
}

async fn run_paced(host: &Host, n: u32, pause_ms: u64) -> Duration {
    let who = principal("bench", "bench");
    let start = Instant::now();
    let id = host
        .submit_task(
            "tb",
            "burst",
            &format!(r#"{{"n": {n}, "pause_ms": {pause_ms}}}"#),
            SubmitOptions::default(),
            &who,
            RequestMeta::fresh(),
        )
        .await
        .unwrap();
    let row = host.tasks().wait(&id, &who).await.unwrap();
    assert_eq!(
        row.status,
        modhost::tasks::store::Status::Completed,
        "{row:?}"
    );
    start.elapsed()
}

/// Waits until `delivered` stops growing for a moment or reaches `want`.
async fn settle(delivered: &AtomicU64, want: u64) -> u64 {
    let mut last = u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now >= want || now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let subscribers = args.first().copied().unwrap_or(1000);
    let n = u32::try_from(args.get(1).copied().unwrap_or(2000)).unwrap();
    let rt = modhost_tests::runtime();
    rt.block_on(async move {
        let state = tempfile::tempdir().unwrap();
        let host = Arc::new(host_on(state.path()));
        let tb = ModuleDir::new("tb", TASKS_BASIC, "[limits]\ntask-deadline-ms = 600000");
        host.load_module(tb.path(), false).await.unwrap();
        host.start_tasks().await.unwrap();
        let tokens = Tokens::new(host.db().clone());
        let token = tokens
            .create(&principal("bench", "bench"), "bench")
            .await
            .unwrap()
            .secret;
        let state = AppState::with_stream_limits(
            host.clone(),
            tokens,
            StreamLimits {
                per_user: 4096,
                per_organization: 4096,
                per_host: 4096,
                ..StreamLimits::default()
            },
        );
        let streams = state.streams.clone();
        let served = serve_socket(state, modhost::http::serve::HEADER_READ_TIMEOUT).await;
        let addr = served.addr;
        println!(
            "modhost event-stream benchmark: {subscribers} subscribers over TCP, {n} progress updates, 2 tokio workers, 2 cores"
        );

        // Warm up the module and the store.
        run_burst(&host, 200).await;
        let mut alone = Vec::new();
        let mut paced_alone = Vec::new();
        for _ in 0..3 {
            alone.push(run_burst(&host, n).await);
            paced_alone.push(run_paced(&host, PACED, PAUSE_MS).await);
        }

        let delivered = Arc::new(AtomicU64::new(0));
        for _ in 0..subscribers {
            let (d, token) = (delivered.clone(), token.clone());
            tokio::spawn(async move { subscribe(addr, &token, d, true).await });
        }
        while (streams.open() as u64) < subscribers {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Each update is a progress event, plus created, pending, running
        // and completed.
        let per_run = u64::from(n) + 4;
        let mut watched = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..3 {
            let before = delivered.load(Ordering::Relaxed);
            let start = Instant::now();
            watched.push(run_burst(&host, n).await);
            let got = settle(&delivered, before + per_run * subscribers).await - before;
            let elapsed = start.elapsed();
            rates.push((got, elapsed));
        }
        let mut paced = Vec::new();
        let mut paced_rates = Vec::new();
        for _ in 0..3 {
            let before = delivered.load(Ordering::Relaxed);
            let start = Instant::now();
            paced.push(run_paced(&host, PACED, PAUSE_MS).await);
            let got = settle(&delivered, before + (u64::from(PACED) + 4) * subscribers).await - before;
            paced_rates.push(got as f64 / start.elapsed().as_secs_f64());
        }
        alone.sort();
        watched.sort();
        paced_alone.sort();
        paced.sort();
        paced_rates.sort_by(f64::total_cmp);
        let (a, w) = (alone[1], watched[1]);
        println!(
            "1. task storing {n} progress updates: alone {:.1} ms, with {subscribers} subscribers {:.1} ms ({:+.1}%)",
            a.as_secs_f64() * 1e3,
            w.as_secs_f64() * 1e3,
            (w.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
        );
        for (got, elapsed) in &rates {
            println!(
                "   delivered {got} of {} events in {:.1} ms: {:.0} events/s",
                per_run * subscribers,
                elapsed.as_secs_f64() * 1e3,
                *got as f64 / elapsed.as_secs_f64()
            );
        }

        let (pa, pw) = (paced_alone[1], paced[1]);
        println!(
            "1b. the same task pausing {PAUSE_MS} ms between {PACED} updates: alone {:.1} ms, with {subscribers} subscribers {:.1} ms ({:+.1}%), {:.0} events/s delivered (median)",
            pa.as_secs_f64() * 1e3,
            pw.as_secs_f64() * 1e3,
            (pw.as_secs_f64() / pa.as_secs_f64() - 1.0) * 100.0,
            paced_rates[1]
        );

        // 2. The hub alone.
        let subject = Subject {
            task_id: None,
            module: "tb".into(),
            organization_id: "bench".into(),
            user_id: "bench".into(),
        };
        let hub = host.events();
        let m = u64::from(n);
        let before = delivered.load(Ordering::Relaxed);
        let start = Instant::now();
        for i in 0..m {
            hub.send(
                subject.clone(),
                EventKind::Progress {
                    progress: i as f64 / m as f64,
                    label: None,
                    persisted: false,
                },
            );
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let published = start.elapsed();
        let got = settle(&delivered, before + m * subscribers).await - before;
        let elapsed = start.elapsed();
        println!(
            "2. hub alone: {m} events published in {:.1} ms; delivered {got} of {} in {:.1} ms: {:.0} events/s",
            published.as_secs_f64() * 1e3,
            m * subscribers,
            elapsed.as_secs_f64() * 1e3,
            got as f64 / elapsed.as_secs_f64()
        );

        // 3. A stuck client beside the readers.
        tokio::spawn({
            let (d, token) = (delivered.clone(), token.clone());
            async move { subscribe(addr, &token, d, false).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut stuck = Vec::new();
        for _ in 0..3 {
            stuck.push(run_burst(&host, n).await);
            settle(&delivered, u64::MAX).await;
        }
        stuck.sort();
        println!(
            "3. with one stuck client too: {:.1} ms ({:+.1}% vs alone)",
            stuck[1].as_secs_f64() * 1e3,
            (stuck[1].as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
        );
    });
}
