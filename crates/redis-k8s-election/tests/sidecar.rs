//! The sidecar for real: kubesim's API server, three `redis-server` processes and three
//! sidecar processes (the real binary), each pod on its own loopback address. A checker samples
//! invariant 1 throughout each test.

use harness::*;
use k8s_openapi::api::core::v1::Pod;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_election_routes_replicates_and_reports() {
    let g = Group::start(3).await;
    let checker = Checker::start(addrs(&g));
    let leader = g.converged(Duration::from_secs(30)).await;
    let lr = g.redis[leader].as_ref().unwrap();
    assert_eq!(
        lr.command(&["SET", "k", "v1"]).unwrap(),
        "+OK",
        "the leader takes writes"
    );
    for i in (0..3).filter(|i| *i != leader) {
        let r = g.redis[i].as_ref().unwrap();
        assert!(
            r.command(&["SET", "x", "1"])
                .unwrap()
                .starts_with("-READONLY"),
            "replicas refuse writes"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.command(&["GET", "k"]).as_deref() != Some("v1") {
            assert!(Instant::now() < deadline, "replica {i} never got the write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(g.code(i, "/replica", true).await, 200);
        assert_eq!(g.code(i, "/leader", false).await, 503);
    }
    assert_eq!(g.code(leader, "/leader", true).await, 200);
    assert_eq!(g.code(leader, "/livez", false).await, 200);
    let st = g.status(leader).await.unwrap();
    assert_eq!(st["role"], "leader");
    assert_eq!(st["redis"]["role"], "master");
    assert!(st["epoch"].is_u64());
    let metrics = g
        .http
        .get(format!(
            "http://{}/metrics",
            g.sidecars[leader].as_ref().unwrap().http
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("redis_election_role{role=\"leader\"} 1"),
        "{metrics}"
    );
    // Role labels on every pod, and a Promoted Event.
    let pods = kube::Api::<Pod>::default_namespaced(g.kube.clone())
        .list(&Default::default())
        .await
        .unwrap();
    for p in pods.items {
        let role = p.metadata.labels.unwrap()["redis-role"].clone();
        assert_eq!(
            role == "leader",
            p.metadata.name.as_deref() == Some(name(leader).as_str())
        );
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::default_namespaced(g.kube.clone());
    let evs = events.list(&Default::default()).await.unwrap();
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Promoted")),
        "a Promoted Event"
    );
    checker.assert_one_master_throughout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_redis_killed_fails_over_to_a_replica() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    // Replication is asynchronous: the write must be on both replicas before the kill.
    // (WAIT would only count acknowledgements on the writing connection.)
    g.write_and_replicate(leader, "k", "before").await;
    g.redis[leader].as_mut().unwrap().kill();
    g.redis[leader] = None;
    let new = g.converged(Duration::from_secs(20)).await;
    assert_ne!(new, leader);
    let nr = g.redis[new].as_ref().unwrap();
    assert_eq!(
        nr.command(&["GET", "k"]).unwrap(),
        "before",
        "the new leader has the data; logs:\n{}",
        g.logs()
    );
    assert_eq!(nr.command(&["SET", "k", "after"]).unwrap(), "+OK");
    checker.assert_one_master_throughout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sidecar_killed_lease_expires_and_old_master_is_fenced() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    // The sidecar dies; its Redis lives on as a master.
    g.sidecars[leader] = None;
    let new = takeover(&g, leader, Duration::from_secs(20)).await;
    let converged = g.converged(Duration::from_secs(20)).await;
    assert_eq!(name(converged), new);
    // The new leader fenced the old master before promoting itself.
    let old = g.redis[leader].as_ref().unwrap();
    let reply = old.command(&["SET", "k", "x"]).unwrap();
    assert!(
        reply.starts_with("-NOREPLICAS") || reply.starts_with("-READONLY"),
        "old master still writable: {reply}"
    );
    assert_eq!(g.selector().await.as_deref(), Some(new.as_str()));
    checker.assert_one_master_throughout().await;
}

#[test]
fn configuration_errors_exit_2_naming_the_flag() {
    for (args, flag) in [
        (
            vec![
                "--lease-name",
                "r",
                "--pod-name",
                "p",
                "--pod-ip",
                "1.2.3.4",
                "--lease-duration",
                "5s",
            ],
            "--lease-duration",
        ),
        (
            vec![
                "--lease-name",
                "r",
                "--pod-name",
                "p",
                "--pod-ip",
                "1.2.3.4",
                "--redis-addr",
                "x",
            ],
            "--redis-addr",
        ),
        (vec!["--pod-name", "p"], "--lease-name"),
        (
            vec!["--lease-name", "r", "--pod-name", "p"],
            "--announce-addr",
        ),
        (
            vec![
                "--lease-name",
                "r",
                "--pod-name",
                "p",
                "--pod-ip",
                "1.2.3.4",
                "--kubeconfig",
                "/nonexistent",
            ],
            "--kubeconfig",
        ),
    ] {
        assert_exits_2_naming(&args, flag, flag);
    }
}

/// Runs the sidecar with `args`; it must exit 2 with `flag` and `why` on stderr.
fn assert_exits_2_naming(args: &[&str], flag: &str, why: &str) {
    {
        let out = Command::new(&*BIN)
            .arg("sidecar")
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains(why), "{args:?}: {err}");
    }
}

/// Issue 17: the shipped Secret's placeholders were accepted without a word. A credential
/// that is a known placeholder or shorter than 16 characters stops the sidecar at start, with
/// the flag and file named and the value never shown; the control, a random credential in
/// the same place, passes that check (and fails later, on the missing kubeconfig).
#[test]
fn placeholder_and_short_credentials_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        p.to_str().unwrap().to_string()
    };
    let base = [
        "--lease-name",
        "r",
        "--pod-name",
        "p",
        "--pod-ip",
        "1.2.3.4",
    ];
    let cases = [
        (
            "--redis-password-file",
            file("pw", "change-me-redis-password\n"),
            "placeholder",
        ),
        (
            "--redis-password-file",
            file("pw2", "CHANGE_ME_please_0123456789"),
            "placeholder",
        ),
        (
            "--redis-password-file",
            file("pw3", "foobared"),
            "placeholder",
        ),
        (
            "--admin-token-file",
            file("tok", "change-me-admin-token"),
            "placeholder",
        ),
        (
            "--admin-token-file",
            file("tok2", "short-token"),
            "fewer than 16",
        ),
        (
            "--peer-key-file",
            file("key", "change-me-peer-key-change-me-peer-key"),
            "placeholder",
        ),
        (
            "--sentinel-password-file",
            file("spw", "tiny"),
            "fewer than 16",
        ),
    ];
    for (flag, path, why) in &cases {
        let mut args: Vec<&str> = base.to_vec();
        if *flag == "--sentinel-password-file" {
            args.extend(["--sentinel-addr", "127.0.0.1:26379"]);
        }
        args.extend([*flag, path.as_str()]);
        assert_exits_2_naming(&args, flag, why);
        let out = Command::new(&*BIN)
            .arg("sidecar")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("change-me") && !err.contains("short-token"),
            "the value is shown: {err}"
        );
    }
    // The control: a random credential passes; the sidecar gets as far as the kubeconfig.
    let good = file("good", "3f9a1c0e7b2d4c6a8e1f0b3d5c7a9e2f\n");
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--redis-password-file", &good, "--admin-token-file", &good]);
    args.extend(["--kubeconfig", "/nonexistent"]);
    assert_exits_2_naming(&args, "--kubeconfig", "--kubeconfig");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader_sidecar_is_fenced_remotely_then_fences_itself_and_follows() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    let pid = g.sidecars[leader].as_ref().unwrap().child.id();
    signal(pid, "-STOP");
    // Its Redis keeps running and stays a master; the new leader must fence it first.
    let new = takeover(&g, leader, Duration::from_secs(20)).await;
    // The new holder fences the old master right after winning the Lease and before it
    // promotes itself (the checker verifies the order): wait for the fence.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refuses_writes(g.redis[leader].as_ref().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the stopped leader's Redis was never fenced"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(pid, "-CONT");
    // On resume it fences first, sees the new holder and follows it.
    let converged = g.converged(Duration::from_secs(20)).await;
    assert_eq!(name(converged), new);
    let st = g.status(leader).await.unwrap();
    assert_eq!(st["role"], "replica", "{st}");
    assert_eq!(st["leader"], new.as_str());
    checker.assert_one_master_throughout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_off_from_the_api_fences_itself_before_anyone_takes_over() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    // Clients still reach its Redis; only its API access is gone.
    let cut = g.api().faults().add(kubesim::Fault {
        token: Some(token(leader)),
        blackhole: true,
        ..Default::default()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fenced_first = false;
    loop {
        let fenced = refuses_writes(g.redis[leader].as_ref().unwrap());
        if let Some(h) = g.holder().await
            && h != name(leader)
        {
            // The takeover is seen only after the old leader had already fenced itself.
            assert!(
                fenced_first || fenced,
                "a new leader while the old one still took writes"
            );
            break;
        }
        fenced_first |= fenced;
        assert!(Instant::now() < deadline, "no takeover:\n{}", g.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fenced_first,
        "the cut-off leader did not fence itself before the lease expired"
    );
    g.api().faults().remove(cut);
    let converged = g.converged(Duration::from_secs(20)).await;
    assert_ne!(converged, leader);
    checker.assert_one_master_throughout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_restarted_empty_does_not_win() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    g.write_and_replicate(leader, "k", "data").await;
    let replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // The replica that would win a tie by name restarts empty, then the leader's Redis dies.
    let empty = replicas[0];
    let addr = g.redis[empty].as_ref().unwrap().addr;
    // Both die first, then the replica's Redis comes back empty: with the leader gone it
    // cannot resync, so it really is empty when the candidates rank themselves. (Restarted
    // while the leader lived, it would be pointed back at the leader and could hold the data
    // again before the leader died; then winning a tie would be right.)
    g.redis[empty].as_mut().unwrap().kill();
    g.redis[leader].as_mut().unwrap().kill();
    g.redis[leader] = None;
    g.redis[empty] = Some(g.start_redis_at(addr));
    let new = g.converged(Duration::from_secs(20)).await;
    assert_eq!(new, replicas[1], "the empty Redis won; logs:\n{}", g.logs());
    assert_eq!(
        g.redis[new]
            .as_ref()
            .unwrap()
            .command(&["GET", "k"])
            .unwrap(),
        "data"
    );
    // The restarted one rejoined as a replica of the new leader and got the data back.
    assert_eq!(
        g.redis[empty]
            .as_ref()
            .unwrap()
            .command(&["GET", "k"])
            .unwrap(),
        "data"
    );
    checker.assert_one_master_throughout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_and_latency_below_the_renew_deadline_cause_no_failover() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    let epoch = g.status(leader).await.unwrap()["epoch"].clone();
    let faults = g.api().faults();
    // Slow answers (below the 500 ms request timeout) for everyone, for a while...
    let slow = faults.add(kubesim::Fault {
        latency_ms: Some(200),
        ..Default::default()
    });
    // ...and the leader's writes failing (500s, then conflicts), each for well under the
    // 2 s renew deadline.
    for code in [500, 409] {
        let fault = faults.add(kubesim::Fault {
            token: Some(token(leader)),
            error: Some(kubesim::ErrorFault {
                code,
                writes_only: true,
                rate: 1.0,
                retry_after_seconds: None,
            }),
            ..Default::default()
        });
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            assert_eq!(
                g.holder().await.as_deref(),
                Some(name(leader).as_str()),
                "after {code}s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        faults.remove(fault);
    }
    faults.remove(slow);
    let after = g.converged(Duration::from_secs(20)).await;
    assert_eq!(after, leader, "a failover happened");
    assert_eq!(
        g.status(leader).await.unwrap()["epoch"],
        epoch,
        "the epoch changed"
    );
    checker.assert_one_master_throughout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_role_is_sufficient_and_every_rule_is_needed() {
    // Sufficient: with the shipped Role the group converges, routes, records Events, and no
    // request is ever refused.
    {
        let g = Group::start_with(3, Access::ShippedRole { drop_rule: None }).await;
        let leader = g.converged(Duration::from_secs(30)).await;
        let events: kube::Api<k8s_openapi::api::events::v1::Event> =
            kube::Api::default_namespaced(g.kube.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Promoted"))
        {
            assert!(Instant::now() < deadline, "no Promoted Event");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..3 {
            assert_eq!(
                g.api_errors(i, "forbidden").await,
                0,
                "sidecar {i} was refused something; logs:\n{}",
                g.logs()
            );
        }
        assert_eq!(g.selector().await.as_deref(), Some(name(leader).as_str()));
    }
    // Needed: without any one rule, some sidecar's request is refused.
    for rule in 0..shipped_rule_count() {
        let g = Group::start_with(
            3,
            Access::ShippedRole {
                drop_rule: Some(rule),
            },
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        'refused: loop {
            for i in 0..3 {
                if g.api_errors(i, "forbidden").await > 0 {
                    break 'refused;
                }
            }
            assert!(
                Instant::now() < deadline,
                "without rule {rule} nothing was refused; logs:\n{}",
                g.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_group_replicates_and_fails_over() {
    let mut g = Group::start_with_password(3, "s3cret pass for the tests").await;
    let checker = Checker::start_with_password(addrs(&g), g.password.clone());
    let leader = g.converged(Duration::from_secs(30)).await;
    // Replicas need masterauth to sync from a master that requires a password.
    g.write_and_replicate(leader, "k", "v").await;
    g.redis[leader].as_mut().unwrap().kill();
    g.redis[leader] = None;
    let new = g.converged(Duration::from_secs(20)).await;
    assert_eq!(
        g.redis[new]
            .as_ref()
            .unwrap()
            .command(&["GET", "k"])
            .unwrap(),
        "v"
    );
    checker.assert_one_master_throughout().await;
    // The password never shows up in the logs or the status.
    assert!(!g.logs().contains("s3cret"));
    assert!(!g.status(new).await.unwrap().to_string().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_without_losing_acknowledged_writes() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let epoch = g.status(leader).await.unwrap()["epoch"].as_u64().unwrap();
    let checker = Checker::start(addrs(&g));
    let writer = g.writer();
    // Let some writes through first.
    writer.progress(50).await;
    let pid = g.sidecars[leader].as_ref().unwrap().child.id();
    signal(pid, "-TERM");
    let new = takeover(&g, leader, Duration::from_secs(10)).await;
    // The old sidecar exits by itself, after the new leader is routed.
    g.wait_exited(leader, Duration::from_secs(15)).await;
    assert_eq!(g.selector().await.as_deref(), Some(new.as_str()));
    // Writes go on, on the new leader; then stop.
    writer.progress(50).await;
    let acks = writer.finish().await;
    let longest_gap = longest_gap(&acks);
    let acked: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    let n = index_of(&new);
    let st = g.status(n).await.unwrap();
    assert_eq!(st["epoch"].as_u64(), Some(epoch + 1), "one leader change");
    // Every acknowledged write is on the new leader.
    assert_none_lost(&g.redis_addr(n), &acks).await;
    assert!(
        acked.len() > 50,
        "the writer made progress: {}",
        acked.len()
    );
    eprintln!(
        "hand-over: {} acknowledged writes, longest gap between acknowledgements {longest_gap:?}",
        acked.len()
    );
    checker.assert_one_master_throughout().await;
}

/// Sends `head` (a request's headers announcing a 1 MiB body that never comes) and returns
/// the status line the sidecar answers with, within 5 s.
async fn status_line_without_body(http: std::net::SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer before the body (issue 17: the body was read first)")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Issue 17: an unauthenticated client made the leader's sidecar buffer its body (30 half-sent
/// 2 MB bodies took it over its memory limit). The token is checked on the headers, before
/// any body is read, and an admin body is capped at 4 KiB, refused from its Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_requests_are_refused_before_their_body_is_read() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let http = g.sidecars[leader].as_ref().unwrap().http;
    for path in ["/switchover", "/force-election"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
        );
        let line = status_line_without_body(http, &head).await;
        assert!(line.starts_with("HTTP/1.1 401"), "{path}: {line}");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: sidecar\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
        );
        let line = status_line_without_body(http, &head).await;
        assert!(line.starts_with("HTTP/1.1 413"), "{path}: {line}");
    }
    // The sidecar is as it was: still the leader, still answering.
    assert_eq!(g.converged(Duration::from_secs(10)).await, leader);
}

/// A fresh connection's `GET {path}`: its status line, or `None` without one within `within`.
async fn fresh_get(http: std::net::SocketAddr, path: &str, within: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(within, async {
        let mut s = tokio::net::TcpStream::connect(http).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .map(str::to_string)
    })
    .await
    .ok()
    .flatten()
}

/// Whether the server closes `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Issue 17: with a low file limit, 600 idle sockets failed the leader's liveness probe (the
/// kubelet restarted its sidecar and the lease changed hands without a hand-over), and clients
/// that never finish their headers or sit idle were never dropped. Now the oldest connection
/// makes room for a new one, so `/livez` is answered whatever the other clients hold, and
/// slow or idle clients are closed at the header timeout. On the old server the probes go
/// unanswered (accept fails once the file limit is reached) and the slow clients stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_never_starve_the_liveness_probe() {
    use tokio::io::AsyncWriteExt;
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    // A replica's sidecar, restarted with a short header timeout and a low file limit.
    let r = (leader + 1) % 3;
    g.sidecars[r] = None;
    g.sidecar_args = vec!["--http-header-timeout".into(), "1s".into()];
    g.start_sidecar(r);
    let deadline = Instant::now() + Duration::from_secs(20);
    while g.code(r, "/livez", false).await != 200 {
        assert!(Instant::now() < deadline, "restarted sidecar never live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = g.sidecars[r].as_ref().unwrap().child.id() as libc::pid_t;
    let low = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: prlimit with a valid rlimit and no old-limit pointer.
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &low, std::ptr::null_mut()) },
        0
    );
    let http = g.sidecars[r].as_ref().unwrap().http;

    // More idle connections than the file limit allows, each opened and left alone.
    let mut idle = Vec::new();
    for i in 0..400 {
        let s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(http))
            .await
            .unwrap_or_else(|_| panic!("idle connection {i} not accepted within 3 s"));
        idle.push(s.unwrap());
    }
    for probe in 0..5 {
        let line = fresh_get(http, "/livez", Duration::from_secs(3)).await;
        assert_eq!(
            line.as_deref(),
            Some("HTTP/1.1 200 OK"),
            "probe {probe} with 400 idle connections open"
        );
    }

    // A client that never finishes its headers, and one idle after a request, are closed.
    let mut slow = tokio::net::TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: sidecar\r\n")
        .await
        .unwrap();
    let mut kept = tokio::net::TcpStream::connect(http).await.unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: sidecar\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "a client that never finished its headers is still connected"
    );
    assert!(
        closed_within(&mut kept, Duration::from_secs(5)).await,
        "an idle kept-alive connection is still open"
    );
    drop(idle);
    // The group never noticed.
    assert_eq!(g.converged(Duration::from_secs(10)).await, leader);
}

/// Issue 17: on a replica, `REPLICAOF NO ONE` and `CONFIG SET min-replicas-to-write 0` made a
/// second writable master that acknowledged a write, and the replica stayed unfenced. Its
/// sidecar now fences it and points it at the leader again within a retry period, with an
/// Event. (The old sidecar re-pointed it but left it unfenced: one more `REPLICAOF NO ONE`
/// made it writable again at once; the fence check below fails on it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_someone_promoted_is_fenced_and_pointed_back_with_an_event() {
    let g = Group::start(3).await;
    let checker = Checker::start(addrs(&g));
    let leader = g.converged(Duration::from_secs(30)).await;
    let r = (leader + 1) % 3;
    let rogue = g.redis[r].as_ref().unwrap();
    assert_eq!(rogue.command(&["REPLICAOF", "NO", "ONE"]).unwrap(), "+OK");
    assert_eq!(
        rogue
            .command(&["CONFIG", "SET", "min-replicas-to-write", "0"])
            .unwrap(),
        "+OK"
    );
    let leader_addr = g.redis_addr(leader);
    let (lhost, lport) = leader_addr.rsplit_once(':').unwrap();
    let (rhost, rport) = rogue.host_port();
    let cli = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args(["-h", &rhost, "-p", &rport.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = cli(&["INFO", "replication"]);
        let fence = cli(&["CONFIG", "GET", "min-replicas-to-write"]);
        let pointed = info.contains("role:slave")
            && info.contains(&format!("master_host:{lhost}"))
            && info.contains(&format!("master_port:{lport}"));
        if pointed && fence.contains("2147483647") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not fenced and pointed back within 10 s: {info}\n{fence}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Even promoted once more by hand, it takes no write: the fence holds.
    assert_eq!(rogue.command(&["REPLICAOF", "NO", "ONE"]).unwrap(), "+OK");
    assert!(
        refuses_writes(rogue),
        "a second REPLICAOF NO ONE made it writable"
    );
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::default_namespaced(g.kube.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let evs = events.list(&Default::default()).await.unwrap();
        if evs.items.iter().any(|e| {
            e.reason.as_deref() == Some("Reconciled")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("was a writable master"))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no Reconciled Event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The group is as it was: same leader, and it points the rogue back again.
    assert_eq!(g.converged(Duration::from_secs(10)).await, leader);
    drop(checker);
}

/// Issue 17: peers were found through the pods' `…/http` annotation, which anyone allowed to
/// patch pods can write: a patched one made the CLI send the admin token to a listener of the
/// attacker's. The annotation now counts only on the pod's IP. Here a replica's sidecar is
/// stopped (so nothing rewrites its annotation), the annotation is pointed at a listener of
/// the test's on another address, and `force-election`, which sends the admin token to every
/// pod, must tell the other two and never connect to that listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hijacked_http_annotation_gets_no_admin_token() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let r = (leader + 1) % 3;
    g.sidecars[r] = None;
    let attacker = tokio::net::TcpListener::bind(testkit::free_loopback_addr())
        .await
        .unwrap();
    let forged = attacker.local_addr().unwrap().to_string();
    kube::Api::<Pod>::default_namespaced(g.kube.clone())
        .patch(
            &name(r),
            &Default::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                "redis-k8s-election.io/http": forged,
            }}})),
        )
        .await
        .unwrap();
    let (ok, out, err) = g.cli(&["force-election"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("{}: not told", name(r))) && out.contains("is not on its pod IP"),
        "{out}"
    );
    let connected = tokio::time::timeout(Duration::from_millis(500), attacker.accept()).await;
    assert!(
        connected.is_err(),
        "the CLI connected to the forged address {forged}"
    );
    // The control: the other pods were told.
    for i in (0..3).filter(|i| *i != r) {
        assert!(!out.contains(&format!("{}: not told", name(i))), "{out}");
    }
}

/// The code `method path` gets from sidecar `i` (0 when it does not answer).
async fn code_of(g: &Group, i: usize, method: reqwest::Method, path: &str) -> u16 {
    let http = g.sidecar_http[i].unwrap();
    g.http
        .request(method, format!("http://{http}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Issue 18: the load-balancer checks in Patroni's style, against real Redis. `/leader`,
/// `/replica`, `/read-only` and `/health` answer GET, HEAD and OPTIONS with 200 or 503 by
/// role; `/replica?max-lag=` follows the lag both ways: a replica whose Redis holds back the
/// stream (`CLIENT PAUSE WRITE` delays applying it) fails a limit below its lag and passes a
/// higher one, and passes the low one again once it has caught up. A bad limit is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_checks_answer_by_role_and_replica_lag() {
    use reqwest::Method;
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let replica = (0..3).find(|i| *i != leader).unwrap();
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        for (i, path, want) in [
            (leader, "/leader", 200),
            (leader, "/replica", 503),
            (leader, "/read-only", 200),
            (leader, "/health", 200),
            (replica, "/leader", 503),
            (replica, "/replica", 200),
            (replica, "/replica?max-lag=0", 200),
            (replica, "/read-only", 200),
            (replica, "/health", 200),
        ] {
            assert_eq!(
                code_of(&g, i, method.clone(), path).await,
                want,
                "{method} {path} on {i}"
            );
        }
    }
    for bad in [
        "/replica?max-lag=lots",
        "/replica?max-lag=5TB",
        "/replica?lag=-1",
    ] {
        assert_eq!(code_of(&g, replica, Method::GET, bad).await, 400, "{bad}");
    }
    // The replica's Redis holds back the stream (for 8 s) while 64 KiB are written on the leader.
    let r = g.redis[replica].as_ref().unwrap();
    assert_eq!(
        r.command(&["CLIENT", "PAUSE", "8000", "WRITE"]).unwrap(),
        "+OK"
    );
    let big = "x".repeat(64 * 1024);
    let l = g.redis[leader].as_ref().unwrap();
    assert_eq!(l.command(&["SET", "big", &big]).unwrap(), "+OK");
    let deadline = Instant::now() + Duration::from_secs(6);
    while code_of(&g, replica, Method::GET, "/replica?max-lag=1kB").await != 503 {
        assert!(
            Instant::now() < deadline,
            "the lag never crossed 1 kB:\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same moment, a limit above the lag passes, and so does the default (1 MiB).
    assert_eq!(
        code_of(&g, replica, Method::GET, "/replica?max-lag=1MB").await,
        200
    );
    assert_eq!(code_of(&g, replica, Method::GET, "/replica").await, 200);
    // Caught up after the pause: the low limit passes again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while code_of(&g, replica, Method::GET, "/replica?max-lag=1kB").await != 200 {
        assert!(
            Instant::now() < deadline,
            "the replica never caught up:\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // /health follows the local Redis, whatever the role: a stopped Redis fails it.
    r.signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while code_of(&g, replica, Method::GET, "/health").await != 503 {
        assert!(
            Instant::now() < deadline,
            "/health stayed up with Redis stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.signal("-CONT");
}

/// Sets the given annotations on pod `i` (`null` removes one).
async fn annotate(g: &Group, i: usize, annotations: serde_json::Value) {
    kube::Api::<Pod>::default_namespaced(g.kube.clone())
        .patch(
            &name(i),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": annotations}})),
        )
        .await
        .unwrap();
}

async fn read_label(g: &Group, i: usize) -> Option<String> {
    let p = kube::Api::<Pod>::default_namespaced(g.kube.clone())
        .get(&name(i))
        .await
        .ok()?;
    p.metadata
        .labels?
        .get("redis-k8s-election.io/read")
        .cloned()
}

/// Issue 18: per-pod tags, read while the sidecar runs. A replica tagged `nofailover` is
/// refused as a switchover target and is passed over when the leader's Redis dies;
/// `noloadbalance` takes it out of the read Service (its sidecar's read label turns false,
/// and back when the tag goes); `status` shows the tags, and a tag it cannot read as a
/// problem. The untagged replica is the control: it stays readable and becomes the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_tags_keep_a_replica_from_leading_and_out_of_reads() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let mut replicas = (0..3).filter(|i| *i != leader);
    let (tagged, other) = (replicas.next().unwrap(), replicas.next().unwrap());
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while read_label(&g, i).await.as_deref() != Some("true") {
            assert!(Instant::now() < deadline, "pod {i} never labelled readable");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    annotate(
        &g,
        tagged,
        serde_json::json!({
            "redis-k8s-election.io/nofailover": "true",
            "redis-k8s-election.io/noloadbalance": "true",
            "redis-k8s-election.io/priority": "soon",
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = g.status(tagged).await.unwrap_or_default();
        if st["tags"]["nofailover"] == true
            && read_label(&g, tagged).await.as_deref() == Some("false")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the tags never took: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_label(&g, other).await.as_deref(), Some("true"));
    let (_, table, _) = g.cli(&["status"]).await;
    let tags_line = format!(
        "{} nofailover, noloadbalance, ! redis-k8s-election.io/priority",
        name(tagged)
    );
    assert!(table.contains(&tags_line), "{table}");
    // Never a switchover target.
    let (ok, out, err) = g.cli(&["switchover", "--to", &name(tagged)]).await;
    assert!(
        !ok && format!("{out}{err}").contains("never_leads"),
        "{out}{err}"
    );
    // The leader's Redis dies: the untagged replica takes over, never the tagged one.
    let checker = Checker::start(addrs(&g));
    harness::measure::send_signal(g.redis[leader].as_ref().unwrap().pid(), "KILL");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holder = g.holder().await.unwrap_or_default();
        assert_ne!(holder, name(tagged), "the nofailover pod took the lease");
        if holder == name(other) {
            break;
        }
        assert!(Instant::now() < deadline, "no failover:\n{}", g.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    checker.assert_one_master_throughout().await;
    // The tag removed: the pod serves reads again.
    annotate(
        &g,
        tagged,
        serde_json::json!({"redis-k8s-election.io/noloadbalance": null}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_label(&g, tagged).await.as_deref() != Some("true") {
        assert!(
            Instant::now() < deadline,
            "the read label never came back:\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
