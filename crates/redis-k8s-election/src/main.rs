//! `redis-k8s-election`: parses the command line, sets up logging, runs the command from the
//! library and maps its error to an exit status (2: configuration, 1: anything else).

use anyhow::Result;
use clap::{Parser, Subcommand};
use redis_k8s_election::{apiserver, ctl, local, sidecar, signals};
use std::process::ExitCode;

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
    Apiserver(apiserver::ApiserverArgs),
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

/// The sidecar stops on SIGTERM or SIGINT; without signal handlers it runs until killed.
async fn shutdown_signal() {
    if let Err(e) = signals::wait_for_signal().await {
        tracing::error!(error = %e, "cannot wait for signals; running until killed");
        std::future::pending::<()>().await;
    }
}

async fn run(command: Command, sidecar_cfg: Option<sidecar::config::SidecarConfig>) -> Result<()> {
    match command {
        Command::Sidecar(_) => {
            let cfg = sidecar_cfg.expect("validated before the runtime started");
            sidecar::run(cfg, shutdown_signal()).await?
        }
        Command::Apiserver(a) => apiserver::run(a).await?,
        Command::Status(a) => ctl::status(a).await?,
        Command::Switchover(a) => ctl::switchover(a).await?,
        Command::Pause(a) => ctl::set_paused(a, true).await?,
        Command::Resume(a) => ctl::set_paused(a, false).await?,
        Command::History(a) => ctl::history(a).await?,
        Command::Local(a) => local::run(a).await?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Sidecar(a) if a.log_format == sidecar::config::LogFormat::Json);
    init_tracing(json_logs);
    // Configuration errors exit with status 2 and name the flag, like clap's own.
    let sidecar_cfg = match &cli.command {
        Command::Sidecar(args) => match (**args).clone().validate(signals::hostname()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
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
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command, sidecar_cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Start-up errors of the sidecar are configuration errors.
            if e.downcast_ref::<sidecar::StartError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
