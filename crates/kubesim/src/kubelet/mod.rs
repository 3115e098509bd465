//! The kubelet: runs the pods bound to this machine as local processes (DESIGN section 5).
//!
//! Each pod gets its own loopback address (its pod IP; containers listen on the same ports as
//! in a cluster), a directory holding its volumes (emptyDir, Secret, ConfigMap), its
//! service-account files and its containers' logs. A container's image maps to a local
//! program ([`plan::ImageRule`]); its environment (incl. `fieldRef`) and `$(VAR)` arguments
//! are built as the real kubelet builds them. Readiness and liveness probes feed the pod's
//! conditions (and so the endpoints controllers); crashed containers restart with the
//! CrashLoopBackOff back-off; a deleted pod runs its preStop hooks, gets SIGTERM, and SIGKILL
//! when its grace period ends, and is then removed from the API.
//!
//! Processes share the host's file system, so volume paths in arguments and environment are
//! mapped to the pod's directory ([`plan::MountMap`]). The service-account files are where
//! in-cluster configuration expects them (`/var/run/secrets/kubernetes.io/serviceaccount`)
//! when the kubelet runs as root: each container then gets a mount namespace with a private
//! `/run` holding them. Without root, `KUBECONFIG` points at a kubeconfig made of the same
//! files instead.

pub mod plan;

use crate::api::{self, DeleteOptions, Part, WriteOptions};
use crate::controllers::{is_terminating, record_event};
use crate::podspec::PodFacts;
use crate::resources::{self, meta_str};
use crate::store::{Store, next_change};
use crate::util;
use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use plan::{ContainerState, ContainerView, ImageRule, MountMap, ProbeCounter};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Where in-cluster configuration reads the service-account files.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long a projected service-account token lives; the kubelet renews it at 80 %.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// The kubelet's settings.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// This node's name (`spec.nodeName` of the pods it runs).
    pub node_name: String,
    /// `status.hostIP`.
    pub host_ip: Ipv4Addr,
    /// Pod IPs to hand out, each to one pod at a time; a new pod takes the next free one.
    pub pod_ips: Vec<Ipv4Addr>,
    /// Where pod directories go (created if missing).
    pub state_dir: PathBuf,
    /// Images this machine can run.
    pub images: Vec<ImageRule>,
    /// The API server, as pods reach it (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub api_server: SocketAddr,
    /// The API server's CA (PEM), written as `ca.crt`.
    pub ca_pem: String,
    /// First CrashLoopBackOff delay (10 s in Kubernetes).
    pub backoff_initial: Duration,
    /// Longest CrashLoopBackOff delay (5 min in Kubernetes).
    pub backoff_max: Duration,
}

impl KubeletConfig {
    /// Kubernetes' defaults for a node `node_name` serving `pod_ips`.
    pub fn new(
        node_name: &str,
        pod_ips: Vec<Ipv4Addr>,
        state_dir: PathBuf,
        images: Vec<ImageRule>,
        api_server: SocketAddr,
        ca_pem: &str,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            host_ip: Ipv4Addr::LOCALHOST,
            pod_ips,
            state_dir,
            images,
            api_server,
            ca_pem: ca_pem.into(),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// A pod the kubelet runs.
struct PodRuntime {
    namespace: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    grace: Duration,
    start_time: String,
    containers: Mutex<Vec<ContainerView>>,
    changed: Notify,
    /// Set to the grace deadline when the pod is to stop.
    stop: watch::Sender<Option<Instant>>,
}

impl PodRuntime {
    fn involved(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid}})
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut ContainerView)) {
        f(&mut self.containers.lock().expect("containers lock")[i]);
        self.changed.notify_one();
    }

    fn stop_deadline(&self) -> Option<Instant> {
        *self.stop.borrow()
    }

    /// Asks the pod to stop by `deadline`; an earlier deadline already set stands (a second
    /// delete with a shorter grace period, or a force deletion, only ever shortens it).
    fn stop_by(&self, deadline: Instant) {
        self.stop.send_if_modified(|d| {
            if d.is_none_or(|old| deadline < old) {
                *d = Some(deadline);
                true
            } else {
                false
            }
        });
    }

    /// Records an Event about this pod from the kubelet.
    fn event(&self, shared: &Shared, event_type: &str, reason: &str, message: &str) {
        with_store(shared, |s| {
            record_event(s, &self.involved(), event_type, reason, message, "kubelet")
        });
    }
}

struct Shared {
    store: Arc<RwLock<Store>>,
    config: KubeletConfig,
    pods: Mutex<HashMap<String, Arc<PodRuntime>>>,
    next_ip: Mutex<usize>,
    stopping: watch::Sender<bool>,
    /// Containers get the service-account files at their in-cluster path (needs root).
    mount_namespaces: bool,
}

/// A running kubelet.
pub struct Kubelet {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Kubelet {
    /// Starts running the pods of `store` that are unbound or bound to this node.
    pub fn start(store: Arc<RwLock<Store>>, config: KubeletConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(config.state_dir.join("pods"))?;
        // Containers may run as any user: the tree down to each pod's files is traversable.
        for d in [config.state_dir.clone(), config.state_dir.join("pods")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        }
        let mount_namespaces = mount_namespaces_work(&config.state_dir);
        let shared = Arc::new(Shared {
            store,
            config,
            pods: Mutex::new(HashMap::new()),
            next_ip: Mutex::new(0),
            stopping: watch::channel(false).0,
            mount_namespaces,
        });
        let task = tokio::spawn(sync_loop(shared.clone()));
        Ok(Self { shared, task })
    }

    /// Whether containers see the service-account files at their in-cluster path (root) or
    /// through `KUBECONFIG`.
    pub fn in_cluster_files(&self) -> bool {
        self.shared.mount_namespaces
    }

    /// The process ID of a running container, for tests and fault injection.
    pub fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Option<u32> {
        let pods = self.shared.pods.lock().expect("pods lock");
        let rt = pods
            .values()
            .find(|p| p.namespace == namespace && p.name == pod && p.stop_deadline().is_none())?;
        let cs = rt.containers.lock().expect("containers lock");
        cs.iter().find(|c| c.name == container).and_then(|c| c.pid)
    }

    /// The directory of a running pod (volumes, `serviceaccount/`, `logs/<container>.log`).
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> Option<PathBuf> {
        let pods = self.shared.pods.lock().expect("pods lock");
        pods.values()
            .find(|p| p.namespace == namespace && p.name == pod)
            .map(|p| p.dir.clone())
    }

    /// Node shutdown: every pod stops as on deletion (preStop, SIGTERM, SIGKILL after its
    /// grace period), all at once; returns when the last process is gone.
    pub async fn shutdown(self) {
        let _ = self.shared.stopping.send(true);
        let pods: Vec<Arc<PodRuntime>> = self
            .shared
            .pods
            .lock()
            .expect("pods lock")
            .values()
            .cloned()
            .collect();
        for p in &pods {
            p.stop_by(Instant::now() + p.grace);
        }
        let longest = pods.iter().map(|p| p.grace).max().unwrap_or_default();
        let until = Instant::now() + longest + Duration::from_secs(5);
        while !self.shared.pods.lock().expect("pods lock").is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.task.abort();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Root and a working `unshare(CLONE_NEWNS)`: tried once with `/bin/true`.
fn mount_namespaces_work(state_dir: &Path) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let Some(run) = run_dir() else { return false };
    if state_dir.canonicalize().is_ok_and(|d| d.starts_with(&run)) {
        // The private /run would hide the pod's own files.
        return false;
    }
    let mut cmd = std::process::Command::new("true");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.status().is_ok_and(|s| s.success())
}

/// The directory `/var/run` resolves to (`/run` on current distributions).
fn run_dir() -> Option<PathBuf> {
    Path::new("/var/run").canonicalize().ok()
}

async fn sync_loop(shared: Arc<Shared>) {
    let mut changes = shared.store.read().expect("store lock").subscribe();
    loop {
        sync(&shared);
        next_change(&mut changes, &["pods"], Duration::from_secs(1)).await;
    }
}

/// One pass: bind unbound pods, start new ones, stop deleted ones.
fn sync(shared: &Arc<Shared>) {
    let stopping = *shared.stopping.borrow();
    let pods_rt = resources::lookup("", "v1", "pods").expect("pods served");
    let pods: Vec<Value> = {
        let s = shared.store.read().expect("store lock");
        s.list("pods", None)
            .iter()
            .map(|p| api::to_view(pods_rt, p))
            .collect()
    };
    let node = shared.config.node_name.clone();
    let mut seen = std::collections::HashSet::new();
    for pod in pods {
        let ns = meta_str(&pod, "namespace").unwrap_or_default().to_string();
        let name = meta_str(&pod, "name").unwrap_or_default().to_string();
        let uid = meta_str(&pod, "uid").unwrap_or_default().to_string();
        let bound_to = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if bound_to.is_empty() {
            if !is_terminating(&pod) && !stopping {
                let mut store = shared.store.write().expect("store lock");
                if api::bind_pod(&mut store, &ns, &name, &node).is_ok() {
                    record_event(
                        &mut store,
                        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": pod["metadata"]}),
                        "Normal",
                        "Scheduled",
                        &format!("Successfully assigned {ns}/{name} to {node}"),
                        "default-scheduler",
                    );
                }
            }
            continue;
        }
        if bound_to != node {
            continue;
        }
        seen.insert(uid.clone());
        let existing = shared.pods.lock().expect("pods lock").get(&uid).cloned();
        match existing {
            None if is_terminating(&pod) => {
                // Never started here: nothing to stop.
                let mut store = shared.store.write().expect("store lock");
                let _ = api::delete(&mut store, pods_rt, &ns, &name, &force_delete(&uid));
            }
            None if !stopping => start_pod(shared, &pod),
            None => {}
            Some(rt) if is_terminating(&pod) => {
                let grace = pod
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .map_or(rt.grace, Duration::from_secs);
                rt.stop_by(Instant::now() + grace);
            }
            Some(_) => {}
        }
    }
    // Pods removed from the API without us (force deletion): their processes go at once.
    for rt in shared.pods.lock().expect("pods lock").values() {
        if !seen.contains(&rt.uid) {
            rt.stop_by(Instant::now());
        }
    }
}

fn force_delete(uid: &str) -> DeleteOptions {
    DeleteOptions {
        uid: Some(uid.to_string()),
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

fn allocate_ip(shared: &Shared) -> Option<Ipv4Addr> {
    let pods = shared.pods.lock().expect("pods lock");
    let pool = &shared.config.pod_ips;
    let mut next = shared.next_ip.lock().expect("ip lock");
    for k in 0..pool.len() {
        let ip = pool[(*next + k) % pool.len()];
        if pods.values().all(|p| p.ip != ip) {
            // Round robin: a pod made again gets another address, as in a cluster.
            *next = (*next + k + 1) % pool.len();
            return Some(ip);
        }
    }
    None
}

fn start_pod(shared: &Arc<Shared>, pod: &Value) {
    let ns = meta_str(pod, "namespace").unwrap_or_default().to_string();
    let name = meta_str(pod, "name").unwrap_or_default().to_string();
    let uid = meta_str(pod, "uid").unwrap_or_default().to_string();
    let Some(ip) = allocate_ip(shared) else {
        tracing::warn!(pod = %name, "kubelet: no free pod IP");
        return;
    };
    let spec: Pod = match serde_json::from_value(pod.clone()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "kubelet: pod does not decode");
            return;
        }
    };
    let containers: Vec<ContainerView> = spec
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| ContainerView::creating(&c.name, c.image.as_deref().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let grace = spec
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0) as u64;
    let short_uid: String = uid.chars().take(8).collect();
    let rt = Arc::new(PodRuntime {
        namespace: ns.clone(),
        name: name.clone(),
        uid: uid.clone(),
        ip,
        dir: shared
            .config
            .state_dir
            .join("pods")
            .join(format!("{ns}_{name}_{short_uid}")),
        grace: Duration::from_secs(grace),
        start_time: util::now_time(),
        containers: Mutex::new(containers),
        changed: Notify::new(),
        stop: watch::channel(None).0,
    });
    shared
        .pods
        .lock()
        .expect("pods lock")
        .insert(uid, rt.clone());
    tokio::spawn(run_pod(shared.clone(), rt, spec));
}

/// A pod's life: volumes, containers, and at the end its removal from the API.
async fn run_pod(shared: Arc<Shared>, rt: Arc<PodRuntime>, pod: Pod) {
    let status_task = tokio::spawn(write_status_loop(shared.clone(), rt.clone()));
    rt.changed.notify_one();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut stop = rt.stop.subscribe();
    // Volumes first; a missing Secret or ServiceAccount is retried, as the kubelet does.
    let setup = loop {
        match prepare_pod_files(&shared, &rt, &spec) {
            Ok(()) => break true,
            Err(message) => {
                let n = rt.containers.lock().expect("containers lock").len();
                for i in 0..n {
                    rt.update(i, |c| {
                        c.state = ContainerState::Waiting {
                            reason: "ContainerCreating".into(),
                            message: message.clone(),
                        }
                    });
                }
                rt.event(&shared, "Warning", "FailedMount", &message);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stopped(&mut stop) => break false,
                }
            }
        }
    };
    let token_task =
        setup.then(|| tokio::spawn(renew_token_loop(shared.clone(), rt.clone(), spec.clone())));
    if setup {
        let facts = pod_facts(&pod, &rt, &shared.config);
        let tasks: Vec<JoinHandle<()>> = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                tokio::spawn(run_container(
                    shared.clone(),
                    rt.clone(),
                    i,
                    c.clone(),
                    facts.clone(),
                    mount_map(&rt.dir, c),
                ))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
    if let Some(t) = token_task {
        t.abort();
    }
    // Every container has exited: the pod is gone from the node, and from the API.
    status_task.abort();
    write_status(&shared, &rt);
    with_store(&shared, |s| {
        let rt_pods = resources::lookup("", "v1", "pods").expect("pods served");
        let _ = api::delete(s, rt_pods, &rt.namespace, &rt.name, &force_delete(&rt.uid));
    });
    shared.pods.lock().expect("pods lock").remove(&rt.uid);
}

fn with_store<R>(shared: &Shared, f: impl FnOnce(&mut Store) -> R) -> R {
    f(&mut shared.store.write().expect("store lock"))
}

fn pod_facts(pod: &Pod, rt: &PodRuntime, config: &KubeletConfig) -> PodFacts {
    let m = &pod.metadata;
    PodFacts {
        name: rt.name.clone(),
        namespace: rt.namespace.clone(),
        uid: rt.uid.clone(),
        labels: m.labels.clone().unwrap_or_default(),
        annotations: m.annotations.clone().unwrap_or_default(),
        node_name: config.node_name.clone(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        host_ip: config.host_ip.to_string(),
        pod_ip: rt.ip.to_string(),
    }
}

/// `<pod>/volumes/<name>` for each volume mount (with its `subPath`).
fn mount_map(pod_dir: &Path, c: &Container) -> MountMap {
    MountMap(
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                let mut dir = pod_dir.join("volumes").join(&m.name);
                if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    dir = dir.join(sub);
                }
                (m.mount_path.clone(), dir)
            })
            .collect(),
    )
}

fn decode_b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// Writes the pod's volumes and service-account files. Errors are the kubelet's messages.
fn prepare_pod_files(
    shared: &Shared,
    rt: &PodRuntime,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("pod directory: {e}");
    let vol_dir = rt.dir.join("volumes");
    for sub in ["volumes", "logs", "home"] {
        std::fs::create_dir_all(rt.dir.join(sub)).map_err(io)?;
    }
    for d in [rt.dir.clone(), vol_dir.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    for v in spec.volumes.iter().flatten() {
        let dir = vol_dir.join(&v.name);
        std::fs::create_dir_all(&dir).map_err(io)?;
        if v.empty_dir.is_some() {
            // The kubelet makes emptyDir world-writable so any container user can use it.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
            continue;
        }
        let (kind, name, items, mode, optional) = if let Some(s) = &v.secret {
            (
                "secret",
                s.secret_name.clone().unwrap_or_default(),
                s.items.clone(),
                s.default_mode,
                s.optional,
            )
        } else if let Some(c) = &v.config_map {
            (
                "configmap",
                c.name.clone(),
                c.items.clone(),
                c.default_mode,
                c.optional,
            )
        } else {
            return Err(format!(
                "volume {:?}: only emptyDir, secret and configMap volumes are supported by kubesim",
                v.name
            ));
        };
        let storage = if kind == "secret" {
            "secrets"
        } else {
            "configmaps"
        };
        let obj = shared
            .store
            .read()
            .expect("store lock")
            .get(storage, &rt.namespace, &name);
        let Some(obj) = obj else {
            if optional == Some(true) {
                continue;
            }
            return Err(format!(
                "MountVolume.SetUp failed for volume \"{}\" : {} \"{name}\" not found",
                v.name,
                if kind == "secret" {
                    "secret"
                } else {
                    "configmap"
                }
            ));
        };
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for (k, val) in obj
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let bytes = if kind == "secret" {
                decode_b64(val.as_str().unwrap_or_default())
            } else {
                val.as_str().unwrap_or_default().as_bytes().to_vec()
            };
            files.push((k.clone(), bytes));
        }
        for (k, val) in obj
            .get("binaryData")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            files.push((k.clone(), decode_b64(val.as_str().unwrap_or_default())));
        }
        let mode = mode.unwrap_or(0o644) as u32;
        let chosen: Vec<(String, Vec<u8>, u32)> = match &items {
            Some(items) if !items.is_empty() => {
                let mut out = Vec::new();
                for it in items {
                    match files.iter().find(|(k, _)| *k == it.key) {
                        Some((_, b)) => out.push((
                            it.path.clone(),
                            b.clone(),
                            it.mode.map_or(mode, |m| m as u32),
                        )),
                        None if optional == Some(true) => {}
                        None => {
                            return Err(format!(
                                "MountVolume.SetUp failed for volume \"{}\" : configmap references non-existent config key: {}",
                                v.name, it.key
                            ));
                        }
                    }
                }
                out
            }
            _ => files.into_iter().map(|(k, b)| (k, b, mode)).collect(),
        };
        for (path, bytes, mode) in chosen {
            let target = dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            write_atomically(&target, &bytes, mode).map_err(io)?;
        }
    }
    if spec.automount_service_account_token != Some(false) {
        write_service_account(shared, rt, spec)?;
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("kubesim-tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// `token`, `ca.crt`, `namespace` (and a kubeconfig of them, for the non-root fallback).
fn write_service_account(
    shared: &Shared,
    rt: &PodRuntime,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Result<(), String> {
    let account = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let token = with_store(shared, |s| {
        crate::server::issue_token(s, &rt.namespace, &account, TOKEN_TTL.as_secs() as i64)
    })
    .map_err(|_| {
        format!(
            "error looking up service account {}/{account}: serviceaccount \"{account}\" not found",
            rt.namespace
        )
    })?;
    let dir = rt.dir.join("serviceaccount");
    let io = |e: std::io::Error| format!("service account files: {e}");
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    write_atomically(&dir.join("token"), token.as_bytes(), 0o644).map_err(io)?;
    write_atomically(&dir.join("ca.crt"), shared.config.ca_pem.as_bytes(), 0o644).map_err(io)?;
    write_atomically(&dir.join("namespace"), rt.namespace.as_bytes(), 0o644).map_err(io)?;
    let api = shared.config.api_server;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    server: \"https://{api}\"\n    certificate-authority: \"{}\"\nusers:\n- name: sa\n  user:\n    tokenFile: \"{}\"\ncontexts:\n- name: in-cluster\n  context:\n    cluster: in-cluster\n    user: sa\n    namespace: \"{}\"\ncurrent-context: in-cluster\n",
        dir.join("ca.crt").display(),
        dir.join("token").display(),
        rt.namespace
    );
    write_atomically(&dir.join("kubeconfig"), kubeconfig.as_bytes(), 0o644).map_err(io)
}

async fn renew_token_loop(
    shared: Arc<Shared>,
    rt: Arc<PodRuntime>,
    spec: k8s_openapi::api::core::v1::PodSpec,
) {
    if spec.automount_service_account_token == Some(false) {
        return;
    }
    loop {
        tokio::time::sleep(TOKEN_TTL * 4 / 5).await;
        if let Err(e) = write_service_account(&shared, &rt, &spec) {
            tracing::warn!(pod = %rt.name, error = %e, "kubelet: token renewal failed");
        }
    }
}

/// Writes the pod's status after each change (coalescing bursts).
async fn write_status_loop(shared: Arc<Shared>, rt: Arc<PodRuntime>) {
    loop {
        rt.changed.notified().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        write_status(&shared, &rt);
    }
}

fn write_status(shared: &Shared, rt: &PodRuntime) {
    let containers = rt.containers.lock().expect("containers lock").clone();
    let pods_rt = resources::lookup("", "v1", "pods").expect("pods served");
    with_store(shared, |s| {
        let Ok(mut pod) = api::get(s, pods_rt, &rt.namespace, &rt.name) else {
            return;
        };
        if meta_str(&pod, "uid") != Some(rt.uid.as_str()) {
            return;
        }
        let status = plan::pod_status(
            pod.get("status"),
            &rt.ip.to_string(),
            &shared.config.host_ip.to_string(),
            &rt.start_time,
            &containers,
            &util::now_time(),
        );
        if pod.get("status") == Some(&status) {
            return;
        }
        pod["status"] = status;
        if let Err(e) = api::update(
            s,
            pods_rt,
            &rt.namespace,
            &rt.name,
            pod,
            Part::Status,
            &WriteOptions::default(),
        ) {
            tracing::debug!(pod = %rt.name, error = %e, "kubelet: status write refused");
        }
    });
}

/// The environment every container gets from the kubelet before its own.
fn base_env(shared: &Shared, rt: &PodRuntime) -> Vec<(String, String)> {
    let api = shared.config.api_server;
    let mut env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        ),
        ("HOSTNAME".to_string(), rt.name.clone()),
        (
            "HOME".to_string(),
            rt.dir.join("home").display().to_string(),
        ),
        ("KUBERNETES_SERVICE_HOST".to_string(), api.ip().to_string()),
        (
            "KUBERNETES_SERVICE_PORT".to_string(),
            api.port().to_string(),
        ),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
            api.port().to_string(),
        ),
        ("KUBERNETES_PORT".to_string(), format!("tcp://{api}")),
    ];
    if !shared.mount_namespaces {
        env.push((
            "KUBECONFIG".to_string(),
            rt.dir
                .join("serviceaccount/kubeconfig")
                .display()
                .to_string(),
        ));
    }
    env
}

fn secret_lookup(shared: &Shared, ns: &str) -> impl Fn(&'static str, &str, &str) -> Option<String> {
    let store = shared.store.clone();
    let ns = ns.to_string();
    move |kind, name, key| {
        let s = store.read().expect("store lock");
        match kind {
            "secret" => s
                .get("secrets", &ns, name)
                .and_then(|o| {
                    o.pointer(&format!("/data/{key}"))
                        .and_then(Value::as_str)
                        .map(decode_b64)
                })
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            _ => s.get("configmaps", &ns, name).and_then(|o| {
                o.pointer(&format!("/data/{key}"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }),
        }
    }
}

/// Prepared strings for the mount-namespace set-up, made before `fork` because nothing may
/// allocate between `fork` and `exec`.
struct NamespaceMounts {
    run: CString,
    secrets: CString,
    kubernetes_io: CString,
    target: CString,
    source: CString,
}

fn namespace_mounts(rt: &PodRuntime) -> Option<NamespaceMounts> {
    let run = run_dir()?;
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).ok();
    Some(NamespaceMounts {
        secrets: c(&run.join("secrets"))?,
        kubernetes_io: c(&run.join("secrets/kubernetes.io"))?,
        target: c(&run.join("secrets/kubernetes.io/serviceaccount"))?,
        source: c(&rt.dir.join("serviceaccount"))?,
        run: c(&run)?,
    })
}

/// In the child, before exec: a private mount namespace with a fresh `/run` holding the
/// service-account directory, read-only.
fn mount_service_account(m: &NamespaceMounts) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls on NUL-terminated strings prepared before fork.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"tmpfs".as_ptr(),
            m.run.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=755".as_ptr().cast(),
        ))?;
        for d in [&m.secrets, &m.kubernetes_io, &m.target] {
            check(libc::mkdir(d.as_ptr(), 0o755))?;
        }
        check(libc::mount(
            m.source.as_ptr(),
            m.target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            std::ptr::null(),
            m.target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        ))?;
    }
    Ok(())
}

/// A command in the container's context: its environment, its own process group (so the
/// kubelet can end everything it started), killed if the kubelet dies, and the mount
/// namespace when in use.
fn container_command(
    shared: &Shared,
    rt: &PodRuntime,
    program: &str,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> std::io::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(rt.dir.join("home"))
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    let mounts = if shared.mount_namespaces {
        namespace_mounts(rt)
    } else {
        None
    };
    // SAFETY: only async-signal-safe calls between fork and exec; strings prepared above.
    unsafe {
        cmd.pre_exec(move || {
            // A kubelet that dies takes its containers with it, as a node that goes down does.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(m) = &mounts {
                mount_service_account(m)?;
            }
            Ok(())
        });
    }
    Ok(cmd)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: as above; the container's process group has the container's PID as its ID.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// One container: start, probe, restart with back-off, stop on the pod's deletion.
async fn run_container(
    shared: Arc<Shared>,
    rt: Arc<PodRuntime>,
    i: usize,
    c: Container,
    facts: PodFacts,
    mounts: MountMap,
) {
    let mut stop = rt.stop.subscribe();
    let mut failures: u32 = 0;
    let log = rt.dir.join("logs").join(format!("{}.log", c.name));
    loop {
        if rt.stop_deadline().is_some() {
            return;
        }
        let plan = plan::launch_plan(
            &c,
            &facts,
            secret_lookup(&shared, &rt.namespace),
            &shared.config.images,
            &mounts,
            &base_env(&shared, &rt),
        );
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                rt.update(i, |v| {
                    v.state = ContainerState::Waiting {
                        reason: e.reason().into(),
                        message: e.to_string(),
                    }
                });
                rt.event(&shared, "Warning", "Failed", &format!("Error: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        let started = Instant::now();
        let started_at = util::now_time();
        let spawned = container_command(&shared, &rt, &plan.program, &plan.args, &plan.env, &log)
            .and_then(|mut cmd| cmd.spawn());
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                failures += 1;
                let message = format!(
                    "failed to start container {:?}: exec {:?}: {e}",
                    c.name, plan.program
                );
                rt.update(i, |v| {
                    v.state = ContainerState::Waiting {
                        reason: "RunContainerError".into(),
                        message: message.clone(),
                    }
                });
                rt.event(&shared, "Warning", "Failed", &message);
                if !back_off(&shared, &rt, i, &c, failures, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or_default();
        let has_readiness = c.readiness_probe.is_some();
        rt.update(i, |v| {
            v.state = ContainerState::Running {
                started_at: started_at.clone(),
            };
            v.pid = Some(pid);
            v.started_once = true;
            v.ready = !has_readiness;
        });
        rt.event(
            &shared,
            "Normal",
            "Started",
            &format!("Started container {}", c.name),
        );
        let (liveness_tx, mut liveness_failed) = tokio::sync::mpsc::channel::<String>(1);
        // Readiness only reports; liveness also asks for a restart through the channel.
        let mut probes = Vec::new();
        for (probe, on_failure) in [
            (c.readiness_probe.clone(), None),
            (c.liveness_probe.clone(), Some(liveness_tx)),
        ] {
            if let Some(p) = probe {
                probes.push(tokio::spawn(probe_loop(
                    shared.clone(),
                    rt.clone(),
                    i,
                    c.clone(),
                    p,
                    plan.clone(),
                    on_failure,
                )));
            }
        }
        let status = tokio::select! {
            status = child.wait() => status.ok(),
            _ = stopped(&mut stop) => {
                let deadline = rt.stop_deadline().unwrap_or_else(Instant::now);
                stop_container(&shared, &rt, &c, &plan, &mut child, deadline).await
            }
            Some(why) = liveness_failed.recv() => {
                rt.event(&shared, "Normal", "Killing",
                    &format!("Container {} failed liveness probe, will be restarted: {why}", c.name));
                stop_container(&shared, &rt, &c, &plan, &mut child, Instant::now() + rt.grace).await
            }
        };
        for p in probes {
            p.abort();
        }
        // Whatever the container left behind in its process group goes with it.
        signal_group(pid, libc::SIGKILL);
        let code = status.map_or(137, exit_code);
        let terminated = ContainerState::Terminated {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            started_at: started_at.clone(),
            finished_at: util::now_time(),
        };
        rt.update(i, |v| {
            v.state = terminated.clone();
            v.pid = None;
            v.ready = false;
        });
        if rt.stop_deadline().is_some() {
            return;
        }
        tracing::info!(pod = %rt.name, container = %c.name, exit_code = code, "kubelet: container exited; restarting");
        // A container that ran ten minutes starts its back-off afresh.
        if started.elapsed() > Duration::from_secs(600) {
            failures = 0;
        }
        failures += 1;
        rt.update(i, |v| {
            v.last_state = Some(terminated);
            v.restart_count += 1;
        });
        if !back_off(&shared, &rt, i, &c, failures, &mut stop).await {
            return;
        }
    }
}

/// Waits out the CrashLoopBackOff delay; false when the pod is stopping meanwhile.
async fn back_off(
    shared: &Shared,
    rt: &PodRuntime,
    i: usize,
    c: &Container,
    failures: u32,
    stop: &mut watch::Receiver<Option<Instant>>,
) -> bool {
    let delay = plan::backoff_delay(
        failures,
        shared.config.backoff_initial,
        shared.config.backoff_max,
    );
    if delay.is_zero() {
        return true;
    }
    let message = format!(
        "back-off {} restarting failed container={} pod={}_{}({})",
        humanize(delay),
        c.name,
        rt.name,
        rt.namespace,
        rt.uid
    );
    rt.update(i, |v| {
        v.state = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message,
        }
    });
    rt.event(
        shared,
        "Warning",
        "BackOff",
        &format!(
            "Back-off restarting failed container {} in pod {}_{}({})",
            c.name, rt.name, rt.namespace, rt.uid
        ),
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stopped(stop) => false,
    }
}

/// Resolves once the pod is to stop (the watch guard is dropped here, not held across awaits).
async fn stopped(stop: &mut watch::Receiver<Option<Instant>>) {
    let _ = stop.wait_for(Option::is_some).await;
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Stops a container as the kubelet does: the preStop hook (bounded by the grace period),
/// then SIGTERM, then SIGKILL at the deadline.
async fn stop_container(
    shared: &Shared,
    rt: &PodRuntime,
    c: &Container,
    plan: &plan::LaunchPlan,
    child: &mut tokio::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    rt.event(
        shared,
        "Normal",
        "Killing",
        &format!("Stopping container {}", c.name),
    );
    let pid = child.id()?;
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        let run_hook = async {
            if let Some(exec) = &hook.exec {
                run_exec(
                    shared,
                    rt,
                    exec.command.as_deref().unwrap_or_default(),
                    plan,
                )
                .await
            } else if let Some(get) = &hook.http_get {
                let port = resolve_port(c, &get.port);
                http_get(
                    rt.ip,
                    port,
                    get.path.as_deref().unwrap_or("/"),
                    deadline.saturating_duration_since(Instant::now()),
                )
                .await
            } else if let Some(sleep) = &hook.sleep {
                tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
                Ok(())
            } else {
                Ok(())
            }
        };
        tokio::select! {
            r = run_hook => if let Err(e) = r {
                rt.event(shared, "Warning", "FailedPreStopHook",
                    &format!("PreStopHook failed: {e}"));
            },
            status = child.wait() => return status.ok(),
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    signal(pid, libc::SIGTERM);
    tokio::select! {
        status = child.wait() => status.ok(),
        _ = tokio::time::sleep_until(deadline.into()) => {
            signal_group(pid, libc::SIGKILL);
            child.wait().await.ok()
        }
    }
}

fn resolve_port(
    c: &Container,
    port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
) -> u16 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(n) => *n as u16,
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map_or(0, |p| p.container_port as u16),
    }
}

/// A probe's loop: results feed its counter; readiness sets the container's ready flag,
/// a failed liveness verdict asks for a restart through `liveness`.
async fn probe_loop(
    shared: Arc<Shared>,
    rt: Arc<PodRuntime>,
    i: usize,
    c: Container,
    p: Probe,
    plan: plan::LaunchPlan,
    liveness: Option<tokio::sync::mpsc::Sender<String>>,
) {
    let kind = if liveness.is_some() {
        "Liveness"
    } else {
        "Readiness"
    };
    tokio::time::sleep(Duration::from_secs(
        p.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let mut counter = ProbeCounter::new(
        p.success_threshold.unwrap_or(1) as u32,
        p.failure_threshold.unwrap_or(3) as u32,
    );
    loop {
        let result = tokio::time::timeout(timeout, run_probe(&shared, &rt, &c, &p, &plan))
            .await
            .unwrap_or_else(|_| Err(format!("timeout after {timeout:?}")));
        if let Err(why) = &result {
            rt.event(
                &shared,
                "Warning",
                "Unhealthy",
                &format!("{kind} probe failed: {why}"),
            );
        }
        if let Some(verdict) = counter.record(result.is_ok()) {
            match &liveness {
                None => rt.update(i, |v| v.ready = verdict),
                Some(tx) if !verdict => {
                    let _ = tx.send(result.err().unwrap_or_default()).await;
                    return;
                }
                Some(_) => {}
            }
        }
        tokio::time::sleep(period).await;
    }
}

async fn run_probe(
    shared: &Shared,
    rt: &PodRuntime,
    c: &Container,
    p: &Probe,
    plan: &plan::LaunchPlan,
) -> Result<(), String> {
    if let Some(get) = &p.http_get {
        let port = resolve_port(c, &get.port);
        http_get(
            rt.ip,
            port,
            get.path.as_deref().unwrap_or("/"),
            Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64),
        )
        .await
    } else if let Some(tcp) = &p.tcp_socket {
        let port = resolve_port(c, &tcp.port);
        tokio::net::TcpStream::connect((rt.ip, port))
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {}:{port}: {e}", rt.ip))
    } else if let Some(exec) = &p.exec {
        run_exec(
            shared,
            rt,
            exec.command.as_deref().unwrap_or_default(),
            plan,
        )
        .await
    } else {
        Err("probe has no handler kubesim supports (httpGet, tcpSocket, exec)".into())
    }
}

/// Runs a command in the container's context (hooks and exec probes); success is exit 0.
async fn run_exec(
    shared: &Shared,
    rt: &PodRuntime,
    command: &[String],
    plan: &plan::LaunchPlan,
) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("empty command".into());
    };
    let log = rt.dir.join("logs").join("exec.log");
    let mut cmd =
        container_command(shared, rt, program, args, &plan.env, &log).map_err(|e| e.to_string())?;
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("exec {program:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "command {command:?} exited with {}",
            exit_code(status)
        ))
    }
}

/// An HTTP GET as the kubelet's prober makes it: success is a status from 200 to 399. Written
/// by hand because the prober needs only the status line; a client library would add a
/// dependency for one request shape.
async fn http_get(ip: Ipv4Addr, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| format!("Get \"http://{ip}:{port}{path}\": {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                format!(
                    "malformed HTTP response: {:?}",
                    line.lines().next().unwrap_or_default()
                )
            })?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "Get \"http://{ip}:{port}{path}\": context deadline exceeded"
            ))
        })
}
