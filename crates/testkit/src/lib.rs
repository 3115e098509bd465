//! Test support shared by the crates' integration tests: real `redis-server` processes, each
//! on its own loopback address (127.x.y.z) and port, ended by PID when dropped, even when a
//! test fails.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback address: a random 127.x.y.z (never 127.0.0.1) with a port the kernel just
/// gave out on it.
pub fn free_loopback_addr() -> SocketAddr {
    loop {
        let ip = Ipv4Addr::new(
            127,
            rand::random_range(1..250),
            rand::random_range(0..250),
            rand::random_range(2..250),
        );
        if let Ok(l) = TcpListener::bind((ip, 0)) {
            return l.local_addr().expect("bound");
        }
    }
}

/// Sends `sig` (kill's option form: `-KILL`, `-STOP`, `-9`) to `pid` and asserts it was
/// delivered.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Whether `pid` is a live process; a zombie (exited, not yet reaped) is not.
pub fn process_alive(pid: u32) -> bool {
    // /proc/PID/stat's state field follows the parenthesised command name.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// A running `redis-server`.
pub struct RedisServer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    /// Its working directory (dump files); removed on drop.
    pub dir: tempfile::TempDir,
    /// The `--requirepass` it was started with; [`RedisServer::command`] AUTHs with it.
    pub password: Option<String>,
}

impl RedisServer {
    /// Starts `redis-server` with no persistence and `extra` arguments, and waits (with a
    /// deadline) until it answers PING.
    pub fn start(extra: &[&str]) -> Self {
        for _ in 0..5 {
            // A port taken between the probe and the start: try another address.
            if let Some(s) = Self::try_start_at(free_loopback_addr(), extra) {
                return s;
            }
        }
        panic!("redis-server did not start");
    }

    /// Starts an empty `redis-server` at a given address: a restart "in the same pod".
    pub fn start_at(addr: SocketAddr, extra: &[&str]) -> Self {
        Self::try_start_at(addr, extra)
            .unwrap_or_else(|| panic!("redis-server did not start on {addr}"))
    }

    /// Starts `redis-server` from the config file `conf` (its first argument, as in the
    /// shipped manifests) with `extra` arguments after it.
    /// Readiness is a PING answered with anything (`-NOAUTH`, `-NOPERM` count as up).
    pub fn start_with_conf(conf: &std::path::Path, extra: &[&str]) -> Self {
        let mut all = vec![conf.to_str().expect("UTF-8 path")];
        all.extend_from_slice(extra);
        for _ in 0..5 {
            if let Some(s) = Self::try_start_at(free_loopback_addr(), &all) {
                return s;
            }
        }
        panic!("redis-server did not start");
    }

    fn try_start_at(addr: SocketAddr, extra: &[&str]) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        // A config file, when given, must be redis-server's first argument.
        let (conf, extra) = match extra.first() {
            Some(f) if !f.starts_with("--") => (vec![f.to_string()], &extra[1..]),
            _ => (Vec::new(), extra),
        };
        let mut args: Vec<String> = conf;
        args.extend([
            "--bind".into(),
            addr.ip().to_string(),
            "--port".into(),
            addr.port().to_string(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--protected-mode".into(),
            "no".into(),
            "--logfile".into(),
            dir.path().join("redis.log").display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (Debian package redis-server)");
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|p| p.to_string());
        let mut server = Self {
            addr,
            child,
            dir,
            password,
        };
        server.wait_ready(Duration::from_secs(10)).then_some(server)
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // A server with requirepass answers -NOAUTH: it is up all the same.
            if self.command(&["PING"]).is_some_and(|r| {
                r == "+PONG" || r.starts_with("-NOAUTH") || r.starts_with("-NOPERM")
            }) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` of the server.
    pub fn host_port(&self) -> (String, u16) {
        (self.addr.ip().to_string(), self.addr.port())
    }

    /// Sends one command in RESP and returns the first reply line, or `None` if the server
    /// cannot be reached. Enough for test set-up and checks.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let encode = |args: &[&str]| {
            let mut req = format!("*{}\r\n", args.len());
            for a in args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            req
        };
        let mut r = BufReader::new(s.try_clone().ok()?);
        let mut line = String::new();
        if let Some(p) = &self.password {
            s.write_all(encode(&["AUTH", p]).as_bytes()).ok()?;
            r.read_line(&mut line).ok()?;
            line.clear();
        }
        s.write_all(encode(args).as_bytes()).ok()?;
        r.read_line(&mut line).ok()?;
        if let Some(len) = line
            .strip_prefix('$')
            .and_then(|l| l.trim().parse::<i64>().ok())
        {
            if len < 0 {
                return Some("(nil)".into());
            }
            let mut value = String::new();
            r.read_line(&mut value).ok()?;
            return Some(value.trim_end().to_string());
        }
        Some(line.trim_end().to_string())
    }

    /// Sends SIGKILL and waits for the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by PID (e.g. `-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// The versioned kubectl binaries next to the `kubectl` on PATH (`kubectl.1.27` …
/// `kubectl.1.33` beside the `kubectl` dispatcher the machine image ships), oldest and newest:
/// what kubectl-facing behaviour is checked against.
pub fn kubectl_versions() -> Vec<std::path::PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .find(|k| k.exists())
        })
        .expect("kubectl on PATH (the machine image ships it)");
    let dir = std::fs::canonicalize(&on_path)
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let minor = name.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some((minor, dir.join(name)))
        })
        .collect();
    found.sort();
    assert!(
        !found.is_empty(),
        "no kubectl.1.* binaries in {}",
        dir.display()
    );
    let oldest = found.first().unwrap().1.clone();
    let newest = found.last().unwrap().1.clone();
    if oldest == newest {
        vec![oldest]
    } else {
        vec![oldest, newest]
    }
}
