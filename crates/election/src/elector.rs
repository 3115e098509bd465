//! The lease elector: client-go's `tryAcquireOrRenew` as a state machine, with the fencing the
//! Go original lacks.
//!
//! The caller feeds [`Input`]s (time passing, what the API showed, how its own writes ended,
//! Redis health) to [`Elector::step`] and carries out the returned [`Action`]s in order, each
//! finished before the next (a fence completes before a release is sent, a remote fence before
//! a promotion). It then calls `step` again no later than [`Step::wake_at`].
//!
//! Safety rests on two clocks never being compared. A follower counts a lease valid until
//! `LD` after it *observed* the record change, on its own monotonic clock. A leader counts
//! from the moment it *sent* its last successful renewal (the commit, and so every follower's
//! observation, came later) and fences its Redis once `RD` has passed without another success.
//! With `LD > RD + fence time + request timeout` the fence completes before any follower may
//! take over, for clock rates within [`crate::timing::Timing::tolerated_clock_rate`].

use crate::Mono;
use crate::failsafe::{AskKind, Member, Reply, RoundOutcome};
use crate::timing::Timing;
use std::time::Duration;

/// The election-relevant content of a Lease (spec plus the holder's announce address).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// `holderIdentity`; empty when free.
    pub holder: String,
    /// The holder's announce address (`host:port`), recorded by the holder.
    pub holder_address: String,
    /// `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// `leaseTransitions`: the epoch.
    pub transitions: u32,
    /// `acquireTime` as stored (opaque here).
    pub acquire_stamp: String,
    /// `renewTime` as stored (opaque here): it changes with every renewal, so a record that
    /// did not change means a holder that did not renew.
    pub renew_stamp: String,
    /// Set by a leader handing its lease to this holder on a planned move: the named holder
    /// takes it at once, without the ranking back-off. Empty otherwise.
    pub handover_to: String,
    /// Set (to when and by whom, opaque here) while an operator has paused automatic
    /// failover: the lease counts as held however old it is, and only its holder or a
    /// handed-over holder may write it. Empty otherwise. Carried through every write.
    pub paused: String,
    /// The role-change history (opaque here), carried through every write.
    pub history: String,
    /// The group as the holder last listed it while the API answered (failsafe, DESIGN
    /// 3a): the members its failsafe rounds must hear from, and the pods a joining pod must
    /// prove free. Empty when the holder runs without failsafe.
    pub members: Vec<Member>,
}

impl LeaseRecord {
    /// Is automatic failover paused?
    pub fn is_paused(&self) -> bool {
        !self.paused.is_empty()
    }
}

/// A Lease as read from the API: its record and resourceVersion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLease {
    /// The record.
    pub record: LeaseRecord,
    /// `metadata.resourceVersion`, for compare-and-set.
    pub version: String,
}

/// How the acquire stamp of a write is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// Set it to the wall-clock time of the write.
    Now,
    /// Keep this stored value.
    Keep(String),
}

/// Why a write is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Take a free or expired lease.
    Acquire,
    /// Renew our own lease.
    Renew,
    /// Give our lease up (holder emptied).
    Release,
    /// Hand our lease to a caught-up replica (holder set to it, marked as a handover).
    Handover,
}

/// A Lease write for the caller to send. `renewTime` is always the wall-clock time of the
/// write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteIntent {
    /// Why.
    pub purpose: Purpose,
    /// `None`: create the Lease (it does not exist). `Some(v)`: replace it if its
    /// resourceVersion is still `v`.
    pub version: Option<String>,
    /// New `holderIdentity`.
    pub holder: String,
    /// New holder address.
    pub holder_address: String,
    /// New `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// New `leaseTransitions`.
    pub transitions: u32,
    /// New `acquireTime`.
    pub acquire: Stamp,
    /// The handover marker to record (empty: none).
    pub handover_to: String,
    /// The pause marker, copied from the record written over.
    pub paused: String,
    /// The history, copied from the record written over.
    pub history: String,
    /// The membership to record: the group as last listed (renewals and acquisitions with
    /// failsafe on), else the record's.
    pub members: Vec<Member>,
    /// The change of leader this write makes, for the caller to append to the history in
    /// the same write; `None` for renewals, releases and re-acquiring our own lease. (Boxed:
    /// it is rare, and keeps every [`Action`] small.)
    pub change: Option<Box<LeaderChange>>,
}

/// Why the leader changed, as the history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeReason {
    /// The first leader: the Lease did not exist, or was never held.
    Elected,
    /// The previous leader released the lease (it stopped, or its Redis died). The history
    /// writer records `elected` when its history is empty (nobody led before).
    AfterRelease,
    /// The previous leader's lease expired unrenewed.
    Expired,
    /// A planned move (`handover` on shutdown, `switchover` by an operator).
    Planned(String),
}

/// A change of leader that a write makes: the history entry without its wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderChange {
    /// The previous leader; `None`: the last leader the history records (a released lease
    /// names nobody).
    pub from: Option<String>,
    /// Why.
    pub reason: ChangeReason,
    /// How long the group had no writable leader: the new leader's wait for a valid lease,
    /// or a hand-over's write pause.
    pub took: Duration,
}

/// What happened, as the caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed (a timer fired).
    Tick,
    /// The Lease as a watch event or a read showed it; `None` when it does not exist.
    Observed(Option<ObservedLease>),
    /// Our write committed; `sent_at` is when the request was sent.
    WriteSucceeded {
        /// When the request was sent, on the local monotonic clock.
        sent_at: Mono,
        /// The Lease as the write stored it.
        lease: ObservedLease,
    },
    /// *Lease lost*: our write lost a compare-and-set race (409 Conflict or AlreadyExists),
    /// or the Lease it replaces is gone (404). A leader steps down at once.
    WriteConflict,
    /// *API unavailable* for a write (refused, reset, timeout, 5xx, 429, 401/403): it may or
    /// may not have committed. A leader keeps its validity and, with failsafe, starts rounds.
    WriteFailed,
    /// *API unavailable* for a read ([`Action::Refresh`] got no answer).
    ReadFailed,
    /// The group's pods as just listed from the API, this one included (failsafe membership).
    Members(Vec<Member>),
    /// How a failsafe round ([`Action::FailsafeRound`]) ended; `sent_at` is when its
    /// messages were sent (the leader's validity counts from the send, never the reply).
    FailsafeAnswered {
        /// The round's number.
        round: u64,
        /// When it was sent, on the local monotonic clock.
        sent_at: Mono,
        /// What the members said.
        outcome: RoundOutcome,
    },
    /// An authenticated failsafe message from a peer's sidecar. The step answers with
    /// [`Action::FailsafeReply`].
    FailsafeAsk {
        /// The leader it names.
        holder: String,
        /// Its epoch.
        epoch: u32,
        /// What it asks.
        kind: AskKind,
    },
    /// The local Redis is healthy (reachable, answering in time, not loading) or not.
    RedisHealth(bool),
    /// Whether this sidecar may run for leader now (priority, ranking back-off).
    Eligible(bool),
    /// A planned move: hand the lease to `target` (announcing `address`). The caller sends
    /// this only after the target caught up and the local Redis is fenced, with writes held
    /// since `held` ago; `reason` is `handover` or `switchover`. The step answers with the
    /// hand-over write, or [`Action::HandoverRefused`].
    HandOver {
        /// The pod that takes over.
        target: String,
        /// Its Redis' announce address.
        address: String,
        /// `handover` (shutdown) or `switchover` (an operator).
        reason: String,
        /// How long writes have been held.
        held: Duration,
    },
    /// Stop: release the lease if we hold it.
    Shutdown,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this write and report how it ended.
    Write(WriteIntent),
    /// Read the Lease again and report it as [`Input::Observed`].
    Refresh,
    /// Make the local Redis refuse writes and drop its clients, now.
    Fence {
        /// Why, for logs and Events.
        reason: &'static str,
    },
    /// Fence the previous holder's Redis if it can be reached, before promoting.
    FencePrevious {
        /// Its pod name.
        holder: String,
        /// Its announce address.
        address: String,
    },
    /// We lead at this epoch: make the local Redis the writable master and route to it.
    Promote {
        /// `leaseTransitions` of our lease.
        epoch: u32,
    },
    /// Another sidecar leads: replicate from its Redis.
    Follow {
        /// Its pod name.
        leader: String,
        /// Its announce address.
        address: String,
        /// Its epoch.
        epoch: u32,
    },
    /// We no longer lead (after a fence or a release).
    SteppedDown {
        /// Why.
        reason: &'static str,
    },
    /// A [`Input::HandOver`] cannot be written now: not leading, or a write is in flight.
    HandoverRefused {
        /// Why, in words.
        reason: &'static str,
    },
    /// Failsafe: ask every member to confirm this leadership (authenticated, naming holder
    /// and epoch), and report the outcome as [`Input::FailsafeAnswered`]. The runtime sends
    /// it without waiting for the answers.
    FailsafeRound {
        /// The round's number.
        round: u64,
        /// This pod.
        holder: String,
        /// Our epoch.
        epoch: u32,
        /// The members to ask (the recorded membership but this pod).
        members: Vec<Member>,
    },
    /// Failsafe: tell every member that this leadership, now fenced, is given up, so their
    /// promises for it end (best effort, no answer needed).
    FailsafeRelease {
        /// This pod.
        holder: String,
        /// Our epoch.
        epoch: u32,
        /// The members to tell.
        members: Vec<Member>,
    },
    /// The answer to an [`Input::FailsafeAsk`].
    FailsafeReply(Reply),
}

/// The outcome of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The actions, in order.
    pub actions: Vec<Action>,
    /// Call `step` again (with [`Input::Tick`]) no later than this.
    pub wake_at: Mono,
}

/// This sidecar's role as the elector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not known yet: the local Redis stays fenced.
    Undecided,
    /// Leading at `epoch`; `base` is when the last successful write was sent.
    Leader {
        /// Our epoch.
        epoch: u32,
        /// Send time of the last successful acquire or renew.
        base: Mono,
    },
    /// Following `leader`.
    Follower {
        /// Its name.
        leader: String,
        /// Its address.
        address: String,
        /// Its epoch.
        epoch: u32,
    },
    /// No valid leader is known (free or expired lease); the local Redis is fenced.
    Candidate,
}

/// One splitmix64 step: spreads any seed (even 0 or 1) over all bits before xorshift uses it.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A member's promise (DESIGN 3a): it confirmed `holder` at `epoch` and, until `until` on its
/// own clock, neither campaigns nor counts that lease as expired.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Promise {
    holder: String,
    epoch: u32,
    until: Mono,
}

/// A leader's failsafe episode: from its first round until a renewal succeeds again or the
/// leadership ends.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Episode {
    epoch: u32,
    since: Mono,
    last_sent: Option<Mono>,
    last_confirmed: Option<Mono>,
    /// Members the last answered round heard a confirmation from.
    confirmed: usize,
    members: usize,
    release_sent: bool,
}

/// Failsafe as status, metrics and Events show it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FailsafeView {
    /// This leader serves in failsafe: its renewals fail and it sends rounds.
    pub active: bool,
    /// Since when (local time) the episode runs.
    pub since: Option<Mono>,
    /// The members a round asks (in an episode), or would ask: the membership recorded on
    /// the observed Lease but this pod; 0 when this pod is not in it (no failsafe for it).
    pub members: usize,
    /// How many confirmed the last answered round.
    pub confirmed: usize,
    /// When the last round was sent.
    pub last_round: Option<Mono>,
    /// When the last round every member confirmed was answered.
    pub last_confirmed: Option<Mono>,
    /// Until when (local time) this pod promised not to campaign, if it did.
    pub promise_until: Option<Mono>,
    /// The leader (name) that promise is for.
    pub promised_to: Option<String>,
}

/// The elector.
#[derive(Debug)]
pub struct Elector {
    id: String,
    address: String,
    timing: Timing,
    role: Role,
    /// The last record seen, when it was first seen (local time), or `None` if never read.
    observed: Option<(ObservedLease, Mono)>,
    /// The Lease is known not to exist.
    absent: bool,
    /// A write is in flight (its purpose).
    pending: Option<Purpose>,
    /// When the last write was sent.
    last_attempt: Option<Mono>,
    /// The local Redis is fenced by us.
    fenced: bool,
    healthy: bool,
    eligible: bool,
    /// A ranking verdict ([`Input::Eligible`]) arrived while a candidate: `eligible` is the
    /// sidecar's judgement, not the initial `false`.
    ranked: bool,
    /// This process has led at some point. An elector that never led but finds its own name
    /// on the Lease belongs to a restarted pod.
    led: bool,
    stopping: bool,
    /// Set when a read is needed before the next write (after a conflict or failure).
    stale: bool,
    /// Factor in [1, 1.2) applied to the retry period of candidates' attempts, redrawn after
    /// each attempt (client-go's `JitterUntil(RetryPeriod, 1.2)`), so that candidates that
    /// lost a race do not retry in lock-step.
    jitter: f64,
    /// State of the xorshift generator behind `jitter`: seeded, so runs are reproducible.
    rng: u64,
    /// Since when (local time) no valid leader was known to this elector; `None` while it
    /// follows. A new leader's history entry and failover metric say how long that was.
    leaderless_since: Option<Mono>,
    /// A hand-over write failed without an answer: it may have committed, and the target may
    /// be leading already. Writes must not resume on the local Redis until a renewal proves
    /// the lease is still ours (then the hand-over write, made against the same version,
    /// can never commit) or an observation shows the target holds it (then we step down).
    handover_unresolved: bool,
    /// How long no valid leader was known before this elector's last promotion.
    promoted_after: Duration,
    /// Failsafe is on (DESIGN 3a): this elector records membership, sends rounds when its
    /// renewals fail with *API unavailable*, and answers members' questions.
    failsafe: bool,
    /// The last Lease write ended *API unavailable*; a successful or conflicting write clears
    /// it.
    api_down: bool,
    /// The group as last listed ([`Input::Members`]).
    listed: Option<Vec<Member>>,
    /// The number of the last failsafe round.
    round_seq: u64,
    /// The leader's failsafe episode, while one runs.
    episode: Option<Episode>,
    /// This member's promise, while one runs.
    promise: Option<Promise>,
    /// A leader's refresh is in flight in place of a renewal: when it answers, the renewal
    /// follows at once with the version it read.
    refreshing: bool,
    /// A leader's write conflicted (409) and no read has shown whose the Lease is since: no
    /// failsafe round until one does.
    conflict_unresolved: bool,
    /// A read ([`Action::Refresh`]) is in flight: no other attempt until it answers. (The
    /// caller feeds what arrived meanwhile, e.g. a failsafe round's outcome, before the read's
    /// own answer; without this, each of those could start the next read, and a read that
    /// hangs longer than the retry period would chain reads forever.)
    reading: bool,
}

impl Elector {
    /// A new elector for identity `id` announcing `address`. Until it knows its role it asks
    /// for the local Redis to be fenced (invariant 5).
    pub fn new(id: impl Into<String>, address: impl Into<String>, timing: Timing) -> Self {
        Self {
            id: id.into(),
            address: address.into(),
            timing,
            role: Role::Undecided,
            observed: None,
            absent: false,
            pending: None,
            last_attempt: None,
            fenced: false,
            healthy: false,
            eligible: false,
            ranked: false,
            led: false,
            stopping: false,
            stale: true,
            jitter: 1.0,
            rng: 0,
            leaderless_since: None,
            handover_unresolved: false,
            promoted_after: Duration::ZERO,
            failsafe: false,
            api_down: false,
            listed: None,
            round_seq: 0,
            episode: None,
            promise: None,
            refreshing: false,
            conflict_unresolved: false,
            reading: false,
        }
        .seeded_by_identity()
    }

    /// Turns failsafe (DESIGN 3a) on or off. Every pod of a group should agree: a leader
    /// without it fences on a control-plane outage as client-go's does; a member without it
    /// never confirms (it refuses every round).
    pub fn with_failsafe(mut self, on: bool) -> Self {
        self.failsafe = on;
        self
    }

    /// Whether failsafe is on.
    pub fn failsafe_enabled(&self) -> bool {
        self.failsafe
    }

    /// Whether the last Lease write ended *API unavailable* (no write has succeeded since).
    /// The runtime holds back best-effort API calls (Events, annotations, listings) while
    /// it is so, so that a hanging API cannot stall the loop that sends failsafe rounds.
    pub fn api_down(&self) -> bool {
        self.api_down
    }

    /// Failsafe as status shows it, at `now`.
    pub fn failsafe_view(&self, now: Mono) -> FailsafeView {
        let promise = self.promise.as_ref().filter(|p| now < p.until);
        let recorded = self.recorded_members();
        let mut v = FailsafeView {
            promise_until: promise.map(|p| p.until),
            promised_to: promise.map(|p| p.holder.clone()),
            // Who would be asked: only a leader whose own name is recorded may use failsafe.
            members: if recorded.iter().any(|m| m.name == self.id) {
                recorded.len() - 1
            } else {
                0
            },
            ..FailsafeView::default()
        };
        if let Some(e) = &self.episode {
            v.active = matches!(self.role, Role::Leader { .. });
            v.since = Some(e.since);
            v.members = e.members;
            v.confirmed = e.confirmed;
            v.last_round = e.last_sent;
            v.last_confirmed = e.last_confirmed;
        }
        v
    }

    /// The membership recorded on the observed Lease (what rounds ask, and what a joining pod
    /// must prove free).
    pub fn recorded_members(&self) -> &[Member] {
        self.observed
            .as_ref()
            .map_or(&[][..], |(l, _)| &l.record.members[..])
    }

    fn promise_running(&self, now: Mono) -> bool {
        self.promise.as_ref().is_some_and(|p| now < p.until)
    }

    /// Seeds the jitter from the identity, so that pods differ and a run is reproducible.
    fn seeded_by_identity(mut self) -> Self {
        // FNV-1a: a fixed, dependency-free hash of the name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.rng = splitmix64(h) | 1;
        self
    }

    /// Replaces the jitter seed (tests and simulations).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = splitmix64(seed) | 1;
        self
    }

    fn redraw_jitter(&mut self) {
        // xorshift64: enough to spread retries; no cryptographic use.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.jitter = 1.0 + 0.2 * ((self.rng >> 11) as f64 / (1u64 << 53) as f64);
    }

    /// The pause between attempts: the retry period, stretched by the jitter for candidates.
    fn pause(&self) -> Duration {
        if matches!(self.role, Role::Leader { .. }) {
            self.timing.retry_period
        } else {
            self.timing.retry_period.mul_f64(self.jitter)
        }
    }

    /// The current role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Whether the local Redis is fenced by this elector's decisions.
    pub fn fenced(&self) -> bool {
        self.fenced
    }

    /// How long no valid leader has been known to this elector at `now` (zero while it
    /// follows). Read at a promotion, it is how long the failover took as seen from here.
    pub fn leaderless_for(&self, now: Mono) -> Duration {
        self.leaderless_since
            .map_or(Duration::ZERO, |t| now.saturating_sub(t))
    }

    /// How long no valid leader was known to this elector before its last promotion: the
    /// failover time as seen from here (zero for a hand-over it was granted at once).
    pub fn promoted_after(&self) -> Duration {
        self.promoted_after
    }

    /// Whether the runtime may let clients write to the local Redis again after a hand-over
    /// that did not happen (or a repair): leading, not fenced by this elector, and no
    /// hand-over write whose outcome is unknown.
    pub fn writes_may_resume(&self) -> bool {
        matches!(self.role, Role::Leader { .. }) && !self.fenced && !self.handover_unresolved
    }

    /// The last observed Lease.
    pub fn observed(&self) -> Option<&ObservedLease> {
        self.observed.as_ref().map(|(l, _)| l)
    }

    fn fence(&mut self, reason: &'static str, out: &mut Vec<Action>) {
        if !self.fenced {
            self.fenced = true;
            out.push(Action::Fence { reason });
        }
    }

    fn step_down(&mut self, now: Mono, reason: &'static str, out: &mut Vec<Action>) {
        self.fence(reason, out);
        if matches!(self.role, Role::Leader { .. }) {
            out.push(Action::SteppedDown { reason });
        }
        self.become_candidate(now);
    }

    fn become_candidate(&mut self, now: Mono) {
        self.role = Role::Candidate;
        self.handover_unresolved = false;
        self.episode = None;
        self.refreshing = false;
        self.conflict_unresolved = false;
        self.leaderless_since.get_or_insert(now);
    }

    /// Records an observation, resetting the observed time only when the record changed.
    fn observe(&mut self, now: Mono, lease: ObservedLease) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(old, _)| old.record != lease.record);
        let at = if changed {
            now
        } else {
            self.observed.as_ref().map_or(now, |(_, at)| *at)
        };
        self.observed = Some((lease, at));
        self.absent = false;
    }

    /// Is the observed lease held by someone else and still valid in our view? A paused
    /// lease stays valid however old it is: nobody takes over automatically.
    fn held_by_other(&self, now: Mono) -> Option<&LeaseRecord> {
        let (lease, _) = self.observed.as_ref()?;
        let r = &lease.record;
        let valid = self.other_expires_at().is_none_or(|t| now < t);
        (!r.holder.is_empty() && r.holder != self.id && valid).then_some(r)
    }

    /// When the observed lease of another holder expires in our view; `None` while paused
    /// (it does not expire) or when there is none.
    fn other_expires_at(&self) -> Option<Mono> {
        let (lease, at) = self.observed.as_ref()?;
        let r = &lease.record;
        let expiry = *at + r.lease_duration;
        // A promise to this very lease keeps it valid in our view until the promise ends,
        // whatever the API shows (DESIGN 3a).
        let promised = self
            .promise
            .as_ref()
            .filter(|p| p.holder == r.holder && p.epoch == r.transitions)
            .map_or(expiry, |p| expiry.max(p.until));
        (!r.holder.is_empty() && r.holder != self.id && !r.is_paused()).then_some(promised)
    }

    /// The observed Lease's pause marker while automatic failover is paused (someone ran
    /// `pause`), for status and for refusing a switchover.
    pub fn pause_marker(&self) -> Option<&str> {
        self.observed
            .as_ref()
            .map(|(l, _)| &l.record)
            .filter(|r| r.is_paused())
            .map(|r| r.paused.as_str())
    }

    fn paused(&self) -> bool {
        self.pause_marker().is_some()
    }

    fn write(&mut self, now: Mono, purpose: Purpose, out: &mut Vec<Action>) {
        let (version, prev) = match &self.observed {
            Some((l, _)) if !self.absent => (Some(l.version.clone()), Some(&l.record)),
            _ => (None, None),
        };
        let (paused, history) =
            prev.map_or_else(Default::default, |p| (p.paused.clone(), p.history.clone()));
        let members = match (purpose, &self.listed) {
            (Purpose::Acquire | Purpose::Renew, Some(listed)) if self.failsafe => listed.clone(),
            (Purpose::Acquire | Purpose::Renew, _) if !self.failsafe => Vec::new(),
            _ => prev.map(|p| p.members.clone()).unwrap_or_default(),
        };
        let (holder, address, duration, transitions, acquire) = match purpose {
            Purpose::Acquire => {
                let transitions = match prev {
                    None => 0,
                    Some(p) if p.holder == self.id => p.transitions,
                    Some(p) => p.transitions.saturating_add(1),
                };
                let acquire = match prev {
                    Some(p) if p.holder == self.id => Stamp::Keep(p.acquire_stamp.clone()),
                    _ => Stamp::Now,
                };
                (
                    self.id.clone(),
                    self.address.clone(),
                    self.timing.lease_duration,
                    transitions,
                    acquire,
                )
            }
            Purpose::Renew => {
                let p = prev.cloned().unwrap_or_default();
                (
                    self.id.clone(),
                    self.address.clone(),
                    self.timing.lease_duration,
                    p.transitions,
                    Stamp::Keep(p.acquire_stamp),
                )
            }
            Purpose::Release | Purpose::Handover => {
                let p = prev.cloned().unwrap_or_default();
                // client-go's release: holder emptied, a 1 s duration, transitions kept.
                (
                    String::new(),
                    String::new(),
                    Duration::from_secs(1),
                    p.transitions,
                    Stamp::Now,
                )
            }
        };
        // A new leader (a new epoch in our name) records how it came to lead.
        let change = (purpose == Purpose::Acquire
            && prev.is_none_or(|p| p.transitions != transitions))
        .then(|| {
            let (from, reason) = match prev {
                None => (Some(String::new()), ChangeReason::Elected),
                Some(p) if p.holder.is_empty() => (None, ChangeReason::AfterRelease),
                Some(p) => (Some(p.holder.clone()), ChangeReason::Expired),
            };
            Box::new(LeaderChange {
                from,
                reason,
                took: self.leaderless_for(now),
            })
        });
        self.pending = Some(purpose);
        self.last_attempt = Some(now);
        self.redraw_jitter();
        out.push(Action::Write(WriteIntent {
            purpose,
            version,
            holder,
            holder_address: address,
            lease_duration: duration,
            transitions,
            acquire,
            handover_to: String::new(),
            paused,
            history,
            members,
            change,
        }));
    }

    fn retry_due(&self, now: Mono) -> bool {
        self.last_attempt.is_none_or(|t| now >= t + self.pause())
    }

    /// The write that hands our lease to `target` (announcing `address`) on a planned move;
    /// `Err` when we do not lead or a write is in flight. On success this elector steps down.
    fn handover_intent(
        &mut self,
        now: Mono,
        target: String,
        address: String,
        reason: String,
        held: Duration,
    ) -> Result<WriteIntent, &'static str> {
        if !matches!(self.role, Role::Leader { .. }) {
            return Err("this pod is not the leader");
        }
        if self.pending.is_some() {
            return Err("a Lease write is in flight");
        }
        let Some((lease, _)) = self.observed.as_ref() else {
            return Err("the Lease has not been read yet");
        };
        let intent = WriteIntent {
            purpose: Purpose::Handover,
            version: Some(lease.version.clone()),
            holder: target.clone(),
            holder_address: address,
            lease_duration: self.timing.lease_duration,
            transitions: lease.record.transitions.saturating_add(1),
            acquire: Stamp::Now,
            handover_to: target,
            paused: lease.record.paused.clone(),
            history: lease.record.history.clone(),
            members: lease.record.members.clone(),
            change: Some(Box::new(LeaderChange {
                from: Some(self.id.clone()),
                reason: ChangeReason::Planned(reason),
                took: held,
            })),
        };
        self.pending = Some(Purpose::Handover);
        self.last_attempt = Some(now);
        Ok(intent)
    }

    /// Advances the machine by one input at local time `now`.
    pub fn step(&mut self, now: Mono, input: Input) -> Step {
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Observed(Some(lease)) => {
                self.conflict_unresolved = false;
                self.reading = false;
                // A release of the lease we promised to: its holder fenced before writing
                // it, so the promise has nothing left to protect.
                let released = lease.record.holder.is_empty()
                    && self
                        .promise
                        .as_ref()
                        .is_some_and(|p| p.epoch == lease.record.transitions);
                if released {
                    self.promise = None;
                }
                self.observe(now, lease);
                self.stale = false;
                self.after_refresh();
            }
            Input::Observed(None) => {
                self.conflict_unresolved = false;
                self.reading = false;
                self.observed = None;
                self.absent = true;
                self.stale = false;
                self.after_refresh();
            }
            Input::ReadFailed => {
                // The next attempt is a retry period after this failure, not after the
                // read was sent: a read that hung for the request timeout must not be
                // followed at once by another (each step would chain the next, forever).
                self.refreshing = false;
                self.reading = false;
                self.last_attempt = Some(now);
                self.api_down = true;
            }
            Input::Members(members) => {
                if members.iter().any(|m| m.name == self.id) {
                    let mut members = members;
                    members.sort();
                    members.dedup();
                    self.listed = Some(members);
                }
            }
            Input::FailsafeAnswered {
                round,
                sent_at,
                outcome,
            } => self.round_answered(now, round, sent_at, outcome, &mut out),
            Input::FailsafeAsk {
                holder,
                epoch,
                kind,
            } => {
                let reply = self.answer(now, &holder, epoch, kind);
                out.push(Action::FailsafeReply(reply));
            }
            Input::WriteSucceeded { sent_at, lease } => {
                self.api_down = false;
                self.episode = None;
                let purpose = self.pending.take();
                let previous = self.observed.as_ref().map(|(l, _)| l.record.clone());
                self.observe(now, lease.clone());
                self.stale = false;
                let ours = lease.record.holder == self.id;
                match (purpose, ours) {
                    (Some(Purpose::Handover), _) => {
                        if matches!(self.role, Role::Leader { .. }) {
                            self.step_down(now, "handed over", &mut out);
                        }
                    }
                    (Some(Purpose::Release), _) | (_, false) => {
                        if matches!(self.role, Role::Leader { .. }) {
                            self.step_down(now, "released", &mut out);
                        }
                    }
                    (Some(_), true) if self.stopping || (!self.healthy && !self.paused()) => {
                        // Won while shutting down or unhealthy: give it straight back.
                        self.write(now, Purpose::Release, &mut out);
                    }
                    (Some(_), true) => {
                        let epoch = lease.record.transitions;
                        if !matches!(self.role, Role::Leader { .. }) {
                            if let Some(p) = previous.filter(|p| {
                                !p.holder.is_empty()
                                    && p.holder != self.id
                                    && !p.holder_address.is_empty()
                            }) {
                                out.push(Action::FencePrevious {
                                    holder: p.holder,
                                    address: p.holder_address,
                                });
                            }
                            out.push(Action::Promote { epoch });
                            self.promoted_after = self.leaderless_for(now);
                            self.leaderless_since = None;
                            self.fenced = false;
                        }
                        self.role = Role::Leader {
                            epoch,
                            base: sent_at,
                        };
                        self.led = true;
                        // This write was made against the version the hand-over was: that
                        // one can no longer commit.
                        self.handover_unresolved = false;
                    }
                    (None, true) => {}
                }
            }
            Input::WriteConflict => {
                self.pending = None;
                self.stale = true;
                self.api_down = false;
                // Somebody else wrote the Lease since we last read it. Whose it is now, the
                // read says at once: another holder or epoch (or no Lease) ends leadership
                // then; our own record with other annotations (an operator's pause, a tool
                // annotating the Lease) does not. Until that read answers, no failsafe round
                // vouches for this leader: only its validity from the last renewal holds.
                if matches!(self.role, Role::Leader { .. }) {
                    self.conflict_unresolved = true;
                    self.refreshing = true;
                    self.last_attempt = Some(now);
                }
                self.reading = true;
                out.push(Action::Refresh);
            }
            Input::WriteFailed => {
                if self.pending.take() == Some(Purpose::Handover) {
                    self.handover_unresolved = true;
                }
                self.stale = true;
                self.api_down = true;
            }
            Input::RedisHealth(h) => self.healthy = h,
            Input::Eligible(e) => {
                self.eligible = e;
                self.ranked |= self.role == Role::Candidate;
            }
            Input::Shutdown => self.stopping = true,
            Input::HandOver {
                target,
                address,
                reason,
                held,
            } => match self.handover_intent(now, target, address, reason, held) {
                Ok(intent) => out.push(Action::Write(intent)),
                Err(reason) => out.push(Action::HandoverRefused { reason }),
            },
        }
        self.evaluate(now, &mut out);
        Step {
            wake_at: self.wake_at(now),
            actions: out,
        }
    }

    fn evaluate(&mut self, now: Mono, out: &mut Vec<Action>) {
        if let Role::Leader { base, epoch } = self.role {
            if now >= base + self.timing.renew_deadline {
                self.step_down(now, "renew deadline passed", out);
            } else if self
                .observed
                .as_ref()
                .is_some_and(|(l, _)| l.record.holder != self.id || l.record.transitions != epoch)
            {
                self.step_down(now, "lease taken by another holder", out);
            } else if self.absent {
                self.step_down(now, "lease deleted", out);
            } else if (!self.healthy && !self.paused()) || self.stopping {
                let reason = if self.stopping {
                    "shutting down"
                } else {
                    "local Redis unhealthy"
                };
                self.fence(reason, out);
                // In failsafe, members promised not to campaign: now that this Redis is
                // fenced, tell them the promise is void, so that one of them can take over
                // through the API (if it reaches it) instead of waiting for the promise.
                if let Some(e) = self.episode.as_mut()
                    && !e.release_sent
                {
                    e.release_sent = true;
                    out.push(Action::FailsafeRelease {
                        holder: self.id.clone(),
                        epoch,
                        members: others(&self.id, self.recorded_members()),
                    });
                }
                if self.pending.is_none() {
                    self.write(now, Purpose::Release, out);
                }
                return;
            } else {
                if self.pending.is_none() && !self.reading && self.retry_due(now) {
                    self.failsafe_round(now, epoch, out);
                    if self.stale {
                        // The last write's outcome is unknown: read first, so that the renewal
                        // carries the version it would have made (no needless conflict).
                        self.last_attempt = Some(now);
                        self.refreshing = true;
                        self.reading = true;
                        out.push(Action::Refresh);
                    } else {
                        self.write(now, Purpose::Renew, out);
                    }
                }
                return;
            }
        }
        if self.pending.is_some() {
            return;
        }
        if self.stale && !self.absent {
            if !self.reading && self.retry_due(now) {
                self.last_attempt = Some(now);
                self.reading = true;
                out.push(Action::Refresh);
            }
            return;
        }
        if let Some(r) = self.held_by_other(now).cloned() {
            let follow = Role::Follower {
                leader: r.holder.clone(),
                address: r.holder_address.clone(),
                epoch: r.transitions,
            };
            if self.role != follow {
                out.push(Action::Follow {
                    leader: r.holder,
                    address: r.holder_address,
                    epoch: r.transitions,
                });
                self.role = follow;
                self.fenced = false;
                self.leaderless_since = None;
            }
            return;
        }
        // No valid leader: the local Redis must not take writes, and we may run.
        if self.role != Role::Candidate {
            let reason = if self.observed.is_none() && !self.absent {
                "role unknown"
            } else {
                "no valid leader"
            };
            self.fence(reason, out);
            self.become_candidate(now);
        }
        if !self.absent && self.observed.is_none() {
            return;
        }
        // A lease handed to us on a planned move is ours to take at once: the previous leader
        // chose us as its caught-up replica, so no ranking applies. (The leader fenced before
        // it wrote that, so a failsafe promise does not hold it up.)
        let granted = self.observed.as_ref().is_some_and(|(l, at)| {
            l.record.holder == self.id
                && l.record.handover_to == self.id
                && now < *at + l.record.lease_duration
        });
        if granted && self.healthy && !self.stopping {
            self.write(now, Purpose::Acquire, out);
            return;
        }
        // Paused: no automatic failover. Only the recorded holder (a restarted leader) may
        // take its own lease back.
        let own = self
            .observed
            .as_ref()
            .is_some_and(|(l, _)| l.record.holder == self.id);
        if self.paused() && !own {
            return;
        }
        // A failsafe promise: no campaign of ours until it ends (DESIGN 3a).
        if self.promise_running(now) {
            return;
        }
        // A restarted pod finding its own name, whose sidecar ranked a reachable peer above
        // it (its Redis came back empty, or with less data): nobody renews that lease, so
        // waiting for it to expire would leave the group without a writable master for up
        // to a lease duration. Its Redis is fenced (it was started fenced and this elector
        // fenced it as a candidate), so it gives the lease up at once, as a leader whose Redis
        // died does, and the best peer takes it within milliseconds. Not while paused: then
        // nobody may take over automatically anyway.
        if own && !self.led && self.ranked && !self.eligible && self.fenced && !self.paused() {
            self.write(now, Purpose::Release, out);
            return;
        }
        if self.eligible && self.healthy && !self.stopping {
            // A free lease (empty holder, or just released) is taken at once; otherwise
            // attempts are paced by the retry period.
            let free = self
                .observed
                .as_ref()
                .is_some_and(|(l, _)| l.record.holder.is_empty());
            if free || self.absent || self.retry_due(now) {
                self.write(now, Purpose::Acquire, out);
            }
        }
    }

    /// The next time something is due, always after `now`: the next paced attempt (or a
    /// heartbeat one retry period away), the leader's renew deadline, or the expiry of the
    /// lease we follow. (Everything due at `now` was done by `evaluate`.)
    fn wake_at(&self, now: Mono) -> Mono {
        let rp = self.pause();
        let next_try = self
            .last_attempt
            .map(|t| t + rp)
            .filter(|t| *t > now)
            .unwrap_or(now + rp);
        let mut wake = next_try;
        if let Role::Leader { base, .. } = self.role {
            wake = wake.min(base + self.timing.renew_deadline);
        }
        if let Some(expiry) = self.other_expires_at().filter(|t| *t > now) {
            wake = wake.min(expiry);
        }
        if let Some(p) = self.promise.as_ref().filter(|p| p.until > now) {
            wake = wake.min(p.until);
        }
        wake
    }

    /// After a read: a leader whose refresh replaced a renewal renews at once.
    fn after_refresh(&mut self) {
        if self.refreshing {
            self.refreshing = false;
            if matches!(self.role, Role::Leader { .. }) {
                self.last_attempt = None;
            }
        }
    }

    /// A leader's failsafe round, when failsafe applies: the last write ended *API
    /// unavailable*, this Redis is not fenced, no hand-over is unresolved, the Lease records
    /// a membership with this pod in it, and a retry period passed since the last round. It
    /// is only ever called while the leader is valid (before its renew deadline).
    fn failsafe_round(&mut self, now: Mono, epoch: u32, out: &mut Vec<Action>) {
        let recorded = self.recorded_members();
        if !self.failsafe
            || !self.api_down
            || self.fenced
            || self.handover_unresolved
            || self.conflict_unresolved
            || !recorded.iter().any(|m| m.name == self.id)
        {
            return;
        }
        let members = others(&self.id, recorded);
        let rp = self.timing.retry_period;
        let e = self.episode.get_or_insert(Episode {
            epoch,
            since: now,
            last_sent: None,
            last_confirmed: None,
            confirmed: 0,
            members: members.len(),
            release_sent: false,
        });
        if e.last_sent.is_some_and(|t| now < t + rp) {
            return;
        }
        e.last_sent = Some(now);
        e.members = members.len();
        self.round_seq += 1;
        out.push(Action::FailsafeRound {
            round: self.round_seq,
            holder: self.id.clone(),
            epoch,
            members,
        });
    }

    /// A round's outcome. Only a round every member confirmed extends the leader, and only
    /// from its send time, as a renewal sent then would; a refusal ends leadership at once.
    fn round_answered(
        &mut self,
        now: Mono,
        _round: u64,
        sent_at: Mono,
        outcome: RoundOutcome,
        out: &mut Vec<Action>,
    ) {
        let Role::Leader { base, epoch } = self.role else {
            return;
        };
        let Some(e) = self.episode.as_mut().filter(|e| e.epoch == epoch) else {
            return;
        };
        match outcome {
            RoundOutcome::Confirmed => {
                e.confirmed = e.members;
                // A round sent while this leader was valid extends it from the send, even
                // when its answers are weighed only after the deadline (the loop waited on a
                // hanging API call meanwhile): every member promised at or after the send.
                // A leader that has stepped down (or fenced) is not brought back.
                if !self.fenced && sent_at < base + self.timing.renew_deadline {
                    e.last_confirmed = Some(now);
                    self.role = Role::Leader {
                        epoch,
                        base: base.max(sent_at),
                    };
                }
            }
            RoundOutcome::Refused { .. } => {
                e.confirmed = 0;
                self.step_down(now, "a member refused to confirm failsafe leadership", out);
            }
            RoundOutcome::Silent { members } => {
                e.confirmed = e.members.saturating_sub(members.len());
            }
        }
    }

    /// A member's answer to an authenticated failsafe message (DESIGN 3a).
    fn answer(&mut self, now: Mono, holder: &str, epoch: u32, kind: AskKind) -> Reply {
        match kind {
            AskKind::Probe => Reply {
                confirmed: true,
                reason: String::new(),
                promise: self.promise_running(now),
                leads: matches!(self.role, Role::Leader { .. }),
            },
            AskKind::Release => {
                if self
                    .promise
                    .as_ref()
                    .is_some_and(|p| p.holder == holder && p.epoch == epoch)
                {
                    self.promise = None;
                }
                Reply {
                    confirmed: true,
                    ..Reply::default()
                }
            }
            AskKind::Round => match self.refusal(now, holder, epoch) {
                Some(why) => Reply::refuse(why),
                None => {
                    let until = now + self.timing.lease_duration;
                    self.promise = Some(Promise {
                        holder: holder.to_string(),
                        epoch,
                        until: self
                            .promise
                            .as_ref()
                            .filter(|p| p.holder == holder && p.epoch == epoch)
                            .map_or(until, |p| p.until.max(until)),
                    });
                    Reply {
                        confirmed: true,
                        promise: true,
                        ..Reply::default()
                    }
                }
            },
        }
    }

    /// Why this member cannot confirm `holder` at `epoch`, if it cannot.
    fn refusal(&self, now: Mono, holder: &str, epoch: u32) -> Option<&'static str> {
        if !self.failsafe {
            return Some("failsafe is off on this pod");
        }
        if holder == self.id {
            return Some("the round names this pod");
        }
        if matches!(self.role, Role::Leader { .. }) {
            return Some("this pod leads");
        }
        if self.pending.is_some() {
            return Some("a Lease write of this pod is in flight");
        }
        if let Some((l, at)) = &self.observed {
            let r = &l.record;
            if r.transitions > epoch || (r.transitions == epoch && r.holder != holder) {
                return Some("this pod has seen a newer lease");
            }
            let promised = self
                .promise
                .as_ref()
                .is_some_and(|p| p.holder == holder && p.epoch == epoch && now < p.until);
            if r.holder == holder
                && r.transitions == epoch
                && !r.is_paused()
                && now >= *at + r.lease_duration
                && !promised
            {
                return Some("this pod counts that lease as expired");
            }
        }
        None
    }
}

/// The members but `me`.
fn others(me: &str, members: &[Member]) -> Vec<Member> {
    members.iter().filter(|m| m.name != me).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Mono {
        Duration::from_millis(v)
    }

    fn timing() -> Timing {
        Timing::defaults()
    }

    fn lease(holder: &str, transitions: u32, version: &str, renew: &str) -> ObservedLease {
        ObservedLease {
            record: LeaseRecord {
                holder: holder.into(),
                holder_address: format!("{holder}:6379"),
                lease_duration: Duration::from_secs(10),
                transitions,
                acquire_stamp: "a".into(),
                renew_stamp: renew.into(),
                ..LeaseRecord::default()
            },
            version: version.into(),
        }
    }

    /// A released (free) lease: no holder, no address.
    fn free(transitions: u32, version: &str) -> ObservedLease {
        let mut l = lease("", transitions, version, "r2");
        l.record.holder_address.clear();
        l
    }

    /// The Lease writes a step asks for, in order.
    fn writes(s: &Step) -> Vec<WriteIntent> {
        s.actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(w) => Some(w.clone()),
                _ => None,
            })
            .collect()
    }

    /// "a", which created the lease at epoch `epoch` (sent at 0 ms, answered at 1 ms).
    fn leading(epoch: u32) -> Elector {
        let mut e = Elector::new("a", "a:6379", timing());
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Observed(None));
        e.step(
            ms(1),
            Input::WriteSucceeded {
                sent_at: ms(0),
                lease: lease("a", epoch, "1", "r1"),
            },
        );
        assert!(matches!(e.role(), Role::Leader { .. }));
        e
    }

    fn ready(e: &mut Elector, now: Mono) {
        e.step(now, Input::RedisHealth(true));
        e.step(now, Input::Eligible(true));
    }

    #[test]
    fn starts_fenced_then_creates_a_missing_lease_and_promotes() {
        let mut e = Elector::new("a", "a:6379", timing());
        ready(&mut e, ms(0));
        let s = e.step(ms(0), Input::Observed(None));
        assert!(matches!(s.actions[0], Action::Fence { .. }));
        let Action::Write(w) = &s.actions[1] else {
            panic!("{s:?}")
        };
        assert_eq!(
            (w.purpose, w.version.clone(), w.transitions),
            (Purpose::Acquire, None, 0)
        );
        let s = e.step(
            ms(5),
            Input::WriteSucceeded {
                sent_at: ms(0),
                lease: lease("a", 0, "1", "r1"),
            },
        );
        assert_eq!(s.actions, vec![Action::Promote { epoch: 0 }]);
        assert!(!e.fenced());
    }

    #[test]
    fn follows_a_valid_holder_and_takes_over_only_after_expiry() {
        let mut e = Elector::new("b", "b:6379", timing());
        ready(&mut e, ms(0));
        let s = e.step(ms(0), Input::Observed(Some(lease("a", 3, "7", "r1"))));
        assert!(s.actions.contains(&Action::Follow {
            leader: "a".into(),
            address: "a:6379".into(),
            epoch: 3
        }));
        assert_eq!(s.wake_at, ms(1000), "retry period");
        // The same record seen again does not extend the lease.
        e.step(ms(9_000), Input::Observed(Some(lease("a", 3, "7", "r1"))));
        let s = e.step(ms(9_999), Input::Tick);
        assert!(s.actions.is_empty(), "{s:?}");
        let s = e.step(ms(10_000), Input::Tick);
        assert!(matches!(s.actions[0], Action::Fence { .. }));
        let Action::Write(w) = &s.actions[1] else {
            panic!("{s:?}")
        };
        assert_eq!(
            (w.purpose, w.version.as_deref(), w.transitions),
            (Purpose::Acquire, Some("7"), 4)
        );
        // Winning: fence the old holder, then promote at the new epoch.
        let s = e.step(
            ms(10_010),
            Input::WriteSucceeded {
                sent_at: ms(10_000),
                lease: lease("b", 4, "8", "r2"),
            },
        );
        assert_eq!(
            s.actions,
            vec![
                Action::FencePrevious {
                    holder: "a".into(),
                    address: "a:6379".into()
                },
                Action::Promote { epoch: 4 }
            ]
        );
    }

    #[test]
    fn a_renewal_resets_the_observed_time() {
        let mut e = Elector::new("b", "b:6379", timing());
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Observed(Some(lease("a", 1, "7", "r1"))));
        e.step(ms(8_000), Input::Observed(Some(lease("a", 1, "8", "r2"))));
        let s = e.step(ms(12_000), Input::Tick);
        assert!(
            s.actions.is_empty(),
            "renewed at 8s, valid until 18s: {s:?}"
        );
    }

    #[test]
    fn leader_renews_each_retry_period_and_fences_at_the_deadline() {
        let mut e = leading(0);
        let s = e.step(ms(1_000), Input::Tick);
        assert!(
            matches!(&s.actions[..], [Action::Write(w)] if w.purpose == Purpose::Renew && w.version.as_deref() == Some("1"))
        );
        // The renewal fails; retries keep failing; at base + RD the leader fences itself.
        e.step(ms(1_100), Input::WriteFailed);
        let s = e.step(ms(5_999), Input::Tick);
        assert!(!s.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
        assert!(s.wake_at <= ms(6_000));
        let s = e.step(ms(6_000), Input::Tick);
        assert_eq!(
            s.actions[0],
            Action::Fence {
                reason: "renew deadline passed"
            }
        );
        assert_eq!(
            s.actions[1],
            Action::SteppedDown {
                reason: "renew deadline passed"
            }
        );
        assert_eq!(e.role(), &Role::Candidate);
    }

    #[test]
    fn the_deadline_counts_from_the_send_time_of_the_last_success() {
        let mut e = Elector::new("a", "a:6379", timing());
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Observed(None));
        // The acquire was slow: sent at 0, answered at 1.9 s.
        e.step(
            ms(1_900),
            Input::WriteSucceeded {
                sent_at: ms(0),
                lease: lease("a", 0, "1", "r1"),
            },
        );
        assert_eq!(
            e.role(),
            &Role::Leader {
                epoch: 0,
                base: ms(0)
            }
        );
    }

    #[test]
    fn unhealthy_redis_makes_the_leader_fence_then_release() {
        let mut e = leading(0);
        let s = e.step(ms(500), Input::RedisHealth(false));
        assert_eq!(
            s.actions[0],
            Action::Fence {
                reason: "local Redis unhealthy"
            }
        );
        assert!(
            matches!(&s.actions[1], Action::Write(w) if w.purpose == Purpose::Release && w.holder.is_empty())
        );
        let released = free(0, "2");
        let s = e.step(
            ms(510),
            Input::WriteSucceeded {
                sent_at: ms(500),
                lease: released,
            },
        );
        assert!(
            s.actions
                .contains(&Action::SteppedDown { reason: "released" })
        );
        // Unhealthy: no new attempt.
        let s = e.step(ms(5_000), Input::Tick);
        assert!(
            !s.actions.iter().any(|a| matches!(a, Action::Write(_))),
            "{s:?}"
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_conflicts_reread() {
        let mut e = Elector::new("b", "b:6379", timing());
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Observed(Some(lease("a", 2, "5", "r1"))));
        let s = e.step(ms(100), Input::Observed(Some(free(2, "6"))));
        assert!(
            matches!(&s.actions[..], [Action::Fence { .. }, Action::Write(w)] if w.transitions == 3)
        );
        let s = e.step(ms(105), Input::WriteConflict);
        assert_eq!(s.actions, vec![Action::Refresh]);
        let s = e.step(ms(110), Input::Observed(Some(lease("c", 3, "7", "r3"))));
        assert!(s.actions.contains(&Action::Follow {
            leader: "c".into(),
            address: "c:6379".into(),
            epoch: 3
        }));
    }

    #[test]
    fn ineligible_candidates_never_write() {
        let mut e = Elector::new("b", "b:6379", timing());
        e.step(ms(0), Input::RedisHealth(true));
        let s = e.step(ms(0), Input::Observed(None));
        assert!(!s.actions.iter().any(|a| matches!(a, Action::Write(_))));
        let s = e.step(ms(5_000), Input::Tick);
        assert!(!s.actions.iter().any(|a| matches!(a, Action::Write(_))));
    }

    #[test]
    fn wake_is_always_in_the_future() {
        // A follower whose last read was long ago has nothing due now: no busy loop.
        let mut e = Elector::new("b", "b:6379", timing());
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Tick);
        let s = e.step(ms(10), Input::Observed(Some(lease("a", 1, "7", "r1"))));
        assert!(s.wake_at > ms(10));
        let s = e.step(ms(5_000), Input::Tick);
        assert!(s.wake_at > ms(5_000), "{s:?}");
        let s = e.step(ms(5_000), Input::Eligible(false));
        assert!(s.wake_at > ms(5_000), "{s:?}");
    }

    #[test]
    fn candidate_retries_are_jittered_within_1_2_retry_periods() {
        let mut gaps = std::collections::BTreeSet::new();
        for seed in 0..20u64 {
            let mut e = Elector::new("b", "b:6379", timing()).with_seed(seed);
            ready(&mut e, ms(0));
            // An expired lease held by another: the candidate keeps losing races.
            e.step(ms(0), Input::Observed(Some(lease("a", 1, "7", "r1"))));
            let s = e.step(ms(10_000), Input::Tick);
            assert!(s.actions.iter().any(|a| matches!(a, Action::Write(_))));
            let s = e.step(ms(10_001), Input::WriteConflict);
            assert_eq!(s.actions, vec![Action::Refresh]);
            let s = e.step(ms(10_002), Input::Observed(Some(lease("c", 2, "8", "r2"))));
            // Now following c; its lease expires 10 s later; the next attempt after that is
            // paced by the jittered period from the last attempt.
            assert!(s.actions.iter().any(|a| matches!(a, Action::Follow { .. })));
            let gap = e.pause();
            assert!(gap >= ms(1_000) && gap < ms(1_200), "{gap:?}");
            gaps.insert(gap.as_millis());
        }
        assert!(gaps.len() > 5, "jitter does not vary: {gaps:?}");
    }

    #[test]
    fn handover_names_the_target_who_takes_it_without_ranking() {
        // The leader hands over.
        let mut a = leading(3);
        let hand_over = |target: &str| Input::HandOver {
            target: target.into(),
            address: format!("{target}:6379"),
            reason: "switchover".into(),
            held: ms(7),
        };
        let s = a.step(ms(10), hand_over("b"));
        let w = writes(&s).into_iter().next().expect("the hand-over write");
        assert_eq!(
            (w.holder.as_str(), w.transitions, w.handover_to.as_str()),
            ("b", 4, "b")
        );
        assert_eq!(
            w.change.as_deref(),
            Some(&LeaderChange {
                from: Some("a".into()),
                reason: ChangeReason::Planned("switchover".into()),
                took: ms(7)
            }),
            "the history entry is the hand-over's"
        );
        assert_eq!(
            a.step(ms(11), hand_over("b")).actions,
            vec![Action::HandoverRefused {
                reason: "a Lease write is in flight"
            }],
            "one write at a time"
        );
        let mut handed = lease("b", 4, "2", "r2");
        handed.record.handover_to = "b".into();
        let s = a.step(
            ms(12),
            Input::WriteSucceeded {
                sent_at: ms(10),
                lease: handed.clone(),
            },
        );
        assert!(s.actions.contains(&Action::SteppedDown {
            reason: "handed over"
        }));
        // The target, not eligible by ranking, takes it at once.
        let mut b = Elector::new("b", "b:6379", timing());
        b.step(ms(0), Input::RedisHealth(true));
        b.step(ms(0), Input::Observed(Some(lease("a", 3, "1", "r1"))));
        let s = b.step(ms(13), Input::Observed(Some(handed.clone())));
        let w = writes(&s).into_iter().next().expect("a write");
        assert_eq!(
            (w.holder.as_str(), w.transitions, w.version.as_deref()),
            ("b", 4, Some("2"))
        );
        // Without the marker (a restarted pod finding its own name) it waits for ranking.
        let mut c = Elector::new("b", "b:6379", timing());
        c.step(ms(0), Input::RedisHealth(true));
        let mut own = handed;
        own.record.handover_to.clear();
        let s = c.step(ms(0), Input::Observed(Some(own)));
        assert!(
            !s.actions.iter().any(|a| matches!(a, Action::Write(_))),
            "{s:?}"
        );
    }

    #[test]
    fn a_hand_over_write_without_an_answer_keeps_writes_held_until_the_lease_says_whose_it_is() {
        let hand_over = Input::HandOver {
            target: "b".into(),
            address: "b:6379".into(),
            reason: "switchover".into(),
            held: ms(5),
        };
        // The write timed out: it may have committed, so writes may not resume ...
        let mut a = leading(3);
        assert!(a.writes_may_resume());
        a.step(ms(10), hand_over.clone());
        a.step(ms(510), Input::WriteFailed);
        assert!(matches!(a.role(), Role::Leader { .. }));
        assert!(!a.writes_may_resume(), "the target may be leading already");
        // ... until a renewal against the same version commits (the hand-over never can).
        // The outcome being unknown, the leader reads first, then renews with what it read.
        let s = a.step(ms(1_010), Input::Tick);
        assert_eq!(s.actions, vec![Action::Refresh]);
        let s = a.step(ms(1_010), Input::Observed(Some(lease("a", 3, "1", "r1"))));
        let renew = writes(&s).into_iter().next().expect("a renewal");
        assert_eq!(renew.version.as_deref(), Some("1"));
        assert_eq!(renew.purpose, Purpose::Renew);
        a.step(
            ms(1_011),
            Input::WriteSucceeded {
                sent_at: ms(1_010),
                lease: lease("a", 3, "2", "r2"),
            },
        );
        assert!(a.writes_may_resume());
        // ... or the Lease shows the target holding it: step down.
        let mut a = leading(3);
        a.step(ms(10), hand_over);
        a.step(ms(510), Input::WriteFailed);
        let mut handed = lease("b", 4, "2", "r2");
        handed.record.handover_to = "b".into();
        let s = a.step(ms(520), Input::Observed(Some(handed)));
        assert!(
            s.actions
                .iter()
                .any(|x| matches!(x, Action::SteppedDown { .. }))
        );
        assert!(!a.writes_may_resume());
    }

    #[test]
    fn a_new_leader_records_how_it_came_to_lead() {
        // The first leader of a new Lease.
        let mut e = Elector::new("a", "a:6379", timing());
        ready(&mut e, ms(0));
        let s = e.step(ms(40), Input::Observed(None));
        let w = writes(&s).into_iter().next().expect("create");
        assert_eq!(
            w.change.as_deref(),
            Some(&LeaderChange {
                from: Some(String::new()),
                reason: ChangeReason::Elected,
                took: ms(0)
            }),
            "undecided until the first read: no leaderless time before it"
        );
        // After an expiry: the expired holder, and how long this pod saw no leader.
        let mut e = Elector::new("b", "b:6379", timing());
        e.step(ms(0), Input::RedisHealth(true));
        e.step(ms(0), Input::Observed(Some(lease("a", 3, "1", "r1"))));
        let s = e.step(ms(10_000), Input::Tick);
        assert!(writes(&s).is_empty(), "not eligible yet");
        assert_eq!(e.role(), &Role::Candidate);
        let s = e.step(ms(10_300), Input::Eligible(true));
        let w = writes(&s).into_iter().next().expect("acquire");
        let change = w.change.expect("a new epoch");
        assert_eq!(
            (change.from.as_deref(), &change.reason),
            (Some("a"), &ChangeReason::Expired)
        );
        assert_eq!(change.took, ms(300), "a candidate since the expiry");
        // After a release: the history says who led.
        let mut e = Elector::new("b", "b:6379", timing());
        ready(&mut e, ms(0));
        let s = e.step(ms(5), Input::Observed(Some(free(3, "2"))));
        let w = writes(&s).into_iter().next().expect("acquire");
        assert_eq!(
            w.change.map(|c| (c.from.clone(), c.reason.clone())),
            Some((None, ChangeReason::AfterRelease))
        );
        // Renewing, or taking our own lease back, changes nothing.
        let mut a = leading(3);
        let s = a.step(ms(3_000), Input::Tick);
        assert!(writes(&s).iter().all(|w| w.change.is_none()));
    }

    #[test]
    fn a_restarted_holder_outranked_by_a_peer_releases_its_lease_at_once() {
        // "a" restarted (its pod was killed whole) and finds its own unexpired lease.
        let mut e = Elector::new("a", "a:6379", timing());
        e.step(ms(0), Input::RedisHealth(true));
        let s = e.step(ms(1), Input::Observed(Some(lease("a", 3, "7", "r1"))));
        assert_eq!(e.role(), &Role::Candidate);
        assert!(s.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
        assert!(writes(&s).is_empty(), "no verdict yet: {s:?}");
        // Its sidecar ranks a peer with data above its emptied Redis.
        let s = e.step(ms(5), Input::Eligible(false));
        let w = writes(&s);
        assert_eq!(w.len(), 1, "{s:?}");
        assert_eq!(
            (
                w[0].purpose,
                w[0].holder.as_str(),
                w[0].transitions,
                w[0].version.as_deref()
            ),
            (Purpose::Release, "", 3, Some("7"))
        );
        // It never led in this process: nothing to step down from.
        let s = e.step(
            ms(7),
            Input::WriteSucceeded {
                sent_at: ms(5),
                lease: free(3, "8"),
            },
        );
        assert!(
            !s.actions
                .iter()
                .any(|a| matches!(a, Action::SteppedDown { .. } | Action::Write(_))),
            "{s:?}"
        );
        assert_eq!(e.role(), &Role::Candidate);
        // The peer takes the free lease; "a" follows it.
        let s = e.step(ms(9), Input::Observed(Some(lease("b", 4, "9", "r3"))));
        assert!(s.actions.iter().any(|a| matches!(a, Action::Follow { .. })));
    }

    #[test]
    fn a_restarted_holder_that_ranks_first_takes_its_lease_back() {
        let mut e = Elector::new("a", "a:6379", timing());
        e.step(ms(0), Input::RedisHealth(true));
        e.step(ms(1), Input::Observed(Some(lease("a", 3, "7", "r1"))));
        let s = e.step(ms(5), Input::Eligible(true));
        assert!(writes(&s).is_empty(), "paced by the retry period: {s:?}");
        let s = e.step(ms(1_300), Input::Tick);
        let w = writes(&s);
        assert_eq!(
            w.iter()
                .map(|w| (w.purpose, w.holder.as_str()))
                .collect::<Vec<_>>(),
            [(Purpose::Acquire, "a")],
            "{s:?}"
        );
    }

    #[test]
    fn an_own_lease_is_not_released_while_paused_or_after_leading_here() {
        // Paused: nobody takes over automatically, so a release would only leave it empty.
        let mut e = Elector::new("a", "a:6379", timing());
        e.step(ms(0), Input::RedisHealth(true));
        e.step(
            ms(1),
            Input::Observed(Some(paused(lease("a", 3, "7", "r1")))),
        );
        let s = e.step(ms(5), Input::Eligible(false));
        assert!(writes(&s).is_empty(), "{s:?}");
        // A leader of this process that stepped down (renew deadline passed) keeps the
        // old rule: it may take its own lease back when eligible, and does not give it away.
        let mut l = leading(3);
        l.step(ms(1), Input::Eligible(false));
        let s = l.step(ms(6_001), Input::Tick);
        assert!(
            s.actions.contains(&Action::SteppedDown {
                reason: "renew deadline passed"
            }),
            "{s:?}"
        );
        let s = l.step(ms(6_002), Input::Eligible(false));
        assert!(writes(&s).is_empty(), "{s:?}");
    }

    fn paused(mut l: ObservedLease) -> ObservedLease {
        l.record.paused = "by test".into();
        l.record.history = "[h]".into();
        l
    }

    #[test]
    fn a_paused_lease_never_expires_for_followers() {
        let mut e = Elector::new("b", "b:6379", timing());
        ready(&mut e, ms(0));
        let s = e.step(
            ms(0),
            Input::Observed(Some(paused(lease("a", 3, "7", "r1")))),
        );
        assert!(s.actions.iter().any(|a| matches!(a, Action::Follow { .. })));
        for t in [10_000, 60_000, 600_000] {
            let s = e.step(ms(t), Input::Tick);
            assert!(s.actions.is_empty(), "at {t} ms: {s:?}");
            assert!(s.wake_at > ms(t), "no busy loop: {s:?}");
            assert!(matches!(e.role(), Role::Follower { .. }));
        }
        // Resumed: the changed record is a fresh observation, valid for one more LD.
        let s = e.step(ms(600_001), Input::Observed(Some(lease("a", 3, "8", "r1"))));
        assert!(s.actions.is_empty(), "{s:?}");
        let s = e.step(ms(610_001), Input::Tick);
        assert!(
            s.actions
                .iter()
                .any(|a| matches!(a, Action::Write(w) if w.purpose == Purpose::Acquire)),
            "{s:?}"
        );
    }

    #[test]
    fn a_paused_free_lease_is_not_taken_but_an_own_one_is() {
        let mut e = Elector::new("b", "b:6379", timing());
        ready(&mut e, ms(0));
        let s = e.step(ms(0), Input::Observed(Some(paused(free(2, "6")))));
        assert!(
            !s.actions.iter().any(|a| matches!(a, Action::Write(_))),
            "{s:?}"
        );
        let s = e.step(ms(30_000), Input::Tick);
        assert!(
            !s.actions.iter().any(|a| matches!(a, Action::Write(_))),
            "{s:?}"
        );
        // A restarted leader finding its own name takes it back, keeping pause and history.
        let s = e.step(
            ms(30_001),
            Input::Observed(Some(paused(lease("b", 2, "9", "r3")))),
        );
        let w = writes(&s).into_iter().next().expect("a write");
        assert_eq!(
            (
                w.purpose,
                w.transitions,
                w.paused.as_str(),
                w.history.as_str()
            ),
            (Purpose::Acquire, 2, "by test", "[h]")
        );
    }

    #[test]
    fn a_paused_leader_keeps_renewing_without_redis_but_not_past_its_deadline() {
        let mut e = leading(0);
        e.step(
            ms(1),
            Input::Observed(Some(paused(lease("a", 0, "2", "r2")))),
        );
        let s = e.step(ms(500), Input::RedisHealth(false));
        assert!(s.actions.is_empty(), "no fence, no release: {s:?}");
        let s = e.step(ms(1_000), Input::Tick);
        let [Action::Write(w)] = &s.actions[..] else {
            panic!("{s:?}")
        };
        assert_eq!(
            (w.purpose, w.paused.as_str(), w.history.as_str()),
            (Purpose::Renew, "by test", "[h]")
        );
        let s = e.step(
            ms(1_010),
            Input::WriteSucceeded {
                sent_at: ms(1_000),
                lease: paused(lease("a", 0, "3", "r3")),
            },
        );
        assert!(
            s.actions.is_empty(),
            "a renewal is kept, not given back: {s:?}"
        );
        assert!(matches!(e.role(), Role::Leader { .. }));
        let s = e.step(ms(2_000), Input::Tick);
        assert!(matches!(&s.actions[..], [Action::Write(w)] if w.purpose == Purpose::Renew));
        e.step(ms(2_100), Input::WriteFailed);
        let s = e.step(ms(7_000), Input::Tick);
        assert!(
            s.actions.contains(&Action::SteppedDown {
                reason: "renew deadline passed"
            }),
            "safety outranks the pause: {s:?}"
        );
    }

    #[test]
    fn shutdown_releases() {
        let mut e = leading(0);
        let s = e.step(ms(2), Input::Shutdown);
        assert_eq!(
            s.actions[0],
            Action::Fence {
                reason: "shutting down"
            }
        );
        assert!(matches!(&s.actions[1], Action::Write(w) if w.purpose == Purpose::Release));
    }

    // ---- typed outcomes and failsafe (DESIGN 3a) ----

    fn members(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .map(|n| Member {
                name: (*n).into(),
                http: format!("{n}:9121"),
            })
            .collect()
    }

    /// "a" leads at epoch 3 with failsafe on and membership {a, b, c} recorded (renewal sent
    /// at 0 ms).
    fn failsafe_leader() -> Elector {
        let mut e = Elector::new("a", "a:6379", timing()).with_failsafe(true);
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Members(members(&["a", "b", "c"])));
        let s = e.step(ms(0), Input::Observed(None));
        assert_eq!(writes(&s)[0].members, members(&["a", "b", "c"]), "recorded");
        let mut l = lease("a", 3, "1", "r1");
        l.record.members = members(&["a", "b", "c"]);
        e.step(
            ms(1),
            Input::WriteSucceeded {
                sent_at: ms(0),
                lease: l,
            },
        );
        assert!(matches!(e.role(), Role::Leader { .. }));
        e
    }

    fn round_of(s: &Step) -> Option<(u64, Vec<Member>)> {
        s.actions.iter().find_map(|a| match a {
            Action::FailsafeRound { round, members, .. } => Some((*round, members.clone())),
            _ => None,
        })
    }

    #[test]
    fn lease_lost_ends_leadership_at_once() {
        // A 409: the read that follows at once shows another holder: step down then.
        let mut e = leading(2);
        e.step(ms(1_000), Input::Tick);
        let s = e.step(ms(1_005), Input::WriteConflict);
        assert_eq!(s.actions, vec![Action::Refresh]);
        let s = e.step(ms(1_008), Input::Observed(Some(lease("b", 3, "5", "rb"))));
        assert!(matches!(s.actions[0], Action::Fence { .. }), "{s:?}");
        assert!(
            s.actions
                .iter()
                .any(|a| matches!(a, Action::SteppedDown { .. }))
        );
        assert!(!matches!(e.role(), Role::Leader { .. }));
        // A read showing another epoch in our name is lost too.
        let mut e = leading(2);
        let s = e.step(ms(500), Input::Observed(Some(lease("a", 5, "9", "rx"))));
        assert!(
            s.actions
                .iter()
                .any(|a| matches!(a, Action::SteppedDown { .. }))
        );
        // So is a deleted Lease.
        let mut e = leading(2);
        let s = e.step(ms(500), Input::Observed(None));
        assert!(
            s.actions
                .iter()
                .any(|a| matches!(a, Action::SteppedDown { .. }))
        );
    }

    #[test]
    fn a_conflict_from_an_annotation_change_is_not_a_lost_lease() {
        // An operator's pause (or any tool annotating the Lease) makes the renewal conflict;
        // the read shows our own record: renew at once with its version, still leading.
        let mut e = failsafe_leader();
        e.step(ms(1_000), Input::Tick);
        e.step(ms(1_005), Input::WriteConflict);
        let mut paused = lease("a", 3, "7", "r1");
        paused.record.paused = "by op".into();
        paused.record.members = members(&["a", "b", "c"]);
        let s = e.step(ms(1_010), Input::Observed(Some(paused)));
        let w = writes(&s).pop().expect("a renewal at once");
        assert_eq!(
            (w.purpose, w.version.as_deref()),
            (Purpose::Renew, Some("7"))
        );
        assert!(!s.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
        // Until such a read answers, no failsafe round vouches for the leader.
        let mut e = failsafe_leader();
        e.step(ms(1_000), Input::Tick);
        e.step(ms(1_005), Input::WriteConflict);
        e.step(ms(1_100), Input::ReadFailed);
        let s = e.step(ms(2_100), Input::WriteFailed);
        assert!(s.actions.contains(&Action::Refresh), "{s:?}");
        assert!(round_of(&s).is_none(), "{s:?}");
    }

    #[test]
    fn api_unavailable_keeps_leadership_until_the_deadline() {
        // Unavailable writes and reads (timeouts, 5xx, 429, 401/403 all arrive as these):
        // no step-down before the renew deadline, then the fence.
        let mut e = leading(2);
        e.step(ms(1_000), Input::Tick);
        let s = e.step(ms(1_500), Input::WriteFailed);
        assert!(s.actions.is_empty(), "{s:?}");
        let s = e.step(ms(2_000), Input::Tick);
        assert_eq!(
            s.actions,
            vec![Action::Refresh],
            "read before renewing again"
        );
        let s = e.step(ms(2_100), Input::ReadFailed);
        assert!(s.actions.is_empty(), "{s:?}");
        assert!(e.api_down());
        assert!(matches!(e.role(), Role::Leader { .. }));
        let s = e.step(ms(6_000), Input::Tick);
        assert!(s.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
        // Without failsafe, no round was ever asked for.
        assert_eq!(e.failsafe_view(ms(6_000)), FailsafeView::default());
    }

    #[test]
    fn a_read_that_hung_is_not_followed_at_once_by_another() {
        // A read that took longer than the retry period (a blackholed API): the step that
        // reports it must not ask for the next one, or the caller's loop never ends.
        for mut e in [leading(2), failsafe_member()] {
            e.step(ms(1_000), Input::Tick);
            e.step(ms(1_500), Input::WriteFailed);
            let s = e.step(ms(5_000), Input::ReadFailed);
            assert!(!s.actions.contains(&Action::Refresh), "{s:?}");
            assert!(s.wake_at > ms(5_000));
        }
    }

    #[test]
    fn a_confirmed_round_extends_the_leader_from_its_send_time() {
        let mut e = failsafe_leader();
        e.step(ms(1_000), Input::Tick);
        // The renewal timed out, long after it was sent: a round goes out at once.
        let s = e.step(ms(3_000), Input::WriteFailed);
        let (round, asked) = round_of(&s).expect("a round once renewals fail");
        assert_eq!(asked, members(&["b", "c"]), "every member but the leader");
        assert!(s.actions.contains(&Action::Refresh));
        e.step(ms(3_100), Input::ReadFailed);
        // No second round within the retry period.
        assert!(round_of(&e.step(ms(3_500), Input::Tick)).is_none());
        e.step(
            ms(3_050),
            Input::FailsafeAnswered {
                round,
                sent_at: ms(3_000),
                outcome: RoundOutcome::Confirmed,
            },
        );
        assert_eq!(
            *e.role(),
            Role::Leader {
                epoch: 3,
                base: ms(3_000)
            },
            "from the send, not the answer"
        );
        let v = e.failsafe_view(ms(3_100));
        assert!(v.active);
        assert_eq!((v.members, v.confirmed), (2, 2));
        // Still leading past the first deadline (6 s), fenced at 3 s + RD without more.
        let s = e.step(ms(6_500), Input::Tick);
        assert!(
            !s.actions.iter().any(|a| matches!(a, Action::Fence { .. })),
            "{s:?}"
        );
        let s = e.step(ms(9_000), Input::Tick);
        assert!(
            s.actions.iter().any(|a| matches!(a, Action::Fence { .. })),
            "{s:?}"
        );
    }

    #[test]
    fn a_round_sent_in_time_counts_even_when_its_answer_is_weighed_after_the_deadline() {
        // Sent at 5.5 s (valid until 6 s); the loop then waited on a hanging read, and the
        // answer is fed at 6.5 s, before the read's failure: the leader is valid until
        // 5.5 + 6 s.
        let mut e = failsafe_leader();
        e.step(ms(1_000), Input::Tick);
        let s = e.step(ms(5_500), Input::WriteFailed);
        let (round, _) = round_of(&s).expect("a round while valid");
        let s = e.step(
            ms(6_500),
            Input::FailsafeAnswered {
                round,
                sent_at: ms(5_500),
                outcome: RoundOutcome::Confirmed,
            },
        );
        assert!(
            !s.actions.iter().any(|a| matches!(a, Action::Fence { .. })),
            "{s:?}"
        );
        e.step(ms(7_500), Input::ReadFailed);
        assert_eq!(
            *e.role(),
            Role::Leader {
                epoch: 3,
                base: ms(5_500)
            }
        );
        // A round sent after the deadline is never asked for, and one answered after the
        // leader stepped down does nothing.
        let s = e.step(ms(11_500), Input::Tick);
        assert!(s.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
        e.step(
            ms(11_600),
            Input::FailsafeAnswered {
                round,
                sent_at: ms(5_500),
                outcome: RoundOutcome::Confirmed,
            },
        );
        assert_eq!(*e.role(), Role::Candidate);
    }

    #[test]
    fn silence_does_not_extend_and_a_refusal_ends_leadership() {
        let mut e = failsafe_leader();
        e.step(ms(1_000), Input::Tick);
        let (round, _) = round_of(&e.step(ms(3_000), Input::WriteFailed)).unwrap();
        e.step(
            ms(3_500),
            Input::FailsafeAnswered {
                round,
                sent_at: ms(3_000),
                outcome: RoundOutcome::Silent {
                    members: vec!["c".into()],
                },
            },
        );
        assert_eq!(
            *e.role(),
            Role::Leader {
                epoch: 3,
                base: ms(0)
            }
        );
        assert_eq!(e.failsafe_view(ms(3_500)).confirmed, 1);
        e.step(ms(3_600), Input::ReadFailed);
        let (round, _) = round_of(&e.step(ms(4_600), Input::Tick)).unwrap();
        let s = e.step(
            ms(4_610),
            Input::FailsafeAnswered {
                round,
                sent_at: ms(4_600),
                outcome: RoundOutcome::Refused {
                    member: "b".into(),
                    reason: "this pod has seen a newer lease".into(),
                },
            },
        );
        assert!(matches!(s.actions[0], Action::Fence { .. }));
        assert_eq!(*e.role(), Role::Candidate);
        // A late confirmation of an earlier round does not bring it back.
        e.step(
            ms(4_620),
            Input::FailsafeAnswered {
                round,
                sent_at: ms(4_600),
                outcome: RoundOutcome::Confirmed,
            },
        );
        assert_eq!(*e.role(), Role::Candidate);
    }

    #[test]
    fn no_rounds_without_a_recorded_membership_or_once_fenced() {
        // Failsafe on, but the Lease records no membership (never listed): no round.
        let mut e = Elector::new("a", "a:6379", timing()).with_failsafe(true);
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Observed(None));
        e.step(
            ms(1),
            Input::WriteSucceeded {
                sent_at: ms(0),
                lease: lease("a", 0, "1", "r1"),
            },
        );
        e.step(ms(1_000), Input::Tick);
        e.step(ms(1_500), Input::WriteFailed);
        assert!(round_of(&e.step(ms(2_000), Input::Tick)).is_none());
        // A leader whose Redis failed fences, tells the members to drop their promises, and
        // sends no more rounds.
        let mut e = failsafe_leader();
        e.step(ms(1_000), Input::Tick);
        e.step(ms(1_500), Input::WriteFailed);
        assert!(round_of(&e.step(ms(2_000), Input::Tick)).is_some());
        e.step(ms(2_100), Input::ReadFailed);
        let s = e.step(ms(2_200), Input::RedisHealth(false));
        assert!(matches!(s.actions[0], Action::Fence { .. }));
        assert!(s.actions.iter().any(|a| matches!(
            a,
            Action::FailsafeRelease { epoch: 3, members: m, .. } if *m == members(&["b", "c"])
        )));
        e.step(ms(2_300), Input::WriteFailed);
        e.step(ms(2_900), Input::RedisHealth(true));
        assert!(round_of(&e.step(ms(3_500), Input::Tick)).is_none());
    }

    #[test]
    fn the_api_back_the_leader_renews_with_the_version_it_had() {
        let mut e = failsafe_leader();
        e.step(ms(1_000), Input::Tick);
        e.step(ms(1_500), Input::WriteFailed);
        let (round, _) = round_of(&e.step(ms(2_000), Input::Tick)).unwrap();
        e.step(
            ms(2_010),
            Input::FailsafeAnswered {
                round,
                sent_at: ms(2_000),
                outcome: RoundOutcome::Confirmed,
            },
        );
        // The read answers again with the record unchanged: renew at once, same version.
        let mut l = lease("a", 3, "1", "r1");
        l.record.members = members(&["a", "b", "c"]);
        let s = e.step(ms(2_050), Input::Observed(Some(l)));
        let w = writes(&s).pop().expect("a renewal");
        assert_eq!(
            (w.purpose, w.version.as_deref(), w.transitions),
            (Purpose::Renew, Some("1"), 3)
        );
        let mut l = lease("a", 3, "2", "r2");
        l.record.members = members(&["a", "b", "c"]);
        e.step(
            ms(2_060),
            Input::WriteSucceeded {
                sent_at: ms(2_050),
                lease: l,
            },
        );
        assert!(!e.api_down());
        assert!(!e.failsafe_view(ms(2_060)).active, "the episode ended");
    }

    /// "b" follows "a" at epoch 3, observed at 0 ms, with failsafe on.
    fn failsafe_member() -> Elector {
        let mut e = Elector::new("b", "b:6379", timing()).with_failsafe(true);
        ready(&mut e, ms(0));
        e.step(ms(0), Input::Observed(Some(lease("a", 3, "1", "r1"))));
        e
    }

    fn ask(e: &mut Elector, now: Mono, holder: &str, epoch: u32, kind: AskKind) -> Reply {
        let s = e.step(
            now,
            Input::FailsafeAsk {
                holder: holder.into(),
                epoch,
                kind,
            },
        );
        s.actions
            .into_iter()
            .find_map(|a| match a {
                Action::FailsafeReply(r) => Some(r),
                _ => None,
            })
            .expect("an answer")
    }

    #[test]
    fn a_confirming_member_does_not_campaign_until_its_promise_ends() {
        let mut e = failsafe_member();
        let r = ask(&mut e, ms(9_000), "a", 3, AskKind::Round);
        assert!(r.confirmed && r.promise, "{r:?}");
        // The lease, unchanged since 0 ms, would expire at 10 s: the promise holds it to 19 s.
        let s = e.step(ms(10_000), Input::Tick);
        assert!(s.actions.is_empty(), "{s:?}");
        assert!(matches!(e.role(), Role::Follower { .. }));
        assert!(ask(&mut e, ms(12_000), "x", 0, AskKind::Probe).promise);
        let s = e.step(ms(18_999), Input::Tick);
        assert!(!s.actions.iter().any(|a| matches!(a, Action::Write(_))));
        let s = e.step(ms(19_000), Input::Tick);
        assert!(
            s.actions.iter().any(|a| matches!(a, Action::Write(_))),
            "campaigns once the promise ended: {s:?}"
        );
    }

    #[test]
    fn a_member_refuses_what_it_cannot_promise() {
        // It has seen a newer lease.
        let mut e = failsafe_member();
        let r = ask(&mut e, ms(1_000), "a", 2, AskKind::Round);
        assert!(!r.confirmed && r.reason.contains("newer"), "{r:?}");
        let r = ask(&mut e, ms(1_000), "z", 3, AskKind::Round);
        assert!(!r.confirmed, "another holder at the same epoch: {r:?}");
        // It counts the named lease as expired (unchanged for a lease duration, no promise).
        let mut e = failsafe_member();
        let r = ask(&mut e, ms(10_000), "a", 3, AskKind::Round);
        assert!(!r.confirmed && r.reason.contains("expired"), "{r:?}");
        // Its own Lease write is in flight.
        let mut e = failsafe_member();
        e.step(ms(10_000), Input::Tick);
        let r = ask(&mut e, ms(10_001), "a", 3, AskKind::Round);
        assert!(!r.confirmed && r.reason.contains("in flight"), "{r:?}");
        // Failsafe off: never confirms.
        let mut e = Elector::new("b", "b:6379", timing());
        let r = ask(&mut e, ms(1), "a", 3, AskKind::Round);
        assert!(!r.confirmed);
        // A restarted member that has observed nothing may confirm.
        let mut e = Elector::new("b", "b:6379", timing()).with_failsafe(true);
        assert!(ask(&mut e, ms(1), "a", 3, AskKind::Round).confirmed);
    }

    #[test]
    fn a_release_ends_the_promise() {
        let mut e = failsafe_member();
        assert!(ask(&mut e, ms(9_000), "a", 3, AskKind::Round).confirmed);
        // A release for another epoch changes nothing.
        ask(&mut e, ms(9_500), "a", 2, AskKind::Release);
        assert!(ask(&mut e, ms(9_600), "", 0, AskKind::Probe).promise);
        ask(&mut e, ms(9_700), "a", 3, AskKind::Release);
        assert!(!ask(&mut e, ms(9_800), "", 0, AskKind::Probe).promise);
        let s = e.step(ms(10_000), Input::Tick);
        assert!(
            s.actions.iter().any(|a| matches!(a, Action::Write(_))),
            "{s:?}"
        );
        // So does the Lease showing that holder's release.
        let mut e = failsafe_member();
        assert!(ask(&mut e, ms(9_000), "a", 3, AskKind::Round).confirmed);
        e.step(ms(9_100), Input::Observed(Some(free(3, "2"))));
        assert!(!ask(&mut e, ms(9_200), "", 0, AskKind::Probe).promise);
    }

    #[test]
    fn a_leader_answers_a_probe_that_it_leads() {
        let mut e = failsafe_leader();
        let r = ask(&mut e, ms(100), "", 0, AskKind::Probe);
        assert!(r.leads && !r.promise);
        let r = ask(&mut e, ms(100), "z", 9, AskKind::Round);
        assert!(!r.confirmed, "a leader confirms nobody");
    }
}
