//! The Sentinel-compatible endpoint (issue 16) from outside, with real clients against the
//! shipped manifests' group: its replies side by side with Debian's real `redis-sentinel`
//! (reply types, field names, error texts), redis-py's `Sentinel` writing and reading through
//! it across a crash failover and a switchover (RESP3 as redis-py defaults, and RESP2), and
//! `+switch-master` reaching subscribers once per leader change.

use harness::cluster::{KubeGroup, Profile, REDIS_PORT};
use redis::Value;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SENTINEL_PORT: u16 = 26379;

/// A real `redis-sentinel` watching a real master (with one replica) on loopback addresses
/// of its own; everything ends with it.
struct RealSentinel {
    addr: SocketAddr,
    child: Child,
    _master: testkit::RedisServer,
    _replica: testkit::RedisServer,
    _dir: tempfile::TempDir,
}

impl RealSentinel {
    fn start() -> Self {
        let master = testkit::RedisServer::start(&[]);
        let (mh, mp) = master.host_port();
        let replica = testkit::RedisServer::start(&["--replicaof", &mh, &mp.to_string()]);
        let dir = tempfile::tempdir().unwrap();
        let addr = testkit::free_loopback_addr();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {}\nbind {}\nsentinel monitor mymaster {mh} {mp} 1\nsentinel down-after-milliseconds mymaster 5000\n",
                addr.port(),
                addr.ip()
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel is installed (.ci/run installs it)");
        let s = Self {
            addr,
            child,
            _master: master,
            _replica: replica,
            _dir: dir,
        };
        // Ready once it knows the replica (found through the master's INFO).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("redis-cli")
                .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
                .args(["SENTINEL", "replicas", "mymaster"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("slave") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the real Sentinel found no replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RealSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn conn(addr: SocketAddr, resp3: bool) -> redis::aio::MultiplexedConnection {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    redis::Client::open(format!("redis://{addr}/{proto}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// A reply, or the error's text.
async fn ask(c: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> Result<Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query_async::<Value>(c).await {
        Ok(Value::ServerError(e)) => Err(format!("{} {}", e.code(), e.details().unwrap_or(""))),
        Ok(v) => Ok(v),
        Err(e) => Err(match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        }),
    }
}

/// The reply's type, recursively; maps with their (sorted) keys, arrays by their first
/// element's type (values are left out: they differ between any two deployments).
fn shape(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Int(_) => "int".into(),
        Value::BulkString(_) => "bulk".into(),
        Value::SimpleString(_) | Value::Okay => "simple".into(),
        Value::VerbatimString { .. } => "verbatim".into(),
        Value::Array(items) => format!(
            "array[{}]",
            items.first().map(shape).unwrap_or_else(|| "-".into())
        ),
        Value::Map(pairs) => {
            let keys: BTreeSet<String> = pairs
                .iter()
                .map(|(k, _)| match k {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("map{keys:?}")
        }
        other => format!("{other:?}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

fn endpoint(g: &KubeGroup, pod: &str) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(g.cluster.pod_ip(pod).expect("a running pod")),
        SENTINEL_PORT,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_as_the_real_sentinel_does() {
    let real = RealSentinel::start();
    let g = KubeGroup::start(3, &Profile::fast()).await;
    let (leader, leader_ip) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("no leader: {e}\n{}", g.logs(40)));
    // Every sidecar answers, each with the leader.
    for pod in g.cluster.pod_names() {
        let mut c = conn(endpoint(&g, &pod), false).await;
        let v = ask(&mut c, &["SENTINEL", "get-master-addr-by-name", "mymaster"])
            .await
            .unwrap();
        let Value::Array(a) = v else { panic!("{v:?}") };
        assert_eq!(
            (text(&a[0]), text(&a[1])),
            (leader_ip.to_string(), REDIS_PORT.to_string()),
            "{pod} names {leader}"
        );
    }
    let ours = endpoint(&g, &leader);
    let (mh, _) = real._master.host_port();
    let commands: Vec<Vec<String>> = [
        vec!["PING"],
        vec!["SENTINEL", "get-master-addr-by-name", "mymaster"],
        vec!["SENTINEL", "get-master-addr-by-name", "nope"],
        vec!["SENTINEL", "masters"],
        vec!["SENTINEL", "master", "mymaster"],
        vec!["SENTINEL", "replicas", "mymaster"],
        vec!["SENTINEL", "slaves", "mymaster"],
        vec!["SENTINEL", "myid"],
        vec!["SENTINEL", "ckquorum", "mymaster"],
        vec!["SENTINEL", "master", "nope"],
        vec!["SENTINEL", "replicas", "nope"],
        vec!["SENTINEL", "foo"],
        vec!["SENTINEL"],
        vec!["ROLE"],
        vec!["CLIENT", "SETNAME", "app"],
        vec!["CLIENT", "GETNAME"],
        vec!["CLIENT", "ID"],
        vec!["GET", "x"],
        vec!["AUTH", "x"],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect();
    for resp3 in [false, true] {
        let mut theirs_c = conn(real.addr, resp3).await;
        let mut ours_c = conn(ours, resp3).await;
        for cmd in &commands {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let theirs = ask(&mut theirs_c, &args).await;
            let mine = ask(&mut ours_c, &args).await;
            match (&theirs, &mine) {
                (Ok(t), Ok(m)) => assert_eq!(shape(m), shape(t), "{cmd:?} resp3={resp3}"),
                (Err(t), Err(m)) => assert_eq!(m, t, "{cmd:?} resp3={resp3}"),
                _ => panic!("{cmd:?} resp3={resp3}: real {theirs:?}, ours {mine:?}"),
            }
        }
        // Same kinds of values where clients read them.
        let t = ask(&mut theirs_c, &["SENTINEL", "myid"]).await.unwrap();
        let m = ask(&mut ours_c, &["SENTINEL", "myid"]).await.unwrap();
        assert_eq!(text(&m).len(), text(&t).len());
        let t = ask(
            &mut theirs_c,
            &["SENTINEL", "is-master-down-by-addr", &mh, "1", "0", "*"],
        )
        .await
        .unwrap();
        let m = ask(
            &mut ours_c,
            &[
                "SENTINEL",
                "is-master-down-by-addr",
                &leader_ip.to_string(),
                "6379",
                "0",
                "*",
            ],
        )
        .await
        .unwrap();
        assert_eq!(shape(&m), shape(&t));
        for section in ["sentinel", "server"] {
            let t = text(&ask(&mut theirs_c, &["INFO", section]).await.unwrap());
            let m = text(&ask(&mut ours_c, &["INFO", section]).await.unwrap());
            for key in ["sentinel_masters:1", "redis_mode:sentinel", "run_id:"] {
                assert_eq!(
                    m.contains(key),
                    t.contains(key),
                    "INFO {section}: {key}\n{m}"
                );
            }
        }
    }
    // HELLO 3: the same map keys.
    let mut t = conn(real.addr, false).await;
    let mut m = conn(ours, false).await;
    let th = ask(&mut t, &["HELLO", "3"]).await.unwrap();
    let mh3 = ask(&mut m, &["HELLO", "3"]).await.unwrap();
    assert_eq!(shape(&mh3), shape(&th));
    // Configuration commands: the real one obeys, this one says who configures it.
    let e = ask(&mut m, &["SENTINEL", "set", "mymaster", "quorum", "1"])
        .await
        .unwrap_err();
    assert!(e.contains("manifests"), "{e}");
    // FAILOVER needs the admin: refused as Sentinel refuses a user without the permission.
    let e = ask(&mut m, &["SENTINEL", "failover", "mymaster"])
        .await
        .unwrap_err();
    assert!(e.starts_with("NOPERM"), "{e}");
    g.stop().await;
}

/// redis-py's Sentinel support, run as a script: through the endpoint at `sentinel`, write
/// `key` on the master (retrying while a failover runs), then read it back from a replica;
/// prints the master's address.
const REDIS_PY: &str = r#"
import sys, time
from redis.sentinel import Sentinel
host, port, password, proto, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
kw = {} if proto == "default" else {"protocol": int(proto)}
s = Sentinel([(host, port)], socket_timeout=1.0, sentinel_kwargs=dict(socket_timeout=1.0, **kw))
m = s.master_for("mymaster", password=password, socket_timeout=1.0, **kw)
deadline = time.time() + 60
while True:
    try:
        m.set(key, "v-" + key)
        break
    except Exception as e:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
r = s.slave_for("mymaster", password=password, socket_timeout=1.0, **kw)
while True:
    try:
        if r.get(key) == b"v-" + key.encode():
            break
    except Exception:
        pass
    if time.time() > deadline:
        raise SystemExit("the replica never had " + key)
    time.sleep(0.05)
host, port = s.discover_master("mymaster")
print(f"{host}:{port}")
"#;

/// Runs a client script (`cmd`), failing the test with its stderr and the pods' logs if it
/// fails; what it printed (the master's address).
fn run_client(g: &KubeGroup, what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        g.logs(30)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn redis_py(g: &KubeGroup, via: SocketAddr, proto: &str, key: &str) -> String {
    run_client(
        g,
        &format!("redis-py ({proto})"),
        Command::new("python3").args(["-c", REDIS_PY]).args([
            via.ip().to_string(),
            via.port().to_string(),
            g.password.clone(),
            proto.to_string(),
            key.to_string(),
        ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_py_follows_the_leader_through_a_crash_and_a_switchover() {
    let g = KubeGroup::start(3, &Profile::fast()).await;
    let (leader, leader_ip) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("no leader: {e}\n{}", g.logs(40)));
    let via = |g: &KubeGroup, not: &str| {
        let pod = g
            .cluster
            .pod_names()
            .into_iter()
            .find(|p| p != not)
            .unwrap();
        endpoint(g, &pod)
    };
    let ep = via(&g, &leader);
    for proto in ["default", "3", "2"] {
        let master = tokio::task::block_in_place(|| redis_py(&g, ep, proto, &format!("a{proto}")));
        assert_eq!(master, format!("{leader_ip}:{REDIS_PORT}"), "{proto}");
    }

    // The leader's Redis crashes: writes through redis-py resume on the new master.
    let pid = g.cluster.container_pid(&leader, "redis").unwrap();
    testkit::signal(pid, "-KILL");
    let after_crash = tokio::task::block_in_place(|| redis_py(&g, ep, "default", "b"));
    assert_ne!(
        after_crash,
        format!("{leader_ip}:{REDIS_PORT}"),
        "a new master"
    );
    let (second, second_ip) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("not converged after the crash: {e}\n{}", g.logs(40)));
    assert_eq!(after_crash, format!("{second_ip}:{REDIS_PORT}"));

    // A switchover: the same.
    let (ok, out) = g.switchover().await;
    assert!(ok, "{out}");
    let (third, third_ip) = g.converged(Duration::from_secs(60)).await.unwrap();
    assert_ne!(third, second);
    let ep = via(&g, &third);
    for proto in ["default", "2"] {
        let m = tokio::task::block_in_place(|| redis_py(&g, ep, proto, &format!("c{proto}")));
        assert_eq!(m, format!("{third_ip}:{REDIS_PORT}"));
    }
    g.stop().await;
}

/// ioredis (Node.js, from npm: `tests/node`, installed by `.ci/run`) through the endpoint.
fn ioredis(g: &KubeGroup, via: SocketAddr, key: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/ioredis").is_dir(),
        "ioredis is not installed: run `npm ci --prefix {}` (.ci/run does)",
        dir.display()
    );
    run_client(
        g,
        "ioredis",
        Command::new("node")
            .current_dir(&dir)
            .arg("sentinel-client.js")
            .args([
                via.ip().to_string(),
                via.port().to_string(),
                g.password.clone(),
                key.to_string(),
            ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ioredis_connects_and_fails_over() {
    let g = KubeGroup::start(3, &Profile::fast()).await;
    let (leader, leader_ip) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("no leader: {e}\n{}", g.logs(40)));
    let other = g
        .cluster
        .pod_names()
        .into_iter()
        .find(|p| *p != leader)
        .unwrap();
    let ep = endpoint(&g, &other);
    let first = tokio::task::block_in_place(|| ioredis(&g, ep, "n1"));
    assert_eq!(first, format!("{leader_ip}:{REDIS_PORT}"));
    let pid = g.cluster.container_pid(&leader, "redis").unwrap();
    testkit::signal(pid, "-KILL");
    let second = tokio::task::block_in_place(|| ioredis(&g, ep, "n2"));
    assert_ne!(second, first, "ioredis writes to the new master");
    let (_, new_ip) = g.converged(Duration::from_secs(90)).await.unwrap();
    assert_eq!(second, format!("{new_ip}:{REDIS_PORT}"));
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_announces_each_switch_once() {
    use futures::StreamExt;
    let g = KubeGroup::start(3, &Profile::fast()).await;
    let (old, old_ip) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("no leader: {e}\n{}", g.logs(40)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Instant)>();
    let mut subscribers = Vec::new();
    for pod in g.cluster.pod_names() {
        let addr = endpoint(&g, &pod);
        let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
        let mut ps = client.get_async_pubsub().await.unwrap();
        ps.subscribe("+switch-master").await.unwrap();
        let tx = tx.clone();
        subscribers.push(tokio::spawn(async move {
            let mut stream = ps.on_message();
            while let Some(msg) = stream.next().await {
                let payload: String = msg.get_payload().unwrap();
                let _ = tx.send((pod.clone(), payload, Instant::now()));
            }
        }));
    }
    // The Lease's holder as the API has it, sampled every millisecond: when the change
    // happened.
    let store = g.cluster.server.store();
    let holder_of = move || {
        store
            .read()
            .unwrap()
            .get("leases", "default", "redis")
            .and_then(|l| {
                l.pointer("/spec/holderIdentity")?
                    .as_str()
                    .map(str::to_string)
            })
    };
    let watcher = {
        let old = old.clone();
        tokio::spawn(async move {
            loop {
                if holder_of().is_some_and(|h| h != old) {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let (ok, out) = g.switchover().await;
    assert!(ok, "{out}");
    let changed_at = watcher.await.unwrap();
    let (new, new_ip) = g.converged(Duration::from_secs(60)).await.unwrap();
    assert_ne!(new, old);
    let want = format!("mymaster {old_ip} {REDIS_PORT} {new_ip} {REDIS_PORT}");
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while got.len() < 3 {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            _ => panic!("only {got:?} within 10 s\n{}", g.logs(30)),
        }
    }
    // No second message for the same change.
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        panic!("a second message: {extra:?} after {got:?}");
    }
    let pods: BTreeSet<&str> = got.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(pods.len(), 3, "one message from each endpoint: {got:?}");
    let mut after = Vec::new();
    for (pod, payload, at) in &got {
        assert_eq!(payload, &want, "{pod}");
        let late = at.saturating_duration_since(changed_at);
        after.push((pod.clone(), late));
        // Behaviour: announced on the Lease change (its watch), not on some later poll. The
        // figures (milliseconds) are printed; a loaded machine must not fail the test.
        assert!(
            late < Duration::from_secs(1),
            "{pod} announced {late:?} after the change"
        );
    }
    eprintln!("+switch-master after the Lease change: {after:?}");
    for s in subscribers {
        s.abort();
    }
    g.stop().await;
}

/// Reads what the endpoint sends until it closes the connection (or 5 s pass).
async fn read_to_close(sock: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_errors_and_changes_nothing() {
    use harness::cluster::Overrides;
    use tokio::io::AsyncWriteExt;
    let g = KubeGroup::start_with(
        3,
        &Profile::fast(),
        &Overrides {
            sidecar_env: vec![("SENTINEL_MAX_CLIENTS", "20")],
            ..Default::default()
        },
    )
    .await;
    let (leader, _) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("no leader: {e}\n{}", g.logs(40)));
    let epoch = g.epoch();
    let ep = endpoint(&g, &leader);
    // Malformed RESP: Redis' protocol errors, then the connection closes.
    for (bytes, want) in [
        (
            b"*1\r\n$999999999\r\n".to_vec(),
            "-ERR Protocol error: invalid bulk length",
        ),
        (
            b"*99999999\r\n".to_vec(),
            "-ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\n:5\r\n".to_vec(),
            "-ERR Protocol error: expected '$', got ':'",
        ),
        (
            vec![b'x'; 2 << 20],
            "-ERR Protocol error: too big inline request",
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(ep).await.unwrap();
        let _ = s.write_all(&bytes).await;
        let got = read_to_close(&mut s).await;
        assert!(got.starts_with(want), "{want}: got {got:?}");
    }
    // Unknown commands and wrong arity: errors, the connection stays usable.
    let mut c = conn(ep, false).await;
    assert!(
        ask(&mut c, &["FLUSHALL"])
            .await
            .unwrap_err()
            .contains("unknown command")
    );
    assert!(
        ask(&mut c, &["SENTINEL", "master"])
            .await
            .unwrap_err()
            .contains("wrong number of arguments")
    );
    assert_eq!(text(&ask(&mut c, &["PING"]).await.unwrap()), "PONG");
    // Idle connections up to the limit; the next is refused; closing them frees the room.
    let mut idle = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let mut s = tokio::net::TcpStream::connect(ep).await.unwrap();
        s.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        if reply.starts_with("-ERR max number of clients reached") {
            break idle.len();
        }
        assert_eq!(reply, "+PONG\r\n");
        idle.push(s);
        assert!(Instant::now() < deadline && idle.len() <= 25, "no limit");
    };
    // The limit counts every connection (the redis-rs one above included).
    assert!((18..=20).contains(&refused), "refused after {refused}");
    drop(idle);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = conn(ep, false).await;
        if ask(&mut c, &["PING"]).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint never took a client again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The election did not notice.
    assert_eq!(g.holder().as_deref(), Some(leader.as_str()));
    assert_eq!(g.epoch(), epoch);
    g.stop().await;
}
