//! Per-call overhead of an action through the host, beside raw wasmtime in
//! the same run: `InstancePre::instantiate_async` + one call on a fresh
//! `Store` with a bare WASI context, the floor any host pays.
//!
//! Run: `cargo bench -p modhost-tests --bench call_overhead`
//! (`-- N` sets the number of calls per measurement, default 5000).

use std::time::{Duration, Instant};

use modhost::identity::RequestMeta;
use modhost_tests::{SPIN, TestHost, principal, raw};

fn stats(name: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median = us(samples[samples.len() / 2]);
    let p99 = us(samples[samples.len() * 99 / 100]);
    let total: Duration = samples.iter().sum();
    println!(
        "{name:<34} median {median:>8.1} µs   p99 {p99:>8.1} µs   {:>8.0} calls/s (sequential)",
        samples.len() as f64 / total.as_secs_f64()
    );
    median
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let rt = modhost_tests::runtime();
    rt.block_on(async move {
        let t = TestHost::with("spin", SPIN, "").await;
        let module = t.host.module("spin").unwrap();
        let engine = t.host.engine().engine().clone();

        // Raw: the same engine and compiled component, WASI only; the
        // modhost imports are defined as traps (the `ok` action calls none).
        let raw_pre = raw::pre(&engine, &module.component);
        let (action, args) = ("ok".to_owned(), "{}".to_owned());
        let who = principal("bench", "bench");

        for round in 0..2 {
            let mut raw = Vec::with_capacity(n);
            let mut hosted = Vec::with_capacity(n);
            // Interleave the two so machine noise hits both alike.
            for _ in 0..n {
                let start = Instant::now();
                let mut store = raw::store(&engine);
                let inst = raw_pre.instantiate_async(&mut store).await.unwrap();
                inst.call_handle_action(&mut store, &action, &args)
                    .await
                    .unwrap()
                    .unwrap();
                drop(store);
                raw.push(start.elapsed());

                let start = Instant::now();
                t.host
                    .call_action("spin", "ok", "{}", &who, RequestMeta::fresh())
                    .await
                    .unwrap();
                hosted.push(start.elapsed());
            }
            if round == 0 {
                continue; // warm-up
            }
            println!("{n} calls each, pooling allocator, 2 tokio workers");
            let r = stats("raw wasmtime instantiate + call", raw);
            let h = stats("modhost call_action", hosted);
            println!("overhead: {:.1} µs per call ({:.2}x raw)", h - r, h / r);
        }
    });
}
