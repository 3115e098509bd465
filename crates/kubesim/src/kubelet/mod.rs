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

mod container;
mod probe;
mod sys;
mod volumes;

use container::*;
use probe::*;
use sys::*;
use volumes::*;

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
    /// Where each PersistentVolumeClaim's directory goes (`<ns>/<claim>`): outside the pod
    /// directories, so that a claim outlives its pods; kept across runs when it outlives the
    /// state directory (`local --keep-data`).
    pub claims_dir: PathBuf,
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
    /// The cluster's DNS server, which pods with `dnsPolicy: ClusterFirst` get as their
    /// nameserver (needs mount namespaces: [`Kubelet::pod_dns`]).
    pub cluster_dns: Option<ClusterDns>,
}

/// Where pods find cluster DNS.
#[derive(Clone, Debug)]
pub struct ClusterDns {
    /// The nameserver (port 53: resolvers take no port).
    pub nameserver: Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
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
            claims_dir: state_dir.join("claims"),
            state_dir,
            images,
            api_server,
            ca_pem: ca_pem.into(),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            cluster_dns: None,
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
    /// The containers that get the service-account files: all of them unless the pod sets
    /// `automountServiceAccountToken: false`; then those that mount the service-account
    /// projection (a `projected` volume with a `serviceAccountToken` source) at the
    /// standard path, as a real kubelet serves such a manifest.
    service_account_containers: std::collections::BTreeSet<String>,
    /// The pod's Secret and ConfigMap volumes: read-only inside its containers, as a real
    /// kubelet mounts them (where containers run in their own mount namespaces).
    read_only_volumes: Vec<String>,
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

impl Shared {
    fn pod_dns(&self) -> bool {
        self.mount_namespaces && self.config.cluster_dns.is_some()
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
    /// Claims whose directory this kubelet made or used (`(namespace, name)`): removed
    /// when the claim is deleted and no pod mounts it. (A directory kept from an earlier run
    /// is never removed before its claim has been seen.)
    claims_seen: Mutex<std::collections::HashSet<(String, String)>>,
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
        // Register the node, as a kubelet does at start (`kubectl get nodes`).
        {
            let mut s = store.write().expect("store lock");
            if s.get("nodes", "", &config.node_name).is_none() {
                let nodes = crate::resources::lookup("", "v1", "nodes").expect("nodes served");
                let _ = crate::api::create(
                    &mut s,
                    nodes,
                    "",
                    crate::kinds::node::registration(
                        &config.node_name,
                        &config.host_ip.to_string(),
                    ),
                    &crate::api::WriteOptions::default(),
                );
            }
        }
        let shared = Arc::new(Shared {
            store,
            config,
            pods: Mutex::new(HashMap::new()),
            next_ip: Mutex::new(0),
            stopping: watch::channel(false).0,
            mount_namespaces,
            claims_seen: Mutex::new(Default::default()),
        });
        let task = tokio::spawn(sync_loop(shared.clone()));
        Ok(Self { shared, task })
    }

    /// Whether containers see the service-account files at their in-cluster path (root) or
    /// through `KUBECONFIG`.
    pub fn in_cluster_files(&self) -> bool {
        self.shared.mount_namespaces
    }

    /// Whether pods resolve cluster DNS names: a cluster DNS server was given and each
    /// container gets its own `/etc/resolv.conf` and `/etc/hosts` (mount namespaces, root).
    pub fn pod_dns(&self) -> bool {
        self.shared.pod_dns()
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
    // Claims that pods (running or not yet removed) mount.
    let mounted: std::collections::HashSet<(String, String)> = pods
        .iter()
        .flat_map(|p| {
            let ns = meta_str(p, "namespace").unwrap_or_default().to_string();
            p.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(move |v| {
                    v.pointer("/persistentVolumeClaim/claimName")
                        .and_then(Value::as_str)
                        .map(|c| (ns.clone(), c.to_string()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
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
    release_claims(shared, &mounted);
}

/// Removes the directories of deleted claims that no pod mounts any more (the real
/// provisioner deletes a volume whose claim is gone, under the `Delete` reclaim policy).
fn release_claims(shared: &Shared, mounted: &std::collections::HashSet<(String, String)>) {
    let existing: std::collections::HashSet<(String, String)> = {
        let s = shared.store.read().expect("store lock");
        s.list("persistentvolumeclaims", None)
            .iter()
            .map(|c| {
                (
                    meta_str(c, "namespace").unwrap_or_default().to_string(),
                    meta_str(c, "name").unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let mut seen = shared.claims_seen.lock().expect("claims lock");
    let gone: Vec<(String, String)> = seen
        .iter()
        .filter(|c| !existing.contains(*c) && !mounted.contains(*c))
        .cloned()
        .collect();
    for (ns, name) in gone {
        let _ = std::fs::remove_dir_all(shared.config.claims_dir.join(&ns).join(&name));
        seen.remove(&(ns, name));
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
        service_account_containers: spec
            .spec
            .as_ref()
            .map(volumes::service_account_containers)
            .unwrap_or_default(),
        read_only_volumes: spec
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| v.secret.is_some() || v.config_map.is_some())
            .map(|v| v.name.clone())
            .collect(),
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
fn base_env(shared: &Shared, rt: &PodRuntime, container: &str) -> Vec<(String, String)> {
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
    if !shared.mount_namespaces && rt.service_account_containers.contains(container) {
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
