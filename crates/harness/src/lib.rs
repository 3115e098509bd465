//! The harness of redis-k8s-election's tests and benches (an ordinary dependency of theirs,
//! never published):
//! * two fidelities of a group, both on kubesim's [`kubesim::cluster::Cluster`]:
//!   * [`Group`]: the cluster without a node. Pods are written by hand, and `redis-server`
//!     and sidecar processes (the real binary) are started here with the flags a test
//!     chooses, each pod on its own loopback address; a [`Checker`] samples invariant 1 (at
//!     most one writable master);
//!   * [`cluster::KubeGroup`]: the shipped manifests run by the whole cluster (kubelet,
//!     controllers, Service proxy);
//! * [`measure`]: the writers that record acknowledgements, lost writes, gaps, percentiles;
//! * [`faults`]: the seeded fault schedule and its runner.
//!
//! `testkit` stays the small leaf for processes and `redis-server`.

pub mod chart;
pub mod cluster;
pub mod faults;
pub mod measure;

pub use measure::{Ack, ClientWriter, Route, longest_gap, longest_gap_within};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::RedisServer;

/// The `redis-k8s-election` binary under test.
///
/// Cargo tells only the binary's own package's tests and benches where it is
/// (`CARGO_BIN_EXE_…`, at compile time), and builds it before running them; they run from
/// `target/<profile>/deps/`, the binary sits in `target/<profile>/`. So this harness finds it
/// next to the running test, as `assert_cmd`'s `cargo_bin` does; `REDIS_K8S_ELECTION_BIN`
/// overrides that.
pub static BIN: std::sync::LazyLock<std::path::PathBuf> = std::sync::LazyLock::new(|| {
    if let Some(path) = std::env::var_os("REDIS_K8S_ELECTION_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the running test's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("redis-k8s-election");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo test and cargo bench do) or set REDIS_K8S_ELECTION_BIN",
        bin.display()
    );
    bin
});
pub const TOKEN: &str = "T";
/// The sidecars' admin bearer token (switchover).
pub const ADMIN_TOKEN: &str = "admin-secret-for-the-tests";
/// Redis starts fenced (as the shipped manifests start it): undecided means read-only from
/// its first instant, and only a promotion unfences it.
///
/// Full syncs through disk, as the shipped manifests do (a diskless sync leaves the master
/// alone with every write for up to a second after it).
pub const REDIS_ARGS: &[&str] = &[
    "--repl-diskless-sync",
    "no",
    "--min-replicas-to-write",
    "2147483647",
];
pub const FAST: &[&str] = &[
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

pub struct Sidecar {
    pub child: Child,
    pub http: SocketAddr,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Group {
    /// kubesim's cluster without a node: the API server and the controllers; the pods are
    /// written by hand and their processes started here.
    pub cluster: kubesim::cluster::Cluster,
    /// The Redis password, when the group uses one.
    pub password: Option<String>,
    /// The sidecars run with a peer key, so failsafe is on (docs/sidecar.md).
    pub failsafe: bool,
    /// How each Redis persists its data, in a directory per pod that outlives its process.
    pub persistence: Persistence,
    /// Flags every sidecar started from now on gets besides the usual ones.
    pub sidecar_args: Vec<String>,
    /// Held for the test's length: group tests run one at a time, so that timing on the
    /// two-core machine does not depend on how many groups run beside.
    _serial: tokio::sync::MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    pub redis: Vec<Option<RedisServer>>,
    pub sidecars: Vec<Option<Sidecar>>,
    /// Each pod's sidecar HTTP address: a restarted sidecar keeps it, as a restarted
    /// container keeps its pod's IP and port.
    pub sidecar_http: Vec<Option<SocketAddr>>,
    pub http: reqwest::Client,
    pub kube: kube::Client,
    /// TLS, for groups started with [`Group::start_failsafe_tls`].
    pub tls: Option<GroupTls>,
}

/// A group's TLS: each Redis also listens on [`tls_addr`] of its address (the sidecars and
/// replication use that; the harness' observers keep the plain port), the sidecars get the
/// TLS flags and `--http-tls`, and the harness calls their APIs over HTTPS.
pub struct GroupTls {
    /// Holds `ca.crt`, `tls.crt` and `tls.key`.
    pub dir: std::path::PathBuf,
    /// How the harness calls the sidecars' APIs.
    pub api: redis_k8s_election::api_tls::ApiTls,
}

/// The one name the TLS group's certificate carries (given to the sidecars as
/// `--redis-tls-server-name`): pods are reached at loopback IPs no certificate names.
pub const TLS_NAME: &str = "group.redis.test";

/// The TLS port beside a Redis' plain address: the next port on the same unique loopback
/// address (nothing else binds it).
pub fn tls_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 1)
}

pub fn name(i: usize) -> String {
    format!("redis-{i}")
}

/// The index of pod `redis-N` (the inverse of [`name`]).
pub fn index_of(pod: &str) -> usize {
    pod.strip_prefix("redis-").unwrap().parse().unwrap()
}

pub fn token(i: usize) -> String {
    format!("sidecar-{i}")
}

/// How the group's Redis persist their data (the shipped manifests' modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// None: a restarted Redis is empty.
    None,
    /// AOF with `appendfsync everysec`, in `data-N` under the group's directory.
    Aof,
    /// RDB snapshots, in `data-N`; none automatic within a test (`save 3600 1`): the test
    /// takes them with `SAVE`.
    Rdb,
}

impl Persistence {
    fn redis_args(self) -> &'static [&'static str] {
        match self {
            Persistence::None => &[],
            Persistence::Aof => &["--appendonly", "yes", "--appendfsync", "everysec"],
            Persistence::Rdb => &["--save", "3600 1"],
        }
    }
}

/// How the sidecars reach the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Administrator tokens (`token(i)`), so faults can target one sidecar.
    Admin,
    /// Tokens of the ServiceAccount in `deploy/kubernetes/rbac.yaml`, RBAC enforced, with
    /// one Role rule optionally removed.
    ShippedRole {
        /// Index of the Role rule to remove.
        drop_rule: Option<usize>,
    },
}

/// The shipped RBAC manifest's path.
pub fn shipped_rbac() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/rbac.yaml")
}

/// Creates the shipped ServiceAccount, Role and RoleBinding with kubectl (which turns the YAML
/// into JSON), then removes one Role rule if asked.
async fn load_shipped_rbac(
    api: &kubesim::ApiServer,
    kubeconfig: &std::path::Path,
    drop_rule: Option<usize>,
) {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["create", "--validate=false", "-f"])
        .arg(shipped_rbac())
        .output()
        .await
        .expect("kubectl on PATH");
    assert!(
        out.status.success(),
        "kubectl create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(i) = drop_rule {
        api.with_store(|store| {
            let role = store
                .get("roles", "default", "redis-k8s-election")
                .expect("the shipped Role");
            let mut role = (*role).clone();
            role["rules"].as_array_mut().expect("rules").remove(i);
            store.put(
                "roles",
                ("default".into(), "redis-k8s-election".into()),
                role,
            );
        });
    }
}

/// The number of Role rules in the shipped manifest.
pub fn shipped_rule_count() -> usize {
    std::fs::read_to_string(shipped_rbac())
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- apiGroups:"))
        .count()
}

impl Group {
    /// The API server.
    pub fn api(&self) -> &kubesim::ApiServer {
        &self.cluster.server
    }

    /// A group whose sidecars use administrator tokens.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Access::Admin).await
    }

    /// A group whose sidecars use the given access.
    pub async fn start_with(n: usize, access: Access) -> Self {
        Self::start_full(n, access, None).await
    }

    /// A group whose Redis require `password` (given to the sidecars as a file).
    pub async fn start_with_password(n: usize, password: &str) -> Self {
        Self::start_full(n, Access::Admin, Some(password)).await
    }

    /// A group whose sidecars share a peer key: failsafe on, as the shipped manifests run.
    pub async fn start_failsafe(n: usize) -> Self {
        Self::start_opts(n, Access::Admin, None, true, Persistence::None, false).await
    }

    /// [`Group::start_failsafe`] with TLS everywhere the sidecars talk ([`GroupTls`]).
    pub async fn start_failsafe_tls(n: usize) -> Self {
        Self::start_opts(n, Access::Admin, None, true, Persistence::None, true).await
    }

    /// A group whose Redis persist their data as `persistence` says.
    pub async fn start_persistent(n: usize, persistence: Persistence) -> Self {
        Self::start_opts(n, Access::Admin, None, false, persistence, false).await
    }

    async fn start_full(n: usize, access: Access, password: Option<&str>) -> Self {
        Self::start_opts(n, access, password, false, Persistence::None, false).await
    }

    async fn start_opts(
        n: usize,
        access: Access,
        password: Option<&str>,
        failsafe: bool,
        persistence: Persistence,
        tls: bool,
    ) -> Self {
        // One token per sidecar, so that faults can target one pod's API access.
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("cluster");
        std::fs::create_dir_all(&state).unwrap();
        let mut config = kubesim::cluster::ClusterConfig::new("127.0.0.1".parse().unwrap(), state);
        config.extra_admin_tokens = std::iter::once(TOKEN.to_string())
            .chain((0..n).map(token))
            .collect();
        let cluster = kubesim::cluster::Cluster::start(config, &[]).await.unwrap();
        let api = &cluster.server;
        api.write_kubeconfig(&dir.path().join("kubeconfig"), TOKEN, "default")
            .unwrap();
        if let Access::ShippedRole { drop_rule } = access {
            load_shipped_rbac(api, &dir.path().join("kubeconfig"), drop_rule).await;
        }
        for i in 0..n {
            let tok = match access {
                Access::Admin => token(i),
                // Each sidecar its own token for the shipped ServiceAccount.
                Access::ShippedRole { .. } => api
                    .issue_token("default", "redis", Duration::from_secs(3600))
                    .unwrap(),
            };
            api.write_kubeconfig(&dir.path().join(format!("kubeconfig-{i}")), &tok, "default")
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
        let tls = tls.then(|| {
            let ca = kubesim::tls::Ca::generate("group test CA").unwrap();
            let (cert, key) = ca.issue(&[TLS_NAME]).unwrap();
            let tls_dir = dir.path().join("tls");
            std::fs::create_dir_all(&tls_dir).unwrap();
            std::fs::write(tls_dir.join("ca.crt"), ca.pem()).unwrap();
            std::fs::write(tls_dir.join("tls.crt"), cert).unwrap();
            std::fs::write(tls_dir.join("tls.key"), key).unwrap();
            GroupTls {
                dir: tls_dir,
                api: redis_k8s_election::api_tls::ApiTls {
                    ca_pem: ca.pem().into_bytes(),
                    name: TLS_NAME.into(),
                },
            }
        });
        let http = redis_k8s_election::api_tls::builder(tls.as_ref().map(|t| &t.api))
            .unwrap()
            .build()
            .unwrap();
        let mut g = Group {
            cluster,
            _serial: serial,
            dir,
            redis: Vec::new(),
            password: password.map(str::to_string),
            failsafe,
            persistence,
            sidecar_args: Vec::new(),
            sidecars: Vec::new(),
            sidecar_http: Vec::new(),
            http,
            kube,
            tls,
        };
        for i in 0..n {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name(i), "labels": {"app": "redis", "statefulset.kubernetes.io/pod-name": name(i)}},
                "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}})).unwrap();
            kube::Api::<Pod>::default_namespaced(g.kube.clone())
                .create(&Default::default(), &pod)
                .await
                .unwrap();
            let addr = testkit::free_loopback_addr();
            g.redis.push(Some(g.start_redis_for(i, addr)));
            g.sidecars.push(None);
            g.start_sidecar(i);
            // The node's part: the pod IP, which the sidecar API's published address must be
            // on for peers and the CLI to use it (`kube_coord::Peer::vouched_http`).
            let ip = g.sidecar_http[i].expect("the sidecar has an address").ip();
            kube::Api::<Pod>::default_namespaced(g.kube.clone())
                .patch_status(
                    &name(i),
                    &Default::default(),
                    &kube::api::Patch::Merge(json!({"status": {"podIP": ip.to_string()}})),
                )
                .await
                .unwrap();
        }
        g
    }

    /// A client writing `RPUSH log N` every 2 ms to the Redis the leader Service selects,
    /// recording each acknowledgement.
    pub fn writer(&self) -> ClientWriter {
        let pods = (0..self.redis.len())
            .map(|i| {
                self.redis_addr(i)
                    .parse()
                    .expect("every pod has a Redis address")
            })
            .collect();
        ClientWriter::start(
            Route::Selector {
                kube: self.kube.clone(),
                service: "redis-leader".into(),
                pods,
            },
            self.password.clone(),
            "log".into(),
        )
    }

    pub fn redis_addr(&self, i: usize) -> String {
        self.redis[i]
            .as_ref()
            .map(|r| r.addr.to_string())
            .unwrap_or_default()
    }

    /// An empty `redis-server` at `addr` (first start, or a restart "in the same pod"),
    /// started as the shipped manifests start it: fenced, and a replica of itself, so that a
    /// restarted (empty) Redis serves no full sync to peers that still point at it; with the
    /// password if any.
    pub fn start_redis_at(&self, addr: SocketAddr) -> RedisServer {
        let args = self.base_redis_args(addr);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_at(addr, &args)
    }

    fn base_redis_args(&self, addr: SocketAddr) -> Vec<String> {
        let mut args: Vec<String> = REDIS_ARGS.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--replicaof".to_string(),
            addr.ip().to_string(),
            addr.port().to_string(),
        ]);
        if let Some(p) = &self.password {
            args.extend(["--requirepass".to_string(), p.clone()]);
        }
        if let Some(t) = &self.tls {
            let f = |n: &str| t.dir.join(n).display().to_string();
            args.extend([
                "--tls-port".to_string(),
                tls_addr(addr).port().to_string(),
                "--tls-cert-file".to_string(),
                f("tls.crt"),
                "--tls-key-file".to_string(),
                f("tls.key"),
                "--tls-ca-cert-file".to_string(),
                f("ca.crt"),
                "--tls-replication".to_string(),
                "yes".to_string(),
                "--tls-auth-clients".to_string(),
                "optional".to_string(),
            ]);
        }
        args
    }

    /// The URL of `path` on sidecar API `http`: HTTPS in a TLS group.
    fn api_url(&self, http: SocketAddr, path: &str) -> String {
        redis_k8s_election::api_tls::url(self.tls.as_ref().map(|t| &t.api), &http.to_string(), path)
    }

    /// Pod `i`'s Redis at `addr`, as [`Group::start_redis_at`] starts it, persisting into
    /// the pod's data directory when the group persists (a restart loads what it holds).
    pub fn start_redis_for(&self, i: usize, addr: SocketAddr) -> RedisServer {
        let mut args = self.base_redis_args(addr);
        if self.persistence != Persistence::None {
            let dir = self.data_dir(i);
            std::fs::create_dir_all(&dir).unwrap();
            args.extend(["--dir".to_string(), dir.display().to_string()]);
            args.extend(self.persistence.redis_args().iter().map(|s| s.to_string()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_at(addr, &args)
    }

    /// Pod `i`'s data directory (persistent groups): it outlives the pod's Redis, as a
    /// PersistentVolumeClaim outlives the pod.
    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("data-{i}"))
    }

    /// SIGKILLs every Redis, then every sidecar, as fast as one loop goes (a whole-group
    /// outage); returns the Redis addresses, for the restart.
    pub fn kill_all(&mut self) -> Vec<SocketAddr> {
        let addrs: Vec<SocketAddr> = self
            .redis
            .iter()
            .map(|r| r.as_ref().expect("every Redis runs").addr)
            .collect();
        for r in self.redis.iter_mut().flatten() {
            r.kill();
        }
        for s in self.sidecars.iter_mut() {
            *s = None; // dropping a sidecar SIGKILLs it and reaps it
        }
        for r in self.redis.iter_mut() {
            *r = None;
        }
        addrs
    }

    /// Restarts pod `i`'s Redis at `addr` (after a kill).
    pub fn restart_redis(&mut self, i: usize, addr: SocketAddr) {
        self.redis[i] = Some(self.start_redis_for(i, addr));
    }

    pub fn start_sidecar(&mut self, i: usize) {
        if self.sidecar_http.len() <= i {
            self.sidecar_http.resize(i + 1, None);
        }
        let http = *self.sidecar_http[i].get_or_insert_with(testkit::free_loopback_addr);
        let log = std::fs::File::create(self.dir.path().join(format!("sidecar-{i}.log"))).unwrap();
        // In a TLS group the sidecar (and so replication) uses the TLS port.
        let addr = match (&self.tls, self.redis[i].as_ref()) {
            (Some(_), Some(r)) => tls_addr(r.addr).to_string(),
            _ => self.redis_addr(i),
        };
        let tls_args: Vec<String> = match &self.tls {
            None => Vec::new(),
            Some(t) => {
                let f = |n: &str| t.dir.join(n).display().to_string();
                vec![
                    "--tls-ca-file".into(),
                    f("ca.crt"),
                    "--tls-cert-file".into(),
                    f("tls.crt"),
                    "--tls-key-file".into(),
                    f("tls.key"),
                    "--redis-tls-server-name".into(),
                    TLS_NAME.into(),
                    "--http-tls".into(),
                ]
            }
        };
        let child = Command::new(&*BIN)
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
            .args([
                "--admin-token-file",
                self.admin_token_file().to_str().unwrap(),
            ])
            .args(
                self.password
                    .as_ref()
                    .map(|p| {
                        let file = self.secret_file("redis-password", p);
                        vec![
                            "--redis-password-file".to_string(),
                            file.display().to_string(),
                        ]
                    })
                    .unwrap_or_default(),
            )
            .args(if self.failsafe {
                let file = self.secret_file("peer-key", "a peer key for the group tests");
                vec!["--peer-key-file".to_string(), file.display().to_string()]
            } else {
                Vec::new()
            })
            .args(&tls_args)
            .args(&self.sidecar_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.sidecars[i] = Some(Sidecar { child, http });
    }

    /// The admin token file every sidecar of the group accepts (written on first use).
    pub fn admin_token_file(&self) -> std::path::PathBuf {
        self.secret_file("admin-token", ADMIN_TOKEN)
    }

    /// The file `name` in the group's directory holding `secret`, written once and
    /// atomically (a temporary file renamed into place), as a kubelet swaps a Secret
    /// volume: running sidecars read these files while later ones start, and a file
    /// rewritten in place is empty for a moment (a fresh-clone CI run caught a sidecar
    /// reading the Redis password in that moment and never authenticating).
    fn secret_file(&self, name: &str, secret: &str) -> std::path::PathBuf {
        let file = self.dir.path().join(name);
        if !file.exists() {
            let tmp = self.dir.path().join(format!(".{name}.tmp"));
            std::fs::write(&tmp, format!("{secret}\n")).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        }
        file
    }

    /// Runs a CLI command of the real binary against this group (admin kubeconfig);
    /// returns success, stdout and stderr.
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new(&*BIN)
            .args(args)
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .env("ADMIN_TOKEN_FILE", self.admin_token_file())
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits until sidecar process `i` has exited by itself, asserts it exited 0, and
    /// forgets it.
    pub async fn wait_exited(&mut self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.sidecars[i].as_mut().unwrap().child.try_wait().unwrap() {
                assert!(st.success(), "sidecar {i} exited with {st:?}");
                self.sidecars[i] = None;
                return;
            }
            assert!(Instant::now() < deadline, "sidecar {i} did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn status(&self, i: usize) -> Option<Value> {
        let s = self.sidecars[i].as_ref()?;
        let r = self
            .http
            .get(self.api_url(s.http, "/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Writes `key` on the leader and waits (with a deadline) until every other live Redis
    /// has it: replication is asynchronous.
    pub async fn write_and_replicate(&self, leader: usize, key: &str, value: &str) {
        // The Lease names a new holder before its sidecar has promoted and unfenced its Redis:
        // write only once the sidecar says it leads with a writable master (its readiness).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let st = self.status(leader).await;
            if st
                .as_ref()
                .is_some_and(|s| s["role"] == "leader" && s["ready"] == true)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became a writable leader: {st:?}; logs:\n{}",
                name(leader),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reply = self.redis[leader]
            .as_ref()
            .unwrap()
            .command(&["SET", key, value]);
        assert_eq!(
            reply.as_deref(),
            Some("+OK"),
            "the leader refused the write"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        for (i, r) in self.redis.iter().enumerate().filter(|(i, _)| *i != leader) {
            let Some(r) = r else { continue };
            while r.command(&["GET", key]).as_deref() != Some(value) {
                assert!(
                    Instant::now() < deadline,
                    "replica {i} never got the write; logs:\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Sidecar `i`'s `/metrics` text; empty when it does not answer.
    pub async fn metrics(&self, i: usize) -> String {
        let Some(s) = self.sidecars[i].as_ref() else {
            return String::new();
        };
        let Ok(r) = self
            .http
            .get(self.api_url(s.http, "/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return String::new();
        };
        r.text().await.unwrap_or_default()
    }

    /// A sidecar's `redis_election_api_errors_total{kind=…}`.
    pub async fn api_errors(&self, i: usize, kind: &str) -> u64 {
        let text = self.metrics(i).await;
        let needle = format!("redis_election_api_errors_total{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub async fn code(&self, i: usize, path: &str, head: bool) -> u16 {
        let Some(s) = self.sidecars[i].as_ref() else {
            return 0;
        };
        let url = self.api_url(s.http, path);
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

    pub async fn holder(&self) -> Option<String> {
        let l = kube::Api::<Lease>::default_namespaced(self.kube.clone())
            .get_opt("redis")
            .await
            .ok()??;
        l.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    pub async fn selector(&self) -> Option<String> {
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
    pub async fn converged(&self, within: Duration) -> usize {
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

    pub async fn converged_now(&self) -> Option<usize> {
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

    pub fn logs(&self) -> String {
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
pub struct Checker {
    pub stop: Arc<AtomicBool>,
    pub violations: Arc<AtomicUsize>,
    pub rounds: Arc<AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Checker {
    pub fn start(addrs: Vec<SocketAddr>) -> Self {
        Self::start_with_password(addrs, None)
    }

    /// A checker that authenticates with `password`.
    pub fn start_with_password(addrs: Vec<SocketAddr>, password: Option<String>) -> Self {
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
                    c.password = password.clone();
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

    /// Stops the checker and asserts that no two Redis were writable at once.
    pub async fn assert_one_master_throughout(self) {
        let (violations, rounds) = self.finish().await;
        assert_eq!(violations, 0, "two writable masters in {rounds} rounds");
    }

    /// Stops after at least `min_rounds` complete rounds (so the check is never vacuous).
    pub async fn finish(self) -> (usize, usize) {
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

pub fn addrs(g: &Group) -> Vec<SocketAddr> {
    g.redis.iter().flatten().map(|r| r.addr).collect()
}

#[allow(unused_imports)] // not every includer of this harness sends signals
pub use testkit::signal;

/// Waits until the Lease names someone other than `old`; returns the new holder.
pub async fn takeover(g: &Group, old: usize, within: Duration) -> String {
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

pub fn refuses_writes(r: &RedisServer) -> bool {
    let reply = r.command(&["SET", "probe", "x"]).unwrap_or_default();
    reply.starts_with("-NOREPLICAS") || reply.starts_with("-READONLY")
}

/// A data-set size on a benchmark's command line: a number and `KiB`, `MiB` or `GiB`.
pub fn parse_size(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().expect("--sizes: a number and KiB, MiB or GiB");
    match unit {
        "KiB" => n << 10,
        "MiB" => n << 20,
        "GiB" => n << 30,
        other => panic!("--sizes: unknown unit {other:?}"),
    }
}

/// The value after `name` on a benchmark's command line (`--runs 5`), if any.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Asserts that every acknowledged write is in the list `log` on the Redis at `addr`.
pub async fn assert_none_lost(addr: &str, acks: &[Ack]) {
    let lost = lost_writes(addr, acks).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acks.len()
    );
}

/// Acknowledged writes missing from the list `log` on the Redis at `addr` (no password).
pub async fn lost_writes(addr: &str, acks: &[Ack]) -> Vec<u64> {
    let addr: SocketAddr = addr.parse().expect("a Redis address");
    measure::lost_writes(addr, None, "log", acks)
        .await
        .unwrap_or_else(|| panic!("the list `log` on {addr} cannot be read"))
}
