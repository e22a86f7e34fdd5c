//! The kill -9 campaign (`kill-campaign`) at a few cycles, on each store, so
//! that it keeps working: its full runs are commands of their own (see the
//! README).

use std::process::Command;

/// Runs the campaign with `args`, and checks its report of `cycles` cycles:
/// something was acknowledged, and every count of harm is 0.
fn campaign(cycles: u32, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_kill-campaign"))
        .args(["--cycles", &cycles.to_string(), "--seed", "7"])
        .args(args)
        .output()
        .expect("running kill-campaign");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = report.lines().last().unwrap_or_default();
    assert!(
        line.starts_with(&format!("cycles {cycles}, acknowledged submits ")),
        "{line}"
    );
    for zero in [
        "lost 0",
        "duplicated 0",
        "resumed-from-older-checkpoint 0",
        "changed answers 0",
        "corrupt 0",
        "orphans 0",
        "zombies 0",
    ] {
        assert!(line.contains(zero), "{line}");
    }
    let acknowledged: usize = line
        .split("acknowledged submits ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        acknowledged > 0,
        "the client was acknowledged nothing: {line}"
    );
}

#[test]
fn a_few_kill_9_cycles_lose_nothing_and_leave_nothing_running() {
    campaign(4, &[]);
}

#[test]
fn a_few_kill_9_cycles_of_one_of_two_hosts_on_postgresql_lose_nothing() {
    campaign(3, &["--store", "postgres"]);
}
