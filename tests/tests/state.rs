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

/// `identity` with a data directory of at most 1 MiB per organization.
const QUOTA_OF_ONE_MIB: &str = "[filesystem]\ndata = true\nmax-mib = 1";

async fn act(
    host: &modhost::Host,
    action: &str,
    args: &str,
    who: &modhost::Principal,
) -> Result<serde_json::Value, modhost::CallError> {
    host.call_action("identity", action, args, who, modhost::RequestMeta::fresh())
        .await
        .map(|o| o.data.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_is_read_only_and_refuses_new_tasks_for_its_organization_only() {
    use modhost::{CallError, SdkError};
    use modhost_tests::{IDENTITY, TestHost, principal};

    let mut t = TestHost::with_options(|o| {
        o.data_quota.measure_every = std::time::Duration::from_millis(100);
        o.data_quota.min_remeasure = std::time::Duration::ZERO;
    });
    t.load("identity", IDENTITY, QUOTA_OF_ONE_MIB).await;
    t.host.start_tasks().await.unwrap();
    let (alice, bob) = (principal("alice", "acme"), principal("bob", "globex"));
    act(&t.host, "write_note", r#"{"text":"first"}"#, &alice)
        .await
        .unwrap();
    // What earlier calls left: acme's directory now holds more than 1 MiB.
    let acme = t.state.path().join("data/identity/org-acme");
    std::fs::write(acme.join("big.bin"), vec![7u8; 1_200_000]).unwrap();

    let refused = act(&t.host, "write_note", r#"{"text":"second"}"#, &alice).await;
    assert!(
        matches!(&refused, Err(CallError::Guest { error: SdkError::Internal(m), .. }) if m.contains("cannot write the note")),
        "{refused:?}"
    );
    let note = act(&t.host, "read_note", "{}", &alice).await.unwrap();
    assert_eq!(note, "first", "reading still works");
    let spawned = act(&t.host, "spawn", "{}", &alice).await;
    assert!(
        matches!(&spawned, Err(CallError::Guest { error: SdkError::LimitExceeded(m), .. }) if m.contains("[filesystem] max-mib")),
        "{spawned:?}"
    );
    let submitted = t
        .host
        .submit_task(
            "identity",
            "whoami",
            "{}",
            modhost::tasks::SubmitOptions::default(),
            &alice,
            modhost::RequestMeta::fresh(),
        )
        .await;
    assert!(
        matches!(&submitted, Err(SdkError::LimitExceeded(m)) if m.contains("at or over its quota of 1048576 bytes")),
        "{submitted:?}"
    );

    // Another organization's directory of the same module has its own quota.
    act(&t.host, "write_note", r#"{"text":"globex"}"#, &bob)
        .await
        .unwrap();
    let spawned = act(&t.host, "spawn", "{}", &bob).await.unwrap();
    let id = spawned["id"].as_str().unwrap().to_owned();
    modhost_tests::wait_final(&t.host, &id, &bob).await;

    // Back under the quota (the operator removed the file), acme writes again
    // once the measurement is older than `measure_every`.
    std::fs::remove_file(acme.join("big.bin")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    act(&t.host, "write_note", r#"{"text":"third"}"#, &alice)
        .await
        .unwrap();
    assert_eq!(
        act(&t.host, "read_note", "{}", &alice).await.unwrap(),
        "third"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_wrote_is_measured_before_the_next_one_starts() {
    use modhost_tests::{IDENTITY, TestHost, principal};

    // Measurements are otherwise reused for an hour: only the end of the
    // writing call can make the host look again.
    let mut t = TestHost::with_options(|o| {
        o.data_quota.measure_every = std::time::Duration::from_secs(3600);
        o.data_quota.min_remeasure = std::time::Duration::ZERO;
    });
    t.load("identity", IDENTITY, QUOTA_OF_ONE_MIB).await;
    let alice = principal("alice", "acme");
    let acme = t.state.path().join("data/identity/org-acme");
    std::fs::create_dir_all(&acme).unwrap();
    std::fs::write(acme.join("old.bin"), vec![7u8; 100_000]).unwrap();
    // Measured at its start (100 KB), this call writes a 1,000,000-byte note.
    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(1_000_000));
    act(&t.host, "write_note", &big, &alice).await.unwrap();
    let refused = act(&t.host, "write_note", r#"{"text":"more"}"#, &alice).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        act(&t.host, "read_note", "{}", &alice).await.unwrap(),
        "x".repeat(1_000_000)
    );
}
