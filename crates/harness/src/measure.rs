//! What the benchmark and the fault suite measure, for any Redis group (ours or Sentinel's):
//! a client that writes every 2 ms and keeps every acknowledged write with the node that took
//! it, a sampler of which Redis instances accept writes, and replication convergence.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a client finds the master.
#[derive(Clone)]
pub enum Route {
    /// Through a Service's proxy: every new connection goes where routing points.
    Service(SocketAddr),
    /// Sentinel discovery: after every error, ask the Sentinels (in turn) for the master.
    Sentinel {
        sentinels: Vec<SocketAddr>,
        master_name: String,
    },
    /// Where the leader Service's selector points (its `statefulset.kubernetes.io/pod-name`
    /// label, `redis-N`), read after every error: for a group without a Service proxy.
    Selector {
        kube: kube::Client,
        service: String,
        /// Each pod's Redis, by ordinal.
        pods: Vec<SocketAddr>,
    },
}

/// The Redis the leader Service selects, by reading its selector.
async fn selected(kube: &kube::Client, service: &str, pods: &[SocketAddr]) -> Option<SocketAddr> {
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::default_namespaced(kube.clone());
    let svc = tokio::time::timeout(Duration::from_secs(2), api.get(service))
        .await
        .ok()?
        .ok()?;
    let pod = svc
        .spec?
        .selector?
        .get("statefulset.kubernetes.io/pod-name")
        .cloned()?;
    let ordinal: usize = pod.strip_prefix("redis-")?.parse().ok()?;
    pods.get(ordinal).copied()
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

/// How long [`ClientWriter::start_confirming`]'s `WAIT 1` waits for a replica, in ms.
pub const CONFIRM_WAIT_MS: u64 = 100;

impl ClientWriter {
    pub fn start(route: Route, password: Option<String>, key: String) -> Self {
        Self::spawn(route, password, key, false)
    }

    /// A writer that sends `WAIT 1 100` after each write and records only the writes that a
    /// replica acknowledged: what a client that confirms its writes may count on.
    pub fn start_confirming(route: Route, password: Option<String>, key: String) -> Self {
        Self::spawn(route, password, key, true)
    }

    fn spawn(route: Route, password: Option<String>, key: String, confirm: bool) -> Self {
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
                        Route::Selector {
                            kube,
                            service,
                            pods,
                        } => selected(kube, service, pods).await,
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
                let mut reply: Result<u64, _> =
                    redis::cmd("RPUSH").arg(&key).arg(seq).query_async(c).await;
                if confirm && reply.is_ok() {
                    reply = redis::cmd("WAIT")
                        .arg(1)
                        .arg(CONFIRM_WAIT_MS)
                        .query_async(c)
                        .await;
                    if reply == Ok(0) {
                        // Not confirmed: the write may or may not survive; not counted.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        continue;
                    }
                }
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

    /// Waits until `more` further writes are acknowledged; panics if the writer stalls for
    /// 20 s (a test's way of waiting for progress rather than for time).
    pub async fn progress(&self, more: usize) {
        assert!(
            self.wait_for(more, Duration::from_secs(20)).await,
            "the writer stalled"
        );
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

/// The longest time between two consecutive acknowledgements.
pub fn longest_gap(acks: &[Ack]) -> Duration {
    acks.windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or_default()
}

/// The longest time between consecutive acknowledgements that overlaps `[from, to]`.
pub fn longest_gap_within(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    gap_within(acks.iter().map(|a| a.at), from, to)
}

/// The longest time between consecutive instants (in order) whose interval overlaps
/// `[from, to]`: the write pause a change in that window caused.
pub fn gap_within(
    times: impl IntoIterator<Item = Instant>,
    from: Instant,
    to: Instant,
) -> Duration {
    let mut times = times.into_iter();
    let Some(mut previous) = times.next() else {
        return Duration::ZERO;
    };
    let mut longest = Duration::ZERO;
    for t in times {
        if t >= from && previous <= to {
            longest = longest.max(t - previous);
        }
        previous = t;
    }
    longest
}

/// The `p` quantile (0.0–1.0, nearest rank) of the finite values; NaN when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Acknowledged writes missing from `key` on the Redis at `addr`; `None` if it cannot be
/// read.
pub async fn lost_writes(
    addr: SocketAddr,
    password: Option<&str>,
    key: &str,
    acks: &[Ack],
) -> Option<Vec<u64>> {
    missing_from_list(addr, password, key, acks.iter().map(|a| a.seq)).await
}

/// The numbers of `seqs` that the list `key` on the Redis at `addr` lacks; `None` if it cannot
/// be read.
pub async fn missing_from_list(
    addr: SocketAddr,
    password: Option<&str>,
    key: &str,
    seqs: impl IntoIterator<Item = u64>,
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
    Some(seqs.into_iter().filter(|s| !stored.contains(s)).collect())
}

/// Who the harness is to a Redis: an ACL user (`None`: `default`) and its password. The
/// shipped manifests' application user may not read the configuration a probe reads, so
/// groups on them are observed as their `admin` user.
#[derive(Clone, Copy, Debug)]
pub struct Auth<'a> {
    /// The ACL user; `None` for `default`.
    pub user: Option<&'a str>,
    /// Its password.
    pub password: &'a str,
}

impl<'a> Auth<'a> {
    /// The `default` user with `password` (a password alone, as `requirepass` sets it).
    pub fn default_user(password: &'a str) -> Self {
        Auth {
            user: None,
            password,
        }
    }
}

/// A probe of the Redis at `addr` as the sidecar reads it (`redis_node`), bounded by 300 ms.
pub async fn probe_redis(
    addr: SocketAddr,
    auth: Option<Auth<'_>>,
) -> Result<redis_node::Probe, String> {
    let mut cfg = redis_node::NodeConfig::new(addr.ip().to_string(), addr.port());
    cfg.timeout = Duration::from_millis(300);
    cfg.username = auth.and_then(|a| a.user).map(str::to_string);
    cfg.password = auth.map(|a| a.password.to_string());
    redis_node::RedisNode::new(cfg)
        .map_err(|e| format!("{addr}: {e}"))?
        .probe()
        .await
        .map_err(|e| format!("{addr} does not answer: {e}"))
}

/// Ok when the Redis at `master`'s IP is a master and every other address in `nodes`
/// replicates from it (as `expected_host`, its IP or DNS name, and `master`'s port) with its
/// link up; else what is not so. Read as the sidecar reads it (`redis_node`'s probe and INFO
/// parser).
pub async fn replicas_follow(
    nodes: &[SocketAddr],
    master: SocketAddr,
    expected_host: &str,
    auth: Option<Auth<'_>>,
) -> Result<(), String> {
    use redis_node::info::Role;
    for n in nodes {
        let probe = probe_redis(*n, auth).await?;
        let follows = match &probe.info.role {
            Role::Master => n.ip() == master.ip(),
            Role::Replica {
                master_host,
                master_port,
                link_up,
                ..
            } => {
                n.ip() != master.ip()
                    && master_host.eq_ignore_ascii_case(expected_host)
                    && *master_port == master.port()
                    && *link_up
            }
        };
        if !follows {
            return Err(format!(
                "{n}: {:?} (master {expected_host}:{}, at {master})",
                probe.info.role,
                master.port()
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
