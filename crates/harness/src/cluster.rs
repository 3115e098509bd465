//! A group from the shipped manifests (`deploy/kubernetes/`) run by kubesim's kubelet, as
//! `redis-k8s-election local` runs it: the failover benchmark and the fault-injection suite
//! use it, because their faults are the pod's (kill a container, delete the pod, cut one pod's
//! API access) and their clients go through the `redis-leader` Service's proxy.

use super::measure::Ack;
use kubesim::cluster::{Cluster, ClusterConfig};
use kubesim::manifest;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The sidecar's timing: the shipped defaults, or a faster profile set through the
/// StatefulSet's environment (`LEASE_DURATION`, …), as an operator would.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Short name for tables (`default`, `fast`).
    pub name: &'static str,
    /// Environment added to the sidecar container.
    pub env: Vec<(&'static str, &'static str)>,
    /// The lease duration it implies (for budgets).
    pub lease: Duration,
}

impl Profile {
    /// The shipped configuration: lease 10 s, renew deadline 6 s, retry period 1 s.
    pub fn default_timing() -> Self {
        Self {
            name: "default (10s/6s/1s)",
            env: Vec::new(),
            lease: Duration::from_secs(10),
        }
    }

    /// Lease 3 s, renew deadline 2 s, retry period 250 ms (request timeout 500 ms, Redis
    /// timeout 150 ms).
    pub fn fast() -> Self {
        Self {
            name: "fast (3s/2s/250ms)",
            env: vec![
                ("LEASE_DURATION", "3s"),
                ("RENEW_DEADLINE", "2s"),
                ("RETRY_PERIOD", "250ms"),
                ("REQUEST_TIMEOUT", "500ms"),
                ("REDIS_TIMEOUT", "150ms"),
            ],
            lease: Duration::from_secs(3),
        }
    }

    /// The fast profile with the RPO mode on as a user would turn it on: `MIN_REPLICAS=1`
    /// (and the shipped `MAX_REPLICA_LAG`, 10 s).
    pub fn fast_rpo() -> Self {
        let mut p = Self::fast();
        p.name = "fast, RPO mode (MIN_REPLICAS=1)";
        p.env.push(("MIN_REPLICAS", "1"));
        p
    }

    /// The fast profile, for a group in persistence mode `none` (the component goes in the
    /// [`Overrides`]); only the name differs, for tables.
    pub fn fast_none() -> Self {
        let mut p = Self::fast();
        p.name = "fast, persistence none";
        p
    }
}

/// The Redis port of every pod (the manifests' `containerPort`).
pub const REDIS_PORT: u16 = 6379;
/// The port of the replication relay that [`KubeGroup::start_relayed`] puts in front of each
/// pod's Redis for its peers.
pub const RELAY_PORT: u16 = 6390;

/// A free loopback /24's first `n` host addresses (from .2), none of them in use on port
/// 6379: one group's pod network.
pub fn free_pod_network(n: usize) -> Vec<Ipv4Addr> {
    loop {
        let (a, b) = (rand::random_range(100..250u8), rand::random_range(0..250u8));
        let ips: Vec<Ipv4Addr> = (0..n as u8)
            .map(|i| Ipv4Addr::new(127, a, b, 2 + i))
            .collect();
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, REDIS_PORT)).is_ok())
        {
            return ips;
        }
    }
}

/// The cluster DNS address of a pod network from [`free_pod_network`]: its /24's `.1`
/// (pods start at `.2`), free as long as no other group took the same /24.
pub fn cluster_dns_addr(pod_ips: &[Ipv4Addr]) -> Ipv4Addr {
    let [a, b, c, _] = pod_ips.first().expect("a pod network").octets();
    Ipv4Addr::new(a, b, c, 1)
}

/// Changes to the shipped manifests for one group: environment added to the sidecar (after
/// the profile's), and Redis arguments whose value is replaced (`--flag`, new value).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub sidecar_env: Vec<(&'static str, &'static str)>,
    pub redis_args: Vec<(&'static str, &'static str)>,
    /// A shipped component applied on top (`components/persistence-none`, ...).
    pub component: Option<&'static str>,
    /// Lines appended to the `redis-persistence` ConfigMap's `persistence.conf` (later lines
    /// win: `maxmemory 0` for a benchmark's large data set).
    pub persistence_conf: Option<&'static str>,
}

/// The shipped manifests with `replicas` pods, the profile's and `extra_env` environment on
/// the sidecar, the values of the Redis arguments in `redis_args` replaced, and `component`
/// (a shipped kustomize component) applied.
pub fn shipped_objects(
    replicas: usize,
    profile: &Profile,
    extra_env: &[(&str, &str)],
    redis_args: &[(&str, &str)],
    component: Option<&str>,
) -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let extra: Vec<String> = component.map(str::to_string).into_iter().collect();
    let mut objects = manifest::load_dir_with(&dir, &extra).expect("the shipped manifests load");
    manifest::set_replicas(&mut objects, "redis", replicas);
    let set = objects
        .iter_mut()
        .find(|o| o["kind"] == "StatefulSet")
        .expect("a StatefulSet");
    let containers = set
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
        .expect("containers");
    let sidecar = containers
        .iter_mut()
        .find(|c| c["name"] == "sidecar")
        .expect("the sidecar container");
    let env = sidecar["env"].as_array_mut().expect("env");
    for (k, v) in profile.env.iter().chain(extra_env) {
        env.retain(|e| e["name"] != *k);
        env.push(json!({"name": k, "value": v}));
    }
    let redis = containers
        .iter_mut()
        .find(|c| c["name"] == "redis")
        .expect("the redis container");
    let args = redis["args"].as_array_mut().expect("redis args");
    for (flag, value) in redis_args {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("the shipped Redis arguments have no {flag}"));
        args[at + 1] = json!(value);
    }
    // The manifests ship no credentials (issue 17): each group gets its own, as `local` does.
    redis_k8s_election::credentials::with_auth_secret(objects)
}

/// A running group on kubesim.
pub struct KubeGroup {
    pub cluster: Cluster,
    /// The application user's Redis password (Redis' `default` user) from the Secret.
    pub password: String,
    /// The `admin` user's password from the Secret: the harness observes Redis as it (the
    /// application user may not read the configuration a probe reads).
    pub admin_password: String,
    /// The admin token file for `switchover`.
    pub admin_token_file: PathBuf,
    /// Every address the kubelet may give a pod.
    pub pod_ips: Vec<Ipv4Addr>,
    pub replicas: usize,
    pub relay: Option<super::faults::Relay>,
    /// Pods announce DNS names (pod DNS works and no relay stands in front).
    pub dns_names: bool,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl KubeGroup {
    /// Starts `replicas` pods of the shipped manifests with the profile's timing.
    pub async fn start(replicas: usize, profile: &Profile) -> Self {
        Self::start_full(replicas, profile, false, &Overrides::default()).await
    }

    /// As [`KubeGroup::start`], with changes to the shipped manifests.
    pub async fn start_with(replicas: usize, profile: &Profile, overrides: &Overrides) -> Self {
        Self::start_full(replicas, profile, false, overrides).await
    }

    /// As [`KubeGroup::start`], but each pod announces a relay (`POD_IP:6390`) in front of its
    /// Redis, so that a test can cut one pod off from its peers' replication and probes while
    /// clients and its own sidecar still reach it.
    pub async fn start_relayed(replicas: usize, profile: &Profile) -> Self {
        Self::start_full(replicas, profile, true, &Overrides::default()).await
    }

    /// As [`KubeGroup::start_relayed`], with changes to the shipped manifests.
    pub async fn start_relayed_with(
        replicas: usize,
        profile: &Profile,
        overrides: &Overrides,
    ) -> Self {
        Self::start_full(replicas, profile, true, overrides).await
    }

    async fn start_full(
        replicas: usize,
        profile: &Profile,
        relayed: bool,
        overrides: &Overrides,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Room for every pod to be re-created once on a new address.
        let pod_ips = free_pod_network(replicas * 2 + 1);
        let relay = relayed.then(|| super::faults::Relay::start(&pod_ips, RELAY_PORT, REDIS_PORT));
        let config = ClusterConfig {
            namespace: "default".into(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_port: 0,
            pod_ips: pod_ips.clone(),
            state_dir: dir.path().to_path_buf(),
            images: redis_k8s_election::local::images(&super::BIN),
            proxies: vec![("redis-leader".into(), REDIS_PORT, 0)],
            // The first restart of a crashed container is immediate, as in Kubernetes; later
            // ones wait at most a second instead of minutes, so that runs and fault schedules
            // that crash the same pod again do not wait on back-off.
            crash_backoff: Some((Duration::from_millis(250), Duration::from_secs(1))),
            // The pod network's .1, as `local` has it.
            dns_address: Some(IpAddr::V4(cluster_dns_addr(&pod_ips))),
            node: true,
            extra_admin_tokens: Vec::new(),
            claims_dir: None,
        };
        // Started empty: the manifests depend on whether pods resolve DNS names.
        let mut cluster = Cluster::start(config, &[])
            .await
            .expect("the local cluster starts");
        let mut extra = overrides.sidecar_env.clone();
        if relayed {
            extra.push(("ANNOUNCE_ADDR", "$(POD_IP):6390"));
        } else if !cluster.pod_dns() {
            // What components/announce-pod-ip does (and `local` applies) without pod DNS.
            extra.push(("ANNOUNCE_ADDR", "$(POD_IP):6379"));
        }
        let mut objects = shipped_objects(
            replicas,
            profile,
            &extra,
            &overrides.redis_args,
            overrides.component,
        );
        if let Some(more) = overrides.persistence_conf {
            let cm = objects
                .iter_mut()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "redis-persistence")
                .expect("the shipped persistence ConfigMap");
            let conf = cm["data"]["persistence.conf"].as_str().unwrap_or_default();
            cm["data"]["persistence.conf"] = json!(format!("{}\n{more}\n", conf.trim_end()));
        }
        cluster
            .apply(&objects)
            .expect("the shipped manifests apply");
        let dns_names = !relayed && cluster.pod_dns();
        let password = cluster
            .secret_value("redis-auth", "password")
            .expect("the shipped Secret has a password")
            .trim()
            .to_string();
        let admin_password = cluster
            .secret_value("redis-auth", "admin-password")
            .expect("the Secret has an admin password")
            .trim()
            .to_string();
        let admin_token_file = dir.path().join("admin-token");
        std::fs::write(
            &admin_token_file,
            cluster
                .secret_value("redis-auth", "admin-token")
                .expect("the shipped Secret has an admin token")
                .trim(),
        )
        .unwrap();
        Self {
            cluster,
            password,
            admin_password,
            admin_token_file,
            pod_ips,
            replicas,
            relay,
            dns_names,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// The host `pod` announces to its peers (what its replicas' `master_host` reads): its
    /// DNS name where pods resolve names, else its IP (`None` while it has none).
    pub fn announced_host(&self, pod: &str) -> Option<String> {
        if self.dns_names {
            Some(format!("{pod}.redis-headless.default.svc.cluster.local"))
        } else {
            self.cluster.pod_ip(pod).map(|ip| ip.to_string())
        }
    }

    /// Where clients write: the `redis-leader` Service's proxy.
    /// The `admin` user, as the harness observes the group's Redis.
    pub fn admin(&self) -> super::measure::Auth<'_> {
        super::measure::Auth {
            user: Some("admin"),
            password: &self.admin_password,
        }
    }

    pub fn leader_service(&self) -> SocketAddr {
        self.cluster.proxy_addr("redis-leader").expect("started")
    }

    /// Every address a pod's Redis may listen on (for samplers that must not miss one).
    pub fn all_redis_addrs(&self) -> Vec<SocketAddr> {
        self.pod_ips
            .iter()
            .map(|ip| SocketAddr::new(IpAddr::V4(*ip), REDIS_PORT))
            .collect()
    }

    /// The Lease's holder.
    pub fn holder(&self) -> Option<String> {
        self.cluster.server.with_store(|s| {
            s.get("leases", "default", "redis")?
                .pointer("/spec/holderIdentity")?
                .as_str()
                .filter(|h| !h.is_empty())
                .map(str::to_string)
        })
    }

    /// The Lease's epoch (`leaseTransitions`).
    pub fn epoch(&self) -> Option<u64> {
        self.cluster.server.with_store(|s| {
            s.get("leases", "default", "redis")?
                .pointer("/spec/leaseTransitions")?
                .as_u64()
        })
    }

    /// The Lease's role-change history, oldest first.
    pub fn history(&self) -> Vec<kube_coord::history::Entry> {
        let stored = self.cluster.server.with_store(|s| {
            s.get("leases", "default", "redis")
                .and_then(|l| {
                    l.pointer("/metadata/annotations")?
                        .get(kube_coord::HISTORY_ANNOTATION)?
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_default()
        });
        kube_coord::history::parse(&stored)
    }

    /// Asserts that every write in `acks` is in the list `key` on the Redis at `master`
    /// (with the group's password), naming the first missing ones and the pods' logs.
    pub async fn assert_none_lost(&self, master: SocketAddr, key: &str, acks: &[Ack]) {
        let lost = super::measure::lost_writes(master, Some(&self.password), key, acks)
            .await
            .unwrap_or_else(|| panic!("the list {key} on {master} is not readable"));
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes lost (first: {:?})\n{}",
            lost.len(),
            acks.len(),
            &lost[..lost.len().min(10)],
            self.logs(40)
        );
    }

    /// The ready endpoints of `redis-leader` (where the proxy sends new connections).
    pub fn routed(&self) -> Vec<SocketAddr> {
        let sp = kubesim::proxy::ServicePort {
            namespace: "default".into(),
            service: "redis-leader".into(),
            port: REDIS_PORT,
        };
        self.cluster
            .server
            .with_store(|s| kubesim::proxy::ready_endpoints(s, &sp))
    }

    /// The running (not terminating) pods that are Ready, with their IPs.
    pub fn ready_pods(&self) -> Vec<(String, Ipv4Addr)> {
        self.cluster.server.with_store(|s| {
            s.list("pods", Some("default"))
                .iter()
                .filter(|p| !kubesim::controllers::is_terminating(p))
                .filter(|p| {
                    p.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
                .filter_map(|p| {
                    Some((
                        p.pointer("/metadata/name")?.as_str()?.to_string(),
                        p.pointer("/status/podIP")?.as_str()?.parse().ok()?,
                    ))
                })
                .collect()
        })
    }

    /// What still keeps the group from being converged, or the leader pod when it is: every
    /// pod Ready, one Lease holder, the Service routing to it alone, its Redis writable and
    /// every other Redis replicating from it with the link up.
    pub async fn converged_now(&self) -> Result<(String, Ipv4Addr), String> {
        let pods = self.ready_pods();
        if pods.len() != self.replicas {
            return Err(format!("{} of {} pods ready", pods.len(), self.replicas));
        }
        let holder = self.holder().ok_or("no lease holder")?;
        let (_, ip) = pods
            .iter()
            .find(|(n, _)| *n == holder)
            .ok_or_else(|| format!("holder {holder} is not a ready pod"))?;
        let routed = self.routed();
        if routed != [SocketAddr::new(IpAddr::V4(*ip), REDIS_PORT)] {
            return Err(format!(
                "redis-leader routes to {routed:?}, holder {holder}"
            ));
        }
        let addrs: Vec<SocketAddr> = pods
            .iter()
            .map(|(_, ip)| SocketAddr::new(IpAddr::V4(*ip), REDIS_PORT))
            .collect();
        let master = self
            .relay
            .as_ref()
            .map_or(SocketAddr::new(IpAddr::V4(*ip), REDIS_PORT), |_| {
                SocketAddr::new(IpAddr::V4(*ip), RELAY_PORT)
            });
        let host = self
            .announced_host(&holder)
            .ok_or_else(|| format!("{holder} has no IP"))?;
        super::measure::replicas_follow(&addrs, master, &host, Some(self.admin())).await?;
        // Every sidecar agrees: the holder's says it leads, the others' that they replicate
        // (a pod's Ready condition lags its sidecar by up to a probe period).
        for (pod, ip) in &pods {
            let path = if *pod == holder { "leader" } else { "replica" };
            let code = self
                .http
                .get(format!("http://{ip}:9121/{path}"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if code != 200 {
                return Err(format!("{pod}'s sidecar answers {code} to /{path}"));
            }
        }
        Ok((holder, *ip))
    }

    /// Removes the RDB file in a pod's data volume (left by the last full sync it served or
    /// received), so that its Redis restarts empty and has to full-sync.
    pub fn remove_rdb(&self, pod: &str) {
        if let Some(dir) = self
            .cluster
            .kubelet
            .as_ref()
            .and_then(|k| k.pod_dir("default", pod))
        {
            let _ = std::fs::remove_file(dir.join("volumes/data/dump.rdb"));
        }
    }

    /// A pod's sidecar `/status` (`Null` when it does not answer).
    pub async fn status_json(&self, pod: &str) -> Value {
        let Some(ip) = self.cluster.pod_ip(pod) else {
            return Value::Null;
        };
        match self
            .http
            .get(format!("http://{ip}:9121/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Waits until converged; the leader pod and its IP, or what was still missing.
    pub async fn converged(&self, within: Duration) -> Result<(String, Ipv4Addr), String> {
        let deadline = Instant::now() + within;
        loop {
            match self.converged_now().await {
                Ok(l) => return Ok(l),
                Err(why) if Instant::now() >= deadline => return Err(why),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// `redis-k8s-election switchover` against this group; success and its output.
    pub async fn switchover(&self) -> (bool, String) {
        let out = tokio::process::Command::new(&*super::BIN)
            .arg("switchover")
            .arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig)
            .arg("--admin-token-file")
            .arg(&self.admin_token_file)
            .env_remove("KUBECONFIG")
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The last lines of every container log of the pods that exist now.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for pod in self.cluster.pod_names() {
            let Some(dir) = self
                .cluster
                .kubelet
                .as_ref()
                .and_then(|k| k.pod_dir("default", &pod))
            else {
                continue;
            };
            for c in ["sidecar", "redis"] {
                let text =
                    std::fs::read_to_string(dir.join(format!("logs/{c}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                out += &format!("--- {pod}/{c}\n");
                for l in tail.into_iter().rev() {
                    out += l;
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The group's directory (kubeconfig, pods' files).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops every pod and the cluster.
    pub async fn stop(self) {
        self.cluster.shutdown().await;
    }
}
