//! The sidecar's contracts with other programs, typed once: the producer serializes these
//! structs, and `status`, `switchover`, `local` and the tests deserialize the same structs, so
//! a renamed field breaks the build rather than a reader.
//!
//! Field names are camelCase on the wire (as Kubernetes does). Absent values are `null`, not
//! missing, so that a reader sees every field the sidecar knows of; readers accept missing
//! optional fields (an older sidecar) and ignore unknown ones (a newer one).

use serde::{Deserialize, Serialize};

pub use kube_coord::wire::{PodSummary, SidecarRole};

/// What the local Redis says its role is (`INFO replication`'s `role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisRole {
    /// Takes writes (unless fenced).
    Master,
    /// Replicates from a master.
    Replica,
}

impl RedisRole {
    /// `master` or `replica`, as `/status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisRole::Master => "master",
            RedisRole::Replica => "replica",
        }
    }
}

/// `GET /status`: everything one sidecar knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// This pod.
    pub pod: String,
    /// The sidecar's role in the election.
    pub role: SidecarRole,
    /// The leader's name, when one is known.
    pub leader: Option<String>,
    /// The leader's Redis announce address.
    pub leader_address: Option<String>,
    /// The current leader's epoch (`leaseTransitions`).
    pub epoch: Option<u32>,
    /// The elector has fenced the local Redis.
    pub fenced: bool,
    /// The Lease's pause marker while automatic failover is paused.
    pub paused: Option<String>,
    /// `/readyz` answers 200.
    pub ready: bool,
    /// Why `/readyz` does not.
    pub not_ready_reason: Option<String>,
    /// The local Redis as last probed; `null` when the probe failed.
    pub redis: Option<RedisReport>,
    /// The RPO mode and whether the local Redis takes writes now (`null` from sidecars older
    /// than the RPO mode).
    pub data_safety: Option<DataSafety>,
    /// Why the last probe of the local Redis failed.
    pub redis_error: Option<String>,
    /// The last Kubernetes error, while the last call failed.
    pub api_error: Option<String>,
    /// The last role change of this sidecar.
    pub last_change: Option<LastChange>,
    /// Seconds since this sidecar last renewed or acquired the lease.
    pub seconds_since_renew: Option<f64>,
    /// Failsafe (absent from sidecars older than failsafe).
    #[serde(default)]
    pub failsafe: FailsafeReport,
    /// The cold start after a whole-group restart (absent from older sidecars).
    #[serde(default)]
    pub cold_start: ColdStartReport,
    /// The operator's tags on the pod (`nofailover`, `noloadbalance`, `priority`; absent
    /// from older sidecars).
    #[serde(default)]
    pub tags: kube_coord::Tags,
}

/// `POST /force-election`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForceElectionDone {
    /// Always true (refusals use the switchover's refusal shape).
    pub ok: bool,
    /// The pod that answered.
    pub pod: String,
    /// It was in a cold start (otherwise the request changed nothing it would notice).
    pub cold: bool,
    /// The members it was waiting for.
    pub waiting_for: Vec<String>,
}

/// [`StatusReport::cold_start`] (docs/deploy.md, "Persistence"): after a whole-group restart
/// a pod runs for the lease only once a majority of the members answer, the cold-start wait
/// passed, or an operator forced the election.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ColdStartReport {
    /// This pod is in a cold start: the Lease shows the group ran before, and it has seen no
    /// valid leader since it started.
    pub cold: bool,
    /// Waiting for these members to answer before it runs for the lease.
    pub waiting_for: Vec<String>,
    /// An operator forced the election (`redis-k8s-election force-election`).
    pub forced: bool,
}

/// Failsafe in [`StatusReport::failsafe`] (docs/sidecar.md, "Control-plane outages"). Times
/// are Unix milliseconds, so they read the same whenever the report is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FailsafeReport {
    /// Failsafe is on for this sidecar.
    pub enabled: bool,
    /// This leader serves in failsafe now: the API is unavailable and every member confirms.
    pub active: bool,
    /// Since when.
    pub since_unix_ms: Option<u64>,
    /// Members asked in each round, or that would be asked: the membership recorded on the
    /// Lease but this pod (0 when this pod is not in it: no failsafe for it).
    pub members: u32,
    /// Members that confirmed the last answered round.
    pub confirmed: u32,
    /// When the last round was sent.
    pub last_round_unix_ms: Option<u64>,
    /// When the last round every member confirmed was answered.
    pub last_confirmed_unix_ms: Option<u64>,
    /// Until when this member promised a failsafe leader not to campaign.
    pub promise_until_unix_ms: Option<u64>,
    /// The leader that promise is for.
    pub promised_to: Option<String>,
}

/// The local Redis in [`StatusReport::redis`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisReport {
    /// Its role.
    pub role: RedisRole,
    /// `master_repl_offset`.
    pub offset: u64,
    /// A replica's master, `host:port`.
    pub master: Option<String>,
    /// A replica's link to its master is up.
    pub link_up: bool,
    /// Bytes behind the leader, when known.
    pub lag: Option<u64>,
    /// Keys held.
    pub keys: u64,
    /// `min-replicas-to-write` is at the fence value.
    pub fenced: bool,
    /// The offset the leader last saw this replica acknowledge.
    pub acked_offset: Option<u64>,
    /// The leader streams to this replica (it acknowledged); `null` when the leader does not
    /// list it.
    pub streaming: Option<bool>,
    /// A master's replicas.
    pub replicas: Option<u32>,
    /// A master's replicas that acknowledged within `min-replicas-max-lag`.
    pub good_replicas: Option<u32>,
    /// The last checkpoint its data holds (`<epoch>:<seq>:<writer>`; docs/deploy.md,
    /// "Persistence"), absent from older sidecars.
    #[serde(default)]
    pub checkpoint: Option<String>,
}

/// [`StatusReport::data_safety`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSafety {
    /// `--min-replicas` is above zero.
    pub rpo_mode: bool,
    /// `--min-replicas`.
    pub min_replicas: u32,
    /// `--max-replica-lag`, in seconds.
    pub max_replica_lag_seconds: u32,
    /// The local Redis takes writes now.
    pub accepts_writes: bool,
    /// Why not, as a code: `rpo`, `fenced`, `replica` or `unreachable`.
    pub refuses_writes: Option<String>,
    /// Why not, in words.
    pub refuses_writes_reason: Option<String>,
}

/// [`StatusReport::last_change`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastChange {
    /// The epoch it happened at.
    pub epoch: u32,
    /// What happened (`elected`, `following redis-0`, `stepped down: …`).
    pub reason: String,
    /// When, in seconds since the Unix epoch.
    pub unix_time: u64,
}

/// `POST /switchover` answered 200: the hand-over happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverDone {
    /// Always `true`.
    pub ok: bool,
    /// The old leader.
    pub from: String,
    /// The new leader.
    pub to: String,
    /// The new leader's epoch.
    pub epoch: u32,
    /// How long writes were held, in milliseconds.
    pub pause_ms: f64,
    /// The leader Service routes to the new leader already.
    pub routed: bool,
}

/// Any refused request to the HTTP API (4xx, 5xx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Always `false`.
    pub ok: bool,
    /// A stable code (`unauthorized`, `no_candidate`, `paused`, …).
    pub code: String,
    /// Why, in words.
    pub error: String,
}

/// A `POST /switchover` answer as a client reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SwitchoverReply {
    /// It happened.
    Done(SwitchoverDone),
    /// It did not.
    Refused(Refusal),
}
