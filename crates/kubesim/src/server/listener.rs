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
                serve_http(shared.clone(), TokioIo::new(tls)).await;
            }
        } else {
            serve_http(shared.clone(), TokioIo::new(stream)).await;
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = cuts.changed() => {}
        _ = shutdown.changed() => {}
    }
}

pub(super) async fn serve_http<I>(shared: Arc<Shared>, io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { handle(shared, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .await;
}
