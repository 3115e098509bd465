//! redis-node against real `redis-server` processes (Debian's package), each on its own
//! loopback address.

use redis_node::info::Role;
use redis_node::{NodeConfig, NodeError, RedisNode};
use std::time::{Duration, Instant};
use testkit::RedisServer;

fn node(s: &RedisServer) -> RedisNode {
    let (host, port) = s.host_port();
    RedisNode::new(NodeConfig::new(host, port)).unwrap()
}

/// Polls `f` until it is true, failing after `within`.
async fn eventually(within: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn probe_follow_promote() {
    let a = RedisServer::start(&[]);
    let b = RedisServer::start(&[]);
    let (na, nb) = (node(&a), node(&b));
    let p = na.probe().await.unwrap();
    assert_eq!(p.info.role, Role::Master);
    assert!(!p.fenced && !p.info.loading && !p.info.has_data());
    assert_eq!(a.command(&["SET", "k", "v"]).unwrap(), "+OK");
    assert!(na.probe().await.unwrap().info.has_data());

    let (host, port) = a.host_port();
    nb.follow(&host, port).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the replication link",
        async || {
            matches!(
                nb.probe().await.unwrap().info.role,
                Role::Replica { link_up: true, .. }
            )
        },
    )
    .await;
    let p = nb.probe().await.unwrap();
    assert_eq!(
        p.info.role,
        Role::Replica {
            master_host: host,
            master_port: port,
            link_up: true,
            syncing: false
        }
    );
    assert_eq!(b.command(&["GET", "k"]).unwrap(), "v");
    assert!(
        b.command(&["SET", "x", "1"])
            .unwrap()
            .starts_with("-READONLY")
    );

    nb.promote().await.unwrap();
    assert_eq!(nb.probe().await.unwrap().info.role, Role::Master);
    assert_eq!(b.command(&["SET", "x", "1"]).unwrap(), "+OK");
}

#[tokio::test]
async fn fence_refuses_writes_serves_reads_and_drops_clients() {
    let a = RedisServer::start(&[]);
    let n = node(&a);
    assert_eq!(a.command(&["SET", "k", "v"]).unwrap(), "+OK");
    // A client that stays connected, to be dropped by the fence.
    let mut other = std::net::TcpStream::connect(a.addr).unwrap();
    use std::io::{Read, Write};
    other.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut buf = [0u8; 16];
    assert!(other.read(&mut buf).unwrap() > 0);

    n.fence().await.unwrap();
    assert!(n.probe().await.unwrap().fenced);
    assert!(
        a.command(&["SET", "k", "w"])
            .unwrap()
            .starts_with("-NOREPLICAS"),
        "writes refused"
    );
    assert_eq!(a.command(&["GET", "k"]).unwrap(), "v", "reads served");
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match other.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        got => panic!("the other client should have been dropped, got {got:?}"),
    }
    // Our own connection survived: the next command needs no reconnect and works.
    assert!(n.probe().await.is_ok());

    n.unfence(Some("3:100:a")).await.unwrap();
    let p = n.probe().await.unwrap();
    assert!(!p.fenced);
    assert_eq!(
        p.checkpoint.as_deref(),
        Some("3:100:a"),
        "the checkpoint went in with the unfencing"
    );
    assert_eq!(a.command(&["SET", "k", "w"]).unwrap(), "+OK");
    // Checkpoints are refused like any write while fenced; the probe reads them back.
    n.fence().await.unwrap();
    assert!(n.write_checkpoint("3:101:a").await.is_err());
    n.unfence(None).await.unwrap();
    n.write_checkpoint("3:102:a").await.unwrap();
    assert_eq!(
        n.probe().await.unwrap().checkpoint.as_deref(),
        Some("3:102:a")
    );
}

#[tokio::test]
async fn remote_fence_of_a_master_whose_sidecar_is_gone() {
    // Any peer can fence: the node handle needs nothing but the address.
    let a = RedisServer::start(&[]);
    let (host, port) = a.host_port();
    let peer_view = RedisNode::new(NodeConfig::new(host, port)).unwrap();
    peer_view.fence().await.unwrap();
    assert!(
        a.command(&["SET", "k", "v"])
            .unwrap()
            .starts_with("-NOREPLICAS")
    );
}

#[tokio::test]
async fn dead_and_hung_redis_give_typed_errors_in_bounded_time() {
    let mut a = RedisServer::start(&[]);
    let (host, port) = a.host_port();
    let mut cfg = NodeConfig::new(host, port);
    cfg.timeout = Duration::from_millis(300);
    let n = RedisNode::new(cfg).unwrap();
    n.probe().await.unwrap();

    a.signal("-STOP");
    let t = Instant::now();
    let e = n.probe().await.unwrap_err();
    assert!(matches!(e, NodeError::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    a.signal("-CONT");
    eventually(
        Duration::from_secs(10),
        "recovery after SIGCONT",
        async || n.probe().await.is_ok(),
    )
    .await;

    a.kill();
    let e = n.probe().await.unwrap_err();
    assert!(
        matches!(e, NodeError::Unreachable { .. } | NodeError::Timeout { .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&a.addr.to_string()), "{e}");
}

#[tokio::test]
async fn auth() {
    let a = RedisServer::start(&["--requirepass", "s3cret"]);
    let (host, port) = a.host_port();
    let anonymous = RedisNode::new(NodeConfig::new(host.clone(), port)).unwrap();
    assert!(anonymous.probe().await.is_err());
    let mut cfg = NodeConfig::new(host, port);
    cfg.password = Some("s3cret".into());
    let n = RedisNode::new(cfg).unwrap();
    n.probe().await.unwrap();
    assert!(
        !format!("{n:?}").contains("s3cret"),
        "the password is never printed"
    );
}

#[tokio::test]
async fn garbage_replies_are_clear_errors() {
    // A fake server that answers every command with a plain string.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(b"+nonsense\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut cfg = NodeConfig::new(addr.ip().to_string(), addr.port());
    cfg.timeout = Duration::from_millis(500);
    let n = RedisNode::new(cfg).unwrap();
    let t = Instant::now();
    let e = n.probe().await.unwrap_err();
    // Whichever way the client gives up (a reply it cannot use, or no usable reply in time),
    // it is a typed error naming the address, in bounded time.
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A fence sent while Redis hangs waits on the established connection and takes effect as
/// Redis resumes, before any client that connected during the hang is served.
#[tokio::test]
async fn a_fence_sent_during_a_hang_takes_effect_first_when_redis_resumes() {
    let a = RedisServer::start(&[]);
    let (host, port) = a.host_port();
    let mut cfg = NodeConfig::new(host, port);
    cfg.timeout = Duration::from_millis(200);
    let n = RedisNode::new(cfg).unwrap();
    assert!(!n.probe().await.unwrap().fenced);

    a.signal("-STOP");
    // As in the sidecar: a probe notices the hang first, then the fence is sent.
    let e = n.probe().await.unwrap_err();
    assert!(matches!(e, NodeError::Timeout { .. }), "{e}");
    let e = n.fence().await.unwrap_err();
    assert!(matches!(e, NodeError::Timeout { .. }), "{e}");
    // A client connects while Redis hangs and sends a write; it waits for the resume.
    let client = write_during_hang(a.addr).await;
    a.signal("-CONT");
    let reply = client.await.unwrap();
    assert!(
        reply.starts_with("-NOREPLICAS"),
        "the write that arrived during the hang was served before the fence: {reply:?}"
    );
    assert!(n.probe().await.unwrap().fenced, "the fence took effect");
}

/// The control for the test above, and the reason the sidecar fences a frozen previous leader
/// through a connection it opened before the freeze: a new connection cannot authenticate
/// while Redis hangs, so its fence is never sent, and the client's write is served when Redis
/// resumes.
#[tokio::test]
async fn control_a_fence_on_a_new_connection_to_a_hung_redis_comes_too_late() {
    let a = RedisServer::start(&[]);
    let (host, port) = a.host_port();
    a.signal("-STOP");
    let client = write_during_hang(a.addr).await;
    let mut cfg = NodeConfig::new(host, port);
    cfg.timeout = Duration::from_millis(200);
    let fresh = RedisNode::new(cfg).unwrap();
    let e = fresh.fence().await.unwrap_err();
    assert!(matches!(e, NodeError::Timeout { .. }), "{e}");
    drop(fresh);
    a.signal("-CONT");
    let reply = client.await.unwrap();
    assert_eq!(
        reply, "+OK\r\n",
        "the write was served: the fence never got there"
    );
}

/// A client that connects to a hung Redis and sends a write, which waits in the kernel until
/// Redis resumes; returns once the write was sent, with the task that yields the reply.
async fn write_during_hang(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<String> {
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let client = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"SET during-hang 1\r\n").unwrap();
        sent_tx.send(()).unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    tokio::task::spawn_blocking(move || sent_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the client sent its write during the hang");
    client
}
