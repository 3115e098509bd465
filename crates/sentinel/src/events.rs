//! The Sentinel events a change of the group means, as Sentinel publishes them (channel,
//! message): `+switch-master` above all, which Sentinel-aware clients subscribe to so that
//! they reconnect at once instead of waiting for an error.

use crate::view::{Addr, GroupView};

/// The events between two views of the group, in the order Sentinel sends them.
pub fn changes(name: &str, old: &GroupView, new: &GroupView) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let at = |a: &Option<Addr>| {
        a.as_ref()
            .map_or_else(|| "? 0".to_string(), |a| format!("{} {}", a.host, a.port))
    };
    let master_at = |v: &GroupView| format!("master {name} {}", at(&v.master));
    let suffix = |v: &GroupView| format!("@ {name} {}", at(&v.master));

    // The master went down (no leader, or its Redis stopped taking writes) ...
    if new.master_down && !old.master_down && old.master == new.master {
        out.push(("+sdown".into(), master_at(new)));
        out.push(("+odown".into(), format!("{} #quorum 1/1", master_at(new))));
    }
    // ... a new leader: the switch, announced with both addresses.
    if let (Some(o), Some(n)) = (&old.master, &new.master)
        && o != n
    {
        out.push((
            "+switch-master".into(),
            format!("{name} {} {} {} {}", o.host, o.port, n.host, n.port),
        ));
        out.push((
            "+failover-end".into(),
            format!("master {name} {} {}", o.host, o.port),
        ));
    }
    // ... or the same leader back (or a first one).
    if !new.master_down && old.master_down && old.master == new.master && new.master.is_some() {
        out.push(("-odown".into(), master_at(new)));
        out.push(("-sdown".into(), master_at(new)));
    }
    // Replicas: new ones, and ones going down or coming back.
    for r in &new.replicas {
        let name_part = format!("slave {} {} {}", r.addr, r.addr.host, r.addr.port);
        match old.replicas.iter().find(|o| o.addr == r.addr) {
            None => out.push(("+slave".into(), format!("{name_part} {}", suffix(new)))),
            Some(o) if o.up && !r.up => {
                out.push(("+sdown".into(), format!("{name_part} {}", suffix(new))));
            }
            Some(o) if !o.up && r.up => {
                out.push(("-sdown".into(), format!("{name_part} {}", suffix(new))));
            }
            _ => {}
        }
    }
    for s in &new.sentinels {
        if !old.sentinels.iter().any(|o| o.id == s.id) {
            out.push((
                "+sentinel".into(),
                format!(
                    "sentinel {} {} {} {}",
                    s.id,
                    s.addr.host,
                    s.addr.port,
                    suffix(new)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{PeerSentinel, ReplicaView};

    fn replica(host: &str, up: bool) -> ReplicaView {
        ReplicaView {
            addr: Addr::new(host, 6379),
            run_id: String::new(),
            up,
            link_up: up,
            offset: 0,
            priority: 100,
        }
    }

    fn view(master: &str, down: bool, replicas: &[(&str, bool)]) -> GroupView {
        GroupView {
            master: Some(Addr::new(master, 6379)),
            master_run_id: String::new(),
            master_down: down,
            epoch: 1,
            replicas: replicas.iter().map(|(h, up)| replica(h, *up)).collect(),
            sentinels: Vec::new(),
        }
    }

    #[test]
    fn a_failover_reads_as_sentinels_events() {
        let before = view("10.0.0.1", false, &[("10.0.0.2", true), ("10.0.0.3", true)]);
        let down = view("10.0.0.1", true, &[("10.0.0.2", true), ("10.0.0.3", true)]);
        let after = view(
            "10.0.0.2",
            false,
            &[("10.0.0.1", false), ("10.0.0.3", true)],
        );
        assert_eq!(
            changes("mymaster", &before, &down),
            vec![
                ("+sdown".into(), "master mymaster 10.0.0.1 6379".into()),
                (
                    "+odown".into(),
                    "master mymaster 10.0.0.1 6379 #quorum 1/1".into()
                ),
            ]
        );
        let ev = changes("mymaster", &down, &after);
        assert_eq!(
            ev[0],
            (
                "+switch-master".into(),
                "mymaster 10.0.0.1 6379 10.0.0.2 6379".into()
            )
        );
        assert_eq!(
            ev[1],
            (
                "+failover-end".into(),
                "master mymaster 10.0.0.1 6379".into()
            )
        );
        assert!(ev.contains(&(
            "+slave".into(),
            "slave 10.0.0.1:6379 10.0.0.1 6379 @ mymaster 10.0.0.2 6379".into()
        )));
        // Nothing changed, nothing said; exactly one switch per leader change.
        assert!(changes("mymaster", &after, &after).is_empty());
        assert_eq!(
            changes("mymaster", &before, &after)
                .iter()
                .filter(|(c, _)| c == "+switch-master")
                .count(),
            1
        );
        // The same leader back without a switch.
        let back = changes("mymaster", &down, &before);
        assert_eq!(back[0].0, "-odown");
        assert_eq!(back[1].0, "-sdown");
    }

    #[test]
    fn new_peers_and_the_first_leader() {
        let empty = GroupView::default();
        let mut first = view("10.0.0.1", false, &[]);
        first.sentinels.push(PeerSentinel {
            id: "ab".repeat(20),
            addr: Addr::new("10.0.0.2", 26379),
        });
        let ev = changes("m", &empty, &first);
        assert_eq!(
            ev,
            vec![(
                "+sentinel".into(),
                format!(
                    "sentinel {} 10.0.0.2 26379 @ m 10.0.0.1 6379",
                    "ab".repeat(20)
                )
            )]
        );
    }
}
