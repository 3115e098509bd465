//! Planned moves and operator controls with real redis-server, the real binary and kubesim:
//! switchovers under a writer, a rolling restart, refused switchovers, pause and resume,
//! status and history.

use harness::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `redis-k8s-election status -o json`.
async fn status_json(g: &Group) -> Value {
    let (ok, out, err) = g.cli(&["status", "-o", "json"]).await;
    assert!(ok, "status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The Lease's epoch as `status` reports it.
async fn epoch(g: &Group) -> u64 {
    status_json(g).await["lease"]["epoch"].as_u64().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_switchovers_under_a_writer_lose_no_acknowledged_write() {
    let g = Group::start(3).await;
    let mut leader = g.converged(Duration::from_secs(30)).await;
    let first_epoch = epoch(&g).await;
    let checker = Checker::start(addrs(&g));
    let writer = g.writer();
    writer.progress(20).await;
    let mut windows = Vec::new();
    let mut last_out = String::new();
    for n in 0..100 {
        // Alternate between naming the target and letting the leader pick the best.
        let target = (leader + 1 + n % 2) % 3;
        let to = name(target);
        let mut args = vec!["switchover"];
        if n % 3 != 2 {
            args.extend(["--to", &to]);
        }
        let started = Instant::now();
        let (ok, out, err) = g.cli(&args).await;
        assert!(ok, "switchover {n} failed: {err}\n{}", g.logs());
        assert!(out.contains("switched over from"), "{out}");
        last_out = out;
        let new = g.converged(Duration::from_secs(20)).await;
        assert_ne!(new, leader, "switchover {n} did not move the leader");
        if n % 3 != 2 {
            assert_eq!(new, target, "switchover {n} went to the wrong pod");
        }
        windows.push((started, Instant::now()));
        leader = new;
        // Writes flow on the new leader before the next move.
        writer.progress(5).await;
    }
    let acks = writer.finish().await;
    checker.assert_one_master_throughout().await;
    assert_eq!(
        epoch(&g).await,
        first_epoch + 100,
        "one epoch per switchover"
    );
    assert_none_lost(&g.redis_addr(leader), &acks).await;
    let mut pauses: Vec<Duration> = windows
        .iter()
        .map(|(a, b)| longest_gap_within(&acks, *a, *b))
        .collect();
    pauses.sort();
    let p99 = percentile(&pauses, 0.99);
    eprintln!(
        "100 switchovers, {} acknowledged writes: pause median {:?}, p99 {p99:?}, max {:?}",
        acks.len(),
        percentile(&pauses, 0.5),
        pauses.last().unwrap()
    );
    // Behaviour, not a figure (the figures are the benchmark's, docs/benchmarks.md): each
    // hand-over pauses writes for less than the lease duration (3 s here), i.e. less than
    // a leader's loss would. Tight percentiles fail on a loaded machine, not on a defect.
    let max = *pauses.last().unwrap();
    assert!(
        max < Duration::from_secs(3),
        "a switchover paused writes {max:?} (p99 {p99:?})"
    );
    // The history names the moves.
    let (ok, out, err) = g.cli(&["history", "-o", "json"]).await;
    assert!(ok, "{err}");
    let h: Vec<Value> = serde_json::from_str(&out).unwrap();
    let last = h.last().unwrap();
    assert_eq!(last["reason"], "switchover");
    assert_eq!(last["to"], name(leader).as_str());
    assert_eq!(last["epoch"].as_u64(), Some(first_epoch + 100));
    assert!(h.len() >= 20, "the newest entries are kept: {}", h.len());
    // Issue 18: one definition of the write pause: `switchover` says what `history` records.
    assert!(
        last_out.contains(&format!("writes held {} ms", last["duration_ms"])),
        "switchover said {last_out:?}; history recorded {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_moves_the_leader_once_and_loses_nothing() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let first_epoch = epoch(&g).await;
    let checker = Checker::start(addrs(&g));
    let writer = g.writer();
    writer.progress(20).await;
    // Replicas first (as a StatefulSet rolls the highest ordinals first, the leader is
    // wherever it is), the leader last: each pod is stopped with SIGTERM, its Redis after
    // its sidecar exits (the preStop hook's order), then both start again, empty.
    let mut order: Vec<usize> = (0..3).rev().filter(|i| *i != leader).collect();
    order.push(leader);
    for i in order {
        let pid = g.sidecars[i].as_ref().unwrap().child.id();
        signal(pid, "-TERM");
        g.wait_exited(i, Duration::from_secs(15)).await;
        let addr = g.redis[i].as_ref().unwrap().addr;
        g.redis[i].as_mut().unwrap().kill();
        g.redis[i] = None;
        g.redis[i] = Some(g.start_redis_at(addr));
        g.start_sidecar(i);
        g.converged(Duration::from_secs(30)).await;
        writer.progress(20).await;
    }
    let new = g.converged(Duration::from_secs(30)).await;
    let acks = writer.finish().await;
    checker.assert_one_master_throughout().await;
    assert_ne!(new, leader);
    assert_eq!(
        epoch(&g).await,
        first_epoch + 1,
        "one leader change for the leader's restart, none for the replicas'"
    );
    assert_none_lost(&g.redis_addr(new), &acks).await;
    eprintln!(
        "rolling restart: {} acknowledged writes, longest gap {:?}",
        acks.len(),
        longest_gap(&acks)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_switchovers_say_why_and_change_nothing() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let e0 = epoch(&g).await;
    let replicas: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let leader_http = g.sidecars[leader].as_ref().unwrap().http;
    let url = format!("http://{leader_http}/switchover");

    // No token, a wrong token: 401 with the reason; the CLI with a wrong token file fails.
    let r = g.http.post(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = g.http.post(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let wrong = g.dir.path().join("wrong-token");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let (ok, _, err) = g
        .cli(&["switchover", "--admin-token-file", wrong.to_str().unwrap()])
        .await;
    assert!(!ok && err.contains("401"), "{err}");
    // Garbage bodies are 400.
    let r = g
        .http
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .body("{\"to\": 7}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Unknown pod, the leader itself.
    let (ok, _, err) = g.cli(&["switchover", "--to", "redis-9"]).await;
    assert!(!ok && err.contains("not a pod of this group"), "{err}");
    let (ok, _, err) = g.cli(&["switchover", "--to", &name(leader)]).await;
    assert!(!ok && err.contains("is the leader already"), "{err}");

    // Not caught up: a replica that stopped applying the stream while the leader took 2 MiB.
    let slow = replicas[0];
    let slow_redis = g.redis[slow].as_ref().unwrap();
    assert_eq!(
        slow_redis
            .command(&["CLIENT", "PAUSE", "20000", "WRITE"])
            .as_deref(),
        Some("+OK")
    );
    let big = "x".repeat(2 << 20);
    assert_eq!(
        g.redis[leader]
            .as_ref()
            .unwrap()
            .command(&["SET", "big", &big])
            .as_deref(),
        Some("+OK")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let (ok, _, err) = g.cli(&["switchover", "--to", &name(slow)]).await;
        assert!(!ok, "switched over to a replica that lags 2 MiB");
        if err.contains("not caught up") {
            break err;
        }
        // Until the leader's offset shows the write, the refusal may name something else.
        assert!(Instant::now() < deadline, "{err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(err.contains("bytes behind"), "{err}");
    g.redis[slow]
        .as_ref()
        .unwrap()
        .command(&["CLIENT", "UNPAUSE"]);

    // Not a replica: a pod whose Redis someone made a master (its sidecar is gone).
    let rogue = replicas[1];
    g.sidecars[rogue] = None;
    assert_eq!(
        g.redis[rogue]
            .as_ref()
            .unwrap()
            .command(&["REPLICAOF", "NO", "ONE"])
            .as_deref(),
        Some("+OK")
    );
    let (ok, _, err) = g.cli(&["switchover", "--to", &name(rogue)]).await;
    assert!(
        !ok && err.contains("not a replica of this leader") && err.contains("master"),
        "{err}"
    );
    // `status` names the disagreement.
    let st = status_json(&g).await;
    let problems = st["problems"].to_string();
    assert!(
        problems.contains(&format!("{}: sidecar did not answer", name(rogue))),
        "{problems}"
    );

    // Paused: refused unless forced.
    let (ok, out, err) = g.cli(&["pause"]).await;
    assert!(ok && out.contains("paused"), "{err}");
    let (ok, _, err) = g.cli(&["switchover", "--to", &name(slow)]).await;
    assert!(!ok && err.contains("paused"), "{err}");

    // Nothing changed: same leader, same epoch, its Redis writable and not paused.
    assert_eq!(epoch(&g).await, e0);
    assert_eq!(g.holder().await.as_deref(), Some(name(leader).as_str()));
    assert_eq!(g.selector().await.as_deref(), Some(name(leader).as_str()));
    let write = tokio::time::timeout(Duration::from_secs(2), async {
        g.redis[leader]
            .as_ref()
            .unwrap()
            .command(&["SET", "after", "1"])
    })
    .await
    .unwrap();
    assert_eq!(write.as_deref(), Some("+OK"));

    // A forced switchover is the one move a paused group allows, once the slow replica has
    // caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.redis[slow]
        .as_ref()
        .unwrap()
        .command(&["STRLEN", "big"])
        .as_deref()
        != Some(":2097152")
    {
        assert!(Instant::now() < deadline, "{} never caught up", name(slow));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, out, err) = g.cli(&["switchover", "--to", &name(slow), "--force"]).await;
    assert!(ok, "{err}\n{}", g.logs());
    assert!(out.contains(&format!("to {}", name(slow))), "{out}");
    assert_eq!(epoch(&g).await, e0 + 1);
    assert_eq!(
        status_json(&g).await["lease"]["paused"]
            .as_str()
            .map(|p| p.contains("since")),
        Some(true),
        "still paused after the forced move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_through_a_dead_leader_redis_and_resume_fails_over() {
    let mut g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let e0 = epoch(&g).await;
    let (ok, _, err) = g.cli(&["pause"]).await;
    assert!(ok, "{err}");
    // Every sidecar sees the pause.
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        while g.status(i).await.map(|s| s["paused"].is_string()) != Some(true) {
            assert!(Instant::now() < deadline, "sidecar {i} never saw the pause");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let checker = Checker::start(addrs(&g));
    g.redis[leader].as_mut().unwrap().kill();
    // Well past a lease duration (3 s) and the ranking back-off: nobody takes over.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        assert_eq!(
            g.holder().await.as_deref(),
            Some(name(leader).as_str()),
            "failover while paused; logs:\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(epoch(&g).await, e0);
    let table = g.cli(&["status"]).await.1;
    assert!(table.contains("PAUSED"), "{table}");
    checker.assert_one_master_throughout().await;
    g.redis[leader] = None;
    // Resume: the leader, whose Redis is gone, lets go, and a replica takes over.
    let (ok, out, err) = g.cli(&["resume"]).await;
    assert!(ok && out.contains("resumed"), "{err}");
    let new = takeover(&g, leader, Duration::from_secs(15)).await;
    let n = index_of(&new);
    g.write_and_replicate(n, "after-resume", "1").await;
    let (ok, out, _) = g.cli(&["history"]).await;
    assert!(ok && out.contains(&new), "{out}");
}

/// The leader's copy of the Lease can be one version behind when a switchover starts: a
/// renewal whose answer it missed, a watch event still on its way, or someone annotating the
/// Lease. The hand-over write then loses its compare-and-set; found by the 30-minute fault
/// run (a switchover right after API latency on the leader failed with "the hand-over write
/// did not commit"). The leader re-reads the Lease and, still its holder, writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_goes_through_while_the_lease_changes_under_the_leader() {
    use k8s_openapi::api::coordination::v1::Lease;
    let g = Group::start(3).await;
    let mut leader = g.converged(Duration::from_secs(30)).await;
    // Something else touches the Lease every few milliseconds (each touch a new
    // resourceVersion and a watch event), as a tool annotating it would.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = {
        let leases = kube::Api::<Lease>::default_namespaced(g.kube.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let patch =
                    serde_json::json!({"metadata": {"annotations": {"test/touch": n.to_string()}}});
                let _ = leases
                    .patch(
                        "redis",
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            n
        })
    };
    for n in 0..10 {
        let to = name((leader + 1) % 3);
        let (ok, out, err) = g.cli(&["switchover", "--to", &to]).await;
        assert!(ok, "switchover {n} failed: {err}{out}\n{}", g.logs());
        let new = g.converged(Duration::from_secs(20)).await;
        assert_eq!(name(new), to, "switchover {n} went elsewhere");
        leader = new;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let touches = toucher.await.unwrap();
    assert!(touches > 100, "the Lease was barely touched: {touches}");
}
