//! What the sidecar knows, shared between the control loop and the HTTP API, and the pure
//! readiness rule built on it.

use crate::wire::{DataSafety, LastChange, RedisReport, RedisRole, SidecarRole, StatusReport};
use std::time::Duration;
use tokio::time::Instant;

/// Whether the leader streams to this replica, from the leader's own list of its replicas.
///
/// After a full sync Redis lists a replica `online` and its link `up` before it streams any
/// command to it: with diskless sync it waits for the replica's first acknowledgement, which
/// can take a second. Until then every acknowledged write exists on the master alone. The
/// master's entry for the replica tells: no acknowledgement yet (offset 0 while the master has
/// a stream) means it is not streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamState {
    /// The offset the leader last saw this replica acknowledge.
    pub acked_offset: u64,
    /// The leader streams to it.
    pub streaming: bool,
}

/// This replica's stream state in the leader's `INFO`, where the leader lists it under the
/// announce address `host:port`; `None` when it does not (not connected yet, or announced
/// under another name).
pub fn stream_state(
    leader: &redis_node::info::NodeInfo,
    host: &str,
    port: u16,
) -> Option<StreamState> {
    let entry = leader.replica_at(host, port)?;
    Some(StreamState {
        acked_offset: entry.acked_offset,
        streaming: entry.state == "online" && (entry.acked_offset > 0 || leader.offset == 0),
    })
}

/// Why the local Redis refuses writes ([`Status::accepts_writes`]). `/status` carries its
/// [`WriteRefusal::code`] beside the text, so that the `status` command tells an RPO refusal
/// (a disagreement an operator must act on) from a fence without reading the words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    /// The probe failed.
    #[error("local Redis not answering")]
    Unreachable,
    /// It replicates.
    #[error("the local Redis is a replica")]
    Replica,
    /// The sidecar or someone fenced it.
    #[error("the local Redis is fenced")]
    Fenced,
    /// The RPO mode: too few replicas acknowledged recently.
    #[error(
        "RPO mode: {good} of the {required} replicas required acknowledged within {within_secs} s"
    )]
    Rpo {
        /// Replicas that acknowledged within the lag.
        good: u32,
        /// `--min-replicas`.
        required: u32,
        /// `--max-replica-lag`, in seconds.
        within_secs: u32,
    },
}

impl WriteRefusal {
    /// A stable machine-readable code for `/status`.
    pub fn code(&self) -> &'static str {
        match self {
            WriteRefusal::Unreachable => "unreachable",
            WriteRefusal::Replica => "replica",
            WriteRefusal::Fenced => "fenced",
            WriteRefusal::Rpo { .. } => "rpo",
        }
    }
}

/// The local Redis as last probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisView {
    /// What the local Redis says it is.
    pub role: RedisRole,
    /// `master_repl_offset`.
    pub offset: u64,
    /// For a replica: `master_host:master_port`.
    pub master: Option<String>,
    /// For a replica: link up.
    pub link_up: bool,
    /// Bytes behind the leader, when known.
    pub lag: Option<u64>,
    /// For a replica: whether the leader streams to it, when the leader lists it.
    pub stream: Option<StreamState>,
    /// Keys held.
    pub keys: u64,
    /// `min-replicas-to-write` at the fence value.
    pub fenced: bool,
    /// For a master under `min-replicas-to-write`: replicas that acknowledged within the lag.
    pub good_replicas: Option<u32>,
    /// For a master: the replicas it lists.
    pub replicas: u32,
    /// The checkpoint its data holds.
    pub checkpoint: Option<String>,
}

/// The sidecar's state for `/status`, `/readyz` and metrics.
#[derive(Clone, Debug)]
pub struct Status {
    /// This pod.
    pub pod: String,
    /// The sidecar's role in the election.
    pub role: SidecarRole,
    /// The leader's name, when one is known.
    pub leader: Option<String>,
    /// The leader's announce address.
    pub leader_address: Option<String>,
    /// Epoch (`leaseTransitions`) of the current leader.
    pub epoch: Option<u32>,
    /// The elector has fenced the local Redis.
    pub fenced: bool,
    /// The last probe; `None` when the last probe failed.
    pub redis: Option<RedisView>,
    /// Why the last probe failed.
    pub redis_error: Option<String>,
    /// The last Kubernetes error, if the last call failed.
    pub api_error: Option<String>,
    /// The last role change: epoch, reason, Unix time.
    pub last_change: Option<(u32, String, u64)>,
    /// When the control loop last ran.
    pub last_loop: Instant,
    /// When the lease was last renewed or acquired by us.
    pub last_renew: Option<Instant>,
    /// Readiness threshold for replicas.
    pub max_lag: u64,
    /// The Lease's pause marker while automatic failover is paused.
    pub paused: Option<String>,
    /// RPO mode: replicas that must acknowledge for the leader to take writes (0: off).
    pub min_replicas: u32,
    /// RPO mode: within how many seconds.
    pub max_replica_lag_secs: u32,
    /// Failsafe as the elector last showed it.
    pub failsafe: crate::wire::FailsafeReport,
    /// The cold start, as the candidacy last showed it.
    pub cold_start: crate::wire::ColdStartReport,
    /// The operator's tags on this pod.
    pub tags: kube_coord::Tags,
}

impl Status {
    /// A fresh status for `pod`.
    pub fn new(pod: &str, max_lag: u64) -> Self {
        Self {
            pod: pod.to_string(),
            role: SidecarRole::Undecided,
            leader: None,
            leader_address: None,
            epoch: None,
            fenced: true,
            redis: None,
            redis_error: None,
            api_error: None,
            last_change: None,
            last_loop: Instant::now(),
            last_renew: None,
            max_lag,
            paused: None,
            min_replicas: 0,
            max_replica_lag_secs: redis_node::DEFAULT_MIN_REPLICAS_MAX_LAG,
            failsafe: Default::default(),
            cold_start: Default::default(),
            tags: Default::default(),
        }
    }

    /// Whether the local Redis takes writes now: a master, not fenced, and in the RPO mode
    /// with enough replicas acknowledging; `Err` says why not.
    pub fn accepts_writes(&self) -> Result<(), WriteRefusal> {
        let Some(r) = &self.redis else {
            return Err(WriteRefusal::Unreachable);
        };
        if r.role != RedisRole::Master {
            return Err(WriteRefusal::Replica);
        }
        if self.fenced || r.fenced {
            return Err(WriteRefusal::Fenced);
        }
        let good = r.good_replicas.unwrap_or(0);
        if self.min_replicas > 0 && good < self.min_replicas {
            return Err(WriteRefusal::Rpo {
                good,
                required: self.min_replicas,
                within_secs: self.max_replica_lag_secs,
            });
        }
        Ok(())
    }

    /// Ready when the local Redis is in the role the Lease dictates: a leader holding the lease
    /// and writable, or a replica linked to the current leader with lag within bounds.
    /// `Err` says why not.
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_within(self.max_lag)
    }

    /// [`Self::readiness`] with a replica's largest lag given (`/replica?max-lag=`).
    pub fn readiness_within(&self, max_lag: u64) -> Result<(), String> {
        let Some(r) = &self.redis else {
            return Err(format!(
                "local Redis not answering: {}",
                self.redis_error.clone().unwrap_or_default()
            ));
        };
        match self.role {
            SidecarRole::Leader => {
                if r.role != RedisRole::Master {
                    Err("leading, but the local Redis is not a master yet".into())
                } else if self.fenced || r.fenced {
                    Err("leading, but the local Redis is fenced".into())
                } else {
                    Ok(())
                }
            }
            SidecarRole::Replica => {
                if r.role != RedisRole::Replica {
                    return Err("following, but the local Redis is not a replica yet".into());
                }
                if r.master != self.leader_address {
                    return Err(format!(
                        "replicating from {:?}, not the leader {:?}",
                        r.master, self.leader_address
                    ));
                }
                if !r.link_up {
                    return Err("replication link to the leader is down".into());
                }
                if r.stream.is_some_and(|s| !s.streaming) {
                    return Err(
                        "synced, but the leader does not stream to it yet (no acknowledgement)"
                            .into(),
                    );
                }
                match r.lag {
                    Some(lag) if lag > max_lag => {
                        Err(format!("replica lags {lag} bytes (max {max_lag})"))
                    }
                    _ => Ok(()),
                }
            }
            other => Err(format!("role is {other}")),
        }
    }

    /// The control loop ran within `within`.
    pub fn live(&self, within: Duration) -> bool {
        self.last_loop.elapsed() <= within
    }

    /// What `GET /status` answers.
    pub fn report(&self) -> StatusReport {
        let refusal = self.accepts_writes().err();
        let readiness = self.readiness();
        StatusReport {
            pod: self.pod.clone(),
            role: self.role,
            leader: self.leader.clone(),
            leader_address: self.leader_address.clone(),
            epoch: self.epoch,
            fenced: self.fenced,
            paused: self.paused.clone(),
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
            redis: self.redis.as_ref().map(|r| RedisReport {
                role: r.role,
                offset: r.offset,
                master: r.master.clone(),
                link_up: r.link_up,
                lag: r.lag,
                keys: r.keys,
                fenced: r.fenced,
                acked_offset: r.stream.map(|s| s.acked_offset),
                streaming: r.stream.map(|s| s.streaming),
                replicas: (r.role == RedisRole::Master).then_some(r.replicas),
                good_replicas: r.good_replicas,
                checkpoint: r.checkpoint.clone(),
            }),
            data_safety: Some(DataSafety {
                rpo_mode: self.min_replicas > 0,
                min_replicas: self.min_replicas,
                max_replica_lag_seconds: self.max_replica_lag_secs,
                accepts_writes: refusal.is_none(),
                refuses_writes: refusal.map(|r| r.code().to_string()),
                refuses_writes_reason: refusal.map(|r| r.to_string()),
            }),
            redis_error: self.redis_error.clone(),
            api_error: self.api_error.clone(),
            last_change: self
                .last_change
                .as_ref()
                .map(|(epoch, reason, unix_time)| LastChange {
                    epoch: *epoch,
                    reason: reason.clone(),
                    unix_time: *unix_time,
                }),
            seconds_since_renew: self.last_renew.map(|t| t.elapsed().as_secs_f64()),
            failsafe: self.failsafe.clone(),
            cold_start: self.cold_start.clone(),
            tags: self.tags.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(master: &str, link_up: bool, lag: Option<u64>) -> RedisView {
        RedisView {
            role: RedisRole::Replica,
            offset: 10,
            master: Some(master.into()),
            link_up,
            lag,
            stream: None,
            keys: 1,
            fenced: false,
            good_replicas: None,
            replicas: 0,
            checkpoint: None,
        }
    }

    #[test]
    fn readiness_rules() {
        let mut s = Status::new("p", 100);
        assert!(s.readiness().is_err(), "no probe yet");
        s.redis = Some(replica("l:6379", true, Some(5)));
        assert!(s.readiness().is_err(), "undecided");
        s.role = SidecarRole::Replica;
        s.leader_address = Some("l:6379".into());
        assert!(s.readiness().is_ok());
        s.redis = Some(replica("l:6379", true, Some(500)));
        assert!(s.readiness().unwrap_err().contains("lags"));
        s.redis = Some(replica("old:6379", true, Some(0)));
        assert!(s.readiness().unwrap_err().contains("not the leader"));
        s.redis = Some(replica("l:6379", false, None));
        assert!(s.readiness().unwrap_err().contains("link"));
        let mut not_streaming = replica("l:6379", true, Some(0));
        not_streaming.stream = Some(StreamState {
            acked_offset: 0,
            streaming: false,
        });
        s.redis = Some(not_streaming.clone());
        assert!(s.readiness().unwrap_err().contains("stream"));
        not_streaming.stream = Some(StreamState {
            acked_offset: 10,
            streaming: true,
        });
        s.redis = Some(not_streaming);
        assert!(s.readiness().is_ok());
        s.role = SidecarRole::Leader;
        s.fenced = false;
        s.redis = Some(RedisView {
            role: RedisRole::Master,
            offset: 1,
            master: None,
            link_up: false,
            lag: None,
            stream: None,
            keys: 0,
            fenced: false,
            good_replicas: Some(0),
            replicas: 2,
            checkpoint: None,
        });
        assert!(s.readiness().is_ok());
        assert!(s.accepts_writes().is_ok(), "RPO mode off");
        s.min_replicas = 1;
        assert!(
            s.accepts_writes()
                .unwrap_err()
                .to_string()
                .contains("RPO mode")
        );
        assert!(
            s.readiness().is_ok(),
            "a leader refusing writes stays routed"
        );
        let json = serde_json::to_value(s.report()).unwrap();
        assert_eq!(json["dataSafety"]["acceptsWrites"], false);
        assert_eq!(json["dataSafety"]["refusesWrites"], "rpo");
        s.fenced = true;
        assert!(s.readiness().is_err());
        assert_eq!(serde_json::to_value(s.report()).unwrap()["ready"], false);
    }

    #[test]
    fn stream_state_from_the_leaders_list() {
        let leader = redis_node::info::parse(
            "role:master\nconnected_slaves:2\nmaster_repl_offset:500\nslave0:ip=10.0.0.2,port=6379,state=online,offset=0,lag=0\nslave1:ip=10.0.0.3,port=6379,state=online,offset=480,lag=1\n",
        )
        .unwrap();
        assert_eq!(
            stream_state(&leader, "10.0.0.2", 6379),
            Some(StreamState {
                acked_offset: 0,
                streaming: false
            }),
            "online, but no acknowledgement of a stream that exists"
        );
        assert!(stream_state(&leader, "10.0.0.3", 6379).unwrap().streaming);
        assert_eq!(stream_state(&leader, "10.0.0.4", 6379), None);
        let empty = redis_node::info::parse(
            "role:master\nconnected_slaves:1\nmaster_repl_offset:0\nslave0:ip=10.0.0.2,port=6379,state=online,offset=0,lag=0\n",
        )
        .unwrap();
        assert!(
            stream_state(&empty, "10.0.0.2", 6379).unwrap().streaming,
            "nothing to stream yet"
        );
        let syncing = redis_node::info::parse(
            "role:master\nconnected_slaves:1\nmaster_repl_offset:9\nslave0:ip=10.0.0.2,port=6379,state=wait_bgsave,offset=0,lag=0\n",
        )
        .unwrap();
        assert!(!stream_state(&syncing, "10.0.0.2", 6379).unwrap().streaming);
    }
}
