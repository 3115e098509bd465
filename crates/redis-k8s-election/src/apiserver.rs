//! `redis-k8s-election apiserver`: kubesim's API server as a process of its own.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `apiserver` flags.
#[derive(clap::Args, Debug)]
pub struct ApiserverArgs {
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
    /// Time a client has to send a request's headers; also the longest idle time of a
    /// kept-alive connection.
    #[arg(long, default_value = "32s", value_parser = humantime::parse_duration)]
    header_timeout: std::time::Duration,
    /// Time a client has to send a request's body (504 after it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    body_timeout: std::time::Duration,
}

/// Why the API server could not run. Each names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiserverError {
    /// The listen address is taken or not ours.
    #[error("--listen {addr}: cannot listen")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The kubeconfig cannot be written.
    #[error("--write-kubeconfig {}: cannot write", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No signal handler: the server could never be stopped cleanly.
    #[error("installing the SIGTERM/SIGINT handlers")]
    Signals(#[source] std::io::Error),
}

/// Runs the API server until SIGINT or SIGTERM.
pub async fn run(args: ApiserverArgs) -> Result<(), ApiserverError> {
    let mut tokens = args.tokens;
    tokens.retain(|t| !t.trim().is_empty());
    if tokens.is_empty() {
        tokens.push(kubesim::random_token("kubesim-admin-"));
    }
    let config = kubesim::Config {
        listen: args.listen,
        admin_tokens: tokens.clone(),
        history: args.watch_history.max(1),
        header_timeout: args
            .header_timeout
            .max(std::time::Duration::from_millis(100)),
        body_timeout: args.body_timeout.max(std::time::Duration::from_millis(100)),
    };
    let server =
        kubesim::ApiServer::start(config)
            .await
            .map_err(|source| ApiserverError::Listen {
                addr: args.listen,
                source,
            })?;
    if let Some(path) = &args.write_kubeconfig {
        server
            .write_kubeconfig(path, &tokens[0], "default")
            .map_err(|source| ApiserverError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
    }
    // Printed once the listener accepts connections, so scripts can wait for this line.
    println!("kubesim API server listening on {}", server.url());
    crate::signals::wait_for_signal()
        .await
        .map_err(ApiserverError::Signals)?;
    server.shutdown().await;
    tracing::info!("kubesim API server stopped");
    Ok(())
}
