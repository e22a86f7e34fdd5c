//! The `modhost` command: parses the command line and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use modhost::auth::Tokens;
use modhost::db::{Db, Durability};
use modhost::http::serve::{ServeConfig, serve};
use modhost::identity::{Principal, RequestMeta, Role};
use modhost::manifest::DATA_MAX_MIB;
use modhost::retention::{self, Retention};
use modhost::subprocess::user::ChildUserChoice;
use modhost::{Host, HostOptions};

#[path = "cli/remote.rs"]
mod remote;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the action, task or command failed (a task that failed, was cancelled or interrupted)
  2  bad usage or input (unknown option, invalid JSON, no such task or module)
  3  not authenticated or not allowed (no token, a wrong one, a refused scope)
  4  the server could not be reached or failed

Commands that talk to a running server (call without --user, tasks, audit,
events) take --url (MODHOST_URL, default http://127.0.0.1:8080) and --token
(MODHOST_TOKEN). `serve` and `token` share STATE_DIR/modhost.db.";

#[derive(Parser)]
#[command(
    name = "modhost",
    version,
    about = "A host for WebAssembly component modules",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the server is and who is asking.
#[derive(Args, Clone, Debug)]
pub struct Server {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "MODHOST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// A bearer token (`modhost token create` prints one).
    #[arg(long, global = true, env = "MODHOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the modules of a directory over HTTP, on the embedded SQLite
    /// store or (--store) a PostgreSQL database shared with other hosts.
    #[command(
        after_help = "Example:\n  modhost serve --build-unconfined examples\n  # then open the printed URL: the dashboard signs in with the printed token"
    )]
    Serve {
        /// Directory whose subdirectories are modules (each with a module.toml).
        #[arg(value_name = "MODULES")]
        modules_pos: Option<PathBuf>,
        /// Same as the positional MODULES.
        #[arg(long, conflicts_with = "modules_pos")]
        modules: Option<PathBuf>,
        /// Where the host keeps module data and compiled components.
        #[arg(long, default_value = ".modhost")]
        state_dir: PathBuf,
        /// The SQLite database file [default: STATE_DIR/modhost.db].
        #[arg(long)]
        db: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Run each module's [build] command before loading it. The command
        /// is the module author's code and runs with your user's files and
        /// network (only its environment is cleared): use it for modules you
        /// trust, and build third-party modules yourself first.
        #[arg(long = "build-unconfined")]
        build: bool,
        /// Replaced by --build-unconfined, which says what it does.
        #[arg(long = "build", hide = true)]
        build_renamed: bool,
        /// `full`: every commit reaches the disk before it is acknowledged;
        /// `normal`: faster, may lose the last commits on a power cut.
        #[arg(long, default_value = "full", value_parser = parse_durability)]
        durability: Durability,
        /// Start modules' subprocesses even where the kernel cannot confine
        /// them with Landlock (they then have the host's own access).
        #[arg(long)]
        allow_unconfined_subprocesses: bool,
        /// Who modules' subprocesses run as: a user name, UID:GID, or `host`
        /// (the host's own user, root included). By default a host running
        /// as root runs them as `nobody`.
        #[arg(long, default_value = "auto", value_parser = parse_child_user)]
        child_user: ChildUserChoice,
        /// Active (pending, running, waiting) background tasks one
        /// organization may have over all modules; each module's own
        /// `[tasks]` quotas also count per organization.
        #[arg(long, default_value_t = modhost::tasks::service::DEFAULT_MAX_ACTIVE_PER_ORG,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_active_tasks_per_org: u32,
        /// How long a finished task (completed, failed, cancelled,
        /// interrupted) is kept, counted from when it finished: `30d`,
        /// `12h`, `90m`; at least a minute; `forever` (or `0`) never deletes.
        /// Expired tasks are deleted every ten minutes, in batches.
        #[arg(long, default_value = "30d", value_parser = parse_task_retention)]
        task_retention: Retention,
        /// How long an audit record is kept, counted from its
        /// decision: at least a day; `forever` (or `0`) never deletes.
        #[arg(long, default_value = "90d", value_parser = parse_audit_retention)]
        audit_retention: Retention,
        /// The quota, in MiB, of each organization's data directory of a
        /// module whose manifest sets no `[filesystem] max-mib`. While a
        /// directory is at its quota, the module's calls for that
        /// organization see `/data` read-only and its new background tasks
        /// are refused with limit-exceeded.
        #[arg(long, default_value_t = DATA_MAX_MIB.default, value_parser = parse_data_max_mib)]
        data_max_mib: u64,
        /// The most MiB of compiled components kept in the state
        /// directory's cache; past it, those used longest ago are removed.
        #[arg(long, default_value_t = modhost::engine::CACHE_MAX_BYTES >> 20,
              value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
        component_cache_mib: u64,
        /// Where the tasks live: `sqlite` (the embedded database, default)
        /// or a `postgres://` URL, which several hosts may share: each runs
        /// any pending task of the modules it has, and takes over the tasks
        /// of a host that stopped renewing its leases.
        #[arg(long, env = "MODHOST_STORE", default_value = "sqlite", value_parser = parse_store,
              hide_env_values = true)]
        store: modhost::host::TaskStoreLocation,
        /// The name this host claims tasks under on a shared store: keep it
        /// across restarts and unique among the hosts [default: `local` on
        /// SQLite; HOSTNAME-HASH of the state directory on PostgreSQL].
        #[arg(long, env = "MODHOST_HOST_ID", value_parser = parse_host_id)]
        host_id: Option<modhost::tasks::store::HostId>,
        /// How long a task this host claims stays its own unless renewed
        /// (every third of it), so how long the tasks of a host that died
        /// or hung wait before another host takes them over: a duration
        /// such as `30s` or `2m`, at least a second.
        #[arg(long, default_value = "30s", value_parser = parse_task_lease)]
        task_lease: std::time::Duration,
        /// How long a resumable task waiting for a confirmation keeps its
        /// instance; past it the task waits as a row in the database, and
        /// the answer runs it again from its checkpoint: a duration such
        /// as `10s` or `1m`, or `0s` to give the instance up at once.
        #[arg(long, default_value = "10s", value_parser = parse_waiting_grace)]
        waiting_grace: std::time::Duration,
        /// A PEM file of root certificates that modules' outbound HTTPS
        /// trusts beside the Mozilla roots (a company's own certificate
        /// authority); repeatable.
        #[arg(long = "tls-roots", value_name = "PEM", env = "MODHOST_TLS_ROOTS")]
        tls_roots: Vec<PathBuf>,
        /// Learn this module's grants, on a development host of one
        /// organization: its requests are recorded instead of denied
        /// (programs, argument lists, variables, destinations, the data
        /// directory), then `modhost manifest suggest MODULE` prints the
        /// grants that allow exactly what it used. Not on a PostgreSQL
        /// store.
        #[arg(long, value_name = "MODULE")]
        learn: Option<String>,
    },
    /// Run an action and print its result as JSON; with --follow, follow the
    /// task it started until it ends.
    #[command(
        after_help = "Examples:\n  export MODHOST_TOKEN=mht_...\n  modhost call reports start --json '{\"month\": \"2026-11\"}' --follow\n  # in-process, without a server, as a user of an organization:\n  modhost call hello greet --user alice --org acme"
    )]
    Call {
        module: String,
        action: String,
        /// The action's arguments, as JSON.
        #[arg(long, default_value = "{}")]
        json: String,
        /// Follow the task the action started (a progress bar, questions
        /// asked in the terminal) and exit with its outcome.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        server: Server,
        /// Run in-process as this user instead of asking a server.
        #[arg(long, requires = "org")]
        user: Option<String>,
        /// The user's organization (in-process).
        #[arg(long, requires = "user")]
        org: Option<String>,
        /// The user's role (in-process).
        #[arg(long, default_value = "member")]
        role: Role,
        /// The modules directory (in-process).
        #[arg(long, default_value = "examples")]
        modules: PathBuf,
        /// The host's state directory (in-process).
        #[arg(long, default_value = ".modhost")]
        state_dir: PathBuf,
    },
    /// Read and steer tasks on a running server.
    Tasks {
        #[command(subcommand)]
        command: remote::TasksCommand,
        #[command(flatten)]
        server: Server,
    },
    /// The audit trail of every capability decision (subprocesses, outbound
    /// HTTP, refused file operations, task submissions, answers): your own
    /// calls, or an admin's organization's.
    #[command(
        after_help = "Examples:\n  modhost audit --module git-stats --decision denied\n  modhost audit --capability http"
    )]
    Audit {
        #[command(flatten)]
        query: remote::AuditArgs,
        #[command(flatten)]
        server: Server,
    },
    /// What a module's manifest should grant, learned from the audit trail.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Follow the event stream (tasks and subprocess decisions) as it happens.
    #[command(after_help = "Examples:\n  modhost events\n  modhost events --task 01a2... --json")]
    Events {
        #[command(flatten)]
        query: remote::EventsArgs,
        #[command(flatten)]
        server: Server,
    },
    /// Write a new module directory that builds and passes `check` at once.
    #[command(
        after_help = "Examples:\n  modhost new my-module --lang python\n  modhost new my-module --lang rust --sdk ~/modhost/guest-sdk\n  modhost check --build --deny-warnings my-module"
    )]
    New {
        /// The module's name: its directory, and `name` in its module.toml.
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: modhost::scaffold::Lang,
        /// Where the module's directory is made.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The Rust SDK (`guest-sdk` of a modhost checkout) a Rust module
        /// depends on; by default the checkout this modhost was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Run the [build] command of a module, or of every module of a directory.
    #[command(after_help = "Example:\n  modhost build examples/hello")]
    Build {
        /// A module directory (with a module.toml), or a directory of them.
        #[arg(default_value = "examples")]
        dir: PathBuf,
    },
    /// Check a module: manifest, component against the world, grants against imports.
    #[command(
        after_help = "Examples:\n  modhost check examples/hello --deny-warnings\n  modhost check examples/git-stats --explain\n  modhost check --build examples/hello"
    )]
    Check {
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Exit non-zero on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        /// Also print, in plain words, what the manifest allows.
        #[arg(long)]
        explain: bool,
        /// Run the module's [build] command first (the author's code, with
        /// your user's files and network, as `modhost build` does).
        #[arg(long)]
        build: bool,
    },
    /// Manage bearer tokens, in the database `serve` uses.
    #[command(
        after_help = "Examples:\n  modhost token create --user alice --org acme --role member\n  modhost token list --state-dir /var/lib/modhost"
    )]
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        /// The host's state directory, as given to `serve`.
        #[arg(long, global = true, default_value = ".modhost")]
        state_dir: PathBuf,
        /// The SQLite database file [default: STATE_DIR/modhost.db].
        #[arg(long, global = true)]
        db: Option<PathBuf>,
        /// The hosts' shared PostgreSQL database (a `postgres://` URL, as
        /// given to `serve --store`): its tokens work on every host on it.
        #[arg(long, global = true, env = "MODHOST_STORE", default_value = "sqlite",
              value_parser = parse_store, hide_env_values = true)]
        store: modhost::host::TaskStoreLocation,
    },
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Print the minimal grants that would have allowed every subprocess and
    /// request the module was recorded asking for (allowed or refused),
    /// and, with --dir, what they change against its module.toml.
    #[command(
        after_help = "Examples:\n  modhost manifest suggest git-stats\n  modhost manifest suggest git-stats --dir examples/git-stats"
    )]
    Suggest {
        module: String,
        /// The module's directory: compare with its module.toml.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print `{"toml": ..., "changes": [...]}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a user of an organization; prints the secret once.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "member")]
        role: Role,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

fn parse_child_user(s: &str) -> Result<ChildUserChoice, String> {
    if s == "auto" {
        return Ok(ChildUserChoice::Auto);
    }
    s.parse()
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "full" => Ok(Durability::Full),
        "normal" => Ok(Durability::Normal),
        other => Err(format!(
            "unknown durability `{other}` (expected full or normal)"
        )),
    }
}

fn parse_data_max_mib(s: &str) -> Result<u64, String> {
    let (min, max) = (DATA_MAX_MIB.min, DATA_MAX_MIB.max);
    s.parse::<u64>()
        .ok()
        .filter(|mib| (min..=max).contains(mib))
        .ok_or_else(|| format!("expected a number of MiB in {min}..={max}"))
}

fn parse_task_retention(s: &str) -> Result<Retention, String> {
    s.parse::<Retention>()
        .and_then(|r| r.at_least(retention::MIN_TASK_RETENTION))
        .map_err(|e| e.to_string())
}

fn parse_task_lease(s: &str) -> Result<std::time::Duration, String> {
    let min = modhost::tasks::service::MIN_LEASE;
    match s.parse::<Retention>() {
        Ok(Retention::For(d)) if d >= min => Ok(d),
        _ => Err(format!(
            "expected a duration of at least {} such as 30s or 2m",
            Retention::For(min)
        )),
    }
}

fn parse_waiting_grace(s: &str) -> Result<std::time::Duration, String> {
    match s {
        "0" | "0s" => Ok(std::time::Duration::ZERO),
        _ => match s.parse::<Retention>() {
            Ok(Retention::For(d)) => Ok(d),
            _ => Err("expected a duration such as 10s or 1m, or 0s".to_owned()),
        },
    }
}

fn parse_store(s: &str) -> Result<modhost::host::TaskStoreLocation, String> {
    use modhost::host::TaskStoreLocation;
    match s {
        "sqlite" | "" => Ok(TaskStoreLocation::Embedded),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(TaskStoreLocation::Postgres(url.to_owned()))
        }
        _ => Err("expected `sqlite` or a postgres:// URL".to_owned()),
    }
}

fn parse_host_id(s: &str) -> Result<modhost::tasks::store::HostId, String> {
    modhost::tasks::store::HostId::new(s).map_err(|e| e.to_string())
}

/// The host id of a host on a shared store that names none: its machine's
/// name and a hash of its state directory, so it is the same across
/// restarts and differs between hosts (also two on one machine).
fn default_host_id(state_dir: &std::path::Path) -> modhost::tasks::store::HostId {
    use sha2::Digest;
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let hash = hex::encode(&sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes())[..4]);
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(char::is_ascii_graphic)
        .take(64)
        .collect();
    let id = if name.is_empty() {
        hash
    } else {
        format!("{name}-{hash}")
    };
    modhost::tasks::store::HostId::new(id)
        .unwrap_or_else(|_| modhost::tasks::store::HostId::local())
}

fn parse_audit_retention(s: &str) -> Result<Retention, String> {
    s.parse::<Retention>()
        .and_then(|r| r.at_least(retention::MIN_AUDIT_RETENTION))
        .map_err(|e| e.to_string())
}

fn principal(user: &str, org: &str, role: Role) -> anyhow::Result<Principal> {
    Ok(Principal {
        user_id: user.parse()?,
        organization_id: org.parse()?,
        role,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            // A refusal's message may be a module's own text.
            eprintln!(
                "error: {}",
                modhost::client::terminal_safe(&format!("{e:#}"))
            );
            match e.downcast_ref::<remote::Failure>() {
                Some(f) => f.exit_code(),
                None => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            modules_pos,
            modules,
            state_dir,
            db,
            listen,
            build,
            build_renamed,
            durability,
            allow_unconfined_subprocesses,
            child_user,
            max_active_tasks_per_org,
            task_retention,
            audit_retention,
            data_max_mib,
            component_cache_mib,
            store,
            host_id,
            task_lease,
            waiting_grace,
            tls_roots,
            learn,
        } => {
            if build_renamed {
                anyhow::bail!(
                    "--build is now --build-unconfined: it runs each module's [build] command, the module author's code, with your user's files and network"
                );
            }
            let modules_dir = modules_pos
                .or(modules)
                .unwrap_or_else(|| PathBuf::from("examples"));
            let db_path = db.unwrap_or_else(|| state_dir.join("modhost.db"));
            let host_id = match (&store, host_id) {
                (_, Some(id)) => id,
                (modhost::host::TaskStoreLocation::Embedded, None) => {
                    modhost::tasks::store::HostId::local()
                }
                (modhost::host::TaskStoreLocation::Postgres(_), None) => {
                    default_host_id(&state_dir)
                }
            };
            let config = ServeConfig {
                modules_dir,
                state_dir,
                db_path,
                listen,
                build,
                durability,
                allow_unconfined_subprocesses,
                child_user,
                max_active_tasks_per_org,
                task_retention,
                audit_retention,
                data_max_bytes: data_max_mib * 1024 * 1024,
                component_cache_bytes: component_cache_mib << 20,
                host_id,
                task_store: store,
                task_lease,
                waiting_grace,
                tls_roots,
                learn,
            };
            serve(config, stop_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            module,
            action,
            json,
            follow,
            server,
            user,
            org,
            role,
            modules,
            state_dir,
        } => match (user, org) {
            (Some(user), Some(org)) => {
                if follow {
                    return Err(remote::usage(
                        "--follow needs a server; drop --user and --org to call one",
                    ));
                }
                call_in_process(
                    &module, &action, &json, &user, &org, role, &modules, &state_dir,
                )
                .await
            }
            _ => remote::call(&server, &module, &action, &json, follow).await,
        },
        Command::Tasks { command, server } => remote::tasks(&server, command).await,
        Command::Audit { query, server } => remote::audit(&server, query).await,
        Command::Manifest {
            command:
                ManifestCommand::Suggest {
                    module,
                    dir,
                    json,
                    server,
                },
        } => remote::suggest(&server, &module, dir.as_deref(), json).await,
        Command::Events { query, server } => remote::events(&server, query).await,
        Command::New {
            name,
            lang,
            dir,
            sdk,
        } => match modhost::scaffold::new_module(&dir, &name, lang, sdk.as_deref()) {
            Ok(made) => {
                println!("created {}", made.display());
                println!("  modhost check --build --deny-warnings {}", made.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Build { dir } => {
            let env = modhost::manifest::LoadEnv::host_default();
            let dirs = if dir.join(modhost::manifest::MANIFEST_FILE).is_file() {
                vec![dir]
            } else {
                modhost::modules::module_dirs(&dir)
                    .with_context(|| format!("reading {}", dir.display()))?
            };
            let mut failed = 0;
            for d in &dirs {
                match modhost::modules::build_module(d, &env) {
                    Ok(true) => eprintln!("built {}", d.display()),
                    Ok(false) => eprintln!("{}: no [build] command", d.display()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {}: {e}", d.display());
                    }
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Check {
            dir,
            json,
            deny_warnings,
            explain,
            build,
        } => {
            let env = modhost::manifest::LoadEnv::host_default();
            if build && let Err(e) = modhost::modules::build_module(&dir, &env) {
                eprintln!("error: {}: {e}", dir.display());
                return Ok(ExitCode::FAILURE);
            }
            let report = modhost::check::check_dir(&dir, &env).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&dir, &report);
                if explain && !report.grants.is_empty() {
                    println!("what `{}` may do:", report.module.as_deref().unwrap_or("?"));
                    for line in &report.grants {
                        println!("  - {line}");
                    }
                }
            }
            let failed = !report.ok() || (deny_warnings && !report.warnings.is_empty());
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Token {
            command,
            state_dir,
            db,
            store,
        } => {
            let tokens = match store {
                modhost::host::TaskStoreLocation::Postgres(url) => {
                    let pg = modhost::pg::PgDatabase::connect(&url).await?;
                    Tokens::on_postgres(std::sync::Arc::new(pg)).await?
                }
                modhost::host::TaskStoreLocation::Embedded => {
                    let db = db.unwrap_or_else(|| state_dir.join("modhost.db"));
                    if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("creating {}", parent.display()))?;
                    }
                    Tokens::new(Db::open(&db, Durability::Full)?)
                }
            };
            match command {
                TokenCommand::Create {
                    user,
                    org,
                    role,
                    label,
                } => {
                    let t = tokens
                        .create(&principal(&user, &org, role)?, &label)
                        .await?;
                    eprintln!(
                        "token {} for user `{user}` of `{org}` ({role}); the secret is shown once:",
                        t.id
                    );
                    println!("{}", t.secret);
                }
                TokenCommand::List => {
                    for t in tokens.list().await? {
                        println!(
                            "{}  {}@{}  {}  {}{}",
                            t.id,
                            t.principal.user_id,
                            t.principal.organization_id,
                            t.principal.role,
                            t.label,
                            if t.revoked { "  (revoked)" } else { "" }
                        );
                    }
                }
                TokenCommand::Revoke { id } => {
                    if !tokens.revoke(&id).await? {
                        return Err(remote::usage(format!("no live token with id {id}")));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the in-process call's options, passed on once"
)]
async fn call_in_process(
    module: &str,
    action: &str,
    json: &str,
    user: &str,
    org: &str,
    role: Role,
    modules: &std::path::Path,
    state_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let principal = principal(user, org, role)?;
    let host = Host::new(HostOptions::new(state_dir))?;
    let dir = modules.join(module);
    if dir.join("module.toml").is_file() {
        host.load_module(&dir, false)
            .await
            .with_context(|| format!("loading {}", dir.display()))?;
    } else {
        for f in host.load_dir(modules, false).await? {
            eprintln!("module in {} not loaded: {}", f.dir.display(), f.error);
        }
    }
    match host
        .call_action(module, action, json, &principal, RequestMeta::fresh())
        .await
    {
        Ok(out) => {
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let api = modhost::http::ApiError::from(e.clone());
            eprintln!(
                "{}",
                serde_json::json!({ "error": { "code": api.code, "message": e.to_string() } })
            );
            Ok(remote::exit_for_status(api.status.as_u16()))
        }
    }
}

/// Ctrl-C or SIGTERM (what `kill` and service managers send).
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn print_report(dir: &std::path::Path, r: &modhost::check::CheckReport) {
    let name = r.module.as_deref().unwrap_or("?");
    for e in &r.errors {
        println!("error: {e}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if r.ok() {
        println!(
            "ok: module `{name}` in {} ({} action(s), {} task(s), {} blocking function(s))",
            dir.display(),
            r.actions.len(),
            r.tasks.len(),
            r.blocking.len()
        );
        for i in &r.imports {
            println!("  imports {i}");
        }
    } else {
        println!("failed: {} error(s) in {}", r.errors.len(), dir.display());
    }
}
