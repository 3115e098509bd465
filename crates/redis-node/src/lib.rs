//! The local Redis as the sidecar sees it: probe, promote, follow, fence and unfence, drop
//! clients, pause writes.
//!
//! **Fencing** uses `min-replicas-to-write`: set to its maximum, a master refuses every write
//! at once with `-NOREPLICAS` while still serving reads, and any peer can apply it remotely,
//! without the fenced node's sidecar (which may be stopped). Unfencing restores the configured
//! value (default 0; the RPO mode's `--min-replicas` otherwise). Fencing also drops normal and
//! pub/sub clients, so they reconnect through the Service to the right node.
//!
//! Redis counts a replica towards `min-replicas-to-write` only if it acknowledged within
//! `min-replicas-max-lag` seconds, and ignores the setting altogether while that lag is 0, so
//! both the fence and the unfence set the two together.

pub mod info;

use info::NodeInfo;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::time::Duration;

/// The `min-replicas-to-write` value that fences a master: no write can ever find that many
/// replicas.
pub const FENCE_MIN_REPLICAS: i64 = i32::MAX as i64;

/// Redis' own default for `min-replicas-max-lag`, in seconds.
pub const DEFAULT_MIN_REPLICAS_MAX_LAG: u32 = 10;

/// How to reach a Redis.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Host (name or IP).
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user for AUTH, if any.
    pub username: Option<String>,
    /// Password for AUTH, if any (never logged).
    pub password: Option<String>,
    /// The ACL user replicas authenticate as to their master (`masteruser`), when it is not
    /// `username`: a replication user allowed only `PSYNC`, `REPLCONF` and `PING`.
    pub replication_username: Option<String>,
    /// Its password (`masterauth`), when it is not `password`.
    pub replication_password: Option<String>,
    /// Bound on connecting and on every command: a Redis slower than this counts as hung.
    pub timeout: Duration,
    /// `min-replicas-to-write` when not fenced (the RPO mode's `--min-replicas`; 0 = off).
    pub min_replicas_to_write: u32,
    /// `min-replicas-max-lag` in seconds (at least 1: Redis ignores the fence at 0).
    pub min_replicas_max_lag: u32,
    /// The address this Redis announces to the master it follows (`replica-announce-ip` and
    /// `-port`), so that the master lists it under the address its peers use, not its
    /// connection's source address (which, with several pods on one host, is 127.0.0.1).
    pub announce: Option<(String, u16)>,
    /// TLS to this Redis (its `tls-port`); `None` for plain TCP.
    pub tls: Option<NodeTls>,
}

/// How to reach a Redis over TLS: whom to trust, the name its certificate must carry, and
/// the certificate to present when Redis asks for one (`tls-auth-clients yes`).
///
/// The connection goes to [`NodeConfig::host`], but the certificate is checked against
/// `server_name`: the sidecar reaches its Redis at the pod IP, which no certificate
/// names (pod IPs change with every re-creation), while the group's certificate names the
/// pods' DNS names.
#[derive(Clone)]
pub struct NodeTls {
    /// PEM certificates of the CA that signed Redis' certificate (`ca.crt`).
    pub ca_pem: Vec<u8>,
    /// PEM certificate chain and private key presented as a client certificate.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The DNS name (or IP) Redis' certificate must carry.
    pub server_name: String,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the identity holds a private key.
        f.debug_struct("NodeTls")
            .field("server_name", &self.server_name)
            .field("client_identity", &self.client_identity.is_some())
            .finish_non_exhaustive()
    }
}

/// Resolves every name to [`NodeConfig::host`]: redis-rs takes the name it verifies the
/// certificate against from the address it dials, so a TLS connection is made to
/// `server_name` and this resolver sends it to the real host.
struct DialHost(String);

impl redis::io::AsyncDNSResolver for DialHost {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((self.0.as_str(), port))
                .await?
                .collect();
            Ok(Box::new(addrs.into_iter())
                as Box<dyn Iterator<Item = std::net::SocketAddr> + Send>)
        })
    }
}

impl NodeConfig {
    /// A config for `host:port` without AUTH, with a 1 s timeout.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            username: None,
            password: None,
            replication_username: None,
            replication_password: None,
            timeout: Duration::from_secs(1),
            min_replicas_to_write: 0,
            min_replicas_max_lag: DEFAULT_MIN_REPLICAS_MAX_LAG,
            announce: None,
            tls: None,
        }
    }
}

/// Why an operation on Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No connection could be made (refused, unreachable, AUTH failed).
    #[error("cannot reach Redis at {addr}: {source}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The cause.
        source: redis::RedisError,
    },
    /// Redis did not answer within the bound: hung, stopped, or overloaded.
    #[error("Redis at {addr} did not answer within {timeout:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The bound.
        timeout: Duration,
    },
    /// Redis answered with an error.
    #[error("Redis at {addr} refused {command}: {source}")]
    Command {
        /// `host:port`.
        addr: String,
        /// The command name.
        command: &'static str,
        /// Its error.
        source: redis::RedisError,
    },
    /// Redis answered something the sidecar cannot use.
    #[error("Redis at {addr} gave an unusable INFO reply: {source}")]
    BadReply {
        /// `host:port`.
        addr: String,
        /// What was wrong.
        source: info::InfoError,
    },
}

/// What a probe saw: the INFO fields and whether the node is fenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Parsed INFO.
    pub info: NodeInfo,
    /// `min-replicas-to-write` is at the fence value.
    pub fenced: bool,
    /// The value of the group's checkpoint key ([`CHECKPOINT_KEY`]) in this Redis' data;
    /// `None` when absent or unreadable (loading, or an ACL that denies it).
    pub checkpoint: Option<String>,
}

/// The key in which a leader's sidecar records where the data stands in the group's history
/// (`election::checkpoint`). Named here because the probe reads it.
pub const CHECKPOINT_KEY: &str = "redis-k8s-election:checkpoint";

/// `CLIENT KILL` of every normal and every pub/sub client but the sender: what a fence and a
/// role change do to the clients of this Redis, so that they reconnect through the Service.
fn client_kills() -> [redis::Cmd; 2] {
    ["normal", "pubsub"].map(|ty| {
        let mut c = redis::cmd("CLIENT");
        c.arg("KILL").arg("TYPE").arg(ty).arg("SKIPME").arg("yes");
        c
    })
}

/// What [`RedisNode::request`] sends.
enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Pipeline(&'a redis::Pipeline),
}

/// One Redis, reached over one multiplexed connection that is re-opened after a failure.
pub struct RedisNode {
    cfg: NodeConfig,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the config holds the password.
        write!(f, "RedisNode({}:{})", self.cfg.host, self.cfg.port)
    }
}

impl RedisNode {
    /// A node handle; no connection is made until the first command.
    pub fn new(cfg: NodeConfig) -> Result<Self, NodeError> {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let mut settings = RedisConnectionInfo::default();
        if let Some(u) = &cfg.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &cfg.password {
            settings = settings.set_password(p);
        }
        let target = match &cfg.tls {
            None => ConnectionAddr::Tcp(cfg.host.clone(), cfg.port),
            Some(t) => ConnectionAddr::TcpTls {
                host: t.server_name.clone(),
                port: cfg.port,
                insecure: false,
                tls_params: None,
            },
        };
        let info = target
            .into_connection_info()
            .map_err(|source| NodeError::Unreachable {
                addr: addr.clone(),
                source,
            })?
            .set_redis_settings(settings);
        let client = match &cfg.tls {
            None => redis::Client::open(info),
            Some(t) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: t.client_identity.as_ref().map(|(cert, key)| {
                        redis::ClientTlsConfig {
                            client_cert: cert.clone(),
                            client_key: key.clone(),
                        }
                    }),
                    root_cert: Some(t.ca_pem.clone()),
                },
            ),
        }
        .map_err(|source| NodeError::Unreachable { addr, source })?;
        Ok(Self {
            cfg,
            client,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    fn timeout_err(&self) -> NodeError {
        NodeError::Timeout {
            addr: self.addr(),
            timeout: self.cfg.timeout,
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, NodeError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.cfg.timeout))
            .set_response_timeout(Some(self.cfg.timeout));
        if self.cfg.tls.is_some() {
            config = config.set_dns_resolver(DialHost(self.cfg.host.clone()));
        }
        let fut = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let conn = match tokio::time::timeout(self.cfg.timeout, fut).await {
            Err(_) => return Err(self.timeout_err()),
            Ok(Err(e)) if e.is_timeout() => return Err(self.timeout_err()),
            Ok(Err(source)) => {
                return Err(NodeError::Unreachable {
                    addr: self.addr(),
                    source,
                });
            }
            Ok(Ok(c)) => c,
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one command within the timeout; a connection-level failure drops the connection
    /// so the next command reconnects.
    async fn run<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, NodeError> {
        self.request(name, Request::Cmd(cmd)).await
    }

    /// Runs a command or a pipeline within the timeout.
    ///
    /// A timeout keeps the connection: the Redis behind it is hung (stopped, swapping, stuck
    /// in a fork), not gone, and when it resumes it executes what waits on its established
    /// connections in the order they became readable, before it accepts new ones. A fence
    /// sent on this connection while it hangs therefore takes effect in its first pass after
    /// resuming, ahead of every client that connects afterwards; a new connection would only
    /// be accepted after the stall, and its handshake (AUTH, `CLIENT SETINFO`) would time out
    /// before the fence was even sent. (The late replies are discarded by redis-rs.) An I/O
    /// error does drop the connection: that Redis is gone or restarted.
    async fn request<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        request: Request<'_>,
    ) -> Result<T, NodeError> {
        let mut conn = self.connection().await?;
        let reply = async {
            match request {
                Request::Cmd(c) => c.query_async::<T>(&mut conn).await,
                Request::Pipeline(p) => p.query_async::<T>(&mut conn).await,
            }
        };
        match tokio::time::timeout(self.cfg.timeout, reply).await {
            Err(_) => Err(self.timeout_err()),
            Ok(Err(e)) if e.is_timeout() => Err(self.timeout_err()),
            Ok(Err(e))
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() =>
            {
                *self.conn.lock().await = None;
                Err(NodeError::Unreachable {
                    addr: self.addr(),
                    source: e,
                })
            }
            Ok(Err(source)) => Err(NodeError::Command {
                addr: self.addr(),
                command: name,
                source,
            }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// `INFO` and the fence state.
    pub async fn probe(&self) -> Result<Probe, NodeError> {
        let text: String = self
            .run(
                "INFO",
                redis::cmd("INFO")
                    .arg("server")
                    .arg("replication")
                    .arg("persistence")
                    .arg("keyspace"),
            )
            .await?;
        let info = info::parse(&text).map_err(|source| NodeError::BadReply {
            addr: self.addr(),
            source,
        })?;
        let min: Vec<String> = self
            .run(
                "CONFIG GET",
                redis::cmd("CONFIG").arg("GET").arg("min-replicas-to-write"),
            )
            .await?;
        let fenced = min.get(1).and_then(|v| v.parse::<i64>().ok()) == Some(FENCE_MIN_REPLICAS);
        // A Redis still loading refuses GET (-LOADING): no checkpoint yet, not an error.
        let checkpoint = if info.loading {
            None
        } else {
            match self
                .run::<Option<String>>("GET", redis::cmd("GET").arg(CHECKPOINT_KEY))
                .await
            {
                Ok(v) => v,
                Err(NodeError::Command { .. }) => None,
                Err(e) => return Err(e),
            }
        };
        Ok(Probe {
            info,
            fenced,
            checkpoint,
        })
    }

    /// Stores `value` under [`CHECKPOINT_KEY`] (a leader's checkpoint). Refused like any
    /// write while this Redis is fenced, a replica, or short of replicas in the RPO mode.
    pub async fn write_checkpoint(&self, value: &str) -> Result<(), NodeError> {
        self.run::<()>("SET", redis::cmd("SET").arg(CHECKPOINT_KEY).arg(value))
            .await
    }

    /// Refuses writes (reads still served) and drops normal and pub/sub clients.
    ///
    /// One pipeline, so that on a hung Redis the whole fence waits on the connection and
    /// runs at once when it resumes (see [`RedisNode::request`]), even though this call
    /// reports a timeout.
    pub async fn fence(&self) -> Result<(), NodeError> {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(FENCE_MIN_REPLICAS)
            .arg("min-replicas-max-lag")
            .arg(self.cfg.min_replicas_max_lag.max(1))
            .ignore();
        for kill in client_kills() {
            pipe.add_command(kill).ignore();
        }
        self.request::<()>("CONFIG SET + CLIENT KILL", Request::Pipeline(&pipe))
            .await
    }

    /// Accepts writes again (when master), restoring the configured `min-replicas-to-write`
    /// and `min-replicas-max-lag` in one command: with the RPO mode on, the master then
    /// refuses writes (`-NOREPLICAS`) unless that many replicas acknowledged within the lag.
    /// With a `checkpoint`, stores it ([`CHECKPOINT_KEY`]) in the same pipeline, so that it
    /// comes before any client's write in the data and the replication stream.
    pub async fn unfence(&self, checkpoint: Option<&str>) -> Result<(), NodeError> {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(self.cfg.min_replicas_to_write)
            .arg("min-replicas-max-lag")
            .arg(self.cfg.min_replicas_max_lag.max(1));
        if let Some(value) = checkpoint {
            pipe.cmd("SET").arg(CHECKPOINT_KEY).arg(value);
        }
        // Redis runs the commands of one read back to back, before any other client's: the
        // first checkpoint precedes every client write that the unfencing lets in. Its own
        // failure (the RPO mode without replicas yet) leaves that to the checkpoint writer.
        let replies: Vec<redis::RedisResult<redis::Value>> = self
            .request("CONFIG SET", Request::Pipeline(pipe.ignore_errors()))
            .await?;
        match replies.into_iter().next() {
            Some(Err(source)) => Err(NodeError::Command {
                addr: self.addr(),
                command: "CONFIG SET",
                source,
            }),
            _ => Ok(()),
        }
    }

    /// Drops normal and pub/sub clients, never this connection; returns how many.
    pub async fn drop_clients(&self) -> Result<u64, NodeError> {
        let mut n = 0;
        for kill in client_kills() {
            n += self.run::<u64>("CLIENT KILL", &kill).await?;
        }
        Ok(n)
    }

    /// Holds every write command (clients wait, reads go on) for at most `timeout`, so that a
    /// replica can catch up before a planned hand-over (`CLIENT PAUSE … WRITE`).
    pub async fn pause_writes(&self, timeout: Duration) -> Result<(), NodeError> {
        self.run(
            "CLIENT PAUSE",
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(timeout.as_millis() as u64)
                .arg("WRITE"),
        )
        .await
    }

    /// Ends a write pause (`CLIENT UNPAUSE`).
    pub async fn unpause(&self) -> Result<(), NodeError> {
        self.run("CLIENT UNPAUSE", redis::cmd("CLIENT").arg("UNPAUSE"))
            .await
    }

    /// Makes this Redis a master (`REPLICAOF NO ONE`). Unfencing is separate, so that the
    /// caller decides when writes may begin.
    pub async fn promote(&self) -> Result<(), NodeError> {
        self.run("REPLICAOF", redis::cmd("REPLICAOF").arg("NO").arg("ONE"))
            .await
    }

    /// Makes this Redis a replica of `host:port`.
    ///
    /// With AUTH configured, the replication credentials (or, without any, this connection's
    /// own) are set as `masteruser`/`masterauth` first: every Redis of a group shares them,
    /// and a replica cannot sync from a master that requires a password without them. With an announce address, that is set first too, so
    /// that the master lists this replica (and its acknowledged offset) under it.
    pub async fn follow(&self, host: &str, port: u16) -> Result<(), NodeError> {
        if let Some((ip, announce_port)) = &self.cfg.announce {
            // Best effort: following matters more than how the master lists us (a Redis
            // that refused the setting would only hide this replica's stream state).
            if let Err(e) = self
                .run::<()>(
                    "CONFIG SET",
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("replica-announce-ip")
                        .arg(ip)
                        .arg("replica-announce-port")
                        .arg(announce_port),
                )
                .await
            {
                tracing::warn!(error = %e, "setting replica-announce-ip/-port failed; following anyway");
            }
        }
        if let Some(user) = self
            .cfg
            .replication_username
            .as_ref()
            .or(self.cfg.username.as_ref())
        {
            let _: () = self
                .run(
                    "CONFIG SET",
                    redis::cmd("CONFIG").arg("SET").arg("masteruser").arg(user),
                )
                .await?;
        }
        if let Some(password) = self
            .cfg
            .replication_password
            .as_ref()
            .or(self.cfg.password.as_ref())
        {
            let _: () = self
                .run(
                    "CONFIG SET",
                    redis::cmd("CONFIG")
                        .arg("SET")
                        .arg("masterauth")
                        .arg(password),
                )
                .await?;
        }
        let _: String = self
            .run("REPLICAOF", redis::cmd("REPLICAOF").arg(host).arg(port))
            .await?;
        Ok(())
    }
}
