//! Candidate ranking (invariant 3): among eligible candidates the most complete copy leads.
//!
//! Order for a failover ([`compare`]): eligible first (priority 0 never leads); a Redis holding
//! data before an empty one (a Redis that restarted empty never wins over a peer that holds
//! data); then the later [`Checkpoint`] (the copy further along the group's history: after a
//! restart from disk, or between copies of different leaders, where offsets do not compare);
//! then the larger replication offset; then the lower non-zero priority; then the smaller
//! name, so that the order is total and every sidecar computes the same winner.
//!
//! Data comes before priority, as in Patroni (a member never promotes while another healthy
//! one has more WAL), and unlike Sentinel (which sorts by `replica-priority` first): with
//! priority first, a preferred replica that lagged would win over one that held a write a
//! client had confirmed with `WAIT 1`, and that write would be lost. Data first makes the
//! guarantee hold: the winner holds every byte any reachable, eligible replica acknowledged.
//! Priority still decides among equally complete copies, which is the usual case after a
//! master dies (its replicas received the same stream), and it decides a planned hand-over
//! outright ([`compare_planned`]), where the target is caught up before the lease moves.

use std::cmp::Ordering;

use crate::checkpoint::Checkpoint;

/// What a sidecar knows of one candidate's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Pod name (the election identity).
    pub name: String,
    /// `--priority`: 0 = never leads; lower non-zero is preferred.
    pub priority: u32,
    /// Replication offset of its Redis (`master_repl_offset` or `slave_repl_offset`).
    pub offset: u64,
    /// Whether its Redis holds any data (keys, or a non-zero offset).
    pub has_data: bool,
    /// The last checkpoint its data holds, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Whether its Redis is reachable and healthy right now.
    pub healthy: bool,
}

impl Candidate {
    /// May this candidate lead at all?
    pub fn eligible(&self) -> bool {
        self.priority > 0 && self.healthy
    }
}

/// `Greater` means `a` holds more of the group's data than `b`: any data over none, then the
/// later checkpoint, then the larger offset.
pub fn data_order(a: &Candidate, b: &Candidate) -> Ordering {
    a.has_data
        .cmp(&b.has_data)
        .then(
            a.checkpoint
                .as_ref()
                .map(Checkpoint::position)
                .cmp(&b.checkpoint.as_ref().map(Checkpoint::position)),
        )
        .then(a.offset.cmp(&b.offset))
}

/// The candidate wrote the last checkpoint its data holds: it led when that data was
/// written, so among equal copies its own is the most complete (after a whole-group
/// restart from an AOF, where every offset reads 0, nothing else tells them apart).
fn wrote_last(c: &Candidate) -> bool {
    c.checkpoint.as_ref().is_some_and(|k| k.writer == c.name)
}

/// `Less` means `a` ranks above (is better than) `b` for a failover: data, then the writer of
/// the last checkpoint among equal data, then priority.
pub fn compare(a: &Candidate, b: &Candidate) -> Ordering {
    b.eligible()
        .cmp(&a.eligible())
        .then(data_order(b, a))
        .then(wrote_last(b).cmp(&wrote_last(a)))
        .then(a.priority.cmp(&b.priority))
        .then(a.name.cmp(&b.name))
}

/// The order among replicas that a planned hand-over may choose from: priority, then offset,
/// then name. Every such replica is caught up (writes are then held until the chosen one has
/// every byte), so a few bytes of lag in the moment must not outweigh the operator's
/// preference.
pub fn compare_planned(a: &Candidate, b: &Candidate) -> Ordering {
    b.eligible()
        .cmp(&a.eligible())
        .then(b.has_data.cmp(&a.has_data))
        .then(a.priority.cmp(&b.priority))
        .then(b.checkpoint.cmp(&a.checkpoint))
        .then(b.offset.cmp(&a.offset))
        .then(a.name.cmp(&b.name))
}

/// The best eligible candidate, if any.
pub fn best(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| c.eligible())
        .min_by(|a, b| compare(a, b))
}

/// Should `me` back off because a reachable eligible peer ranks above it?
pub fn should_back_off(me: &Candidate, peers: &[Candidate]) -> bool {
    should_back_off_from(me, peers, None)
}

/// As [`should_back_off`], when the lease lapsed in `lapsed_holder`'s hands (it expired
/// unreleased). That holder could not renew: it is cut off from the API, or its sidecar is
/// stopped or gone. Waiting for it to take the lease back is worth it only for data this
/// candidate lacks, so it is deferred to only while it holds more data ([`data_order`]). A tie,
/// the usual case (it fenced its Redis at its renew deadline and its replicas have everything
/// it took), no longer costs the group a lease duration without a leader.
pub fn should_back_off_from(
    me: &Candidate,
    peers: &[Candidate],
    lapsed_holder: Option<&str>,
) -> bool {
    peers.iter().any(|p| {
        p.name != me.name
            && p.eligible()
            && compare(p, me) == Ordering::Less
            && (Some(p.name.as_str()) != lapsed_holder || data_order(p, me) == Ordering::Greater)
    })
}

/// May a candidate that backed off for its bounded time run anyway? Only if no eligible peer
/// holds more data: one with data when it has none, a later checkpoint, or a greater
/// replication offset. (A peer
/// better only by priority or name is not worth waiting longer for.) Without this, a leader pod
/// killed whole came back within the lease with a Redis that was empty or had reloaded an old
/// RDB file, backed off for one lease duration, and then raced its peers, for whom its
/// unrenewed lease had only just expired; the fault-injection suite saw it win and every
/// replica copy its stale data set. The sidecar still runs after a longer bound, so that a
/// group whose most complete peer can never lead is not leaderless forever.
pub fn may_stop_backing_off(me: &Candidate, peers: &[Candidate]) -> bool {
    !peers.iter().any(|p| {
        p.name != me.name && p.eligible() && p.has_data && data_order(p, me) == Ordering::Greater
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(name: &str, priority: u32, offset: u64, has_data: bool) -> Candidate {
        Candidate {
            name: name.into(),
            priority,
            offset,
            has_data,
            checkpoint: None,
            healthy: true,
        }
    }

    fn at(mut c: Candidate, epoch: u64, seq: u64) -> Candidate {
        c.checkpoint = Some(Checkpoint {
            epoch,
            seq,
            writer: "w".into(),
        });
        c
    }

    #[test]
    fn among_equal_copies_the_writer_of_the_last_checkpoint_ranks_first() {
        let mut old_leader = at(c("b", 100, 0, true), 5, 300);
        old_leader.checkpoint.as_mut().unwrap().writer = "b".into();
        let mut replica = at(c("a", 1, 0, true), 5, 300);
        replica.checkpoint.as_mut().unwrap().writer = "b".into();
        assert_eq!(
            best(&[old_leader.clone(), replica.clone()]).unwrap().name,
            "b",
            "before priority and name"
        );
        assert!(should_back_off(&replica, std::slice::from_ref(&old_leader)));
        // It is not more data: a lapsed holder is not waited for on that alone (a leader
        // cut off from the API fenced, and its replicas hold what it took).
        assert!(!should_back_off_from(
            &replica,
            std::slice::from_ref(&old_leader),
            Some("b")
        ));
        assert!(may_stop_backing_off(&replica, &[old_leader]));
    }

    #[test]
    fn the_later_checkpoint_wins_over_a_larger_offset_of_another_history() {
        // After a restart from an AOF every offset is 0, or offsets belong to different
        // replication histories: the checkpoint the data holds decides.
        let stale = at(c("a", 100, 900_000, true), 4, 50);
        let fresh = at(c("b", 100, 10, true), 5, 1);
        assert_eq!(best(&[stale.clone(), fresh.clone()]).unwrap().name, "b");
        assert!(should_back_off(&stale, std::slice::from_ref(&fresh)));
        assert!(!may_stop_backing_off(&stale, std::slice::from_ref(&fresh)));
        let behind = at(c("a", 100, 0, true), 5, 100);
        let ahead = at(c("b", 200, 0, true), 5, 300);
        assert_eq!(
            best(&[behind.clone(), ahead.clone()]).unwrap().name,
            "b",
            "within an epoch the later checkpoint, before priority"
        );
        // A lapsed holder is waited for when its checkpoint is later than ours.
        assert!(should_back_off_from(
            &behind,
            std::slice::from_ref(&ahead),
            Some("b")
        ));
        assert!(!should_back_off_from(&ahead, &[behind], Some("a")));
        // No checkpoint (data from before checkpoints, or a cache) ranks below one.
        let none = c("c", 1, 10, true);
        assert_eq!(best(&[none, fresh]).unwrap().name, "b");
    }

    #[test]
    fn an_empty_candidate_never_stops_backing_off_while_a_peer_holds_data() {
        let empty = c("a", 100, 0, false);
        let full = c("b", 100, 500, true);
        assert!(!may_stop_backing_off(&empty, std::slice::from_ref(&full)));
        let mut gone = full.clone();
        gone.healthy = false;
        assert!(
            may_stop_backing_off(&empty, &[gone]),
            "no eligible peer holds data"
        );
        assert!(
            !may_stop_backing_off(&c("a", 100, 10, true), std::slice::from_ref(&full)),
            "stale"
        );
        assert!(
            may_stop_backing_off(&c("a", 100, 500, true), &[full]),
            "as complete"
        );
    }

    #[test]
    fn a_lapsed_holder_is_waited_for_only_for_data_we_lack() {
        let me = c("b", 100, 50, true);
        let holder = c("a", 100, 50, true);
        assert!(
            should_back_off(&me, std::slice::from_ref(&holder)),
            "name breaks the tie"
        );
        assert!(!should_back_off_from(
            &me,
            std::slice::from_ref(&holder),
            Some("a")
        ));
        let ahead = c("a", 100, 60, true);
        assert!(should_back_off_from(
            &me,
            std::slice::from_ref(&ahead),
            Some("a")
        ));
        // Another better peer is still waited for.
        let other = c("a", 100, 70, true);
        assert!(should_back_off_from(&me, &[holder, other], Some("z")));
    }

    #[test]
    fn order() {
        let a = c("a", 100, 10, true);
        let b = c("b", 100, 20, true);
        assert_eq!(
            best(&[a.clone(), b.clone()]).unwrap().name,
            "b",
            "offset decides"
        );
        let a1 = c("a", 50, 10, true);
        assert_eq!(
            best(&[a1.clone(), b.clone()]).unwrap().name,
            "b",
            "more data wins over a preferred priority"
        );
        let a2 = c("a", 50, 20, true);
        assert_eq!(
            best(&[a2, b.clone()]).unwrap().name,
            "a",
            "priority decides among equally complete copies"
        );
        assert_eq!(
            compare_planned(&a1, &b),
            Ordering::Less,
            "a planned hand-over prefers priority"
        );
        let empty = c("e", 1, 0, false);
        assert_eq!(
            best(&[empty.clone(), b.clone()]).unwrap().name,
            "b",
            "data beats an empty Redis"
        );
        let never = c("n", 0, 99, true);
        assert_eq!(best(std::slice::from_ref(&never)), None);
        assert!(!should_back_off(&b, &[never, empty]));
        let tie = c("a", 100, 20, true);
        assert_eq!(
            best(&[b.clone(), tie]).unwrap().name,
            "a",
            "name breaks ties"
        );
    }

    fn arb() -> impl Strategy<Value = Candidate> {
        (
            "[a-e]",
            0u32..3,
            0u64..4,
            any::<bool>(),
            proptest::option::of((0u64..3, 0u64..3)),
            any::<bool>(),
        )
            .prop_map(|(name, priority, offset, has_data, checkpoint, healthy)| {
                Candidate {
                    name,
                    priority,
                    offset,
                    has_data,
                    checkpoint: checkpoint.map(|(epoch, seq)| Checkpoint {
                        epoch,
                        seq,
                        writer: ["a", "b"][(seq % 2) as usize].into(),
                    }),
                    healthy,
                }
            })
    }

    proptest! {
        /// Everyone computing over the same view agrees, and exactly the best backs off from
        /// nobody: at most one eligible candidate does not back off.
        #[test]
        fn one_winner(mut cs in proptest::collection::vec(arb(), 1..6)) {
            cs.sort_by(|a, b| a.name.cmp(&b.name));
            cs.dedup_by(|a, b| a.name == b.name);
            let not_backing_off: Vec<&Candidate> =
                cs.iter().filter(|c| c.eligible() && !should_back_off(c, &cs)).collect();
            prop_assert!(not_backing_off.len() <= 1);
            if let Some(b) = best(&cs) {
                prop_assert_eq!(not_backing_off, vec![b]);
                for other in cs.iter().filter(|o| o.eligible() && o.has_data) {
                    prop_assert!(b.has_data || !other.has_data);
                }
            }
        }

        /// The winner holds every offset any eligible candidate with data holds, whatever the
        /// priorities: a write that one of them acknowledged (`WAIT 1`) is on the winner.
        /// (Offsets are compared among equal checkpoints; a later checkpoint is more data.)
        #[test]
        fn the_winner_holds_every_acknowledged_offset(
            cs in proptest::collection::vec(arb(), 1..6)
        ) {
            if let Some(b) = best(&cs) {
                for other in cs.iter().filter(|o| o.eligible() && o.has_data) {
                    prop_assert!(
                        data_order(b, other) != Ordering::Less,
                        "{b:?} lacks what {other:?} holds"
                    );
                    let pos = |c: &Candidate| c.checkpoint.as_ref().map(Checkpoint::position);
                    prop_assert!(
                        pos(b) > pos(other) || b.offset >= other.offset,
                        "{b:?} lacks what {other:?} holds"
                    );
                }
            }
        }
    }
}
