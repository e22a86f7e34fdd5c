//! The benchmark at smoke sizes, so that it cannot rot between the runs
//! that measure: every scenario's whole path, its report and its goals.

use modhost_bench::{Options, Scenario, run};

#[test]
fn the_benchmark_runs_every_scenario_at_smoke_sizes_and_reports_each() {
    let out = tempfile::tempdir().unwrap();
    let options = Options::smoke(env!("CARGO_BIN_EXE_modhost-bench").into());
    let report = run(&options).unwrap();
    assert_eq!(report.sections.len(), Scenario::ALL.len());
    for section in &report.sections {
        for f in section.figures.iter().filter(|f| f.absent.is_none()) {
            assert_eq!(
                f.samples.len(),
                1,
                "{}: {} {}",
                section.title,
                f.system,
                f.setting
            );
            assert!(
                f.samples.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{}: {} {} measured {:?}",
                section.title,
                f.system,
                f.setting,
                f.samples
            );
        }
    }
    let tasks = &report.sections[0];
    let modhost = tasks
        .figures
        .iter()
        .find(|f| f.system == "modhost")
        .unwrap();
    assert!(modhost.median().unwrap() > 0.0);
    // The waiting scenario's child saw its tasks wait.
    let waiting = report
        .sections
        .iter()
        .find(|s| s.scenario == Scenario::Waiting)
        .unwrap();
    let held = waiting
        .figures
        .iter()
        .find(|f| f.setting.ends_with("waiting at once"))
        .unwrap();
    assert_eq!(held.median(), Some(100.0));

    let md = report.markdown();
    let path = out.path().join("BENCHMARKS.md");
    std::fs::write(&path, &md).unwrap();
    for needle in [
        "## Goals",
        "## 1. Durable no-op tasks",
        "## Machine",
        "## Versions",
        "wasmtime: 48",
    ] {
        assert!(md.contains(needle), "the report lacks {needle:?}:\n{md}");
    }
    // Peers that were not run say so rather than showing a figure.
    assert!(md.contains("not run"), "{md}");
}
