//! The host's own state (database, module data) is owner-only and out of
//! children's reach.

use modhost_tests::host_on;

#[test]
fn the_state_directory_and_database_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let host = host_on(state.path());
    drop(host);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(state.path()), 0o700);
    assert_eq!(mode(&state.path().join("modhost.db")), 0o600);
}

#[test]
fn a_state_directory_children_may_read_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let state = parent.path().join("state");
    let mut options = modhost::HostOptions::new(&state);
    options.subprocess.read_paths = vec![parent.path().to_path_buf()];
    let err = modhost::Host::new(options).unwrap_err();
    assert!(
        matches!(err, modhost::StartError::StateReachable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("children may read"), "{err}");
}
