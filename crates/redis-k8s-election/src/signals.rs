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

/// SIGTERM, SIGINT and SIGHUP, caught from the moment this is made: what `local` stops on (a
/// closed terminal sends SIGHUP). Made before anything is started, so that no signal can end
/// the process by its default action while it holds files to remove.
pub struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Stop {
    /// Catches the three signals from now on.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves on the first of them (also one that arrived before this was awaited).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
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
