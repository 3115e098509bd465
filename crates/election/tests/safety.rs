//! Invariant 1 at the election level, by simulation: several electors share one
//! compare-and-set lease store through a network that delays, loses and partitions messages,
//! with clocks running at different rates (within the tolerated bound), Redis health flapping,
//! pods crashing, and operators pausing and resuming automatic failover. Whatever the interleaving, no two electors may lead at the same instant
//! of global time.
//!
//! A leader's window runs from its `Promote` to the moment its fence completes (`Fence` plus
//! the fence time). The caller steps each elector no later than its `wake_at`, as the runtime
//! does; a crash ends the pod (Redis included) at once.

use election::Mono;
use election::elector::{Action, Elector, Input, LeaseRecord, ObservedLease, Stamp};
use election::timing::Timing;
use proptest::prelude::*;
use std::cmp::Reverse;
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

#[derive(Clone, Debug)]
struct Plan {
    nodes: usize,
    rates: Vec<f64>,
    /// Per message: delay in µs, or None = lost.
    delays: Vec<Option<u64>>,
    partitions: Vec<(usize, G, G)>,
    health: Vec<(usize, G, bool)>,
    crashes: Vec<(usize, G)>,
    pauses: Vec<(G, bool)>,
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
    (2usize..4)
        .prop_flat_map(move |n| {
            (
                Just(n),
                proptest::collection::vec(1.0 / spread..spread, n),
                proptest::collection::vec(prop::option::weighted(0.9, 0u64..400_000), 400),
                proptest::collection::vec((0..n, 0u64..20_000_000, 100_000u64..4_000_000), 0..3),
                proptest::collection::vec((0..n, 0u64..20_000_000, any::<bool>()), 0..4),
                proptest::collection::vec((0..n, 0u64..25_000_000), 0..2),
                proptest::collection::vec((0u64..20_000_000, any::<bool>()), 0..3),
            )
        })
        .prop_map(
            |(nodes, rates, delays, parts, health, crashes, pauses)| Plan {
                nodes,
                rates,
                delays,
                partitions: parts.into_iter().map(|(n, s, d)| (n, s, s + d)).collect(),
                health,
                crashes,
                pauses,
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
}

impl Sim {
    fn push(&mut self, at: G, ev: Ev) {
        self.events.push(ev);
        let idx = self.events.len() - 1;
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, idx)));
    }

    fn delay(&mut self, node: usize, now: G) -> Option<u64> {
        if self
            .partitions
            .iter()
            .any(|(n, s, e)| *n == node && (*s..*e).contains(&now))
        {
            return None;
        }
        let d = self.delays[self.next_delay % self.delays.len()];
        self.next_delay += 1;
        d
    }

    fn end_window(&mut self, i: usize, at: G) {
        if let Some(start) = self.nodes[i].leading_since.take() {
            self.windows.push((i, start, at));
        }
    }

    fn apply(&mut self, i: usize, now: G, input: Input) {
        if !self.nodes[i].alive {
            return;
        }
        let local = self.nodes[i].local(now);
        let step = self.nodes[i].elector.step(local, input);
        let fence = timing().fence_time.as_micros() as u64;
        // Actions run in order, each finished before the next: a fence (local or remote)
        // takes the whole fence time before anything after it happens.
        let mut at = now;
        for a in step.actions {
            match a {
                Action::Write(intent) => {
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
                    }
                }
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
                Action::Follow { .. } | Action::SteppedDown { .. } => {}
            }
        }
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
        };
        let _ = prev;
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
        let mut sim = Sim {
            nodes: (0..plan.nodes)
                .map(|i| Node {
                    elector: Elector::new(format!("n{i}"), format!("n{i}:6379"), timing()),
                    rate: plan.rates[i],
                    offset: 1_000_000 * (i as u64 + 1),
                    alive: true,
                    waiting: None,
                    wake_at: None,
                    leading_since: None,
                })
                .collect(),
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
        };
        for i in 0..plan.nodes {
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
        while let Some(Reverse((now, _, idx))) = sim.queue.pop() {
            if now > horizon {
                break;
            }
            match sim.events[idx].clone() {
                Ev::Wake(i) => {
                    if sim.nodes[i].wake_at == Some(now) {
                        sim.nodes[i].wake_at = None;
                        sim.apply(i, now, Input::Tick);
                    }
                }
                Ev::Health { node, healthy } => {
                    sim.apply(node, now, Input::RedisHealth(healthy));
                    sim.apply(node, now, Input::Eligible(true));
                    let lease = sim.store.clone();
                    sim.apply(node, now, Input::Observed(lease));
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
                        sim.apply(node, now, Input::WriteFailed);
                    }
                }
                Ev::Deliver { node, lease } => sim.apply(node, now, Input::Observed(lease)),
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
    let cases = 300;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let elected = std::cell::Cell::new(0u32);
    runner
        .run(&plan(), |plan| {
            let sim = Sim::run(&plan, 30_000_000);
            if let Some(o) = overlaps(&sim.windows) {
                return Err(TestCaseError::fail(format!("{o}; plan {plan:?}")));
            }
            if sim.promotions > 0 {
                elected.set(elected.get() + 1);
            }
            Ok(())
        })
        .unwrap();
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
        health: vec![(1, 0, false), (1, 1_000_000, true)],
        crashes: vec![],
        pauses: vec![],
    };
    let sim = Sim::run(&plan, 30_000_000);
    assert!(
        overlaps(&sim.windows).is_some(),
        "expected an overlap with skew ×{ratio:.2}: {:?}",
        sim.windows
    );
}
