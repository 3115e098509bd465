//! Planned moves: the hand-over on SIGTERM and the operator's switchover share one path.
//!
//! The leader picks a caught-up replica (or checks the one asked for), pauses writes on its
//! Redis, waits until the replica has every byte, fences, and writes the Lease naming the
//! replica with a hand-over marker, so that the replica takes it at once instead of waiting
//! for expiry. Then the held writes meet the fence, clients are dropped and reconnect
//! through the leader Service, which the new leader points at itself.

use super::Sidecar;
use super::config::split_host_port;
use super::edges::{Edges, LeaseStore, RedisControl, RedisDialer, Routing};
use election::elector::{Input, Role};
use election::handover::{TargetRefusal, choose_target};
use kube_coord::events::EventKind;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

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
    /// How long writes were held on the old leader before the hand-over write: from `CLIENT
    /// PAUSE WRITE` until the committing write was sent. The same figure the Lease history
    /// records, so `switchover` and `history` agree.
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
    /// No replica qualifies, or not the one asked for ([`choose_target`]).
    #[error(transparent)]
    Target(#[from] TargetRefusal),
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
            HandoverError::Target(t) => t.code(),
            HandoverError::Timeout { .. } => "timeout",
            HandoverError::Redis(_) => "redis",
            HandoverError::Api(_) => "api",
            HandoverError::Busy => "busy",
        }
    }
}

impl<E: Edges> Sidecar<E> {
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
        let replicas: Vec<_> = peers.iter().map(super::PeerView::replica).collect();
        let (target, address) = choose_target(
            &replicas,
            to,
            (&self.cfg.pod_name, &self.address),
            my_offset,
            self.cfg.max_lag,
        )?;
        let node = split_host_port(&address)
            .map(|(h, p)| self.dialer.dial(self.node_config(h, p)))
            .and_then(Result::ok)
            .ok_or_else(|| TargetRefusal::NotReplica {
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
        let mut attempt = 0u32;
        // The write pause as `switchover` and `history` both report it: from CLIENT PAUSE
        // WRITE until the hand-over write that committed was sent (the Lease records it in
        // that write, so it cannot include the write's own round trip).
        let mut held;
        loop {
            self.handover_refused = None;
            held = started.elapsed();
            self.feed(Input::HandOver {
                target: target.clone(),
                address: address.clone(),
                reason: trigger.reason().into(),
                held,
            })
            .await;
            if let Some(why) = self.handover_refused.take() {
                self.resume_writes().await;
                return Err(HandoverError::Api(why.into()));
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
            match self.lease.get().await {
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
        // The Lease as the hand-over write stored it (or as the read after a lost answer
        // showed it): the target's epoch.
        let epoch = self.elector.observed().map_or(0, |l| l.record.transitions);
        let _ = self.redis.unpause().await;
        let _ = self.redis.drop_clients().await;
        let pause = held;
        self.event(
            EventKind::HandedOver,
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
                    .routing
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

    /// After a refused hand-over: lift the fence (only where the elector says writes may
    /// resume: still leading, and no hand-over write that may have committed) and the pause.
    /// Where it may not, the fence stays until a renewal proves the lease is ours (the
    /// leader's repair lifts it then) or the lease shows the target holding it.
    async fn resume_writes(&mut self) {
        self.feed(Input::Tick).await;
        if self.elector.writes_may_resume()
            && let Err(e) = self
                .redis
                .unfence(self.opening_checkpoint().as_deref())
                .await
        {
            tracing::warn!(error = %e, "lifting the fence after a refused hand-over failed; retried by the leader check");
        }
        let _ = self.redis.unpause().await;
    }

    /// Waits until `node` has replicated everything the local Redis has, or `deadline`.
    async fn wait_caught_up(&self, node: &E::Redis, deadline: Instant) -> bool {
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
