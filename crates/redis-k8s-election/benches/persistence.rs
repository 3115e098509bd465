//! Persistence benchmark (issue 19), on the shipped manifests run by kubesim (three pods,
//! the fast timing profile), per persistence mode (`aof`, the shipped default; `rdb`;
//! `none`):
//! * *cold start*: the group filled with a data set of the given size (random 4 KiB values,
//!   replicated to every pod; `rdb` snapshots taken), then every container of every pod
//!   SIGKILLed at once (the kubelet restarts them in place, on their claims). Measured from
//!   the kill to the first `SET` through the leader Service that succeeds (a new connection
//!   every 5 ms, once every killed process is gone), with the keys the new leader holds
//!   (the data set's, plus the probe's key and the checkpoint key);
//! * *throughput*: `redis-benchmark` SETs (100-byte values, 50 clients) through the leader
//!   Service, and straight to the leader pod, per mode.
//!
//! `cargo bench -p redis-k8s-election --bench persistence -- [--runs N] [--sizes 10MiB,1GiB]
//!  [--modes aof,rdb,none] [--no-throughput | --throughput-only]`

use harness::cluster::{KubeGroup, Overrides, Profile};
use harness::flag;
use harness::measure::{percentile, send_signal};
use redis::aio::MultiplexedConnection;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Aof,
    Rdb,
    None,
}

impl Mode {
    fn parse(s: &str) -> Self {
        match s {
            "aof" => Mode::Aof,
            "rdb" => Mode::Rdb,
            "none" => Mode::None,
            other => panic!("--modes: unknown mode {other:?} (aof, rdb, none)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Aof => "aof (shipped)",
            Mode::Rdb => "rdb",
            Mode::None => "none",
        }
    }

    fn overrides(self) -> Overrides {
        Overrides {
            component: match self {
                Mode::Aof => None,
                Mode::Rdb => Some("components/persistence-rdb"),
                Mode::None => Some("components/persistence-none"),
            },
            // The data sets here are larger than the shipped 200 MB bound.
            persistence_conf: Some("maxmemory 0"),
            ..Default::default()
        }
    }
}

fn size_name(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

async fn conn(addr: SocketAddr, password: &str) -> MultiplexedConnection {
    try_conn(addr, password, Duration::from_secs(600))
        .await
        .unwrap_or_else(|| panic!("no connection to {addr}"))
}

const VALUE_SIZE: usize = 4096;

/// Writes `bytes` of random 4 KiB values (`fill:N`) through the leader Service. A batch that
/// fails (a fast-profile sidecar may fence a leader its probes find slow under this load,
/// and a failover follows) is sent again on a new connection: the SETs are idempotent.
async fn fill(service: SocketAddr, password: &str, bytes: u64) -> u64 {
    use rand::RngCore;
    let keys = (bytes / VALUE_SIZE as u64).max(1);
    let mut rng = rand::rng();
    let mut value = vec![0u8; VALUE_SIZE];
    let mut n = 0u64;
    let mut m: Option<MultiplexedConnection> = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while n < keys {
        let mut pipe = redis::pipe();
        let batch = 256.min(keys - n);
        for i in 0..batch {
            rng.fill_bytes(&mut value);
            pipe.cmd("SET")
                .arg(format!("fill:{}", n + i))
                .arg(&value)
                .ignore();
        }
        loop {
            assert!(Instant::now() < deadline, "the fill made no progress");
            if m.is_none() {
                m = try_conn(service, password, Duration::from_secs(60)).await;
            }
            let Some(c) = m.as_mut() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match pipe.query_async::<()>(c).await {
                Ok(()) => break,
                Err(_) => {
                    m = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        n += batch;
    }
    keys
}

/// A connection whose replies may take up to `timeout`; `None` when it cannot be made.
async fn try_conn(
    addr: SocketAddr,
    password: &str,
    timeout: Duration,
) -> Option<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    redis::Client::open(format!("redis://:{password}@{addr}"))
        .ok()?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}

async fn dbsize(addr: SocketAddr, password: &str) -> Option<u64> {
    let client = redis::Client::open(format!("redis://:{password}@{addr}")).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("DBSIZE").query_async(&mut c).await.ok()
}

/// Waits (bounded) until every pod's Redis holds at least `keys` keys.
async fn replicated(g: &KubeGroup, keys: u64, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let mut all = true;
        for pod in g.cluster.pod_names() {
            let Some(ip) = g.cluster.pod_ip(&pod) else {
                all = false;
                continue;
            };
            let addr = SocketAddr::new(IpAddr::V4(ip), 6379);
            if dbsize(addr, &g.password).await.unwrap_or(0) < keys {
                all = false;
            }
        }
        if all {
            return;
        }
        assert!(Instant::now() < until, "the replicas did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct ColdStart {
    ms: f64,
    keys_after: u64,
    keys_filled: u64,
}

async fn cold_start(mode: Mode, bytes: u64) -> ColdStart {
    let g = KubeGroup::start_with(3, &Profile::fast(), &mode.overrides()).await;
    g.converged(Duration::from_secs(60))
        .await
        .expect("the group converges");
    let keys_filled = fill(g.leader_service(), &g.password, bytes).await;
    replicated(&g, keys_filled, Duration::from_secs(600)).await;
    let (leader, _) = g
        .converged(Duration::from_secs(120))
        .await
        .expect("the group converges after the fill");
    if mode == Mode::Rdb {
        for pod in g.cluster.pod_names() {
            let ip = g.cluster.pod_ip(&pod).expect("a pod IP");
            let mut c = conn(SocketAddr::new(IpAddr::V4(ip), 6379), &g.password).await;
            // A snapshot the schedule or a full sync started must end first.
            let until = Instant::now() + Duration::from_secs(600);
            while let Err(e) = redis::cmd("SAVE").query_async::<()>(&mut c).await {
                assert!(Instant::now() < until, "SAVE on {pod}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let pids: Vec<u32> = g
        .cluster
        .pod_names()
        .iter()
        .flat_map(|p| {
            [
                g.cluster.container_pid(p, "redis"),
                g.cluster.container_pid(p, "sidecar"),
            ]
        })
        .flatten()
        .collect();
    assert_eq!(pids.len(), 6, "every container runs");
    let killed = Instant::now();
    for pid in &pids {
        send_signal(*pid, "KILL");
    }
    // Every process gone before the first try, so that no write reaches a dying Redis.
    while pids.iter().any(|p| testkit::process_alive(*p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "SIGKILL did not end them"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let until = Instant::now() + Duration::from_secs(600);
    let first = loop {
        if write_once(g.leader_service(), &g.password).await {
            break Instant::now();
        }
        assert!(
            Instant::now() < until,
            "no write after the restart:\n{}",
            g.logs(20)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (_, ip) = g
        .converged(Duration::from_secs(120))
        .await
        .expect("the group converges again");
    let keys_after = dbsize(SocketAddr::new(IpAddr::V4(ip), 6379), &g.password)
        .await
        .unwrap_or(0);
    eprintln!(
        "  {} {}: first write {:.0} ms after the kill; leader before {leader}; keys {keys_after}/{keys_filled}",
        mode.name(),
        size_name(bytes),
        (first - killed).as_secs_f64() * 1000.0
    );
    g.stop().await;
    ColdStart {
        ms: (first - killed).as_secs_f64() * 1000.0,
        keys_after,
        keys_filled,
    }
}

/// One `SET` through a new connection to `addr`, within a second: did a writable leader take it?
async fn write_once(addr: SocketAddr, password: &str) -> bool {
    let attempt = async {
        let client = redis::Client::open(format!("redis://:{password}@{addr}")).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("SET")
            .arg("cold-start-probe")
            .arg("x")
            .query_async::<()>(&mut c)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(()))
    )
}

/// `redis-benchmark` SET requests per second against `addr`.
fn redis_benchmark(addr: SocketAddr, password: &str) -> f64 {
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args([
            "-a", password, "-t", "set", "-n", "100000", "-c", "50", "-d", "100",
        ])
        .args(["-r", "100000", "-q"])
        .output()
        .expect("redis-benchmark is installed (Debian package redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 41322.31 requests per second, p50=0.607 msec" (after carriage-return progress).
    text.split(['\r', '\n'])
        .filter_map(|l| l.trim().strip_prefix("SET: "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no SET figure in: {text}"))
}

async fn throughput(mode: Mode) -> (f64, f64) {
    let g = KubeGroup::start_with(3, &Profile::fast(), &mode.overrides()).await;
    let (_, ip) = g
        .converged(Duration::from_secs(60))
        .await
        .expect("the group converges");
    let service = g.leader_service();
    let direct = SocketAddr::new(IpAddr::V4(ip), 6379);
    let pw = g.password.clone();
    let (via, at) = tokio::task::spawn_blocking(move || {
        (redis_benchmark(service, &pw), redis_benchmark(direct, &pw))
    })
    .await
    .unwrap();
    g.stop().await;
    (via, at)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = flag(&args, "--runs").map_or(3, |v| v.parse().expect("--runs N"));
    let sizes: Vec<u64> = flag(&args, "--sizes")
        .unwrap_or_else(|| "10MiB,1GiB".into())
        .split(',')
        .map(harness::parse_size)
        .collect();
    let modes: Vec<Mode> = flag(&args, "--modes")
        .unwrap_or_else(|| "aof,rdb,none".into())
        .split(',')
        .map(Mode::parse)
        .collect();
    println!("persistence benchmark: {runs} runs per cell; three pods, fast profile (lease 3 s)");
    let mut rows = Vec::new();
    let cold_starts = !args.iter().any(|a| a == "--throughput-only");
    for &bytes in sizes.iter().filter(|_| cold_starts) {
        for &mode in &modes {
            let mut ms = Vec::new();
            let mut kept = Vec::new();
            for _ in 0..runs {
                let c = cold_start(mode, bytes).await;
                ms.push(c.ms);
                kept.push(format!("{}/{}", c.keys_after, c.keys_filled));
            }
            rows.push(format!(
                "| {} | {} | {:.0} | {:.0} | {} |",
                mode.name(),
                size_name(bytes),
                percentile(&ms, 0.5),
                percentile(&ms, 0.99),
                kept.join(", ")
            ));
        }
    }
    println!();
    println!("cold start: from SIGKILL of every container to the first acknowledged write");
    println!("| mode | data set | median ms | p99 ms | keys after / filled, per run |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    if !args.iter().any(|a| a == "--no-throughput") {
        println!();
        println!("leader write throughput (redis-benchmark SET, 100-byte values, 50 clients)");
        println!("| mode | via the leader Service, req/s | to the leader pod, req/s |");
        println!("|---|---|---|");
        for &mode in &modes {
            let mut via = Vec::new();
            let mut at = Vec::new();
            for _ in 0..runs {
                let (v, a) = throughput(mode).await;
                via.push(v);
                at.push(a);
            }
            println!(
                "| {} | {:.0} | {:.0} |",
                mode.name(),
                percentile(&via, 0.5),
                percentile(&at, 0.5)
            );
        }
    }
}
