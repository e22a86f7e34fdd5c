//! `modhost serve`: the host as a server on the embedded SQLite default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::router;
use super::state::AppState;
use crate::auth::AuthError;
use crate::db::{DbError, Durability};
use crate::identity::{Principal, Role};
use crate::retention::Retention;
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
    /// Who subprocess children run as.
    pub child_user: crate::subprocess::user::ChildUserChoice,
    /// Active tasks one organization may have over all modules.
    pub max_active_tasks_per_org: u32,
    /// How long finished tasks are kept.
    pub task_retention: Retention,
    /// How long audit records are kept.
    pub audit_retention: Retention,
    /// The quota of a (module, organization) data directory whose manifest
    /// names none, in bytes.
    pub data_max_bytes: u64,
    /// The bound of the compiled-component cache.
    pub component_cache_bytes: u64,
    /// Where the tasks live.
    pub task_store: crate::host::TaskStoreLocation,
    /// The name this host claims tasks under.
    pub host_id: crate::tasks::store::HostId,
    /// How long a claimed task's lease lasts unless renewed.
    pub task_lease: std::time::Duration,
    /// How long a resumable task waiting for a confirmation keeps its
    /// instance ([`crate::HostOptions::waiting_grace`]).
    pub waiting_grace: std::time::Duration,
    /// PEM files of TLS roots outbound requests trust beside Mozilla's.
    pub tls_roots: Vec<PathBuf>,
    /// The module to learn ([`crate::host::Learning`]), for the one
    /// organization the host's tokens name (`demo` when there are none).
    pub learn: Option<String>,
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
    #[error(
        "--learn needs a host of one organization; live tokens name {}: revoke the others' tokens or use a --state-dir of its own",
        .0.join(", ")
    )]
    LearnOrganizations(Vec<String>),
    #[error("--learn {0}: no module of that name was loaded")]
    LearnUnknown(String),
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
    options.subprocess.child_user = config.child_user.clone();
    options.max_active_tasks_per_org = config.max_active_tasks_per_org;
    options.retention.tasks = config.task_retention;
    options.retention.audit = config.audit_retention;
    options.data_quota.default_max_bytes = config.data_max_bytes;
    options.engine.cache_max_bytes = config.component_cache_bytes;
    options.task_store = config.task_store.clone();
    options.host_id = config.host_id.clone();
    options.task_lease = config.task_lease;
    options.waiting_grace = config.waiting_grace;
    options.network.extra_roots = config.tls_roots.clone();
    if config.allow_unconfined_subprocesses {
        let abi = crate::subprocess::confine::landlock_abi();
        tracing::warn!(
            landlock_abi = abi,
            "--allow-unconfined-subprocesses: where Landlock cannot confine a module's child, it runs UNCONFINED with the host's full file and network access"
        );
    }
    if let Some(module) = &config.learn {
        options.learn = Some(learning(&options, module)?);
    }
    let host = Arc::new(Host::open(options).await?);
    let tokens = host.token_store().clone();
    let failures = host.load_dir(&config.modules_dir, config.build).await?;
    for f in &failures {
        eprintln!("module in {} not loaded: {}", f.dir.display(), f.error);
    }
    if let Some(learn) = &host.options().learn {
        if host.module(&learn.module).is_none() {
            return Err(ServeError::LearnUnknown(learn.module.clone()));
        }
        println!(
            "LEARNING `{}` for organization `{}`: its requests are recorded instead of denied; then `modhost manifest suggest {}` prints the grants it used",
            learn.module, learn.organization, learn.module
        );
    }
    let recovery = host.start_tasks().await?;
    if !recovery.interrupted.is_empty() || !recovery.resumed.is_empty() {
        println!(
            "recovered tasks of the previous run: {} interrupted, {} resumed",
            recovery.interrupted.len(),
            recovery.resumed.len()
        );
    }
    if let crate::host::TaskStoreLocation::Postgres(url) = &config.task_store {
        println!(
            "tasks, tokens and the audit trail: PostgreSQL at {} as host `{}`",
            crate::pg::redacted(url),
            config.host_id,
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
    if host
        .modules()
        .iter()
        .any(|m| m.learning.is_some() || !m.manifest.policy.subprocess.is_empty())
    {
        for line in host.subprocesses().confinement_report() {
            println!("  children: {line}");
        }
    }
    for name in host.module_names() {
        println!("  {url}/v1/modules/{name}");
    }
    let principal = Principal {
        user_id: DEMO_USER.parse().expect("valid demo user id"),
        organization_id: DEMO_ORG.parse().expect("valid demo organization id"),
        role: Role::Admin,
    };
    let first = tokens
        .create_first(&principal, "development token (first start)")
        .await?;
    if let Some(token) = first {
        println!(
            "development token for user `{DEMO_USER}` of organization `{DEMO_ORG}` (shown once):"
        );
        println!("  export TOKEN={}", token.secret);
        if let Some((module, action)) = example_action(&host) {
            println!(
                "  curl -s -H \"Authorization: Bearer $TOKEN\" -X POST {url}/v1/modules/{module}/actions/{action} -d '{{}}'"
            );
        }
    } else {
        println!("tokens: use one you created (`modhost token create --user U --org O`)");
    }
    let state = AppState::new(host.clone(), tokens);
    let closing = state.closing.clone();
    let served = serve_app(
        listener,
        router(state),
        closing,
        shutdown,
        HEADER_READ_TIMEOUT,
    )
    .await;
    // What was done before the stop keeps its record.
    host.settle_audit(SHUTDOWN_GRACE).await;
    served
}

/// What `--learn module` learns for: the one organization with live
/// tokens, or `demo`, whose token a first start creates.
fn learning(options: &HostOptions, module: &str) -> Result<crate::host::Learning, ServeError> {
    if matches!(
        options.task_store,
        crate::host::TaskStoreLocation::Postgres(_)
    ) {
        return Err(crate::host::StartError::LearningShared.into());
    }
    let organization = match crate::host::token_organizations(options)?.as_slice() {
        [] => DEMO_ORG.parse().expect("valid demo organization id"),
        [one] => one.clone(),
        many => {
            return Err(ServeError::LearnOrganizations(
                many.iter().map(ToString::to_string).collect(),
            ));
        }
    };
    Ok(crate::host::Learning {
        module: module.to_owned(),
        organization,
    })
}

/// How long a client may take to send a request's headers (and an idle
/// keep-alive connection may wait for the next request): a client that
/// trickles bytes cannot hold a connection and its task forever.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves: HTTP/1.1, each
/// connection on a task of its own, headers read within `header_timeout`.
/// On shutdown `closing` is cancelled (event streams end), open
/// connections finish their requests, and after [`SHUTDOWN_GRACE`] the rest
/// are dropped.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    closing: crate::cancel::CancelToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_timeout: std::time::Duration,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            |req: axum::http::Request<hyper::body::Incoming>| req.map(axum::body::Body::new),
        ));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a connection ended with an error");
            }
        });
    }
    closing.cancel();
    // A client that stopped reading can hold a connection open forever; the
    // drain gets a bounded time.
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after the stop signal; stopping anyway");
        }
    }
    Ok(())
}

/// How long a stopping server waits for open connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// An action to show in the first start's example: `hello`'s `greet` when
/// it is served, else the first action of the first module that has one.
fn example_action(host: &Host) -> Option<(String, String)> {
    let modules = host.modules();
    let hello = modules
        .iter()
        .find(|m| m.manifest.name.as_str() == "hello" && m.description.has_action("greet"));
    if hello.is_some() {
        return Some(("hello".into(), "greet".into()));
    }
    modules.iter().find_map(|m| {
        let action = m.description.actions.first()?;
        Some((m.manifest.name.to_string(), action.name.clone()))
    })
}
