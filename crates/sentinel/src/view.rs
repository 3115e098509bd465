//! What the endpoint answers from: the group as the sidecar last saw it.

/// A `host:port` as clients are told it (a pod IP, or a DNS name in hostname mode).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr {
    /// IP or host name.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Addr {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A replica of the group (any member that is not the leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    /// Where clients reach its Redis.
    pub addr: Addr,
    /// Its Redis' `run_id` (empty when it does not answer).
    pub run_id: String,
    /// Its Redis answers.
    pub up: bool,
    /// Its replication link to the leader is up.
    pub link_up: bool,
    /// Its replication offset.
    pub offset: u64,
    /// Its priority (Sentinel's `slave-priority`).
    pub priority: u32,
}

/// Another member's Sentinel endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSentinel {
    /// Its ID (40 hex digits, stable for the pod).
    pub id: String,
    /// Where it listens.
    pub addr: Addr,
}

/// The group as the endpoint reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupView {
    /// The last leader's Redis (kept while there is none, as Sentinel keeps a failed master's
    /// address); `None` before any leader was seen.
    pub master: Option<Addr>,
    /// The leader's Redis `run_id`.
    pub master_run_id: String,
    /// No leader holds the lease, or its Redis does not take writes: `s_down`/`o_down`.
    pub master_down: bool,
    /// The epoch (the Lease's `leaseTransitions`): Sentinel's `config-epoch`.
    pub epoch: u64,
    /// The other members.
    pub replicas: Vec<ReplicaView>,
    /// The other members' endpoints.
    pub sentinels: Vec<PeerSentinel>,
}
