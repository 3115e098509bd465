//! The sidecar: the control loop that feeds observations (Lease watch, Redis probes, time) to
//! the pure [`election::elector::Elector`] and carries out its actions on Redis and Kubernetes,
//! plus the HTTP API, metrics and Events.

pub mod config;
pub mod edges;
pub mod failsafe;
pub mod handover;
pub mod http;
pub mod metrics;
mod sentinel_feed;
pub mod sentinel_view;
pub mod serve;
pub mod status;
pub mod tls;

use crate::wire::{self, PodSummary, SidecarRole};
use config::{Announce, SidecarConfig, split_host_port};
use edges::{
    Checkpoints, Edges, EventSink, FailsafeTransport, Kubernetes, LeaseStore, PeerDirectory,
    RedisControl, RedisDialer, Routing,
};
use election::Mono;
use election::candidacy::{Candidacy, CandidacyInput, ColdStart, ColdStartEnd, RankSnapshot};
use election::checkpoint::Checkpoint;
use election::elector::{Action, Elector, Input, Purpose, Role};
use election::failsafe::{AskKind, Member, MemberEvidence, Reply, RoundOutcome};
use election::handover::{RedisState, Replica};
use election::rank::Candidate;
use failsafe::{AskRequest, RoundContext, RoundDone};
use futures::StreamExt;
use handover::{SwitchoverRequest, Trigger};
use kube_coord::events::{EventKind, EventRecorder, SidecarEvent};
use kube_coord::{Coord, CoordError};
use metrics::{Kind, Metrics};
use redis_node::info::Role as RedisRole;
use redis_node::{NodeConfig, RedisNode};
use status::{RedisView, Status};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the local Redis is probed: the floor of how fast a dead Redis is noticed.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How often the leader's offset is read for a replica's lag.
const LAG_INTERVAL: Duration = Duration::from_secs(1);
/// How often the sidecar reads its pod's tags (one list of the group's pods).
const TAGS_INTERVAL: Duration = Duration::from_secs(5);

/// Start-up failures (configuration the sidecar cannot run with). Everything after start-up
/// is retried, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable Kubernetes configuration.
    #[error("--kubeconfig")]
    Kube(#[source] kube_coord::client::ClientError),
    /// The HTTP address cannot be bound.
    #[error("--http-addr {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Redis address is unusable.
    #[error("--redis-addr: {0}")]
    Redis(String),
}

/// A peer as the ranking and the hand-over see it.
pub struct PeerView {
    /// Pod name.
    pub name: String,
    /// Its Redis' announce address.
    pub address: String,
    /// Its leadership priority.
    pub priority: u32,
    /// A direct probe of its Redis; `None` when it did not answer.
    pub probe: Option<redis_node::Probe>,
    /// Its pod is being deleted.
    pub terminating: bool,
}

impl PeerView {
    /// The peer as the pure decisions see it (ranking, hand-over target).
    pub fn replica(&self) -> Replica {
        Replica {
            name: self.name.clone(),
            address: self.address.clone(),
            priority: self.priority,
            terminating: self.terminating,
            redis: self.probe.as_ref().map(|p| RedisState {
                master: match &p.info.role {
                    RedisRole::Master => None,
                    RedisRole::Replica {
                        master_host,
                        master_port,
                        ..
                    } => Some(format!("{master_host}:{master_port}")),
                },
                link_up: matches!(p.info.role, RedisRole::Replica { link_up: true, .. }),
                offset: p.info.offset,
                has_data: p.info.has_data(),
                loading: p.info.loading,
                checkpoint: p.checkpoint.as_deref().and_then(Checkpoint::parse),
            }),
        }
    }

    /// Its rank entry: an unanswered probe is an unhealthy candidate without data.
    fn candidate(&self) -> Candidate {
        self.replica().candidate()
    }
}

/// Work that must be done again until it succeeds, at most once per period: putting the
/// local Redis back into its role (a restart, someone's `REPLICAOF`).
#[derive(Clone, Copy, Debug)]
struct Pacer {
    period: Duration,
    last: Option<Instant>,
}

impl Pacer {
    fn new(period: Duration) -> Self {
        Self { period, last: None }
    }

    /// Whether an attempt is due at `now`.
    fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|t| now >= t + self.period)
    }

    /// An attempt was made at `now`.
    fn attempted(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

/// What routing this leadership still owes: the leader Service, our leader label, and the
/// previous leader's label. Each is retried on later loops until it is done, independently
/// of the others (a missing Service must not keep the leader label off the pod).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct RoutingDue {
    /// The leader Service must be pointed at us.
    service: bool,
    /// Our pod must get the leader label.
    label: bool,
    /// This pod, which led before us, must be relabelled as a replica.
    previous: Option<String>,
}

impl RoutingDue {
    /// Everything a new leadership owes.
    fn for_leadership(service: bool, previous: Option<String>) -> Self {
        Self {
            service,
            label: true,
            previous,
        }
    }

    /// Nothing is left to do.
    fn done(&self) -> bool {
        !self.service && !self.label && self.previous.is_none()
    }
}

/// The control loop of one sidecar: it observes (the Lease watch, probes of the local Redis
/// and its peers, time), decides (the pure [`Elector`] and [`Candidacy`]), and acts (the
/// actions, carried out on the edges `E`, each reporting back as a follow-up input).
struct Sidecar<E: Edges> {
    cfg: SidecarConfig,
    /// The Sentinel-compatible endpoint's view and what it is built from, when enabled.
    sentinel: Option<sentinel_feed::SentinelFeed>,
    /// The local Redis' last probe (the endpoint reports this pod from it).
    own_probe: Option<redis_node::Probe>,
    /// The namespace (of the Lease and the pods).
    namespace: String,
    address: String,
    /// Where peers and the CLI reach our HTTP API (published on the pod).
    http_announce: String,
    elector: Elector,
    redis: E::Redis,
    lease: E::Lease,
    routing: E::Routing,
    peers: E::Peers,
    dialer: E::Dialer,
    events: E::Events,
    status: Arc<RwLock<Status>>,
    metrics: Arc<Metrics>,
    origin: Instant,
    wake_at: Mono,
    healthy: Option<bool>,
    /// Whether this sidecar may run for the lease (the pure candidacy machine).
    candidacy: Candidacy,
    /// The eligibility last fed to the elector.
    eligible: bool,
    /// Why the elector refused the last hand-over write ([`Action::HandoverRefused`]).
    handover_refused: Option<&'static str>,
    /// Cached connections to the peers' Redis, by address (ranking, hand-over, fencing).
    peer_nodes: HashMap<String, E::Redis>,
    /// A follower's connection to the leader's Redis (lag, stream state, fencing).
    leader_node: Option<(String, E::Redis)>,
    last_lag_check: Option<Instant>,
    /// Routing this leadership still owes.
    routing_due: RoutingDue,
    /// The pod that led before us (set by `FencePrevious`), relabelled once we are routed.
    previous_leader: Option<String>,
    /// The pod annotations last written.
    published: Option<String>,
    /// The operator's tags on this pod, as last read ([`Sidecar::refresh_tags`]).
    tags: kube_coord::Tags,
    /// When the tags were last read.
    tags_read: Option<Instant>,
    /// The read label ([`kube_coord::READ_LABEL`]) as last written.
    read_label: Option<bool>,
    /// Putting the local Redis back into its role (pointed at the leader again, or made a
    /// writable master again): at most once per retry period.
    repair: Pacer,
    /// Failsafe messages to the members.
    failsafe: E::Failsafe,
    /// The leader's checkpoint writer.
    checkpoints: E::Checkpoints,
    /// This sidecar led, or saw the Lease written, since it started: not a cold start.
    warm: bool,
    /// The Lease's resourceVersion when this sidecar first saw it.
    first_lease_version: Option<String>,
    /// Every pod of the group as last listed (names), addressed or not.
    listed_names: Vec<String>,
    /// An operator forced the election of a cold start (`POST /v1/force-election`).
    cold_forced: Arc<std::sync::atomic::AtomicBool>,
    /// The cold start's wait was announced (Event, log).
    cold_wait_announced: bool,
    /// While leading: the `run_id` of the Redis process this sidecar made the leader's; a
    /// different one is a restart ([`Sidecar::leader_redis_restarted`]).
    leader_run_id: Option<String>,
    /// Outcomes of failsafe rounds, put here by the tasks that run them. Every `feed` takes
    /// them first, before the input it was given: a round answered while the loop waited on
    /// a hanging API call (a blackhole holds each for the request timeout) must extend the
    /// leader before that call's failure is weighed against the renew deadline.
    rounds_done: Arc<std::sync::Mutex<Vec<RoundDone>>>,
    /// Wakes the loop when a round's outcome arrives.
    rounds_notify: Arc<tokio::sync::Notify>,
    /// The elector's answer to the failsafe question being fed.
    failsafe_reply: Option<Reply>,
    /// Events held while the Lease API is unavailable, published once it answers.
    held_events: VecDeque<SidecarEvent>,
    /// Listing the group for the failsafe membership: at most once per retry period.
    listing: Pacer,
    /// The failsafe episode the last Events announced: since when, and at which epoch.
    failsafe_announced: Option<(Instant, u32)>,
}

/// At most this many Events wait for the API; older ones are dropped first.
const HELD_EVENTS: usize = 64;

impl<E: Edges> Sidecar<E> {
    fn now(&self) -> Mono {
        self.origin.elapsed()
    }

    fn api_error(&self, e: &CoordError) {
        tracing::warn!(error = %e, "Kubernetes request failed");
        self.metrics
            .api_errors
            .get_or_create(&Kind {
                kind: e.label().into(),
            })
            .inc();
        self.status.write().expect("status lock").api_error = Some(e.to_string());
    }

    fn api_ok(&self) {
        self.status.write().expect("status lock").api_error = None;
    }

    /// The API is unavailable to us as far as we know: the last Lease write ended so, or the
    /// last call failed and nothing has succeeded since. Best-effort calls (Events, pod
    /// annotations, listings) wait meanwhile: a blackholed API holds each for the request
    /// timeout, and the loop must keep answering failsafe questions and sending rounds.
    fn api_unavailable(&self) -> bool {
        self.elector.api_down() || self.status.read().expect("status lock").api_error.is_some()
    }

    /// Records an Event (best effort: a slow or failing API must not hold up a role change).
    /// While the Lease API is unavailable the Event waits, so that a hanging API cannot stall
    /// the loop that keeps the leader confirmed; it is published once the API answers.
    async fn event(&mut self, kind: EventKind, note: String) {
        tracing::info!(reason = kind.reason(), action = kind.action(), "{note}");
        let event = SidecarEvent::new(kind, note);
        if self.api_unavailable() || !self.held_events.is_empty() {
            // Behind the held ones, so that Events keep their order.
            if self.held_events.len() >= HELD_EVENTS {
                self.held_events.pop_front();
            }
            self.held_events.push_back(event);
            self.flush_events().await;
            return;
        }
        self.publish_event(&event).await;
    }

    /// Publishes the Events held during an outage, once the API answers again.
    async fn flush_events(&mut self) {
        while !self.api_unavailable()
            && let Some(event) = self.held_events.pop_front()
        {
            self.publish_event(&event).await;
        }
    }

    async fn publish_event(&self, event: &SidecarEvent) {
        if let Err(e) = self.events.publish(event).await {
            self.metrics
                .api_errors
                .get_or_create(&Kind {
                    kind: e.label().into(),
                })
                .inc();
            tracing::debug!(error = %e, "publishing an Event failed");
        }
    }

    /// Feeds one input and everything it leads to, carrying out the actions in order. Rounds
    /// answered meanwhile go first (see `rounds_done`).
    async fn feed(&mut self, input: Input) {
        let mut queue = VecDeque::from([self.vouched(input)]);
        loop {
            for answered in self.answered_rounds().into_iter().rev() {
                queue.push_front(answered);
            }
            let Some(input) = queue.pop_front() else {
                break;
            };
            let step = self.elector.step(self.now(), input);
            self.wake_at = step.wake_at;
            for action in step.actions {
                if let Some(next) = self.perform(action).await {
                    queue.push_back(next);
                }
            }
        }
        self.sync_status();
        self.announce_failsafe().await;
    }

    /// With pod DNS names, the holder's Redis address is the holder's name
    /// (`<holder>.<svc>.<ns>.svc.<domain>`), not the address the Lease's annotation carries:
    /// anyone allowed to write that annotation could point every replica at a Redis outside
    /// the group, while the name resolves only to a pod the headless Service lists (an
    /// identity the API vouches for).
    fn vouched(&self, input: Input) -> Input {
        match input {
            Input::Observed(Some(mut l)) if !l.record.holder.is_empty() => {
                if let Some(a) = self.vouched_address(&l.record.holder) {
                    l.record.holder_address = a;
                }
                Input::Observed(Some(l))
            }
            other => other,
        }
    }

    /// The Redis address of group member `pod` when pods announce DNS names (derived from
    /// its name, whatever its annotations say); `None` with a fixed announce address.
    fn vouched_address(&self, pod: &str) -> Option<String> {
        match &self.cfg.announce {
            Announce::Headless { .. } => Some(self.cfg.announce.resolve(pod, &self.namespace)),
            Announce::Fixed(_) => None,
        }
    }

    /// Events when a failsafe episode starts and ends (held until the API answers, so both
    /// reach it once it is back).
    async fn announce_failsafe(&mut self) {
        let view = self.elector.failsafe_view(self.now());
        let epoch = match self.elector.role() {
            Role::Leader { epoch, .. } => *epoch,
            _ => 0,
        };
        match (view.active, self.failsafe_announced) {
            (true, None) => {
                self.failsafe_announced = Some((Instant::now(), epoch));
                self.metrics.failsafe_episodes.inc();
                self.event(
                    EventKind::FailsafeStarted,
                    format!(
                        "the Kubernetes API is unavailable: serving in failsafe at epoch {epoch}, as long as all {} members confirm each retry period",
                        view.members
                    ),
                )
                .await;
            }
            (false, Some((since, at_epoch))) => {
                self.failsafe_announced = None;
                let lasted = since.elapsed().as_secs_f64();
                let note = if matches!(self.elector.role(), Role::Leader { epoch, .. } if *epoch == at_epoch)
                {
                    format!(
                        "the Kubernetes API answers again: renewed the lease at epoch {at_epoch} after {lasted:.1} s in failsafe"
                    )
                } else {
                    format!(
                        "failsafe ended after {lasted:.1} s without a renewal: no longer leading at epoch {at_epoch}"
                    )
                };
                self.event(EventKind::FailsafeEnded, note).await;
            }
            _ => {}
        }
    }

    fn sync_status(&mut self) {
        // Warm once this sidecar led, or saw the Lease written after its first look at it:
        // a lease found unchanged since the start may be a dead group's, however valid it
        // looks for its first lease duration (and a follower of it is not warm).
        let version = self.elector.observed().map(|l| l.version.clone());
        match (&self.first_lease_version, &version) {
            (None, Some(v)) => self.first_lease_version = Some(v.clone()),
            (Some(first), Some(v)) if first != v => self.warm = true,
            _ => {}
        }
        if matches!(self.elector.role(), Role::Leader { .. }) {
            self.warm = true;
        }
        self.checkpoints.leading(match self.elector.role() {
            Role::Leader { epoch, .. } if !self.elector.fenced() => Some(*epoch),
            _ => None,
        });
        let role = match self.elector.role() {
            Role::Undecided => SidecarRole::Undecided,
            Role::Leader { .. } => SidecarRole::Leader,
            Role::Follower { .. } => SidecarRole::Replica,
            Role::Candidate => SidecarRole::Candidate,
        };
        let mut st = self.status.write().expect("status lock");
        if self.warm {
            st.cold_start = Default::default();
        }
        st.role = role;
        st.fenced = self.elector.fenced();
        st.paused = self.elector.pause_marker().map(str::to_string);
        match self.elector.role() {
            Role::Leader { epoch, .. } => {
                st.leader = Some(self.cfg.pod_name.clone());
                st.leader_address = Some(self.address.clone());
                st.epoch = Some(*epoch);
            }
            Role::Follower {
                leader,
                address,
                epoch,
            } => {
                st.leader = Some(leader.clone());
                st.leader_address = Some(address.clone());
                st.epoch = Some(*epoch);
            }
            _ => {
                st.leader = None;
                st.leader_address = None;
            }
        }
        let now = self.now();
        let view = self.elector.failsafe_view(now);
        let to_unix = |t: Mono| {
            let now_unix = failsafe::unix_ms();
            if t >= now {
                now_unix + (t - now).as_millis() as u64
            } else {
                now_unix.saturating_sub((now - t).as_millis() as u64)
            }
        };
        st.failsafe = wire::FailsafeReport {
            enabled: self.elector.failsafe_enabled(),
            active: view.active,
            since_unix_ms: view.since.filter(|_| view.active).map(to_unix),
            members: view.members as u32,
            confirmed: view.confirmed as u32,
            last_round_unix_ms: view.last_round.filter(|_| view.active).map(to_unix),
            last_confirmed_unix_ms: view.last_confirmed.filter(|_| view.active).map(to_unix),
            promise_until_unix_ms: view.promise_until.map(to_unix),
            promised_to: view.promised_to.clone(),
        };
        self.metrics.failsafe_active.set(i64::from(view.active));
        self.metrics.failsafe_confirmed.set(if view.active {
            view.confirmed as i64
        } else {
            0
        });
        self.metrics
            .failsafe_promise
            .set(i64::from(view.promise_until.is_some()));
        self.metrics.set_role(role);
        self.metrics.fenced.set(i64::from(st.fenced));
        if let Some(e) = st.epoch {
            self.metrics.epoch.set(i64::from(e));
        }
        drop(st);
        self.update_sentinel_view();
    }

    fn record_change(&self, epoch: u32, reason: String) {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.status.write().expect("status lock").last_change = Some((epoch, reason, unix));
        self.metrics.transitions.inc();
    }

    async fn perform(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::HandoverRefused { reason } => {
                self.handover_refused = Some(reason);
                None
            }
            Action::Write(intent) => {
                let sent = self.now();
                let sent_instant = Instant::now();
                let result = self.lease.write(&intent).await;
                self.metrics
                    .renew_latency
                    .observe(sent_instant.elapsed().as_secs_f64());
                match result {
                    Ok(lease) => {
                        self.api_ok();
                        if intent.purpose != Purpose::Release
                            && lease.record.holder == self.cfg.pod_name
                        {
                            self.status.write().expect("status lock").last_renew =
                                Some(sent_instant);
                        }
                        if intent.purpose == Purpose::Release {
                            // A candidate releases only a lease left in its name by the
                            // process before a restart, when a peer ranks above it.
                            let why = if matches!(self.elector.role(), Role::Leader { .. }) {
                                ""
                            } else {
                                " held before this pod restarted: a reachable peer ranks above it"
                            };
                            self.event(
                                EventKind::Released,
                                format!(
                                    "released the lease at epoch {}{why}",
                                    lease.record.transitions
                                ),
                            )
                            .await;
                        }
                        Some(Input::WriteSucceeded {
                            sent_at: sent,
                            lease,
                        })
                    }
                    Err(e) => {
                        self.api_error(&e);
                        Some(match e.outcome() {
                            kube_coord::ApiOutcome::LeaseLost => Input::WriteConflict,
                            kube_coord::ApiOutcome::Unavailable => Input::WriteFailed,
                        })
                    }
                }
            }
            Action::Refresh => match self.lease.get().await {
                Ok(l) => {
                    self.api_ok();
                    Some(Input::Observed(l))
                }
                Err(e) => {
                    self.api_error(&e);
                    Some(Input::ReadFailed)
                }
            },
            Action::FailsafeRound {
                round,
                holder,
                epoch,
                members,
            } => {
                self.start_round(round, holder, epoch, members, AskKind::Round);
                None
            }
            Action::FailsafeRelease {
                holder,
                epoch,
                members,
            } => {
                tracing::info!(
                    epoch,
                    "fenced in failsafe: telling the members their promises are void"
                );
                self.start_round(0, holder, epoch, members, AskKind::Release);
                None
            }
            Action::FailsafeReply(reply) => {
                self.failsafe_reply = Some(reply);
                None
            }
            Action::Fence { reason } => {
                if let Err(e) = self.redis.fence().await {
                    self.metrics
                        .redis_errors
                        .get_or_create(&Kind {
                            kind: "fence".into(),
                        })
                        .inc();
                    tracing::warn!(error = %e, "fencing the local Redis failed (an unreachable Redis takes no writes either)");
                }
                self.event(EventKind::Fenced, format!("local Redis fenced: {reason}"))
                    .await;
                None
            }
            Action::FencePrevious { holder, address } => {
                self.previous_leader = Some(holder.clone());
                let note = match self.fence_previous(&address).await {
                    Ok(how) => format!("fenced the previous leader {holder} at {address}{how}"),
                    Err(e) => {
                        format!("could not fence the previous leader {holder} at {address}: {e}")
                    }
                };
                self.event(EventKind::FencedPrevious, note).await;
                None
            }
            Action::Promote { epoch } => {
                let mut problems = self.make_writable_master(true).await;
                self.routing_due = RoutingDue::for_leadership(
                    self.cfg.leader_service.is_some(),
                    self.previous_leader.take(),
                );
                self.ensure_routing().await;
                if let Err(e) = self.redis.drop_clients().await {
                    problems.push(format!("drop clients: {e}"));
                }
                if let Ok(p) = self.redis.probe().await {
                    self.leader_run_id = Some(p.info.run_id.clone()).filter(|r| !r.is_empty());
                }
                self.metrics.failovers.inc();
                self.metrics
                    .last_failover_seconds
                    .set(self.elector.promoted_after().as_secs_f64());
                self.record_change(epoch, "elected".into());
                let note = if problems.is_empty() {
                    format!("promoted to leader at epoch {epoch}: master, unfenced, routed")
                } else {
                    format!(
                        "promoted to leader at epoch {epoch} with problems: {}",
                        problems.join("; ")
                    )
                };
                self.event(EventKind::Promoted, note).await;
                None
            }
            Action::Follow {
                leader,
                address,
                epoch,
            } => {
                self.routing_due = RoutingDue::default();
                match split_host_port(&address) {
                    Some((host, port)) => {
                        if let Err(e) = self.redis.follow(&host, port).await {
                            tracing::warn!(error = %e, "REPLICAOF failed; retried on the next change");
                        }
                        let _ = self.redis.drop_clients().await;
                        self.leader_node = None;
                    }
                    None => {
                        tracing::warn!(%address, %leader, "leader address is not HOST:PORT; cannot follow")
                    }
                }
                self.label_self(SidecarRole::Replica).await;
                self.record_change(epoch, format!("following {leader}"));
                self.event(
                    EventKind::Following,
                    format!("replicating from {leader} ({address}) at epoch {epoch}"),
                )
                .await;
                None
            }
            Action::SteppedDown { reason } => {
                self.routing_due = RoutingDue::default();
                let epoch = self.status.read().expect("status lock").epoch.unwrap_or(0);
                self.record_change(epoch, format!("stepped down: {reason}"));
                self.event(
                    EventKind::SteppedDown,
                    format!("no longer leader: {reason}"),
                )
                .await;
                None
            }
        }
    }

    /// The group's name in failsafe messages.
    fn group(&self) -> String {
        format!("{}/{}", self.namespace, self.cfg.lease_name)
    }

    fn round_context(&self) -> Option<RoundContext> {
        Some(RoundContext {
            key: self.cfg.peer_key.clone()?,
            group: self.group(),
            me: self.cfg.pod_name.clone(),
            wait: self.cfg.timing.request_timeout,
        })
    }

    /// Sends a failsafe round (or release) without waiting: its outcome comes back through
    /// `rounds_tx`, so a slow member never holds up the loop, and the round's validity counts
    /// from `sent_at`, taken before the first message leaves.
    fn start_round(
        &mut self,
        round: u64,
        holder: String,
        epoch: u32,
        members: Vec<Member>,
        kind: AskKind,
    ) {
        let Some(ctx) = self.round_context() else {
            return;
        };
        let sent_at = self.now();
        let transport = self.failsafe.clone();
        let done = self.rounds_done.clone();
        let notify = self.rounds_notify.clone();
        tokio::spawn(async move {
            let outcome = failsafe::run_round(transport, ctx, members, holder, epoch, kind).await;
            if kind == AskKind::Round {
                done.lock()
                    .expect("rounds lock")
                    .push((round, sent_at, outcome));
                notify.notify_one();
            }
        });
    }

    /// The rounds answered since the last look, as inputs: counted and logged when they do
    /// not confirm.
    fn answered_rounds(&self) -> Vec<Input> {
        let done = std::mem::take(&mut *self.rounds_done.lock().expect("rounds lock"));
        done.into_iter().map(|d| self.round_input(d)).collect()
    }

    fn round_input(&self, (round, sent_at, outcome): RoundDone) -> Input {
        let label = match &outcome {
            RoundOutcome::Confirmed => "confirmed",
            RoundOutcome::Refused { member, reason } => {
                tracing::warn!(%member, %reason, "a member refused to confirm this failsafe leadership");
                "refused"
            }
            RoundOutcome::Silent { members } => {
                tracing::warn!(
                    ?members,
                    "failsafe round not confirmed: no valid answer from these members"
                );
                "silent"
            }
        };
        self.metrics
            .failsafe_rounds
            .get_or_create(&metrics::Outcome {
                outcome: label.into(),
            })
            .inc();
        Input::FailsafeAnswered {
            round,
            sent_at,
            outcome,
        }
    }

    /// A checked failsafe question from a peer: the elector answers it.
    async fn failsafe_ask(&mut self, req: AskRequest) {
        self.failsafe_reply = None;
        self.feed(Input::FailsafeAsk {
            holder: req.holder,
            epoch: req.epoch,
            kind: req.kind,
        })
        .await;
        if let Some(reply) = self.failsafe_reply.take() {
            let _ = req.reply.send(reply);
        }
    }

    /// A leader with failsafe lists the group once per retry period while the API answers:
    /// its next renewal records the membership on the Lease.
    async fn list_members(&mut self) {
        if !self.cfg.failsafe
            || self.api_unavailable()
            || !matches!(self.elector.role(), Role::Leader { .. })
            || !self.listing.due(Instant::now())
        {
            return;
        }
        self.listing.attempted(Instant::now());
        match self.peers.peers().await {
            Ok(peers) => {
                let members = peers
                    .into_iter()
                    .filter(|p| !p.terminating)
                    .filter_map(|p| match p.vouched_http() {
                        Ok(http) => Some(Member {
                            name: p.name.clone(),
                            http: http.to_string(),
                        }),
                        Err(why) => {
                            if !p.http.is_empty() {
                                tracing::warn!(pod = %p.name, why = %why, "not a failsafe member");
                            }
                            None
                        }
                    })
                    .collect();
                self.feed(Input::Members(members)).await;
            }
            Err(e) => self.api_error(&e),
        }
    }

    /// DESIGN 3a, joining pods: a pod outside the membership the Lease records may run only
    /// once every recorded member is shown to hold no promise and not to lead (its pod is
    /// gone, or its sidecar says so). `true` when it may run.
    async fn joiner_may_run(&mut self) -> bool {
        let recorded = self.elector.recorded_members().to_vec();
        if !election::failsafe::is_joining(&self.cfg.pod_name, &recorded) {
            return true;
        }
        let listed: Vec<String> = match self.peers.peers().await {
            Ok(p) => p
                .into_iter()
                .filter(|p| !p.terminating)
                .map(|p| p.name)
                .collect(),
            Err(e) => {
                self.api_error(&e);
                return false;
            }
        };
        let mut evidence = BTreeMap::new();
        let ctx = self.round_context();
        for m in recorded.iter().filter(|m| m.name != self.cfg.pod_name) {
            let ev = if !listed.contains(&m.name) {
                MemberEvidence::Gone
            } else if let Some(ctx) = &ctx {
                let ask = failsafe::AskMessage::signed(
                    &ctx.key,
                    &ctx.group,
                    &ctx.me,
                    &m.name,
                    "",
                    0,
                    AskKind::Probe,
                );
                let answer =
                    tokio::time::timeout(ctx.wait, self.failsafe.ask(m.clone(), ask.clone()))
                        .await
                        .ok()
                        .flatten()
                        .and_then(|r| r.check(&ctx.key, &ask, &m.name));
                match answer {
                    Some(r) => MemberEvidence::Answered {
                        promise: r.promise,
                        leads: r.leads,
                    },
                    None => MemberEvidence::Unknown,
                }
            } else {
                MemberEvidence::Unknown
            };
            evidence.insert(m.name.clone(), ev);
        }
        let ok = election::failsafe::joiner_may_run(&self.cfg.pod_name, &recorded, &evidence);
        if !ok {
            tracing::info!(
                ?evidence,
                "joining: not in the recorded membership, and not every member is shown free of a failsafe promise; backing off"
            );
        }
        ok
    }

    /// Fences the previous leader's Redis at `address`; `Ok` says how.
    ///
    /// An established connection to it goes first (a follower's lag probe, a candidate's
    /// ranking probe): if that Redis is stopped (a frozen pod, a stalled node), the fence waits
    /// in its socket and runs as soon as it resumes, ahead of every command a client sends
    /// after that, and `CLIENT KILL` then drops those clients. A new connection could not even
    /// authenticate before it resumes, and the resumed Redis would take writes until its own
    /// sidecar fenced it (found by `tests/data_safety.rs`: a frozen leader resumed after a
    /// failover acknowledged a write). A fresh connection is the fallback.
    async fn fence_previous(&self, address: &str) -> Result<&'static str, String> {
        let established = match &self.leader_node {
            Some((a, node)) if a == address => Some(node),
            _ => self.peer_nodes.get(address),
        };
        if let Some(node) = established {
            match node.fence().await {
                Ok(()) => return Ok(""),
                Err(redis_node::NodeError::Timeout { .. }) => {
                    return Ok(
                        " (it does not answer: the fence waits on an established connection and runs first when it resumes)",
                    );
                }
                // Closed (a restarted Redis, a dropped client): try a new connection.
                Err(_) => {}
            }
        }
        let (host, port) =
            split_host_port(address).ok_or_else(|| format!("{address:?} is not HOST:PORT"))?;
        self.dialer
            .dial(self.node_config(host, port))
            .map_err(|e| e.to_string())?
            .fence()
            .await
            .map(|()| "")
            .map_err(|e| e.to_string())
    }

    fn node_config(&self, host: String, port: u16) -> NodeConfig {
        peer_node_config(&self.cfg, host, port)
    }

    async fn label_self(&mut self, role: SidecarRole) {
        let labels = [(self.cfg.role_label.clone(), Some(role.as_str().to_string()))].into();
        if let Err(e) = self
            .routing
            .patch_pod(&self.cfg.pod_name, labels, BTreeMap::new())
            .await
        {
            self.api_error(&e);
        }
    }

    /// Carries out what routing this leadership still owes ([`RoutingDue`]); what fails is
    /// retried on the next loop.
    async fn ensure_routing(&mut self) {
        if self.routing_due.done() || !matches!(self.elector.role(), Role::Leader { .. }) {
            return;
        }
        if self.routing_due.service
            && let Some(svc) = self.cfg.leader_service.clone()
        {
            match self.routing.route_service(&svc, &self.cfg.pod_name).await {
                Ok(()) => self.routing_due.service = false,
                Err(e) => self.api_error(&e),
            }
        }
        if self.routing_due.label {
            let labels = [(
                self.cfg.role_label.clone(),
                Some(SidecarRole::Leader.as_str().to_string()),
            )]
            .into();
            match self
                .routing
                .patch_pod(&self.cfg.pod_name, labels, BTreeMap::new())
                .await
            {
                Ok(()) => self.routing_due.label = false,
                Err(e) => self.api_error(&e),
            }
        }
        if let Some(prev) = self.routing_due.previous.clone() {
            if prev == self.cfg.pod_name {
                self.routing_due.previous = None;
                return;
            }
            let labels = [(
                self.cfg.role_label.clone(),
                Some(SidecarRole::Replica.as_str().to_string()),
            )]
            .into();
            match self.routing.patch_pod(&prev, labels, BTreeMap::new()).await {
                // The previous pod may be gone: that is fine.
                Err(e) if !e.is_not_found() => self.api_error(&e),
                _ => self.routing_due.previous = None,
            }
        }
    }

    /// The peers (pods annotated with our Lease) with their priority and a direct probe of
    /// their Redis, through cached connections. Used for ranking and for hand-over.
    async fn probe_peers(&mut self) -> Result<Vec<PeerView>, CoordError> {
        let peers = self.peers.peers().await?;
        self.listed_names = peers.iter().map(|p| p.name.clone()).collect();
        let mut out = Vec::new();
        for mut peer in peers
            .into_iter()
            .filter(|p| p.name != self.cfg.pod_name && !p.address.is_empty())
        {
            if let Some(a) = self.vouched_address(&peer.name) {
                peer.address = a;
            }
            let priority = peer
                .status
                .as_ref()
                .map_or(kube_coord::wire::DEFAULT_PRIORITY, |s| s.priority);
            let Some((host, port)) = split_host_port(&peer.address) else {
                continue;
            };
            let nc = self.node_config(host, port);
            let node = match self.peer_nodes.entry(peer.address.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match self.dialer.dial(nc) {
                    Ok(n) => v.insert(n),
                    Err(_) => continue,
                },
            };
            // A cached connection the peer closed (role changes drop clients) fails once,
            // then reconnects: one retry tells a dropped connection from a dead Redis.
            let probe = match node.probe().await {
                Ok(p) => Some(p),
                Err(_) => node.probe().await.ok(),
            };
            out.push(PeerView {
                name: peer.name,
                address: peer.address,
                priority,
                probe,
                terminating: peer.terminating,
            });
        }
        Ok(out)
    }

    /// Probes the local Redis and feeds health changes.
    async fn probe(&mut self) {
        let probe = self.redis.probe().await;
        self.own_probe = probe.as_ref().ok().cloned();
        let healthy = match &probe {
            Ok(p) => !p.info.loading,
            Err(_) => false,
        };
        {
            let mut st = self.status.write().expect("status lock");
            match &probe {
                Ok(p) => {
                    let (role, master, link_up) = match &p.info.role {
                        RedisRole::Master => (wire::RedisRole::Master, None, false),
                        RedisRole::Replica {
                            master_host,
                            master_port,
                            link_up,
                            ..
                        } => (
                            wire::RedisRole::Replica,
                            Some(format!("{master_host}:{master_port}")),
                            *link_up,
                        ),
                    };
                    // What the leader said of this replica is kept until the next look
                    // at the leader (once a second), and only while it still follows it.
                    let (lag, stream) = st
                        .redis
                        .as_ref()
                        .filter(|r| r.role == role && r.master == master)
                        .map(|r| (r.lag, r.stream))
                        .unwrap_or_default();
                    st.redis = Some(RedisView {
                        role,
                        offset: p.info.offset,
                        master,
                        link_up,
                        lag,
                        stream,
                        keys: p.info.keys,
                        fenced: p.fenced,
                        good_replicas: p.info.good_replicas,
                        replicas: p.info.replicas.len() as u32,
                        checkpoint: p.checkpoint.clone(),
                    });
                    st.redis_error = None;
                    self.metrics.redis_up.set(1);
                    self.metrics
                        .redis_writable_master
                        .set(i64::from(role == wire::RedisRole::Master && !p.fenced));
                    self.metrics.offset.set(p.info.offset as i64);
                    self.metrics
                        .good_replicas
                        .set(p.info.good_replicas.map_or(-1, i64::from));
                }
                Err(e) => {
                    st.redis = None;
                    st.redis_error = Some(e.to_string());
                    self.metrics.redis_up.set(0);
                    self.metrics.redis_writable_master.set(0);
                    self.metrics
                        .redis_errors
                        .get_or_create(&Kind {
                            kind: "probe".into(),
                        })
                        .inc();
                }
            }
        }
        if self.healthy != Some(healthy) {
            self.healthy = Some(healthy);
            if let Err(e) = &probe {
                self.event(
                    EventKind::RedisUnhealthy,
                    format!("local Redis unhealthy: {e}"),
                )
                .await;
            } else if probe.as_ref().is_ok_and(|p| p.info.loading) {
                self.event(
                    EventKind::RedisUnhealthy,
                    "local Redis is loading its dataset".into(),
                )
                .await;
            } else {
                self.event(EventKind::RedisHealthy, "local Redis healthy".into())
                    .await;
            }
            self.feed(Input::RedisHealth(healthy)).await;
        }
        if let Ok(p) = &probe
            && !self.leader_redis_restarted(p).await
        {
            self.reconcile_follower(p).await;
            self.reconcile_leader(p).await;
        }
        self.update_eligibility().await;
        self.update_lag().await;
    }

    /// A leader whose Redis process restarted (a new `run_id`; the kubelet can restart a
    /// crashed container faster than a probe sees it down) steps down instead of making it a
    /// master again: it came back with what its disk held (nothing without persistence; with
    /// AOF, possibly without the appends Redis held back during a slow fsync), while its
    /// replicas may hold more, and as master it would make them flush it with a full sync.
    /// Reported as unhealthy once, so the elector fences and releases; the ranking then
    /// picks the most complete copy (offsets: a restarted Redis reads 0, or its snapshot's).
    async fn leader_redis_restarted(&mut self, p: &redis_node::Probe) -> bool {
        if !matches!(self.elector.role(), Role::Leader { .. })
            || self.elector.pause_marker().is_some()
        {
            self.leader_run_id = None;
            return false;
        }
        let run_id = &p.info.run_id;
        if run_id.is_empty() {
            return false;
        }
        match &self.leader_run_id {
            None => {
                self.leader_run_id = Some(run_id.clone());
                false
            }
            Some(known) if known == run_id => false,
            Some(_) => {
                self.leader_run_id = None;
                let note = "the leader's Redis restarted (a new run_id): stepping down, so that the most complete copy leads".to_string();
                tracing::warn!("{note}");
                self.event(EventKind::RedisUnhealthy, note).await;
                self.healthy = Some(false);
                self.feed(Input::RedisHealth(false)).await;
                true
            }
        }
    }

    /// Makes the local Redis a master (`REPLICAOF NO ONE`, when `promote`) and unfences it;
    /// what failed, in words. Used by a promotion and by the leader's repair of its Redis.
    async fn make_writable_master(&self, promote: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if promote && let Err(e) = self.redis.promote().await {
            problems.push(format!("REPLICAOF NO ONE: {e}"));
        }
        if let Err(e) = self
            .redis
            .unfence(self.opening_checkpoint().as_deref())
            .await
        {
            problems.push(format!("unfence: {e}"));
        }
        problems
    }

    /// The checkpoint that goes with lifting the fence (in the same pipeline): every client
    /// write of this leadership comes after a checkpoint of its epoch, so a copy holding any
    /// of them ranks above every copy of an earlier epoch (without it, a whole-group outage
    /// right after a failover could elect the previous leader's copy, the writer of the
    /// last checkpoint of the old epoch, over the new leader's). `None` when not leading or
    /// with checkpoints off.
    fn opening_checkpoint(&self) -> Option<String> {
        let Role::Leader { epoch, .. } = self.elector.role() else {
            return None;
        };
        if self.cfg.checkpoint_interval.is_zero() {
            return None;
        }
        let prev = self
            .status
            .read()
            .expect("status lock")
            .redis
            .as_ref()
            .and_then(|r| r.checkpoint.as_deref().and_then(Checkpoint::parse));
        let next = Checkpoint::next(
            u64::from(*epoch),
            &self.cfg.pod_name,
            prev.as_ref(),
            failsafe::unix_ms(),
        );
        Some(next.encode())
    }

    /// A leader whose Redis is a replica or fenced although the elector made it a writable
    /// master (it restarted, which starts it fenced; a refused hand-over could not lift the
    /// fence; someone changed it) is made so again, at most once per retry period. The
    /// elector is ticked first, so a leader past its renew deadline steps down instead: this
    /// never unfences a Redis whose lease may have lapsed.
    async fn reconcile_leader(&mut self, probe: &redis_node::Probe) {
        if !self.elector.writes_may_resume() {
            return;
        }
        let master = matches!(probe.info.role, RedisRole::Master);
        if (master && !probe.fenced) || !self.repair.due(Instant::now()) {
            return;
        }
        self.feed(Input::Tick).await;
        if !self.elector.writes_may_resume() {
            return;
        }
        self.repair.attempted(Instant::now());
        let problems = self.make_writable_master(!master).await;
        let note = if problems.is_empty() {
            "the leader's Redis was not a writable master; made it one again".to_string()
        } else {
            format!(
                "making the leader's Redis a writable master again failed: {}",
                problems.join("; ")
            )
        };
        self.event(EventKind::Reconciled, note).await;
    }

    /// A follower whose Redis is not a fenced replica of the leader (it restarted, or someone
    /// changed it: `REPLICAOF NO ONE` and `min-replicas-to-write 0` made a second writable
    /// master) is fenced first, so it takes no write from the moment this runs, then pointed at
    /// the leader again, at most once per retry period, with an Event. The elector only says
    /// `Follow` when the leader changes; this keeps the Redis in that role.
    async fn reconcile_follower(&mut self, probe: &redis_node::Probe) {
        let Role::Follower { address, .. } = self.elector.role().clone() else {
            return;
        };
        let Some((host, port)) = split_host_port(&address) else {
            return;
        };
        let following = matches!(&probe.info.role, RedisRole::Replica { master_host, master_port, .. } if *master_host == host && *master_port == port);
        if (following && probe.fenced) || !self.repair.due(Instant::now()) {
            return;
        }
        self.repair.attempted(Instant::now());
        let was = match &probe.info.role {
            RedisRole::Master if probe.fenced => "a fenced master".to_string(),
            RedisRole::Master => "a writable master".to_string(),
            RedisRole::Replica {
                master_host,
                master_port,
                ..
            } if !following => format!("replicating from {master_host}:{master_port}"),
            RedisRole::Replica { .. } => "an unfenced replica".to_string(),
        };
        tracing::warn!(%address, was = %was, "the local Redis is not a fenced replica of the leader; fencing it and pointing it there again");
        let mut problems = Vec::new();
        if let Err(e) = self.redis.fence().await {
            problems.push(format!("fence: {e}"));
        }
        if !following && let Err(e) = self.redis.follow(&host, port).await {
            problems.push(format!("REPLICAOF: {e}"));
        }
        let note = if problems.is_empty() {
            format!(
                "the local Redis was {was}; fenced it and pointed it at the leader ({address}) again"
            )
        } else {
            format!(
                "the local Redis was {was}; fencing it and pointing it at the leader failed (retried): {}",
                problems.join("; ")
            )
        };
        self.event(EventKind::Reconciled, note).await;
    }

    /// Data-aware candidacy ([`Candidacy`]). Only a candidate (no valid leader known) may
    /// run, and only after looking at its peers, at most once per retry period; everyone else
    /// is not eligible, so that a freed lease is never grabbed before that look.
    async fn update_eligibility(&mut self) {
        if self.priority() == 0 {
            return;
        }
        let now = self.now();
        if *self.elector.role() != Role::Candidate {
            self.candidacy.step(now, CandidacyInput::NotCandidate);
            if self.eligible {
                self.eligible = false;
                self.feed(Input::Eligible(false)).await;
            }
            return;
        }
        if !self.candidacy.due(now) {
            return;
        }
        // A fresh look at the local Redis (a cached one may predate a restart that emptied
        // it), only when a ranking round is due; a failed look retries on the next call.
        let (offset, has_data, checkpoint) = match self.redis.probe().await {
            Ok(p) => (
                p.info.offset,
                p.info.has_data(),
                p.checkpoint.as_deref().and_then(Checkpoint::parse),
            ),
            Err(_) => return,
        };
        let peers: Vec<Candidate> = match self.probe_peers().await {
            Ok(peers) => peers.iter().map(PeerView::candidate).collect(),
            Err(e) => {
                self.api_error(&e);
                return;
            }
        };
        let cold = self.cold_start(checkpoint.is_some());
        let is_cold = cold.is_some();
        let snapshot = RankSnapshot {
            me: Candidate {
                name: self.cfg.pod_name.clone(),
                priority: self.priority(),
                offset,
                has_data,
                checkpoint,
                healthy: true,
            },
            peers,
            // A candidate sees a non-empty holder only when that lease expired unreleased.
            // In a cold start that holder is a restarted pod like the others, not a leader
            // cut off with its replicas caught up: no exception for it.
            lapsed_holder: self
                .elector
                .observed()
                .map(|o| o.record.holder.clone())
                .filter(|h| !h.is_empty() && *h != self.cfg.pod_name && cold.is_none()),
            cold,
        };
        let verdict = self
            .candidacy
            .step(self.now(), CandidacyInput::Ranked(snapshot));
        self.report_cold_start(
            is_cold,
            &verdict.waiting_for,
            verdict.cold_start_ended.as_ref(),
        )
        .await;
        if verdict.started_back_off {
            let better = verdict.better.as_deref().unwrap_or_default();
            tracing::info!(%better, "backing off: a reachable peer ranks above this one");
        }
        if verdict.ran_anyway {
            tracing::info!("running after the back-off: the better peer did not take over in time");
        }
        let eligible = verdict.eligible && self.joiner_may_run().await;
        self.eligible = eligible;
        self.feed(Input::Eligible(eligible)).await;
    }

    /// A cold start (docs/deploy.md, "Persistence"): the group ran before (the Lease was
    /// held or has a history, or this pod's data holds a checkpoint), and this sidecar has
    /// seen no live leader since it started, as after a whole-group restart. `None`
    /// otherwise, and for a fresh group.
    fn cold_start(&self, holds_checkpoint: bool) -> Option<ColdStart> {
        if self.warm {
            return None;
        }
        // The group ran before: the Lease says so, or this pod's own data does (a Lease
        // deleted with its namespace, a cluster rebuilt around retained claims).
        let ran_before = holds_checkpoint
            || self.elector.observed().is_some_and(|l| {
                let r = &l.record;
                !r.holder.is_empty() || r.transitions > 0 || !r.history.is_empty()
            });
        if !ran_before {
            return None;
        }
        let mut members: Vec<String> = self
            .elector
            .recorded_members()
            .iter()
            .map(|m| m.name.clone())
            .chain(self.listed_names.iter().cloned())
            .chain(std::iter::once(self.cfg.pod_name.clone()))
            .collect();
        members.sort();
        members.dedup();
        Some(ColdStart {
            members,
            forced: self.cold_forced.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Logs, records (Events) and shows in `/status` where a cold start stands.
    async fn report_cold_start(
        &mut self,
        cold: bool,
        waiting_for: &[String],
        ended: Option<&ColdStartEnd>,
    ) {
        {
            let mut st = self.status.write().expect("status lock");
            st.cold_start.cold = cold;
            st.cold_start.waiting_for = waiting_for.to_vec();
            st.cold_start.forced = self.cold_forced.load(std::sync::atomic::Ordering::Relaxed);
        }
        if !waiting_for.is_empty() && !self.cold_wait_announced {
            self.cold_wait_announced = true;
            let note = format!(
                "cold start: the group ran before and no leader is valid; waiting up to {:?} for a majority of the members before running for the lease (not answering: {})",
                self.cfg.cold_start_wait,
                waiting_for.join(", ")
            );
            tracing::warn!("{note}");
            self.event(EventKind::ColdStartWaiting, note).await;
        }
        let Some(ended) = ended else {
            return;
        };
        let (how, missing) = match ended {
            ColdStartEnd::Majority { missing } => ("a majority of the members answered", missing),
            ColdStartEnd::WaitEnded { missing } => ("the cold-start wait passed", missing),
            ColdStartEnd::Forced { missing } => ("an operator forced the election", missing),
        };
        let note = if missing.is_empty() {
            format!(
                "cold start: {how}; every member answered; the freshest copy runs for the lease"
            )
        } else {
            format!(
                "cold start: {how}; running with the members present; missing: {}",
                missing.join(", ")
            )
        };
        tracing::info!("{note}");
        self.event(EventKind::ColdStartEnded, note).await;
    }

    /// A replica's lag (the leader's offset minus ours) and whether the leader streams to it
    /// (its entry in the leader's `INFO`: online, with an acknowledgement), read at most
    /// once a second.
    async fn update_lag(&mut self) {
        let Role::Follower { address, .. } = self.elector.role().clone() else {
            return;
        };
        if self
            .last_lag_check
            .is_some_and(|t| t.elapsed() < LAG_INTERVAL)
        {
            return;
        }
        self.last_lag_check = Some(Instant::now());
        if self.leader_node.as_ref().is_none_or(|(a, _)| *a != address) {
            let Some((host, port)) = split_host_port(&address) else {
                return;
            };
            match self.dialer.dial(self.node_config(host, port)) {
                Ok(n) => self.leader_node = Some((address.clone(), n)),
                Err(_) => return,
            }
        }
        let (_, node) = self.leader_node.as_ref().expect("set above");
        let leader = node.probe().await.ok().map(|p| p.info);
        let me = split_host_port(&self.address);
        let mut st = self.status.write().expect("status lock");
        if let Some(r) = st.redis.as_mut() {
            r.lag = leader.as_ref().map(|l| l.offset.saturating_sub(r.offset));
            r.stream = match (&leader, &me) {
                (Some(l), Some((host, port))) => status::stream_state(l, host, *port),
                _ => None,
            };
            if let Some(l) = r.lag {
                self.metrics.lag.set(l as i64);
            }
            self.metrics
                .replica_streaming
                .set(i64::from(r.stream.is_some_and(|s| s.streaming)));
        }
    }

    /// This pod's leadership priority: `--priority`, unless its tags say otherwise.
    fn priority(&self) -> u32 {
        self.tags.priority(self.cfg.priority)
    }

    /// Reads the operator's tags on this pod (annotations, [`kube_coord::Tags`]) at start and
    /// then every [`TAGS_INTERVAL`], so that a tag takes effect without a restart.
    async fn refresh_tags(&mut self) {
        if self.api_unavailable() || self.tags_read.is_some_and(|t| t.elapsed() < TAGS_INTERVAL) {
            return;
        }
        self.tags_read = Some(Instant::now());
        let peers = match self.peers.peers().await {
            Ok(p) => p,
            Err(e) => {
                self.api_error(&e);
                return;
            }
        };
        // Our pod is listed once it carries our annotations (after the first publish).
        let Some(me) = peers.into_iter().find(|p| p.name == self.cfg.pod_name) else {
            return;
        };
        if me.tags != self.tags {
            tracing::info!(
                nofailover = me.tags.nofailover,
                noloadbalance = me.tags.noloadbalance,
                priority = ?me.tags.priority,
                problems = ?me.tags.problems,
                "pod tags changed"
            );
            self.tags = me.tags;
            self.status.write().expect("status lock").tags = self.tags.clone();
        }
    }

    /// Annotates our pod with the lease, our address and a short status, and labels it for
    /// the read Service, when they change.
    async fn publish(&mut self) {
        // Best effort; held while the API is unavailable (see `api_unavailable`).
        if self.api_unavailable() {
            return;
        }
        let st = self.status.read().expect("status lock").clone();
        let ready = st.readiness().is_ok();
        let summary = serde_json::to_string(&PodSummary {
            role: st.role,
            epoch: st.epoch,
            priority: self.priority(),
            fenced: st.fenced,
            ready,
        })
        .expect("a PodSummary always encodes");
        // Reads go to a ready pod its operator did not tag out of load balancing.
        let read = ready && !self.tags.noloadbalance;
        if self.published.as_deref() == Some(summary.as_str()) && self.read_label == Some(read) {
            return;
        }
        let annotations = [
            (
                kube_coord::POD_LEASE_ANNOTATION.to_string(),
                Some(self.cfg.lease_name.clone()),
            ),
            (
                kube_coord::POD_HTTP_ANNOTATION.to_string(),
                Some(self.http_announce.clone()),
            ),
            (
                kube_coord::POD_ADDRESS_ANNOTATION.to_string(),
                Some(self.address.clone()),
            ),
            (
                kube_coord::POD_STATUS_ANNOTATION.to_string(),
                Some(summary.clone()),
            ),
        ]
        .into();
        let labels = [(kube_coord::READ_LABEL.to_string(), Some(read.to_string()))].into();
        match self
            .routing
            .patch_pod(&self.cfg.pod_name, labels, annotations)
            .await
        {
            Ok(()) => {
                self.published = Some(summary);
                self.read_label = Some(read);
            }
            Err(e) => self.api_error(&e),
        }
    }
}

async fn kube_client(cfg: &SidecarConfig) -> Result<(kube::Client, String), StartError> {
    kube_coord::client::connect(cfg.kubeconfig.as_deref(), cfg.namespace.as_deref())
        .await
        .map_err(StartError::Kube)
}

/// Runs the sidecar until `shutdown` resolves; then releases the lease if it holds it.
pub async fn run(
    mut cfg: SidecarConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    serve::raise_open_file_limit();
    let (client, ns) = kube_client(&cfg).await?;
    let address = cfg.announce.resolve(&cfg.pod_name, &ns);
    let headless = cfg.headless.clone();
    if let Some(t) = cfg.tls.as_mut() {
        t.own_name = t.own_server_name(
            &cfg.announce,
            headless.as_ref().map(|(s, d)| (s.as_str(), d.as_str())),
            &cfg.pod_name,
            &ns,
            &cfg.redis_host,
        );
        tracing::info!(server_name = %t.own_name, "TLS to Redis: certificates must chain to the CA file and carry this name");
    }
    tracing::info!(
        pod = %cfg.pod_name, %ns, lease = %cfg.lease_name, %address,
        lease_duration = ?cfg.timing.lease_duration, renew_deadline = ?cfg.timing.renew_deadline,
        retry_period = ?cfg.timing.retry_period,
        tolerated_clock_rate = cfg.timing.tolerated_clock_rate(),
        "starting; clocks may drift apart by this factor without breaking safety"
    );
    let local_redis = NodeConfig {
        host: cfg.redis_host.clone(),
        port: cfg.redis_port,
        username: cfg.redis_username.clone(),
        password: cfg.redis_password.clone(),
        replication_username: cfg.replication_username.clone(),
        replication_password: cfg.replication_password.clone(),
        timeout: cfg.redis_timeout,
        min_replicas_to_write: cfg.min_replicas,
        min_replicas_max_lag: cfg.max_replica_lag_secs,
        announce: split_host_port(&address),
        tls: cfg.tls.as_ref().map(|t| t.node_tls(&cfg.redis_host)),
    };
    let redis =
        RedisNode::new(local_redis.clone()).map_err(|e| StartError::Redis(e.to_string()))?;
    // The checkpoint writer's own connection: its writes wait while Redis pauses writes.
    let checkpoint_node =
        RedisNode::new(local_redis).map_err(|e| StartError::Redis(e.to_string()))?;
    let mut initial = Status::new(&cfg.pod_name, cfg.max_lag);
    initial.min_replicas = cfg.min_replicas;
    initial.max_replica_lag_secs = cfg.max_replica_lag_secs;
    let status = Arc::new(RwLock::new(initial));
    if cfg.min_replicas > 0 {
        tracing::info!(
            min_replicas = cfg.min_replicas,
            max_replica_lag_secs = cfg.max_replica_lag_secs,
            "RPO mode: the leader takes writes only while enough replicas acknowledge"
        );
    }
    let metrics = Arc::new(Metrics::new());
    metrics.min_replicas.set(i64::from(cfg.min_replicas));
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|source| StartError::Http {
            addr: cfg.http_addr,
            source,
        })?;
    let cold_forced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (switchover_tx, switchovers) = tokio::sync::mpsc::channel::<SwitchoverRequest>(1);
    // `SENTINEL FAILOVER` goes where `POST /switchover` goes.
    let failover_switchovers = switchover_tx.clone();
    // A few questions may wait; more are refused at once (503) rather than queued.
    let (ask_tx, asks) = tokio::sync::mpsc::channel::<AskRequest>(16);
    if cfg.failsafe {
        tracing::info!(
            "failsafe on: a leader that every member confirms stays writable while the Kubernetes API is unavailable"
        );
        let t = cfg.timing;
        if t.retry_period + t.request_timeout * 2 >= t.renew_deadline {
            tracing::warn!(
                retry_period = ?t.retry_period, request_timeout = ?t.request_timeout,
                renew_deadline = ?t.renew_deadline,
                "failsafe needs retry period + 2 × request timeout < renew deadline to keep a leader through an outage (safety does not depend on it)"
            );
        }
    } else if cfg.peer_key.is_some() {
        tracing::info!(
            "failsafe off (--failsafe off): a leader that cannot renew fences at its renew deadline"
        );
    } else {
        tracing::info!(
            "failsafe off (no --peer-key-file): a leader that cannot renew fences at its renew deadline"
        );
    }
    let api = http::router(http::ApiState {
        status: status.clone(),
        metrics: metrics.clone(),
        live_within: cfg.timing.lease_duration,
        admin: cfg.admin_token_file.clone().map(|token_file| {
            Arc::new(http::Admin {
                token_file,
                switchovers: switchover_tx,
                // The hand-over itself is bounded by the hand-over timeout; the rest is the
                // wait for the control loop to pick the request up.
                answer_within: cfg.handover_timeout + cfg.timing.lease_duration,
                cold_forced: cold_forced.clone(),
            })
        }),
        failsafe: cfg.peer_key.clone().map(|key| {
            Arc::new(http::FailsafeEndpoint {
                key,
                guard: failsafe::ReplayGuard::new(cfg.timing.lease_duration),
                group: format!("{ns}/{}", cfg.lease_name),
                pod: cfg.pod_name.clone(),
                asks: ask_tx,
                answer_within: cfg.timing.request_timeout,
            })
        }),
    });
    // Peers take the published address only when it is on the pod's IP (`vouched_http`):
    // listening on every address, publish the pod IP where it is known.
    let http_announce = if cfg.http_addr.ip().is_unspecified() {
        let host = cfg
            .pod_ip
            .map(|ip| ip.to_string())
            .or_else(|| split_host_port(&address).map(|(h, _)| h))
            .unwrap_or_else(|| "127.0.0.1".into());
        if host.contains(':') {
            format!("[{host}]:{}", cfg.http_addr.port())
        } else {
            format!("{host}:{}", cfg.http_addr.port())
        }
    } else {
        cfg.http_addr.to_string()
    };
    let http_limits = cfg.http_limits;
    let https = cfg
        .tls
        .as_ref()
        .filter(|_| cfg.http_tls)
        .map(|t| t.server_config.clone());
    // Peers' APIs are called as this one is served: over HTTPS with --http-tls.
    let peer_api = cfg
        .tls
        .as_ref()
        .filter(|_| cfg.http_tls)
        .map(|t| t.api_tls());
    let http_task = tokio::spawn(async move {
        serve::serve(listener, api, http_limits, https).await;
    });
    let events = EventRecorder::new(
        client.clone(),
        &ns,
        &cfg.pod_name,
        cfg.timing.request_timeout,
    );
    let coord = Coord::new(client, &ns, &cfg.lease_name, cfg.timing.request_timeout);
    let members_coord = coord.clone();
    let edges = EdgeSet::<Kubernetes> {
        redis,
        lease: coord.clone(),
        routing: coord.clone(),
        peers: coord,
        dialer: edges::Dial,
        events,
        failsafe: failsafe::HttpPeers::new(cfg.timing.request_timeout, peer_api.clone())
            .map_err(|e| StartError::Redis(format!("the peers' HTTPS client: {e}")))?,
        checkpoints: edges::CheckpointTask::start(
            checkpoint_node,
            cfg.pod_name.clone(),
            cfg.checkpoint_interval,
        ),
    };
    let sentinel_settings = cfg.sentinel.clone();
    let retry = cfg.timing.retry_period;
    let peer_node = {
        let cfg = cfg.clone();
        move |host: String, port: u16| peer_node_config(&cfg, host, port)
    };
    let me = cfg.pod_name.clone();
    let id_of = {
        let (ns, lease) = (ns.clone(), cfg.lease_name.clone());
        move |pod: &str| sentinel_view::sentinel_id(&ns, &lease, pod)
    };
    let admin_token_file = cfg.admin_token_file.clone();
    let failover_timeout = cfg.handover_timeout + cfg.timing.lease_duration;
    let endpoint_config = sentinel_settings
        .as_ref()
        .map(|s| sentinel::command::EndpointConfig {
            master_name: s.master_name.clone(),
            password: s.password.clone(),
            // Read on each `AUTH admin`, as `/switchover` reads it on each request.
            admin_token: cfg.admin_token_file.clone().map(|file| {
                sentinel::command::TokenSource::new(move || http::read_admin_token(&file))
            }),
            my_id: id_of(&cfg.pod_name),
            port: s.listen.port(),
            down_after_ms: cfg.timing.lease_duration.as_millis() as u64,
            max_clients: s.max_clients,
        });
    let endpoint_tls = cfg.tls.as_ref().map(|t| t.server_config.clone());
    let mut rt = Sidecar::new(cfg, ns, address, http_announce, edges, status, metrics);
    rt.cold_forced = cold_forced;
    // The Sentinel-compatible endpoint: a bind failure is a configuration error, said at
    // start (as the HTTP API's is).
    let _endpoint = match (sentinel_settings, endpoint_config) {
        (Some(settings), Some(ec)) => {
            let listen = settings.listen;
            let (feed, view) = sentinel_feed::SentinelFeed::start(
                settings,
                members_coord,
                me,
                id_of,
                peer_node,
                retry,
            );
            let failover = sentinel_feed::SidecarFailover {
                switchovers: failover_switchovers,
                http_of: feed.http_of.clone(),
                admin_token_file,
                client: crate::api_tls::builder(peer_api.as_ref())
                    .map_err(|e| StartError::Redis(format!("the peers' HTTPS client: {e}")))?
                    .timeout(failover_timeout)
                    .build()
                    .unwrap_or_default(),
                api_tls: peer_api,
            };
            rt.sentinel = Some(feed);
            let endpoint = sentinel::server::Endpoint::start(
                listen,
                ec,
                view,
                Arc::new(failover),
                endpoint_tls,
            )
            .await
            .map_err(|source| StartError::Http {
                addr: listen,
                source,
            })?;
            tracing::info!(addr = %endpoint.addr(), "Sentinel-compatible endpoint listening");
            Some(endpoint)
        }
        _ => None,
    };
    let inbox = Inbox { switchovers, asks };
    drive(rt, inbox, shutdown).await;
    http_task.abort();
    Ok(())
}

/// How to reach a peer's Redis (or the leader's). A fence sent there carries our
/// `min-replicas-max-lag`; nothing else of the RPO mode applies to a peer.
fn peer_node_config(cfg: &SidecarConfig, host: String, port: u16) -> NodeConfig {
    NodeConfig {
        tls: cfg.tls.as_ref().map(|t| t.node_tls(&host)),
        host,
        port,
        username: cfg.redis_username.clone(),
        password: cfg.redis_password.clone(),
        replication_username: cfg.replication_username.clone(),
        replication_password: cfg.replication_password.clone(),
        timeout: cfg.redis_timeout,
        min_replicas_to_write: 0,
        min_replicas_max_lag: cfg.max_replica_lag_secs,
        announce: None,
    }
}

/// One value of each edge a [`Sidecar`] runs against.
pub struct EdgeSet<E: Edges> {
    /// The local Redis.
    pub redis: E::Redis,
    /// The Lease.
    pub lease: E::Lease,
    /// Services and pod metadata.
    pub routing: E::Routing,
    /// The group's pods.
    pub peers: E::Peers,
    /// Connections to the other Redis servers.
    pub dialer: E::Dialer,
    /// Events.
    pub events: E::Events,
    /// Failsafe messages.
    pub failsafe: E::Failsafe,
    /// The leader's checkpoints.
    pub checkpoints: E::Checkpoints,
}

impl<E: Edges> Sidecar<E> {
    fn new(
        cfg: SidecarConfig,
        namespace: String,
        address: String,
        http_announce: String,
        edges: EdgeSet<E>,
        status: Arc<RwLock<Status>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let timing = cfg.timing;
        let cold_start_wait = cfg.cold_start_wait;
        Sidecar {
            sentinel: None,
            own_probe: None,
            elector: Elector::new(cfg.pod_name.clone(), address.clone(), timing)
                .with_failsafe(cfg.failsafe),
            namespace,
            cfg,
            address,
            http_announce,
            redis: edges.redis,
            lease: edges.lease,
            routing: edges.routing,
            peers: edges.peers,
            dialer: edges.dialer,
            events: edges.events,
            status,
            metrics,
            origin: Instant::now(),
            wake_at: Duration::ZERO,
            healthy: None,
            candidacy: Candidacy::new(timing).with_cold_start_wait(cold_start_wait),
            eligible: false,
            handover_refused: None,
            peer_nodes: HashMap::new(),
            leader_node: None,
            last_lag_check: None,
            routing_due: RoutingDue::default(),
            previous_leader: None,
            published: None,
            tags: Default::default(),
            tags_read: None,
            read_label: None,
            repair: Pacer::new(timing.retry_period),
            failsafe: edges.failsafe,
            checkpoints: edges.checkpoints,
            warm: false,
            first_lease_version: None,
            listed_names: Vec::new(),
            cold_forced: Default::default(),
            cold_wait_announced: false,
            leader_run_id: None,
            rounds_done: Default::default(),
            rounds_notify: Default::default(),
            failsafe_reply: None,
            held_events: VecDeque::new(),
            listing: Pacer::new(timing.retry_period),
            failsafe_announced: None,
        }
    }
}

/// What reaches the control loop from outside it: operators' switchover requests and peers'
/// failsafe questions.
struct Inbox {
    switchovers: mpsc::Receiver<SwitchoverRequest>,
    asks: mpsc::Receiver<AskRequest>,
}

/// The control loop: observes the Lease watch, switchover requests, the probe ticker and the
/// elector's next deadline, feeds what it saw, and keeps routing and the pod's annotations up
/// to date, until `shutdown` resolves; then hands over or releases.
async fn drive<E: Edges>(mut rt: Sidecar<E>, mut inbox: Inbox, shutdown: impl Future<Output = ()>) {
    let rounds = rt.rounds_notify.clone();
    // Undecided means read-only: the first step fences the local Redis.
    rt.feed(Input::Tick).await;
    rt.probe().await;
    let mut watch = rt.lease.watch();
    let mut probe_tick = tokio::time::interval(PROBE_INTERVAL);
    probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut members = rt.sentinel.as_ref().map(|f| f.members.clone());
    tokio::pin!(shutdown);
    loop {
        rt.status.write().expect("status lock").last_loop = Instant::now();
        let sleep = tokio::time::sleep_until(rt.origin + rt.wake_at);
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            ev = watch.next() => match ev {
                Some(Ok(lease)) => {
                    rt.api_ok();
                    rt.feed(Input::Observed(lease)).await;
                    // A freed lease makes us a candidate: look at the peers now, not at the
                    // next probe.
                    rt.update_eligibility().await;
                }
                Some(Err(e)) => rt.api_error(&e),
                None => watch = rt.lease.watch(),
            },
            // Failsafe first: a member's answer and a round's outcome are what keep a
            // leader confirmed while the API is down.
            _ = rounds.notified() => rt.feed(Input::Tick).await,
            Some(req) = inbox.asks.recv() => rt.failsafe_ask(req).await,
            Some(req) = inbox.switchovers.recv() => {
                let outcome = rt.hand_over(Trigger::Switchover, req.to.as_deref(), req.force).await;
                if let Err(e) = &outcome {
                    rt.event(EventKind::SwitchoverRefused, e.to_string()).await;
                }
                let _ = req.reply.send(outcome);
            }
            _ = probe_tick.tick() => rt.probe().await,
            _ = sleep => {
                rt.feed(Input::Tick).await;
                rt.update_eligibility().await;
            }
            // Last: the members task's news only refreshes the Sentinel endpoint's view.
            Some(()) = async {
                match &mut members {
                    Some(m) => m.changed().await.ok(),
                    None => std::future::pending().await,
                }
            } => rt.update_sentinel_view(),
        }
        rt.ensure_routing().await;
        rt.list_members().await;
        rt.refresh_tags().await;
        rt.publish().await;
        rt.flush_events().await;
    }
    tracing::info!("shutting down");
    if matches!(rt.elector.role(), Role::Leader { .. })
        && let Err(e) = rt.hand_over(Trigger::Shutdown, None, true).await
    {
        rt.event(
            EventKind::HandoverSkipped,
            format!("no hand-over ({e}); releasing the lease"),
        )
        .await;
    }
    rt.feed(Input::Shutdown).await;
    // A leader's release is one write; give it a bounded number of attempts.
    for _ in 0..3 {
        if !matches!(rt.elector.role(), Role::Leader { .. }) {
            break;
        }
        tokio::time::sleep(rt.cfg.timing.retry_period).await;
        rt.feed(Input::Tick).await;
    }
}

#[cfg(test)]
mod tests;
