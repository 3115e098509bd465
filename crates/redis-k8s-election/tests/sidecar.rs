//! The sidecar for real: kubesim's API server, three `redis-server` processes and three
//! sidecar processes (the real binary), each pod on its own loopback address. A checker samples
//! invariant 1 throughout each test.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_redis-k8s-election");
const TOKEN: &str = "T";
/// Redis starts fenced (as the shipped manifests start it): undecided means read-only from
/// its first instant, and only a promotion unfences it.
const REDIS_ARGS: &[&str] = &[
    "--repl-diskless-sync-delay",
    "0",
    "--min-replicas-to-write",
    "2147483647",
];
const FAST: &[&str] = &[
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "250ms",
    "--request-timeout",
    "500ms",
    "--redis-timeout",
    "150ms",
];

struct Sidecar {
    child: Child,
    http: SocketAddr,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Group {
    api: kubesim::ApiServer,
    /// Held for the test's length: group tests run one at a time, so that timing on the
    /// two-core machine does not depend on how many groups run beside.
    _serial: tokio::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    redis: Vec<Option<RedisServer>>,
    sidecars: Vec<Option<Sidecar>>,
    http: reqwest::Client,
    kube: kube::Client,
}

fn name(i: usize) -> String {
    format!("redis-{i}")
}

fn token(i: usize) -> String {
    format!("sidecar-{i}")
}

impl Group {
    async fn start(n: usize) -> Self {
        // One token per sidecar, so that faults can target one pod's API access.
        let mut config = kubesim::Config::new("127.0.0.1:0".parse().unwrap(), TOKEN);
        config.admin_tokens.extend((0..n).map(token));
        let api = kubesim::ApiServer::start(config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"), TOKEN, "default")
            .unwrap();
        for i in 0..n {
            api.write_kubeconfig(
                &dir.path().join(format!("kubeconfig-{i}")),
                &token(i),
                "default",
            )
            .unwrap();
        }
        let kc = kube::config::Kubeconfig::read_from(dir.path().join("kubeconfig")).unwrap();
        let kube = kube::Client::try_from(
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap(),
        )
        .unwrap();
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "redis-leader"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379}]}}))
        .unwrap();
        kube::Api::<Service>::default_namespaced(kube.clone())
            .create(&Default::default(), &svc)
            .await
            .unwrap();
        static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let serial = SERIAL.lock().await;
        let mut g = Group {
            api,
            _serial: serial,
            dir,
            redis: Vec::new(),
            sidecars: Vec::new(),
            http: reqwest::Client::new(),
            kube,
        };
        for i in 0..n {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name(i), "labels": {"app": "redis", "statefulset.kubernetes.io/pod-name": name(i)}},
                "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}})).unwrap();
            kube::Api::<Pod>::default_namespaced(g.kube.clone())
                .create(&Default::default(), &pod)
                .await
                .unwrap();
            g.redis.push(Some(RedisServer::start(REDIS_ARGS)));
            g.sidecars.push(None);
            g.start_sidecar(i);
        }
        g
    }

    fn redis_addr(&self, i: usize) -> String {
        self.redis[i]
            .as_ref()
            .map(|r| r.addr.to_string())
            .unwrap_or_default()
    }

    fn start_sidecar(&mut self, i: usize) {
        let http = testkit::free_loopback_addr();
        let log = std::fs::File::create(self.dir.path().join(format!("sidecar-{i}.log"))).unwrap();
        let addr = self.redis_addr(i);
        let child = Command::new(BIN)
            .arg("sidecar")
            .args([
                "--kubeconfig",
                self.dir
                    .path()
                    .join(format!("kubeconfig-{i}"))
                    .to_str()
                    .unwrap(),
            ])
            .args([
                "--lease-name",
                "redis",
                "--pod-name",
                &name(i),
                "--redis-addr",
                &addr,
                "--announce-addr",
                &addr,
            ])
            .args([
                "--leader-service",
                "redis-leader",
                "--http-addr",
                &http.to_string(),
            ])
            .args(FAST)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.sidecars[i] = Some(Sidecar { child, http });
    }

    async fn status(&self, i: usize) -> Option<Value> {
        let s = self.sidecars[i].as_ref()?;
        let r = self
            .http
            .get(format!("http://{}/status", s.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    async fn code(&self, i: usize, path: &str, head: bool) -> u16 {
        let Some(s) = self.sidecars[i].as_ref() else {
            return 0;
        };
        let url = format!("http://{}{path}", s.http);
        let rb = if head {
            self.http.head(url)
        } else {
            self.http.get(url)
        };
        rb.timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    async fn holder(&self) -> Option<String> {
        let l = kube::Api::<Lease>::default_namespaced(self.kube.clone())
            .get_opt("redis")
            .await
            .ok()??;
        l.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    async fn selector(&self) -> Option<String> {
        let s = kube::Api::<Service>::default_namespaced(self.kube.clone())
            .get("redis-leader")
            .await
            .ok()?;
        s.spec?
            .selector?
            .get("statefulset.kubernetes.io/pod-name")
            .cloned()
    }

    /// Waits until one live sidecar leads, every live sidecar is ready and agrees, and the
    /// Service routes to the leader; returns the leader's index.
    async fn converged(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.converged_now().await {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not converge; logs in {}:\n{}",
                self.dir.path().display(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn converged_now(&self) -> Option<usize> {
        let holder = self.holder().await?;
        let mut leader = None;
        for i in 0..self.sidecars.len() {
            if self.sidecars[i].is_none() || self.redis[i].is_none() {
                continue;
            }
            let st = self.status(i).await?;
            if st["ready"] != true || st["leader"] != holder.as_str() {
                return None;
            }
            if st["role"] == "leader" {
                leader = Some(i);
            }
        }
        let i = leader?;
        (self.selector().await.as_deref() == Some(name(i).as_str())).then_some(i)
    }

    fn logs(&self) -> String {
        (0..self.sidecars.len())
            .map(|i| {
                let text =
                    std::fs::read_to_string(self.dir.path().join(format!("sidecar-{i}.log")))
                        .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- sidecar {i}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Samples which Redis instances accept writes (master and not fenced) every few ms. A
/// violation is two writable instances in two consecutive rounds (one round probes the nodes
/// one after another, so a single round can straddle a hand-over).
struct Checker {
    stop: Arc<AtomicBool>,
    violations: Arc<AtomicUsize>,
    rounds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Checker {
    fn start(addrs: Vec<SocketAddr>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(AtomicUsize::new(0));
        let rounds = Arc::new(AtomicUsize::new(0));
        let (s, v, r) = (stop.clone(), violations.clone(), rounds.clone());
        let task = tokio::spawn(async move {
            let nodes: Vec<redis_node::RedisNode> = addrs
                .iter()
                .map(|a| {
                    let mut c = redis_node::NodeConfig::new(a.ip().to_string(), a.port());
                    c.timeout = Duration::from_millis(200);
                    redis_node::RedisNode::new(c).unwrap()
                })
                .collect();
            let mut previous_double = false;
            while !s.load(Ordering::Relaxed) {
                let mut writable = 0;
                for n in &nodes {
                    if let Ok(p) = n.probe().await
                        && p.info.role == redis_node::info::Role::Master
                        && !p.fenced
                    {
                        writable += 1;
                    }
                }
                let double = writable > 1;
                if double && previous_double {
                    v.fetch_add(1, Ordering::Relaxed);
                }
                previous_double = double;
                r.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            stop,
            violations,
            rounds,
            task,
        }
    }

    /// Stops after at least `min_rounds` complete rounds (so the check is never vacuous).
    async fn finish(self) -> (usize, usize) {
        let min_rounds = 3;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.rounds.load(Ordering::Relaxed) < min_rounds {
            assert!(Instant::now() < deadline, "the checker made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.violations.load(Ordering::Relaxed),
            self.rounds.load(Ordering::Relaxed),
        )
    }
}

fn addrs(g: &Group) -> Vec<SocketAddr> {
    g.redis.iter().flatten().map(|r| r.addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_election_routes_replicates_and_reports() {
    let g = Group::start(3).await;
    let checker = Checker::start(addrs(&g));
    let leader = g.converged(Duration::from_secs(30)).await;
    let lr = g.redis[leader].as_ref().unwrap();
    assert_eq!(
        lr.command(&["SET", "k", "v1"]).unwrap(),
        "+OK",
        "the leader takes writes"
    );
    for i in (0..3).filter(|i| *i != leader) {
        let r = g.redis[i].as_ref().unwrap();
        assert!(
            r.command(&["SET", "x", "1"])
                .unwrap()
                .starts_with("-READONLY"),
            "replicas refuse writes"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.command(&["GET", "k"]).as_deref() != Some("v1") {
            assert!(Instant::now() < deadline, "replica {i} never got the write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(g.code(i, "/replica", true).await, 200);
        assert_eq!(g.code(i, "/leader", false).await, 503);
    }
    assert_eq!(g.code(leader, "/leader", true).await, 200);
    assert_eq!(g.code(leader, "/livez", false).await, 200);
    let st = g.status(leader).await.unwrap();
    assert_eq!(st["role"], "leader");
    assert_eq!(st["redis"]["role"], "master");
    assert!(st["epoch"].is_u64());
    let metrics = g
        .http
        .get(format!(
            "http://{}/metrics",
            g.sidecars[leader].as_ref().unwrap().http
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("redis_election_role{role=\"leader\"} 1"),
        "{metrics}"
    );
    // Role labels on every pod, and a Promoted Event.
    let pods = kube::Api::<Pod>::default_namespaced(g.kube.clone())
        .list(&Default::default())
        .await
        .unwrap();
    for p in pods.items {
        let role = p.metadata.labels.unwrap()["redis-role"].clone();
        assert_eq!(
            role == "leader",
            p.metadata.name.as_deref() == Some(name(leader).as_str())
        );
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::default_namespaced(g.kube.clone());
    let evs = events.list(&Default::default()).await.unwrap();
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Promoted")),
        "a Promoted Event"
    );
    let (violations, rounds) = checker.finish().await;
    assert_eq!(violations, 0, "two writable masters in {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_redis_killed_fails_over_to_a_replica() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    g.redis[leader]
        .as_ref()
        .unwrap()
        .command(&["SET", "k", "before"])
        .unwrap();
    // Replication is asynchronous: wait until both replicas hold the write before the kill.
    // (WAIT would only count acknowledgements on the writing connection.)
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in (0..3).filter(|i| *i != leader) {
        while g.redis[i]
            .as_ref()
            .unwrap()
            .command(&["GET", "k"])
            .as_deref()
            != Some("before")
        {
            assert!(Instant::now() < deadline, "replica {i} never got the write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    g.redis[leader].as_mut().unwrap().kill();
    g.redis[leader] = None;
    let new = g.converged(Duration::from_secs(20)).await;
    assert_ne!(new, leader);
    let nr = g.redis[new].as_ref().unwrap();
    assert_eq!(
        nr.command(&["GET", "k"]).unwrap(),
        "before",
        "the new leader has the data; logs:\n{}",
        g.logs()
    );
    assert_eq!(nr.command(&["SET", "k", "after"]).unwrap(), "+OK");
    let (violations, rounds) = checker.finish().await;
    assert_eq!(violations, 0, "two writable masters in {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sidecar_killed_lease_expires_and_old_master_is_fenced() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    // The sidecar dies; its Redis lives on as a master.
    g.sidecars[leader] = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let new = loop {
        if let Some(h) = g.holder().await
            && h != name(leader)
        {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no takeover after the lease expired:\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let converged = g.converged(Duration::from_secs(20)).await;
    assert_eq!(name(converged), new);
    // The new leader fenced the old master before promoting itself.
    let old = g.redis[leader].as_ref().unwrap();
    let reply = old.command(&["SET", "k", "x"]).unwrap();
    assert!(
        reply.starts_with("-NOREPLICAS") || reply.starts_with("-READONLY"),
        "old master still writable: {reply}"
    );
    assert_eq!(g.selector().await.as_deref(), Some(new.as_str()));
    let (violations, rounds) = checker.finish().await;
    assert_eq!(violations, 0, "two writable masters in {rounds} rounds");
}

#[test]
fn configuration_errors_exit_2_naming_the_flag() {
    for (args, flag) in [
        (
            vec![
                "--lease-name",
                "r",
                "--pod-name",
                "p",
                "--pod-ip",
                "1.2.3.4",
                "--lease-duration",
                "5s",
            ],
            "--lease-duration",
        ),
        (
            vec![
                "--lease-name",
                "r",
                "--pod-name",
                "p",
                "--pod-ip",
                "1.2.3.4",
                "--redis-addr",
                "x",
            ],
            "--redis-addr",
        ),
        (vec!["--pod-name", "p"], "--lease-name"),
        (
            vec!["--lease-name", "r", "--pod-name", "p"],
            "--announce-addr",
        ),
        (
            vec![
                "--lease-name",
                "r",
                "--pod-name",
                "p",
                "--pod-ip",
                "1.2.3.4",
                "--kubeconfig",
                "/nonexistent",
            ],
            "--kubeconfig",
        ),
    ] {
        let out = Command::new(BIN)
            .arg("sidecar")
            .args(&args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(flag),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits until the Lease names someone other than `old`; returns the new holder.
async fn takeover(g: &Group, old: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(h) = g.holder().await
            && h != name(old)
        {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "no takeover from {}:\n{}",
            name(old),
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn refuses_writes(r: &RedisServer) -> bool {
    let reply = r.command(&["SET", "probe", "x"]).unwrap_or_default();
    reply.starts_with("-NOREPLICAS") || reply.starts_with("-READONLY")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader_sidecar_is_fenced_remotely_then_fences_itself_and_follows() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    let pid = g.sidecars[leader].as_ref().unwrap().child.id();
    signal(pid, "-STOP");
    // Its Redis keeps running and stays a master; the new leader must fence it first.
    let new = takeover(&g, leader, Duration::from_secs(20)).await;
    // The new holder fences the old master right after winning the Lease and before it
    // promotes itself (the checker verifies the order): wait for the fence.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refuses_writes(g.redis[leader].as_ref().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the stopped leader's Redis was never fenced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(pid, "-CONT");
    // On resume it fences first, sees the new holder and follows it.
    let converged = g.converged(Duration::from_secs(20)).await;
    assert_eq!(name(converged), new);
    let st = g.status(leader).await.unwrap();
    assert_eq!(st["role"], "replica", "{st}");
    assert_eq!(st["leader"], new.as_str());
    let (violations, rounds) = checker.finish().await;
    assert_eq!(violations, 0, "two writable masters in {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_off_from_the_api_fences_itself_before_anyone_takes_over() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    // Clients still reach its Redis; only its API access is gone.
    let cut = g.api.faults().add(kubesim::Fault {
        token: Some(token(leader)),
        blackhole: true,
        ..Default::default()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fenced_first = false;
    loop {
        let fenced = refuses_writes(g.redis[leader].as_ref().unwrap());
        if let Some(h) = g.holder().await
            && h != name(leader)
        {
            // The takeover is seen only after the old leader had already fenced itself.
            assert!(
                fenced_first || fenced,
                "a new leader while the old one still took writes"
            );
            break;
        }
        fenced_first |= fenced;
        assert!(Instant::now() < deadline, "no takeover:\n{}", g.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fenced_first,
        "the cut-off leader did not fence itself before the lease expired"
    );
    g.api.faults().remove(cut);
    let converged = g.converged(Duration::from_secs(20)).await;
    assert_ne!(converged, leader);
    let (violations, rounds) = checker.finish().await;
    assert_eq!(violations, 0, "two writable masters in {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_restarted_empty_does_not_win() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    g.redis[leader]
        .as_ref()
        .unwrap()
        .command(&["SET", "k", "data"])
        .unwrap();
    let replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for &i in &replicas {
        while g.redis[i]
            .as_ref()
            .unwrap()
            .command(&["GET", "k"])
            .as_deref()
            != Some("data")
        {
            assert!(Instant::now() < deadline, "replica {i} never got the write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The replica that would win a tie by name restarts empty, then the leader's Redis dies.
    let empty = replicas[0];
    let addr = g.redis[empty].as_ref().unwrap().addr;
    g.redis[empty].as_mut().unwrap().kill();
    g.redis[empty] = Some(RedisServer::start_at(addr, REDIS_ARGS));
    g.redis[leader].as_mut().unwrap().kill();
    g.redis[leader] = None;
    let new = g.converged(Duration::from_secs(20)).await;
    assert_eq!(new, replicas[1], "the empty Redis won; logs:\n{}", g.logs());
    assert_eq!(
        g.redis[new]
            .as_ref()
            .unwrap()
            .command(&["GET", "k"])
            .unwrap(),
        "data"
    );
    // The restarted one rejoined as a replica of the new leader and got the data back.
    assert_eq!(
        g.redis[empty]
            .as_ref()
            .unwrap()
            .command(&["GET", "k"])
            .unwrap(),
        "data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_and_latency_below_the_renew_deadline_cause_no_failover() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let epoch = g.status(leader).await.unwrap()["epoch"].clone();
    let faults = g.api.faults();
    // Slow answers (below the 500 ms request timeout) for everyone, for a while...
    let slow = faults.add(kubesim::Fault {
        latency_ms: Some(200),
        ..Default::default()
    });
    // ...and the leader's writes failing (500s, then conflicts) for well under the 2 s
    // renew deadline.
    let errors = faults.add(kubesim::Fault {
        token: Some(token(leader)),
        error: Some(kubesim::ErrorFault {
            code: 500,
            writes_only: true,
            rate: 1.0,
            retry_after_seconds: None,
        }),
        ..Default::default()
    });
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(g.holder().await.as_deref(), Some(name(leader).as_str()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    faults.remove(errors);
    let conflicts = faults.add(kubesim::Fault {
        token: Some(token(leader)),
        error: Some(kubesim::ErrorFault {
            code: 409,
            writes_only: true,
            rate: 1.0,
            retry_after_seconds: None,
        }),
        ..Default::default()
    });
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(g.holder().await.as_deref(), Some(name(leader).as_str()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    faults.remove(conflicts);
    faults.remove(slow);
    let after = g.converged(Duration::from_secs(20)).await;
    assert_eq!(after, leader, "a failover happened");
    assert_eq!(
        g.status(leader).await.unwrap()["epoch"],
        epoch,
        "the epoch changed"
    );
}
