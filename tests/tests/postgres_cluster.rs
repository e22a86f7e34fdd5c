//! The throwaway PostgreSQL cluster of the suite: databases on it are
//! usable and separate, and its server and directory go with the cluster or
//! with the process that started it.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use modhost_tests::postgres::Cluster;

/// `127.0.0.1:PORT` of a `postgres://user@127.0.0.1:PORT/db` URL.
fn address(url: &str) -> String {
    let (_, rest) = url.split_once('@').expect("a user in the URL");
    let (address, _) = rest.split_once('/').expect("a database in the URL");
    address.to_owned()
}

/// Waits (at most 10 s) until nothing listens on `address`.
fn until_refused(address: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(address).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[test]
fn a_started_cluster_accepts_connections_and_creates_databases() {
    let cluster = Cluster::shared();
    assert_eq!(cluster.psql(&cluster.url(), "select 1"), "1");

    let url = cluster.create_database("accepts_connections");
    assert_eq!(
        cluster.psql(&url, "select current_database()"),
        "accepts_connections"
    );
}

#[test]
fn two_databases_of_one_cluster_are_separate() {
    let cluster = Cluster::shared();
    let a = cluster.create_database("separate_a");
    let b = cluster.create_database("separate_b");

    cluster.psql(
        &a,
        "create table notes (body text); insert into notes values ('in a')",
    );

    assert_eq!(cluster.psql(&a, "select body from notes"), "in a");
    assert_eq!(cluster.psql(&b, "select to_regclass('notes') is null"), "t");
}

#[test]
fn a_test_cluster_skips_flushing_and_a_durable_one_flushes_every_commit() {
    let settings = "select current_setting('fsync') || current_setting('synchronous_commit') \
                    || current_setting('full_page_writes')";
    let fast = Cluster::shared();
    assert_eq!(fast.psql(&fast.url(), settings), "offoffoff");

    let durable = Cluster::start_durable(&["work_mem=7MB"]);
    assert_eq!(durable.psql(&durable.url(), settings), "ononon");
    assert_eq!(durable.psql(&durable.url(), "show work_mem"), "7MB");
}

#[test]
#[should_panic(expected = "a test database name is")]
fn a_database_name_that_would_need_quoting_is_refused() {
    Cluster::shared().create_database("Robert'); drop table students;--");
}

#[test]
fn a_dropped_cluster_stops_its_server_and_removes_its_directory() {
    let cluster = Cluster::start();
    let (url, dir) = (cluster.url(), cluster.dir().to_owned());
    assert_eq!(cluster.psql(&url, "select 1"), "1");

    drop(cluster);

    assert!(
        TcpStream::connect(address(&url)).is_err(),
        "{url} still listens"
    );
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[test]
fn a_cluster_keeps_running_after_the_thread_that_started_it_ends() {
    let cluster = std::thread::spawn(Cluster::start).join().unwrap();
    // The kernel signals a child when the thread that spawned it ends,
    // shortly after that thread can be joined.
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(cluster.psql(&cluster.url(), "select 1"), "1");
}

#[test]
fn a_killed_process_takes_its_server_along_and_the_next_start_removes_its_directory() {
    let mut holder = Command::new(env!("CARGO_BIN_EXE_pg-cluster"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting pg-cluster");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut words = line.split_whitespace();
    let (Some("ready"), Some(url), Some(dir)) = (words.next(), words.next(), words.next()) else {
        let _ = holder.kill();
        panic!("pg-cluster said {line:?}");
    };
    let dir = PathBuf::from(dir);
    assert!(
        TcpStream::connect(address(url)).is_ok(),
        "{url} does not listen"
    );

    holder.kill().unwrap();
    holder.wait().unwrap();

    assert!(until_refused(&address(url)), "{url} outlived its process");
    assert!(dir.exists(), "a killed process removed {}", dir.display());
    let _next = Cluster::start();
    assert!(!dir.exists(), "{} outlived the next start", dir.display());
}
