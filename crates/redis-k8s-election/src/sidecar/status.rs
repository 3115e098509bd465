//! What the sidecar knows, shared between the control loop and the HTTP API, and the pure
//! readiness rule built on it.

use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The local Redis as last probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisView {
    /// `master` or `replica`.
    pub role: &'static str,
    /// `master_repl_offset`.
    pub offset: u64,
    /// For a replica: `master_host:master_port`.
    pub master: Option<String>,
    /// For a replica: link up.
    pub link_up: bool,
    /// Bytes behind the leader, when known.
    pub lag: Option<u64>,
    /// Keys held.
    pub keys: u64,
    /// `min-replicas-to-write` at the fence value.
    pub fenced: bool,
}

/// The sidecar's state for `/status`, `/readyz` and metrics.
#[derive(Clone, Debug)]
pub struct Status {
    /// This pod.
    pub pod: String,
    /// `undecided`, `leader`, `replica` or `candidate`.
    pub role: &'static str,
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
}

impl Status {
    /// A fresh status for `pod`.
    pub fn new(pod: &str, max_lag: u64) -> Self {
        Self {
            pod: pod.to_string(),
            role: "undecided",
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
        }
    }

    /// Ready when the local Redis is in the role the Lease dictates: a leader holding the lease
    /// and writable, or a replica linked to the current leader with lag within bounds.
    /// `Err` says why not.
    pub fn readiness(&self) -> Result<(), String> {
        let Some(r) = &self.redis else {
            return Err(format!(
                "local Redis not answering: {}",
                self.redis_error.clone().unwrap_or_default()
            ));
        };
        match self.role {
            "leader" => {
                if r.role != "master" {
                    Err("leading, but the local Redis is not a master yet".into())
                } else if self.fenced || r.fenced {
                    Err("leading, but the local Redis is fenced".into())
                } else {
                    Ok(())
                }
            }
            "replica" => {
                if r.role != "replica" {
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
                match r.lag {
                    Some(lag) if lag > self.max_lag => {
                        Err(format!("replica lags {lag} bytes (max {})", self.max_lag))
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

    /// `/status` JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "pod": self.pod,
            "role": self.role,
            "leader": self.leader,
            "leaderAddress": self.leader_address,
            "epoch": self.epoch,
            "fenced": self.fenced,
            "paused": self.paused,
            "ready": self.readiness().is_ok(),
            "notReadyReason": self.readiness().err(),
            "redis": self.redis.as_ref().map(|r| json!({
                "role": r.role, "offset": r.offset, "master": r.master, "linkUp": r.link_up,
                "lag": r.lag, "keys": r.keys, "fenced": r.fenced,
            })),
            "redisError": self.redis_error,
            "apiError": self.api_error,
            "lastChange": self.last_change.as_ref().map(|(e, why, at)| json!({"epoch": e, "reason": why, "unixTime": at})),
            "secondsSinceRenew": self.last_renew.map(|t| t.elapsed().as_secs_f64()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(master: &str, link_up: bool, lag: Option<u64>) -> RedisView {
        RedisView {
            role: "replica",
            offset: 10,
            master: Some(master.into()),
            link_up,
            lag,
            keys: 1,
            fenced: false,
        }
    }

    #[test]
    fn readiness_rules() {
        let mut s = Status::new("p", 100);
        assert!(s.readiness().is_err(), "no probe yet");
        s.redis = Some(replica("l:6379", true, Some(5)));
        assert!(s.readiness().is_err(), "undecided");
        s.role = "replica";
        s.leader_address = Some("l:6379".into());
        assert!(s.readiness().is_ok());
        s.redis = Some(replica("l:6379", true, Some(500)));
        assert!(s.readiness().unwrap_err().contains("lags"));
        s.redis = Some(replica("old:6379", true, Some(0)));
        assert!(s.readiness().unwrap_err().contains("not the leader"));
        s.redis = Some(replica("l:6379", false, None));
        assert!(s.readiness().unwrap_err().contains("link"));
        s.role = "leader";
        s.fenced = false;
        s.redis = Some(RedisView {
            role: "master",
            offset: 1,
            master: None,
            link_up: false,
            lag: None,
            keys: 0,
            fenced: false,
        });
        assert!(s.readiness().is_ok());
        s.fenced = true;
        assert!(s.readiness().is_err());
        assert_eq!(s.to_json()["ready"], false);
    }
}
