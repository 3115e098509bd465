//! The HTTP server under the sidecar's API: one hyper connection per client, with the limits
//! `axum::serve` does not offer.
//!
//! Written over hyper rather than with `axum::serve` because the API must stay answerable to
//! the kubelet's liveness probe whatever other clients do (issue 17: 600 idle sockets under a
//! low file limit failed `/livez`, the kubelet restarted the leader's sidecar and the lease
//! changed hands without a hand-over). So:
//! * a client must send a request's headers within the header timeout, which also closes
//!   idle keep-alive connections (hyper's timer starts whenever it waits for a request head);
//! * a request body must arrive within the body timeout;
//! * at most `max_connections` connections are open: a new one closes the oldest. The newest
//!   connection is always served, so a probe is answered unless more than `max_connections`
//!   other connections open during the probe's own few milliseconds;
//! * accept errors (out of file descriptors) back off instead of spinning;
//! * with `--http-tls`, HTTPS only: the TLS handshake must finish within the header timeout.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;

/// What one client may hold.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Open connections at most; the oldest is closed to make room.
    pub max_connections: usize,
    /// Time to send a request's headers, and longest idle time between requests.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
}

/// Serves `router` on `listener` until the task is dropped; over TLS only when `tls` is
/// given.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    // Open connections by age: dropping a sender closes its connection.
    let open: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>> = Arc::default();
    let mut next_id = 0u64;
    let mut warned = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (or the like): the error repeats at once until a
                // connection closes, so wait instead of spinning.
                if !warned {
                    tracing::warn!(error = %e, "HTTP API cannot accept connections; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        warned = false;
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let (close, closed) = oneshot::channel::<()>();
        {
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            open.insert(id, close);
            while open.len() > limits.max_connections.max(1) {
                open.pop_first();
            }
        }
        let router = router.clone();
        let open = open.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = async {
                match tls {
                    None => connection(stream, router, limits).await,
                    Some(acceptor) => {
                        // A client that never finishes its handshake is an idle one.
                        let handshake = acceptor.accept(stream);
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(limits.header_timeout, handshake).await
                        {
                            connection(stream, router, limits).await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = closed => {}
            }
            open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
}

/// One client's HTTP/1.1 connection, with the header and body timeouts.
async fn connection<S>(stream: S, router: Router, limits: ServeLimits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let req = req.map(|body| Body::new(Deadline::new(body, limits.body_timeout)));
        router.clone().oneshot(req)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// A request body that fails when it has not ended by its deadline, so a client sending a
/// body a byte at a time cannot hold a handler (and its buffer) forever.
struct Deadline {
    body: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(body: Incoming, within: Duration) -> Self {
        Deadline {
            body,
            sleep: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the body timeout")]
struct BodyTimeout;

impl http_body::Body for Deadline {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Raises the soft limit on open files to the hard one (containers commonly start with 1024
/// soft): the HTTP API's connection cap and the Sentinel endpoint's client limit together
/// must fit under it, or a flood on one port fails accepts on the other.
pub fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
}
