//! `modhost serve`: the host as a server on the embedded SQLite default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::router;
use super::state::AppState;
use crate::auth::{AuthError, Tokens};
use crate::db::{DbError, Durability};
use crate::identity::{Principal, Role};
use crate::{Host, HostOptions};

/// The user and organization of the development token made on a first start.
pub const DEMO_USER: &str = "demo";
pub const DEMO_ORG: &str = "demo";

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Directory whose subdirectories are modules.
    pub modules_dir: PathBuf,
    /// Host state: module data, compiled-component cache.
    pub state_dir: PathBuf,
    /// The SQLite database file.
    pub db_path: PathBuf,
    pub listen: SocketAddr,
    /// Run each module's `[build]` command before loading it.
    pub build: bool,
    pub durability: Durability,
    /// Start subprocess children even where Landlock cannot confine them.
    pub allow_unconfined_subprocesses: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Start(#[from] crate::host::StartError),
    #[error(transparent)]
    Tasks(#[from] crate::tasks::store::TaskStoreError),
    #[error(transparent)]
    Modules(#[from] crate::host::LoadDirError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Loads the modules and serves the API until `shutdown` resolves.
///
/// On a first start with no tokens, creates a development token for the
/// user `demo` of organization `demo` and prints it with the URL.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut options = HostOptions::new(&config.state_dir);
    options.db_path = config.db_path.clone();
    options.durability = config.durability;
    options.subprocess.allow_unconfined = config.allow_unconfined_subprocesses;
    if config.allow_unconfined_subprocesses {
        let abi = crate::subprocess::confine::landlock_abi();
        tracing::warn!(
            landlock_abi = abi,
            "--allow-unconfined-subprocesses: where Landlock cannot confine a module's child, it runs UNCONFINED with the host's full file and network access"
        );
    }
    let host = Arc::new(Host::new(options)?);
    let tokens = Tokens::new(host.db().clone());
    let failures = host.load_dir(&config.modules_dir, config.build).await?;
    for f in &failures {
        eprintln!("module in {} not loaded: {}", f.dir.display(), f.error);
    }
    let recovery = host.start_tasks().await?;
    if recovery.interrupted > 0 || !recovery.resumed.is_empty() {
        println!(
            "recovered tasks of the previous run: {} interrupted, {} resumed",
            recovery.interrupted,
            recovery.resumed.len()
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let url = format!("http://{addr}");
    println!(
        "modhost serving {} module(s) at {url}",
        host.module_names().len()
    );
    println!("  dashboard: open {url}/ and sign in with a token");
    for name in host.module_names() {
        println!("  {url}/v1/modules/{name}");
    }
    if tokens.count_live()? == 0 {
        let principal = Principal {
            user_id: DEMO_USER.parse().expect("valid demo user id"),
            organization_id: DEMO_ORG.parse().expect("valid demo organization id"),
            role: Role::Admin,
        };
        let token = tokens.create(&principal, "development token (first start)")?;
        println!(
            "development token for user `{DEMO_USER}` of organization `{DEMO_ORG}` (shown once):"
        );
        println!("  export TOKEN={}", token.secret);
        println!(
            "  curl -s -H \"Authorization: Bearer $TOKEN\" -X POST {url}/v1/modules/hello/actions/greet -d '{{}}'"
        );
    } else {
        println!("tokens: use one you created (`modhost token create --user U --org O`)");
    }
    let state = AppState::new(host, tokens);
    let closing = state.closing.clone();
    let app = router(state);
    let stopping = closing.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        closing.cancel();
    });
    // A client that stopped reading can hold a connection open forever; the
    // drain gets a bounded time.
    tokio::select! {
        served = server => served.map_err(ServeError::Serve),
        () = async {
            stopping.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after the stop signal; stopping anyway");
            Ok(())
        }
    }
}

/// How long a stopping server waits for open connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
