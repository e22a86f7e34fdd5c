//! `run-subprocess` of `/bin/true` from a guest, through the whole gate
//! (argv check, audit records, cap-std working directory, Landlock, rlimits,
//! process group, subreaper), beside raw `std::process::Command::output()`
//! of the same program in the same run, interleaved.
//!
//! Run: `cargo bench -p modhost-tests --bench subprocess`
//! (`-- N` sets the number of runs per measurement, default 1000).

use std::time::{Duration, Instant};

use modhost::identity::RequestMeta;
use modhost_tests::{SUBPROCESS, TestHost, principal};

const GRANT: &str = r#"
[subprocess]
max-concurrent = 4

[[subprocess.programs]]
program = "true"
args = [[]]
"#;

fn median(name: &str, mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let m = us(samples[samples.len() / 2]);
    let p99 = us(samples[samples.len() * 99 / 100]);
    println!("{name:<44} median {m:>8.1} µs   p99 {p99:>8.1} µs");
    m
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
    let rt = modhost_tests::runtime();
    rt.block_on(async move {
        let t = TestHost::with("sub", SUBPROCESS, GRANT).await;
        let program = t
            .host
            .module("sub")
            .unwrap()
            .manifest
            .policy
            .subprocess
            .programs[0]
            .path
            .clone();
        let who = principal("bench", "bench");
        let args = r#"{"program": "true"}"#;
        for round in 0..2 {
            let (mut raw, mut gated, mut raw_tokio) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for _ in 0..n {
                let start = Instant::now();
                let out = std::process::Command::new(&program).output().unwrap();
                raw.push(start.elapsed());
                assert!(out.status.success());

                let start = Instant::now();
                let out = tokio::process::Command::new(&program)
                    .output()
                    .await
                    .unwrap();
                raw_tokio.push(start.elapsed());
                assert!(out.status.success());

                let start = Instant::now();
                let out = t
                    .host
                    .call_action("sub", "run", args, &who, RequestMeta::fresh())
                    .await
                    .unwrap();
                gated.push(start.elapsed());
                assert_eq!(out.data.unwrap()["status"]["code"], 0);
            }
            if round == 0 {
                continue; // warm-up
            }
            println!("{n} runs of {} each, interleaved:", program.display());
            let r = median("raw std Command::output()", raw);
            median("raw tokio Command::output()", raw_tokio);
            let g = median("gated run-subprocess from a guest action", gated);
            println!("ratio gated / raw std: {:.2}x (goal ≤ 1.5x)", g / r);
        }
    });
}
