//! The group as the Sentinel-compatible endpoint reports it, built from what the sidecar
//! already knows (the leader from the Lease, the pods from the API, their Redis from its
//! probes): pure, so the mapping is tested without a socket.

use super::config::SentinelAddresses;
use redis_node::Probe;
use redis_node::info::Role as RedisRole;
use sentinel::view::{Addr, GroupView, PeerSentinel, ReplicaView};

/// One member as the sidecar last saw it.
#[derive(Clone, Debug, Default)]
pub struct MemberFacts {
    /// Pod name.
    pub name: String,
    /// Its endpoint's ID ([`sentinel_id`]).
    pub id: String,
    /// `status.podIP` (empty: unknown).
    pub ip: String,
    /// Its announce host (a DNS name with pod DNS).
    pub host: String,
    /// Its leadership priority (reported as `slave-priority`).
    pub priority: u32,
    /// A probe of its Redis (`None`: it did not answer).
    pub probe: Option<Probe>,
}

/// What the view is built from.
pub struct ViewInput<'a> {
    /// The leader's pod name (`None`: no valid lease).
    pub leader: Option<&'a str>,
    /// The epoch.
    pub epoch: u32,
    /// Every member, this pod included.
    pub members: &'a [MemberFacts],
    /// This pod's name.
    pub me: &'a str,
    /// Which addresses clients are given.
    pub addresses: SentinelAddresses,
    /// The Redis port.
    pub redis_port: u16,
    /// The endpoints' port.
    pub sentinel_port: u16,
    /// The master the last view named (kept while there is no leader).
    pub previous_master: Option<Addr>,
}

fn host_of(m: &MemberFacts, mode: SentinelAddresses) -> String {
    match mode {
        SentinelAddresses::Ip if !m.ip.is_empty() => m.ip.clone(),
        _ => m.host.clone(),
    }
}

/// The view: the leader as master (the last one, flagged down, while there is none), the
/// other members as replicas, their endpoints as the other Sentinels.
pub fn group_view(i: &ViewInput<'_>) -> GroupView {
    let leader = i
        .leader
        .and_then(|l| i.members.iter().find(|m| m.name == l));
    let master = match leader {
        Some(m) => Some(Addr::new(host_of(m, i.addresses), i.redis_port)),
        None => i.previous_master.clone(),
    };
    let master_run_id = leader
        .and_then(|m| m.probe.as_ref())
        .map(|p| p.info.run_id.clone())
        .unwrap_or_default();
    let replicas = i
        .members
        .iter()
        .filter(|m| Some(m.name.as_str()) != i.leader)
        .map(|m| {
            let (link_up, offset) = match m.probe.as_ref().map(|p| (&p.info.role, p.info.offset)) {
                Some((RedisRole::Replica { link_up, .. }, offset)) => (*link_up, offset),
                Some((RedisRole::Master, offset)) => (false, offset),
                None => (false, 0),
            };
            ReplicaView {
                addr: Addr::new(host_of(m, i.addresses), i.redis_port),
                run_id: m
                    .probe
                    .as_ref()
                    .map(|p| p.info.run_id.clone())
                    .unwrap_or_default(),
                up: m.probe.is_some(),
                link_up,
                offset,
                priority: m.priority,
            }
        })
        .collect();
    let sentinels = i
        .members
        .iter()
        .filter(|m| m.name != i.me)
        .map(|m| PeerSentinel {
            id: m.id.clone(),
            addr: Addr::new(host_of(m, i.addresses), i.sentinel_port),
        })
        .collect();
    GroupView {
        master,
        master_run_id,
        master_down: leader.is_none(),
        epoch: u64::from(i.epoch),
        replicas,
        sentinels,
    }
}

/// A member's endpoint ID: 40 hex digits (as Sentinel's run IDs), the same for a pod across
/// restarts and computable by its peers (a hash of the namespace, the Lease and the pod).
pub fn sentinel_id(namespace: &str, lease: &str, pod: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{namespace}/{lease}/{pod}").as_bytes(),
    );
    d.as_ref()
        .iter()
        .take(20)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, ip: &str) -> MemberFacts {
        MemberFacts {
            name: name.into(),
            id: sentinel_id("ns", "redis", name),
            ip: ip.into(),
            host: format!("{name}.redis-headless.ns.svc.cluster.local"),
            priority: 100,
            probe: None,
        }
    }

    fn input<'a>(
        leader: Option<&'a str>,
        members: &'a [MemberFacts],
        addresses: SentinelAddresses,
        previous: Option<Addr>,
    ) -> ViewInput<'a> {
        ViewInput {
            leader,
            epoch: 3,
            members,
            me: "redis-1",
            addresses,
            redis_port: 6379,
            sentinel_port: 26379,
            previous_master: previous,
        }
    }

    #[test]
    fn the_leader_is_the_master_and_the_others_replicas_and_sentinels() {
        let members = [
            member("redis-0", "10.0.0.1"),
            member("redis-1", "10.0.0.2"),
            member("redis-2", ""),
        ];
        let v = group_view(&input(
            Some("redis-0"),
            &members,
            SentinelAddresses::Ip,
            None,
        ));
        assert_eq!(v.master, Some(Addr::new("10.0.0.1", 6379)));
        assert!(!v.master_down);
        assert_eq!(v.epoch, 3);
        let hosts: Vec<_> = v.replicas.iter().map(|r| r.addr.host.as_str()).collect();
        assert_eq!(
            hosts,
            ["10.0.0.2", "redis-2.redis-headless.ns.svc.cluster.local"],
            "the IP where known, else the announce host"
        );
        assert!(v.replicas.iter().all(|r| !r.up), "no probe: down");
        let peers: Vec<_> = v.sentinels.iter().map(|s| s.addr.to_string()).collect();
        assert_eq!(
            peers,
            [
                "10.0.0.1:26379",
                "redis-2.redis-headless.ns.svc.cluster.local:26379"
            ]
        );
        assert_eq!(v.sentinels[0].id, sentinel_id("ns", "redis", "redis-0"));
        let v = group_view(&input(
            Some("redis-0"),
            &members,
            SentinelAddresses::Hostname,
            None,
        ));
        assert_eq!(
            v.master,
            Some(Addr::new(
                "redis-0.redis-headless.ns.svc.cluster.local",
                6379
            ))
        );
    }

    #[test]
    fn without_a_leader_the_last_master_stays_flagged_down() {
        let members = [member("redis-0", "10.0.0.1"), member("redis-1", "10.0.0.2")];
        let last = Some(Addr::new("10.0.0.1", 6379));
        let v = group_view(&input(None, &members, SentinelAddresses::Ip, last.clone()));
        assert_eq!(v.master, last);
        assert!(v.master_down);
        assert_eq!(v.replicas.len(), 2);
    }

    #[test]
    fn ids_are_stable_hex_and_differ_per_pod() {
        let a = sentinel_id("ns", "redis", "redis-0");
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, sentinel_id("ns", "redis", "redis-0"));
        assert_ne!(a, sentinel_id("ns", "redis", "redis-1"));
    }
}
