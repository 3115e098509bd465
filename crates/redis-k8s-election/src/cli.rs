//! The command line: every subcommand with its flags, and what runs it.

use crate::{apiserver, ctl, local, sidecar, signals};
use clap::{Parser, Subcommand};

// `redis-k8s-election` and its flags. (No doc comment here or on the field: clap would make it
// the program's help text, which is the crate's description.)
#[derive(Parser, Debug)]
#[command(name = "redis-k8s-election", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// After a whole-group restart, stop waiting for a majority of the members: the pods
    /// present elect the freshest among them (docs/deploy.md, "Persistence").
    ForceElection(ctl::ForceElectionArgs),
    /// Run a whole HA group on this machine from the shipped manifests: kubesim (API server
    /// with RBAC, StatefulSet controller, kubelet, service proxy), three Redis pods with their
    /// sidecars, and a live table. Ctrl-C stops everything.
    Local(local::LocalArgs),
}

/// Why a command failed; `main` prints it with its sources and picks the exit status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The sidecar could not start (a configuration error: exit status 2).
    #[error(transparent)]
    Sidecar(#[from] sidecar::StartError),
    /// The API server could not run.
    #[error(transparent)]
    Apiserver(#[from] apiserver::ApiserverError),
    /// An operator command failed.
    #[error(transparent)]
    Ctl(#[from] ctl::CtlError),
    /// The local group could not run.
    #[error(transparent)]
    Local(#[from] local::LocalError),
}

impl Command {
    /// The sidecar's configuration when this is `sidecar` (validated before any runtime is
    /// built, so that a bad flag exits with status 2 and names the flag).
    pub fn sidecar_config(
        &self,
    ) -> Option<Result<sidecar::config::SidecarConfig, sidecar::config::ConfigError>> {
        match self {
            Command::Sidecar(args) => Some((**args).clone().validate(signals::hostname())),
            _ => None,
        }
    }

    /// Whether the sidecar logs JSON lines.
    pub fn json_logs(&self) -> bool {
        matches!(self, Command::Sidecar(a) if a.log_format == sidecar::config::LogFormat::Json)
    }
}

/// The file name under which the binary answers as a kubectl plugin: installed (or linked)
/// on PATH as `kubectl-redis_election`, it runs as `kubectl redis-election status|…`.
pub const PLUGIN_NAME: &str = "kubectl-redis_election";

/// The subcommands a kubectl plugin offers: the operator's (not `sidecar`, `apiserver`,
/// `local`, which are programs rather than kubectl verbs).
const PLUGIN_COMMANDS: [&str; 6] = [
    "status",
    "switchover",
    "pause",
    "resume",
    "history",
    "force-election",
];

impl Cli {
    /// Whether the program was started as the kubectl plugin (`argv[0]`'s file name).
    pub fn is_plugin(argv0: &std::ffi::OsStr) -> bool {
        std::path::Path::new(argv0)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(PLUGIN_NAME))
    }

    /// Parses the command line as `kubectl redis-election …` would pass it: the operator
    /// commands only, with kubectl's name in help and errors. They read the kubeconfig and
    /// namespace the way kubectl does (`KUBECONFIG`, the context's namespace, `-n`).
    pub fn parse_plugin(args: impl IntoIterator<Item = std::ffi::OsString>) -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Cli::command()
            .name("kubectl redis-election")
            .bin_name("kubectl redis-election")
            .about("The redis-k8s-election operator commands, as a kubectl plugin");
        for name in ["sidecar", "apiserver", "local"] {
            cmd = cmd.mut_subcommand(name, |s| s.hide(true));
        }
        let matches = cmd.clone().get_matches_from(args);
        if let Some(name) = matches.subcommand_name()
            && !PLUGIN_COMMANDS.contains(&name)
        {
            cmd.error(
                clap::error::ErrorKind::InvalidSubcommand,
                format!(
                    "`{name}` is not a kubectl redis-election command (those are {}); run `redis-k8s-election {name}`",
                    PLUGIN_COMMANDS.join(", ")
                ),
            )
            .exit();
        }
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The sidecar stops on SIGTERM or SIGINT; without signal handlers it runs until killed.
async fn shutdown_signal() {
    if let Err(e) = signals::wait_for_signal().await {
        tracing::error!(error = %e, "cannot wait for signals; running until killed");
        std::future::pending::<()>().await;
    }
}

/// Runs `command` (`sidecar_cfg` is the sidecar's validated configuration).
pub async fn run(
    command: Command,
    sidecar_cfg: Option<sidecar::config::SidecarConfig>,
) -> Result<(), CommandError> {
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
        Command::ForceElection(a) => ctl::force_election(a).await?,
        Command::Local(a) => local::run(a).await?,
    }
    Ok(())
}
