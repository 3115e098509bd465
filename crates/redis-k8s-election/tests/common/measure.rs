//! What the benchmark and the fault suite measure, for any Redis group (ours or Sentinel's):
//! a client that writes every 2 ms and keeps every acknowledged write with the node that took
//! it, a sampler of which Redis instances accept writes, and replication convergence.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a client finds the master.
#[derive(Clone, Debug)]
pub enum Route {
    /// Through a Service's proxy: every new connection goes where routing points.
    Service(SocketAddr),
    /// Sentinel discovery: after every error, ask the Sentinels (in turn) for the master.
    Sentinel {
        sentinels: Vec<SocketAddr>,
        master_name: String,
    },
}

/// One acknowledged write.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    pub seq: u64,
    pub at: Instant,
    /// The Redis that acknowledged it (the server side of the connection, from `CLIENT
    /// INFO`'s `laddr`, so it is right behind a proxy too).
    pub node: IpAddr,
}

fn client_url(addr: SocketAddr, password: Option<&str>) -> String {
    match password {
        Some(p) => format!("redis://:{p}@{addr}"),
        None => format!("redis://{addr}"),
    }
}

/// A connection with a deadline on connecting and on every reply.
pub async fn connect(
    addr: SocketAddr,
    password: Option<&str>,
    timeout: Duration,
) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(client_url(addr, password)).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    tokio::time::timeout(
        timeout * 2,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .ok()?
    .ok()
}

/// Asks the Sentinels in turn for the master's address.
pub async fn sentinel_master(sentinels: &[SocketAddr], name: &str) -> Option<SocketAddr> {
    for s in sentinels {
        let Some(mut c) = connect(*s, None, Duration::from_millis(200)).await else {
            continue;
        };
        let reply: Result<Option<(String, u16)>, _> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(name)
            .query_async(&mut c)
            .await;
        if let Ok(Some((host, port))) = reply
            && let Ok(ip) = host.parse::<IpAddr>()
        {
            return Some(SocketAddr::new(ip, port));
        }
    }
    None
}

/// A client that `RPUSH`es an increasing number to `key` every 2 ms and records each
/// acknowledgement. On any error it drops the connection and finds the master again (a new
/// connection through the Service, or a Sentinel's answer).
pub struct ClientWriter {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClientWriter {
    pub fn start(route: Route, password: Option<String>, key: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acks.clone());
        let task = tokio::spawn(async move {
            let mut seq = 0u64;
            let mut conn: Option<(redis::aio::MultiplexedConnection, IpAddr)> = None;
            while !s.load(Ordering::Relaxed) {
                if conn.is_none() {
                    let addr = match &route {
                        Route::Service(a) => Some(*a),
                        Route::Sentinel {
                            sentinels,
                            master_name,
                        } => sentinel_master(sentinels, master_name).await,
                    };
                    if let Some(addr) = addr
                        && let Some(mut c) =
                            connect(addr, password.as_deref(), Duration::from_millis(500)).await
                    {
                        let info: Result<String, _> =
                            redis::cmd("CLIENT").arg("INFO").query_async(&mut c).await;
                        if let Some(node) = info.ok().as_deref().and_then(laddr_ip) {
                            conn = Some((c, node));
                        }
                    }
                    if conn.is_none() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                }
                let (c, node) = conn.as_mut().expect("connected above");
                seq += 1;
                let reply: Result<u64, _> =
                    redis::cmd("RPUSH").arg(&key).arg(seq).query_async(c).await;
                match reply {
                    Ok(_) => a.lock().unwrap().push(Ack {
                        seq,
                        at: Instant::now(),
                        node: *node,
                    }),
                    Err(_) => conn = None,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Self { stop, acks, task }
    }

    /// The acknowledgements so far.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits until `more` further writes are acknowledged; false at the deadline.
    pub async fn wait_for(&self, more: usize, within: Duration) -> bool {
        let target = self.count() + more;
        let deadline = Instant::now() + within;
        while self.count() < target {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The first write acknowledged after `t0` by a node other than `old`.
    pub fn first_elsewhere(&self, t0: Instant, old: IpAddr) -> Option<Ack> {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.at >= t0 && a.node != old)
            .copied()
    }

    pub async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        Arc::try_unwrap(self.acks)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|a| a.lock().unwrap().clone())
    }
}

/// `laddr=IP:port` of a `CLIENT INFO` line.
fn laddr_ip(info: &str) -> Option<IpAddr> {
    let laddr = info.split(' ').find_map(|f| f.strip_prefix("laddr="))?;
    laddr.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The longest time between consecutive acknowledgements that overlaps `[from, to]`.
pub fn longest_gap_within(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    acks.windows(2)
        .filter(|w| w[1].at >= from && w[0].at <= to)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default()
}

/// Acknowledged writes missing from `key` on the Redis at `addr`; `None` if it cannot be
/// read.
pub async fn lost_writes(
    addr: SocketAddr,
    password: Option<&str>,
    key: &str,
    acks: &[Ack],
) -> Option<Vec<u64>> {
    let mut c = connect(addr, password, Duration::from_secs(5)).await?;
    let stored: Vec<u64> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .ok()?;
    let stored: std::collections::HashSet<u64> = stored.into_iter().collect();
    Some(
        acks.iter()
            .map(|a| a.seq)
            .filter(|s| !stored.contains(s))
            .collect(),
    )
}

/// One `INFO replication` reply as a field map.
async fn replication_info(
    addr: SocketAddr,
    password: Option<&str>,
) -> Option<std::collections::HashMap<String, String>> {
    let mut c = connect(addr, password, Duration::from_millis(300)).await?;
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Ok when the Redis at `master`'s IP is a master and every other address in `nodes`
/// replicates from `master` with its link up; else what is not so.
pub async fn replicas_follow(
    nodes: &[SocketAddr],
    master: SocketAddr,
    password: Option<&str>,
) -> Result<(), String> {
    for n in nodes {
        let info = replication_info(*n, password)
            .await
            .ok_or_else(|| format!("{n} does not answer"))?;
        let get = |k: &str| info.get(k).map(String::as_str).unwrap_or_default();
        if n.ip() == master.ip() {
            if get("role") != "master" {
                return Err(format!("{n} (the master) is {}", get("role")));
            }
        } else if get("role") != "slave"
            || get("master_host") != master.ip().to_string()
            || get("master_port") != master.port().to_string()
            || get("master_link_status") != "up"
        {
            return Err(format!(
                "{n}: role {} of {}:{} link {}",
                get("role"),
                get("master_host"),
                get("master_port"),
                get("master_link_status")
            ));
        }
    }
    Ok(())
}

/// Samples which Redis instances accept a write (a `SET` of a probe key that is answered
/// `OK`) every few milliseconds. A "double" is two instances accepting writes in two
/// consecutive rounds: one round probes the nodes one after another, so a single round can
/// straddle a legitimate hand-over.
pub struct WritableSampler {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<SamplerState>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the sampler saw.
#[derive(Clone, Debug, Default)]
pub struct SamplerState {
    pub rounds: u64,
    /// Rounds that confirmed two writable instances (the second of two in a row).
    pub doubles: u64,
    /// When each double was seen, and which nodes were writable.
    pub double_at: Vec<(Instant, Vec<IpAddr>)>,
    /// Time covered by confirmed doubles (from the round before to each confirming round).
    pub double_time: Duration,
}

impl WritableSampler {
    pub fn start(addrs: Vec<SocketAddr>, password: Option<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(SamplerState::default()));
        let (s, st) = (stop.clone(), state.clone());
        let task = tokio::spawn(async move {
            let mut conns: Vec<Option<redis::aio::MultiplexedConnection>> =
                addrs.iter().map(|_| None).collect();
            let mut previous_double = false;
            let mut previous_round = Instant::now();
            let timeout = Duration::from_millis(100);
            while !s.load(Ordering::Relaxed) {
                let mut writable = Vec::new();
                for (i, addr) in addrs.iter().enumerate() {
                    if conns[i].is_none() {
                        conns[i] = connect(*addr, password.as_deref(), timeout).await;
                    }
                    let Some(c) = conns[i].as_mut() else { continue };
                    let reply: Result<String, _> = redis::cmd("SET")
                        .arg("writable-probe")
                        .arg(1)
                        .query_async(c)
                        .await;
                    match reply {
                        Ok(_) => writable.push(addr.ip()),
                        // READONLY / NOREPLICAS are answers; anything else (timeout, closed)
                        // means reconnect next round.
                        Err(e) if e.code().is_some() => {}
                        Err(_) => conns[i] = None,
                    }
                }
                let double = writable.len() > 1;
                {
                    let mut st = st.lock().unwrap();
                    st.rounds += 1;
                    if double && previous_double {
                        st.doubles += 1;
                        st.double_time += previous_round.elapsed();
                        st.double_at.push((Instant::now(), writable.clone()));
                    }
                }
                previous_double = double;
                previous_round = Instant::now();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self { stop, state, task }
    }

    pub fn state(&self) -> SamplerState {
        self.state.lock().unwrap().clone()
    }

    /// Stops (after at least three rounds, so that no result is vacuous) and returns what
    /// it saw.
    pub async fn finish(self) -> SamplerState {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state().rounds < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let state = self.state.clone();
        let _ = self.task.await;
        let st = state.lock().unwrap().clone();
        assert!(st.rounds >= 3, "the writable sampler made no progress");
        st
    }
}

/// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`); false if the process is gone.
pub fn send_signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// CPU ticks (user + system) and resident memory in KiB of a process.
pub fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(") ").next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (num(11) + num(12), rss)
}

/// CPU (% of one core) and resident memory (MiB) of each process over `window`.
pub async fn cpu_and_rss(pids: &[u32], window: Duration) -> Vec<(f64, f64)> {
    let before: Vec<(u64, u64)> = pids.iter().map(|p| proc_stat(*p)).collect();
    tokio::time::sleep(window).await;
    pids.iter()
        .zip(before)
        .map(|(p, b)| {
            let a = proc_stat(*p);
            let hz = 100.0; // USER_HZ on Linux
            (
                a.0.saturating_sub(b.0) as f64 / hz / window.as_secs_f64() * 100.0,
                a.1 as f64 / 1024.0,
            )
        })
        .collect()
}
