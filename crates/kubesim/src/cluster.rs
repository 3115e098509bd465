//! A whole single-node cluster in one process: the API server, the StatefulSet controller, the
//! kubelet and service proxies, with a set of manifests applied. `redis-k8s-election local`
//! is this plus a live table; the failover benchmark and the fault-injection suite use it to
//! run the shipped manifests as pods and to reach into them (process IDs, tokens, faults).

use crate::controllers::StatefulSetController;
use crate::dns::DnsServer;
use crate::kubelet::plan::ImageRule;
use crate::kubelet::{ClusterDns, Kubelet, KubeletConfig};
use crate::manifest::{self, Applied, ManifestError};
use crate::proxy::{ServicePort, ServiceProxy};
use crate::{ApiServer, Config};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server could not listen.
    #[error("the API server cannot listen on {listen}: {source}")]
    ApiServer {
        listen: SocketAddr,
        source: std::io::Error,
    },
    /// A service proxy could not listen.
    #[error("Service {service}: cannot listen on {listen}: {source}")]
    Proxy {
        service: String,
        listen: SocketAddr,
        source: std::io::Error,
    },
    /// Files of the cluster (kubeconfig, node directory) could not be written.
    #[error("{what}: {source}")]
    Files {
        what: String,
        source: std::io::Error,
    },
    /// A manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Namespace of the applied objects (created unless `default`).
    pub namespace: String,
    /// Address of the API server and the proxies.
    pub address: IpAddr,
    /// API server port (0: any free one).
    pub api_port: u16,
    /// Pod IPs the kubelet hands out.
    pub pod_ips: Vec<Ipv4Addr>,
    /// Where the kubeconfig and the node's files go (must exist).
    pub state_dir: PathBuf,
    /// Where the node keeps PersistentVolumeClaims' directories; `<state_dir>/node/claims`
    /// when `None`.
    pub claims_dir: Option<PathBuf>,
    /// Images the kubelet can run.
    pub images: Vec<ImageRule>,
    /// Service proxies to start: (Service, Service port, local port; 0 for any free one).
    pub proxies: Vec<(String, u16, u16)>,
    /// The kubelet's CrashLoopBackOff (first delay, longest delay); Kubernetes' 10 s / 5 min
    /// when `None`.
    pub crash_backoff: Option<(Duration, Duration)>,
    /// Where the cluster's DNS server listens (UDP port 53, which needs root); `None`: no
    /// cluster DNS. Each cluster on a machine needs an address of its own.
    pub dns_address: Option<IpAddr>,
    /// Run a node (the kubelet). Without one, pods stay as written: whoever made them runs
    /// their processes (a test harness that starts each sidecar itself).
    pub node: bool,
    /// More administrator bearer tokens besides the generated one (one per client, so that
    /// faults can target one client's API access).
    pub extra_admin_tokens: Vec<String>,
}

impl ClusterConfig {
    /// A cluster in `default` on `address` with a free API port, files under `state_dir`,
    /// no node, no images, no proxies: set what a caller needs on top.
    pub fn new(address: IpAddr, state_dir: PathBuf) -> Self {
        Self {
            namespace: "default".into(),
            address,
            api_port: 0,
            pod_ips: Vec::new(),
            state_dir,
            claims_dir: None,
            images: Vec::new(),
            proxies: Vec::new(),
            crash_backoff: None,
            dns_address: None,
            node: false,
            extra_admin_tokens: Vec::new(),
        }
    }
}

/// A running cluster.
pub struct Cluster {
    /// The API server (in process: tests and tools reach its store directly).
    pub server: ApiServer,
    /// The node's kubelet, when it runs one ([`ClusterConfig::node`]).
    pub kubelet: Option<Kubelet>,
    /// An administrator kubeconfig (`<state_dir>/kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The administrator's bearer token.
    pub admin_token: String,
    /// What applying the manifests did, one entry per object.
    pub applied: Vec<Applied>,
    namespace: String,
    controller: Option<StatefulSetController>,
    proxies: Vec<(String, ServiceProxy)>,
    dns: Option<DnsServer>,
}

impl Cluster {
    /// Starts everything and applies `objects` (as `kubectl apply` would) into the namespace.
    pub async fn start(config: ClusterConfig, objects: &[Value]) -> Result<Self, ClusterError> {
        let admin_token = crate::util::random_token("kubesim-admin-");
        let listen = SocketAddr::new(config.address, config.api_port);
        let mut server_config = Config::new(listen, admin_token.clone());
        server_config
            .admin_tokens
            .extend(config.extra_admin_tokens.iter().cloned());
        let server = ApiServer::start(server_config)
            .await
            .map_err(|source| ClusterError::ApiServer { listen, source })?;
        let kubeconfig = config.state_dir.join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig, &admin_token, &config.namespace)
            .map_err(|source| ClusterError::Files {
                what: format!("writing {}", kubeconfig.display()),
                source,
            })?;
        if config.namespace != "default" {
            let ns = vec![
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": config.namespace}}),
            ];
            server.with_store(|s| manifest::apply(s, "", &ns))?;
        }
        // Cluster DNS on the cluster's address, port 53 (resolvers take no port, and binding
        // it needs root, as the kubelet's mount namespaces do): without it pods resolve only
        // through the node's resolver, i.e. no cluster names.
        let dns = if let (true, Some(ip)) = (config.node, config.dns_address) {
            let listen = SocketAddr::new(ip, 53);
            match DnsServer::start(server.store(), listen, crate::dns::DEFAULT_DOMAIN).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(%listen, error = %e, "cluster DNS not started: pods resolve no cluster names");
                    None
                }
            }
        } else {
            None
        };
        let kubelet = if config.node {
            let mut kubelet_config = KubeletConfig::new(
                "kubesim-node",
                config.pod_ips.clone(),
                config.state_dir.join("node"),
                config.images.clone(),
                server.addr(),
                server.ca_pem(),
            );
            if let Some(dir) = &config.claims_dir {
                kubelet_config.claims_dir = dir.clone();
            }
            if let Some(IpAddr::V4(nameserver)) = dns.as_ref().map(|d| d.addr().ip()) {
                kubelet_config.cluster_dns = Some(ClusterDns {
                    nameserver,
                    domain: crate::dns::DEFAULT_DOMAIN.into(),
                });
            }
            if let Some((initial, max)) = config.crash_backoff {
                kubelet_config.backoff_initial = initial;
                kubelet_config.backoff_max = max;
            }
            server.set_pod_dirs(kubelet_config.state_dir.join("pods"));
            let kubelet = Kubelet::start(server.store(), kubelet_config).map_err(|source| {
                ClusterError::Files {
                    what: "starting the kubelet".into(),
                    source,
                }
            })?;
            Some(kubelet)
        } else {
            None
        };
        let controller = Some(StatefulSetController::start(server.store()));
        let applied = server.with_store(|s| manifest::apply(s, &config.namespace, objects))?;
        let mut proxies = Vec::new();
        for (service, port, local_port) in &config.proxies {
            let sp = ServicePort {
                namespace: config.namespace.clone(),
                service: service.clone(),
                port: *port,
            };
            let listen = SocketAddr::new(config.address, *local_port);
            let proxy = ServiceProxy::start(server.store(), sp, listen)
                .await
                .map_err(|source| ClusterError::Proxy {
                    service: service.clone(),
                    listen,
                    source,
                })?;
            proxies.push((service.clone(), proxy));
        }
        Ok(Self {
            server,
            kubelet,
            kubeconfig,
            admin_token,
            applied,
            namespace: config.namespace,
            controller,
            proxies,
            dns,
        })
    }

    /// The namespace the manifests went into.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Applies more objects (as `kubectl apply` would) into the namespace: for a caller that
    /// chooses its manifests after seeing what the node can do ([`Cluster::pod_dns`]).
    pub fn apply(&mut self, objects: &[Value]) -> Result<(), ClusterError> {
        let ns = self.namespace.clone();
        let applied = self
            .server
            .with_store(|s| manifest::apply(s, &ns, objects))?;
        self.applied.extend(applied);
        Ok(())
    }

    /// Whether pods resolve cluster DNS names (`<pod>.<service>.<ns>.svc.cluster.local`):
    /// the DNS server runs and the kubelet gives each container the pod's `resolv.conf`
    /// (both need root). Where not, pods see the node's resolver, and manifests that address
    /// peers by name must announce pod IPs instead.
    pub fn pod_dns(&self) -> bool {
        self.kubelet.as_ref().is_some_and(Kubelet::pod_dns)
    }

    /// Where the cluster's DNS server listens (UDP), when it runs.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(DnsServer::addr)
    }

    /// Where the proxy of `service` listens.
    pub fn proxy_addr(&self, service: &str) -> Option<SocketAddr> {
        self.proxies
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, p)| p.addr())
    }

    /// A key of a Secret in the namespace, decoded.
    pub fn secret_value(&self, secret: &str, key: &str) -> Option<String> {
        use base64::Engine;
        self.server.with_store(|s| {
            let obj = s.get("secrets", &self.namespace, secret)?;
            let b64 = obj.pointer(&format!("/data/{key}"))?.as_str()?.to_string();
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok()
        })
    }

    /// A pod's `status.podIP`.
    pub fn pod_ip(&self, pod: &str) -> Option<Ipv4Addr> {
        self.server.with_store(|s| {
            s.get("pods", &self.namespace, pod)?
                .pointer("/status/podIP")?
                .as_str()?
                .parse()
                .ok()
        })
    }

    /// The names of the namespace's pods.
    pub fn pod_names(&self) -> Vec<String> {
        self.server.with_store(|s| {
            s.list("pods", Some(&self.namespace))
                .iter()
                .filter_map(|p| p.pointer("/metadata/name")?.as_str().map(str::to_string))
                .collect()
        })
    }

    /// The process ID of a running container.
    pub fn container_pid(&self, pod: &str, container: &str) -> Option<u32> {
        self.kubelet
            .as_ref()?
            .container_pid(&self.namespace, pod, container)
    }

    /// The service-account token a running pod's containers use (what API faults target).
    pub fn pod_token(&self, pod: &str) -> Option<String> {
        let dir = self.kubelet.as_ref()?.pod_dir(&self.namespace, pod)?;
        std::fs::read_to_string(dir.join("serviceaccount/token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    /// Deletes a pod as `kubectl delete pod` does (its grace period, preStop, SIGTERM).
    pub fn delete_pod(&self, pod: &str) -> Result<(), crate::ApiError> {
        let rt = crate::resources::lookup("", "v1", "pods").expect("pods are served");
        self.server.with_store(|s| {
            crate::api::delete(s, rt, &self.namespace, pod, &Default::default()).map(|_| ())
        })
    }

    /// Deletes every pod of the namespace at once, as `kubectl delete pods --all` does, and
    /// waits (bounded by `within`) until they are gone. All are marked deleted in one write
    /// before any container hears SIGTERM, so a leader never hands over to a pod that is
    /// going too.
    pub async fn delete_all_pods(&self, within: Duration) {
        // Stop re-creating them first.
        let names = self.pod_names();
        let rt = crate::resources::lookup("", "v1", "pods").expect("pods are served");
        self.server.with_store(|s| {
            for name in &names {
                let _ = crate::api::delete(s, rt, &self.namespace, name, &Default::default());
            }
        });
        let until = Instant::now() + within;
        while Instant::now() < until && !self.pod_names().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the pods (as a node shutdown does), the proxies, the kubelet and the server.
    pub async fn shutdown(mut self) {
        drop(self.controller.take());
        self.delete_all_pods(Duration::from_secs(40)).await;
        self.proxies.clear();
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.shutdown().await;
        }
        self.server.shutdown().await;
    }
}
