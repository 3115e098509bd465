//! Which replica a planned move (a switchover, or a leader's hand-over on shutdown) hands the
//! lease to.
//!
//! A replica qualifies when it may lead (priority above 0, its pod not being deleted),
//! replicates from this leader with its link up, and lags at most `max_lag` bytes. Among
//! those, [`crate::rank::compare_planned`] decides: priority, then offset. The caller then
//! holds writes until the chosen one has every byte, fences, and feeds
//! [`crate::elector::Input::HandOver`].

use crate::checkpoint::Checkpoint;
use crate::rank::{self, Candidate};

/// A peer's Redis as a direct probe saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisState {
    /// The master it replicates from, `host:port`; `None` for a master.
    pub master: Option<String>,
    /// A replica's link to its master is up.
    pub link_up: bool,
    /// Its replication offset.
    pub offset: u64,
    /// It holds data (keys, or a non-zero offset).
    pub has_data: bool,
    /// It is loading its data set (not healthy yet).
    pub loading: bool,
    /// The last checkpoint its data holds.
    pub checkpoint: Option<Checkpoint>,
}

/// A peer as a planned move sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Pod name.
    pub name: String,
    /// Its Redis' announce address.
    pub address: String,
    /// Its leadership priority.
    pub priority: u32,
    /// Its pod is being deleted.
    pub terminating: bool,
    /// Its Redis; `None` when it did not answer.
    pub redis: Option<RedisState>,
}

impl Replica {
    /// Its rank entry: an unanswered probe is an unhealthy candidate without data.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            name: self.name.clone(),
            priority: self.priority,
            offset: self.redis.as_ref().map_or(0, |r| r.offset),
            has_data: self.redis.as_ref().is_some_and(|r| r.has_data),
            checkpoint: self.redis.as_ref().and_then(|r| r.checkpoint.clone()),
            healthy: self.redis.as_ref().is_some_and(|r| !r.loading),
        }
    }
}

/// Why no replica (or not the one asked for) can take the lease.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefusal {
    /// No such peer.
    #[error("{0} is not a pod of this group (no pod competing for this lease has that name)")]
    UnknownPod(String),
    /// The target leads already.
    #[error("{0} is the leader already")]
    AlreadyLeader(String),
    /// Priority 0.
    #[error("{0} has priority 0 and never leads")]
    NeverLeads(String),
    /// The target's pod is being deleted.
    #[error("{0} is being deleted (its pod is shutting down) and cannot take over")]
    Terminating(String),
    /// The target does not replicate from this leader.
    #[error("{pod} is not a replica of this leader: {why}")]
    NotReplica {
        /// The pod.
        pod: String,
        /// What it is instead.
        why: String,
    },
    /// The target lags more than `max_lag`.
    #[error("{pod} is not caught up: {lag} bytes behind the leader (most allowed: {max})")]
    NotCaughtUp {
        /// The pod.
        pod: String,
        /// Its lag in bytes.
        lag: u64,
        /// The most allowed.
        max: u64,
    },
    /// No replica qualifies; why not, per pod.
    #[error("no eligible, caught-up replica to hand over to ({0})")]
    NoCandidate(String),
}

impl TargetRefusal {
    /// A stable machine-readable code for the HTTP API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            TargetRefusal::UnknownPod(_) => "unknown_pod",
            TargetRefusal::AlreadyLeader(_) => "already_leader",
            TargetRefusal::NeverLeads(_) => "never_leads",
            TargetRefusal::Terminating(_) => "terminating",
            TargetRefusal::NotReplica { .. } => "not_replica",
            TargetRefusal::NotCaughtUp { .. } => "not_caught_up",
            TargetRefusal::NoCandidate(_) => "no_candidate",
        }
    }
}

/// `host:port` split, brackets around an IPv6 host removed; `None` when it is not that.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?))
}

/// The replica to hand over to, with its address: `to` if it qualifies, else the best that
/// does. `leader` is this leader's name and announce address, `leader_offset` its Redis'
/// offset.
pub fn choose_target(
    replicas: &[Replica],
    to: Option<&str>,
    leader: (&str, &str),
    leader_offset: u64,
    max_lag: u64,
) -> Result<(String, String), TargetRefusal> {
    let (leader_name, leader_addr) = leader;
    let check = |v: &Replica| -> Result<(), TargetRefusal> {
        if v.priority == 0 {
            return Err(TargetRefusal::NeverLeads(v.name.clone()));
        }
        if v.terminating {
            return Err(TargetRefusal::Terminating(v.name.clone()));
        }
        let not_replica = |why: String| TargetRefusal::NotReplica {
            pod: v.name.clone(),
            why,
        };
        let Some(r) = &v.redis else {
            return Err(not_replica(format!(
                "its Redis at {} does not answer",
                v.address
            )));
        };
        let Some(master) = &r.master else {
            return Err(not_replica("its Redis is a master".into()));
        };
        if split_host_port(master) != split_host_port(leader_addr) {
            return Err(not_replica(format!("it replicates from {master}")));
        }
        if !r.link_up {
            return Err(not_replica("its replication link is down".into()));
        }
        let lag = leader_offset.saturating_sub(r.offset);
        if lag > max_lag {
            return Err(TargetRefusal::NotCaughtUp {
                pod: v.name.clone(),
                lag,
                max: max_lag,
            });
        }
        Ok(())
    };
    match to {
        Some(name) if name == leader_name => Err(TargetRefusal::AlreadyLeader(name.into())),
        Some(name) => {
            let v = replicas
                .iter()
                .find(|v| v.name == name)
                .ok_or_else(|| TargetRefusal::UnknownPod(name.into()))?;
            check(v)?;
            Ok((v.name.clone(), v.address.clone()))
        }
        None => {
            let mut why_not = Vec::new();
            let best = replicas
                .iter()
                .filter(|v| match check(v) {
                    Ok(()) => true,
                    Err(e) => {
                        why_not.push(e.to_string());
                        false
                    }
                })
                .min_by(|a, b| rank::compare_planned(&a.candidate(), &b.candidate()));
            match best {
                Some(v) => Ok((v.name.clone(), v.address.clone())),
                None if why_not.is_empty() => {
                    Err(TargetRefusal::NoCandidate("no other pod found".into()))
                }
                None => Err(TargetRefusal::NoCandidate(why_not.join("; "))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica_of(master: &str, link_up: bool, offset: u64) -> Option<RedisState> {
        Some(RedisState {
            master: Some(master.into()),
            link_up,
            offset,
            has_data: true,
            loading: false,
            checkpoint: None,
        })
    }

    fn peer(name: &str, priority: u32, redis: Option<RedisState>) -> Replica {
        Replica {
            name: name.into(),
            address: format!("{name}:6379"),
            priority,
            redis,
            terminating: false,
        }
    }

    const LEADER: (&str, &str) = ("a", "a:6379");

    #[test]
    fn a_pod_being_deleted_is_never_the_target() {
        let going = || {
            let mut p = peer("b", 100, replica_of("a:6379", true, 1000));
            p.terminating = true;
            p
        };
        let peers = vec![going(), peer("c", 100, replica_of("a:6379", true, 900))];
        assert_eq!(
            choose_target(&peers, Some("b"), LEADER, 1000, 1000),
            Err(TargetRefusal::Terminating("b".into()))
        );
        assert_eq!(
            choose_target(&peers, None, LEADER, 1000, 1000),
            Ok(("c".into(), "c:6379".into())),
            "the best replica is skipped while its pod is going"
        );
        assert!(matches!(
            choose_target(&[going()], None, LEADER, 1000, 1000),
            Err(TargetRefusal::NoCandidate(_))
        ));
    }

    #[test]
    fn the_named_replica_must_replicate_from_us_caught_up_and_may_lead() {
        let mut master = peer("h", 100, replica_of("a:6379", true, 1000));
        master.redis.as_mut().unwrap().master = None;
        let peers = vec![
            peer("b", 100, replica_of("a:6379", true, 990)),
            peer("c", 100, replica_of("x:6379", true, 1000)),
            peer("d", 0, replica_of("a:6379", true, 1000)),
            peer("e", 100, replica_of("a:6379", false, 1000)),
            peer("f", 100, None),
            peer("g", 100, replica_of("a:6379", true, 10)),
            master,
        ];
        let pick = |to| choose_target(&peers, to, LEADER, 1000, 100);
        assert_eq!(pick(Some("b")), Ok(("b".into(), "b:6379".into())));
        assert!(
            matches!(pick(Some("c")), Err(TargetRefusal::NotReplica { why, .. }) if why.contains("x:6379"))
        );
        assert_eq!(pick(Some("d")), Err(TargetRefusal::NeverLeads("d".into())));
        assert!(
            matches!(pick(Some("e")), Err(TargetRefusal::NotReplica { why, .. }) if why.contains("link"))
        );
        assert!(
            matches!(pick(Some("f")), Err(TargetRefusal::NotReplica { why, .. }) if why.contains("answer"))
        );
        assert_eq!(
            pick(Some("g")),
            Err(TargetRefusal::NotCaughtUp {
                pod: "g".into(),
                lag: 990,
                max: 100
            })
        );
        assert!(
            matches!(pick(Some("h")), Err(TargetRefusal::NotReplica { why, .. }) if why.contains("master"))
        );
        assert_eq!(
            pick(Some("zz")),
            Err(TargetRefusal::UnknownPod("zz".into()))
        );
        assert_eq!(
            pick(Some("a")),
            Err(TargetRefusal::AlreadyLeader("a".into()))
        );
        assert_eq!(
            pick(None),
            Ok(("b".into(), "b:6379".into())),
            "the only one that qualifies"
        );
    }

    #[test]
    fn without_a_name_the_best_qualifying_replica_wins() {
        let peers = vec![
            peer("b", 100, replica_of("a:6379", true, 990)),
            peer("c", 100, replica_of("a:6379", true, 1000)),
            peer("d", 50, replica_of("a:6379", true, 950)),
        ];
        assert_eq!(
            choose_target(&peers, None, LEADER, 1000, 100).unwrap().0,
            "d",
            "priority first"
        );
        let peers = &peers[..2];
        assert_eq!(
            choose_target(peers, None, LEADER, 1000, 100).unwrap().0,
            "c",
            "then offset"
        );
        assert_eq!(
            choose_target(&[], None, LEADER, 1000, 100),
            Err(TargetRefusal::NoCandidate("no other pod found".into()))
        );
        let none = [peer("b", 0, replica_of("a:6379", true, 1000))];
        assert!(matches!(
            choose_target(&none, None, LEADER, 1000, 100),
            Err(TargetRefusal::NoCandidate(why)) if why.contains("b has priority 0")
        ));
    }

    #[test]
    fn addresses_compare_by_host_and_port() {
        assert_eq!(split_host_port("[::1]:6379"), Some(("::1".into(), 6379)));
        assert_eq!(split_host_port("a:x"), None);
        assert_eq!(split_host_port(":6379"), None);
    }
}
