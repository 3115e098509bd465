//! Failover benchmark (issue 6): this project on kubesim (the shipped manifests run by its
//! kubelet, default and fast timing) against Redis Sentinel (Debian's `redis-sentinel`, three
//! Sentinels, quorum 2, `down-after-milliseconds` 1000 and 5000), side by side in one run.
//!
//! Scenarios: (a) SIGKILL of the leader's redis-server, (b) SIGKILL of the whole leader pod
//! (Redis and sidecar; for Sentinel the master's Redis and the Sentinel beside it), (c)
//! SIGTERM of the leader pod as in a rolling update (pod deletion; for Sentinel SIGTERM of the
//! master's Redis), (d) switchover (`redis-k8s-election switchover`; `SENTINEL FAILOVER`), (e)
//! leader cut off from the API server for 20 s while clients still reach it (no Sentinel
//! equivalent), (f) the whole API server gone for 60 s (Sentinel does not use it: it runs the
//! same 60 s under the same writer, no fault). (e) and (f) hold the fault for a fixed time
//! and measure the longest gap between acknowledged writes in it (with failsafe the leader
//! keeps serving, so there may be no failover to time), and the leader changes.
//!
//! Per run a client writes every 2 ms through what a client would use (the `redis-leader`
//! Service's proxy; Sentinel discovery after every error) and keeps every acknowledgement with
//! the node that gave it. Measured: write unavailability (fault → first acknowledged write on
//! another node), the longest gap between acknowledgements, acknowledged writes lost, time
//! until every other node replicates from the new master, and rounds in which two Redis
//! accepted writes. At steady state: CPU and memory of the sidecars (Sentinels), and API
//! requests per second.
//!
//! A second client confirms each of its writes with `WAIT 1 100` and counts only the confirmed
//! ones: none of them may be lost (issue 13). `fast-rpo` is the fast profile with the RPO
//! mode on (`MIN_REPLICAS=1`). Our systems run the shipped persistence mode (`aof`) but
//! `fast-none`, the fast profile without persistence (as the manifests were before issue 19).
//!
//! `cargo bench -p redis-k8s-election --bench compare -- [--runs N] [--quick]
//!  [--json PATH] [--systems fast,default,fast-rpo,fast-none,fast-sentinel-client,sentinel-1000,sentinel-5000]
//!  [--scenarios a,b,c,d,e,f] [--outage-secs 60]`

mod sentinel;

use harness::cluster::{KubeGroup, Overrides, Profile, REDIS_PORT};
use harness::flag;
use harness::measure::{
    ClientWriter, Route, WritableSampler, cpu_and_rss, longest_gap_within, lost_writes, percentile,
    replicas_follow, send_signal,
};
use sentinel::{MASTER_NAME, SentinelGroup};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    RedisKilled,
    PodKilled,
    PodTerminated,
    Switchover,
    ApiCut,
    ApiOutage,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::RedisKilled,
        Scenario::PodKilled,
        Scenario::PodTerminated,
        Scenario::Switchover,
        Scenario::ApiCut,
        Scenario::ApiOutage,
    ];

    fn letter(self) -> &'static str {
        match self {
            Scenario::RedisKilled => "a",
            Scenario::PodKilled => "b",
            Scenario::PodTerminated => "c",
            Scenario::Switchover => "d",
            Scenario::ApiCut => "e",
            Scenario::ApiOutage => "f",
        }
    }

    /// The fault is held for a fixed time, and the measure is the longest write gap in it.
    fn held(self) -> bool {
        matches!(self, Scenario::ApiCut | Scenario::ApiOutage)
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::RedisKilled => "(a) leader's Redis SIGKILL",
            Scenario::PodKilled => "(b) leader pod SIGKILL",
            Scenario::PodTerminated => "(c) leader pod SIGTERM",
            Scenario::Switchover => "(d) switchover",
            Scenario::ApiCut => "(e) leader cut from API, 20 s",
            Scenario::ApiOutage => "(f) whole API gone",
        }
    }
}

/// One measured run.
#[derive(Clone, Debug)]
struct Run {
    unavailable_ms: f64,
    longest_gap_ms: f64,
    lost: usize,
    acknowledged: usize,
    /// Writes a second client confirmed with `WAIT 1 100`, and how many of them were lost.
    confirmed: usize,
    confirmed_lost: usize,
    follow_ms: Option<f64>,
    double_rounds: u64,
    double_ms: f64,
    /// How often the node acknowledging writes changed after the fault.
    leader_changes: usize,
}

/// How our system's writer finds the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// Through the `redis-leader` Service.
    Service,
    /// As a Sentinel-aware client, through the sidecars' Sentinel-compatible endpoints.
    Sentinel,
}

enum System {
    Ours(Box<KubeGroup>, Profile, Client),
    Sentinel(SentinelGroup),
}

impl System {
    fn name(&self) -> String {
        match self {
            System::Ours(_, p, Client::Service) => format!("this project, {}", p.name),
            System::Ours(_, p, Client::Sentinel) => {
                format!("this project, {}, Sentinel client", p.name)
            }
            System::Sentinel(s) => format!("Sentinel, down-after {} ms", s.down_after_ms),
        }
    }

    /// Who observes the Redis servers: our group's `admin` user (its application user may
    /// not read the configuration a probe reads), Sentinel's `default` user.
    fn observer(&self) -> Observer {
        match self {
            System::Ours(g, _, _) => Observer(Some("admin"), g.admin_password.clone()),
            System::Sentinel(s) => Observer(None, s.password.clone()),
        }
    }

    fn password(&self) -> String {
        match self {
            System::Ours(g, _, _) => g.password.clone(),
            System::Sentinel(s) => s.password.clone(),
        }
    }

    fn route(&self) -> Route {
        match self {
            System::Ours(g, _, Client::Service) => Route::Service(g.leader_service()),
            // Every address a pod may have: the client asks each endpoint in turn, as
            // Sentinel clients go through their list of Sentinels.
            System::Ours(g, _, Client::Sentinel) => Route::Sentinel {
                sentinels: g
                    .pod_ips
                    .iter()
                    .map(|ip| SocketAddr::new(IpAddr::V4(*ip), 26379))
                    .collect(),
                master_name: MASTER_NAME.into(),
            },
            System::Sentinel(s) => Route::Sentinel {
                sentinels: s.sentinel_addrs(),
                master_name: MASTER_NAME.into(),
            },
        }
    }

    fn all_addrs(&self) -> Vec<SocketAddr> {
        match self {
            System::Ours(g, _, _) => g.all_redis_addrs(),
            System::Sentinel(s) => s.redis_addrs(),
        }
    }

    async fn converged(&self) -> Result<IpAddr, String> {
        match self {
            System::Ours(g, _, _) => g
                .converged(Duration::from_secs(90))
                .await
                .map(|(_, ip)| IpAddr::V4(ip)),
            System::Sentinel(s) => s.converged(Duration::from_secs(90)).await,
        }
    }

    /// Whether every other node of the group replicates from `master`.
    async fn followed(&self, master: IpAddr) -> bool {
        let (nodes, host): (Vec<SocketAddr>, String) = match self {
            System::Ours(g, _, _) => {
                let pods = g.cluster.pod_names();
                let ips: Vec<SocketAddr> = pods
                    .iter()
                    .filter_map(|p| g.cluster.pod_ip(p))
                    .map(|ip| SocketAddr::new(IpAddr::V4(ip), REDIS_PORT))
                    .collect();
                if ips.len() != g.replicas {
                    return false;
                }
                let Some(host) = pods
                    .iter()
                    .find(|p| g.cluster.pod_ip(p).map(IpAddr::V4) == Some(master))
                    .and_then(|p| g.announced_host(p))
                else {
                    return false;
                };
                (ips, host)
            }
            System::Sentinel(s) => (s.redis_addrs(), master.to_string()),
        };
        replicas_follow(
            &nodes,
            SocketAddr::new(master, REDIS_PORT),
            &host,
            Some(self.observer().auth()),
        )
        .await
        .is_ok()
    }

    /// Injects the fault on the master at `old`; `Ok(None)` when the system has no
    /// equivalent. Returns an API fault id to heal, if any.
    async fn inject(&mut self, sc: Scenario, old: IpAddr) -> Result<Option<u64>, String> {
        match self {
            System::Ours(g, _, _) => {
                let pod = g.holder().ok_or("no holder")?;
                let pid = |c: &str| {
                    g.cluster
                        .container_pid(&pod, c)
                        .ok_or(format!("{pod}/{c} is not running"))
                };
                match sc {
                    Scenario::RedisKilled => {
                        send_signal(pid("redis")?, "KILL");
                    }
                    Scenario::PodKilled => {
                        let (r, s) = (pid("redis")?, pid("sidecar")?);
                        send_signal(r, "KILL");
                        send_signal(s, "KILL");
                    }
                    Scenario::PodTerminated => {
                        g.cluster.delete_pod(&pod).map_err(|e| e.to_string())?;
                    }
                    Scenario::Switchover => {
                        let (ok, out) = g.switchover().await;
                        if !ok {
                            return Err(format!("switchover: {out}"));
                        }
                    }
                    Scenario::ApiCut => {
                        let token = g.cluster.pod_token(&pod).ok_or("no token")?;
                        return Ok(Some(g.cluster.server.faults().add(kubesim::Fault {
                            token: Some(token),
                            blackhole: true,
                            ..Default::default()
                        })));
                    }
                    Scenario::ApiOutage => g.cluster.server.set_outage(true),
                }
                Ok(None)
            }
            System::Sentinel(s) => {
                let i = s.index_of(old).ok_or("master is not a group node")?;
                match sc {
                    Scenario::RedisKilled => s.signal_redis(i, "KILL"),
                    Scenario::PodKilled => {
                        s.signal_redis(i, "KILL");
                        s.kill_sentinel(i);
                    }
                    Scenario::PodTerminated => s.signal_redis(i, "TERM"),
                    Scenario::Switchover => s.failover().await?,
                    Scenario::ApiCut => return Err("no equivalent".into()),
                    // Sentinel does not depend on the API server: nothing to take away.
                    Scenario::ApiOutage => {}
                }
                Ok(None)
            }
        }
    }

    /// After the new master took a write: heal the API cut; restart what was killed.
    async fn recover(&mut self, sc: Scenario, old: IpAddr, fault: Option<u64>) {
        match self {
            System::Ours(g, _, _) => {
                if let Some(id) = fault {
                    g.cluster.server.faults().remove(id);
                }
                if sc == Scenario::ApiOutage {
                    g.cluster.server.set_outage(false);
                }
            }
            System::Sentinel(s) => {
                let Some(i) = s.index_of(old) else { return };
                if matches!(sc, Scenario::PodTerminated) {
                    // Redis takes its time to shut down after SIGTERM (it waits for replicas).
                    let until = Instant::now() + Duration::from_secs(15);
                    while !s.redis_exited(i) && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                // Restarted only now, after Sentinel promoted a replica: a master without
                // persistence restarted before the failover comes back empty and its replicas
                // copy the empty data set (Redis' replication docs warn against exactly
                // that), which would turn this run into total loss.
                if matches!(
                    sc,
                    Scenario::RedisKilled | Scenario::PodKilled | Scenario::PodTerminated
                ) {
                    s.start_redis(i);
                }
                if matches!(sc, Scenario::PodKilled) {
                    s.start_sentinel(i);
                }
            }
        }
    }
}

/// How often the acknowledging node changes among `acks` after `t0`.
fn leader_changes(acks: &[harness::Ack], t0: Instant) -> usize {
    acks.iter()
        .filter(|a| a.at >= t0)
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].node != w[1].node)
        .count()
}

/// (e) and (f): the fault held for `hold`, then healed; the longest write gap from the fault
/// until the writer has gone on for a while after the heal.
async fn held_run(sys: &mut System, sc: Scenario, n: usize, hold: Duration) -> Result<Run, String> {
    let old = sys.converged().await?;
    let key = format!("log:{sc:?}:{n}");
    let password = sys.password();
    let writer = ClientWriter::start(sys.route(), Some(password.clone()), key.clone());
    let confirmed_key = format!("wlog:{sc:?}:{n}");
    let confirming =
        ClientWriter::start_confirming(sys.route(), Some(password.clone()), confirmed_key.clone());
    let sampler = WritableSampler::start(sys.all_addrs(), Some(password.clone()));
    if !writer.wait_for(50, Duration::from_secs(20)).await {
        return Err("the writer does not get writes through before the fault".into());
    }
    let t0 = Instant::now();
    let fault = sys.inject(sc, old).await?;
    tokio::time::sleep(hold).await;
    sys.recover(sc, old, fault).await;
    let healed = Instant::now();
    // Writes go on after the heal (through a failover, if there was one).
    let deadline = healed + Duration::from_secs(90);
    while writer
        .acks()
        .last()
        .is_none_or(|a| a.at < healed + Duration::from_secs(2))
    {
        if Instant::now() > deadline {
            return Err("no write within 90 s of the heal".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sys.converged().await?;
    writer.wait_for(50, Duration::from_secs(20)).await;
    confirming.wait_for(10, Duration::from_secs(20)).await;
    let end = Instant::now();
    let acks = writer.finish().await;
    let confirmed = confirming.finish().await;
    let sampled = sampler.finish().await;
    let last = acks.last().ok_or("no acknowledged write")?.node;
    let lost = lost_writes(
        SocketAddr::new(last, REDIS_PORT),
        Some(&password),
        &key,
        &acks,
    )
    .await
    .ok_or("the master's log cannot be read")?;
    let confirmed_lost = lost_writes(
        SocketAddr::new(last, REDIS_PORT),
        Some(&password),
        &confirmed_key,
        &confirmed,
    )
    .await
    .ok_or("the master's confirmed log cannot be read")?;
    let gap = longest_gap_within(&acks, t0, end).as_secs_f64() * 1000.0;
    Ok(Run {
        unavailable_ms: gap,
        longest_gap_ms: gap,
        lost: lost.len(),
        acknowledged: acks.len(),
        confirmed: confirmed.len(),
        confirmed_lost: confirmed_lost.len(),
        follow_ms: None,
        double_rounds: sampled.doubles,
        double_ms: sampled.double_time.as_secs_f64() * 1000.0,
        leader_changes: leader_changes(&acks, t0),
    })
}

async fn one_run(
    sys: &mut System,
    sc: Scenario,
    n: usize,
    outage: Duration,
) -> Result<Run, String> {
    if sc.held() {
        let hold = if sc == Scenario::ApiCut {
            Duration::from_secs(20)
        } else {
            outage
        };
        return held_run(sys, sc, n, hold).await;
    }
    let old = sys.converged().await?;
    let key = format!("log:{sc:?}:{n}");
    let password = sys.password();
    let writer = ClientWriter::start(sys.route(), Some(password.clone()), key.clone());
    let confirmed_key = format!("wlog:{sc:?}:{n}");
    let confirming =
        ClientWriter::start_confirming(sys.route(), Some(password.clone()), confirmed_key.clone());
    let sampler = WritableSampler::start(sys.all_addrs(), Some(password.clone()));
    if !writer.wait_for(50, Duration::from_secs(20)).await {
        return Err("the writer does not get writes through before the fault".into());
    }
    let t0 = Instant::now();
    let fault = sys.inject(sc, old).await?;
    let deadline = t0 + Duration::from_secs(90);
    let first = loop {
        if let Some(a) = writer.first_elsewhere(t0, old) {
            break a;
        }
        if Instant::now() > deadline {
            sys.recover(sc, old, fault).await;
            return Err("no write reached a new master within 90 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    sys.recover(sc, old, fault).await;
    let mut follow_ms = None;
    while Instant::now() < deadline {
        if sys.followed(first.node).await {
            follow_ms = Some(t0.elapsed().as_secs_f64() * 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writer.wait_for(50, Duration::from_secs(20)).await;
    confirming.wait_for(10, Duration::from_secs(20)).await;
    let acks = writer.finish().await;
    let confirmed = confirming.finish().await;
    let sampled = sampler.finish().await;
    let lost = lost_writes(
        SocketAddr::new(first.node, REDIS_PORT),
        Some(&password),
        &key,
        &acks,
    )
    .await
    .ok_or("the new master's log cannot be read")?;
    let confirmed_lost = lost_writes(
        SocketAddr::new(first.node, REDIS_PORT),
        Some(&password),
        &confirmed_key,
        &confirmed,
    )
    .await
    .ok_or("the new master's confirmed log cannot be read")?;
    Ok(Run {
        unavailable_ms: (first.at - t0).as_secs_f64() * 1000.0,
        longest_gap_ms: longest_gap_within(&acks, t0, first.at).as_secs_f64() * 1000.0,
        lost: lost.len(),
        acknowledged: acks.len(),
        confirmed: confirmed.len(),
        confirmed_lost: confirmed_lost.len(),
        follow_ms,
        double_rounds: sampled.doubles,
        double_ms: sampled.double_time.as_secs_f64() * 1000.0,
        leader_changes: leader_changes(&acks, t0),
    })
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

struct Cell {
    system: String,
    scenario: Scenario,
    runs: Vec<Run>,
    errors: Vec<String>,
    skipped: bool,
}

impl Cell {
    fn unavail(&self) -> Vec<f64> {
        self.runs.iter().map(|r| r.unavailable_ms).collect()
    }
    fn median(&self) -> f64 {
        percentile(&self.unavail(), 0.5)
    }
}

async fn steady_state(sys: &System) -> Value {
    let window = Duration::from_secs(10);
    match sys {
        System::Ours(g, _, _) => {
            let pids: Vec<u32> = g
                .cluster
                .pod_names()
                .iter()
                .filter_map(|p| g.cluster.container_pid(p, "sidecar"))
                .collect();
            let r0 = g.cluster.server.requests_received();
            let stats = cpu_and_rss(&pids, window).await;
            let r1 = g.cluster.server.requests_received();
            json!({
                "process": "sidecar",
                "cpu_percent": stats.iter().map(|s| s.0).collect::<Vec<_>>(),
                "rss_mib": stats.iter().map(|s| s.1).collect::<Vec<_>>(),
                "api_requests_per_second": (r1 - r0) as f64 / window.as_secs_f64(),
            })
        }
        System::Sentinel(s) => {
            let stats = cpu_and_rss(&s.sentinel_pids(), window).await;
            json!({
                "process": "redis-sentinel",
                "cpu_percent": stats.iter().map(|s| s.0).collect::<Vec<_>>(),
                "rss_mib": stats.iter().map(|s| s.1).collect::<Vec<_>>(),
                "api_requests_per_second": 0.0,
            })
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs: usize = flag(&args, "--runs")
        .map(|r| r.parse().expect("--runs: a number"))
        .unwrap_or(if quick { 2 } else { 10 });
    let systems: Vec<String> = flag(&args, "--systems")
        .unwrap_or("fast,default,fast-rpo,sentinel-1000,sentinel-5000".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let json_path = flag(&args, "--json");
    let scenarios: Vec<Scenario> = match flag(&args, "--scenarios") {
        Some(list) => list
            .split(',')
            .map(|l| {
                *Scenario::ALL
                    .iter()
                    .find(|s| s.letter() == l.trim())
                    .unwrap_or_else(|| panic!("--scenarios: unknown {l:?} (a to f)"))
            })
            .collect(),
        None => Scenario::ALL.to_vec(),
    };
    let outage = Duration::from_secs(
        flag(&args, "--outage-secs")
            .map(|r| r.parse().expect("--outage-secs: a number"))
            .unwrap_or(60),
    );
    let started = chrono_like_now();
    println!("failover benchmark: {runs} runs per scenario and system; systems {systems:?}\n");

    let mut cells: Vec<Cell> = Vec::new();
    let mut steady: Vec<(String, Value)> = Vec::new();
    for which in &systems {
        let mut sys = match which.as_str() {
            "fast" => System::Ours(
                Box::new(KubeGroup::start(3, &Profile::fast()).await),
                Profile::fast(),
                Client::Service,
            ),
            "fast-sentinel-client" => System::Ours(
                Box::new(KubeGroup::start(3, &Profile::fast()).await),
                Profile::fast(),
                Client::Sentinel,
            ),
            "default" => System::Ours(
                Box::new(KubeGroup::start(3, &Profile::default_timing()).await),
                Profile::default_timing(),
                Client::Service,
            ),
            "fast-rpo" => System::Ours(
                Box::new(KubeGroup::start(3, &Profile::fast_rpo()).await),
                Profile::fast_rpo(),
                Client::Service,
            ),
            // The fast profile in persistence mode `none` (the shipped manifests before
            // issue 19); the others run the shipped `aof`.
            "fast-none" => System::Ours(
                Box::new(
                    KubeGroup::start_with(
                        3,
                        &Profile::fast_none(),
                        &Overrides {
                            component: Some("components/persistence-none"),
                            ..Default::default()
                        },
                    )
                    .await,
                ),
                Profile::fast_none(),
                Client::Service,
            ),
            s if s.starts_with("sentinel-") => {
                let d: u64 = s["sentinel-".len()..]
                    .parse()
                    .expect("sentinel-<down-after ms>");
                let ips = harness::cluster::free_pod_network(3);
                match SentinelGroup::start(ips, d).await {
                    Ok(g) => System::Sentinel(g),
                    Err(e) => {
                        eprintln!("{s}: {e}");
                        std::process::exit(2);
                    }
                }
            }
            other => panic!("--systems: unknown {other}"),
        };
        let name = sys.name();
        if let Err(e) = sys.converged().await {
            eprintln!("{name}: never converged: {e}");
            std::process::exit(2);
        }
        steady.push((name.clone(), steady_state(&sys).await));
        for sc in scenarios.iter().copied() {
            let mut cell = Cell {
                system: name.clone(),
                scenario: sc,
                runs: Vec::new(),
                errors: Vec::new(),
                skipped: false,
            };
            if matches!(sys, System::Sentinel(_)) && sc == Scenario::ApiCut {
                cell.skipped = true;
                cells.push(cell);
                continue;
            }
            for n in 0..runs {
                match one_run(&mut sys, sc, n, outage).await {
                    Ok(r) => {
                        eprintln!(
                            "{name} {}: run {n}: unavailable {:.0} ms, gap {:.0} ms, lost {}/{}, WAIT-confirmed lost {}/{}, follow {:?} ms, two writable {} rounds, leader changes {}",
                            sc.label(),
                            r.unavailable_ms,
                            r.longest_gap_ms,
                            r.lost,
                            r.acknowledged,
                            r.confirmed_lost,
                            r.confirmed,
                            r.follow_ms.map(|f| f.round()),
                            r.double_rounds,
                            r.leader_changes
                        );
                        cell.runs.push(r)
                    }
                    Err(e) => {
                        eprintln!("{name} {}: run {n} failed: {e}", sc.label());
                        if let System::Ours(g, _, _) = &sys {
                            eprintln!("pod logs (last 30 lines each):\n{}", g.logs(30));
                        }
                        cell.errors.push(e);
                    }
                }
            }
            cells.push(cell);
        }
        if let System::Ours(g, _, _) = sys {
            g.stop().await;
        }
    }

    print_tables(&cells, &steady, runs, &started);
    if let Some(path) = json_path {
        let data = json!({
            "started": started,
            "runs_per_scenario": runs,
            "machine": machine(),
            "cells": cells.iter().map(|c| json!({
                "system": c.system,
                "scenario": c.scenario.label(),
                "skipped": c.skipped,
                "errors": c.errors,
                "runs": c.runs.iter().map(|r| json!({
                    "unavailable_ms": r.unavailable_ms,
                    "longest_gap_ms": r.longest_gap_ms,
                    "lost": r.lost,
                    "acknowledged": r.acknowledged,
                    "wait_confirmed": r.confirmed,
                    "wait_confirmed_lost": r.confirmed_lost,
                    "replicas_follow_ms": r.follow_ms,
                    "two_writable_rounds": r.double_rounds,
                    "two_writable_ms": r.double_ms,
                    "leader_changes": r.leader_changes,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "steady_state": steady.iter().map(|(s, v)| json!({"system": s, "measures": v})).collect::<Vec<_>>(),
        });
        // Relative to the workspace root: cargo runs a bench in its package's directory.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&path, serde_json::to_string_pretty(&data).unwrap()).expect("--json");
        println!("\nJSON: {}", path.display());
        for (suffix, chart) in charts(&cells, started.as_str()) {
            let svg = path.with_extension(suffix);
            std::fs::write(&svg, chart.svg()).expect("writing a chart beside the JSON");
            println!("chart: {}", svg.display());
        }
    }
}

/// The two charts beside the JSON: each system's median unavailability per scenario (a log
/// scale: ours and Sentinel's differ by orders of magnitude), and acknowledged writes lost.
fn charts(cells: &[Cell], started: &str) -> Vec<(&'static str, harness::chart::Chart)> {
    let mut systems: Vec<String> = Vec::new();
    for c in cells {
        if !systems.contains(&c.system) {
            systems.push(c.system.clone());
        }
    }
    let groups = |value: &dyn Fn(&Cell) -> Option<f64>| {
        Scenario::ALL
            .iter()
            .filter(|sc| cells.iter().any(|c| c.scenario == **sc))
            .map(|sc| harness::chart::Group {
                label: sc.label().to_string(),
                values: systems
                    .iter()
                    .map(|s| {
                        cells
                            .iter()
                            .find(|c| c.scenario == *sc && &c.system == s)
                            .filter(|c| !c.skipped && !c.runs.is_empty())
                            .and_then(value)
                    })
                    .collect(),
            })
            .collect()
    };
    vec![
        (
            "failover.svg",
            harness::chart::Chart {
                title: format!("Writes unavailable after the fault, median ({started})"),
                axis: "milliseconds (log scale)".into(),
                series: systems.clone(),
                groups: groups(&|c| Some(c.median().max(1.0))),
                log: true,
            },
        ),
        (
            "lost.svg",
            harness::chart::Chart {
                title: format!("Acknowledged writes lost, all runs ({started})"),
                axis: "writes".into(),
                series: systems.clone(),
                groups: groups(&|c| Some(c.runs.iter().map(|r| r.lost).sum::<usize>() as f64)),
                log: false,
            },
        ),
    ]
}

/// The machine line for the record.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} cores ({model}), Linux {}", kernel.trim())
}

/// UTC now as `YYYY-MM-DD HH:MM` (from `date`, to keep a time crate out of the benchmark).
fn chrono_like_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn print_tables(cells: &[Cell], steady: &[(String, Value)], runs: usize, started: &str) {
    println!(
        "\n## Failover, {runs} runs each ({started}; {})\n",
        machine()
    );
    println!(
        "| scenario | system | runs | unavailable median | p99 | max | longest write gap p99 | acknowledged writes lost (total / worst run) | WAIT 1-confirmed writes lost (of confirmed) | every replica follows, median / p99 | two writable masters: rounds (time) | leader changes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for sc in Scenario::ALL {
        for c in cells.iter().filter(|c| c.scenario == sc) {
            if c.skipped {
                println!(
                    "| {} | {} | – | no equivalent | | | | | | | | |",
                    sc.label(),
                    c.system
                );
                continue;
            }
            let u = c.unavail();
            let gaps: Vec<f64> = c.runs.iter().map(|r| r.longest_gap_ms).collect();
            let follow: Vec<f64> = c
                .runs
                .iter()
                .map(|r| r.follow_ms.unwrap_or(f64::NAN))
                .collect();
            let not_followed = c.runs.iter().filter(|r| r.follow_ms.is_none()).count();
            println!(
                "| {} | {} | {}{} | {} | {} | {} | {} | {} / {} | {} ({}) | {} / {}{} | {} ({}) | {} |",
                sc.label(),
                c.system,
                c.runs.len(),
                if c.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed)", c.errors.len())
                },
                ms(percentile(&u, 0.5)),
                ms(percentile(&u, 0.99)),
                ms(percentile(&u, 1.0)),
                ms(percentile(&gaps, 0.99)),
                c.runs.iter().map(|r| r.lost).sum::<usize>(),
                c.runs.iter().map(|r| r.lost).max().unwrap_or(0),
                c.runs.iter().map(|r| r.confirmed_lost).sum::<usize>(),
                c.runs.iter().map(|r| r.confirmed).sum::<usize>(),
                ms(percentile(&follow, 0.5)),
                ms(percentile(&follow, 0.99)),
                if not_followed > 0 {
                    format!(" ({not_followed} never within 90 s)")
                } else {
                    String::new()
                },
                c.runs.iter().map(|r| r.double_rounds).sum::<u64>(),
                ms(c.runs.iter().map(|r| r.double_ms).sum::<f64>()),
                c.runs.iter().map(|r| r.leader_changes).sum::<usize>(),
            );
        }
    }
    println!("\n## Ratio of median unavailability to Sentinel's (below 1: faster than Sentinel)\n");
    let sentinels: Vec<&str> = {
        let mut v: Vec<&str> = cells
            .iter()
            .filter(|c| c.system.starts_with("Sentinel"))
            .map(|c| c.system.as_str())
            .collect();
        v.dedup();
        v
    };
    print!("| scenario | system |");
    for s in &sentinels {
        print!(" vs {s} |");
    }
    println!();
    println!("|---|---|{}", "---|".repeat(sentinels.len()));
    for sc in Scenario::ALL {
        for c in cells
            .iter()
            .filter(|c| c.scenario == sc && !c.system.starts_with("Sentinel"))
        {
            print!("| {} | {} |", sc.label(), c.system);
            for s in &sentinels {
                let theirs = cells
                    .iter()
                    .find(|x| x.scenario == sc && x.system == *s && !x.skipped)
                    .map(Cell::median);
                match theirs {
                    Some(t) if t.is_finite() && t > 0.0 => print!(" {:.3} |", c.median() / t),
                    _ => print!(" – |"),
                }
            }
            println!();
        }
    }
    println!("\n## Steady state (idle, converged, 10 s)\n");
    println!(
        "| system | process | CPU % of one core (each) | resident memory MiB (each) | API requests/s (group) |"
    );
    println!("|---|---|---|---|---|");
    for (s, v) in steady {
        let list = |k: &str, p: usize| {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| format!("{:.*}", p, x.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        println!(
            "| {s} | {} | {} | {} | {:.1} |",
            v["process"].as_str().unwrap_or_default(),
            list("cpu_percent", 2),
            list("rss_mib", 1),
            v["api_requests_per_second"].as_f64().unwrap_or(0.0)
        );
    }
    println!("\n## Targets (this project)\n");
    for c in cells
        .iter()
        .filter(|c| !c.system.starts_with("Sentinel") && !c.skipped)
    {
        let u = c.unavail();
        let lease = if c.system.contains("fast") {
            3000.0
        } else {
            10_000.0
        };
        let lost: usize = c.runs.iter().map(|r| r.lost).sum();
        let sentinel_lost_max = cells
            .iter()
            .filter(|x| x.scenario == c.scenario && x.system.starts_with("Sentinel"))
            .map(|x| x.runs.iter().map(|r| r.lost).sum::<usize>())
            .min();
        let (target, met) = match c.scenario {
            Scenario::RedisKilled => (
                "median < 250 ms, p99 < 1 s, lost ≤ Sentinel's".to_string(),
                percentile(&u, 0.5) < 250.0
                    && percentile(&u, 0.99) < 1000.0
                    && sentinel_lost_max.is_none_or(|s| lost <= s),
            ),
            Scenario::PodKilled => (
                format!(
                    "every run < lease + 0.5 s = {}, lost ≤ Sentinel's",
                    ms(lease + 500.0)
                ),
                percentile(&u, 1.0) < lease + 500.0 && sentinel_lost_max.is_none_or(|s| lost <= s),
            ),
            Scenario::PodTerminated | Scenario::Switchover => (
                "p99 < 300 ms, 0 lost".to_string(),
                percentile(&u, 0.99) < 300.0 && lost == 0,
            ),
            Scenario::ApiCut => (
                "failsafe: no leader change, 0 lost, 0 rounds with two writable masters"
                    .to_string(),
                c.runs
                    .iter()
                    .all(|r| r.double_rounds == 0 && r.leader_changes == 0 && r.lost == 0),
            ),
            Scenario::ApiOutage => {
                // Sentinel's median gap over the same 60 s: the writer's own jitter.
                let theirs = cells
                    .iter()
                    .filter(|x| x.scenario == c.scenario && x.system.starts_with("Sentinel"))
                    .map(Cell::median)
                    .fold(f64::NAN, f64::min);
                (
                    format!(
                        "median gap within 50 ms of Sentinel's ({}), 0 lost, 0 leader changes, 0 rounds with two writable masters",
                        ms(theirs)
                    ),
                    (theirs.is_nan() || percentile(&u, 0.5) <= theirs + 50.0)
                        && lost == 0
                        && c.runs
                            .iter()
                            .all(|r| r.double_rounds == 0 && r.leader_changes == 0),
                )
            }
        };
        let confirmed_lost: usize = c.runs.iter().map(|r| r.confirmed_lost).sum();
        // From the first write on the new leader to the last replica linked to it.
        let follow_after: Vec<f64> = c
            .runs
            .iter()
            .map(|r| r.follow_ms.map_or(f64::INFINITY, |f| f - r.unavailable_ms))
            .collect();
        // Issue 13: WAIT-confirmed writes survive every failover; after (a) and (b) every
        // replica follows the new leader within a second (fault to the last replica linked).
        let (target, met) = match c.scenario {
            Scenario::RedisKilled | Scenario::PodKilled => (
                format!(
                    "{target}, 0 WAIT-confirmed lost, every replica follows (median) < 1 s after the new leader"
                ),
                met && confirmed_lost == 0 && percentile(&follow_after, 0.5) < 1000.0,
            ),
            _ => (
                format!("{target}, 0 WAIT-confirmed lost"),
                met && confirmed_lost == 0,
            ),
        };
        println!(
            "* {} — {}: {target}: **{}** (median {}, p99 {}, max {}, lost {lost}, WAIT-confirmed lost {confirmed_lost}, replicas follow {} after the new leader (median))",
            c.system,
            c.scenario.label(),
            if met && c.errors.is_empty() {
                "met"
            } else {
                "missed"
            },
            ms(percentile(&u, 0.5)),
            ms(percentile(&u, 0.99)),
            ms(percentile(&u, 1.0)),
            ms(percentile(&follow_after, 0.5)),
        );
    }
}

/// A Redis user (`None`: `default`) and its password.
struct Observer(Option<&'static str>, String);

impl Observer {
    fn auth(&self) -> harness::measure::Auth<'_> {
        harness::measure::Auth {
            user: self.0,
            password: &self.1,
        }
    }
}
