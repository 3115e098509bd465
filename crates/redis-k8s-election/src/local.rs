//! `redis-k8s-election local`: a whole HA group on one machine from the shipped manifests.
//!
//! kubesim's API server (RBAC enforced for the pods' service accounts), its StatefulSet
//! controller, kubelet and service proxy run in this process; the manifests are applied as
//! `kubectl apply -k` would; the pods are real `redis-server` processes and this binary as the
//! sidecar. Ctrl-C stops the pods as a node shutdown does and removes every file it made.

use crate::ctl::{self, GroupArgs};
use kubesim::cluster::{Cluster, ClusterConfig};
use kubesim::kubelet::plan::ImageRule;
use kubesim::manifest;
use kubesim::proxy::ServicePort;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why `local` could not run the group. Each names the flag or step to look at.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// `--state-dir` must be new: it is removed on exit.
    #[error("--state-dir {}: already exists (it is removed on exit, so it must be new)", .0.display())]
    StateDirExists(PathBuf),
    /// A file or directory cannot be made.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The manifests do not load.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// `--replicas` with manifests that have no StatefulSet.
    #[error("--replicas: the manifests have no StatefulSet")]
    NoStatefulSet,
    /// Something `local` needs is missing or taken; the message says what to install or
    /// change.
    #[error("{0}")]
    Prerequisite(String),
    /// The CA or certificate of `--tls` cannot be made.
    #[error("--tls: making the group's certificate: {0}")]
    Tls(String),
    /// kubesim, the pods or the Service ports did not start.
    #[error("starting the local cluster (--address, --api-port, --leader-port, --read-port)")]
    Cluster(#[source] kubesim::cluster::ClusterError),
}

type Result<T, E = LocalError> = std::result::Result<T, E>;

/// `println!` that never fails: `local`'s output may go to a pipe that has closed (`local |
/// head -1`, or a `| tee` that the same Ctrl-C ended), and `println!` would panic on the
/// broken pipe, which aborts a release build before it stops the pods and removes the state
/// directory (secrets included). What cannot be printed is dropped.
macro_rules! say {
    () => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// The shipped manifests (`deploy/kubernetes/`), built in so that `local` runs anywhere.
const SHIPPED: &[(&str, &str)] = &[
    (
        "kustomization.yaml",
        include_str!("../../../deploy/kubernetes/kustomization.yaml"),
    ),
    (
        "rbac.yaml",
        include_str!("../../../deploy/kubernetes/rbac.yaml"),
    ),
    (
        "networkpolicy.yaml",
        include_str!("../../../deploy/kubernetes/networkpolicy.yaml"),
    ),
    (
        "services.yaml",
        include_str!("../../../deploy/kubernetes/services.yaml"),
    ),
    (
        "statefulset.yaml",
        include_str!("../../../deploy/kubernetes/statefulset.yaml"),
    ),
    (
        "pdb.yaml",
        include_str!("../../../deploy/kubernetes/pdb.yaml"),
    ),
    (
        "persistence.yaml",
        include_str!("../../../deploy/kubernetes/persistence.yaml"),
    ),
    (
        "components/persistence-rdb/kustomization.yaml",
        include_str!("../../../deploy/kubernetes/components/persistence-rdb/kustomization.yaml"),
    ),
    (
        "components/persistence-none/kustomization.yaml",
        include_str!("../../../deploy/kubernetes/components/persistence-none/kustomization.yaml"),
    ),
    (
        "components/announce-pod-ip/kustomization.yaml",
        include_str!("../../../deploy/kubernetes/components/announce-pod-ip/kustomization.yaml"),
    ),
    (
        "components/tls/kustomization.yaml",
        include_str!("../../../deploy/kubernetes/components/tls/kustomization.yaml"),
    ),
];

/// The shipped component that turns on TLS (`local --tls`).
const TLS: &str = "components/tls";

/// The shipped component that makes pods announce their IPs instead of their DNS names.
const ANNOUNCE_POD_IP: &str = "components/announce-pod-ip";

/// `local --persistence`: the shipped manifests' persistence modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PersistenceMode {
    /// AOF, fsynced every second (the shipped default).
    Aof,
    /// RDB snapshots.
    Rdb,
    /// None: a cache.
    None,
}

impl PersistenceMode {
    /// The shipped component that selects this mode, if the default does not.
    fn component(self) -> Option<&'static str> {
        match self {
            PersistenceMode::Aof => None,
            PersistenceMode::Rdb => Some("components/persistence-rdb"),
            PersistenceMode::None => Some("components/persistence-none"),
        }
    }
}

/// The image the shipped StatefulSet names for the sidecar, and its entrypoint.
const SIDECAR_IMAGE: &str = "ghcr.io/redis-k8s-election/redis-k8s-election";
const SIDECAR_ENTRYPOINT: &str = "/redis-k8s-election";

/// How the kubelet runs the shipped images here: Debian's `redis-server` for Redis, and
/// `sidecar_program` (this binary) for the sidecar's image.
pub fn images(sidecar_program: &Path) -> Vec<ImageRule> {
    vec![
        ImageRule {
            repository: "docker.io/library/redis".into(),
            entrypoint: vec!["redis-server".into()],
            programs: Default::default(),
        },
        ImageRule {
            repository: SIDECAR_IMAGE.into(),
            entrypoint: vec![SIDECAR_ENTRYPOINT.into()],
            programs: [
                (
                    SIDECAR_ENTRYPOINT.to_string(),
                    sidecar_program.to_path_buf(),
                ),
                (
                    "redis-k8s-election".to_string(),
                    sidecar_program.to_path_buf(),
                ),
            ]
            .into(),
        },
    ]
}

/// `local` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// Pods in the group (kustomize's `replicas` on the StatefulSet); default: the manifests'.
    #[arg(long)]
    replicas: Option<usize>,
    /// A manifest directory (with a kustomization.yaml, or plain YAML files); default: the
    /// shipped `deploy/kubernetes/`.
    #[arg(long, conflicts_with = "empty")]
    manifests: Option<PathBuf>,
    /// Apply nothing: an empty cluster to `kubectl apply` manifests into.
    #[arg(long)]
    empty: bool,
    /// Address the API server and the Service ports listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Port of the API server (0: any free port).
    #[arg(long, default_value_t = 6443)]
    api_port: u16,
    /// Local port of the `redis-leader` Service (writes).
    #[arg(long, default_value_t = 6380)]
    leader_port: u16,
    /// Local port of the `redis` Service (reads from any ready pod).
    #[arg(long, default_value_t = 6381)]
    read_port: u16,
    /// Local port of the `redis-sentinel` Service (Sentinel clients; master name mymaster).
    #[arg(long, default_value_t = 26379)]
    sentinel_port: u16,
    /// Pod addresses: a loopback /24 (or smaller) whose hosts become pod IPs.
    #[arg(long, default_value = "127.0.10.0/24", value_parser = parse_pod_network)]
    pod_network: PodNetwork,
    /// Namespace of the group.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Directory for the kubeconfig and the pods' files; must not exist yet, and is removed on
    /// exit. Default: a new directory under the system's temporary directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Persistence mode of the shipped manifests (docs/deploy.md, "Persistence").
    #[arg(long, value_enum, default_value_t = PersistenceMode::Aof, conflicts_with_all = ["manifests", "empty"])]
    persistence: PersistenceMode,
    /// Keep the pods' PersistentVolumeClaims (their Redis data) in DIR after exit, and use
    /// what DIR holds from an earlier run: run `local --keep-data DIR` again for a cold
    /// restart of the whole group. Created if missing. Default: claims live in the state
    /// directory and are removed on exit.
    #[arg(long, value_name = "DIR")]
    keep_data: Option<PathBuf>,
    /// TLS for clients, replication, the sidecars and the Sentinel endpoint (the shipped
    /// `components/tls`): a CA and the group's certificate are made for this run, and the
    /// connection lines use `redis-cli --tls --cacert <state dir>/ca.crt`. Plain clients are
    /// refused.
    #[arg(long, conflicts_with_all = ["manifests", "empty"])]
    tls: bool,
}

/// The hosts of a loopback network, handed out as pod IPs, and its first host (the cluster
/// DNS server's address).
#[derive(Clone, Debug)]
pub struct PodNetwork {
    hosts: Vec<Ipv4Addr>,
    dns: Ipv4Addr,
}

fn parse_pod_network(s: &str) -> std::result::Result<PodNetwork, String> {
    let (ip, bits) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected a CIDR such as 127.0.10.0/24"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let bits: u32 = bits.parse().map_err(|e| format!("{s:?}: prefix: {e}"))?;
    if !ip.is_loopback() {
        return Err(format!(
            "{s:?}: pods live on loopback addresses (127.0.0.0/8)"
        ));
    }
    if !(16..=29).contains(&bits) {
        return Err(format!("{s:?}: the prefix must be between /16 and /29"));
    }
    let base = u32::from(ip) & (u32::MAX << (32 - bits));
    let size = 1u32 << (32 - bits);
    // .0 is the network, .1 is cluster DNS (a gateway in a cluster; 127.0.0.1 for
    // 127.0.0.0/24), the last is broadcast.
    let hosts: Vec<Ipv4Addr> = (2..size - 1).map(|i| Ipv4Addr::from(base + i)).collect();
    Ok(PodNetwork {
        hosts,
        dns: Ipv4Addr::from(base + 1),
    })
}

fn shipped_manifests(persistence: PersistenceMode, pod_dns: bool, tls: bool) -> Result<Vec<Value>> {
    let read = |name: &str| {
        SHIPPED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
            .ok_or_else(|| manifest::ManifestError::Object {
                path: format!("deploy/kubernetes/{name}"),
                message: "not among the shipped manifests".into(),
            })
    };
    let k = read("kustomization.yaml").expect("shipped");
    let mut extra: Vec<String> = persistence
        .component()
        .map(str::to_string)
        .into_iter()
        .collect();
    if !pod_dns {
        extra.push(ANNOUNCE_POD_IP.to_string());
    }
    if tls {
        extra.push(TLS.to_string());
    }
    Ok(manifest::load_kustomization(
        "deploy/kubernetes/kustomization.yaml",
        k,
        |r| manifest::parse_documents(&format!("deploy/kubernetes/{r}"), read(r)?),
        &|r| read(r).map(str::to_string),
        &extra,
    )?)
}

/// Sets the sidecars' `SENTINEL_ADDRESSES` to `ip` (`components/tls` sets `hostname`).
fn sentinel_hands_out_ips(objects: &mut [Value]) {
    for o in objects.iter_mut().filter(|o| o["kind"] == "StatefulSet") {
        let Some(containers) = o
            .pointer_mut("/spec/template/spec/containers")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for env in containers
            .iter_mut()
            .filter_map(|c| c.get_mut("env").and_then(Value::as_array_mut))
        {
            for e in env.iter_mut().filter(|e| e["name"] == "SENTINEL_ADDRESSES") {
                e["value"] = Value::from("ip");
            }
        }
    }
}

/// Writes `text` to a new file `path` with `mode`.
fn write_private(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io(format!("writing {}", path.display())))
}

/// Removes the state directory when `local` ends, however it ends.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_state_dir(chosen: Option<&Path>) -> Result<StateDir> {
    let dir = match chosen {
        Some(d) => {
            if d.exists() {
                return Err(LocalError::StateDirExists(d.to_path_buf()));
            }
            d.to_path_buf()
        }
        None => std::env::temp_dir().join(format!(
            "redis-k8s-election-local-{}",
            kubesim::random_token("")
                .chars()
                .take(10)
                .collect::<String>()
        )),
    };
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    // It holds the kubeconfig, tokens and the pods' Secret volumes: its owner's alone.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("restricting {}", dir.display())))?;
    Ok(StateDir(dir))
}

/// The leader Service's port reaches `leader` through the proxy: its only ready endpoint is
/// the leader pod's address.
fn leader_reachable(server: &kubesim::ApiServer, ns: &str, leader: &str) -> bool {
    server.with_store(|s| {
        let Some(ip) = s.get("pods", ns, leader).and_then(|p| {
            p.pointer("/status/podIP")
                .and_then(Value::as_str)
                .map(str::to_string)
        }) else {
            return false;
        };
        let sp = ServicePort {
            namespace: ns.into(),
            service: "redis-leader".into(),
            port: 6379,
        };
        let eps = kubesim::proxy::ready_endpoints(s, &sp);
        eps.len() == 1 && eps[0].ip().to_string() == ip
    })
}

/// A line per pod with kubectl's READY, STATUS, RESTARTS and IP (the same printer as
/// `kubectl get pods -o wide` against kubesim).
fn pod_lines(server: &kubesim::ApiServer, ns: &str) -> String {
    server.with_store(|s| {
        let mut out = String::new();
        for p in s.list("pods", Some(ns)) {
            let cells = kubesim::pod_cells(&p);
            let cell = |i: usize| cells.get(i).and_then(Value::as_str).unwrap_or_default();
            out.push_str(&format!(
                "  pod {:<10} {:<18} {} ready  {} restarts  {}\n",
                cell(0),
                cell(2),
                cell(1),
                cell(3),
                cell(5)
            ));
        }
        out
    })
}

/// The oldest Redis the sidecar works with: its ACL rules use key permissions (`%RW~`) and
/// it pauses writes with `CLIENT PAUSE … WRITE`, both Redis 7.0.
const MIN_REDIS: (u32, u32) = (7, 0);

/// `x.y.z` from `redis-server --version` (`Redis server v=7.0.15 sha=…`).
fn redis_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// What `local` needs, checked before anything starts, so that a missing program or a taken
/// port is a message naming it, not pods in CrashLoopBackOff with the cause only in their
/// Events.
fn preflight(a: &LocalArgs) -> Result<()> {
    let missing = |what: String| Err(LocalError::Prerequisite(what));
    if !a.empty {
        // The shipped image docker.io/library/redis runs as this machine's redis-server.
        match std::process::Command::new("redis-server")
            .arg("--version")
            .output()
        {
            Err(_) => {
                return missing(
                    "redis-server not found on PATH: the pods' Redis runs as this machine's redis-server. Install it (Debian: apt-get install redis-server redis-tools), or run scripts/local.sh, which does".into(),
                );
            }
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                match redis_version(&text) {
                    Some(v) if v >= MIN_REDIS => {}
                    Some((major, minor)) => {
                        return missing(format!(
                            "redis-server {major}.{minor} is too old: the sidecar needs Redis {}.{} or later (ACL key permissions, CLIENT PAUSE WRITE)",
                            MIN_REDIS.0, MIN_REDIS.1
                        ));
                    }
                    None => {
                        return missing(format!(
                            "redis-server --version said {:?}: not a Redis version this can read",
                            text.trim()
                        ));
                    }
                }
            }
        }
    }
    let mut ports = vec![("--api-port", a.api_port)];
    if !a.empty {
        ports.extend([
            ("--leader-port", a.leader_port),
            ("--read-port", a.read_port),
            ("--sentinel-port", a.sentinel_port),
        ]);
    }
    for (flag, port) in ports.into_iter().filter(|(_, p)| *p != 0) {
        if let Err(e) = std::net::TcpListener::bind((a.address, port)) {
            return missing(format!(
                "{}:{port} cannot be bound ({e}): another program (or another `local`) uses it; stop it, or pass {flag} with a free port or --address with another loopback address",
                a.address
            ));
        }
    }
    // The pod network: each pod listens on its own address from it.
    if let Some(first) = a.pod_network.hosts.first()
        && let Err(e) = std::net::TcpListener::bind((*first, 0))
    {
        return missing(format!(
            "pod address {first} cannot be bound ({e}): pass --pod-network with a loopback /24 this machine can use"
        ));
    }
    Ok(())
}

/// `redis-k8s-election local`.
pub async fn run(a: LocalArgs) -> Result<()> {
    let mut stop = crate::signals::Stop::install()
        .map_err(io("installing the SIGTERM/SIGINT/SIGHUP handlers"))?;
    preflight(&a)?;
    let state = make_state_dir(a.state_dir.as_deref())?;
    let keep_data = match &a.keep_data {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
            // Absolute: the kubelet's claim directories are linked into the pods' directories.
            Some(std::fs::canonicalize(d).map_err(io(format!("resolving {}", d.display())))?)
        }
        None => None,
    };
    let exe = std::env::current_exe().map_err(io("finding this binary (the sidecar's image)"))?;
    let config = ClusterConfig {
        namespace: a.namespace.clone(),
        address: a.address,
        api_port: a.api_port,
        pod_ips: a.pod_network.hosts.clone(),
        state_dir: state.0.clone(),
        images: images(&exe),
        proxies: vec![
            ("redis-leader".into(), 6379, a.leader_port),
            ("redis".into(), 6379, a.read_port),
            ("redis-sentinel".into(), 26379, a.sentinel_port),
        ],
        crash_backoff: None,
        dns_address: Some(IpAddr::V4(a.pod_network.dns)),
        node: true,
        extra_admin_tokens: Vec::new(),
        claims_dir: keep_data.clone(),
    };
    // Started empty: which manifests to apply depends on whether pods resolve DNS names.
    let mut cluster = Cluster::start(config, &[])
        .await
        .map_err(LocalError::Cluster)?;
    let objects = if a.empty {
        Vec::new()
    } else {
        let mut objects = match &a.manifests {
            Some(dir) => manifest::load_dir(dir)?,
            None => shipped_manifests(a.persistence, cluster.pod_dns(), a.tls)?,
        };
        if let Some(n) = a.replicas {
            let Some(name) = objects
                .iter()
                .find(|o| o["kind"] == "StatefulSet")
                .and_then(|o| o.pointer("/metadata/name").and_then(Value::as_str))
                .map(str::to_string)
            else {
                return Err(LocalError::NoStatefulSet);
            };
            manifest::set_replicas(&mut objects, &name, n);
        }
        // The manifests ship no credentials: this run's are made here, at random.
        let mut objects = crate::credentials::with_auth_secret(objects);
        if a.tls {
            // What cert-manager would make: a CA of this run's own and the group's
            // certificate, for the pods' DNS names, the Services and this address.
            let ca = kubesim::tls::Ca::generate("redis-k8s-election local CA")
                .map_err(|e| LocalError::Tls(e.to_string()))?;
            // This machine cannot resolve the pods' cluster names, so here the Sentinel
            // endpoint hands out pod IPs (as without TLS) and the certificate carries every
            // address of the pod network, for clients that check the name they connect to.
            sentinel_hands_out_ips(&mut objects);
            let mut extra = vec![a.address.to_string()];
            extra.extend(a.pod_network.hosts.iter().map(ToString::to_string));
            let names = crate::credentials::tls_names(&a.namespace, &extra);
            let secret = crate::credentials::tls_secret(&ca, &names)
                .map_err(|e| LocalError::Tls(e.to_string()))?;
            write_private(&state.0.join("ca.crt"), &ca.pem(), 0o644)?;
            objects.insert(0, secret);
        }
        objects
    };
    cluster.apply(&objects).map_err(LocalError::Cluster)?;
    for ap in &cluster.applied {
        say!("{} {}", ap.object, ap.action);
    }
    let server = &cluster.server;
    let kubeconfig = cluster.kubeconfig.clone();

    let password = cluster.secret_value("redis-auth", "password");
    let auth = password
        .as_deref()
        .map(|p| format!(" -a {p} --no-auth-warning"))
        .unwrap_or_default();
    let admin_token_file = state.0.join("admin-token");
    if let Some(t) = cluster.secret_value("redis-auth", "admin-token") {
        write_private(&admin_token_file, t.trim(), 0o600)?;
    }
    let tls_flags = if a.tls {
        format!("--tls --cacert {} ", state.0.join("ca.crt").display())
    } else {
        String::new()
    };
    let la = cluster.proxy_addr("redis-leader").expect("started above");
    let ra = cluster.proxy_addr("redis").expect("started above");
    say!();
    say!(
        "kubesim API server: {} (RBAC enforced for the pods' service accounts)",
        server.url()
    );
    say!("  export KUBECONFIG={}", kubeconfig.display());
    say!("  kubectl get pods,svc,endpoints,leases,events");
    say!(
        "writes (Service redis-leader): redis-cli {tls_flags}-h {} -p {}{auth}",
        la.ip(),
        la.port()
    );
    say!(
        "reads  (Service redis):        redis-cli {tls_flags}-h {} -p {}{auth}",
        ra.ip(),
        ra.port()
    );
    if let Some(sa) = cluster
        .proxy_addr("redis-sentinel")
        .filter(|_| a.manifests.is_none() && !a.empty)
    {
        say!(
            "sentinel (Service redis-sentinel): {}:{}, master name mymaster{}",
            sa.ip(),
            sa.port(),
            if a.tls {
                format!(
                    ", over TLS (redis-cli {tls_flags}-h {} -p {})",
                    sa.ip(),
                    sa.port()
                )
            } else {
                String::new()
            }
        );
    }
    say!(
        "switchover: redis-k8s-election switchover --kubeconfig {} --admin-token-file {}{}",
        kubeconfig.display(),
        admin_token_file.display(),
        if a.tls {
            format!(" --tls-ca-file {}", state.0.join("ca.crt").display())
        } else {
            String::new()
        }
    );
    match cluster.dns_addr().filter(|_| cluster.pod_dns()) {
        Some(dns) => say!(
            "pod DNS: {} (pods reach each other as <pod>.redis-headless.{}.svc.cluster.local; dig @{} works here too)",
            dns,
            a.namespace,
            dns.ip()
        ),
        None => say!(
            "pod DNS: unavailable (the kubelet needs root for the pods' mount namespaces, and UDP {}:53 free){}",
            a.pod_network.dns,
            if a.manifests.is_none() && !a.empty {
                "; pods announce their IPs instead (components/announce-pod-ip)"
            } else {
                ""
            }
        ),
    }
    say!(
        "pod files and logs: {}",
        state.0.join("node/pods").display()
    );
    match &keep_data {
        Some(d) => {
            say!(
                "data (PersistentVolumeClaims): {} (kept on exit; run with --keep-data {} again to restart the group on it)",
                d.display(),
                d.display()
            );
            say!("Ctrl-C stops the group and removes the other files.");
        }
        None => say!("Ctrl-C stops the group and removes these files."),
    }
    say!();

    let group = GroupArgs {
        kubeconfig: Some(kubeconfig.clone()),
        namespace: Some(a.namespace.clone()),
        lease_name: "redis".into(),
        leader_service: "redis-leader".into(),
        role_label: "redis-role".into(),
        request_timeout: Duration::from_secs(2),
        // The sidecars serve HTTPS with --tls (components/tls).
        tls_ca_file: a.tls.then(|| state.0.join("ca.crt")),
        tls_server_name: ctl::DEFAULT_TLS_SERVER_NAME.into(),
    };
    let result = tokio::select! {
        r = live_table(server, &group, &a.namespace) => r,
        () = stop.recv() => Ok(()),
    };
    say!("stopping the group…");
    cluster.shutdown().await;
    drop(state);
    match &keep_data {
        Some(d) => say!(
            "stopped; no process left behind, the data kept in {}",
            d.display()
        ),
        None => say!("stopped; no process or file left behind"),
    }
    result
}

/// Whether `pod`'s Redis takes writes, as its sidecar reports it: a ready leader with an
/// unfenced master. `leader: POD` is printed only then (a new holder's Redis is still a fenced
/// replica for a moment after the Lease names it).
fn takes_writes(snap: &ctl::Snapshot, pod: &str) -> bool {
    snap.members.iter().any(|m| {
        m.pod == pod
            && m.status.as_ref().is_some_and(|s| {
                s.ready
                    && s.role == crate::wire::SidecarRole::Leader
                    && s.redis
                        .as_ref()
                        .is_some_and(|r| r.role == crate::wire::RedisRole::Master && !r.fenced)
            })
    })
}

/// Each pod's STATUS as kubectl prints it (`Running`, `CrashLoopBackOff`, …).
fn pod_statuses(
    server: &kubesim::ApiServer,
    ns: &str,
) -> std::collections::BTreeMap<String, String> {
    server.with_store(|s| {
        s.list("pods", Some(ns))
            .iter()
            .map(|p| {
                let cells = kubesim::pod_cells(p);
                let cell = |i: usize| cells.get(i).and_then(Value::as_str).unwrap_or_default();
                (cell(0).to_string(), cell(2).to_string())
            })
            .collect()
    })
}

/// One line for a change of the group, where output is not a terminal (after the time): the
/// Lease, each member (pod status unless Running, role, Redis role, fence, link, readiness)
/// and the disagreements. Not offsets or lag, which change with every write.
fn plain_line(snap: &ctl::Snapshot, pods: &std::collections::BTreeMap<String, String>) -> String {
    let mut line = String::new();
    match &snap.lease {
        Some(l) if !l.holder.is_empty() => {
            line.push_str(&format!("lease {} epoch {}", l.holder, l.epoch))
        }
        _ => line.push_str("no leader"),
    }
    for m in &snap.members {
        line.push_str(&format!(" | {} ", m.pod));
        if let Some(st) = pods.get(&m.pod).filter(|st| *st != "Running") {
            line.push_str(&format!("{st} "));
        }
        match m.status.as_ref() {
            None => line.push_str("unreachable"),
            Some(s) => {
                line.push_str(s.role.as_str());
                if let Some(r) = &s.redis {
                    line.push_str(&format!(" redis {}", r.role.as_str()));
                    if r.fenced {
                        line.push_str(" fenced");
                    }
                    if r.role == crate::wire::RedisRole::Replica {
                        line.push_str(if r.link_up { " link up" } else { " link down" });
                        if r.streaming == Some(false) {
                            line.push_str(" not streaming");
                        }
                    }
                }
                line.push_str(if s.ready { " ready" } else { " not ready" });
            }
        }
    }
    if !snap.problems.is_empty() {
        line.push_str(&format!(" | disagreements: {}", snap.problems.join("; ")));
    }
    line
}

/// Shows the group as it changes, and `leader: POD` lines as writes reach a new leader (what
/// scripts and tests wait for). On a terminal, the pods and the group table are redrawn in
/// place and follow every field they show (offsets, lag, links, the clock column); otherwise
/// a plain line is printed per change (roles, readiness, links; not offsets), and no
/// terminal control codes.
async fn live_table(server: &kubesim::ApiServer, group: &GroupArgs, ns: &str) -> Result<()> {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let mut changes = server.with_store(|s| s.subscribe());
    let mut last_shown = String::new();
    let mut last_leader = String::new();
    // Lines of the table drawn last (terminal mode): what the next redraw replaces.
    let mut drawn = 0usize;
    let mut coord = None;
    loop {
        if coord.is_none() {
            coord = ctl::coord(group).await.ok().map(|(c, _)| c);
        }
        if let Some(c) = &coord
            && let Ok(snap) = ctl::snapshot(c, group).await
        {
            let leader = snap
                .lease
                .as_ref()
                .map(|l| l.holder.clone())
                .unwrap_or_default();
            let routed = snap.routed.clone().unwrap_or_default();
            let pods = pod_lines(server, ns);
            let table = format!("{pods}{}", snap.render());
            let signature = if terminal {
                table.clone()
            } else {
                plain_line(&snap, &pod_statuses(server, ns))
            };
            let new_leader = !leader.is_empty()
                && leader == routed
                && leader != last_leader
                && leader_reachable(server, ns, &leader)
                && takes_writes(&snap, &leader);
            if terminal && (new_leader || signature != last_shown) && drawn > 0 {
                // Up to the table's first line, and clear from there down.
                say_raw(&format!("\x1b[{drawn}F\x1b[J"));
                drawn = 0;
            }
            if new_leader {
                say!(
                    "leader: {leader} (epoch {})",
                    snap.lease.as_ref().map_or(0, |l| l.epoch)
                );
                last_leader = leader;
            }
            if signature != last_shown || (terminal && drawn == 0) {
                if terminal {
                    say_raw(&table);
                    drawn = table.lines().count();
                } else {
                    say!("{} {signature}", kube_coord::now_rfc3339());
                }
                last_shown = signature;
            }
        }
        // Wake on the next change in the API (or after 1 s for sidecar-only changes), then
        // let a burst of changes settle before reading the group again.
        kubesim::store::next_change(&mut changes, &[], Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        while changes.try_recv().is_ok() {}
    }
}

/// Writes `text` as it is (no newline added), dropping it if output fails (see [`say!`]).
fn say_raw(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_versions_are_read_from_the_version_line() {
        let line = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64";
        assert_eq!(redis_version(line), Some((7, 0)));
        assert_eq!(redis_version("Redis server v=6.2.14 sha=0"), Some((6, 2)));
        assert!(redis_version("Redis server v=6.2.14").unwrap() < MIN_REDIS);
        assert_eq!(redis_version("something else"), None);
    }

    /// Without a terminal, a line is printed when a replica's link goes down or its stream
    /// stops, not only on role changes, and not for an offset alone.
    #[test]
    fn plain_lines_follow_link_and_stream_changes_but_not_offsets() {
        let report = |link_up: bool, streaming: Option<bool>| {
            serde_json::from_value::<crate::wire::StatusReport>(serde_json::json!({
                "pod": "redis-1", "role": "replica", "fenced": false, "ready": true,
                "redis": {"role": "replica", "offset": 7, "master": "10.0.0.1:6379",
                          "linkUp": link_up, "keys": 1, "fenced": false, "streaming": streaming},
            }))
            .unwrap()
        };
        let member = |status| ctl::view::Member {
            pod: "redis-1".into(),
            address: "10.0.0.2:6379".into(),
            role_label: Some("replica".into()),
            status: Some(status),
            unreachable: None,
        };
        let shown = |m| {
            let snap = ctl::Snapshot {
                lease: None,
                members: vec![m],
                routed: None,
                problems: Vec::new(),
            };
            plain_line(&snap, &Default::default())
        };
        let up = shown(member(report(true, Some(true))));
        assert!(
            up.contains("redis-1 replica redis replica link up ready"),
            "{up}"
        );
        assert_ne!(up, shown(member(report(false, Some(true)))), "link down");
        assert_ne!(
            up,
            shown(member(report(true, Some(false)))),
            "stream stopped"
        );
        let mut later = report(true, Some(true));
        later.redis.as_mut().unwrap().offset = 900;
        assert_eq!(up, shown(member(later)), "an offset alone prints nothing");
        assert!(!up.contains('\x1b'), "no terminal codes");
    }

    #[test]
    fn pod_networks_are_loopback_hosts() {
        let n = parse_pod_network("127.0.10.0/24").unwrap();
        assert_eq!(n.hosts.first(), Some(&Ipv4Addr::new(127, 0, 10, 2)));
        assert_eq!(n.hosts.last(), Some(&Ipv4Addr::new(127, 0, 10, 254)));
        assert_eq!(n.dns, Ipv4Addr::new(127, 0, 10, 1));
        let n = parse_pod_network("127.5.6.7/29").unwrap();
        assert_eq!((n.hosts.len(), n.dns), (5, Ipv4Addr::new(127, 5, 6, 1)));
        let n = parse_pod_network("127.0.0.0/24").unwrap();
        assert!(!n.hosts.contains(&Ipv4Addr::LOCALHOST));
        for bad in ["10.0.0.0/24", "127.0.10.0", "127.0.10.0/8", "x/24"] {
            assert!(parse_pod_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shipped_manifests_parse_and_name_both_images() {
        let objs = shipped_manifests(PersistenceMode::Aof, true, false).unwrap();
        let set = objs.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
        let images: Vec<&str> = set
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .filter_map(|c| c["image"].as_str())
            .collect();
        assert!(
            images
                .iter()
                .any(|i| i.starts_with("docker.io/library/redis:")),
            "{images:?}"
        );
        assert!(
            images.iter().any(|i| i.starts_with(SIDECAR_IMAGE)),
            "{images:?}"
        );
        let auth = set
            .pointer("/spec/template/spec/volumes")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .find(|v| v["name"] == "auth")
            .unwrap();
        assert_eq!(auth["secret"]["defaultMode"], serde_json::json!(0o440));
    }

    /// The sidecar's announce address: the pod's DNS name by default; its IP (and no longer the
    /// name) where pods cannot resolve names, in every persistence mode.
    #[test]
    fn pods_announce_dns_names_unless_pod_dns_is_unavailable() {
        let env_of = |objs: &[Value]| -> Vec<(String, String)> {
            let set = objs.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
            let c = set
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .find(|c| c["name"] == "sidecar")
                .unwrap();
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["value"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        };
        for mode in [
            PersistenceMode::Aof,
            PersistenceMode::Rdb,
            PersistenceMode::None,
        ] {
            let names = env_of(&shipped_manifests(mode, true, false).unwrap());
            let has = |env: &[(String, String)], k: &str, v: &str| {
                env.iter().any(|(a, b)| a == k && b == v)
            };
            assert!(
                has(&names, "HEADLESS_SERVICE", "redis-headless"),
                "{mode:?}"
            );
            assert!(!names.iter().any(|(k, _)| k == "ANNOUNCE_ADDR"), "{mode:?}");
            let ips = env_of(&shipped_manifests(mode, false, false).unwrap());
            assert!(has(&ips, "ANNOUNCE_ADDR", "$(POD_IP):6379"), "{mode:?}");
            // POD_IP is defined before ANNOUNCE_ADDR refers to it.
            let pos = |k: &str| ips.iter().position(|(a, _)| a == k).unwrap();
            assert!(pos("POD_IP") < pos("ANNOUNCE_ADDR"), "{mode:?}");
        }
    }

    /// Each mode's persistence.conf, and where each keeps its data.
    #[test]
    fn each_persistence_mode_configures_redis_and_its_data_volume() {
        for (mode, appendonly, claims) in [
            (PersistenceMode::Aof, "appendonly yes", true),
            (PersistenceMode::Rdb, "appendonly no", true),
            (PersistenceMode::None, "appendonly no", false),
        ] {
            let objs = shipped_manifests(mode, true, false).unwrap();
            let conf = objs
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "redis-persistence")
                .and_then(|c| c["data"]["persistence.conf"].as_str())
                .unwrap()
                .to_string();
            assert!(conf.contains(appendonly), "{mode:?}: {conf}");
            assert!(conf.contains("maxmemory 200mb"), "{mode:?}: {conf}");
            let set = objs.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
            assert_eq!(
                set.pointer("/spec/volumeClaimTemplates/0/metadata/name")
                    .is_some(),
                claims,
                "{mode:?}"
            );
            let data_is_empty_dir = set
                .pointer("/spec/template/spec/volumes")
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .any(|v| v["name"] == "data" && v.get("emptyDir").is_some());
            assert_eq!(data_is_empty_dir, !claims, "{mode:?}");
            let sidecar_env = set
                .pointer("/spec/template/spec/containers/1/env")
                .and_then(Value::as_array)
                .unwrap();
            assert_eq!(
                sidecar_env.iter().any(|e| e["name"] == "COLD_START_WAIT"),
                mode == PersistenceMode::None,
                "{mode:?}"
            );
        }
    }
}
