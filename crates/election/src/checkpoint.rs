//! Checkpoints: where a Redis' data stands in the group's history, written into the data.
//!
//! A leader's sidecar writes one key (`redis-k8s-election:checkpoint`, written and read by
//! the `redis-node` crate) every checkpoint interval: its epoch and a
//! number that only grows within the epoch. The key travels in the replication stream like
//! any write and is persisted with the data (AOF or RDB), so the checkpoint a Redis holds
//! after a restart is exactly the last one its *data* holds, whatever the fsync policy lost.
//! That is what a cold start needs to find the freshest copy.
//!
//! Redis' own replication ID and offset cannot do this alone: Redis 7 restores them after a
//! restart only from an RDB file, never from an AOF (measured with 7.0.15: after a restart
//! in AOF mode `master_replid` is new and `master_repl_offset` is 0), and an offset compares
//! only between copies of one replication history.
//!
//! Order: a later epoch is fresher (its leader started from the best copy it could reach,
//! and everything written since exists only in its history); within an epoch the greater
//! number is fresher, because the stream is ordered: a copy holding checkpoint n holds every
//! write made before it.

use std::cmp::Ordering;

/// A checkpoint, as written by the leader of `epoch` (stored as `<epoch>:<seq>:<writer>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The writing leader's epoch (`leaseTransitions`).
    pub epoch: u64,
    /// Grows with every write within the epoch (the leader's wall-clock milliseconds, or
    /// the previous value plus one when the clock has not moved on).
    pub seq: u64,
    /// The pod that wrote it: the leader of that epoch. Among copies holding the same last
    /// checkpoint its own copy is the most complete (its replicas only ever received what
    /// it had), which decides a cold start between copies that are otherwise equal.
    pub writer: String,
}

impl Checkpoint {
    /// Parses a stored value; `None` for anything malformed (a client may have written the
    /// key: a bad value counts as no checkpoint, never as an error).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.splitn(3, ':');
        let epoch = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let writer = parts.next().unwrap_or_default().to_string();
        Some(Self { epoch, seq, writer })
    }

    /// The value to store.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.epoch, self.seq, self.writer)
    }

    /// The next checkpoint `writer`, leader of `epoch`, writes after `prev` (what its Redis
    /// holds, if anything) at wall-clock `now_ms`: strictly greater than `prev` within the
    /// epoch.
    pub fn next(epoch: u64, writer: &str, prev: Option<&Checkpoint>, now_ms: u64) -> Self {
        let floor = prev
            .filter(|p| p.epoch == epoch)
            .map_or(0, |p| p.seq.saturating_add(1));
        Self {
            epoch,
            seq: now_ms.max(floor),
            writer: writer.to_string(),
        }
    }

    /// The position in the history, without the writer: what "more data" compares.
    pub fn position(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }
}

impl PartialOrd for Checkpoint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Checkpoint {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch.cmp(&other.epoch).then(self.seq.cmp(&other.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_malformed_values() {
        let c = Checkpoint {
            epoch: 7,
            seq: 42,
            writer: "redis-0".into(),
        };
        assert_eq!(Checkpoint::parse(&c.encode()), Some(c));
        for bad in ["", "7", "7:", "x:1:a", "7:y:a", "-1:2:a", "1:2"] {
            let parsed = Checkpoint::parse(bad);
            assert!(bad == "1:2" || parsed.is_none(), "{bad:?} -> {parsed:?}");
        }
        assert_eq!(
            Checkpoint::parse("1:2"),
            Some(Checkpoint {
                epoch: 1,
                seq: 2,
                writer: String::new()
            }),
            "a value without a writer still places the data"
        );
    }

    #[test]
    fn a_later_epoch_is_fresher_whatever_the_numbers() {
        let old = Checkpoint {
            epoch: 4,
            seq: 9_999_999,
            writer: "b".into(),
        };
        let new = Checkpoint {
            epoch: 5,
            seq: 1,
            writer: "a".into(),
        };
        assert!(new > old);
    }

    proptest! {
        /// Within an epoch every next checkpoint is greater, whatever the clock does
        /// (a clock stepped back does not make a later checkpoint look older).
        #[test]
        fn next_grows_within_an_epoch(epoch in 0u64..5, prev_seq in any::<u64>(), now in any::<u64>()) {
            let prev = Checkpoint { epoch, seq: prev_seq, writer: "a".into() };
            let next = Checkpoint::next(epoch, "a", Some(&prev), now);
            prop_assert!(prev_seq == u64::MAX || next > prev);
            let fresh = Checkpoint::next(epoch + 1, "b", Some(&prev), now);
            prop_assert!(fresh > prev);
        }
    }
}
