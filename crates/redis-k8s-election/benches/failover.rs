//! Failover figures of the sidecar (issue 3), on the same group harness as the tests: kubesim,
//! three real `redis-server` processes and three sidecars (the release binary).
//!
//! * Redis killed: SIGKILL of the leader's `redis-server`; from the kill to the first write
//!   accepted by another node (a writer tries every node every 2 ms).
//! * Pod lost: SIGKILL of the leader's Redis and sidecar together; same measure.
//! * Switchover: `redis-k8s-election switchover` (the CLI) under a writer that follows the
//!   leader Service and writes every 2 ms; the write pause per switchover (the longest gap
//!   between acknowledgements around it) and acknowledged writes lost (issue 4).
//! * Steady state: sidecar resident memory and CPU, and API writes per retry period.
//!
//! `cargo bench -p redis-k8s-election --bench failover [-- --runs N] [--switchovers N]`

use harness::measure::percentile;
use harness::*;
use std::time::{Duration, Instant};

fn summary(label: &str, v: Vec<f64>) -> String {
    format!(
        "| {label} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        percentile(&v, 1.0)
    )
}

/// Writes every 2 ms to every live node until one accepts; the time since `t0`.
async fn first_accepted_write(g: &Group, t0: Instant) -> f64 {
    let deadline = t0 + Duration::from_secs(60);
    loop {
        for r in g.redis.iter().flatten() {
            if r.command(&["SET", "bench", "1"]).as_deref() == Some("+OK") {
                return t0.elapsed().as_secs_f64() * 1000.0;
            }
        }
        assert!(Instant::now() < deadline, "no write accepted within 60 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = |name: &str, default: usize| {
        flag(&args, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let runs = count("--runs", 20);
    let switchovers = count("--switchovers", 100);
    let mut g = Group::start(3).await;
    let mut leader = g.converged(Duration::from_secs(30)).await;

    // Steady state: 10 s of an idle, converged group.
    let pids: Vec<u32> = g.sidecars.iter().flatten().map(|s| s.child.id()).collect();
    let rv0 = g.api().with_store(|s| s.rv());
    let window = Duration::from_secs(10);
    let stats = measure::cpu_and_rss(&pids, window).await;
    let rv1 = g.api().with_store(|s| s.rv());
    let cpu: Vec<f64> = stats.iter().map(|s| s.0).collect();
    let rss: Vec<f64> = stats.iter().map(|s| s.1).collect();
    let retry_period = 0.25;
    let writes_per_rp = (rv1 - rv0) as f64 / (window.as_secs_f64() / retry_period);

    let mut redis_killed = Vec::new();
    for _ in 0..runs {
        let addr = g.redis[leader].as_ref().unwrap().addr;
        let t0 = Instant::now();
        g.redis[leader].as_mut().unwrap().kill();
        g.redis[leader] = None;
        redis_killed.push(first_accepted_write(&g, t0).await);
        // The pod's Redis comes back empty, as after a container restart.
        g.redis[leader] = Some(g.start_redis_at(addr));
        leader = g.converged(Duration::from_secs(30)).await;
    }

    let mut pod_lost = Vec::new();
    for _ in 0..runs.min(10) {
        let addr = g.redis[leader].as_ref().unwrap().addr;
        let t0 = Instant::now();
        g.sidecars[leader] = None;
        g.redis[leader].as_mut().unwrap().kill();
        g.redis[leader] = None;
        pod_lost.push(first_accepted_write(&g, t0).await);
        g.redis[leader] = Some(g.start_redis_at(addr));
        g.start_sidecar(leader);
        leader = g.converged(Duration::from_secs(30)).await;
    }

    let writer = g.writer();
    writer.progress(20).await;
    let mut windows = Vec::new();
    for _ in 0..switchovers {
        let started = Instant::now();
        let (ok, _, err) = g.cli(&["switchover"]).await;
        assert!(ok, "switchover failed: {err}");
        leader = g.converged(Duration::from_secs(30)).await;
        windows.push((started, Instant::now()));
        writer.progress(5).await;
    }
    let acks = writer.finish().await;
    let lost = lost_writes(&g.redis_addr(leader), &acks).await;
    let pauses: Vec<f64> = windows
        .iter()
        .map(|(a, b)| longest_gap_within(&acks, *a, *b).as_secs_f64() * 1000.0)
        .collect();

    println!("\nsidecar failover, fast profile (lease 3s / renew 2s / retry 250ms), 3 pods");
    println!("| scenario | runs | median | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        summary("leader's Redis SIGKILLed → write accepted", redis_killed)
    );
    println!(
        "{}",
        summary(
            "leader pod (Redis + sidecar) SIGKILLed → write accepted",
            pod_lost
        )
    );
    println!(
        "{}",
        summary(
            "switchover (CLI) → write pause seen by a Service-routed writer",
            pauses
        )
    );
    println!(
        "\nswitchovers: {switchovers}, acknowledged writes {}, lost {}",
        acks.len(),
        lost.len()
    );
    println!(
        "\nsteady state, idle converged group, {} s:",
        window.as_secs()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| sidecar resident memory (per sidecar) | {} |",
        rss.iter()
            .map(|r| format!("{r:.1} MiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| sidecar CPU (per sidecar, % of one core) | {} |",
        cpu.iter()
            .map(|c| format!("{c:.2}%"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| API writes per retry period, whole group | {writes_per_rp:.2} |");
}
