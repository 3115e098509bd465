//! The fault-injection suite: seeded schedules of faults over a three-pod group of the
//! shipped manifests (fast profile) under a writer that goes through the leader Service, with
//! a sampler of writable Redis instances, and a checker of DESIGN section 2's invariants.
//! The short version is `tests/faults.rs`; the long one `benches/faults.rs` (`--duration`).

use super::cluster::{KubeGroup, Profile, REDIS_PORT};
use super::measure::{ClientWriter, Route, WritableSampler, lost_writes, send_signal};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A TCP relay on `ip:listen_port` → `ip:target_port` for each pod address, that can cut one
/// address off: new connections are refused and open ones closed until healed. The outgoing
/// connection keeps the client's source IP, so Redis sees the real replica address. It is
/// how the suite partitions a pod from its peers (replication, sidecar probes and fencing go
/// to the announced relay) while clients and its own sidecar still reach it directly.
pub struct Relay {
    cut: Arc<Mutex<HashSet<Ipv4Addr>>>,
    changed: watch::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    pub fn start(ips: &[Ipv4Addr], listen_port: u16, target_port: u16) -> Self {
        let cut: Arc<Mutex<HashSet<Ipv4Addr>>> = Arc::default();
        let changed = watch::channel(0).0;
        let mut tasks = Vec::new();
        for ip in ips.iter().copied() {
            let std_listener = std::net::TcpListener::bind((ip, listen_port)).expect("relay port");
            std_listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let (cut, changed) = (cut.clone(), changed.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((client, peer)) = listener.accept().await else {
                        continue;
                    };
                    if cut.lock().unwrap().contains(&ip) {
                        continue; // dropped: the peer sees the connection closed
                    }
                    let mut rx = changed.subscribe();
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                            return;
                        };
                        if socket.bind(SocketAddr::new(peer.ip(), 0)).is_err() {
                            return;
                        }
                        let Ok(mut upstream) = socket
                            .connect(SocketAddr::new(IpAddr::V4(ip), target_port))
                            .await
                        else {
                            return;
                        };
                        let mut client = client;
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
                        tokio::pin!(copy);
                        loop {
                            tokio::select! {
                                _ = &mut copy => return,
                                r = rx.changed() => {
                                    if r.is_err() || cut.lock().unwrap().contains(&ip) {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }));
        }
        Self {
            cut,
            changed,
            tasks,
        }
    }

    pub fn cut(&self, ip: Ipv4Addr) {
        self.cut.lock().unwrap().insert(ip);
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn heal(&self, ip: Ipv4Addr) {
        self.cut.lock().unwrap().remove(&ip);
        self.changed.send_modify(|v| *v += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Which pod a fault hits, chosen when it is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    /// The n-th replica (mod the number of replicas), by name order.
    Replica(usize),
    /// Every pod (API faults only).
    All,
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    KillRedis,
    KillSidecar,
    KillPod,
    StopRedis,
    StopSidecar,
    StopPod,
    ApiLatency,
    ApiErrors,
    ApiBlackhole,
    ApiOutage,
    ReplicationCut,
    DeleteLeader,
    Switchover,
    /// A replica's Redis killed (it restarts empty and full-syncs), then the leader's Redis
    /// (odd amount: the whole leader pod) killed `amount` ms after that sync completed.
    KillLeaderAfterFullSync,
    /// The whole API gone, and during its middle third a replica's sidecar stopped: the
    /// failsafe path between sidecars is cut during an outage (the leader must fence).
    ApiOutagePeerSilent,
}

impl Kind {
    const ALL: [Kind; 15] = [
        Kind::KillRedis,
        Kind::KillSidecar,
        Kind::KillPod,
        Kind::StopRedis,
        Kind::StopSidecar,
        Kind::StopPod,
        Kind::ApiLatency,
        Kind::ApiErrors,
        Kind::ApiBlackhole,
        Kind::ApiOutage,
        Kind::ReplicationCut,
        Kind::DeleteLeader,
        Kind::Switchover,
        Kind::KillLeaderAfterFullSync,
        Kind::ApiOutagePeerSilent,
    ];

    /// Planned moves must lose nothing (invariant 4).
    fn planned(self) -> bool {
        matches!(self, Kind::DeleteLeader | Kind::Switchover)
    }
}

/// One scheduled fault.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub kind: Kind,
    pub target: Target,
    /// How long the fault stands before it heals (0 for kills and planned moves).
    pub hold: Duration,
    /// Latency in ms, or the error rate in percent, where the kind has one.
    pub amount: u64,
}

/// The schedule a seed gives: the same seed, the same faults in the same order.
pub fn schedule(seed: u64, count: usize) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let kind = Kind::ALL[rng.random_range(0..Kind::ALL.len())];
            let target = match kind {
                Kind::DeleteLeader
                | Kind::Switchover
                | Kind::ReplicationCut
                | Kind::KillLeaderAfterFullSync => Target::Leader,
                Kind::ApiOutage => Target::All,
                Kind::ApiOutagePeerSilent => Target::Replica(rng.random_range(0..2)),
                Kind::ApiLatency | Kind::ApiErrors | Kind::ApiBlackhole
                    if rng.random_bool(0.25) =>
                {
                    Target::All
                }
                _ if rng.random_bool(0.6) => Target::Leader,
                _ => Target::Replica(rng.random_range(0..2)),
            };
            let hold = match kind {
                Kind::KillRedis
                | Kind::KillSidecar
                | Kind::KillPod
                | Kind::KillLeaderAfterFullSync => Duration::ZERO,
                Kind::DeleteLeader | Kind::Switchover => Duration::ZERO,
                Kind::ApiOutagePeerSilent => Duration::from_millis(rng.random_range(2000..9000)),
                // Some shorter and some longer than the fast profile's 3 s lease.
                _ => Duration::from_millis(rng.random_range(300..6000)),
            };
            let amount = match kind {
                Kind::ApiLatency => rng.random_range(50..1500),
                Kind::ApiErrors => rng.random_range(30..=100),
                Kind::KillLeaderAfterFullSync => rng.random_range(0..2000),
                _ => 0,
            };
            Step {
                kind,
                target,
                hold,
                amount,
            }
        })
        .collect()
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub faults: usize,
    pub acknowledged: usize,
    /// Per fault kind: (faults, acknowledged writes lost, longest convergence after heal).
    pub per_kind: BTreeMap<String, (usize, usize, Duration)>,
    /// Writes confirmed with `WAIT 1` (by a second writer), and how many of them were lost.
    pub confirmed: usize,
    pub confirmed_lost: usize,
    pub violations: Vec<String>,
    pub timeline: Vec<String>,
    pub sampler_rounds: u64,
    pub elapsed: Duration,
}

impl Report {
    /// The per-kind table in markdown.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| fault | injected | acknowledged writes lost | longest convergence after heal |\n|---|---|---|---|\n",
        );
        for (k, (n, lost, conv)) in &self.per_kind {
            s += &format!("| {k} | {n} | {lost} | {:.1} s |\n", conv.as_secs_f64());
        }
        s
    }
}

struct Timeline {
    t0: Instant,
    lines: Mutex<Vec<String>>,
}

impl Timeline {
    fn note(&self, what: String) {
        let line = format!("{:>9.3} s  {what}", self.t0.elapsed().as_secs_f64());
        if std::env::var_os("FAULTS_VERBOSE").is_some() {
            eprintln!("{line}");
        }
        self.lines.lock().unwrap().push(line);
    }
}

/// The time the timing budget gives a group to converge after a fault heals: the lease runs
/// out (LD) after the renew deadline (RD) at worst, a restarted Redis needs a full sync,
/// readiness needs two probe periods (2 s), and a loaded two-core machine gets slack. (The
/// budget predates the disk-based sync, when a restarted Redis also waited out a 5 s
/// `repl-diskless-sync-delay`; it is kept, so that the figures stay comparable.)
pub fn convergence_budget(profile: &Profile) -> Duration {
    profile.lease * 2 + Duration::from_secs(15)
}

/// Runs faults from `seed`'s schedule until `duration` has passed (at least `min_faults`).
pub async fn run(seed: u64, duration: Duration, min_faults: usize) -> Report {
    let profile = Profile::fast();
    let budget = convergence_budget(&profile);
    let g = KubeGroup::start_relayed(3, &profile).await;
    let timeline = Timeline {
        t0: Instant::now(),
        lines: Mutex::default(),
    };
    let mut report = Report {
        seed,
        ..Default::default()
    };
    match g.converged(Duration::from_secs(60)).await {
        Ok((leader, _)) => timeline.note(format!("group converged, leader {leader}")),
        Err(why) => {
            report
                .violations
                .push(format!("the group never converged at start: {why}"));
            report.timeline = timeline.lines.into_inner().unwrap();
            g.stop().await;
            return report;
        }
    }
    let password = Some(g.password.clone());
    let writer = ClientWriter::start(
        Route::Service(g.leader_service()),
        password.clone(),
        "log".into(),
    );
    // A client that confirms each write with `WAIT 1 100` and counts only the confirmed
    // ones: none of them may be lost, whatever the fault (unplanned ones included).
    let confirming = ClientWriter::start_confirming(
        Route::Service(g.leader_service()),
        password.clone(),
        "wlog".into(),
    );
    let sampler = WritableSampler::start(g.all_redis_addrs(), password.clone());
    writer.wait_for(20, Duration::from_secs(20)).await;

    // (kind, window start, window end) for attributing lost writes.
    let mut known_lost: HashSet<u64> = HashSet::new();
    let steps = schedule(seed, 100_000);
    let started = Instant::now();
    for (n, step) in steps.iter().enumerate() {
        if started.elapsed() >= duration && n >= min_faults {
            break;
        }
        let (leader, leader_ip) = match g.converged(budget).await {
            Ok(l) => l,
            Err(why) => {
                report.violations.push(format!(
                    "not converged {budget:?} after the previous fault healed: {why}"
                ));
                break;
            }
        };
        let mut pods = g.cluster.pod_names();
        pods.sort();
        let replicas: Vec<&String> = pods.iter().filter(|p| **p != leader).collect();
        let pod = match step.target {
            Target::Leader | Target::All => leader.clone(),
            Target::Replica(i) => replicas[i % replicas.len()].clone(),
        };
        timeline.note(format!(
            "fault {n}: {:?} on {} (hold {} ms{})",
            step.kind,
            if step.target == Target::All {
                "all pods".to_string()
            } else {
                pod.clone()
            },
            step.hold.as_millis(),
            if step.amount > 0 {
                format!(", amount {}", step.amount)
            } else {
                String::new()
            }
        ));
        let outcome = inject(&g, step, &pod, leader_ip).await;
        if let Err(e) = outcome {
            report
                .violations
                .push(format!("fault {n} {:?}: {e}", step.kind));
        }
        let t_heal = Instant::now();
        let converged = g.converged(budget).await;
        let took = t_heal.elapsed();
        match &converged {
            Ok((l, _)) => timeline.note(format!(
                "converged {:.2} s after heal, leader {l}, holder epoch ok",
                took.as_secs_f64()
            )),
            Err(why) => {
                timeline.note(format!("NOT converged after {budget:?}: {why}"));
                report.violations.push(format!(
                    "fault {n} {:?}: not converged within {budget:?} of healing: {why}",
                    step.kind
                ));
            }
        }
        let entry = report
            .per_kind
            .entry(format!("{:?}", step.kind))
            .or_default();
        entry.0 += 1;
        entry.2 = entry.2.max(took);
        // Writes lost by this fault: acknowledged so far, missing from the converged leader.
        if let Ok((_, ip)) = &converged {
            let addr = SocketAddr::new(IpAddr::V4(*ip), REDIS_PORT);
            let confirmed_now = confirming.acks();
            if let Some(lost) = lost_writes(addr, password.as_deref(), "wlog", &confirmed_now)
                .await
                .filter(|l| !l.is_empty())
            {
                timeline.note(format!(
                    "{} writes confirmed with WAIT 1 lost: seq {:?}",
                    lost.len(),
                    &lost[..lost.len().min(10)]
                ));
                report.violations.push(format!(
                    "fault {n} {:?}: {} writes confirmed with WAIT 1 lost",
                    step.kind,
                    lost.len()
                ));
            }
            let acks_now = writer.acks();
            if let Some(lost) = lost_writes(addr, password.as_deref(), "log", &acks_now).await {
                let new: Vec<u64> = lost.into_iter().filter(|s| known_lost.insert(*s)).collect();
                if !new.is_empty() {
                    let at = |seq: u64| {
                        acks_now
                            .iter()
                            .find(|a| a.seq == seq)
                            .map_or(f64::NAN, |a| (a.at - timeline.t0).as_secs_f64())
                    };
                    timeline.note(format!(
                        "{} acknowledged writes lost: seq {}..{}, acknowledged at {:.3}..{:.3} s by {:?}",
                        new.len(),
                        new[0],
                        new[new.len() - 1],
                        at(new[0]),
                        at(new[new.len() - 1]),
                        acks_now
                            .iter()
                            .filter(|a| new.contains(&a.seq))
                            .map(|a| a.node)
                            .collect::<HashSet<_>>()
                    ));
                    entry.1 += new.len();
                    if step.kind.planned() {
                        report.violations.push(format!(
                            "fault {n} {:?} (a planned move) lost {} acknowledged writes",
                            step.kind,
                            new.len()
                        ));
                    }
                }
            }
        }
        report.faults += 1;
        let st = sampler.state();
        if st.doubles > 0 {
            timeline.note(format!("two writable Redis: {:?}", st.double_at.last()));
            report.violations.push(format!(
                "two Redis accepted writes at once ({} samples), around fault {n} {:?}",
                st.doubles, step.kind
            ));
            break;
        }
        if converged.is_err() {
            break;
        }
    }
    report.elapsed = started.elapsed();

    // Lost writes, attributed to the fault whose window holds their acknowledgement.
    let final_leader = g.converged(budget).await;
    let acks = writer.finish().await;
    let confirmed = confirming.finish().await;
    report.confirmed = confirmed.len();
    let sampled = sampler.finish().await;
    report.sampler_rounds = sampled.rounds;
    report.acknowledged = acks.len();
    if sampled.doubles > 0 && !report.violations.iter().any(|v| v.contains("two Redis")) {
        report.violations.push(format!(
            "two Redis accepted writes at once ({} samples)",
            sampled.doubles
        ));
    }
    match final_leader {
        Ok((_, ip)) => {
            let addr = SocketAddr::new(IpAddr::V4(ip), REDIS_PORT);
            match lost_writes(addr, password.as_deref(), "wlog", &confirmed).await {
                Some(lost) => {
                    report.confirmed_lost = lost.len();
                    if !lost.is_empty() && !report.violations.iter().any(|v| v.contains("WAIT 1")) {
                        report
                            .violations
                            .push(format!("{} writes confirmed with WAIT 1 lost", lost.len()));
                    }
                }
                None => report
                    .violations
                    .push("the final leader's confirmed log could not be read".into()),
            }
            match lost_writes(addr, password.as_deref(), "log", &acks).await {
                Some(lost) => {
                    // Every fault's losses were counted after it converged; what is missing
                    // now and was not then was lost outside any fault.
                    let new: Vec<u64> = lost
                        .into_iter()
                        .filter(|s| !known_lost.contains(s))
                        .collect();
                    if !new.is_empty() {
                        report.violations.push(format!(
                            "{} acknowledged writes lost outside any fault (seq {}..{})",
                            new.len(),
                            new[0],
                            new[new.len() - 1]
                        ));
                    }
                }
                None => report
                    .violations
                    .push("the final leader's log could not be read".into()),
            }
        }
        Err(why) => report
            .violations
            .push(format!("not converged at the end: {why}")),
    }
    report.violations.dedup();
    if report.violations.len() > 20 {
        let n = report.violations.len();
        report.violations.truncate(20);
        report.violations.push(format!("… {} more", n - 20));
    }
    timeline.note(format!(
        "end: {} faults, {} writes acknowledged, {} sampler rounds",
        report.faults, report.acknowledged, report.sampler_rounds
    ));
    report.timeline = timeline.lines.into_inner().unwrap();
    if !report.violations.is_empty() {
        report.timeline.push(g.logs(30));
    }
    g.stop().await;
    report
}

/// Injects one fault and heals it after its hold.
async fn inject(g: &KubeGroup, step: &Step, pod: &str, leader_ip: Ipv4Addr) -> Result<(), String> {
    let containers: &[&str] = match step.kind {
        Kind::KillRedis | Kind::StopRedis => &["redis"],
        Kind::KillLeaderAfterFullSync if step.amount % 2 == 1 => &["redis", "sidecar"],
        Kind::KillLeaderAfterFullSync => &["redis"],
        Kind::KillSidecar | Kind::StopSidecar | Kind::ApiOutagePeerSilent => &["sidecar"],
        Kind::KillPod | Kind::StopPod => &["redis", "sidecar"],
        _ => &[],
    };
    let pids: Vec<u32> = containers
        .iter()
        .filter_map(|c| g.cluster.container_pid(pod, c))
        .collect();
    if pids.len() != containers.len() {
        return Err(format!("{pod} has no running {containers:?}"));
    }
    let api_fault = |f: kubesim::Fault| -> Result<u64, String> {
        let token = match step.target {
            Target::All => None,
            _ => Some(
                g.cluster
                    .pod_token(pod)
                    .ok_or(format!("{pod} has no token"))?,
            ),
        };
        Ok(g.cluster.server.faults().add(kubesim::Fault { token, ..f }))
    };
    match step.kind {
        Kind::KillRedis | Kind::KillSidecar | Kind::KillPod => {
            for p in &pids {
                send_signal(*p, "KILL");
            }
        }
        Kind::StopRedis | Kind::StopSidecar | Kind::StopPod => {
            for p in &pids {
                send_signal(*p, "STOP");
            }
            tokio::time::sleep(step.hold).await;
            for p in &pids {
                send_signal(*p, "CONT");
            }
        }
        Kind::ApiLatency | Kind::ApiErrors | Kind::ApiBlackhole => {
            let fault = match step.kind {
                Kind::ApiLatency => kubesim::Fault {
                    latency_ms: Some(step.amount),
                    ..Default::default()
                },
                Kind::ApiErrors => kubesim::Fault {
                    error: Some(kubesim::ErrorFault {
                        code: if step.amount.is_multiple_of(2) {
                            500
                        } else {
                            429
                        },
                        writes_only: false,
                        rate: step.amount as f64 / 100.0,
                        retry_after_seconds: None,
                    }),
                    ..Default::default()
                },
                _ => kubesim::Fault {
                    blackhole: true,
                    ..Default::default()
                },
            };
            let id = api_fault(fault)?;
            tokio::time::sleep(step.hold).await;
            g.cluster.server.faults().remove(id);
        }
        Kind::ApiOutage => {
            g.cluster.server.set_outage(true);
            tokio::time::sleep(step.hold).await;
            g.cluster.server.set_outage(false);
        }
        Kind::ApiOutagePeerSilent => {
            g.cluster.server.set_outage(true);
            tokio::time::sleep(step.hold / 3).await;
            for p in &pids {
                send_signal(*p, "STOP");
            }
            tokio::time::sleep(step.hold / 3).await;
            for p in &pids {
                send_signal(*p, "CONT");
            }
            tokio::time::sleep(step.hold / 3).await;
            g.cluster.server.set_outage(false);
        }
        Kind::ReplicationCut => {
            let relay = g.relay.as_ref().ok_or("no relay")?;
            relay.cut(leader_ip);
            tokio::time::sleep(step.hold).await;
            relay.heal(leader_ip);
        }
        Kind::DeleteLeader => {
            g.cluster
                .delete_pod(pod)
                .map_err(|e| format!("delete {pod}: {e}"))?;
        }
        Kind::Switchover => {
            let (ok, out) = g.switchover().await;
            if !ok {
                return Err(format!("switchover failed: {out}"));
            }
        }
        Kind::KillLeaderAfterFullSync => {
            let replica = g
                .cluster
                .pod_names()
                .into_iter()
                .filter(|p| p != pod)
                .min()
                .ok_or("no replica")?;
            let replica_ip = g.cluster.pod_ip(&replica).ok_or("the replica has no IP")?;
            let leader_host = g.announced_host(pod).ok_or("the leader has no IP")?;
            let replica_pid = g
                .cluster
                .container_pid(&replica, "redis")
                .ok_or("the replica's Redis is not running")?;
            g.remove_rdb(&replica);
            send_signal(replica_pid, "KILL");
            // It restarts empty; its sidecar points it at the leader; the full sync ends when
            // its link is up.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{replica} did not full-sync from the leader in 30 s"
                    ));
                }
                if g.cluster.container_pid(&replica, "redis") != Some(replica_pid)
                    && linked_to(replica_ip, &leader_host, g.admin()).await
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(step.amount)).await;
            for p in &pids {
                send_signal(*p, "KILL");
            }
        }
    }
    Ok(())
}

/// Whether the Redis at `ip` replicates from the leader (announced as `leader_host`) with its
/// link up.
async fn linked_to(ip: Ipv4Addr, leader_host: &str, auth: super::measure::Auth<'_>) -> bool {
    let addr = SocketAddr::new(IpAddr::V4(ip), REDIS_PORT);
    matches!(
        super::measure::probe_redis(addr, Some(auth)).await.map(|p| p.info.role),
        Ok(redis_node::info::Role::Replica { master_host, link_up: true, .. })
            if master_host.eq_ignore_ascii_case(leader_host)
    )
}
