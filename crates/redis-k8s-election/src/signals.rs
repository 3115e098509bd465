//! Process-level helpers shared by the commands: waiting for SIGINT/SIGTERM and the pod's
//! host name.

/// Resolves on the first SIGTERM or SIGINT (what the kubelet and Ctrl-C send).
pub async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// The host name (`$HOSTNAME`, else `/etc/hostname`): a StatefulSet pod's name, the
/// sidecar's default `--pod-name`.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
