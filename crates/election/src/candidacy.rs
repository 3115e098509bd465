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
}

impl Verdict {
    fn not_eligible() -> Self {
        Verdict {
            eligible: false,
            back_off_until: None,
            better: None,
            started_back_off: false,
            ran_anyway: false,
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
}

impl Candidacy {
    /// A sidecar that has not ranked itself yet (not eligible).
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            back_off_until: None,
            last_ranked: None,
            eligible: false,
        }
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
        let ld = self.timing.lease_duration;
        if let Some(until) = self.back_off_until
            && now >= until
            && (rank::may_stop_backing_off(&snap.me, &snap.peers) || now >= until + ld * 2)
        {
            self.eligible = true;
            return Verdict {
                eligible: true,
                back_off_until: Some(until),
                better: None,
                started_back_off: false,
                ran_anyway: true,
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
            ran_anyway: false,
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
            healthy: true,
        }
    }

    fn snap(me: u64, peer: u64) -> CandidacyInput {
        CandidacyInput::Ranked(RankSnapshot {
            me: cand("b", me),
            peers: vec![cand("a", peer)],
            lapsed_holder: None,
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
