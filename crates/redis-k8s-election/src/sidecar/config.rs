//! The `sidecar` command's flags (each also read from an environment variable) and their
//! validation into a [`SidecarConfig`]. Every error names the flag to change.

use super::failsafe::PeerKey;
use election::timing::{Timing, TimingError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `redis-k8s-election sidecar` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct SidecarArgs {
    /// Kubeconfig file; without it, the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace; default: the kubeconfig's or the in-cluster namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// The Lease the group competes for.
    #[arg(long, env = "LEASE_NAME")]
    pub lease_name: String,
    /// The election identity and this sidecar's own Pod; default: the host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The local Redis.
    #[arg(long, env = "REDIS_ADDR", default_value = "127.0.0.1:6379")]
    pub redis_addr: String,
    /// Redis ACL user.
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// File holding the Redis password (never taken on the command line).
    #[arg(long, env = "REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
    /// The ACL user replicas authenticate as to their master (`masteruser`); default: the
    /// sidecar's own (`--redis-username`).
    #[arg(long, env = "REPLICATION_USER")]
    pub replication_user: Option<String>,
    /// File holding that user's password (`masterauth`); default: the sidecar's own.
    #[arg(long, env = "REPLICATION_PASSWORD_FILE")]
    pub replication_password_file: Option<PathBuf>,
    /// How peers reach this Redis (`host:port`).
    #[arg(long, env = "ANNOUNCE_ADDR")]
    pub announce_addr: Option<String>,
    /// Headless Service for the default announce address `<pod>.<svc>.<ns>.svc.<domain>:<port>`.
    #[arg(long, env = "HEADLESS_SERVICE")]
    pub headless_service: Option<String>,
    /// Cluster DNS domain.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// This pod's IP, for the default announce address without a headless Service.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<String>,
    /// Service whose selector the leader points at its own pod.
    #[arg(long, env = "LEADER_SERVICE")]
    pub leader_service: Option<String>,
    /// Pod label set to `leader` / `replica`.
    #[arg(long, env = "ROLE_LABEL", default_value = "redis-role")]
    pub role_label: String,
    /// Lease duration (LD).
    #[arg(long, env = "LEASE_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Renew deadline (RD).
    #[arg(long, env = "RENEW_DEADLINE", default_value = "6s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// Retry period (RP).
    #[arg(long, env = "RETRY_PERIOD", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
    /// Timeout of each Kubernetes request.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Bound on each Redis command: a Redis slower than this counts as hung.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,
    /// On SIGTERM, how long a leader may spend handing over to a caught-up replica (keep it
    /// inside the pod's termination grace period).
    #[arg(long, env = "HANDOVER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handover_timeout: Duration,
    /// How often a leader records a checkpoint in its data (one small key, replicated and
    /// persisted with the data), so that a cold start can tell the freshest copy (docs/
    /// deploy.md, "Persistence"). 0 turns checkpoints off.
    #[arg(long, env = "CHECKPOINT_INTERVAL", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// After a whole-group restart, how long a pod waits for a majority of the group's
    /// members to come up before it runs for the lease with the members present.
    #[arg(long, env = "COLD_START_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub cold_start_wait: Duration,
    /// Leadership priority: lower leads first, 0 = never leads.
    #[arg(long, env = "PRIORITY", default_value_t = kube_coord::wire::DEFAULT_PRIORITY)]
    pub priority: u32,
    /// Largest replication lag (bytes) at which a replica is ready.
    #[arg(long, env = "MAX_LAG", default_value_t = 1_048_576)]
    pub max_lag: u64,
    /// RPO mode: the leader's Redis refuses writes (`-NOREPLICAS`) unless at least this many
    /// replicas acknowledged the stream within `--max-replica-lag` (Redis'
    /// `min-replicas-to-write`). 0 turns it off. Bounds what a leader that lost its
    /// replicas, or a frozen leader resumed after a failover, can acknowledge alone; a group
    /// with fewer live replicas stops taking writes.
    #[arg(long, env = "MIN_REPLICAS", default_value_t = 0)]
    pub min_replicas: u32,
    /// RPO mode: how recently a replica must have acknowledged to count (Redis'
    /// `min-replicas-max-lag`; whole seconds, at least 1 s; replicas acknowledge once a
    /// second).
    #[arg(long, env = "MAX_REPLICA_LAG", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_replica_lag: Duration,
    /// HTTP API address.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9121")]
    pub http_addr: SocketAddr,
    /// Most HTTP connections open at once: a new one closes the oldest, so probes are always
    /// answered.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 128)]
    pub http_max_connections: usize,
    /// Time an HTTP client has to send a request's headers; also the longest idle time of a
    /// kept-alive connection. A request's body must arrive within twice this.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Duration,
    /// File holding the bearer token that HTTP requests changing state (switchover) must
    /// carry. Without it those requests are refused. Read on each request, so a rotated
    /// Secret takes effect without a restart.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the group's peer key (at least 16 bytes, the same in every pod): it signs
    /// the failsafe messages between sidecars. Never logged.
    #[arg(long, env = "PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Failsafe (docs/sidecar.md, "Control-plane outages"): keep a leader that every member
    /// confirms writable while the Kubernetes API is unavailable. `auto` turns it on when a
    /// peer key is configured.
    #[arg(long, env = "FAILSAFE", value_enum, default_value_t = FailsafeMode::Auto)]
    pub failsafe: FailsafeMode,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The Sentinel-compatible endpoint's address (`HOST:PORT`, 26379 by convention): Sentinel
    /// clients find the leader here (docs/sentinel.md). Off when not given.
    #[arg(long, env = "SENTINEL_ADDR")]
    pub sentinel_addr: Option<SocketAddr>,
    /// The master set's name the endpoint answers to.
    #[arg(long, env = "SENTINEL_MASTER_NAME", default_value = "mymaster")]
    pub sentinel_master_name: String,
    /// The addresses the endpoint hands out: pod IPs (as Sentinel does) or the announce host
    /// names (Sentinel's `announce-hostnames`).
    #[arg(long, env = "SENTINEL_ADDRESSES", value_enum, default_value_t = SentinelAddresses::Ip)]
    pub sentinel_addresses: SentinelAddresses,
    /// File holding the endpoint's password (Sentinel's `requirepass`); without it the
    /// endpoint answers anyone who can reach it (it never reveals the Redis password).
    #[arg(long, env = "SENTINEL_PASSWORD_FILE")]
    pub sentinel_password_file: Option<PathBuf>,
    /// Most connections the endpoint serves at once (more are refused with Sentinel's
    /// `max number of clients reached`).
    #[arg(long, env = "SENTINEL_MAX_CLIENTS", default_value_t = 1000)]
    pub sentinel_max_clients: usize,
    /// TLS (docs/deploy.md, "TLS"): the CA certificate (PEM, a Secret's `ca.crt`) that signed
    /// the group's certificate. With `--tls-cert-file` and `--tls-key-file` the sidecar
    /// reaches every Redis over TLS, checking its certificate, and serves the Sentinel
    /// endpoint over TLS.
    #[arg(long, env = "TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// The group's certificate (PEM, `tls.crt`): the Sentinel endpoint's, and the client
    /// certificate the sidecar shows Redis.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM, `tls.key`). Never logged.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// The name Redis' certificate must carry; default: the pod's DNS name
    /// `<pod>.<headless service>.<ns>.svc.<domain>` with `--headless-service`, else the
    /// announce address' host. Peers announced by DNS name are checked against that name.
    #[arg(long, env = "REDIS_TLS_SERVER_NAME")]
    pub redis_tls_server_name: Option<String>,
    /// Serve the HTTP API over HTTPS only, with the group's certificate (needs the three TLS
    /// files), and call the peers' APIs (failsafe messages, forwarded switchovers) over
    /// HTTPS, checking their certificates against the CA and the name Redis' is checked
    /// against: the admin token never crosses the network in the clear. Every sidecar of a
    /// group must agree; probes then need `scheme: HTTPS` (components/tls sets both).
    #[arg(long, env = "HTTP_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub http_tls: bool,
}

/// `--sentinel-addresses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SentinelAddresses {
    /// Pod IPs (`status.podIP`).
    Ip,
    /// The announce host names (`<pod>.<svc>.<ns>.svc.<domain>` with a headless Service).
    Hostname,
}

/// The Sentinel-compatible endpoint's settings.
#[derive(Clone, Debug)]
pub struct SentinelSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The master set's name.
    pub master_name: String,
    /// Which addresses it hands out.
    pub addresses: SentinelAddresses,
    /// Its password, if any.
    pub password: Option<String>,
    /// Most connections at once.
    pub max_clients: usize,
}

/// `--failsafe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailsafeMode {
    /// On when `--peer-key-file` is given.
    Auto,
    /// On; `--peer-key-file` is required.
    On,
    /// Off: a leader that cannot renew fences at its renew deadline, as client-go's does.
    Off,
}

/// A validated sidecar configuration.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// Kubeconfig path, if any.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace override.
    pub namespace: Option<String>,
    /// Lease name.
    pub lease_name: String,
    /// Pod name / identity.
    pub pod_name: String,
    /// Local Redis host.
    pub redis_host: String,
    /// Local Redis port.
    pub redis_port: u16,
    /// Redis user.
    pub redis_username: Option<String>,
    /// `masteruser` for replicas, when not `redis_username`.
    pub replication_username: Option<String>,
    /// `masterauth` for replicas, when not `redis_password`.
    pub replication_password: Option<String>,
    /// Redis password (read from the file).
    pub redis_password: Option<String>,
    /// Announce address, or how to build it once the namespace is known.
    pub announce: Announce,
    /// Leader Service.
    pub leader_service: Option<String>,
    /// Role label key.
    pub role_label: String,
    /// Election timing.
    pub timing: Timing,
    /// Redis command bound.
    pub redis_timeout: Duration,
    /// Bound on a planned hand-over.
    pub handover_timeout: Duration,
    /// Checkpoint interval (zero: none).
    pub checkpoint_interval: Duration,
    /// Cold-start wait for a majority.
    pub cold_start_wait: Duration,
    /// Priority.
    pub priority: u32,
    /// Max replica lag in bytes.
    pub max_lag: u64,
    /// RPO mode: replicas that must have acknowledged for the leader to take writes (0: off).
    pub min_replicas: u32,
    /// RPO mode: how recently, in whole seconds.
    pub max_replica_lag_secs: u32,
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// What one HTTP client may hold.
    pub http_limits: super::serve::ServeLimits,
    /// The admin bearer token's file, if state-changing requests are enabled.
    pub admin_token_file: Option<PathBuf>,
    /// The peer key, when one is configured (failsafe messages need it).
    pub peer_key: Option<Arc<PeerKey>>,
    /// Failsafe is on.
    pub failsafe: bool,
    /// This pod's IP (`POD_IP`), when known.
    pub pod_ip: Option<std::net::IpAddr>,
    /// The Sentinel-compatible endpoint, when enabled.
    pub sentinel: Option<SentinelSettings>,
    /// TLS to Redis and on the Sentinel endpoint, when configured.
    pub tls: Option<super::tls::TlsSettings>,
    /// The HTTP API over HTTPS (and peers called so); implies `tls`.
    pub http_tls: bool,
    /// `--headless-service` and `--cluster-domain`, when a headless Service is named: the
    /// pods' DNS names, which the group's certificate carries.
    pub headless: Option<(String, String)>,
}

/// How the announce address is determined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announce {
    /// Given explicitly.
    Fixed(String),
    /// `<pod>.<service>.<namespace>.svc.<domain>:<port>`, once the namespace is known.
    Headless {
        /// Headless Service name.
        service: String,
        /// Cluster domain.
        domain: String,
        /// Redis port.
        port: u16,
    },
}

impl Announce {
    /// The address in namespace `ns` for pod `pod`.
    pub fn resolve(&self, pod: &str, ns: &str) -> String {
        match self {
            Announce::Fixed(a) => a.clone(),
            Announce::Headless {
                service,
                domain,
                port,
            } => format!("{pod}.{service}.{ns}.svc.{domain}:{port}"),
        }
    }
}

/// A configuration error, naming the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value is unusable.
    #[error("--{flag}: {why}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Why.
        why: String,
    },
    /// The timing rules of DESIGN section 3 do not hold.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// The TLS files are unusable (the message names the flag).
    #[error("{0}")]
    Tls(String),
}

/// The secret in file `path` (given with `--{name}`), `trim`med; an unreadable or empty file
/// is a configuration error naming the flag (the secret itself is never in the message).
fn secret_file(
    name: &'static str,
    path: &std::path::Path,
    trim: impl Fn(&str) -> &str,
) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| flag(name, format!("cannot read {}: {e}", path.display())))?;
    let secret = trim(&text);
    if secret.is_empty() {
        return Err(flag(name, format!("{} is empty", path.display())));
    }
    if let Some(why) = credential_weakness(secret) {
        return Err(flag(name, format!("{} {why}", path.display())));
    }
    Ok(secret.to_string())
}

/// The shortest credential the sidecar accepts: 16 characters (the peer key's minimum too).
pub const MIN_CREDENTIAL_LEN: usize = 16;

/// Why `secret` must not be used as a credential, if it must not: shorter than
/// [`MIN_CREDENTIAL_LEN`], or a placeholder from an example (the manifests once shipped
/// `change-me-…` values that worked, and Redis' own example password is `foobared`). A
/// group started with a known value is open to anyone who read the same example, so the
/// sidecar refuses to start rather than run so. The secret itself is never in the answer.
pub fn credential_weakness(secret: &str) -> Option<String> {
    let folded: String = secret
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    const PLACEHOLDERS: [&str; 6] = [
        "changeme",
        "foobared",
        "replaceme",
        "yourpassword",
        "placeholder",
        "examplepassword",
    ];
    if PLACEHOLDERS.iter().any(|p| folded.contains(p)) {
        return Some(
            "holds a placeholder from an example; make a random one, e.g. `openssl rand -hex 24` (docs/deploy.md, \"Security\")".into(),
        );
    }
    if secret.chars().count() < MIN_CREDENTIAL_LEN {
        return Some(format!(
            "holds fewer than {MIN_CREDENTIAL_LEN} characters; make a random one, e.g. `openssl rand -hex 24` (docs/deploy.md, \"Security\")"
        ));
    }
    None
}

fn flag(flag: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Flag {
        flag,
        why: why.into(),
    }
}

/// Splits `host:port` (IPv6 in brackets): the one parser, shared with the pure hand-over
/// target check, which compares addresses the same way.
pub use election::handover::split_host_port;

impl SidecarArgs {
    /// Validates the flags. `hostname` is the default pod name.
    pub fn validate(self, hostname: Option<String>) -> Result<SidecarConfig, ConfigError> {
        if self.lease_name.is_empty() {
            return Err(flag("lease-name", "must not be empty"));
        }
        let pod_name = self
            .pod_name
            .or(hostname)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| flag("pod-name", "not given and the host name is unknown"))?;
        let (redis_host, redis_port) = split_host_port(&self.redis_addr).ok_or_else(|| {
            flag(
                "redis-addr",
                format!("{:?} is not HOST:PORT", self.redis_addr),
            )
        })?;
        // An empty file is a Secret not yet written or written wrongly; Redis would refuse
        // every AUTH with it, so exiting (and being restarted with the file in place) beats
        // running unable to reach Redis. Only line endings are trimmed: a password may hold
        // spaces.
        let redis_password = self
            .redis_password_file
            .as_deref()
            .map(|p| {
                secret_file("redis-password-file", p, |t| {
                    t.trim_end_matches(['\r', '\n'])
                })
            })
            .transpose()?;
        let replication_password = self
            .replication_password_file
            .as_deref()
            .map(|p| {
                secret_file("replication-password-file", p, |t| {
                    t.trim_end_matches(['\r', '\n'])
                })
            })
            .transpose()?;
        let announce = match (&self.announce_addr, &self.headless_service, &self.pod_ip) {
            (Some(a), _, _) => {
                split_host_port(a)
                    .ok_or_else(|| flag("announce-addr", format!("{a:?} is not HOST:PORT")))?;
                Announce::Fixed(a.clone())
            }
            (None, Some(svc), _) => Announce::Headless {
                service: svc.clone(),
                domain: self.cluster_domain.clone(),
                port: redis_port,
            },
            (None, None, Some(ip)) if !ip.is_empty() => {
                Announce::Fixed(format!("{ip}:{redis_port}"))
            }
            _ => {
                return Err(flag(
                    "announce-addr",
                    "give --announce-addr, --headless-service, or POD_IP",
                ));
            }
        };
        let timing = Timing {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            // The fence is two Redis commands (CONFIG SET, CLIENT KILL ×2), each bounded.
            fence_time: self.redis_timeout * 3,
            request_timeout: self.request_timeout,
        };
        if self.lease_duration.subsec_nanos() != 0 {
            return Err(flag(
                "lease-duration",
                "must be whole seconds (leaseDurationSeconds is an integer)",
            ));
        }
        if self.redis_timeout.is_zero() {
            return Err(flag("redis-timeout", "must be greater than zero"));
        }
        timing.validate()?;
        if self.max_replica_lag.subsec_nanos() != 0 || self.max_replica_lag.as_secs() == 0 {
            return Err(flag(
                "max-replica-lag",
                "must be whole seconds, at least 1s (Redis' min-replicas-max-lag is in seconds, and 0 would switch the fence off)",
            ));
        }
        let max_replica_lag_secs = u32::try_from(self.max_replica_lag.as_secs())
            .ok()
            .filter(|s| *s <= 86_400)
            .ok_or_else(|| flag("max-replica-lag", "must be at most 24h"))?;
        // The fence is min-replicas-to-write at i32::MAX; the RPO mode must stay below it.
        if self.min_replicas >= 1_000_000 {
            return Err(flag(
                "min-replicas",
                "must be below 1000000 (the number of replicas that must acknowledge)",
            ));
        }
        // Read again on each request (rotation); here only checked to be there.
        if let Some(p) = &self.admin_token_file {
            secret_file("admin-token-file", p, str::trim)?;
        }
        let peer_key = match &self.peer_key_file {
            None => None,
            Some(p) => Some(Arc::new(
                PeerKey::from_file(p).map_err(|e| flag("peer-key-file", e.to_string()))?,
            )),
        };
        let failsafe = match (self.failsafe, &peer_key) {
            (FailsafeMode::Off, _) => false,
            (FailsafeMode::Auto, k) => k.is_some(),
            (FailsafeMode::On, Some(_)) => true,
            (FailsafeMode::On, None) => {
                return Err(flag(
                    "failsafe",
                    "on needs --peer-key-file (the key that signs failsafe messages)",
                ));
            }
        };
        let sentinel = match self.sentinel_addr {
            None => None,
            Some(listen) => {
                let password = self
                    .sentinel_password_file
                    .as_deref()
                    .map(|p| secret_file("sentinel-password-file", p, str::trim))
                    .transpose()?;
                let name = &self.sentinel_master_name;
                if name.is_empty() || !sentinel::command::is_valid_name(name) {
                    return Err(flag(
                        "sentinel-master-name",
                        "must be non-empty, without spaces or control characters",
                    ));
                }
                if self.sentinel_addresses == SentinelAddresses::Hostname
                    && !matches!(announce, Announce::Headless { .. })
                {
                    tracing::warn!(
                        "--sentinel-addresses hostname without --headless-service: the endpoint hands out the announce address's host"
                    );
                }
                if self.sentinel_max_clients == 0 {
                    return Err(flag("sentinel-max-clients", "must be at least 1"));
                }
                Some(SentinelSettings {
                    listen,
                    master_name: name.clone(),
                    addresses: self.sentinel_addresses,
                    password,
                    max_clients: self.sentinel_max_clients,
                })
            }
        };
        if self.http_max_connections == 0 {
            return Err(flag("http-max-connections", "must be at least 1"));
        }
        if self.http_header_timeout.is_zero() {
            return Err(flag("http-header-timeout", "must be above zero"));
        }
        let http_limits = super::serve::ServeLimits {
            max_connections: self.http_max_connections,
            header_timeout: self.http_header_timeout,
            body_timeout: self.http_header_timeout * 2,
        };
        let tls = match (&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file) {
            (None, None, None) => {
                if self.redis_tls_server_name.is_some() {
                    return Err(flag(
                        "redis-tls-server-name",
                        "needs --tls-ca-file, --tls-cert-file and --tls-key-file",
                    ));
                }
                None
            }
            (Some(ca), Some(cert), Some(key)) => Some(
                super::tls::TlsSettings::load(
                    ca,
                    cert,
                    key,
                    self.redis_tls_server_name.clone().filter(|n| !n.is_empty()),
                )
                .map_err(|e| ConfigError::Tls(e.to_string()))?,
            ),
            _ => {
                return Err(flag(
                    "tls-ca-file",
                    "TLS needs all three of --tls-ca-file, --tls-cert-file and --tls-key-file",
                ));
            }
        };
        if self.http_tls && tls.is_none() {
            return Err(flag(
                "http-tls",
                "needs --tls-ca-file, --tls-cert-file and --tls-key-file (the API serves the group's certificate)",
            ));
        }
        let headless = self
            .headless_service
            .clone()
            .filter(|s| !s.is_empty())
            .map(|s| (s, self.cluster_domain.clone()));
        let pod_ip = self
            .pod_ip
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| s.parse().ok());
        Ok(SidecarConfig {
            tls,
            http_tls: self.http_tls,
            headless,
            peer_key,
            failsafe,
            pod_ip,
            sentinel,
            kubeconfig: self.kubeconfig,
            namespace: self.namespace,
            lease_name: self.lease_name,
            pod_name,
            redis_host,
            redis_port,
            redis_username: self.redis_username,
            replication_username: self.replication_user.filter(|u| !u.is_empty()),
            replication_password,
            redis_password,
            announce,
            leader_service: self.leader_service.filter(|s| !s.is_empty()),
            role_label: self.role_label,
            timing,
            redis_timeout: self.redis_timeout,
            handover_timeout: self.handover_timeout,
            checkpoint_interval: self.checkpoint_interval,
            cold_start_wait: self.cold_start_wait,
            priority: self.priority,
            max_lag: self.max_lag,
            min_replicas: self.min_replicas,
            max_replica_lag_secs,
            http_addr: self.http_addr,
            http_limits,
            admin_token_file: self.admin_token_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SidecarArgs,
    }

    fn parse(args: &[&str]) -> Result<SidecarConfig, String> {
        let mut all = vec![
            "x",
            "--lease-name",
            "redis",
            "--pod-name",
            "redis-0",
            "--pod-ip",
            "10.0.0.1",
        ];
        all.extend_from_slice(args);
        let t = T::try_parse_from(all).map_err(|e| e.to_string())?;
        t.a.validate(None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.timing.lease_duration, Duration::from_secs(10));
        assert_eq!(c.announce, Announce::Fixed("10.0.0.1:6379".into()));
        assert_eq!((c.redis_host.as_str(), c.redis_port), ("127.0.0.1", 6379));
    }

    #[test]
    fn an_empty_password_file_is_refused_and_a_full_one_read_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "\n").unwrap();
        let path = file.to_str().unwrap();
        let err = parse(&["--redis-password-file", path]).unwrap_err();
        assert!(
            err.contains("--redis-password-file") && err.contains("is empty"),
            "{err}"
        );
        std::fs::write(&file, "s3cret with spaces, long enough\n").unwrap();
        let c = parse(&["--redis-password-file", path]).unwrap();
        assert_eq!(
            c.redis_password.as_deref(),
            Some("s3cret with spaces, long enough")
        );
    }

    #[test]
    fn weak_credentials() {
        for weak in [
            "change-me-redis-password",
            "Change_Me_0123456789abcdef",
            "CHANGEME-CHANGEME-CHANGEME",
            "foobared",
            "my-foobared-password-here",
            "short",
            "fifteen chars!!",
        ] {
            assert!(credential_weakness(weak).is_some(), "{weak}");
            assert!(!credential_weakness(weak).unwrap().contains(weak), "{weak}");
        }
        for strong in ["3f9a1c0e7b2d4c6a8e1f0b3d", "sixteen chars!!!"] {
            assert_eq!(credential_weakness(strong), None, "{strong}");
        }
    }

    #[test]
    fn headless_announce() {
        let c = parse(&[
            "--headless-service",
            "redis",
            "--redis-addr",
            "127.0.0.1:7000",
        ])
        .unwrap();
        assert_eq!(
            c.announce.resolve("redis-0", "prod"),
            "redis-0.redis.prod.svc.cluster.local:7000"
        );
    }

    #[test]
    fn errors_name_the_flag() {
        assert!(
            parse(&["--lease-duration", "7s"])
                .unwrap_err()
                .contains("--lease-duration")
        );
        assert!(
            parse(&["--lease-duration", "10500ms"])
                .unwrap_err()
                .contains("whole seconds")
        );
        assert!(
            parse(&["--redis-addr", "nope"])
                .unwrap_err()
                .contains("--redis-addr")
        );
        assert!(
            parse(&["--retry-period", "5s"])
                .unwrap_err()
                .contains("--renew-deadline")
        );
        assert!(
            parse(&["--redis-password-file", "/does/not/exist"])
                .unwrap_err()
                .contains("--redis-password-file")
        );
        assert!(
            parse(&["--lease-duration", "ten"])
                .unwrap_err()
                .contains("--lease-duration")
        );
        for bad in ["0s", "1500ms", "2days"] {
            assert!(
                parse(&["--max-replica-lag", bad])
                    .unwrap_err()
                    .contains("--max-replica-lag"),
                "{bad}"
            );
        }
        assert!(
            parse(&["--min-replicas", "2147483647"])
                .unwrap_err()
                .contains("--min-replicas")
        );
        assert!(parse(&["--min-replicas", "-1"]).is_err());
    }

    #[test]
    fn rpo_mode() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            (c.min_replicas, c.max_replica_lag_secs),
            (0, 10),
            "off by default"
        );
        let c = parse(&["--min-replicas", "1", "--max-replica-lag", "3s"]).unwrap();
        assert_eq!((c.min_replicas, c.max_replica_lag_secs), (1, 3));
    }
}
