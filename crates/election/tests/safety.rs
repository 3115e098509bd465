//! Invariant 1 at the election level, by simulation: several electors share one
//! compare-and-set lease store through a network that delays, loses and partitions messages,
//! with clocks running at different rates (within the tolerated bound), Redis health flapping,
//! pods crashing, operators pausing and resuming automatic failover, and operators asking for
//! switchovers. Whatever the interleaving, no two electors may lead at the same instant of
//! global time.
//!
//! Each pod also runs the candidacy machine as the sidecar does: a candidate ranks itself
//! against the peers it can reach (their data and health) once per retry period and backs off,
//! within its bound, for a better one. A switchover is the sidecar's: writes held and the
//! leader's Redis fenced, then `Input::HandOver`; writes resume only where the elector says
//! they may.
//!
//! A leader's window runs from its `Promote` to the moment its fence completes (`Fence` plus
//! the fence time, or the hand-over's fence). The caller steps each elector no later than its
//! `wake_at`, as the runtime does; a crash ends the pod (Redis included) at once.

use election::Mono;
use election::candidacy::{Candidacy, CandidacyInput, RankSnapshot};
use election::elector::{Action, Elector, Input, LeaseRecord, ObservedLease, Role, Stamp};
use election::failsafe::{self, AskKind, Member, MemberEvidence, Reply, RoundOutcome};
use election::rank::Candidate;
use election::timing::Timing;
use proptest::prelude::*;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Global time in microseconds.
type G = u64;

#[derive(Clone, Debug)]
enum Ev {
    Wake(usize),
    /// A write reaches the store.
    Arrive {
        node: usize,
        intent: election::elector::WriteIntent,
        sent_local: Mono,
        seq: u64,
    },
    /// The answer to a write reaches the node.
    Answer {
        node: usize,
        result: Option<ObservedLease>,
        sent_local: Mono,
        seq: u64,
    },
    /// A write timed out on the node's side.
    Timeout {
        node: usize,
        seq: u64,
    },
    /// A read or watch delivery reaches the node.
    Deliver {
        node: usize,
        lease: Option<ObservedLease>,
    },
    Health {
        node: usize,
        healthy: bool,
    },
    Crash(usize),
    /// An operator pauses or resumes automatic failover (a patch of the stored lease).
    Pause(bool),
    /// An operator asks the leader (whoever it is) to switch over to this pod.
    Switchover(usize),
    /// The leader's writes are held and its Redis fenced: it writes the hand-over.
    HandOverWrite {
        node: usize,
        target: usize,
        asked: G,
    },
    /// A read got no answer within the request timeout.
    ReadTimeout(usize),
    /// A failsafe message reaches a member.
    Ask {
        from: usize,
        to: usize,
        holder: String,
        epoch: u32,
        kind: AskKind,
        /// For a round: its key in `Sim::rounds`.
        round: Option<usize>,
    },
    /// A member's answer to a round reaches the leader.
    Reply {
        round: usize,
        from: usize,
        reply: Reply,
    },
    /// A round's wait for answers ends.
    RoundDeadline(usize),
    /// A pod restarts: its sidecar starts over, with no promise and no observation.
    Restart(usize),
    /// A pod joins the group (it did not exist before).
    Join(usize),
}

/// A failsafe round in flight.
#[derive(Clone, Debug)]
struct RoundState {
    node: usize,
    round: u64,
    sent_local: Mono,
    asked: Vec<usize>,
    replies: BTreeMap<usize, Reply>,
    done: bool,
}

/// How the simulated sidecar carries out a switchover. Everything but `Sidecar` is a control:
/// a broken runtime the checker must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    /// As the sidecar does: fence before the hand-over write; resume writes after a failed
    /// one only when the elector says they may.
    Sidecar,
    /// Write the hand-over while the local Redis still takes writes.
    HandOverUnfenced,
    /// Resume writes after any failed hand-over write while still leading, even when it may
    /// have committed.
    ResumeBlindly,
    /// A leader that counts a confirmed round's validity from the moment the answers came
    /// back instead of the moment the round was sent.
    ValidityFromReply,
    /// A member that confirms every round without promising anything.
    ForgetPromise,
    /// A pod outside the recorded membership that campaigns without asking the members.
    JoinerIgnoresMembership,
}

struct Node {
    elector: Elector,
    rate: f64,
    offset: G,
    alive: bool,
    /// Outstanding write sequence number: answers for older ones are ignored (timed out).
    waiting: Option<u64>,
    /// The one live wake-up; older queued wakes are stale and skipped.
    wake_at: Option<G>,
    /// Global time the current leadership window started.
    leading_since: Option<G>,
    /// Its Redis' replication offset (its data, for ranking).
    data: u64,
    /// Its Redis is healthy.
    healthy: bool,
    candidacy: Candidacy,
    /// The eligibility last fed to the elector.
    eligible: bool,
    /// Where a switchover on this pod stands (its window is closed until writes resume).
    handover: Option<Phase>,
    /// The sidecar carries out its actions in order, each finished before it handles
    /// anything else: until then (a fence takes the fence time) its events wait.
    busy_until: G,
    /// The membership last fed to its elector.
    listed: Option<Vec<Member>>,
}

/// A switchover on the leader, as the sidecar runs it (it blocks the sidecar's loop until the
/// write's outcome is known, then resumes writes where the elector allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Writes held, the fence going on; the hand-over write comes next.
    Holding,
    /// The hand-over write is in flight.
    Writing,
    /// The outcome is known (or the write was refused): writes resume once allowed.
    Settling,
}

impl Node {
    fn local(&self, g: G) -> Mono {
        Duration::from_micros(self.offset + (g as f64 * self.rate) as u64)
    }
    fn global(&self, local: Mono) -> G {
        let l = local.as_micros() as u64;
        (l.saturating_sub(self.offset) as f64 / self.rate).ceil() as u64
    }
}

#[derive(Clone, Debug, Default)]
struct Plan {
    nodes: usize,
    rates: Vec<f64>,
    /// Per message: delay in µs, or None = lost.
    delays: Vec<Option<u64>>,
    partitions: Vec<(usize, G, G)>,
    health: Vec<(usize, G, bool)>,
    crashes: Vec<(usize, G)>,
    pauses: Vec<(G, bool)>,
    /// Per node: its data (replication offset).
    offsets: Vec<u64>,
    /// Switchovers: when, and to which pod.
    switchovers: Vec<(G, usize)>,
    /// Whole-API outages: nobody reaches the API.
    outages: Vec<(G, G)>,
    /// Per failsafe message: delay in µs, or None = lost.
    peer_delays: Vec<Option<u64>>,
    /// Every how many failsafe messages one is delivered twice (0: never).
    duplicate_every: usize,
    /// A pod cut off from its peers' sidecars (not from the API).
    peer_cuts: Vec<(usize, G, G)>,
    /// Pods restarting.
    restarts: Vec<(usize, G)>,
    /// The last pod joins at this time (before it, it does not exist).
    join_at: Option<G>,
    /// From this time on, every answer to a round takes this much longer, in µs (answers
    /// slower than questions).
    slow_replies: Option<(G, u64)>,
}

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_millis(3_000),
        renew_deadline: Duration::from_millis(2_000),
        retry_period: Duration::from_millis(250),
        fence_time: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
    }
}

fn plan() -> impl Strategy<Value = Plan> {
    let t = timing();
    // Rates whose ratio stays below the tolerated bound.
    let max_ratio = t.tolerated_clock_rate() * 0.98;
    let spread = max_ratio.sqrt();
    (2usize..5)
        .prop_flat_map(move |n| {
            (
                (
                    Just(n),
                    proptest::collection::vec(1.0 / spread..spread, n),
                    proptest::collection::vec(prop::option::weighted(0.9, 0u64..400_000), 400),
                    proptest::collection::vec(
                        (0..n, 0u64..20_000_000, 100_000u64..4_000_000),
                        0..3,
                    ),
                    proptest::collection::vec((0..n, 0u64..20_000_000, any::<bool>()), 0..4),
                    proptest::collection::vec((0..n, 0u64..25_000_000), 0..2),
                    proptest::collection::vec((0u64..20_000_000, any::<bool>()), 0..3),
                    proptest::collection::vec(0u64..3, n),
                    proptest::collection::vec((0u64..28_000_000, 0..n), 0..6),
                ),
                (
                    proptest::collection::vec(
                        (2_000_000u64..22_000_000, 500_000u64..8_000_000),
                        0..3,
                    ),
                    proptest::collection::vec(prop::option::weighted(0.93, 0u64..300_000), 200),
                    0usize..6,
                    proptest::collection::vec(
                        (0..n, 0u64..25_000_000, 100_000u64..5_000_000),
                        0..3,
                    ),
                    proptest::collection::vec((0..n, 0u64..25_000_000), 0..3),
                    prop::option::weighted(0.5, 0u64..20_000_000),
                ),
            )
        })
        .prop_map(
            |(
                (nodes, rates, delays, parts, health, crashes, pauses, offsets, switchovers),
                (outages, peer_delays, duplicate_every, peer_cuts, restarts, join_at),
            )| Plan {
                nodes,
                rates,
                delays,
                partitions: parts.into_iter().map(|(n, s, d)| (n, s, s + d)).collect(),
                health,
                crashes,
                pauses,
                offsets,
                switchovers,
                outages: outages.into_iter().map(|(s, d)| (s, s + d)).collect(),
                peer_delays,
                duplicate_every,
                peer_cuts: peer_cuts
                    .into_iter()
                    .map(|(n, s, d)| (n, s, s + d))
                    .collect(),
                restarts,
                // Only with three pods or more: the joiner is the last one.
                join_at: join_at.filter(|_| nodes >= 3),
                slow_replies: None,
            },
        )
}

struct Sim {
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(G, u64, usize)>>,
    events: Vec<Ev>,
    store: Option<ObservedLease>,
    version: u64,
    delays: Vec<Option<u64>>,
    next_delay: usize,
    partitions: Vec<(usize, G, G)>,
    seq: u64,
    windows: Vec<(usize, G, G)>,
    promotions: usize,
    runtime: Runtime,
    /// Candidacies that backed off for a better peer.
    back_offs: usize,
    /// Hand-overs that committed.
    handed_over: usize,
    outages: Vec<(G, G)>,
    peer_delays: Vec<Option<u64>>,
    next_peer_delay: usize,
    duplicate_every: usize,
    peer_messages: usize,
    peer_cuts: Vec<(usize, G, G)>,
    rounds: Vec<RoundState>,
    /// Pods that exist (a joiner does not, before it joins).
    present: Vec<bool>,
    /// The last failsafe answer a step produced.
    last_reply: Option<Reply>,
    /// Rounds every member confirmed (non-vacuity).
    confirmed_rounds: usize,
    /// Rounds that extended a leader past a renewal deadline it would otherwise have hit.
    joiner_back_offs: usize,
}

impl Sim {
    fn push(&mut self, at: G, ev: Ev) {
        self.events.push(ev);
        let idx = self.events.len() - 1;
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, idx)));
    }

    fn delay(&mut self, node: usize, now: G) -> Option<u64> {
        if self.cut_off(node, now) {
            return None;
        }
        let d = self.delays[self.next_delay % self.delays.len()];
        self.next_delay += 1;
        d
    }

    /// Is the pod cut off from the API (a partition, or a whole-API outage)?
    fn cut_off(&self, node: usize, now: G) -> bool {
        self.partitions
            .iter()
            .any(|(n, s, e)| *n == node && (*s..*e).contains(&now))
            || self.outages.iter().any(|(s, e)| (*s..*e).contains(&now))
    }

    /// Is the pod cut off from its peers' sidecars?
    fn peer_cut(&self, node: usize, now: G) -> bool {
        self.peer_cuts
            .iter()
            .any(|(n, s, e)| *n == node && (*s..*e).contains(&now))
    }

    /// The delay of one failsafe message from `a` to `b`, or `None` when it is lost.
    fn peer_delay(&mut self, a: usize, b: usize, now: G) -> Option<u64> {
        if self.peer_cut(a, now) || self.peer_cut(b, now) || !self.present[b] {
            return None;
        }
        let d = self.peer_delays[self.next_peer_delay % self.peer_delays.len()];
        self.next_peer_delay += 1;
        d
    }

    /// Sends one failsafe message, possibly twice.
    fn send_ask(&mut self, at: G, ev: Ev) {
        let (from, to) = match &ev {
            Ev::Ask { from, to, .. } => (*from, *to),
            _ => unreachable!(),
        };
        if let Some(d) = self.peer_delay(from, to, at) {
            self.push(at + d, ev.clone());
            self.peer_messages += 1;
            if self.duplicate_every > 0
                && self.peer_messages.is_multiple_of(self.duplicate_every)
                && let Some(d2) = self.peer_delay(from, to, at)
            {
                self.push(at + d + d2, ev);
            }
        }
    }

    /// The pods that exist, as the API lists them (a crashed pod's object stays).
    fn members(&self) -> Vec<Member> {
        (0..self.nodes.len())
            .filter(|&j| self.present[j])
            .map(|j| Member {
                name: format!("n{j}"),
                http: format!("n{j}:9121"),
            })
            .collect()
    }

    /// What a joining pod `i` can show about each recorded member: gone (crashed), its
    /// sidecar's answer (when both sides reach each other), or nothing.
    fn evidence(&mut self, i: usize, now: G) -> BTreeMap<String, MemberEvidence> {
        let recorded: Vec<Member> = self.nodes[i].elector.recorded_members().to_vec();
        let mut out = BTreeMap::new();
        for m in recorded {
            let j: usize = m.name[1..].parse().unwrap();
            let ev = if j == i {
                continue;
            } else if !self.nodes[j].alive {
                MemberEvidence::Gone
            } else if self.peer_cut(i, now) || self.peer_cut(j, now) {
                MemberEvidence::Unknown
            } else {
                let local = self.nodes[j].local(now);
                let s = self.nodes[j].elector.step(
                    local,
                    Input::FailsafeAsk {
                        holder: String::new(),
                        epoch: 0,
                        kind: AskKind::Probe,
                    },
                );
                match s.actions.iter().find_map(|a| match a {
                    Action::FailsafeReply(r) => Some(r.clone()),
                    _ => None,
                }) {
                    Some(r) => MemberEvidence::Answered {
                        promise: r.promise,
                        leads: r.leads,
                    },
                    None => MemberEvidence::Unknown,
                }
            };
            out.insert(m.name, ev);
        }
        out
    }

    /// How long a leader waits for a round's answers: the request timeout, as the sidecar
    /// does. (With `LD > RD + fence time + request timeout`, that wait alone keeps a leader
    /// that counted from the answers within its members' promises; the control that counts
    /// from the answers also waits longer, as a runtime without a bound would.)
    fn round_timeout(&self) -> Duration {
        if self.runtime == Runtime::ValidityFromReply {
            Duration::from_millis(2_500)
        } else {
            timing().request_timeout
        }
    }

    /// Ends a round: its outcome to the leader, once.
    fn finish_round(&mut self, k: usize, now: G) {
        let wait = self.round_timeout();
        let r = &mut self.rounds[k];
        if r.done {
            return;
        }
        // The sidecar's rule: a refusal, else all confirmed, else silent. A refusal or a
        // full confirmation ends the wait early; silence only at the timeout.
        let outcome = failsafe::round_outcome(
            r.asked
                .iter()
                .map(|j| (format!("n{j}"), r.replies.get(j).cloned()))
                .collect(),
        );
        let timed_out = now >= self.nodes[r.node].global(r.sent_local + wait);
        if matches!(outcome, RoundOutcome::Silent { .. }) && !timed_out {
            return;
        }
        r.done = true;
        let (node, round, sent_local) = (r.node, r.round, r.sent_local);
        self.confirmed_rounds += usize::from(outcome == RoundOutcome::Confirmed);
        let sent_at = if self.runtime == Runtime::ValidityFromReply {
            self.nodes[node].local(now)
        } else {
            sent_local
        };
        self.apply(
            node,
            now,
            Input::FailsafeAnswered {
                round,
                sent_at,
                outcome,
            },
        );
    }

    /// What pod `i`'s sidecar sees when it ranks itself: its own Redis, and each peer's as a
    /// direct probe shows it (nothing, when either side is cut off or the peer is down).
    fn snapshot(&self, i: usize, now: G) -> RankSnapshot {
        let cand = |j: usize, seen: bool| {
            let n = &self.nodes[j];
            let up = seen && n.alive && n.healthy;
            Candidate {
                name: format!("n{j}"),
                priority: 100,
                offset: if up { n.data } else { 0 },
                has_data: up && n.data > 0,
                checkpoint: None,
                healthy: up,
            }
        };
        let me_cut = self.cut_off(i, now);
        RankSnapshot {
            me: cand(i, true),
            peers: (0..self.nodes.len())
                .filter(|&j| j != i)
                .map(|j| cand(j, !me_cut && !self.cut_off(j, now)))
                .collect(),
            lapsed_holder: self.nodes[i]
                .elector
                .observed()
                .map(|l| l.record.holder.clone())
                .filter(|h| !h.is_empty() && *h != format!("n{i}")),
            cold: None,
        }
    }

    /// An input, then what the sidecar does after every step: its candidacy (rank and feed
    /// `Eligible` once per retry period while a candidate), and resuming writes held by a
    /// switchover that did not happen.
    fn apply(&mut self, i: usize, now: G, input: Input) {
        self.step(i, now, input);
        if !self.nodes[i].alive {
            return;
        }
        // A leader that reaches the API lists the group (the sidecar does so every retry
        // period); the next renewal records it.
        if matches!(self.nodes[i].elector.role(), Role::Leader { .. }) && !self.cut_off(i, now) {
            let members = self.members();
            if self.nodes[i].listed.as_ref() != Some(&members) {
                self.nodes[i].listed = Some(members.clone());
                self.step(i, now, Input::Members(members));
            }
        }
        let local = self.nodes[i].local(now);
        if *self.nodes[i].elector.role() != Role::Candidate {
            self.nodes[i]
                .candidacy
                .step(local, CandidacyInput::NotCandidate);
            if self.nodes[i].eligible {
                self.nodes[i].eligible = false;
                self.step(i, now, Input::Eligible(false));
            }
        } else if self.nodes[i].candidacy.due(local) {
            let snap = self.snapshot(i, now);
            let verdict = self.nodes[i]
                .candidacy
                .step(local, CandidacyInput::Ranked(snap));
            self.back_offs += usize::from(verdict.started_back_off);
            // A pod outside the recorded membership runs only once every member is shown
            // to hold no promise and not to lead.
            let me = format!("n{i}");
            let mut eligible = verdict.eligible;
            if eligible
                && self.runtime != Runtime::JoinerIgnoresMembership
                && failsafe::is_joining(&me, self.nodes[i].elector.recorded_members())
            {
                let evidence = self.evidence(i, now);
                let recorded = self.nodes[i].elector.recorded_members().to_vec();
                if !failsafe::joiner_may_run(&me, &recorded, &evidence) {
                    eligible = false;
                    self.joiner_back_offs += 1;
                }
            }
            self.nodes[i].eligible = eligible;
            self.step(i, now, Input::Eligible(eligible));
        }
        let n = &self.nodes[i];
        if n.handover == Some(Phase::Settling) {
            let leading = matches!(n.elector.role(), Role::Leader { .. });
            let resume = match self.runtime {
                Runtime::ResumeBlindly => leading && !n.elector.fenced(),
                _ => n.elector.writes_may_resume(),
            };
            if !leading {
                self.nodes[i].handover = None;
            } else if resume {
                self.nodes[i].handover = None;
                if self.nodes[i].leading_since.is_none() {
                    self.nodes[i].leading_since = Some(now);
                }
            }
        }
    }

    /// A switchover to `target`: the leader holds writes and fences (unless the control runtime
    /// skips that), then writes the hand-over.
    fn switchover(&mut self, target: usize, now: G) {
        let Some(i) = (0..self.nodes.len()).find(|&i| {
            let n = &self.nodes[i];
            n.alive
                && matches!(n.elector.role(), Role::Leader { .. })
                && n.leading_since.is_some()
                && n.handover.is_none()
        }) else {
            return;
        };
        if i == target {
            return;
        }
        self.nodes[i].handover = Some(Phase::Holding);
        let at = if self.runtime == Runtime::HandOverUnfenced {
            now
        } else {
            let fenced_at = now + timing().fence_time.as_micros() as u64;
            self.end_window(i, fenced_at);
            fenced_at
        };
        self.push(
            at,
            Ev::HandOverWrite {
                node: i,
                target,
                asked: now,
            },
        );
    }

    fn end_window(&mut self, i: usize, at: G) {
        if let Some(start) = self.nodes[i].leading_since.take() {
            self.windows.push((i, start, at));
        }
    }

    /// One elector step and its actions.
    fn step(&mut self, i: usize, now: G, input: Input) {
        if !self.nodes[i].alive {
            return;
        }
        let local = self.nodes[i].local(now);
        let handing = matches!(input, Input::HandOver { .. });
        if handing {
            self.nodes[i].handover = Some(Phase::Settling);
        }
        let step = self.nodes[i].elector.step(local, input);
        let fence = timing().fence_time.as_micros() as u64;
        // Actions run in order, each finished before the next: a fence (local or remote)
        // takes the whole fence time before anything after it happens.
        let mut at = now.max(self.nodes[i].busy_until);
        for a in step.actions {
            match a {
                Action::Write(intent) => {
                    if handing {
                        self.nodes[i].handover = Some(Phase::Writing);
                    }
                    self.seq += 1;
                    let seq = self.seq;
                    self.nodes[i].waiting = Some(seq);
                    let sent_local = self.nodes[i].local(at);
                    let timeout_at = self.nodes[i].global(sent_local + timing().request_timeout);
                    self.push(timeout_at, Ev::Timeout { node: i, seq });
                    if let Some(d) = self.delay(i, at) {
                        self.push(
                            at + d / 2,
                            Ev::Arrive {
                                node: i,
                                intent,
                                sent_local,
                                seq,
                            },
                        );
                    }
                }
                Action::Refresh => {
                    if let Some(d) = self.delay(i, at) {
                        let lease = self.store.clone();
                        self.push(at + d, Ev::Deliver { node: i, lease });
                    } else {
                        let t = self.nodes[i].local(at) + timing().request_timeout;
                        let t = self.nodes[i].global(t);
                        self.push(t, Ev::ReadTimeout(i));
                    }
                }
                Action::FailsafeRound {
                    round,
                    holder,
                    epoch,
                    members,
                } => {
                    let asked: Vec<usize> = members
                        .iter()
                        .map(|m| m.name[1..].parse().unwrap())
                        .collect();
                    let sent_local = self.nodes[i].local(at);
                    self.rounds.push(RoundState {
                        node: i,
                        round,
                        sent_local,
                        asked: asked.clone(),
                        replies: BTreeMap::new(),
                        done: false,
                    });
                    let k = self.rounds.len() - 1;
                    let deadline = self.nodes[i].global(sent_local + self.round_timeout());
                    self.push(deadline, Ev::RoundDeadline(k));
                    for j in asked {
                        self.send_ask(
                            at,
                            Ev::Ask {
                                from: i,
                                to: j,
                                holder: holder.clone(),
                                epoch,
                                kind: AskKind::Round,
                                round: Some(k),
                            },
                        );
                    }
                    if self.rounds[k].asked.is_empty() {
                        self.push(at, Ev::RoundDeadline(k));
                    }
                }
                Action::FailsafeRelease {
                    holder,
                    epoch,
                    members,
                } => {
                    for m in members {
                        let j: usize = m.name[1..].parse().unwrap();
                        self.send_ask(
                            at,
                            Ev::Ask {
                                from: i,
                                to: j,
                                holder: holder.clone(),
                                epoch,
                                kind: AskKind::Release,
                                round: None,
                            },
                        );
                    }
                }
                Action::FailsafeReply(r) => self.last_reply = Some(r),
                Action::Fence { .. } => {
                    at += fence;
                    if let Some(start) = self.nodes[i].leading_since.take() {
                        self.windows.push((i, start, at));
                    }
                }
                Action::FencePrevious { .. } => at += fence,
                Action::Promote { .. } => {
                    self.promotions += 1;
                    self.nodes[i].leading_since = Some(at);
                }
                Action::Follow { .. }
                | Action::SteppedDown { .. }
                | Action::HandoverRefused { .. } => {}
            }
        }
        self.nodes[i].busy_until = at;
        let wake = self.nodes[i].global(step.wake_at).max(now + 1);
        if self.nodes[i].wake_at.is_none_or(|w| wake < w) {
            self.nodes[i].wake_at = Some(wake);
            self.push(wake, Ev::Wake(i));
        }
    }

    fn commit(&mut self, intent: &election::elector::WriteIntent, now: G) -> Option<ObservedLease> {
        let current_version = self.store.as_ref().map(|l| l.version.clone());
        if intent.version != current_version {
            return None;
        }
        self.version += 1;
        let prev = self
            .store
            .as_ref()
            .map(|l| l.record.clone())
            .unwrap_or_default();
        let record = LeaseRecord {
            holder: intent.holder.clone(),
            holder_address: intent.holder_address.clone(),
            lease_duration: intent.lease_duration,
            transitions: intent.transitions,
            acquire_stamp: match &intent.acquire {
                Stamp::Now => format!("t{now}"),
                Stamp::Keep(s) => s.clone(),
            },
            renew_stamp: format!("t{now}"),
            handover_to: intent.handover_to.clone(),
            paused: intent.paused.clone(),
            history: intent.history.clone(),
            members: intent.members.clone(),
        };
        let _ = prev;
        self.handed_over += usize::from(!intent.handover_to.is_empty());
        let lease = ObservedLease {
            record,
            version: self.version.to_string(),
        };
        self.store = Some(lease.clone());
        self.broadcast(&lease, now);
        Some(lease)
    }

    /// The watch delivers a change to every node (each delivery may be late or lost).
    fn broadcast(&mut self, lease: &ObservedLease, now: G) {
        for j in 0..self.nodes.len() {
            if let Some(d) = self.delay(j, now) {
                self.push(
                    now + d,
                    Ev::Deliver {
                        node: j,
                        lease: Some(lease.clone()),
                    },
                );
            }
        }
    }

    /// The operator's merge patch of the pause marker: no compare-and-set, a new version.
    fn set_paused(&mut self, paused: bool, now: G) {
        let Some(mut lease) = self.store.clone() else {
            return;
        };
        lease.record.paused = if paused {
            "by op".into()
        } else {
            String::new()
        };
        self.version += 1;
        lease.version = self.version.to_string();
        self.store = Some(lease.clone());
        self.broadcast(&lease, now);
    }

    fn run(plan: &Plan, horizon: G) -> Self {
        Self::run_with(plan, horizon, Runtime::Sidecar)
    }

    fn new_node(plan: &Plan, i: usize) -> Node {
        Node {
            elector: Elector::new(format!("n{i}"), format!("n{i}:6379"), timing())
                .with_failsafe(true)
                .with_seed(i as u64),
            rate: plan.rates[i],
            offset: 1_000_000 * (i as u64 + 1),
            alive: true,
            waiting: None,
            wake_at: None,
            leading_since: None,
            data: plan.offsets[i],
            healthy: false,
            candidacy: Candidacy::new(timing()),
            eligible: false,
            handover: None,
            busy_until: 0,
            listed: None,
        }
    }

    fn run_with(plan: &Plan, horizon: G, runtime: Runtime) -> Self {
        let joiner = plan.join_at.map(|_| plan.nodes - 1);
        let mut sim = Sim {
            nodes: (0..plan.nodes).map(|i| Self::new_node(plan, i)).collect(),
            queue: BinaryHeap::new(),
            events: Vec::new(),
            store: None,
            version: 0,
            delays: plan.delays.clone(),
            next_delay: 0,
            partitions: plan.partitions.clone(),
            seq: 0,
            windows: Vec::new(),
            promotions: 0,
            runtime,
            back_offs: 0,
            handed_over: 0,
            outages: plan.outages.clone(),
            peer_delays: if plan.peer_delays.is_empty() {
                vec![Some(1_000)]
            } else {
                plan.peer_delays.clone()
            },
            next_peer_delay: 0,
            duplicate_every: plan.duplicate_every,
            peer_messages: 0,
            peer_cuts: plan.peer_cuts.clone(),
            rounds: Vec::new(),
            present: (0..plan.nodes).map(|i| Some(i) != joiner).collect(),
            last_reply: None,
            confirmed_rounds: 0,
            joiner_back_offs: 0,
        };
        if let (Some(j), Some(at)) = (joiner, plan.join_at) {
            sim.nodes[j].alive = false;
            sim.push(at, Ev::Join(j));
        }
        // Every present pod's sidecar starts with the group as listed.
        let members = sim.members();
        for i in 0..plan.nodes {
            if sim.present[i] {
                sim.nodes[i].listed = Some(members.clone());
                sim.step(i, 0, Input::Members(members.clone()));
            }
        }
        for &(n, at) in &plan.restarts {
            sim.push(at, Ev::Restart(n));
        }
        for i in (0..plan.nodes).filter(|&i| Some(i) != joiner) {
            sim.push(
                0,
                Ev::Health {
                    node: i,
                    healthy: true,
                },
            );
        }
        for &(n, at, h) in &plan.health {
            sim.push(
                at,
                Ev::Health {
                    node: n,
                    healthy: h,
                },
            );
        }
        for &(n, at) in &plan.crashes {
            sim.push(at, Ev::Crash(n));
        }
        for &(at, p) in &plan.pauses {
            sim.push(at, Ev::Pause(p));
        }
        for &(at, to) in &plan.switchovers {
            sim.push(at, Ev::Switchover(to));
        }
        while let Some(Reverse((now, _, idx))) = sim.queue.pop() {
            if now > horizon {
                break;
            }
            let event = sim.events[idx].clone();
            // An event for a pod still carrying out its last actions waits for them.
            let target = match &event {
                Ev::Wake(i) => Some(*i),
                Ev::Health { node, .. }
                | Ev::Answer { node, .. }
                | Ev::Timeout { node, .. }
                | Ev::Deliver { node, .. }
                | Ev::HandOverWrite { node, .. }
                | Ev::Ask { to: node, .. } => Some(*node),
                Ev::ReadTimeout(node) => Some(*node),
                Ev::Reply { round, .. } | Ev::RoundDeadline(round) => Some(sim.rounds[*round].node),
                Ev::Arrive { .. }
                | Ev::Crash(_)
                | Ev::Pause(_)
                | Ev::Switchover(_)
                | Ev::Restart(_)
                | Ev::Join(_) => None,
            };
            if let Some(i) = target
                && now < sim.nodes[i].busy_until
            {
                let later = sim.nodes[i].busy_until;
                if matches!(event, Ev::Wake(_)) {
                    sim.nodes[i].wake_at = Some(later);
                }
                sim.push(later, event);
                continue;
            }
            match event {
                Ev::Wake(i) => {
                    if sim.nodes[i].wake_at == Some(now) {
                        sim.nodes[i].wake_at = None;
                        sim.apply(i, now, Input::Tick);
                    }
                }
                Ev::Health { node, healthy } => {
                    sim.nodes[node].healthy = healthy;
                    sim.apply(node, now, Input::RedisHealth(healthy));
                    let lease = sim.store.clone();
                    sim.apply(node, now, Input::Observed(lease));
                }
                Ev::Switchover(to) => sim.switchover(to, now),
                Ev::HandOverWrite {
                    node,
                    target,
                    asked,
                } => {
                    let input = Input::HandOver {
                        target: format!("n{target}"),
                        address: format!("n{target}:6379"),
                        reason: "switchover".into(),
                        held: Duration::from_micros(now - asked),
                    };
                    sim.apply(node, now, input);
                }
                Ev::Crash(i) => {
                    sim.end_window(i, now);
                    sim.nodes[i].alive = false;
                }
                Ev::Pause(p) => sim.set_paused(p, now),
                Ev::Arrive {
                    node,
                    intent,
                    sent_local,
                    seq,
                } => {
                    let result = sim.commit(&intent, now);
                    if let Some(d) = sim.delay(node, now) {
                        sim.push(
                            now + d / 2,
                            Ev::Answer {
                                node,
                                result,
                                sent_local,
                                seq,
                            },
                        );
                    }
                }
                Ev::Answer {
                    node,
                    result,
                    sent_local,
                    seq,
                } => {
                    if sim.nodes[node].waiting == Some(seq) {
                        sim.nodes[node].waiting = None;
                        if sim.nodes[node].handover == Some(Phase::Writing) {
                            sim.nodes[node].handover = Some(Phase::Settling);
                        }
                        let input = match result {
                            Some(lease) => Input::WriteSucceeded {
                                sent_at: sent_local,
                                lease,
                            },
                            None => Input::WriteConflict,
                        };
                        sim.apply(node, now, input);
                    }
                }
                Ev::Timeout { node, seq } => {
                    if sim.nodes[node].waiting == Some(seq) {
                        sim.nodes[node].waiting = None;
                        if sim.nodes[node].handover == Some(Phase::Writing) {
                            sim.nodes[node].handover = Some(Phase::Settling);
                        }
                        sim.apply(node, now, Input::WriteFailed);
                    }
                }
                Ev::Deliver { node, lease } => sim.apply(node, now, Input::Observed(lease)),
                Ev::ReadTimeout(node) => sim.apply(node, now, Input::ReadFailed),
                Ev::Ask {
                    from,
                    to,
                    holder,
                    epoch,
                    kind,
                    round,
                } => {
                    if !sim.nodes[to].alive {
                        continue;
                    }
                    let reply = if sim.runtime == Runtime::ForgetPromise && kind == AskKind::Round {
                        Reply {
                            confirmed: true,
                            ..Reply::default()
                        }
                    } else {
                        sim.last_reply = None;
                        sim.apply(
                            to,
                            now,
                            Input::FailsafeAsk {
                                holder,
                                epoch,
                                kind,
                            },
                        );
                        match sim.last_reply.take() {
                            Some(r) => r,
                            None => continue,
                        }
                    };
                    if let Some(k) = round
                        && let Some(d) = sim.peer_delay(to, from, now)
                    {
                        sim.push(
                            now + d
                                + plan
                                    .slow_replies
                                    .filter(|(t, _)| now >= *t)
                                    .map_or(0, |(_, x)| x),
                            Ev::Reply {
                                round: k,
                                from: to,
                                reply,
                            },
                        );
                    }
                }
                Ev::Reply { round, from, reply } => {
                    if !sim.rounds[round].done {
                        sim.rounds[round].replies.entry(from).or_insert(reply);
                        sim.finish_round(round, now);
                    }
                }
                Ev::RoundDeadline(k) => sim.finish_round(k, now),
                Ev::Restart(i) => {
                    if !sim.nodes[i].alive {
                        continue;
                    }
                    sim.end_window(i, now);
                    let rate = sim.nodes[i].rate;
                    let offset = sim.nodes[i].offset;
                    let healthy = sim.nodes[i].healthy;
                    sim.nodes[i] = Self::new_node(plan, i);
                    sim.nodes[i].rate = rate;
                    sim.nodes[i].offset = offset;
                    sim.nodes[i].healthy = healthy;
                    sim.nodes[i].busy_until = now;
                    sim.apply(i, now, Input::RedisHealth(healthy));
                    sim.apply(i, now, Input::Tick);
                    if let Some(d) = sim.delay(i, now) {
                        let lease = sim.store.clone();
                        sim.push(now + d, Ev::Deliver { node: i, lease });
                    }
                }
                Ev::Join(i) => {
                    sim.present[i] = true;
                    sim.nodes[i].alive = true;
                    sim.nodes[i].healthy = true;
                    sim.nodes[i].busy_until = now;
                    sim.apply(i, now, Input::RedisHealth(true));
                    if let Some(d) = sim.delay(i, now) {
                        let lease = sim.store.clone();
                        sim.push(now + d, Ev::Deliver { node: i, lease });
                    }
                }
            }
        }
        for i in 0..sim.nodes.len() {
            sim.end_window(i, horizon);
        }
        sim
    }
}

fn overlaps(windows: &[(usize, G, G)]) -> Option<String> {
    for (a, &(ia, sa, ea)) in windows.iter().enumerate() {
        for &(ib, sb, eb) in &windows[a + 1..] {
            if ia != ib && sa < eb && sb < ea {
                return Some(format!(
                    "n{ia} led {sa}..{ea} and n{ib} led {sb}..{eb} (µs) at once"
                ));
            }
        }
    }
    None
}

#[test]
fn no_two_leaders_at_once() {
    use proptest::test_runner::{Config, TestRunner};
    // SAFETY_CASES runs a longer search by hand (the default keeps the test run short).
    let cases = std::env::var("SAFETY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let elected = std::cell::Cell::new(0u32);
    let backed_off = std::cell::Cell::new(0usize);
    let handed_over = std::cell::Cell::new(0usize);
    let confirmed = std::cell::Cell::new(0usize);
    let joiners_held = std::cell::Cell::new(0usize);
    runner
        .run(&plan(), |plan| {
            let sim = Sim::run(&plan, 30_000_000);
            if let Some(o) = overlaps(&sim.windows) {
                return Err(TestCaseError::fail(format!("{o}; plan {plan:?}")));
            }
            if sim.promotions > 0 {
                elected.set(elected.get() + 1);
            }
            backed_off.set(backed_off.get() + sim.back_offs);
            handed_over.set(handed_over.get() + sim.handed_over);
            confirmed.set(confirmed.get() + sim.confirmed_rounds);
            joiners_held.set(joiners_held.get() + sim.joiner_back_offs);
            Ok(())
        })
        .unwrap();
    // Not vacuous either: candidates backed off for better peers, and switchovers happened.
    // (Typically about 700 back-offs and 45 committed hand-overs in 300 runs.)
    assert!(backed_off.get() >= 200, "{} back-offs", backed_off.get());
    assert!(handed_over.get() >= 10, "{} hand-overs", handed_over.get());
    // Failsafe ran: leaders were confirmed through outages.
    eprintln!(
        "{} back-offs, {} hand-overs, {} confirmed failsafe rounds, {} joiner back-offs",
        backed_off.get(),
        handed_over.get(),
        confirmed.get(),
        joiners_held.get()
    );
    assert!(
        confirmed.get() >= 1_000,
        "{} confirmed rounds",
        confirmed.get()
    );
    // (Typically about 2,800 confirmed rounds in 300 runs. How many joiners are held back
    // varies too much between runs for a floor here; `a_joining_pod_waits_for_a_leader_in_
    // failsafe` makes sure of one.)
    // Not vacuous: most schedules (10% message loss, a few partitions and flaps) elect someone.
    assert!(
        elected.get() >= cases * 8 / 10,
        "only {} of {cases} runs elected a leader",
        elected.get()
    );
}

/// With clocks further apart than the configuration tolerates, the same simulator does find
/// overlapping leaders: the bound is real, and the checker can fail.
#[test]
fn skew_beyond_the_bound_breaks_safety() {
    let t = timing();
    let ratio = t.tolerated_clock_rate() * 1.6;
    // n0 leads with a slow clock, then is cut off; n1 has a fast clock and takes over early.
    let plan = Plan {
        nodes: 2,
        rates: vec![1.0 / ratio.sqrt(), ratio.sqrt()],
        delays: vec![Some(1_000)],
        partitions: vec![(0, 2_000_000, 30_000_000)],
        // Cut from its peers too, so failsafe cannot keep it leading.
        peer_cuts: vec![(0, 2_000_000, 30_000_000)],
        health: vec![(1, 0, false), (1, 1_000_000, true)],
        crashes: vec![],
        pauses: vec![],
        offsets: vec![0, 0],
        switchovers: vec![],
        ..Plan::default()
    };
    let sim = Sim::run(&plan, 30_000_000);
    assert!(
        overlaps(&sim.windows).is_some(),
        "expected an overlap with skew ×{ratio:.2}: {:?}",
        sim.windows
    );
}

/// Runs `cases` plans from a fixed seed with `runtime`, and returns the first overlap found.
fn first_overlap(runtime: Runtime, cases: u32) -> Option<String> {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    // Many switchovers, so that the rare interleavings come up in a few hundred plans.
    let plans = plan().prop_map(|mut p| {
        p.switchovers = (0..24)
            .map(|k| (1_000_000 + k * 1_100_000, k as usize % p.nodes))
            .collect();
        p
    });
    let found = std::cell::RefCell::new(None);
    let _ = runner.run(&plans, |plan| {
        let sim = Sim::run_with(&plan, 30_000_000, runtime);
        if let Some(o) = overlaps(&sim.windows) {
            found.borrow_mut().get_or_insert(o);
            return Err(TestCaseError::fail("overlap"));
        }
        Ok(())
    });
    found.into_inner()
}

/// Control: a runtime that writes the hand-over while its Redis still takes writes has two
/// writable leaders (the target promotes before the old leader learns its write committed).
#[test]
fn a_hand_over_before_the_fence_breaks_safety() {
    assert!(
        first_overlap(Runtime::HandOverUnfenced, 300).is_some(),
        "the checker must catch a hand-over written before the fence"
    );
}

/// Control: a runtime that lets writes go after a hand-over write with no answer (it may have
/// committed) has two writable leaders; the elector's `writes_may_resume` is what prevents it.
#[test]
fn resuming_writes_after_an_unanswered_hand_over_breaks_safety() {
    assert!(
        first_overlap(Runtime::ResumeBlindly, 300).is_some(),
        "the checker must catch writes resumed after an unanswered hand-over"
    );
    assert_eq!(first_overlap(Runtime::Sidecar, 300), None);
}

/// Two pods; `n0` leads, then loses the API from 2 s to `cut_end` (alone, or with everyone in
/// an outage), and its peer link is as given.
fn failsafe_plan(outage: bool, peer_delays: Vec<Option<u64>>) -> Plan {
    Plan {
        nodes: 2,
        rates: vec![1.0, 1.0],
        delays: vec![Some(2_000)],
        partitions: if outage {
            vec![]
        } else {
            vec![(0, 2_000_000, 20_000_000)]
        },
        outages: if outage {
            vec![(2_000_000, 20_000_000)]
        } else {
            vec![]
        },
        // n1 starts late, so n0 leads.
        health: vec![(1, 0, false), (1, 1_000_000, true)],
        offsets: vec![1, 1],
        peer_delays,
        ..Plan::default()
    }
}

/// Failsafe does what it is for: through a whole-API outage, and with only the leader cut
/// off from the API, the leader keeps serving without a break and nobody else leads.
#[test]
fn failsafe_keeps_the_leader_through_an_outage() {
    for outage in [true, false] {
        let sim = Sim::run(&failsafe_plan(outage, vec![Some(2_000)]), 25_000_000);
        assert_eq!(
            sim.windows.len(),
            1,
            "outage={outage}: one unbroken leadership: {:?}",
            sim.windows
        );
        let (who, start, end) = sim.windows[0];
        assert_eq!(who, 0);
        assert!(start < 2_000_000 && end == 25_000_000, "{:?}", sim.windows);
        // One round per renewal attempt: a retry period after the request timeout that
        // the failed read took (18 s of outage).
        assert!(sim.confirmed_rounds > 15, "{} rounds", sim.confirmed_rounds);
    }
    // Without a peer path, the leader fences as before and n1 takes over after the API
    // comes back to it (here: n1 reaches it, n0 does not).
    let mut p = failsafe_plan(false, vec![Some(2_000)]);
    p.peer_cuts = vec![(0, 2_000_000, 20_000_000)];
    let sim = Sim::run(&p, 25_000_000);
    assert!(
        sim.windows.iter().any(|w| w.0 == 1),
        "n1 must take over: {:?}",
        sim.windows
    );
    assert_eq!(overlaps(&sim.windows), None);
}

/// Control: a member that confirms without keeping its promise lets the pod that reaches the
/// API take over while the leader, cut off from the API only, serves in failsafe.
#[test]
fn a_member_forgetting_its_promise_breaks_safety() {
    let plan = failsafe_plan(false, vec![Some(2_000)]);
    assert_eq!(overlaps(&Sim::run(&plan, 25_000_000).windows), None);
    let sim = Sim::run_with(&plan, 25_000_000, Runtime::ForgetPromise);
    assert!(
        overlaps(&sim.windows).is_some(),
        "the checker must catch a member that forgets its promise: {:?}",
        sim.windows
    );
}

/// Control: a leader that counts a round's validity from the answers instead of the send
/// outlives its members' promises when answers are slow; counted from the send, it does not.
#[test]
fn counting_validity_from_the_reply_breaks_safety() {
    // From 3 s on, questions take 50 ms and answers 1.05 s: more than LD - RD - fence time
    // (0.8 s) between a member's promise and the leader's receipt of it. The peer link fails
    // at 6 s; n1 reaches the API, waits out its last promise and takes over, while n0 still
    // counts itself valid.
    let mut plan = failsafe_plan(false, vec![Some(50_000)]);
    plan.slow_replies = Some((3_000_000, 1_000_000));
    // Clock rates within the tolerated bound (1.05² < 1.11): n0 slow, n1 fast.
    plan.rates = vec![1.0 / 1.05, 1.05];
    plan.peer_cuts = vec![(0, 6_000_000, 20_000_000)];
    assert_eq!(overlaps(&Sim::run(&plan, 25_000_000).windows), None);
    let sim = Sim::run_with(&plan, 25_000_000, Runtime::ValidityFromReply);
    assert!(
        overlaps(&sim.windows).is_some(),
        "the checker must catch validity counted from the reply: {:?}",
        sim.windows
    );
}

/// A pod that joins while the leader serves in failsafe (cut off from the API, confirmed by
/// its member) backs off: it asks the recorded members, and the leader says it leads.
/// Control: a joiner that does not ask takes over, and the checker catches it.
#[test]
fn a_joining_pod_waits_for_a_leader_in_failsafe() {
    let plan = Plan {
        nodes: 3,
        rates: vec![1.0, 1.0, 1.0],
        delays: vec![Some(2_000)],
        partitions: vec![(0, 2_000_000, 20_000_000)],
        health: vec![(1, 0, false), (1, 1_000_000, true)],
        offsets: vec![1, 1, 2],
        peer_delays: vec![Some(2_000)],
        join_at: Some(4_000_000),
        ..Plan::default()
    };
    let sim = Sim::run(&plan, 25_000_000);
    assert_eq!(overlaps(&sim.windows), None);
    assert!(sim.joiner_back_offs > 0, "the joiner must have backed off");
    assert!(
        !sim.windows.iter().any(|w| w.0 == 2 && w.1 < 20_000_000),
        "the joiner must not lead during the partition: {:?}",
        sim.windows
    );
    let sim = Sim::run_with(&plan, 25_000_000, Runtime::JoinerIgnoresMembership);
    assert!(
        overlaps(&sim.windows).is_some(),
        "the checker must catch a joiner that ignores the membership: {:?}",
        sim.windows
    );
}
