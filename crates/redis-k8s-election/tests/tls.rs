//! TLS between the sidecar and Redis (issue 17), on real `redis-server` processes that speak
//! TLS: the sidecar's connections check the certificate's chain and name and present the
//! group's certificate, and replication runs over TLS. Each check has its control: the same
//! connection with one thing wrong must fail.

use redis_k8s_election::sidecar::tls::TlsSettings;
use redis_node::info::Role;
use redis_node::{NodeConfig, NodeTls, RedisNode};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::RedisServer;

const NAME: &str = "redis-0.redis-headless.ns.svc.cluster.local";

/// The group's files (`ca.crt`, `tls.crt`, `tls.key`) in `dir`, from a fresh CA.
fn group_files(dir: &Path, names: &[&str]) -> kubesim::tls::Ca {
    let ca = kubesim::tls::Ca::generate("test CA").unwrap();
    let (cert, key) = ca.issue(names).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    ca
}

/// A Redis with a plain port (for the test's own checks) and a TLS port beside it on the
/// same unique loopback address, requiring client certificates.
fn tls_redis(dir: &Path) -> (RedisServer, SocketAddr) {
    let plain = testkit::free_loopback_addr();
    let tls = std::net::TcpListener::bind((plain.ip(), 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let f = |n: &str| dir.join(n).display().to_string();
    let server = RedisServer::start_at(
        plain,
        &[
            "--tls-port",
            &tls.port().to_string(),
            "--tls-cert-file",
            &f("tls.crt"),
            "--tls-key-file",
            &f("tls.key"),
            "--tls-ca-cert-file",
            &f("ca.crt"),
            "--tls-auth-clients",
            "yes",
            "--tls-replication",
            "yes",
        ],
    );
    (server, tls)
}

fn settings(dir: &Path) -> TlsSettings {
    let mut t = TlsSettings::load(
        &dir.join("ca.crt"),
        &dir.join("tls.crt"),
        &dir.join("tls.key"),
        None,
    )
    .unwrap();
    t.own_name = NAME.into();
    t
}

fn node(addr: SocketAddr, tls: NodeTls) -> RedisNode {
    let mut cfg = NodeConfig::new(addr.ip().to_string(), addr.port());
    cfg.timeout = Duration::from_secs(2);
    cfg.tls = Some(tls);
    RedisNode::new(cfg).unwrap()
}

#[tokio::test]
async fn the_sidecar_reaches_redis_over_tls_only_with_the_right_ca_name_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    group_files(dir.path(), &["*.redis-headless.ns.svc.cluster.local"]);
    let (server, tls_addr) = tls_redis(dir.path());
    let t = settings(dir.path());

    // Reached at its IP, checked against the pod's DNS name: works.
    let good = t.node_tls(&tls_addr.ip().to_string());
    assert_eq!(good.server_name, NAME);
    node(tls_addr, good.clone())
        .probe()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));

    // Controls: a name the certificate does not carry; another CA; no client certificate.
    let mut wrong_name = good.clone();
    wrong_name.server_name = "redis-0.elsewhere.example".into();
    let other = tempfile::tempdir().unwrap();
    group_files(other.path(), &["*.redis-headless.ns.svc.cluster.local"]);
    let mut wrong_ca = good.clone();
    wrong_ca.ca_pem = std::fs::read(other.path().join("ca.crt")).unwrap();
    let mut anonymous = good.clone();
    anonymous.client_identity = None;
    for (what, tls) in [
        ("a wrong name", wrong_name),
        ("another CA", wrong_ca),
        ("no client certificate", anonymous),
    ] {
        let r = node(tls_addr, tls).probe().await;
        assert!(r.is_err(), "connected with {what}");
    }
    // Plain RESP to the TLS port gets no answer.
    let mut cfg = NodeConfig::new(tls_addr.ip().to_string(), tls_addr.port());
    cfg.timeout = Duration::from_secs(2);
    assert!(
        RedisNode::new(cfg).unwrap().probe().await.is_err(),
        "a plain connection to the TLS port was answered"
    );
}

#[tokio::test]
async fn a_replica_follows_its_master_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    group_files(dir.path(), &["*.redis-headless.ns.svc.cluster.local"]);
    let (master, master_tls) = tls_redis(dir.path());
    let (replica, replica_tls) = tls_redis(dir.path());
    let t = settings(dir.path());
    let node_of = |a: SocketAddr| node(a, t.node_tls(&a.ip().to_string()));
    assert_eq!(master.command(&["SET", "k", "v"]).unwrap(), "+OK");
    // Pointed at the master's TLS port: the link can only be TLS.
    node_of(replica_tls)
        .follow(&master_tls.ip().to_string(), master_tls.port())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.command(&["GET", "k"]).as_deref() != Some("v") {
        assert!(
            Instant::now() < deadline,
            "no replication over TLS:\n{}\n{}",
            replica.log(),
            master.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probe = node_of(replica_tls).probe().await.unwrap();
    assert!(
        matches!(probe.info.role, Role::Replica { link_up: true, .. }),
        "{probe:?}"
    );
}

/// `--http-tls`: the sidecar's HTTP server (`serve`) speaks HTTPS only, and the peers' client
/// (`api_tls`) accepts it only with the group's CA and name, whatever address it dialled.
#[tokio::test]
async fn the_api_serves_https_that_peers_check_by_ca_and_name() {
    use redis_k8s_election::api_tls::{ApiTls, url};
    use redis_k8s_election::sidecar::serve::{ServeLimits, serve};
    let dir = tempfile::tempdir().unwrap();
    group_files(dir.path(), &["*.redis-headless.ns.svc.cluster.local"]);
    let t = settings(dir.path());
    let listener = tokio::net::TcpListener::bind(testkit::free_loopback_addr())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = axum::Router::new().route("/livez", axum::routing::get(|| async { "ok" }));
    let limits = ServeLimits {
        max_connections: 8,
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(4),
    };
    let server = tokio::spawn(serve(
        listener,
        router,
        limits,
        Some(t.server_config.clone()),
    ));
    let get = |tls: Option<ApiTls>| {
        let addr = addr.clone();
        async move {
            let client = redis_k8s_election::api_tls::builder(tls.as_ref())
                .unwrap()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap();
            client
                .get(url(tls.as_ref(), &addr, "/livez"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| format!("{e:?}"))
        }
    };
    // Dialled at an IP, checked against the pod's DNS name: served.
    assert_eq!(get(Some(t.api_tls())).await, Ok(200));
    // Controls: another name, another CA, plain HTTP.
    let mut wrong_name = t.api_tls();
    wrong_name.name = "redis-0.elsewhere.example".into();
    let other = tempfile::tempdir().unwrap();
    group_files(other.path(), &["*.redis-headless.ns.svc.cluster.local"]);
    let mut wrong_ca = t.api_tls();
    wrong_ca.ca_pem = std::fs::read(other.path().join("ca.crt")).unwrap();
    for (what, tls) in [
        ("a wrong name", Some(wrong_name)),
        ("another CA", Some(wrong_ca)),
        ("plain HTTP", None),
    ] {
        let r = get(tls).await;
        assert!(r.is_err(), "{what} was served: {r:?}");
    }
    server.abort();
}
