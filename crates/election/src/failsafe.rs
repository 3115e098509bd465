//! Failsafe (DESIGN section 3a): the vocabulary of the protocol that keeps a leader writable
//! through a control-plane outage, and the pure rule a joining pod follows.
//!
//! The state machine itself lives in [`crate::elector`]: the leader's rounds and validity, and
//! a member's promise, are part of the same decisions as the lease. This module holds what
//! the runtime and the elector exchange about it, and [`joiner_may_run`], which needs no
//! state.

use std::collections::BTreeMap;

/// A member of the group as the leader last listed it while the API answered, and recorded on
/// the Lease: the pods a failsafe round must hear from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Member {
    /// Pod name.
    pub name: String,
    /// Where its sidecar's HTTP API listens (`host:port`).
    pub http: String,
}

/// What a failsafe message asks of a member's sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AskKind {
    /// A leader in failsafe asks the member to confirm it (and so to promise not to campaign
    /// for one lease duration).
    Round,
    /// A leader in failsafe that fenced and gave up tells the member its promise for that
    /// lease is void.
    Release,
    /// A joining pod asks whether the member holds a promise or leads in failsafe.
    Probe,
}

impl AskKind {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AskKind::Round => "round",
            AskKind::Release => "release",
            AskKind::Probe => "probe",
        }
    }

    /// The kind a wire name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round" => Some(AskKind::Round),
            "release" => Some(AskKind::Release),
            "probe" => Some(AskKind::Probe),
            _ => None,
        }
    }
}

/// A member's answer to a failsafe message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Reply {
    /// For a round: the member confirmed (and promised). For a release: it dropped the
    /// promise. For a probe: always `true` (an answer was given).
    pub confirmed: bool,
    /// Why it refused, in words (empty when it confirmed).
    pub reason: String,
    /// The member holds a running promise (it will not campaign before it ends).
    pub promise: bool,
    /// The member leads (in failsafe or not): nobody may take its lease.
    pub leads: bool,
}

impl Reply {
    /// A refusal.
    pub fn refuse(reason: impl Into<String>) -> Self {
        Self {
            confirmed: false,
            reason: reason.into(),
            ..Self::default()
        }
    }
}

/// How a failsafe round ended, as the runtime collected it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Every member confirmed with a valid signature.
    Confirmed,
    /// A member refused (validly signed): leadership ends at once.
    Refused {
        /// Who.
        member: String,
        /// Why, as it said.
        reason: String,
    },
    /// Some members did not answer (or not validly): the round does not count.
    Silent {
        /// Who did not answer.
        members: Vec<String>,
    },
}

/// A round's outcome from each asked member's checked answer (`None`: no valid answer): a
/// refusal from any member, else confirmed by all, else silent (the members without an
/// answer). The one rule, shared by the sidecar and the safety simulation.
pub fn round_outcome(answers: Vec<(String, Option<Reply>)>) -> RoundOutcome {
    if let Some((member, r)) = answers
        .iter()
        .find(|(_, r)| r.as_ref().is_some_and(|r| !r.confirmed))
    {
        return RoundOutcome::Refused {
            member: member.clone(),
            reason: r.as_ref().map(|r| r.reason.clone()).unwrap_or_default(),
        };
    }
    let silent: Vec<String> = answers
        .into_iter()
        .filter(|(_, r)| r.is_none())
        .map(|(m, _)| m)
        .collect();
    if silent.is_empty() {
        RoundOutcome::Confirmed
    } else {
        RoundOutcome::Silent { members: silent }
    }
}

/// What a joining pod could find out about one recorded member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvidence {
    /// The API lists no running pod of that name: it holds no promise and does not lead.
    Gone,
    /// Its sidecar answered a probe (validly signed).
    Answered {
        /// It holds a running promise.
        promise: bool,
        /// It leads.
        leads: bool,
    },
    /// Nothing could be learnt (no answer, a bad signature): it may hold a promise.
    Unknown,
}

/// May a pod that is not in the membership recorded on the Lease (`recorded`) take the lease?
/// Only once every recorded member other than itself has been shown to hold no running
/// promise and not to lead (DESIGN 3a, "Joining pods"): a joining pod is bound by no promise,
/// so this is what keeps it from taking over from a leader serving in failsafe. A pod that is
/// a recorded member (or a Lease that records no membership) needs no such proof.
pub fn joiner_may_run(
    me: &str,
    recorded: &[Member],
    evidence: &BTreeMap<String, MemberEvidence>,
) -> bool {
    if recorded.is_empty() || recorded.iter().any(|m| m.name == me) {
        return true;
    }
    recorded.iter().all(|m| match evidence.get(&m.name) {
        Some(MemberEvidence::Gone) => true,
        Some(MemberEvidence::Answered { promise, leads }) => !promise && !leads,
        Some(MemberEvidence::Unknown) | None => false,
    })
}

/// Whether `me` must prove [`joiner_may_run`] before campaigning: the Lease records a
/// membership and `me` is not in it.
pub fn is_joining(me: &str, recorded: &[Member]) -> bool {
    !recorded.is_empty() && !recorded.iter().any(|m| m.name == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .map(|n| Member {
                name: (*n).into(),
                http: format!("{n}:9121"),
            })
            .collect()
    }

    #[test]
    fn a_recorded_member_or_an_unrecorded_group_needs_no_proof() {
        let none = BTreeMap::new();
        assert!(joiner_may_run("a", &members(&["a", "b"]), &none));
        assert!(joiner_may_run("z", &[], &none));
        assert!(!is_joining("a", &members(&["a", "b"])));
        assert!(is_joining("z", &members(&["a", "b"])));
    }

    #[test]
    fn a_joiner_runs_only_when_every_member_is_shown_free() {
        let rec = members(&["a", "b"]);
        let free = MemberEvidence::Answered {
            promise: false,
            leads: false,
        };
        let mut ev = BTreeMap::from([("a".to_string(), MemberEvidence::Gone)]);
        assert!(!joiner_may_run("z", &rec, &ev), "b unknown");
        ev.insert("b".into(), MemberEvidence::Unknown);
        assert!(!joiner_may_run("z", &rec, &ev), "b did not answer");
        ev.insert(
            "b".into(),
            MemberEvidence::Answered {
                promise: true,
                leads: false,
            },
        );
        assert!(!joiner_may_run("z", &rec, &ev), "b holds a promise");
        ev.insert(
            "b".into(),
            MemberEvidence::Answered {
                promise: false,
                leads: true,
            },
        );
        assert!(!joiner_may_run("z", &rec, &ev), "b leads in failsafe");
        ev.insert("b".into(), free);
        assert!(joiner_may_run("z", &rec, &ev));
    }

    #[test]
    fn answers_sort_into_outcomes() {
        let yes = Some(Reply {
            confirmed: true,
            ..Reply::default()
        });
        let no = Some(Reply::refuse("this pod has seen a newer lease"));
        assert_eq!(
            round_outcome(vec![("a".into(), yes.clone()), ("b".into(), yes.clone())]),
            RoundOutcome::Confirmed
        );
        assert_eq!(round_outcome(vec![]), RoundOutcome::Confirmed);
        assert_eq!(
            round_outcome(vec![("a".into(), yes.clone()), ("b".into(), None)]),
            RoundOutcome::Silent {
                members: vec!["b".into()]
            }
        );
        assert!(matches!(
            round_outcome(vec![("a".into(), None), ("b".into(), no)]),
            RoundOutcome::Refused { member, .. } if member == "b"
        ));
    }

    #[test]
    fn ask_kinds_round_trip() {
        for k in [AskKind::Round, AskKind::Release, AskKind::Probe] {
            assert_eq!(AskKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AskKind::parse("confirm"), None);
    }
}
