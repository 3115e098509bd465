//! Full-sync benchmark (issue 13): how Redis' disk-based and diskless full syncs compare for
//! what this project cares about, on real `redis-server` processes.
//!
//! For each mode and data-set size: a master filled with random 1 KiB values, a client that
//! `INCR`s a counter on it every millisecond (`--write-interval-ms`; 0: back to back) throughout, and an empty replica told to
//! `REPLICAOF` it. Both start as the manifests start Redis, as replicas of themselves, and
//! the master is promoted with `REPLICAOF NO ONE`, as a sidecar does. Measured per run:
//! * *sync*: from `REPLICAOF` until the replica reports its link up;
//! * *stream after sync*: from the link up until the replica holds the counter value the
//!   master had acknowledged at that instant: how long acknowledged writes stayed on the master
//!   alone after a sync that Redis reports complete;
//! * *memory*: the peak resident memory of the master and its fork child together during the
//!   sync (copy-on-write pages are counted in both, so this is an upper bound), and the
//!   master's `used_memory` before it;
//! * *disk*: the RDB files left in the master's and the replica's directories.
//!
//! `cargo bench -p redis-k8s-election --bench sync -- [--runs N] [--sizes 1KiB,10MiB,1GiB]
//!  [--modes disk,diskless,diskless-delay-5] [--write-interval-ms 1]`

use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::RedisServer;

/// One full-sync configuration of the master.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `repl-diskless-sync no`: what the shipped manifests use.
    Disk,
    /// `repl-diskless-sync yes` with no delay.
    Diskless,
    /// `repl-diskless-sync yes` with Redis' default 5 s delay: the manifests before issue 13.
    DisklessDelay5,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Disk => "disk (shipped)",
            Mode::Diskless => "diskless, delay 0",
            Mode::DisklessDelay5 => "diskless, delay 5 s (Redis default; manifests before)",
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Mode::Disk => [
                "--repl-diskless-sync",
                "no",
                "--repl-diskless-sync-delay",
                "0",
            ],
            Mode::Diskless => [
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ],
            Mode::DisklessDelay5 => [
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "5",
            ],
        }
    }
}

struct Run {
    sync_ms: f64,
    stream_ms: f64,
    peak_rss_mib: f64,
    used_memory_mib: f64,
    master_rdb_mib: f64,
    replica_rdb_mib: f64,
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Resident memory of `pid` and its direct children, in KiB.
fn rss_with_children(pid: u32) -> u64 {
    let rss = |p: &str| {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    rss(&pid.to_string()) + children.split_whitespace().map(rss).sum::<u64>()
}

fn file_mib(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".rdb"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>() as f64
                / (1 << 20) as f64
        })
        .unwrap_or(0.0)
}

async fn conn(s: &RedisServer) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(600)));
    redis::Client::open(format!("redis://{}", s.addr))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Fills the master with `bytes` of random (incompressible, as real data mostly is) 1 KiB
/// values, so that the RDB file is as large as the data set.
async fn fill(m: &mut MultiplexedConnection, bytes: u64) {
    use rand::RngCore;
    let value_size = 1024usize;
    let keys = (bytes / value_size as u64).max(1);
    let mut rng = rand::rng();
    let mut value = vec![0u8; value_size];
    let mut n = 0u64;
    while n < keys {
        let mut pipe = redis::pipe();
        for _ in 0..1000.min(keys - n) {
            rng.fill_bytes(&mut value);
            pipe.cmd("SET").arg(format!("key:{n}")).arg(&value).ignore();
            n += 1;
        }
        let _: () = pipe.query_async(m).await.unwrap();
    }
}

fn info_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim_end().strip_prefix(&format!("{key}:")))
        .map(str::to_string)
}

async fn one_run(mode: Mode, bytes: u64, interval: Duration) -> Run {
    // Both start as the shipped manifests start them, as replicas of themselves; the master
    // is then promoted, as a sidecar promotes it.
    let start_as_own_replica = |extra: &[&str]| {
        let addr = testkit::free_loopback_addr();
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--replicaof", &ip, &port]);
        RedisServer::start_at(addr, &args)
    };
    let master = start_as_own_replica(&mode.args());
    let replica = start_as_own_replica(&[]);
    let mut m = conn(&master).await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut m)
        .await
        .unwrap();
    fill(&mut m, bytes).await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut m)
        .await
        .unwrap();
    let used_memory_mib = info_field(&info, "used_memory")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        / (1 << 20) as f64;

    // A writer acknowledged on the master every millisecond, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut c = conn(&master).await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _: Result<i64, _> = redis::cmd("INCR").arg("counter").query_async(&mut c).await;
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
        })
    };
    let peak = Arc::new(std::sync::Mutex::new(0u64));
    let sampler = {
        let (stop, peak, pid) = (stop.clone(), peak.clone(), master.pid());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let now = rss_with_children(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(now);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut r = conn(&replica).await;
    let (host, port) = master.host_port();
    let t0 = Instant::now();
    let _: () = redis::cmd("REPLICAOF")
        .arg(&host)
        .arg(port)
        .query_async(&mut r)
        .await
        .unwrap();
    let deadline = t0 + Duration::from_secs(600);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut r)
            .await
            .unwrap_or_default();
        if info_field(&info, "master_link_status").as_deref() == Some("up") {
            break;
        }
        assert!(Instant::now() < deadline, "no sync within 600 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let linked = Instant::now();
    let acknowledged: i64 = redis::cmd("GET")
        .arg("counter")
        .query_async(&mut m)
        .await
        .unwrap();
    loop {
        let on_replica: Option<i64> = redis::cmd("GET")
            .arg("counter")
            .query_async(&mut r)
            .await
            .unwrap_or(None);
        if on_replica.unwrap_or(0) >= acknowledged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never got the stream"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let streamed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    let _ = sampler.await;
    let peak_kib = *peak.lock().unwrap();
    Run {
        sync_ms: (linked - t0).as_secs_f64() * 1000.0,
        stream_ms: (streamed - linked).as_secs_f64() * 1000.0,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        used_memory_mib,
        master_rdb_mib: file_mib(master.dir.path()),
        replica_rdb_mib: file_mib(replica.dir.path()),
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = flag(&args, "--runs").map_or(5, |r| r.parse().expect("--runs"));
    let interval = Duration::from_millis(
        flag(&args, "--write-interval-ms").map_or(1, |r| r.parse().expect("--write-interval-ms")),
    );
    let sizes: Vec<String> = flag(&args, "--sizes")
        .unwrap_or("1KiB,10MiB,1GiB".into())
        .split(',')
        .map(str::to_string)
        .collect();
    let modes: Vec<Mode> = flag(&args, "--modes")
        .unwrap_or("disk,diskless,diskless-delay-5".into())
        .split(',')
        .map(|m| match m {
            "disk" => Mode::Disk,
            "diskless" => Mode::Diskless,
            "diskless-delay-5" => Mode::DisklessDelay5,
            other => panic!("--modes: unknown {other}"),
        })
        .collect();
    println!(
        "| data set | full sync | runs | sync median / max | writes on the master alone after the sync: median / p99 / max | peak RSS master + fork child | used_memory | RDB files (master / replica) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for size in &sizes {
        let bytes = harness::parse_size(size);
        for mode in &modes {
            let mut rs = Vec::new();
            for n in 0..runs {
                let r = one_run(*mode, bytes, interval).await;
                eprintln!(
                    "{size} {}: run {n}: sync {:.0} ms, stream after sync {:.0} ms, peak RSS {:.0} MiB",
                    mode.name(),
                    r.sync_ms,
                    r.stream_ms,
                    r.peak_rss_mib
                );
                rs.push(r);
            }
            let sync: Vec<f64> = rs.iter().map(|r| r.sync_ms).collect();
            let stream: Vec<f64> = rs.iter().map(|r| r.stream_ms).collect();
            let peak: Vec<f64> = rs.iter().map(|r| r.peak_rss_mib).collect();
            println!(
                "| {size} | {} | {runs} | {:.0} / {:.0} ms | {:.0} / {:.0} / {:.0} ms | {:.0} MiB | {:.0} MiB | {:.1} / {:.1} MiB |",
                mode.name(),
                percentile(&sync, 0.5),
                percentile(&sync, 1.0),
                percentile(&stream, 0.5),
                percentile(&stream, 0.99),
                percentile(&stream, 1.0),
                percentile(&peak, 1.0),
                rs[0].used_memory_mib,
                rs[0].master_rdb_mib,
                rs[0].replica_rdb_mib,
            );
        }
    }
}
