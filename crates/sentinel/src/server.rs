//! The TCP server: one task per connection, a bounded number of them, requests bounded by
//! [`crate::resp`]'s limits, pub/sub from the views the sidecar hands in, and `SENTINEL
//! FAILOVER` passed to the sidecar's hand-over through [`Failover`]. Nothing a client sends
//! reaches the election: the endpoint only reads the view.

use crate::command::{self, EndpointConfig, Facts, Next, Session};
use crate::events;
use crate::resp::{self, Reply};
use crate::view::GroupView;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Why a planned failover was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailoverRefusal {
    /// A hand-over is running already.
    #[error("INPROG Failover already in progress")]
    InProgress,
    /// No replica qualifies (none caught up, none reachable); the reason follows.
    #[error("NOGOODSLAVE No suitable replica to promote ({0})")]
    NoGoodReplica(String),
    /// Anything else (the API, the local Redis, paused), said as it is.
    #[error("ERR {0}")]
    Other(String),
}

/// The sidecar's planned hand-over, as `SENTINEL FAILOVER` asks for it.
pub trait Failover: Send + Sync + 'static {
    /// Hands the group over to its best caught-up replica; returns once done or refused.
    fn failover(&self) -> Pin<Box<dyn Future<Output = Result<(), FailoverRefusal>> + Send + '_>>;
}

/// How long `SENTINEL FAILOVER` waits for the hand-over before answering.
const FAILOVER_WAIT: Duration = Duration::from_secs(30);
/// A client that does not read its replies for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A TLS client must finish its handshake within this, or is disconnected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    cfg: EndpointConfig,
    view: watch::Receiver<GroupView>,
    events: broadcast::Sender<(String, String)>,
    clients: AtomicUsize,
    next_id: AtomicU64,
    commands: AtomicU64,
    started: Instant,
    failover: Arc<dyn Failover>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A running endpoint; dropping it stops it (open connections end with their tasks).
pub struct Endpoint {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Endpoint {
    /// Listens on `listen`, answering from `view`; over TLS only when `tls` is given (as
    /// Sentinel's `tls-port` with `port 0`: a plain client's first bytes fail the handshake).
    pub async fn start(
        listen: SocketAddr,
        cfg: EndpointConfig,
        view: watch::Receiver<GroupView>,
        failover: Arc<dyn Failover>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            cfg,
            view,
            events,
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            commands: AtomicU64::new(0),
            started: Instant::now(),
            failover,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        });
        let publisher = tokio::spawn(publish(shared.clone()));
        let acceptor = tokio::spawn(accept(listener, shared));
        Ok(Self {
            addr,
            tasks: vec![publisher, acceptor],
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Turns each new view into the events it means, for every subscriber.
async fn publish(shared: Arc<Shared>) {
    let mut view = shared.view.clone();
    let mut prev = view.borrow_and_update().clone();
    while view.changed().await.is_ok() {
        let new = view.borrow_and_update().clone();
        for ev in events::changes(&shared.cfg.master_name, &prev, &new) {
            tracing::debug!(channel = %ev.0, message = %ev.1, "sentinel endpoint: event");
            let _ = shared.events.send(ev);
        }
        prev = new;
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Out of file descriptors and the like: wait, never spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let full = shared.clients.fetch_add(1, Ordering::SeqCst) >= shared.cfg.max_clients;
        if full {
            // Refused: it is not a client, whatever it takes to tell it so.
            shared.clients.fetch_sub(1, Ordering::SeqCst);
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = match &shared.tls {
                None => connection(sock, full, &shared).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => connection(tls, full, &shared).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "TLS handshake not finished in time",
                        )),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "sentinel endpoint: connection ended");
            }
            if !full {
                shared.clients.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
}

/// One client's connection: refused with Sentinel's words when the endpoint is `full`.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    full: bool,
    shared: &Shared,
) -> std::io::Result<()> {
    if full {
        send(&mut sock, b"-ERR max number of clients reached\r\n").await?;
        return sock.shutdown().await;
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    serve(sock, id, shared).await
}

async fn send<S: AsyncWrite + Unpin>(sock: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client does not read its replies",
        )),
    }
}

/// The pub/sub messages an event makes for `session`'s subscriptions.
fn deliveries(session: &Session, channel: &str, message: &str) -> Vec<Reply> {
    let mut out = Vec::new();
    if session.channels.contains(channel) {
        out.push(Reply::Push(vec![
            Reply::bulk("message"),
            Reply::bulk(channel),
            Reply::bulk(message),
        ]));
    }
    for p in &session.patterns {
        if command::glob_match(p.as_bytes(), channel.as_bytes()) {
            out.push(Reply::Push(vec![
                Reply::bulk("pmessage"),
                Reply::bulk(p.clone()),
                Reply::bulk(channel),
                Reply::bulk(message),
            ]));
        }
    }
    out
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    id: u64,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut session = Session::new(id);
    let mut events = shared.events.subscribe();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Whole requests first.
        loop {
            let parsed = resp::parse(&buf);
            let (args, used) = match parsed {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    let _ = send(
                        &mut sock,
                        &Reply::err(e.to_string()).to_bytes(session.proto),
                    )
                    .await;
                    return Ok(());
                }
            };
            buf.drain(..used);
            if args.is_empty() {
                continue;
            }
            shared.commands.fetch_add(1, Ordering::Relaxed);
            let facts = Facts {
                connected_clients: shared.clients.load(Ordering::Relaxed),
                uptime_secs: shared.started.elapsed().as_secs(),
                commands: shared.commands.load(Ordering::Relaxed),
            };
            let view = shared.view.borrow().clone();
            let was_subscribed = session.subscribed();
            let outcome = command::handle(&mut session, &args, &view, &shared.cfg, facts);
            if !was_subscribed && session.subscribed() {
                // Events from now on only (not those queued before the subscription).
                events = events.resubscribe();
            }
            let mut out = Vec::new();
            for r in &outcome.replies {
                r.encode(session.proto, &mut out);
            }
            if outcome.next == Next::Failover {
                let r = match tokio::time::timeout(FAILOVER_WAIT, shared.failover.failover()).await
                {
                    Ok(Ok(())) => Reply::ok(),
                    Ok(Err(refusal)) => Reply::err(refusal.to_string()),
                    Err(_) => Reply::err(
                        "ERR the hand-over did not finish in 30 s; check redis-k8s-election status",
                    ),
                };
                r.encode(session.proto, &mut out);
            }
            if !out.is_empty() {
                send(&mut sock, &out).await?;
            }
            if outcome.next == Next::Close {
                return Ok(());
            }
        }
        if buf.len() > resp::MAX_QUERY {
            let e = Reply::err("ERR Protocol error: too big inline request");
            let _ = send(&mut sock, &e.to_bytes(session.proto)).await;
            return Ok(());
        }
        tokio::select! {
            n = sock.read(&mut chunk) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            ev = events.recv(), if session.subscribed() => {
                match ev {
                    Ok((channel, message)) => {
                        let mut out = Vec::new();
                        for r in deliveries(&session, &channel, &message) {
                            r.encode(session.proto, &mut out);
                        }
                        if !out.is_empty() {
                            send(&mut sock, &out).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "sentinel endpoint: a subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}
