//! The group as `status` shows it: a pure assessment of what the Lease, the pods and the
//! sidecars report, and its rendering as a table (like `patronictl list`) or JSON.

use crate::wire::{RedisReport, RedisRole, SidecarRole, StatusReport};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The Lease as the CLI shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// Lease name.
    pub name: String,
    /// Holder (empty: none).
    pub holder: String,
    /// The holder's Redis address.
    pub holder_address: String,
    /// Epoch.
    pub epoch: u32,
    /// Pause marker (empty: not paused).
    pub paused: String,
}

/// One pod of the group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Member {
    /// Pod name.
    pub pod: String,
    /// Its Redis announce address.
    pub address: String,
    /// Its role label's value.
    pub role_label: Option<String>,
    /// The sidecar's `/status`; `None` when it did not answer.
    pub status: Option<StatusReport>,
    /// Why the sidecar did not answer.
    pub unreachable: Option<String>,
}

impl Member {
    fn redis(&self) -> Option<&RedisReport> {
        self.status.as_ref()?.redis.as_ref()
    }

    fn redis_role(&self) -> Option<RedisRole> {
        self.redis().map(|r| r.role)
    }

    fn role(&self) -> Option<SidecarRole> {
        self.status.as_ref().map(|s| s.role)
    }

    /// Writable: its Redis is a master and not fenced.
    fn writable(&self) -> bool {
        self.redis()
            .is_some_and(|r| r.role == RedisRole::Master && !r.fenced)
    }
}

/// Every disagreement between the Lease, the pods, the Redis roles and the routing, in
/// words. Empty when the group is as the Lease says.
pub fn problems(
    lease: Option<&LeaseView>,
    members: &[Member],
    routed_to: Option<&str>,
    leader_service: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(lease) = lease else {
        out.push("no Lease: no leader has ever been elected".into());
        return out;
    };
    let writable: Vec<&str> = members
        .iter()
        .filter(|m| m.writable())
        .map(|m| m.pod.as_str())
        .collect();
    if writable.len() > 1 {
        out.push(format!(
            "{} writable masters: {}",
            writable.len(),
            writable.join(", ")
        ));
    }
    if lease.holder.is_empty() {
        out.push("the Lease has no holder: no leader".into());
    }
    for m in members {
        if let Some(why) = &m.unreachable {
            out.push(format!("{}: sidecar did not answer ({why})", m.pod));
            continue;
        }
        let is_holder = m.pod == lease.holder;
        let role = m.role().map_or("", SidecarRole::as_str);
        if is_holder && role != "leader" {
            out.push(format!(
                "{}: holds the Lease but its sidecar says {role:?}",
                m.pod
            ));
        }
        if !is_holder && role == "leader" {
            out.push(format!(
                "{}: its sidecar says leader but the Lease names {:?}",
                m.pod, lease.holder
            ));
        }
        if !lease.holder.is_empty() && !is_holder && m.redis_role() == Some(RedisRole::Replica) {
            let master = m.redis().and_then(|r| r.master.as_deref());
            if master != Some(lease.holder_address.as_str()) {
                out.push(format!(
                    "{}: replicates from {}, not the leader {} ({})",
                    m.pod,
                    master.unwrap_or("nothing"),
                    lease.holder,
                    lease.holder_address
                ));
            }
        }
        if !lease.holder.is_empty()
            && !is_holder
            && m.redis_role() == Some(RedisRole::Replica)
            && m.redis().is_some_and(|r| !r.fenced)
        {
            out.push(format!(
                "{}: its Redis is an unfenced replica: one REPLICAOF NO ONE would make it a second writable master (its sidecar fences it within a retry period)",
                m.pod
            ));
        }
        if !lease.holder.is_empty() && !is_holder && m.redis_role() == Some(RedisRole::Master) {
            out.push(format!(
                "{}: its Redis is a master but the leader is {}",
                m.pod, lease.holder
            ));
        }
        match (is_holder, m.role_label.as_deref()) {
            (true, Some("leader")) | (false, Some("replica")) => {}
            (true, other) => out.push(format!(
                "{}: holds the Lease but is labelled {other:?}",
                m.pod
            )),
            (false, Some("leader")) => out.push(format!(
                "{}: labelled leader but the Lease names {:?}",
                m.pod, lease.holder
            )),
            (false, _) => {}
        }
    }
    if let Some(why) = members
        .iter()
        .find(|m| m.pod == lease.holder)
        .and_then(|m| m.status.as_ref()?.data_safety.as_ref())
        .filter(|ds| ds.refuses_writes.as_deref() == Some("rpo"))
        .and_then(|ds| ds.refuses_writes_reason.as_deref())
    {
        out.push(format!(
            "{}: the leader refuses writes: {why}",
            lease.holder
        ));
    }
    if !lease.holder.is_empty() && routed_to != Some(lease.holder.as_str()) {
        out.push(format!(
            "Service {leader_service} routes to {}, not the leader {}",
            routed_to.unwrap_or("nothing"),
            lease.holder
        ));
    }
    out
}

/// A table cell: `-` for an unknown value.
fn cell<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn yes_no(v: Option<bool>) -> String {
    cell(v.map(|b| if b { "yes" } else { "no" }))
}

/// A member's row: pod, role, epoch, Redis role, offset, lag, link, ready, fenced, last
/// change.
fn row(m: &Member, now_unix: u64) -> Vec<String> {
    let Some(st) = &m.status else {
        let mut r = vec![m.pod.clone(), "unreachable".into()];
        r.resize(10, "-".into());
        return r;
    };
    let redis = st.redis.as_ref();
    let link = match redis {
        Some(r) if r.role == RedisRole::Replica && r.streaming == Some(false) => {
            "up, no stream yet".into()
        }
        Some(r) if r.role == RedisRole::Replica => if r.link_up { "up" } else { "down" }.into(),
        _ => "-".into(),
    };
    let change = match &st.last_change {
        Some(c) => format!(
            "{} ago ({})",
            humantime::format_duration(std::time::Duration::from_secs(
                now_unix.saturating_sub(c.unix_time)
            )),
            c.reason
        ),
        None => "-".into(),
    };
    vec![
        m.pod.clone(),
        st.role.to_string(),
        cell(st.epoch),
        cell(redis.map(|r| match r.role {
            RedisRole::Master => "master",
            RedisRole::Replica => "replica",
        })),
        cell(redis.map(|r| r.offset)),
        cell(redis.and_then(|r| r.lag)),
        link,
        yes_no(Some(st.ready)),
        yes_no(redis.map(|r| r.fenced)),
        change,
    ]
}

/// Columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out.push('\n');
    out
}

/// The `status` table.
pub fn render(
    lease: Option<&LeaseView>,
    members: &[Member],
    problems: &[String],
    now_unix: u64,
) -> String {
    let mut out = String::new();
    match lease {
        Some(l) => out.push_str(&format!(
            "Lease {}: leader {}, epoch {}{}\n",
            l.name,
            if l.holder.is_empty() {
                "none"
            } else {
                &l.holder
            },
            l.epoch,
            if l.paused.is_empty() {
                String::new()
            } else {
                format!(", PAUSED ({})", l.paused)
            }
        )),
        None => out.push_str("Lease: none\n"),
    }
    let rows: Vec<Vec<String>> = members.iter().map(|m| row(m, now_unix)).collect();
    out.push_str(&table(
        &[
            "POD",
            "ROLE",
            "EPOCH",
            "REDIS",
            "OFFSET",
            "LAG",
            "LINK",
            "READY",
            "FENCED",
            "LAST CHANGE",
        ],
        &rows,
    ));
    out.push_str(&data_safety_line(lease, members));
    out.push_str(&failsafe_line(lease, members, now_unix));
    out.push_str(&cold_start_line(members));
    out.push_str(&tags_line(members));
    if problems.is_empty() {
        out.push_str("No disagreements.\n");
    } else {
        out.push_str("Disagreements:\n");
        for p in problems {
            out.push_str(&format!("  ! {p}\n"));
        }
    }
    out
}

/// The pods' tags, in one line, when any pod has one (its problems too).
fn tags_line(members: &[Member]) -> String {
    let tagged: Vec<String> = members
        .iter()
        .filter_map(|m| {
            let t = &m.status.as_ref()?.tags;
            let mut words = Vec::new();
            if t.nofailover {
                words.push("nofailover".to_string());
            }
            if t.noloadbalance {
                words.push("noloadbalance".to_string());
            }
            if let Some(p) = t.priority {
                words.push(format!("priority {p}"));
            }
            words.extend(t.problems.iter().map(|p| format!("! {p}")));
            (!words.is_empty()).then(|| format!("{} {}", m.pod, words.join(", ")))
        })
        .collect();
    if tagged.is_empty() {
        String::new()
    } else {
        format!("Tags: {}\n", tagged.join("; "))
    }
}

/// What the leader's sidecar says of failsafe, in one line, with the members' promises.
fn failsafe_line(lease: Option<&LeaseView>, members: &[Member], now_unix: u64) -> String {
    let leader = lease.and_then(|l| members.iter().find(|m| m.pod == l.holder));
    let Some(fs) = leader.and_then(|m| Some(&m.status.as_ref()?.failsafe)) else {
        return String::new();
    };
    let now_ms = now_unix * 1000;
    let ago = |t: Option<u64>| {
        t.map_or_else(
            || "-".to_string(),
            |t| format!("{:.1} s ago", now_ms.saturating_sub(t) as f64 / 1000.0),
        )
    };
    let promised: Vec<&str> = members
        .iter()
        .filter(|m| {
            m.status
                .as_ref()
                .and_then(|s| s.failsafe.promise_until_unix_ms)
                .is_some_and(|t| t > now_ms)
        })
        .map(|m| m.pod.as_str())
        .collect();
    let promises = if promised.is_empty() {
        String::new()
    } else {
        format!("; promised not to campaign: {}", promised.join(", "))
    };
    if fs.active {
        format!(
            "Failsafe: ACTIVE since {}, the Kubernetes API is unavailable to the leader; {}/{} members confirmed the last round (sent {}){promises}\n",
            ago(fs.since_unix_ms),
            fs.confirmed,
            fs.members,
            ago(fs.last_round_unix_ms)
        )
    } else if fs.enabled {
        format!(
            "Failsafe: on, standing by (the leader renews through the API; {} members recorded){promises}\n",
            fs.members
        )
    } else {
        "Failsafe: off (no peer key: an API outage longer than the renew deadline fences the leader)\n".into()
    }
}

/// The pods in a cold start (after a whole-group restart), and whom they wait for; nothing
/// when none is.
fn cold_start_line(members: &[Member]) -> String {
    let cold: Vec<(&str, &crate::wire::ColdStartReport)> = members
        .iter()
        .filter_map(|m| {
            let c = &m.status.as_ref()?.cold_start;
            c.cold.then_some((m.pod.as_str(), c))
        })
        .collect();
    if cold.is_empty() {
        return String::new();
    }
    let waiting: Vec<String> = cold
        .iter()
        .filter(|(_, c)| !c.waiting_for.is_empty())
        .map(|(pod, c)| format!("{pod} waits for {}", c.waiting_for.join(", ")))
        .collect();
    if waiting.is_empty() {
        format!(
            "Cold start: {} electing the freshest copy among the members present\n",
            cold.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
        )
    } else {
        format!(
            "Cold start: waiting for a majority of the members ({}); `force-election` elects with the pods present\n",
            waiting.join("; ")
        )
    }
}

/// What the leader's sidecar says of the data-safety mode, in one line.
fn data_safety_line(lease: Option<&LeaseView>, members: &[Member]) -> String {
    let leader = lease.and_then(|l| members.iter().find(|m| m.pod == l.holder));
    let Some(ds) = leader.and_then(|m| m.status.as_ref()?.data_safety.as_ref()) else {
        return String::new();
    };
    if !ds.rpo_mode {
        return "Data safety: RPO mode off (a write is acknowledged before it reaches a replica; confirm with WAIT 1)\n".into();
    }
    format!(
        "Data safety: RPO mode on: the leader takes writes only while {} replica(s) acknowledged within {} s ({})\n",
        ds.min_replicas,
        ds.max_replica_lag_seconds,
        match ds.refuses_writes_reason.as_deref() {
            None => "taking writes".to_string(),
            Some(why) => format!("refusing writes: {why}"),
        }
    )
}

/// The `status -o json` document.
pub fn to_json(
    lease: Option<&LeaseView>,
    members: &[Member],
    routed_to: Option<&str>,
    problems: &[String],
) -> Value {
    let mut pods = BTreeMap::new();
    for m in members {
        pods.insert(
            m.pod.clone(),
            json!({
                "address": m.address, "roleLabel": m.role_label, "status": m.status,
                "unreachable": m.unreachable,
            }),
        );
    }
    json!({
        "lease": lease.map(|l| json!({
            "name": l.name, "holder": l.holder, "holderAddress": l.holder_address,
            "epoch": l.epoch, "paused": (!l.paused.is_empty()).then_some(&l.paused),
        })),
        "leaderServiceRoutesTo": routed_to,
        "pods": pods,
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pod: &str, role: &str, redis: &str, master: &str, fenced: bool) -> Member {
        Member {
            pod: pod.into(),
            address: format!("{pod}:6379"),
            role_label: Some(
                if role == "leader" {
                    "leader"
                } else {
                    "replica"
                }
                .into(),
            ),
            status: Some(
                serde_json::from_value(json!({
                    "pod": pod, "role": role, "epoch": 3, "ready": true, "fenced": fenced,
                    "redis": {"role": redis, "offset": 100, "master": (!master.is_empty()).then_some(master),
                              "linkUp": true, "lag": 0, "fenced": fenced, "keys": 1},
                    "lastChange": {"epoch": 3, "reason": "elected", "unixTime": 1000},
                }))
                .unwrap(),
            ),
            unreachable: None,
        }
    }

    /// Changes a member's report as the sidecar's JSON would differ.
    fn edit(m: &mut Member, change: impl FnOnce(&mut Value)) {
        let mut v = serde_json::to_value(m.status.take().unwrap()).unwrap();
        change(&mut v);
        m.status = Some(serde_json::from_value(v).unwrap());
    }

    fn lease() -> LeaseView {
        LeaseView {
            name: "redis".into(),
            holder: "a".into(),
            holder_address: "a:6379".into(),
            epoch: 3,
            paused: String::new(),
        }
    }

    fn healthy() -> Vec<Member> {
        vec![
            member("a", "leader", "master", "", false),
            member("b", "replica", "replica", "a:6379", true),
            member("c", "replica", "replica", "a:6379", true),
        ]
    }

    #[test]
    fn a_healthy_group_has_no_disagreements() {
        let p = problems(Some(&lease()), &healthy(), Some("a"), "redis-leader");
        assert!(p.is_empty(), "{p:?}");
        let text = render(Some(&lease()), &healthy(), &p, 1010);
        assert!(text.contains("No disagreements"), "{text}");
        assert!(text.contains("10s ago (elected)"), "{text}");
        let first = text.lines().nth(1).unwrap();
        assert!(first.starts_with("POD  ROLE"), "{text}");
    }

    #[test]
    fn the_rpo_mode_is_shown_and_a_leader_refusing_writes_is_a_disagreement() {
        let mut m = healthy();
        let text = render(Some(&lease()), &m, &[], 1010);
        assert!(
            !text.contains("Data safety"),
            "no dataSafety, no line: {text}"
        );
        edit(&mut m[0], |s| {
            s["dataSafety"] = json!({
                "rpoMode": true, "minReplicas": 1, "maxReplicaLagSeconds": 10,
                "acceptsWrites": false, "refusesWrites": "rpo",
                "refusesWritesReason": "RPO mode: 0 of the 1 replicas required acknowledged within 10 s",
            })
        });
        edit(&mut m[1], |s| s["redis"]["streaming"] = json!(false));
        let p = problems(Some(&lease()), &m, Some("a"), "redis-leader");
        assert!(
            p.iter()
                .any(|x| x.contains("a: the leader refuses writes: RPO mode")),
            "{p:?}"
        );
        let text = render(Some(&lease()), &m, &p, 1010);
        assert!(text.contains("Data safety: RPO mode on"), "{text}");
        assert!(text.contains("up, no stream yet"), "{text}");
        edit(&mut m[0], |s| {
            s["dataSafety"] = json!({"rpoMode": false, "minReplicas": 0,
                "maxReplicaLagSeconds": 10, "acceptsWrites": true})
        });
        let text = render(Some(&lease()), &m, &[], 1010);
        assert!(text.contains("Data safety: RPO mode off"), "{text}");
    }

    #[test]
    fn an_unfenced_replica_is_a_disagreement() {
        let mut m = healthy();
        edit(&mut m[1], |s| s["redis"]["fenced"] = json!(false));
        let p = problems(Some(&lease()), &m, Some("a"), "redis-leader");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("b: its Redis is an unfenced replica"),
            "{p:?}"
        );
    }

    #[test]
    fn each_disagreement_is_named() {
        let mut m = healthy();
        m[1] = member("b", "replica", "master", "", false);
        let p = problems(Some(&lease()), &m, Some("a"), "redis-leader");
        assert!(
            p.iter().any(|x| x.contains("2 writable masters: a, b")),
            "{p:?}"
        );
        let mut m = healthy();
        m[2] = member("c", "replica", "replica", "old:6379", false);
        let p = problems(Some(&lease()), &m, Some("a"), "redis-leader");
        assert!(
            p.iter().any(|x| x.contains("c: replicates from old:6379")),
            "{p:?}"
        );
        let mut m = healthy();
        m[1].role_label = Some("leader".into());
        let p = problems(Some(&lease()), &m, Some("a"), "redis-leader");
        assert!(p.iter().any(|x| x.contains("b: labelled leader")), "{p:?}");
        let p = problems(Some(&lease()), &healthy(), Some("b"), "redis-leader");
        assert!(
            p.iter()
                .any(|x| x.contains("routes to b, not the leader a")),
            "{p:?}"
        );
        let mut m = healthy();
        m[0].status = None;
        m[0].unreachable = Some("connection refused".into());
        let p = problems(Some(&lease()), &m, Some("a"), "redis-leader");
        assert!(
            p.iter().any(|x| x.contains("a: sidecar did not answer")),
            "{p:?}"
        );
        assert!(render(Some(&lease()), &m, &p, 0).contains("unreachable"));
        assert_eq!(
            problems(None, &healthy(), None, "redis-leader"),
            vec!["no Lease: no leader has ever been elected".to_string()]
        );
    }

    #[test]
    fn the_cold_start_line_shows_who_waits_for_whom() {
        let mut m = healthy();
        let text = render(Some(&lease()), &m, &[], 1010);
        assert!(!text.contains("Cold start"), "{text}");
        edit(&mut m[1], |s| {
            s["coldStart"] = json!({"cold": true, "waitingFor": ["redis-0", "redis-2"]})
        });
        let text = render(Some(&lease()), &m, &[], 1010);
        assert!(
            text.contains(
                "Cold start: waiting for a majority of the members (b waits for redis-0, redis-2)"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_failsafe_line_says_whether_the_leader_serves_in_failsafe() {
        let mut m = healthy();
        let text = render(Some(&lease()), &m, &[], 1010);
        assert!(text.contains("Failsafe: off"), "{text}");
        edit(&mut m[0], |s| {
            s["failsafe"] = json!({"enabled": true, "members": 2})
        });
        let text = render(Some(&lease()), &m, &[], 1010);
        assert!(text.contains("Failsafe: on, standing by"), "{text}");
        edit(&mut m[0], |s| {
            s["failsafe"] = json!({
                "enabled": true, "active": true, "sinceUnixMs": 1_000_000, "members": 2,
                "confirmed": 2, "lastRoundUnixMs": 1_009_750,
            })
        });
        edit(
            &mut m[1],
            |s| {
                s["failsafe"] =
                    json!({"enabled": true, "promiseUntilUnixMs": 1_012_000, "promisedTo": "a"})
            },
        );
        let text = render(Some(&lease()), &m, &[], 1010);
        assert!(
            text.contains("Failsafe: ACTIVE since 10.0 s ago")
                && text.contains("2/2 members confirmed the last round (sent 0.2 s ago)")
                && text.contains("promised not to campaign: b"),
            "{text}"
        );
    }
}
