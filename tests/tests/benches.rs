//! Benches at smoke sizes, so that one cannot rot between the runs that
//! measure: each runs its whole path and panics where a task or a lookup
//! goes wrong.

#[path = "../benches/postgres.rs"]
#[expect(dead_code, reason = "the test calls `run`, not the bench's `main`")]
mod postgres;

#[test]
fn the_postgres_bench_runs_at_smoke_sizes() {
    postgres::run(postgres::Sizes::SMOKE);
}

#[path = "../benches/languages.rs"]
#[expect(dead_code, reason = "the test calls `run`, not the bench's `main`")]
mod languages;

#[test]
fn the_languages_bench_runs_at_smoke_sizes() {
    let figures = languages::run(20, Some(modhost_tests::COMPONENT_CACHE_DIR));
    assert_eq!(figures.len(), languages::GUESTS.len());
    assert!(figures.iter().all(|f| f.tasks_per_s > 0.0 && f.bytes > 0));
}
