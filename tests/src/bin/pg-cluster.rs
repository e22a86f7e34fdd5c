//! A test process holding the shared PostgreSQL cluster, for the test that
//! kills it with SIGKILL: prints `ready <url> <dir>` once the server accepts
//! connections, then waits for its stdin to close.
//!
//! Usage: pg-cluster

use std::io::{Read, Write};

use modhost_tests::postgres::Cluster;

fn main() {
    let cluster = Cluster::shared();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {} {}", cluster.url(), cluster.dir().display()).expect("writing stdout");
    out.flush().expect("flushing stdout");
    // Exits when the test that started us goes, however it goes.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
