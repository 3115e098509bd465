//! `redis-k8s-election local`: the shipped manifests run as a whole group under kubesim (API
//! server with RBAC enforced, StatefulSet controller, kubelet, service proxy), driven from
//! outside as a user would: redis-cli through the leader port, kubectl, the status command,
//! signals to the pods' processes, and Ctrl-C.

use harness::{ClientWriter, Route, longest_gap, shipped_rule_count};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{process_alive, signal};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redis-k8s-election")
}

/// A `local` process on its own loopback address and pod network, its output collected.
struct Local {
    child: Child,
    out: Arc<Mutex<String>>,
    ip: Ipv4Addr,
    state: PathBuf,
    _tmp: tempfile::TempDir,
}

/// An address for the API server and Service ports, and a /24 of other addresses for pods.
fn fresh_ips() -> (Ipv4Addr, String) {
    let v4 = |a: std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => ip,
        _ => unreachable!(),
    };
    let ip = v4(testkit::free_loopback_addr());
    loop {
        let [_, b, c, _] = v4(testkit::free_loopback_addr()).octets();
        if [b, c] != ip.octets()[1..3] {
            return (ip, format!("127.{b}.{c}.0/24"));
        }
    }
}

impl Local {
    fn start(extra: &[&str]) -> Self {
        let (ip, net) = fresh_ips();
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let mut child = Command::new(bin())
            .args(["local", "--address", &ip.to_string(), "--pod-network", &net])
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Self {
            child,
            out,
            ip,
            state,
            _tmp: tmp,
        }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits for a line starting with `prefix` after the first `skip` such lines; its rest.
    fn wait_line(&self, prefix: &str, skip: usize, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let out = self.output();
            if let Some(l) = out.lines().filter(|l| l.starts_with(prefix)).nth(skip) {
                return l[prefix.len()..].to_string();
            }
            assert!(
                Instant::now() < until,
                "no {prefix:?} line within {within:?}; output:\n{out}\n{}",
                self.pod_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.state.join("kubeconfig")
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with(Path::new("kubectl"), args)
    }

    /// `kubectl` of a given version (see `testkit::kubectl_versions`).
    fn kubectl_with(&self, bin: &Path, args: &[&str]) -> String {
        let out = Command::new(bin)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl on PATH");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pod(&self, name: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", "pod", name, "-o", "json"])).unwrap()
    }

    fn pods(&self) -> Vec<Value> {
        let v: Value = serde_json::from_str(&self.kubectl(&["get", "pods", "-o", "json"])).unwrap();
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// The PID of a container, from the kubelet's `containerID` (`kubesim://PID`).
    fn pid(&self, pod: &str, container: &str) -> Option<u32> {
        let p = self.pod(pod);
        p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == container)?["containerID"]
            .as_str()?
            .strip_prefix("kubesim://")?
            .parse()
            .ok()
    }

    /// The Redis password this run made (the Secret `redis-auth`, as `kubectl` reads it).
    fn password(&self) -> String {
        use base64::Engine;
        let b64 = self.kubectl(&[
            "get",
            "secret",
            "redis-auth",
            "-o",
            "jsonpath={.data.password}",
        ]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .expect("base64");
        String::from_utf8(bytes).unwrap()
    }

    fn redis_cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &self.ip.to_string(), "-p", &port.to_string()])
            .args(["-a", &self.password(), "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn status(&self) -> String {
        let out = Command::new(bin())
            .arg("status")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pod_logs(&self) -> String {
        let mut out = String::new();
        let Ok(pods) = std::fs::read_dir(self.state.join("node/pods")) else {
            return out;
        };
        for p in pods.flatten() {
            for log in ["sidecar.log", "redis.log"] {
                let text =
                    std::fs::read_to_string(p.path().join("logs").join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("== {} {log}\n", p.file_name().to_string_lossy()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Ctrl-C: waits for a clean exit.
    fn interrupt(&mut self, within: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "-INT");
        let until = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < until,
                "local did not stop within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // A failed test: the pods die with it (the kubelet sets PR_SET_PDEATHSIG).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A sidecar's `redis_election_api_errors_total{kind="forbidden"}`, read over a plain
/// HTTP/1.0 GET (0 when it does not answer).
fn forbidden_count(http: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(addr) = http.parse::<std::net::SocketAddr>() else {
        return 0;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("redis_election_api_errors_total{kind=\"forbidden\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn sidecar_http(pod: &Value) -> Option<String> {
    Some(format!("{}:9121", pod["status"]["podIP"].as_str()?))
}

#[test]
fn shipped_manifests_run_fail_over_on_delete_restart_crashes_and_stop_cleanly() {
    let mut local = Local::start(&[]);
    let leader = local.wait_line("leader: ", 0, Duration::from_secs(60));
    let leader = leader.split_whitespace().next().unwrap().to_string();

    // Issue 17: the state directory and the files with credentials are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&local.state), 0o700, "state directory");
    assert_eq!(
        mode(&local.kubeconfig()),
        0o600,
        "kubeconfig (a bearer token)"
    );
    assert_eq!(mode(&local.state.join("admin-token")), 0o600, "admin token");
    // The manifests ship no credentials; this run made its own, random, and the connection
    // lines carry them.
    let password = local.password();
    assert_eq!(
        redis_k8s_election::sidecar::config::credential_weakness(&password),
        None
    );
    assert!(
        local
            .output()
            .contains(&format!("-a {password} --no-auth-warning")),
        "{}",
        local.output()
    );

    // redis-cli through the leader Service's port writes; the read port reaches the replicas.
    assert_eq!(local.redis_cli(6380, &["SET", "greeting", "hello"]), "OK");
    // Issue 17: the printed password is the application user's, which cannot take the group
    // over (through the Services a client ran FLUSHALL and read requirepass).
    for refused in [
        &["FLUSHALL"][..],
        &["CONFIG", "GET", "requirepass"],
        &["REPLICAOF", "NO", "ONE"],
        &["CONFIG", "SET", "min-replicas-to-write", "0"],
    ] {
        for port in [6380, 6381] {
            let answer = local.redis_cli(port, refused);
            assert!(answer.contains("NOPERM"), "{refused:?} on {port}: {answer}");
        }
    }
    wait_until(
        "the write readable through the read port",
        Duration::from_secs(10),
        || local.redis_cli(6381, &["GET", "greeting"]) == "hello",
    );
    wait_until(
        "the read port to reach a read-only replica",
        Duration::from_secs(20),
        || {
            local
                .redis_cli(6381, &["SET", "x", "1"])
                .contains("READONLY")
        },
    );

    // What kubectl shows is what a cluster would show.
    let shown = local.kubectl(&["get", "pods,svc,endpoints,leases,events"]);
    for needle in [
        "pod/redis-0",
        "pod/redis-2",
        "2/2",
        "Running",
        "service/redis-leader",
        "endpoints/redis-leader",
        "lease.coordination.k8s.io/redis",
        &leader,
        "Scheduled",
        "Started",
        "Promoted",
        "SuccessfulCreate",
    ] {
        assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
    }
    // Issue 18: the disruption controller keeps the budget: with 3 of 3 pods ready and
    // maxUnavailable 1, one disruption is allowed (a drain proceeds), for old and new kubectl.
    wait_until(
        "the PodDisruptionBudget to allow one disruption",
        Duration::from_secs(20),
        || {
            local.kubectl(&[
                "get",
                "pdb",
                "redis",
                "-o",
                "jsonpath={.status.disruptionsAllowed}",
            ]) == "1"
        },
    );
    for kubectl in testkit::kubectl_versions() {
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(local.kubeconfig())
            .args(["get", "pdb", "redis", "--no-headers"])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.get(3), Some(&"1"), "{}: {line}", kubectl.display());
    }
    // Issue 18: the node, and `auth can-i` (access reviews against the shipped Role), for the
    // oldest and the newest kubectl. The sidecars' account may write its Lease, not delete
    // StatefulSets (the control).
    let sa_token = local
        .kubectl(&["create", "token", "redis"])
        .trim()
        .to_string();
    for kubectl in testkit::kubectl_versions() {
        let run = |args: &[&str]| {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(local.kubeconfig())
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let v = kubectl.display();
        let nodes = run(&["get", "nodes", "--no-headers"]);
        assert!(nodes.contains(" Ready "), "{v}: {nodes}");
        assert_eq!(run(&["auth", "can-i", "delete", "pods"]), "yes", "{v}");
        let token = format!("--token={sa_token}");
        assert_eq!(
            run(&[&token, "auth", "can-i", "update", "leases/redis"]),
            "yes",
            "{v}"
        );
        assert_eq!(
            run(&[&token, "auth", "can-i", "delete", "statefulsets"]),
            "no",
            "{v}"
        );
        let listed = run(&[&token, "auth", "can-i", "--list"]);
        assert!(
            listed.contains("leases.coordination.k8s.io"),
            "{v}: {listed}"
        );
    }
    // Issue 18: installed as `kubectl-redis_election`, the binary is a kubectl plugin.
    let plugins = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(bin(), plugins.path().join("kubectl-redis_election")).unwrap();
    let mut path = std::ffi::OsString::from(plugins.path());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap());
    let plugin = Command::new("kubectl")
        .args(["redis-election", "status"])
        .env("PATH", &path)
        .env("KUBECONFIG", local.kubeconfig())
        .output()
        .unwrap();
    let shown_by_plugin = String::from_utf8_lossy(&plugin.stdout);
    assert!(
        plugin.status.success() && shown_by_plugin.contains(&leader),
        "kubectl redis-election status: {shown_by_plugin}{}",
        String::from_utf8_lossy(&plugin.stderr)
    );
    // Issue 18: the sidecar's Events name the pod with its uid, so describe lists them.
    wait_until(
        "describe to list the leader's Promoted Event",
        Duration::from_secs(10),
        || {
            local
                .kubectl(&["describe", "pod", &leader])
                .contains("Promoted")
        },
    );
    let pods = local.pods();
    assert_eq!(pods.len(), 3);
    let ips: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .collect();
    assert_eq!(ips.len(), 3, "each pod on its own address");
    // RBAC enforced and sufficient: no sidecar was refused anything.
    for p in &pods {
        let http = sidecar_http(p).unwrap();
        assert_eq!(forbidden_count(&http), 0, "{http} was refused a request");
    }

    // Deleting the leader pod (a planned move): writes go on after a short interruption and
    // none is lost; the StatefulSet makes the pod again and it rejoins.
    // The harness' writer, on a runtime of its own (this test drives a process, not tasks).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let writer = {
        let _in_runtime = rt.enter();
        ClientWriter::start(
            Route::Service(std::net::SocketAddr::new(local.ip.into(), 6380)),
            Some(local.password()),
            "log".into(),
        )
    };
    rt.block_on(writer.progress(200));
    let old_uid = local.pod(&leader)["metadata"]["uid"].clone();
    local.kubectl(&["delete", "pod", &leader]);
    let next = local.wait_line("leader: ", 1, Duration::from_secs(60));
    let next = next.split_whitespace().next().unwrap().to_string();
    assert_ne!(next, leader);
    rt.block_on(writer.progress(200));
    wait_until(
        "the deleted pod made again and ready",
        Duration::from_secs(60),
        || {
            let p = local.pod(&leader);
            p["metadata"]["uid"] != old_uid
                && p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        },
    );
    let acks = rt.block_on(writer.finish());
    let stored = local.redis_cli(6380, &["LRANGE", "log", "0", "-1"]);
    let stored: std::collections::HashSet<u64> = stored
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let lost: Vec<u64> = acks
        .iter()
        .map(|a| a.seq)
        .filter(|n| !stored.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost",
        lost.len(),
        acks.len()
    );
    let gap = longest_gap(&acks);
    assert!(gap < Duration::from_secs(5), "writes stopped for {gap:?}");

    // Crashes: the kubelet restarts a replica's Redis and the leader's sidecar, and the group
    // converges again (status reports no disagreement, every pod ready).
    let replica = ["redis-0", "redis-1", "redis-2"]
        .into_iter()
        .find(|p| *p != next)
        .unwrap();
    let redis_pid = local.pid(replica, "redis").unwrap();
    let sidecar_pid = local.pid(&next, "sidecar").unwrap();
    signal(redis_pid, "-KILL");
    signal(sidecar_pid, "-KILL");
    wait_until("both containers restarted", Duration::from_secs(30), || {
        let restarted = |pod: &str, c: &str| {
            local.pod(pod)["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| {
                    cs.iter().any(|s| {
                        s["name"] == c
                            && s["restartCount"].as_u64() >= Some(1)
                            && s["state"]["running"].is_object()
                    })
                })
        };
        restarted(replica, "redis") && restarted(&next, "sidecar")
    });
    wait_until(
        "the group converged after the crashes",
        Duration::from_secs(60),
        || {
            let s = local.status();
            s.contains("No disagreements.")
                && s.lines()
                    .filter(|l| l.starts_with("redis-") && l.contains(" yes "))
                    .count()
                    == 3
                && local.redis_cli(6380, &["SET", "after", "crash"]) == "OK"
        },
    );

    // Issue 18: `kubectl logs`, oldest and newest kubectl: a container's output, the run
    // before its restart (`-p`), `--tail`, `-f`; an unknown container is refused.
    for kubectl in testkit::kubectl_versions() {
        let v = kubectl.display().to_string();
        let logs = |args: &[&str]| {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(local.kubeconfig())
                .arg("logs")
                .args(args)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, out, err) = logs(&[&next, "-c", "sidecar"]);
        assert!(ok && out.contains("starting"), "{v}: {out}{err}");
        let (ok, out, _) = logs(&[&next, "-c", "sidecar", "--tail=1"]);
        assert!(ok && out.trim_end().lines().count() == 1, "{v}: {out}");
        // The sidecar killed above: its run before the restart.
        let (ok, out, err) = logs(&[&next, "-c", "sidecar", "-p"]);
        assert!(ok && out.contains("starting"), "{v}: {out}{err}");
        let (ok, _, err) = logs(&[&next, "-c", "nosuch"]);
        assert!(
            !ok && err.contains("container nosuch is not valid for pod"),
            "{v}: {err}"
        );
        // -f: the output so far, then it keeps streaming until stopped.
        let mut follow = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(local.kubeconfig())
            .args(["logs", "-f", "--tail=1", &next, "-c", "redis"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(follow.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{v}: -f streamed nothing");
        assert!(follow.try_wait().unwrap().is_none(), "{v}: -f ended");
        let _ = follow.kill();
        let _ = follow.wait();
    }

    // Ctrl-C: everything stops and nothing is left behind.
    let pids: Vec<u32> = ["redis-0", "redis-1", "redis-2"]
        .iter()
        .flat_map(|p| ["redis", "sidecar"].map(|c| local.pid(p, c)))
        .flatten()
        .collect();
    assert_eq!(pids.len(), 6);
    let status = local.interrupt(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", local.output());
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} outlived local");
    }
    assert!(!local.state.exists(), "the state directory was removed");
}

/// The Role from a copy of `deploy/kubernetes` with rule `drop` removed.
fn manifests_without_rule(dir: &Path, drop: usize) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    std::fs::create_dir_all(dir).unwrap();
    for f in std::fs::read_dir(&shipped).unwrap().flatten() {
        // The files of the base; components are directories, not part of it.
        if f.path().is_file() {
            std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
        }
    }
    let rbac = std::fs::read_to_string(shipped.join("rbac.yaml")).unwrap();
    // Rules are the `- apiGroups:` items of the Role; each runs until the next item or `---`.
    let mut out = String::new();
    let mut index = None::<usize>;
    let mut count = 0;
    for line in rbac.lines() {
        if line.trim_start().starts_with("- apiGroups:") {
            index = Some(count);
            count += 1;
        } else if line.starts_with("---")
            || (!line.starts_with(' ') && !line.is_empty() && !line.starts_with('#'))
        {
            index = None;
        }
        if index == Some(drop) && !line.trim_start().starts_with('#') {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(count > drop, "the Role has {count} rules");
    std::fs::write(dir.join("rbac.yaml"), out).unwrap();
}

#[test]
fn every_role_rule_is_needed_by_the_group_under_kubesim() {
    // Each rule removed in turn, in groups running side by side: the sidecars' requests that
    // rule covers are refused (403 from kubesim's RBAC), so the group cannot do its work.
    // The positive case (nothing refused with the whole Role) is in the test above.
    let rules = shipped_rule_count();
    assert!(rules >= 5, "the shipped Role has {rules} rules");
    let handles: Vec<_> = (0..rules)
        .map(|rule| {
            std::thread::spawn(move || {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("manifests");
                manifests_without_rule(&dir, rule);
                let mut local =
                    Local::start(&["--replicas", "2", "--manifests", dir.to_str().unwrap()]);
                local.wait_line("Ctrl-C stops", 0, Duration::from_secs(30));
                let deadline = Instant::now() + Duration::from_secs(60);
                let refused = loop {
                    let refused: u64 = local
                        .pods()
                        .iter()
                        .filter_map(sidecar_http)
                        .map(|h| forbidden_count(&h))
                        .sum();
                    if refused > 0 || Instant::now() > deadline {
                        break refused;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                };
                let status = local.interrupt(Duration::from_secs(60));
                assert!(status.success());
                (rule, refused, local.output())
            })
        })
        .collect();
    for h in handles {
        let (rule, refused, out) = h.join().unwrap();
        assert!(
            refused > 0,
            "without rule {rule} nothing was refused:\n{out}"
        );
    }
}

#[test]
fn kubectl_apply_brings_up_the_group_in_an_empty_local_cluster() {
    let mut local = Local::start(&["--empty"]);
    local.wait_line("Ctrl-C stops", 0, Duration::from_secs(30));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let dir = shipped.to_str().unwrap();
    // The manifests ship no credentials: the Secret comes first, from the shipped generator.
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret.yaml");
    let made = Command::new("sh")
        .arg(shipped.join("make-secret.sh"))
        .output()
        .expect("sh runs");
    assert!(made.status.success());
    std::fs::write(&secret, &made.stdout).unwrap();
    let made = local.kubectl(&["apply", "-f", secret.to_str().unwrap()]);
    assert!(made.contains("secret/redis-auth created"), "{made}");
    // No --validate=false: kubesim serves the OpenAPI documents kubectl validates with. The
    // oldest kubectl creates (it also downloads and parses /openapi/v2), the newest applies
    // again below.
    let versions = testkit::kubectl_versions();
    let applied = local.kubectl_with(&versions[0], &["apply", "-k", dir]);
    assert!(
        applied.contains("statefulset.apps/redis created")
            && applied.contains("networkpolicy.networking.k8s.io/redis created"),
        "{applied}"
    );
    local.wait_line("leader: ", 0, Duration::from_secs(60));
    assert_eq!(local.redis_cli(6380, &["SET", "k", "v"]), "OK");
    // Applied again, nothing is created. (The StatefulSet reads "configured": the server
    // adds apiVersion, kind and defaults to its claim templates, a list kubectl replaces
    // whole, as it does against a real API server.)
    let again = local.kubectl_with(versions.last().unwrap(), &["apply", "-k", dir]);
    assert!(
        !again.contains(" created") && again.contains("statefulset.apps/redis "),
        "{again}"
    );
    assert!(local.interrupt(Duration::from_secs(60)).success());
}

/// `local --keep-data DIR` (AOF, the shipped default): the whole group SIGKILLed, `local`
/// stopped, then started again on the same claims (a new cluster, new pod addresses, no
/// Lease): the group comes back with every acknowledged write, through a cold start.
#[test]
fn keep_data_brings_the_whole_group_back_with_its_writes_after_a_kill() {
    let data = tempfile::tempdir().unwrap();
    let keep = data.path().join("claims");
    let keep_arg = keep.to_str().unwrap();
    let mut local = Local::start(&["--keep-data", keep_arg]);
    local.wait_line("leader: ", 0, Duration::from_secs(60));
    let out = local.output();
    assert!(out.contains("data (PersistentVolumeClaims): "), "{out}");
    let pvcs = local.kubectl(&["get", "pvc"]);
    assert_eq!(pvcs.matches(" Bound ").count(), 3, "{pvcs}");
    let values: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    let mut args = vec!["RPUSH", "log"];
    args.extend(values.iter().map(String::as_str));
    assert_eq!(local.redis_cli(6380, &args), "500");
    // Every container of the group at once.
    let pids: Vec<u32> = ["redis-0", "redis-1", "redis-2"]
        .iter()
        .flat_map(|p| [local.pid(p, "redis"), local.pid(p, "sidecar")])
        .flatten()
        .collect();
    assert_eq!(pids.len(), 6, "{}", local.status());
    for pid in &pids {
        signal(*pid, "-KILL");
    }
    assert!(local.interrupt(Duration::from_secs(60)).success());
    assert!(
        local.output().contains("the data kept in"),
        "{}",
        local.output()
    );
    assert!(!local.state.exists(), "the state directory was removed");
    assert!(
        keep.join("default/data-redis-0").is_dir(),
        "the claims stay"
    );

    let mut again = Local::start(&["--keep-data", keep_arg]);
    again.wait_line("leader: ", 0, Duration::from_secs(90));
    assert_eq!(
        again.redis_cli(6380, &["LLEN", "log"]),
        "500",
        "{}",
        again.pod_logs()
    );
    assert_eq!(again.redis_cli(6380, &["LINDEX", "log", "499"]), "499");
    assert!(again.interrupt(Duration::from_secs(60)).success());
}

/// Runs the redis-cli command a `local` line prints (everything after `redis-cli`) with
/// `args` appended; its trimmed output, errors included.
fn printed_cli(line: &str, args: &[&str]) -> String {
    let printed = line
        .split_once("redis-cli ")
        .map(|(_, rest)| rest.trim_end_matches(')'))
        .unwrap_or_else(|| panic!("no redis-cli command in {line:?}"));
    let out = Command::new("redis-cli")
        .args(printed.split_whitespace())
        .args(args)
        .output()
        .expect("redis-cli is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_string()
}

/// Issue 17: `local --tls` runs the group with TLS everywhere. Through the lines it prints,
/// redis-cli writes and reads, the replicas acknowledge (so replication runs over TLS: Redis
/// has no plain port), a Redis crash fails over, the printed switchover command (HTTPS to the
/// leader's sidecar) and a `SENTINEL FAILOVER` at a replica's endpoint (forwarded over HTTPS)
/// hand over, each followed by writes over TLS. Plain clients are refused on every Redis and
/// Sentinel port and by the sidecars' API; redis-py checks the certificate and its name.
#[test]
fn tls_group_serves_fails_over_and_switches_over_over_tls_only() {
    let local = Local::start(&["--tls"]);
    let leader = local.wait_line("leader: ", 0, Duration::from_secs(90));
    let leader = leader.split_whitespace().next().unwrap().to_string();
    let writes = local.wait_line("writes (Service redis-leader): ", 0, Duration::ZERO);
    let reads = local.wait_line("reads  (Service redis):        ", 0, Duration::ZERO);
    let sentinel = local.wait_line("sentinel (Service redis-sentinel): ", 0, Duration::ZERO);
    let ca = local.state.join("ca.crt");
    for line in [&writes, &reads, &sentinel] {
        assert!(
            line.contains(&format!("--tls --cacert {}", ca.display())),
            "{line}"
        );
    }
    assert_eq!(printed_cli(&writes, &["SET", "k0", "before"]), "OK");
    // Both replicas acknowledge: their links to the leader are up, over TLS.
    wait_until(
        "both replicas to acknowledge",
        Duration::from_secs(30),
        || printed_cli(&writes, &["WAIT", "2", "2000"]) == "2",
    );
    wait_until(
        "the read port to serve the write",
        Duration::from_secs(10),
        || printed_cli(&reads, &["GET", "k0"]) == "before",
    );

    // Plain clients are refused on every port; the same command over TLS is the control.
    let ip = local.ip.to_string();
    let password = local.password();
    for port in ["6380", "6381", "26379"] {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                &ip,
                "-p",
                port,
                "-a",
                &password,
                "--no-auth-warning",
                "PING",
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            !said.contains("PONG"),
            "plain PING on {port} answered: {said}"
        );
    }
    assert_eq!(printed_cli(&writes, &["PING"]), "PONG");
    // A real client library that checks the certificate chain and the name (the address it
    // connects to is among the certificate's names); without the CA it is refused.
    let py = |cafile: &str| {
        let script = format!(
            "import redis,sys\n\
             r = redis.Redis(host='{ip}', port=6380, password=sys.argv[1], ssl=True, \
             ssl_ca_certs={cafile}, ssl_check_hostname=True, socket_timeout=5)\n\
             r.set('py', 'tls')\nprint(r.get('py').decode())"
        );
        let out = Command::new("python3")
            .args(["-c", &script, &password])
            .output()
            .expect("python3 with redis-py (.ci/run installs it)");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert_eq!(py(&format!("'{}'", ca.display())).trim(), "tls");
    assert!(
        py("None").contains("CERTIFICATE_VERIFY_FAILED"),
        "redis-py trusted the group's certificate without its CA"
    );

    // The sidecars' API serves HTTPS only (the kubelet's probes, over HTTPS, made the pods
    // ready): `status` reaches every sidecar with the CA, none without it, and a plain
    // request gets no HTTP answer.
    let status = |with_ca: bool| {
        let mut c = Command::new(bin());
        c.arg("status").arg("--kubeconfig").arg(local.kubeconfig());
        if with_ca {
            c.arg("--tls-ca-file").arg(&ca);
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    wait_until(
        "status over HTTPS with no disagreement",
        Duration::from_secs(30),
        || status(true).contains("No disagreements."),
    );
    assert!(
        !status(false).contains("No disagreements."),
        "{}",
        status(false)
    );
    for p in local.pods() {
        let http = sidecar_http(&p).unwrap();
        let mut s = std::net::TcpStream::connect(&http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET /livez HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            !String::from_utf8_lossy(&answer).contains("HTTP/1"),
            "{http} answered plain HTTP"
        );
    }

    // The Sentinel endpoint, over TLS, names the leader; a Sentinel-aware client (redis-py,
    // which checks the certificate's name on both connections) finds it and writes.
    let leader_ip = local.pod(&leader)["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let master = printed_cli(
        &sentinel,
        &["SENTINEL", "get-master-addr-by-name", "mymaster"],
    );
    assert!(master.starts_with(&leader_ip), "{master}");
    let script = format!(
        "import redis.sentinel,sys\n\
         tls = dict(ssl=True, ssl_ca_certs='{ca}', ssl_check_hostname=True, socket_timeout=5)\n\
         s = redis.sentinel.Sentinel([('{ip}', 26379)], sentinel_kwargs=tls, **tls)\n\
         m = s.master_for('mymaster', password=sys.argv[1])\n\
         m.set('via-sentinel', 'tls')\nprint(m.get('via-sentinel').decode())",
        ca = ca.display()
    );
    let out = Command::new("python3")
        .args(["-c", &script, &password])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "tls",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Failover after the leader's Redis crashes; writes go on over TLS.
    signal(local.pid(&leader, "redis").unwrap(), "-KILL");
    let next = local.wait_line("leader: ", 1, Duration::from_secs(60));
    let next = next.split_whitespace().next().unwrap().to_string();
    assert_ne!(next, leader);
    wait_until(
        "a write after the failover",
        Duration::from_secs(30),
        || printed_cli(&writes, &["SET", "k1", "after-failover"]) == "OK",
    );
    assert_eq!(printed_cli(&writes, &["GET", "k0"]), "before");

    // A switchover hands over to a caught-up replica; writes go on over TLS.
    wait_until(
        "both replicas to acknowledge again",
        Duration::from_secs(60),
        || printed_cli(&writes, &["WAIT", "2", "2000"]) == "2",
    );
    // The printed switchover command (over HTTPS, with the CA) hands over.
    let switchover = local.wait_line("switchover: ", 0, Duration::ZERO);
    assert!(switchover.contains("--tls-ca-file"), "{switchover}");
    let mut words = switchover.split_whitespace();
    assert_eq!(words.next(), Some("redis-k8s-election"));
    let out = Command::new(bin()).args(words).output().unwrap();
    assert!(
        out.status.success(),
        "switchover: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let third = local.wait_line("leader: ", 2, Duration::from_secs(60));
    assert_ne!(third.split_whitespace().next().unwrap(), next);
    wait_until(
        "a write after the switchover",
        Duration::from_secs(30),
        || printed_cli(&writes, &["SET", "k2", "after-switchover"]) == "OK",
    );
    // SENTINEL FAILOVER at a replica's endpoint (over TLS) is forwarded to the leader's
    // sidecar over HTTPS, with the admin token, and hands over.
    let third = third.split_whitespace().next().unwrap().to_string();
    wait_until(
        "both replicas to acknowledge a third time",
        Duration::from_secs(60),
        || printed_cli(&writes, &["WAIT", "2", "2000"]) == "2",
    );
    let replica_ip = local
        .pods()
        .into_iter()
        .find(|p| p["metadata"]["name"] != third.as_str())
        .and_then(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .unwrap();
    let token = std::fs::read_to_string(local.state.join("admin-token")).unwrap();
    let failover = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&ca)
        .args([
            "-h",
            &replica_ip,
            "-p",
            "26379",
            "--user",
            "admin",
            "--pass",
        ])
        .arg(token.trim())
        .args(["--no-auth-warning", "SENTINEL", "FAILOVER", "mymaster"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&failover.stdout).trim(),
        "OK",
        "{}",
        String::from_utf8_lossy(&failover.stderr)
    );
    let fourth = local.wait_line("leader: ", 3, Duration::from_secs(60));
    assert_ne!(fourth.split_whitespace().next().unwrap(), third);
    wait_until(
        "a write after the Sentinel failover",
        Duration::from_secs(30),
        || printed_cli(&writes, &["SET", "k3", "after-sentinel-failover"]) == "OK",
    );
    for (k, v) in [
        ("k0", "before"),
        ("k1", "after-failover"),
        ("k2", "after-switchover"),
        ("py", "tls"),
    ] {
        assert_eq!(printed_cli(&writes, &["GET", k]), v, "{k}");
    }
}

/// Issue 18: `local | head -1`, then Ctrl-C. After the first line `head` exits and every
/// later line meets a closed pipe; `local` must carry on, and on SIGINT stop the pods and
/// remove its state directory (kubeconfig, password, tokens) and exit cleanly. (It used to
/// panic on the broken pipe and abort, leaving the pods to SIGKILL and the secrets behind.)
#[test]
fn a_closed_output_pipe_and_ctrl_c_leave_no_process_or_secret_behind() {
    let (ip, net) = fresh_ips();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut head = Command::new("head")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Command::new(bin())
        .args(["local", "--address", &ip.to_string(), "--pod-network", &net])
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::from(head.stdin.take().unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = head.wait_with_output().unwrap();
    assert!(!first.stdout.is_empty(), "head read no line");
    // The group comes up with nobody reading its output: three ready pods.
    let kubeconfig = state.join("kubeconfig");
    let ready = || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "pods", "--no-headers"])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).matches(" 2/2 ").count() == 3)
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "local died with its output closed"
        );
        assert!(Instant::now() < deadline, "the group never became ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "pods", "-o", "json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    // Each container's PID, from the kubelet's `containerID` (`kubesim://PID`).
    let pods: Vec<u32> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| {
            c["containerID"]
                .as_str()?
                .strip_prefix("kubesim://")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(pods.len(), 6, "{listed}");
    signal(child.id(), "-INT");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("local did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "local exited with {status:?}");
    assert!(
        !state.exists(),
        "the state directory (with its secrets) was left behind"
    );
    for pid in pods {
        assert!(!process_alive(pid), "process {pid} outlived local");
    }
}

/// Issue 18: `local` checks what it needs before it starts anything, and says what to install
/// or change: no redis-server on PATH, a Redis too old for the sidecar, a port in use. Each
/// exits 1 with the message and leaves no state directory. The control: the same command
/// with the machine's redis-server gets past the checks (it starts the group).
#[test]
fn missing_prerequisites_are_named_before_anything_starts() {
    use std::os::unix::fs::PermissionsExt;
    let run_at = |path: &std::ffi::OsStr, (ip, net): (Ipv4Addr, String), extra: &[&str]| {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let mut child = Command::new(bin())
            .args(["local", "--address", &ip.to_string(), "--pod-network", &net])
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .env("PATH", path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // At most the time to start; a started group is ended here.
        let deadline = Instant::now() + Duration::from_secs(20);
        let started = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if state.join("kubeconfig").exists() || Instant::now() > deadline {
                break true;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if started {
            signal(child.id(), "-INT");
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (started, out.status, stderr, state.exists())
    };
    let run = |path: &std::ffi::OsStr, extra: &[&str]| run_at(path, fresh_ips(), extra);
    let system_path = std::env::var_os("PATH").unwrap();

    // No redis-server: a directory on PATH with nothing in it.
    let empty = tempfile::tempdir().unwrap();
    let (started, status, err, left) = run(empty.path().as_os_str(), &[]);
    assert!(!started && status.code() == Some(1), "{status:?} {err}");
    assert!(
        err.contains("redis-server not found") && err.contains("apt-get install redis-server"),
        "{err}"
    );
    assert!(!left, "a state directory was left");

    // A Redis too old: 6.2 says so on --version.
    let old = tempfile::tempdir().unwrap();
    let fake = old.path().join("redis-server");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Redis server v=6.2.14 sha=00000000:0 bits=64'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = std::ffi::OsString::from(old.path());
    path.push(":");
    path.push(&system_path);
    let (started, status, err, _) = run(&path, &[]);
    assert!(!started && status.code() == Some(1), "{status:?} {err}");
    assert!(err.contains("redis-server 6.2 is too old"), "{err}");

    // A port in use: the leader Service's.
    let (ip, net) = fresh_ips();
    let taken = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (started, status, err, _) = run_at(&system_path, (ip, net), &["--leader-port", &port]);
    assert!(!started && status.code() == Some(1), "{status:?} {err}");
    assert!(
        err.contains("--leader-port") && err.contains(&port),
        "{err}"
    );

    // The control: the machine's redis-server, free ports.
    let (started, _, err, _) = run(&system_path, &[]);
    assert!(started, "local did not start: {err}");
}
