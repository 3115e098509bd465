//! Clients that are slow, idle or send too much, on both protocols the port speaks (issue 17:
//! plain-HTTP slow clients were never timed out, and over TLS 4 of 12 oversized bodies got a
//! broken pipe instead of the 413).

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A server whose clients get one second for headers and bodies.
async fn impatient() -> Sim {
    Sim::with_config(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(1);
    })
    .await
}

async fn plain(s: &Sim) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(s.server.addr())
        .await
        .unwrap()
}

async fn tls(s: &Sim) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(s.server.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(s.server.addr().ip().into());
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, plain(s).await)
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection, or `None` if it is still open
/// after `within`.
async fn until_closed(io: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` to `io` and flushes them.
async fn send(io: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    io.write_all(bytes).await.unwrap();
    io.flush().await.unwrap();
}

/// A client that stops halfway through its headers, one that sends a whole request and then
/// sits idle, and one that announces a body it never finishes: each is closed soon after the
/// timeout, and the body's sender gets the real server's 504 first.
async fn slow_clients_are_closed<S: AsyncRead + AsyncWrite + Unpin>(
    mut connect: impl AsyncFnMut() -> S,
) {
    let mut half = connect().await;
    send(&mut half, b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        until_closed(&mut half, Duration::from_secs(5))
            .await
            .is_some(),
        "a client that never finished its headers is still connected"
    );

    let mut idle = connect().await;
    let get = format!("GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    send(&mut idle, get.as_bytes()).await;
    let got = until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle kept-alive connection is still open");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    let mut body = connect().await;
    let post = format!(
        "POST /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"metadata\""
    );
    send(&mut body, post.as_bytes()).await;
    let got = until_closed(&mut body, Duration::from_secs(5))
        .await
        .expect("a body that never ends holds its connection");
    assert!(got.starts_with("HTTP/1.1 504"), "{got}");
    assert!(got.contains("\"reason\":\"Timeout\""), "{got}");
}

#[tokio::test]
async fn slow_and_idle_plain_http_clients_are_closed() {
    let s = impatient().await;
    slow_clients_are_closed(async || plain(&s).await).await;
    assert_eq!(s.get(L).await.code, 200, "the server lives on");
}

#[tokio::test]
async fn slow_and_idle_tls_clients_are_closed() {
    let s = impatient().await;
    slow_clients_are_closed(async || tls(&s).await).await;
    assert_eq!(s.get(L).await.code, 200, "the server lives on");
}

/// The control: a client within the timeouts keeps its connection for many requests.
#[tokio::test]
async fn a_client_within_the_timeouts_keeps_its_connection() {
    let s = impatient().await;
    let mut c = plain(&s).await;
    for _ in 0..5 {
        c.write_all(
            format!("GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Oversized bodies over TLS, sent whole by a client that only then reads: every client reads
/// the 413, none a broken pipe or reset (the server lingers after refusing a body unread:
/// closing with unread data resets the connection). Both a declared length (refused before
/// the body is read) and a chunked body (refused at the limit).
#[tokio::test]
async fn oversized_bodies_over_tls_all_get_the_413() {
    let s = Sim::new().await;
    let big = vec![b'a'; 4 * 1024 * 1024];
    for i in 0..12 {
        let mut c = tls(&s).await;
        let chunked = i % 2 == 1;
        let head = format!(
            "POST {L} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{}\r\n",
            if chunked {
                "Transfer-Encoding: chunked\r\n".to_string()
            } else {
                format!("Content-Length: {}\r\n", big.len())
            }
        );
        let mut wire = head.into_bytes();
        if chunked {
            for part in big.chunks(64 * 1024) {
                wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                wire.extend_from_slice(part);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
        } else {
            wire.extend_from_slice(&big);
        }
        let sent = c.write_all(&wire).await.and(c.flush().await);
        let got = until_closed(&mut c, Duration::from_secs(10))
            .await
            .unwrap_or_default();
        assert!(
            got.starts_with("HTTP/1.1 413"),
            "request {i} (chunked: {chunked}, send: {sent:?}): {got:?}"
        );
    }
    assert_eq!(s.get(L).await.code, 200, "the server lives on");
}
