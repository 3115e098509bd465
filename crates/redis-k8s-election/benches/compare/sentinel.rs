//! Redis Sentinel as the field runs it, for the side-by-side benchmark: three `redis-server`
//! processes from config files (Sentinel rewrites them as it reconfigures roles, so a
//! restarted node comes back as what Sentinel made it) and three `redis-sentinel` processes
//! (Debian's package), quorum 2, each pair on its own loopback address as a pod would be.

use harness::measure::{connect, replicas_follow, send_signal};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MASTER_NAME: &str = "mymaster";
const SENTINEL_PORT: u16 = 26379;

pub struct SentinelGroup {
    pub ips: Vec<Ipv4Addr>,
    pub password: String,
    pub down_after_ms: u64,
    dir: tempfile::TempDir,
    redis: Vec<Option<Child>>,
    sentinels: Vec<Option<Child>>,
}

impl SentinelGroup {
    /// Starts the group with node 0 as the master and waits until every Sentinel knows both
    /// replicas and the other two Sentinels.
    pub async fn start(ips: Vec<Ipv4Addr>, down_after_ms: u64) -> Result<Self, String> {
        if Command::new("redis-sentinel")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err(
                "redis-sentinel is not installed (apt-get install redis-sentinel; .ci/run does it)"
                    .into(),
            );
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut g = Self {
            password: "change-me-redis-password".into(),
            down_after_ms,
            redis: ips.iter().map(|_| None).collect(),
            sentinels: ips.iter().map(|_| None).collect(),
            ips,
            dir,
        };
        for i in 0..g.ips.len() {
            let d = g.dir.path().join(format!("redis-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let replicaof = if i == 0 {
                String::new()
            } else {
                format!("replicaof {} 6379\n", g.ips[0])
            };
            // The shipped manifests' Redis settings (no persistence, sync through disk), minus
            // the sidecar's start-up fence. `bind-source-addr`: on a shared loopback every
            // outgoing connection would otherwise come from 127.0.0.1, and the master and
            // the Sentinels would see one replica and one Sentinel where there are two.
            std::fs::write(
                d.join("redis.conf"),
                format!(
                    "bind {ip}\nbind-source-addr {ip}\nport 6379\nprotected-mode no\nrequirepass {pw}\nmasterauth {pw}\nsave \"\"\nappendonly no\nrepl-diskless-sync no\ndir {dir}\nlogfile {dir}/redis.log\n{replicaof}",
                    ip = g.ips[i],
                    pw = g.password,
                    dir = d.display()
                ),
            )
            .unwrap();
            let s = g.dir.path().join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&s).unwrap();
            std::fs::write(
                s.join("sentinel.conf"),
                format!(
                    "bind {ip}\nbind-source-addr {ip}\nport {SENTINEL_PORT}\nsentinel announce-ip {ip}\nprotected-mode no\ndir {dir}\nlogfile {dir}/sentinel.log\nsentinel monitor {MASTER_NAME} {m} 6379 2\nsentinel auth-pass {MASTER_NAME} {pw}\nsentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\nsentinel failover-timeout {MASTER_NAME} 10000\nsentinel parallel-syncs {MASTER_NAME} 1\n",
                    ip = g.ips[i],
                    m = g.ips[0],
                    pw = g.password,
                    dir = s.display()
                ),
            )
            .unwrap();
            g.start_redis(i);
        }
        for i in 0..g.ips.len() {
            g.start_sentinel(i);
        }
        g.converged(Duration::from_secs(60)).await?;
        Ok(g)
    }

    /// (Re)starts node `i`'s Redis from its config file.
    pub fn start_redis(&mut self, i: usize) {
        stop(&mut self.redis[i]);
        self.redis[i] = Some(self.spawn("redis-server", &format!("redis-{i}/redis.conf")));
    }

    /// (Re)starts node `i`'s Sentinel from its config file.
    pub fn start_sentinel(&mut self, i: usize) {
        stop(&mut self.sentinels[i]);
        self.sentinels[i] =
            Some(self.spawn("redis-sentinel", &format!("sentinel-{i}/sentinel.conf")));
    }

    /// Starts `program` on `conf`, a config file in the group's directory.
    fn spawn(&self, program: &str, conf: &str) -> Child {
        let mut cmd = Command::new(program);
        cmd.arg(self.dir.path().join(conf)).stdout(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A benchmark stopped by a signal (Drop does not run) takes its Redis and
                // Sentinel processes with it, as kubesim's kubelet does with its pods.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn().unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    /// Sends `sig` to node `i`'s Redis (reaped when it is restarted or the group ends).
    pub fn signal_redis(&mut self, i: usize, sig: &str) {
        if let Some(c) = self.redis[i].as_mut() {
            send_signal(c.id(), sig);
        }
    }

    /// Whether node `i`'s Redis process has exited (after SIGTERM it takes its time).
    pub fn redis_exited(&mut self, i: usize) -> bool {
        match self.redis[i].as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    pub fn kill_sentinel(&mut self, i: usize) {
        stop(&mut self.sentinels[i]);
    }

    pub fn sentinel_pids(&self) -> Vec<u32> {
        self.sentinels.iter().flatten().map(Child::id).collect()
    }

    pub fn redis_addrs(&self) -> Vec<SocketAddr> {
        self.ips
            .iter()
            .map(|ip| SocketAddr::new(IpAddr::V4(*ip), 6379))
            .collect()
    }

    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.ips
            .iter()
            .enumerate()
            .filter(|(i, _)| self.sentinels[*i].is_some())
            .map(|(_, ip)| SocketAddr::new(IpAddr::V4(*ip), SENTINEL_PORT))
            .collect()
    }

    pub fn index_of(&self, ip: IpAddr) -> Option<usize> {
        self.ips.iter().position(|i| IpAddr::V4(*i) == ip)
    }

    /// `SENTINEL FAILOVER` through the first Sentinel that takes it.
    pub async fn failover(&self) -> Result<(), String> {
        let mut last = String::new();
        for s in self.sentinel_addrs() {
            let Some(mut c) = connect(s, None, Duration::from_secs(1)).await else {
                continue;
            };
            let r: Result<String, _> = redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("SENTINEL FAILOVER refused: {last}"))
    }

    /// The master when every Sentinel agrees on it, sees two healthy replicas and the other
    /// two Sentinels, and both replicas follow it with their links up.
    pub async fn converged_now(&self) -> Result<IpAddr, String> {
        let mut master = None;
        for s in self.sentinel_addrs() {
            let mut c = connect(s, None, Duration::from_millis(300))
                .await
                .ok_or(format!("sentinel {s} does not answer"))?;
            let fields: Vec<String> = redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            let get = |k: &str| {
                fields
                    .chunks(2)
                    .find(|p| p[0] == k)
                    .map(|p| p[1].clone())
                    .unwrap_or_default()
            };
            if get("flags") != "master"
                || get("num-slaves") != "2"
                || get("num-other-sentinels") != "2"
            {
                return Err(format!(
                    "sentinel {s}: flags {} replicas {} sentinels {}",
                    get("flags"),
                    get("num-slaves"),
                    get("num-other-sentinels")
                ));
            }
            let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(MASTER_NAME)
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            for r in &replicas {
                let flags = r
                    .chunks(2)
                    .find(|p| p[0] == "flags")
                    .map(|p| p[1].clone())
                    .unwrap_or_default();
                if flags != "slave" {
                    return Err(format!("sentinel {s}: a replica is {flags}"));
                }
            }
            let ip = get("ip");
            if master.get_or_insert(ip.clone()) != &ip {
                return Err("the Sentinels disagree on the master".into());
            }
        }
        let ip: IpAddr = master
            .ok_or("no Sentinel runs")?
            .parse()
            .map_err(|e| format!("master address: {e}"))?;
        replicas_follow(
            &self.redis_addrs(),
            SocketAddr::new(ip, 6379),
            &ip.to_string(),
            Some(harness::measure::Auth::default_user(&self.password)),
        )
        .await?;
        Ok(ip)
    }

    pub async fn converged(&self, within: Duration) -> Result<IpAddr, String> {
        let deadline = Instant::now() + within;
        loop {
            match self.converged_now().await {
                Ok(ip) => return Ok(ip),
                Err(why) if Instant::now() > deadline => {
                    return Err(format!("Sentinel group not converged: {why}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Kills and reaps the process in `slot`, if any.
fn stop(slot: &mut Option<Child>) {
    if let Some(mut c) = slot.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for slot in self.redis.iter_mut().chain(self.sentinels.iter_mut()) {
            stop(slot);
        }
    }
}
