//! `redis-k8s-election`: Kubernetes-native leader/follower replication for Redis.
//!
//! Subcommands: `sidecar` runs beside each Redis and elects, fences and routes; `apiserver`
//! runs kubesim's API server (the local stand-in for Kubernetes); `local` runs a whole group
//! on this machine under kubesim; `status`, `switchover`, `pause`, `resume` and `history`
//! are the operator's commands.

mod ctl;
mod local;
mod sidecar;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "redis-k8s-election", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the sidecar beside one Redis: Lease election, Redis role control with fencing,
    /// routing, health, metrics and Events.
    Sidecar(Box<sidecar::config::SidecarArgs>),
    /// Run kubesim's Kubernetes API server stand-in until SIGINT or SIGTERM.
    Apiserver(ApiserverArgs),
    /// Show the group as a table: each pod's role, epoch, Redis role, offset, lag, link,
    /// readiness, fencing and last change, and every disagreement between them.
    Status(ctl::StatusArgs),
    /// Ask the leader to hand over to a caught-up replica (`--to POD` or the best) without
    /// losing acknowledged writes, and wait for the outcome.
    Switchover(ctl::SwitchoverArgs),
    /// Pause automatic failover (recorded on the Lease): the leader keeps leading, nobody
    /// takes over, only a forced switchover moves the leadership.
    Pause(ctl::PauseArgs),
    /// Resume automatic failover.
    Resume(ctl::PauseArgs),
    /// Show the last leader changes recorded on the Lease.
    History(ctl::HistoryArgs),
    /// Run a whole HA group on this machine from the shipped manifests: kubesim (API server
    /// with RBAC, StatefulSet controller, kubelet, service proxy), three Redis pods with their
    /// sidecars, and a live table. Ctrl-C stops everything.
    Local(local::LocalArgs),
}

#[derive(clap::Args, Debug)]
struct ApiserverArgs {
    /// Address to listen on, e.g. 127.0.0.1:6443 (port 0 picks a free one).
    #[arg(long, env = "KUBESIM_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// An administrator bearer token with full access (repeatable). Without one, a random
    /// token is generated and written to the kubeconfig.
    #[arg(long = "token", env = "KUBESIM_TOKEN", value_delimiter = ',')]
    tokens: Vec<String>,
    /// Write a kubeconfig (server URL, the first token, namespace `default`) to this path.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// How many changes watches can resume from before they get 410 Expired.
    #[arg(long, default_value_t = kubesim::store::DEFAULT_HISTORY)]
    watch_history: usize,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

async fn apiserver(args: ApiserverArgs) -> Result<()> {
    let mut tokens = args.tokens;
    tokens.retain(|t| !t.trim().is_empty());
    if tokens.is_empty() {
        tokens.push(kubesim::util::random_token("kubesim-admin-"));
    }
    let config = kubesim::Config {
        listen: args.listen,
        admin_tokens: tokens.clone(),
        history: args.watch_history.max(1),
    };
    let server = kubesim::ApiServer::start(config)
        .await
        .with_context(|| format!("--listen {}: cannot listen", args.listen))?;
    if let Some(path) = &args.write_kubeconfig {
        server
            .write_kubeconfig(path, &tokens[0], "default")
            .with_context(|| format!("--write-kubeconfig {}: cannot write", path.display()))?;
    }
    // Printed once the listener accepts connections, so scripts can wait for this line.
    println!("kubesim API server listening on {}", server.url());
    wait_for_signal().await?;
    server.shutdown().await;
    tracing::info!("kubesim API server stopped");
    Ok(())
}

/// A Kubernetes client from a kubeconfig file, or in-cluster without one, and the namespace
/// to use (`namespace`, else the configuration's default). `Err` says what is wrong.
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    namespace: Option<&str>,
) -> std::result::Result<(kube::Client, String), String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| e.to_string())?
        }
        None => kube::Config::incluster()
            .map_err(|e| format!("no --kubeconfig and no in-cluster service account: {e}"))?,
    };
    let ns = namespace
        .map(str::to_string)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    Ok((client, ns))
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

async fn run_sidecar(cfg: sidecar::config::SidecarConfig) -> Result<()> {
    let shutdown = async {
        if let Err(e) = wait_for_signal().await {
            tracing::error!(error = %e, "cannot wait for signals; running until killed");
            std::future::pending::<()>().await;
        }
    };
    sidecar::run(cfg, shutdown)
        .await
        .map_err(anyhow::Error::from)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Sidecar(a) if a.log_format == sidecar::config::LogFormat::Json);
    init_tracing(json_logs);
    // Configuration errors exit with status 2 and name the flag, like clap's own.
    let sidecar_cfg = match &cli.command {
        Command::Sidecar(args) => match (**args).clone().validate(hostname()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        _ => None,
    };
    // The sidecar's work is a few requests per second: one thread is plenty, and it keeps the
    // resident memory down (no worker-thread stacks or per-thread malloc arenas). The API
    // server serves many clients and gets the multi-threaded runtime.
    let runtime = if sidecar_cfg.is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sidecar(_) => run_sidecar(sidecar_cfg.expect("validated above")).await,
            Command::Apiserver(args) => apiserver(args).await,
            Command::Status(a) => ctl::status(a).await,
            Command::Switchover(a) => ctl::switchover(a).await,
            Command::Pause(a) => ctl::set_paused(a, true).await,
            Command::Resume(a) => ctl::set_paused(a, false).await,
            Command::History(a) => ctl::history(a).await,
            Command::Local(a) => local::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Start-up errors of the sidecar are configuration errors.
            let code = if e.downcast_ref::<sidecar::StartError>().is_some() {
                2
            } else {
                1
            };
            std::process::ExitCode::from(code)
        }
    }
}
