//! Prometheus metrics of the sidecar (text exposition on `/metrics`).

use crate::wire::SidecarRole;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A label with one string value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The value.
    pub kind: String,
}

/// A role label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    /// `leader`, `replica`, `candidate`, `undecided`.
    pub role: String,
}

/// A failsafe round's outcome: `confirmed`, `refused`, `silent`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The value.
    pub outcome: String,
}

/// A failsafe message this member received: its kind and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Answered {
    /// `round`, `release`, `probe`, or empty for a refused message.
    pub kind: String,
    /// `confirmed`, `refused`, or why it was not accepted (`bad_signature`, `stale`, ...).
    pub result: String,
}

/// The sidecar's metrics.
pub struct Metrics {
    registry: Registry,
    /// 1 for the current role, 0 for the others.
    pub role: Family<RoleLabel, Gauge>,
    /// Epoch of the current leader.
    pub epoch: Gauge,
    /// Role changes of this sidecar.
    pub transitions: Counter,
    /// Latency of lease writes (acquire, renew, release), seconds.
    pub renew_latency: Histogram,
    /// Seconds since this sidecar last renewed (set at scrape).
    pub seconds_since_renew: Gauge<f64, AtomicU64>,
    /// Local replication offset.
    pub offset: Gauge,
    /// Bytes behind the leader.
    pub lag: Gauge,
    /// For a replica: 1 while the leader streams to it (it acknowledged since its sync).
    pub replica_streaming: Gauge,
    /// For a master under `min-replicas-to-write`: replicas that acknowledged within the
    /// lag; -1 when Redis does not count them (RPO mode off and not fenced).
    pub good_replicas: Gauge,
    /// RPO mode: replicas required to take writes (0: off).
    pub min_replicas: Gauge,
    /// 1 when the local Redis is fenced.
    pub fenced: Gauge,
    /// 1 while the local Redis answers the sidecar's probes.
    pub redis_up: Gauge,
    /// 1 while the local Redis is a master that takes writes (not fenced): more than one in a
    /// group at once is the split brain the alerts watch for.
    pub redis_writable_master: Gauge,
    /// Promotions of this sidecar's Redis.
    pub failovers: Counter,
    /// Seconds from losing a valid leader to this sidecar's promotion, last time.
    pub last_failover_seconds: Gauge<f64, AtomicU64>,
    /// Kubernetes request errors by kind.
    pub api_errors: Family<Kind, Counter>,
    /// Redis probe or command errors by kind.
    pub redis_errors: Family<Kind, Counter>,
    /// 1 while this leader serves in failsafe (its renewals fail; members confirm it).
    pub failsafe_active: Gauge,
    /// Members that confirmed this leader's last answered failsafe round.
    pub failsafe_confirmed: Gauge,
    /// 1 while this member's failsafe promise runs (it will not campaign).
    pub failsafe_promise: Gauge,
    /// Failsafe episodes this sidecar led through.
    pub failsafe_episodes: Counter,
    /// This leader's failsafe rounds by outcome.
    pub failsafe_rounds: Family<Outcome, Counter>,
    /// Failsafe messages this sidecar received, by kind and result.
    pub failsafe_messages: Family<Answered, Counter>,
}

impl Metrics {
    /// Registers everything under the `redis_election_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("redis_election");
        let m = Self {
            role: Family::default(),
            epoch: Gauge::default(),
            transitions: Counter::default(),
            renew_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            seconds_since_renew: Gauge::default(),
            offset: Gauge::default(),
            lag: Gauge::default(),
            replica_streaming: Gauge::default(),
            good_replicas: Gauge::default(),
            min_replicas: Gauge::default(),
            fenced: Gauge::default(),
            failovers: Counter::default(),
            last_failover_seconds: Gauge::default(),
            api_errors: Family::default(),
            redis_errors: Family::default(),
            failsafe_active: Gauge::default(),
            failsafe_confirmed: Gauge::default(),
            failsafe_promise: Gauge::default(),
            failsafe_episodes: Counter::default(),
            failsafe_rounds: Family::default(),
            redis_up: Gauge::default(),
            redis_writable_master: Gauge::default(),
            failsafe_messages: Family::default(),
            registry: Registry::default(),
        };
        registry.register("role", "1 for the sidecar's current role", m.role.clone());
        registry.register(
            "redis_up",
            "1 while the local Redis answers the sidecar's probes",
            m.redis_up.clone(),
        );
        registry.register(
            "redis_writable_master",
            "1 while the local Redis is a master that takes writes (not fenced)",
            m.redis_writable_master.clone(),
        );
        registry.register(
            "epoch",
            "Epoch (leaseTransitions) of the current leader",
            m.epoch.clone(),
        );
        registry.register(
            "transitions",
            "Role changes of this sidecar",
            m.transitions.clone(),
        );
        registry.register(
            "lease_write_seconds",
            "Latency of lease writes",
            m.renew_latency.clone(),
        );
        registry.register(
            "seconds_since_renew",
            "Seconds since this sidecar last renewed the lease",
            m.seconds_since_renew.clone(),
        );
        registry.register(
            "replication_offset",
            "Replication offset of the local Redis",
            m.offset.clone(),
        );
        registry.register(
            "replication_lag_bytes",
            "Bytes the local Redis is behind the leader",
            m.lag.clone(),
        );
        registry.register(
            "replica_streaming",
            "1 while the leader streams to this replica (it acknowledged since its sync)",
            m.replica_streaming.clone(),
        );
        registry.register(
            "good_replicas",
            "Replicas that acknowledged within min-replicas-max-lag (-1: not counted)",
            m.good_replicas.clone(),
        );
        registry.register(
            "min_replicas",
            "RPO mode: replicas that must acknowledge for the leader to take writes (0: off)",
            m.min_replicas.clone(),
        );
        registry.register(
            "fenced",
            "1 when the local Redis refuses writes by fence",
            m.fenced.clone(),
        );
        registry.register(
            "failovers",
            "Promotions of the local Redis",
            m.failovers.clone(),
        );
        registry.register(
            "last_failover_seconds",
            "Seconds from losing the leader to this promotion",
            m.last_failover_seconds.clone(),
        );
        registry.register(
            "api_errors",
            "Kubernetes request errors by kind",
            m.api_errors.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis errors by kind",
            m.redis_errors.clone(),
        );
        registry.register(
            "failsafe_active",
            "1 while this leader serves in failsafe through a Kubernetes API outage",
            m.failsafe_active.clone(),
        );
        registry.register(
            "failsafe_members_confirmed",
            "Members that confirmed this leader's last answered failsafe round",
            m.failsafe_confirmed.clone(),
        );
        registry.register(
            "failsafe_promise",
            "1 while this member promised a failsafe leader not to campaign",
            m.failsafe_promise.clone(),
        );
        registry.register(
            "failsafe_episodes",
            "Failsafe episodes this sidecar led through",
            m.failsafe_episodes.clone(),
        );
        registry.register(
            "failsafe_rounds",
            "Failsafe rounds of this leader by outcome",
            m.failsafe_rounds.clone(),
        );
        registry.register(
            "failsafe_messages",
            "Failsafe messages received, by kind and result",
            m.failsafe_messages.clone(),
        );
        Self { registry, ..m }
    }

    /// A failsafe message refused before the elector saw it (`why`: its code).
    pub fn failsafe_rejected(&self, why: &str) {
        self.failsafe_messages
            .get_or_create(&Answered {
                kind: String::new(),
                result: why.into(),
            })
            .inc();
    }

    /// A failsafe message the elector answered.
    pub fn failsafe_answered(&self, kind: &str, confirmed: bool) {
        self.failsafe_messages
            .get_or_create(&Answered {
                kind: kind.into(),
                result: if confirmed { "confirmed" } else { "refused" }.into(),
            })
            .inc();
    }

    /// Marks `role` as the current role.
    pub fn set_role(&self, role: SidecarRole) {
        for r in [
            SidecarRole::Leader,
            SidecarRole::Replica,
            SidecarRole::Candidate,
            SidecarRole::Undecided,
        ] {
            self.role
                .get_or_create(&RoleLabel {
                    role: r.as_str().into(),
                })
                .set(i64::from(r == role));
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_names() {
        let m = Metrics::new();
        m.set_role(SidecarRole::Leader);
        m.api_errors
            .get_or_create(&Kind {
                kind: "timeout".into(),
            })
            .inc();
        let text = m.encode();
        for name in [
            "redis_election_role{role=\"leader\"} 1",
            "redis_election_api_errors_total{kind=\"timeout\"} 1",
            "redis_election_lease_write_seconds_bucket",
            "redis_election_good_replicas",
            "redis_election_min_replicas 0",
            "redis_election_replica_streaming 0",
            "redis_election_failsafe_active 0",
            "redis_election_failsafe_promise 0",
        ] {
            assert!(text.contains(name), "{name} in\n{text}");
        }
    }
}
