//! The service proxy in front of real redis-server endpoints.

mod common;

use common::*;
use kubesim::proxy::{ServicePort, ServiceProxy};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;
use testkit::RedisServer;

fn connect(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

/// The port of the Redis a connection reached (`CONFIG GET port`), or `None` when the
/// connection was closed.
fn reached(conn: &mut BufReader<TcpStream>) -> Option<String> {
    conn.get_mut()
        .write_all(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nport\r\n")
        .ok()?;
    // *2, $4, port, $N, <port>
    let mut last = String::new();
    for _ in 0..5 {
        last.clear();
        if conn.read_line(&mut last).ok()? == 0 {
            return None;
        }
    }
    Some(last.trim_end().to_string())
}

async fn pod_for(s: &Sim, name: &str, r: &RedisServer) {
    let r = s
        .post(PODS, json!({"metadata": {"name": name, "labels": {"app": "r"}}, "spec": {"containers": [
            {"name": "redis", "image": "redis:7", "ports": [{"name": "redis", "containerPort": r.addr.port()}]}]}}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_new_connections_to_ready_endpoints_only() {
    let s = Sim::new().await;
    let (r0, r1) = (RedisServer::start(&[]), RedisServer::start(&[]));
    let svc = json!({"metadata": {"name": "redis"}, "spec": {"selector": {"app": "r"}, "ports": [{"name": "redis", "port": 6379, "targetPort": "redis"}]}});
    assert_eq!(s.post(SVCS, svc).await.code, 201);
    pod_for(&s, "p0", &r0).await;
    pod_for(&s, "p1", &r1).await;
    s.pod_status("p0", &r0.addr.ip().to_string(), true).await;
    s.pod_status("p1", &r1.addr.ip().to_string(), true).await;

    let sp = ServicePort {
        namespace: "ns".into(),
        service: "redis".into(),
        port: 6379,
    };
    let proxy = ServiceProxy::start(s.server.store(), sp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = proxy.addr();
    // Round robin over both ready endpoints.
    let ports: std::collections::BTreeSet<String> = tokio::task::spawn_blocking(move || {
        (0..4).filter_map(|_| reached(&mut connect(addr))).collect()
    })
    .await
    .unwrap();
    let want: std::collections::BTreeSet<String> =
        [r0.addr.port().to_string(), r1.addr.port().to_string()].into();
    assert_eq!(ports, want);

    // An open connection to p0 survives p0 turning not ready; new ones go to p1 only.
    let (mut open, p0_port) = tokio::task::spawn_blocking(move || {
        let p0 = r0.addr.port().to_string();
        loop {
            let mut c = connect(addr);
            if reached(&mut c).as_deref() == Some(p0.as_str()) {
                return (c, p0);
            }
        }
    })
    .await
    .unwrap();
    s.pod_status("p0", &r0.addr.ip().to_string(), false).await;
    let p1_port = r1.addr.port().to_string();
    let (open_ok, fresh) = tokio::task::spawn_blocking(move || {
        let still = reached(&mut open);
        let fresh: Vec<Option<String>> = (0..4).map(|_| reached(&mut connect(addr))).collect();
        (still, fresh)
    })
    .await
    .unwrap();
    assert_eq!(
        open_ok,
        Some(p0_port),
        "existing connections are left alone"
    );
    assert!(
        fresh.iter().all(|p| p.as_deref() == Some(p1_port.as_str())),
        "{fresh:?}"
    );

    // No ready endpoint: the connection is closed at once.
    s.pod_status("p1", &r1.addr.ip().to_string(), false).await;
    let outcome = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(b"*1\r\n$4\r\nPING\r\n");
        let mut buf = [0u8; 16];
        c.read(&mut buf).map_err(|e| e.kind())
    })
    .await
    .unwrap();
    assert!(
        matches!(outcome, Ok(0) | Err(std::io::ErrorKind::ConnectionReset)),
        "expected the connection closed at once, got {outcome:?}"
    );
    drop((r0, r1));
}
