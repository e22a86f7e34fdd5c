//! The kill -9 campaign (`kill-campaign`) at a few cycles, so that it keeps
//! working: its full run is a command of its own (see the README).

use std::process::Command;

#[test]
fn a_few_kill_9_cycles_lose_nothing_and_leave_nothing_running() {
    let out = Command::new(env!("CARGO_BIN_EXE_kill-campaign"))
        .args(["--cycles", "4", "--seed", "7"])
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
        line.starts_with("cycles 4, acknowledged submits "),
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
