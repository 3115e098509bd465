//! `redis-k8s-election`: parses the command line, sets up logging, runs the command from the
//! library ([`redis_k8s_election::cli`]) and maps its error to an exit status (2: a
//! configuration error, 1: anything else).

use clap::Parser;
use redis_k8s_election::cli::{self, Cli, CommandError};
use std::process::ExitCode;

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

fn main() -> ExitCode {
    // Installed as `kubectl-redis_election`, the binary is a kubectl plugin.
    let cli = match std::env::args_os().next() {
        Some(argv0) if Cli::is_plugin(&argv0) => Cli::parse_plugin(std::env::args_os()),
        _ => Cli::parse(),
    };
    init_tracing(cli.command.json_logs());
    // Configuration errors exit with status 2 and name the flag, like clap's own.
    let sidecar_cfg = match cli.command.sidecar_config() {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(c)) => Some(c),
        None => None,
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
    match runtime.block_on(cli::run(cli.command, sidecar_cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Start-up errors of the sidecar are configuration errors.
            let status = if matches!(e, CommandError::Sidecar(_)) {
                2
            } else {
                1
            };
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(status)
        }
    }
}
