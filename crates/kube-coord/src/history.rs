//! The role-change history kept on the Lease (annotation [`crate::HISTORY_ANNOTATION`]).
//!
//! It lives on the Lease, not in an object beside it, so that each entry is written by the
//! same compare-and-set write that makes the change: a history entry exists exactly when
//! the change committed, and no extra API request or permission is needed.

use serde::{Deserialize, Serialize};

/// How many entries are kept (the oldest are dropped): a Lease annotation must stay small.
pub const KEEP: usize = 20;

/// One change of leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The epoch (`leaseTransitions`) the change started.
    pub epoch: u32,
    /// When, RFC 3339 (the writer's wall clock; for reading, never for decisions).
    pub time: String,
    /// The previous leader (empty: none known).
    pub from: String,
    /// The new leader.
    pub to: String,
    /// Why: `elected` (first leader), `expired`, `released`, `handover`, `switchover`.
    pub reason: String,
    /// How long the group had no writable leader, in milliseconds, as the writer measured it
    /// (the write pause of a hand-over; the wait of the new leader otherwise).
    pub duration_ms: u64,
}

/// The entries of a stored history, oldest first. A damaged annotation (someone edited it)
/// reads as empty rather than stopping anything: history is for people, not decisions.
pub fn parse(stored: &str) -> Vec<Entry> {
    if stored.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(stored).unwrap_or_default()
}

/// `stored` with `entry` appended, keeping the newest [`KEEP`].
pub fn append(stored: &str, entry: Entry) -> String {
    let mut entries = parse(stored);
    entries.push(entry);
    let drop = entries.len().saturating_sub(KEEP);
    entries.drain(..drop);
    serde_json::to_string(&entries).expect("history entries serialize")
}

/// `stored` with the entry for `change` appended: the change of leader a write makes, to
/// `to` at `epoch`, at wall-clock time `time`. A released lease names nobody, so its previous
/// leader is the last one this history records (and with no entry at all, nobody led before:
/// `elected`).
pub fn record(
    stored: &str,
    epoch: u32,
    to: &str,
    change: &election::elector::LeaderChange,
    time: String,
) -> String {
    use election::elector::ChangeReason;
    let last_to = parse(stored).last().map(|e| e.to.clone());
    let reason = match &change.reason {
        ChangeReason::Elected => "elected".to_string(),
        ChangeReason::AfterRelease if last_to.is_none() => "elected".to_string(),
        ChangeReason::AfterRelease => "released".to_string(),
        ChangeReason::Expired => "expired".to_string(),
        ChangeReason::Planned(why) => why.clone(),
    };
    append(
        stored,
        Entry {
            epoch,
            time,
            from: change.from.clone().or(last_to).unwrap_or_default(),
            to: to.to_string(),
            reason,
            duration_ms: change.took.as_millis() as u64,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use election::elector::{ChangeReason, LeaderChange};
    use std::time::Duration;

    #[test]
    fn a_change_is_recorded_with_who_led_before() {
        let change = |from: Option<&str>, reason| LeaderChange {
            from: from.map(str::to_string),
            reason,
            took: Duration::from_millis(1500),
        };
        let t = || "2026-12-02T00:00:00Z".to_string();
        let first = record("", 0, "a", &change(None, ChangeReason::AfterRelease), t());
        assert_eq!(
            parse(&first),
            vec![Entry {
                epoch: 0,
                time: t(),
                from: String::new(),
                to: "a".into(),
                reason: "elected".into(),
                duration_ms: 1500,
            }],
            "a released lease nobody held before"
        );
        let released = record(
            &first,
            1,
            "b",
            &change(None, ChangeReason::AfterRelease),
            t(),
        );
        let last = parse(&released).pop().unwrap();
        assert_eq!(
            (last.from.as_str(), last.reason.as_str()),
            ("a", "released")
        );
        let expired = record(
            &released,
            2,
            "c",
            &change(Some("b"), ChangeReason::Expired),
            t(),
        );
        let last = parse(&expired).pop().unwrap();
        assert_eq!((last.from.as_str(), last.reason.as_str()), ("b", "expired"));
        let planned = change(Some("c"), ChangeReason::Planned("switchover".into()));
        let last = parse(&record(&expired, 3, "a", &planned, t()))
            .pop()
            .unwrap();
        assert_eq!(
            (last.from.as_str(), last.reason.as_str()),
            ("c", "switchover")
        );
    }

    fn entry(epoch: u32) -> Entry {
        Entry {
            epoch,
            time: "2026-11-24T00:00:00Z".into(),
            from: format!("p{epoch}"),
            to: format!("p{}", epoch + 1),
            reason: "switchover".into(),
            duration_ms: 20,
        }
    }

    #[test]
    fn appends_and_keeps_the_newest() {
        let mut stored = String::new();
        for e in 0..(KEEP as u32 + 5) {
            stored = append(&stored, entry(e));
        }
        let got = parse(&stored);
        assert_eq!(got.len(), KEEP);
        assert_eq!(got[0].epoch, 5);
        assert_eq!(got.last().unwrap(), &entry(KEEP as u32 + 4));
    }

    #[test]
    fn damaged_history_reads_empty_and_is_replaced() {
        assert!(parse("{not json").is_empty());
        assert_eq!(parse(&append("{not json", entry(1))), vec![entry(1)]);
    }
}
