//! Data-aware candidacy: whether a candidate (no valid leader known) may run for the lease
//! now, or backs off for a better-ranked peer, and for how long at most.
//!
//! A candidate looks at its peers at most once per retry period. While a reachable, eligible
//! peer ranks above it ([`rank::should_back_off_from`]) it backs off, so that the best copy of
//! the data wins the race. The back-off is bounded: after one lease duration it runs as soon
//! as no peer it waits for is still a candidate with more data
//! ([`rank::may_stop_backing_off`]), and after two more lease durations it runs anyway: a
//! better peer that cannot win (cut off from the API, its sidecar stopped) must not keep the
//! group without a leader for ever.
//!
//! A *cold start* ([`ColdStart`]: the group ran before, and this sidecar has seen no valid
//! leader since it started, as after every pod of the group restarted at once) first waits
//! until a majority of the group's members answer, so that the copies that loaded the most
//! data from disk take part in the ranking; or until the cold-start wait passes, or an
//! operator forces the election with the members present. Only then does the ranking above
//! run. A warm failover (a candidate that followed a valid leader) never waits for this.
//!
//! Like the elector, the machine is advanced by [`Candidacy::step`] with the caller's
//! monotonic clock and returns a [`Verdict`]; the caller feeds `Verdict::eligible` to the
//! elector as [`crate::elector::Input::Eligible`].

use crate::Mono;
use crate::rank::{self, Candidate};
use crate::timing::Timing;

/// What the candidate knows when it ranks itself: its own Redis, its reachable peers (each
/// probed directly), and the holder of a lease that lapsed unreleased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankSnapshot {
    /// This sidecar's Redis.
    pub me: Candidate,
    /// The peers, an unanswered probe as an unhealthy candidate without data.
    pub peers: Vec<Candidate>,
    /// A non-empty holder of the observed lease other than us: it expired unreleased.
    pub lapsed_holder: Option<String>,
    /// Set during a cold start.
    pub cold: Option<ColdStart>,
}

/// What a candidate knows of its group during a cold start: the Lease shows the group ran
/// before, and this sidecar has seen no valid leader since it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdStart {
    /// The group's members: those the Lease last recorded and the pods listed now, this
    /// one included.
    pub members: Vec<String>,
    /// An operator forced the election with the members present.
    pub forced: bool,
}

/// How a cold start's wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColdStartEnd {
    /// A majority of the members answered; the others are named.
    Majority {
        /// Members that had not answered.
        missing: Vec<String>,
    },
    /// The cold-start wait passed without a majority.
    WaitEnded {
        /// Members that had not answered.
        missing: Vec<String>,
    },
    /// An operator forced the election.
    Forced {
        /// Members that had not answered.
        missing: Vec<String>,
    },
}

/// An input to [`Candidacy::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CandidacyInput {
    /// The elector is not a candidate (it leads, follows or is undecided): nobody runs, and a
    /// later candidacy starts afresh.
    NotCandidate,
    /// A candidate's fresh look at itself and its peers.
    Ranked(RankSnapshot),
}

/// The outcome of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// May run for the lease now ([`crate::elector::Input::Eligible`]).
    pub eligible: bool,
    /// Backing off until then at least (one lease duration after the back-off started).
    pub back_off_until: Option<Mono>,
    /// The peer that ranks best, when backing off for it.
    pub better: Option<String>,
    /// This step started the back-off (worth a log line).
    pub started_back_off: bool,
    /// This step ended a back-off by its bound: the better peer did not take over in time.
    pub ran_anyway: bool,
    /// Waiting in a cold start for these members to answer.
    pub waiting_for: Vec<String>,
    /// This step ended the cold start's wait, and how (worth an Event).
    pub cold_start_ended: Option<ColdStartEnd>,
}

impl Verdict {
    fn not_eligible() -> Self {
        Verdict {
            eligible: false,
            back_off_until: None,
            better: None,
            started_back_off: false,
            ran_anyway: false,
            waiting_for: Vec::new(),
            cold_start_ended: None,
        }
    }
}

/// The candidacy state of one sidecar.
#[derive(Clone, Debug)]
pub struct Candidacy {
    timing: Timing,
    back_off_until: Option<Mono>,
    last_ranked: Option<Mono>,
    eligible: bool,
    /// How long a cold start waits for a majority of the members at most.
    cold_start_wait: Mono,
    /// When this sidecar first ranked itself in a cold start.
    cold_since: Option<Mono>,
    /// The cold start's wait is over (for the life of this sidecar).
    cold_done: bool,
}

impl Candidacy {
    /// A sidecar that has not ranked itself yet (not eligible).
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            back_off_until: None,
            last_ranked: None,
            eligible: false,
            cold_start_wait: Self::DEFAULT_COLD_START_WAIT,
            cold_since: None,
            cold_done: false,
        }
    }

    /// The cold-start wait unless told otherwise.
    pub const DEFAULT_COLD_START_WAIT: Mono = Mono::from_secs(60);

    /// Sets how long a cold start waits for a majority of the members at most.
    pub fn with_cold_start_wait(mut self, wait: Mono) -> Self {
        self.cold_start_wait = wait;
        self
    }

    /// The cold-start gate: `Err(verdict)` while waiting, else how the wait ended on this
    /// step (if it did).
    fn cold_gate(
        &mut self,
        now: Mono,
        snap: &RankSnapshot,
    ) -> Result<Option<ColdStartEnd>, Verdict> {
        let Some(cold) = snap.cold.as_ref().filter(|_| !self.cold_done) else {
            return Ok(None);
        };
        let since = *self.cold_since.get_or_insert(now);
        let answered = |name: &str| {
            (name == snap.me.name && snap.me.healthy)
                || snap.peers.iter().any(|p| p.name == name && p.healthy)
        };
        let mut members = cold.members.clone();
        if !members.contains(&snap.me.name) {
            members.push(snap.me.name.clone());
        }
        members.sort();
        members.dedup();
        let missing: Vec<String> = members.iter().filter(|m| !answered(m)).cloned().collect();
        let present = members.len() - missing.len();
        let end = if present > members.len() / 2 {
            ColdStartEnd::Majority { missing }
        } else if cold.forced {
            ColdStartEnd::Forced { missing }
        } else if now >= since + self.cold_start_wait {
            ColdStartEnd::WaitEnded { missing }
        } else {
            self.eligible = false;
            return Err(Verdict {
                waiting_for: missing,
                ..Verdict::not_eligible()
            });
        };
        self.cold_done = true;
        Ok(Some(end))
    }

    /// A ranking round is due: never ranked in this candidacy, or a retry period ago.
    pub fn due(&self, now: Mono) -> bool {
        self.last_ranked
            .is_none_or(|t| now >= t + self.timing.retry_period)
    }

    /// The last verdict's eligibility.
    pub fn eligible(&self) -> bool {
        self.eligible
    }

    /// Advances the machine at local time `now`.
    pub fn step(&mut self, now: Mono, input: CandidacyInput) -> Verdict {
        let snap = match input {
            CandidacyInput::NotCandidate => {
                self.back_off_until = None;
                self.last_ranked = None;
                self.eligible = false;
                return Verdict::not_eligible();
            }
            CandidacyInput::Ranked(s) => s,
        };
        self.last_ranked = Some(now);
        let cold_start_ended = match self.cold_gate(now, &snap) {
            Ok(end) => end,
            Err(waiting) => return waiting,
        };
        let mut verdict = self.rank(now, &snap);
        verdict.cold_start_ended = cold_start_ended;
        verdict
    }

    /// The ranking proper (after any cold-start wait).
    fn rank(&mut self, now: Mono, snap: &RankSnapshot) -> Verdict {
        let ld = self.timing.lease_duration;
        if let Some(until) = self.back_off_until
            && now >= until
            && (rank::may_stop_backing_off(&snap.me, &snap.peers) || now >= until + ld * 2)
        {
            self.eligible = true;
            return Verdict {
                eligible: true,
                back_off_until: Some(until),
                ran_anyway: true,
                ..Verdict::not_eligible()
            };
        }
        let back_off =
            rank::should_back_off_from(&snap.me, &snap.peers, snap.lapsed_holder.as_deref());
        let mut started = false;
        if back_off {
            if self.back_off_until.is_none() {
                self.back_off_until = Some(now + ld);
                started = true;
            }
        } else {
            self.back_off_until = None;
        }
        self.eligible = !back_off;
        Verdict {
            eligible: !back_off,
            back_off_until: self.back_off_until,
            better: back_off
                .then(|| rank::best(&snap.peers).map(|c| c.name.clone()))
                .flatten(),
            started_back_off: started,
            ..Verdict::not_eligible()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(v: u64) -> Mono {
        Duration::from_millis(v)
    }

    fn cand(name: &str, offset: u64) -> Candidate {
        Candidate {
            name: name.into(),
            priority: 100,
            offset,
            has_data: offset > 0,
            checkpoint: None,
            healthy: true,
        }
    }

    fn snap(me: u64, peer: u64) -> CandidacyInput {
        CandidacyInput::Ranked(RankSnapshot {
            me: cand("b", me),
            peers: vec![cand("a", peer)],
            lapsed_holder: None,
            cold: None,
        })
    }

    fn timing() -> Timing {
        Timing {
            lease_duration: ms(3_000),
            renew_deadline: ms(2_000),
            retry_period: ms(250),
            fence_time: ms(200),
            request_timeout: ms(500),
        }
    }

    fn cold(me: Candidate, peers: Vec<Candidate>, forced: bool) -> CandidacyInput {
        CandidacyInput::Ranked(RankSnapshot {
            me,
            peers,
            lapsed_holder: Some("a".into()),
            cold: Some(ColdStart {
                members: vec!["a".into(), "b".into(), "c".into()],
                forced,
            }),
        })
    }

    fn down(name: &str) -> Candidate {
        Candidate {
            healthy: false,
            ..cand(name, 0)
        }
    }

    #[test]
    fn a_cold_start_waits_for_a_majority_then_ranks() {
        let mut c = Candidacy::new(timing()).with_cold_start_wait(ms(10_000));
        // Alone of three: wait, even with data and nobody better in sight.
        let v = c.step(ms(0), cold(cand("b", 5), vec![down("a"), down("c")], false));
        assert!(!v.eligible);
        assert_eq!(v.waiting_for, vec!["a".to_string(), "c".to_string()]);
        let v = c.step(
            ms(9_999),
            cold(cand("b", 5), vec![down("a"), down("c")], false),
        );
        assert!(!v.eligible, "the wait is not over");
        // A second member answers, with more data: the wait ends, and the ranking makes
        // this one back off for it.
        let v = c.step(
            ms(10_000),
            cold(cand("b", 5), vec![cand("a", 9), down("c")], false),
        );
        assert_eq!(
            v.cold_start_ended,
            Some(ColdStartEnd::Majority {
                missing: vec!["c".into()]
            })
        );
        assert!(!v.eligible && v.better.as_deref() == Some("a"));
        // The wait is over for good: the next step is the ranking alone.
        let v = c.step(
            ms(10_250),
            cold(cand("b", 5), vec![down("a"), down("c")], false),
        );
        assert!(v.eligible && v.cold_start_ended.is_none() && v.waiting_for.is_empty());
    }

    #[test]
    fn a_cold_start_ends_by_its_wait_or_by_force() {
        let mut c = Candidacy::new(timing()).with_cold_start_wait(ms(10_000));
        let alone = || cold(cand("b", 5), vec![down("a"), down("c")], false);
        assert!(!c.step(ms(0), alone()).eligible);
        let v = c.step(ms(10_000), alone());
        assert!(v.eligible);
        assert_eq!(
            v.cold_start_ended,
            Some(ColdStartEnd::WaitEnded {
                missing: vec!["a".into(), "c".into()]
            })
        );
        let mut c = Candidacy::new(timing()).with_cold_start_wait(ms(10_000));
        assert!(!c.step(ms(0), alone()).eligible);
        let v = c.step(
            ms(250),
            cold(cand("b", 5), vec![down("a"), down("c")], true),
        );
        assert!(v.eligible);
        assert!(matches!(
            v.cold_start_ended,
            Some(ColdStartEnd::Forced { .. })
        ));
        // Control: a warm candidate (no cold start) alone runs at once.
        let mut c = Candidacy::new(timing()).with_cold_start_wait(ms(10_000));
        let v = c.step(
            ms(0),
            CandidacyInput::Ranked(RankSnapshot {
                me: cand("b", 5),
                peers: vec![down("a"), down("c")],
                lapsed_holder: Some("a".into()),
                cold: None,
            }),
        );
        assert!(v.eligible && v.waiting_for.is_empty());
    }

    #[test]
    fn an_unhealthy_self_does_not_count_toward_the_majority() {
        let mut c = Candidacy::new(timing()).with_cold_start_wait(ms(10_000));
        let me = Candidate {
            healthy: false,
            ..cand("b", 5)
        };
        let v = c.step(ms(0), cold(me, vec![cand("a", 5), down("c")], false));
        assert!(!v.eligible);
        assert_eq!(v.waiting_for, vec!["b".to_string(), "c".to_string()]);
    }

    #[test]
    fn the_best_copy_runs_at_once_and_a_lesser_one_backs_off() {
        let mut c = Candidacy::new(timing());
        assert!(c.due(ms(0)));
        let v = c.step(ms(0), snap(10, 5));
        assert!(v.eligible && v.back_off_until.is_none());
        let mut c = Candidacy::new(timing());
        let v = c.step(ms(0), snap(5, 10));
        assert!(!v.eligible && v.started_back_off);
        assert_eq!(v.back_off_until, Some(ms(3_000)));
        assert_eq!(v.better.as_deref(), Some("a"));
        assert!(!c.due(ms(100)), "one look per retry period");
        assert!(c.due(ms(250)));
        let v = c.step(ms(250), snap(5, 10));
        assert!(!v.eligible && !v.started_back_off, "the deadline is kept");
        assert_eq!(v.back_off_until, Some(ms(3_000)));
    }

    #[test]
    fn the_back_off_ends_when_the_better_peer_is_no_longer_better() {
        let mut c = Candidacy::new(timing());
        c.step(ms(0), snap(5, 10));
        let v = c.step(ms(500), snap(11, 10));
        assert!(v.eligible, "ahead now: no reason to wait");
        assert!(v.back_off_until.is_none());
    }

    #[test]
    fn the_back_off_is_bounded_by_three_lease_durations() {
        let mut c = Candidacy::new(timing());
        c.step(ms(0), snap(5, 10));
        // After one lease duration, a better peer that is still a candidate with more data
        // is waited for ...
        let v = c.step(ms(3_000), snap(5, 10));
        assert!(!v.eligible, "{v:?}");
        let v = c.step(ms(8_999), snap(5, 10));
        assert!(!v.eligible, "{v:?}");
        // ... but not for longer than two more lease durations.
        let v = c.step(ms(9_000), snap(5, 10));
        assert!(v.eligible && v.ran_anyway, "{v:?}");
        // Control: without the bound this candidate would wait for ever.
        assert!(rank::should_back_off_from(
            &cand("b", 5),
            &[cand("a", 10)],
            None
        ));
    }

    #[test]
    fn leaving_the_candidacy_starts_afresh() {
        let mut c = Candidacy::new(timing());
        c.step(ms(0), snap(5, 10));
        let v = c.step(ms(100), CandidacyInput::NotCandidate);
        assert!(!v.eligible && !c.eligible());
        assert!(c.due(ms(101)));
        let v = c.step(ms(5_000), snap(5, 10));
        assert!(v.started_back_off);
        assert_eq!(v.back_off_until, Some(ms(8_000)));
    }
}
