//! The listener: binding, the accept loop with TLS, one hyper connection per client, and the
//! full outage that really refuses connections.

use super::*;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Starts or ends an outage; starting one also cuts every open connection.
pub(super) fn set_outage(shared: &Shared, on: bool) {
    if on && !*shared.outage.borrow() {
        shared.cuts.send_modify(|c| *c += 1);
    }
    shared.outage.send_replace(on);
}

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    first: TcpListener,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut outage = shared.outage.subscribe();
    let mut listener = Some(first);
    loop {
        if *outage.borrow_and_update() {
            listener = None;
            tokio::select! {
                _ = outage.changed() => continue,
                _ = shutdown.changed() => return,
            }
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "rebinding after outage failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of file descriptors (or the like): the error repeats at once
                        // until a connection closes, so wait instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(shared.clone(), stream, shutdown.clone()));
                }
                _ = outage.changed() => {
                    if *outage.borrow() { break; }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Serves one connection, TLS or plain HTTP, told apart by the first byte (a TLS record of
/// type handshake starts with 0x16; an HTTP request line starts with a letter).
pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut cuts = shared.cuts.subscribe();
    let serve = async {
        let mut first = [0u8; 1];
        let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
        if is_tls {
            let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.server_config.clone());
            // A client that never finishes the handshake is dropped after 10 s.
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            {
                serve_http(shared.clone(), tls).await;
            }
        } else {
            serve_http(shared.clone(), stream).await;
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = cuts.changed() => {}
        _ = shutdown.changed() => {}
    }
}

/// Serves HTTP/1.1 on `io` until the client leaves, a header or idle timeout passes, or a
/// request ends the connection; then closes it gently (see [`linger`]).
pub(super) async fn serve_http<T>(shared: Arc<Shared>, io: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = shared.header_timeout;
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { handle(shared, req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    if let Ok(parts) = conn.without_shutdown().await {
        linger(parts.io.into_inner()).await;
    }
}

/// Closes a connection whose client may still be sending (a body refused unread, such as an
/// oversized one answered 413): the write side is shut first (over TLS with close_notify),
/// then what still arrives is read and dropped for a short while. Closing a socket with
/// unread data sends a reset, which can reach the client before it has read the answer: the
/// client saw a broken pipe instead of the 413 (Go's server lingers the same way).
async fn linger<T>(mut io: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    let mut sink = vec![0u8; 16 * 1024];
    let mut left = 2 * MAX_BODY;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}
