//! Planned moves: the hand-over on SIGTERM and the operator's switchover share one path.
//!
//! The leader picks a caught-up replica (or checks the one asked for), pauses writes on its
//! Redis, waits until the replica has every byte, fences, and writes the Lease naming the
//! replica with a hand-over marker, so that the replica takes it at once instead of waiting
//! for expiry. Then the held writes meet the fence, clients are dropped and reconnect
//! through the leader Service, which the new leader points at itself.

use super::config::split_host_port;
use super::{PeerView, Runtime};
use election::elector::{Action, Input, Role};
use election::rank;
use kube::runtime::events::EventType;
use redis_node::RedisNode;
use redis_node::info::Role as RedisRole;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What starts a hand-over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// SIGTERM: the pod is going away.
    Shutdown,
    /// An operator asked for it.
    Switchover,
}

impl Trigger {
    /// The history and Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Trigger::Shutdown => "handover",
            Trigger::Switchover => "switchover",
        }
    }
}

/// A switchover request from the HTTP API, answered on `reply`.
#[derive(Debug)]
pub struct SwitchoverRequest {
    /// The pod to hand over to; `None`: the best caught-up replica.
    pub to: Option<String>,
    /// Switch over even while the group is paused.
    pub force: bool,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<Handed, HandoverError>>,
}

/// A completed hand-over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handed {
    /// The old leader (this pod).
    pub from: String,
    /// The new leader.
    pub to: String,
    /// The epoch the new leader holds.
    pub epoch: u32,
    /// How long writes were held on the old leader.
    pub pause: Duration,
    /// The leader Service routed to the new leader before the hand-over timeout (always
    /// true without a leader Service).
    pub routed: bool,
}

/// Why a hand-over did not happen. Every refusal before the Lease write leaves the group as
/// it was: the leader keeps leading and its writes resume.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// Only the leader can hand over.
    #[error("this pod is not the leader (the leader is {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader {
        /// The leader as this pod knows it.
        leader: Option<String>,
    },
    /// Automatic and planned moves are off until `resume`.
    #[error("the group is paused ({0}); resume it first, or force the switchover")]
    Paused(String),
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
    /// The target lags more than `--max-lag`.
    #[error("{pod} is not caught up: {lag} bytes behind the leader (most allowed: {max})")]
    NotCaughtUp {
        /// The pod.
        pod: String,
        /// Its lag in bytes.
        lag: u64,
        /// `--max-lag`.
        max: u64,
    },
    /// No replica qualifies; why not, per pod.
    #[error("no eligible, caught-up replica to hand over to ({0})")]
    NoCandidate(String),
    /// The target did not catch up while writes were held.
    #[error("{pod} did not catch up within {waited:?} with writes held; nothing changed")]
    Timeout {
        /// The pod.
        pod: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The local Redis refused or did not answer.
    #[error("local Redis: {0}")]
    Redis(String),
    /// The Kubernetes API refused or did not answer.
    #[error("Kubernetes API: {0}")]
    Api(String),
    /// Another switchover is running.
    #[error("a hand-over is in progress already")]
    Busy,
}

impl HandoverError {
    /// A stable machine-readable code for the HTTP API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            HandoverError::NotLeader { .. } => "not_leader",
            HandoverError::Paused(_) => "paused",
            HandoverError::UnknownPod(_) => "unknown_pod",
            HandoverError::AlreadyLeader(_) => "already_leader",
            HandoverError::NeverLeads(_) => "never_leads",
            HandoverError::Terminating(_) => "terminating",
            HandoverError::NotReplica { .. } => "not_replica",
            HandoverError::NotCaughtUp { .. } => "not_caught_up",
            HandoverError::NoCandidate(_) => "no_candidate",
            HandoverError::Timeout { .. } => "timeout",
            HandoverError::Redis(_) => "redis",
            HandoverError::Api(_) => "api",
            HandoverError::Busy => "busy",
        }
    }
}

/// The replica to hand over to: `to` if it qualifies, else the best that does (priority,
/// then offset). A qualifying replica replicates from `leader_addr` with its link up, lags at
/// most `max_lag` behind `leader_offset`, and may lead (priority > 0).
pub fn choose_target(
    peers: &[PeerView],
    to: Option<&str>,
    leader: (&str, &str),
    leader_offset: u64,
    max_lag: u64,
) -> Result<(String, String), HandoverError> {
    let (leader_name, leader_addr) = leader;
    let check = |v: &PeerView| -> Result<(), HandoverError> {
        if v.priority == 0 {
            return Err(HandoverError::NeverLeads(v.name.clone()));
        }
        if v.terminating {
            return Err(HandoverError::Terminating(v.name.clone()));
        }
        let not_replica = |why: String| HandoverError::NotReplica {
            pod: v.name.clone(),
            why,
        };
        let Some(p) = &v.probe else {
            return Err(not_replica(format!(
                "its Redis at {} does not answer",
                v.address
            )));
        };
        match &p.info.role {
            RedisRole::Master => Err(not_replica("its Redis is a master".into())),
            RedisRole::Replica {
                master_host,
                master_port,
                link_up,
                ..
            } => {
                let master = format!("{master_host}:{master_port}");
                if split_host_port(&master) != split_host_port(leader_addr) {
                    Err(not_replica(format!("it replicates from {master}")))
                } else if !link_up {
                    Err(not_replica("its replication link is down".into()))
                } else {
                    let lag = leader_offset.saturating_sub(p.info.offset);
                    if lag > max_lag {
                        Err(HandoverError::NotCaughtUp {
                            pod: v.name.clone(),
                            lag,
                            max: max_lag,
                        })
                    } else {
                        Ok(())
                    }
                }
            }
        }
    };
    match to {
        Some(name) if name == leader_name => Err(HandoverError::AlreadyLeader(name.into())),
        Some(name) => {
            let v = peers
                .iter()
                .find(|v| v.name == name)
                .ok_or_else(|| HandoverError::UnknownPod(name.into()))?;
            check(v)?;
            Ok((v.name.clone(), v.address.clone()))
        }
        None => {
            let mut why_not = Vec::new();
            let best = peers
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
                    Err(HandoverError::NoCandidate("no other pod found".into()))
                }
                None => Err(HandoverError::NoCandidate(why_not.join("; "))),
            }
        }
    }
}

impl Runtime {
    /// The pause marker, when the Lease is paused and this hand-over is a switchover that was
    /// not forced (a stopping leader hands over whatever the pause says).
    fn refused_by_pause(&self, trigger: Trigger, force: bool) -> Option<String> {
        (trigger == Trigger::Switchover && !force)
            .then(|| self.elector.pause_marker().map(str::to_string))
            .flatten()
    }

    /// Hands the lease to a caught-up replica (`to`, or the best). On success this sidecar
    /// follows the new leader; on any refusal the leader keeps leading with writes resumed.
    pub(super) async fn hand_over(
        &mut self,
        trigger: Trigger,
        to: Option<&str>,
        force: bool,
    ) -> Result<Handed, HandoverError> {
        // A role decided on a stale clock would be a lie: let the deadline speak first.
        self.feed(Input::Tick).await;
        if !matches!(self.elector.role(), Role::Leader { .. }) {
            let leader = self.status.read().expect("status lock").leader.clone();
            return Err(HandoverError::NotLeader { leader });
        }
        if let Some(marker) = self.refused_by_pause(trigger, force) {
            return Err(HandoverError::Paused(marker));
        }
        let started = Instant::now();
        let deadline = started + self.cfg.handover_timeout;
        let my_offset = self
            .redis
            .probe()
            .await
            .map_err(|e| HandoverError::Redis(e.to_string()))?
            .info
            .offset;
        let peers = self
            .probe_peers()
            .await
            .map_err(|e| HandoverError::Api(e.to_string()))?;
        let (target, address) = choose_target(
            &peers,
            to,
            (&self.cfg.pod_name, &self.address),
            my_offset,
            self.cfg.max_lag,
        )?;
        let node = split_host_port(&address)
            .map(|(h, p)| RedisNode::new(self.node_config(h, p)))
            .and_then(Result::ok)
            .ok_or_else(|| HandoverError::NotReplica {
                pod: target.clone(),
                why: format!("its address {address} is unusable"),
            })?;
        self.redis
            .pause_writes(self.cfg.handover_timeout)
            .await
            .map_err(|e| HandoverError::Redis(format!("CLIENT PAUSE WRITE: {e}")))?;
        // Writes are held from here. The wait is bounded by half the renew deadline as well:
        // this loop does not renew meanwhile, and a leader whose lease may have lapsed must
        // not let writes go again (the elector fences it at its deadline).
        let wait_until = deadline.min(started + self.cfg.timing.renew_deadline / 2);
        if !self.wait_caught_up(&node, wait_until).await {
            self.resume_writes().await;
            return Err(HandoverError::Timeout {
                pod: target,
                waited: started.elapsed(),
            });
        }
        // Writes stay held while the fence goes on: none is acknowledged after the target
        // caught up, and after the unpause every held write is refused.
        if let Err(e) = self.redis.fence().await {
            self.resume_writes().await;
            return Err(HandoverError::Redis(format!("fence: {e}")));
        }
        // Our copy of the Lease may be a version behind (a renewal whose answer was lost, a
        // watch event still on its way, someone annotating the Lease), and then the
        // compare-and-set loses. Still fenced and holding writes, with the target caught up,
        // it is safe to read the Lease and write again while it still names us, up to the
        // same bound as the catch-up wait (this loop does not renew).
        let mut epoch;
        let mut attempt = 0u32;
        loop {
            let Some(intent) = self.elector.handover(self.now(), &target, &address) else {
                self.resume_writes().await;
                return Err(HandoverError::Api("a Lease write is in flight".into()));
            };
            let intent = self.with_history(intent, trigger.reason(), started.elapsed());
            epoch = intent.transitions;
            if let Some(next) = self.perform(Action::Write(intent)).await {
                self.feed(next).await;
            }
            if !matches!(self.elector.role(), Role::Leader { .. }) {
                break;
            }
            // The write failed or lost a race; it may still have committed. Read the Lease
            // before letting writes go: if the target holds it, we step down instead.
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            attempt += 1;
            match self.coord.get_lease().await {
                Ok(l) => self.feed(Input::Observed(l)).await,
                Err(e) => {
                    self.api_error(&e);
                    break;
                }
            }
            if !matches!(self.elector.role(), Role::Leader { .. })
                || self.refused_by_pause(trigger, force).is_some()
                || Instant::now() >= wait_until
            {
                break;
            }
            tracing::info!(%target, attempt, "the hand-over write lost a race with a newer Lease; writing again");
        }
        if matches!(self.elector.role(), Role::Leader { .. }) {
            self.resume_writes().await;
            return Err(HandoverError::Api(
                self.status
                    .read()
                    .expect("status lock")
                    .api_error
                    .clone()
                    .unwrap_or_else(|| "the hand-over write did not commit".into()),
            ));
        }
        let _ = self.redis.unpause().await;
        let _ = self.redis.drop_clients().await;
        let pause = started.elapsed();
        self.event(
            EventType::Normal,
            "HandedOver",
            "Handover",
            format!(
                "{}: handed the lease to {target} ({address}); writes held {pause:?}",
                trigger.reason()
            ),
        )
        .await;
        // Stay until the new leader is routed, so that a stopping pod does not vanish first.
        let mut routed = true;
        if let Some(svc) = self.cfg.leader_service.clone() {
            routed = false;
            while Instant::now() < deadline {
                if self
                    .coord
                    .service_routes_to(&svc)
                    .await
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some(target.as_str())
                {
                    routed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Handed {
            from: self.cfg.pod_name.clone(),
            to: target,
            epoch,
            pause,
            routed,
        })
    }

    /// After a refused hand-over: lift the fence (only while still leading) and the pause.
    async fn resume_writes(&mut self) {
        self.feed(Input::Tick).await;
        if matches!(self.elector.role(), Role::Leader { .. })
            && let Err(e) = self.redis.unfence().await
        {
            tracing::warn!(error = %e, "lifting the fence after a refused hand-over failed; retried by the leader check");
        }
        let _ = self.redis.unpause().await;
    }

    /// Waits until `node` has replicated everything the local Redis has, or `deadline`.
    async fn wait_caught_up(&self, node: &RedisNode, deadline: Instant) -> bool {
        let Ok(mine) = self.redis.probe().await.map(|p| p.info.offset) else {
            return false;
        };
        while Instant::now() < deadline {
            if node.probe().await.is_ok_and(|p| p.info.offset >= mine) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_node::Probe;
    use redis_node::info::NodeInfo;

    fn replica_of(master: &str, link_up: bool, offset: u64) -> Option<Probe> {
        let (host, port) = split_host_port(master).unwrap();
        Some(Probe {
            info: NodeInfo {
                role: RedisRole::Replica {
                    master_host: host,
                    master_port: port,
                    link_up,
                    syncing: false,
                },
                offset,
                loading: false,
                keys: 1,
                connected_replicas: 0,
                config_file: String::new(),
                version: "7.0.15".into(),
                replicas: Vec::new(),
                good_replicas: None,
            },
            fenced: false,
        })
    }

    fn peer(name: &str, priority: u32, probe: Option<Probe>) -> PeerView {
        PeerView {
            name: name.into(),
            address: format!("{name}:6379"),
            priority,
            probe,
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
            Err(HandoverError::Terminating("b".into()))
        );
        assert_eq!(
            choose_target(&peers, None, LEADER, 1000, 1000),
            Ok(("c".into(), "c:6379".into())),
            "the best replica is skipped while its pod is going"
        );
        assert!(matches!(
            choose_target(&[going()], None, LEADER, 1000, 1000),
            Err(HandoverError::NoCandidate(_))
        ));
    }

    #[test]
    fn the_named_replica_must_replicate_from_us_caught_up_and_may_lead() {
        let peers = vec![
            peer("b", 100, replica_of("a:6379", true, 990)),
            peer("c", 100, replica_of("x:6379", true, 1000)),
            peer("d", 0, replica_of("a:6379", true, 1000)),
            peer("e", 100, replica_of("a:6379", false, 1000)),
            peer("f", 100, None),
            peer("g", 100, replica_of("a:6379", true, 10)),
        ];
        let pick = |to| choose_target(&peers, to, LEADER, 1000, 100);
        assert_eq!(pick(Some("b")), Ok(("b".into(), "b:6379".into())));
        assert!(
            matches!(pick(Some("c")), Err(HandoverError::NotReplica { why, .. }) if why.contains("x:6379"))
        );
        assert_eq!(pick(Some("d")), Err(HandoverError::NeverLeads("d".into())));
        assert!(
            matches!(pick(Some("e")), Err(HandoverError::NotReplica { why, .. }) if why.contains("link"))
        );
        assert!(
            matches!(pick(Some("f")), Err(HandoverError::NotReplica { why, .. }) if why.contains("answer"))
        );
        assert_eq!(
            pick(Some("g")),
            Err(HandoverError::NotCaughtUp {
                pod: "g".into(),
                lag: 990,
                max: 100
            })
        );
        assert_eq!(
            pick(Some("zz")),
            Err(HandoverError::UnknownPod("zz".into()))
        );
        assert_eq!(
            pick(Some("a")),
            Err(HandoverError::AlreadyLeader("a".into()))
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
            Err(HandoverError::NoCandidate("no other pod found".into()))
        );
        let none = [peer("b", 0, replica_of("a:6379", true, 1000))];
        assert!(matches!(
            choose_target(&none, None, LEADER, 1000, 100),
            Err(HandoverError::NoCandidate(why)) if why.contains("b has priority 0")
        ));
    }
}
