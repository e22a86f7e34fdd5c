//! Embedding modhost: modules from your own directory, your own identity
//! for each call, your own sink for task events.
//!
//! `cargo run -p modhost --example embed -- MODULES MODULE ACTION [ARGS]`

use modhost::tasks::store::Status;
use modhost::ui::Effect;
use modhost::{Host, HostOptions, Principal, RequestMeta, Role};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [modules, module, action, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: embed MODULES MODULE ACTION [ARGS-JSON]");
    };
    let state = tempfile::tempdir()?;
    let host = Host::new(HostOptions::new(state.path()))?;
    if let Some(failure) = host.load_dir(modules.as_ref(), false).await?.first() {
        anyhow::bail!("{}: {}", failure.dir.display(), failure.error);
    }
    host.start_tasks().await?;

    // Your sink: every task event of this host, as JSON lines.
    let mut events = host.tasks().subscribe();
    let sink = tokio::spawn(async move {
        while let Ok(Some(event)) = events.recv().await {
            println!("event {}", event.json());
        }
    });

    // Your identity: whoever your own authentication says is calling.
    let alice = Principal {
        user_id: "alice".parse()?,
        organization_id: "acme".parse()?,
        role: Role::Member,
    };
    let args = rest.first().map_or("{}", String::as_str);
    let out = host
        .call_action(module, action, args, &alice, RequestMeta::fresh())
        .await?;
    println!("action {}", serde_json::to_string(&out)?);
    for effect in &out.effects {
        if let Effect::ShowTask { task_id } = effect {
            let row = host.tasks().wait(task_id, &alice).await?;
            anyhow::ensure!(row.status == Status::Completed, "task ended {}", row.status);
            println!("task {} {} by {}", row.id, row.status, row.user_id);
        }
    }
    // The sink ends when the host is gone and its last events are out.
    drop(host);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), sink).await;
    Ok(())
}
