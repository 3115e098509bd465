//! Failsafe (DESIGN 3a, docs/sidecar.md "Control-plane outages") with real `redis-server`s,
//! the real sidecar binary and kubesim: a group whose sidecars share a peer key keeps its
//! leader writable through a Kubernetes API outage, with a writer going through the leader
//! Service all along; and where failsafe cannot vouch for the leader (a member it cannot
//! reach), the leader fences before anyone can take over, as without failsafe.
//!
//! Timing is the harness' fast profile: lease 3 s, renew deadline 2 s, retry period 250 ms,
//! request timeout 500 ms. Every outage here outlasts the lease many times over.

use harness::measure::send_signal;
use harness::{Checker, Group, addrs, index_of, lost_writes, name, token};
use k8s_openapi::api::coordination::v1::Lease;
use std::time::{Duration, Instant};

/// A gap between two acknowledged writes longer than this is not "the normal jitter" of a
/// writer that writes every 2 ms on a two-core machine running five processes.
const JITTER: Duration = Duration::from_millis(1_500);

/// The Lease's holder and epoch.
async fn lease(g: &Group) -> (String, i32) {
    let l = kube::Api::<Lease>::default_namespaced(g.kube.clone())
        .get("redis")
        .await
        .expect("the Lease");
    let spec = l.spec.unwrap_or_default();
    (
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
    )
}

/// Waits until the leader's sidecar says it serves in failsafe with every member confirmed.
async fn wait_failsafe_active(g: &Group, leader: usize, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = g.status(leader).await
            && st["failsafe"]["active"] == true
            && st["failsafe"]["confirmed"] == st["failsafe"]["members"]
            && st["failsafe"]["members"] == 2
        {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never served in failsafe: {:?}\n{}",
            g.status(leader).await,
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reasons of the Events recorded for `pod`.
async fn event_reasons(g: &Group, pod: &str) -> Vec<String> {
    let api = kube::Api::<k8s_openapi::api::events::v1::Event>::default_namespaced(g.kube.clone());
    api.list(&Default::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod))
                .filter_map(|e| e.reason)
                .collect()
        })
        .unwrap_or_default()
}

/// The whole API gone for `length`: refused connections, or a blackhole where requests hang.
async fn whole_api_outage(g: Group, blackhole: bool, length: Duration) {
    let leader = g.converged(Duration::from_secs(30)).await;
    let (holder, epoch) = lease(&g).await;
    let checker = Checker::start(addrs(&g));
    let writer = g.writer();
    writer.progress(200).await;
    let t0 = Instant::now();
    let fault = if blackhole {
        Some(g.api().faults().add(kubesim::Fault {
            blackhole: true,
            ..Default::default()
        }))
    } else {
        g.api().set_outage(true);
        None
    };
    let st = wait_failsafe_active(&g, leader, Duration::from_secs(10)).await;
    assert_eq!(st["role"], "leader");
    // The members promised not to campaign.
    for i in (0..3).filter(|i| *i != leader) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = g.status(i).await.expect("a member's status");
            if s["failsafe"]["promisedTo"] == name(leader).as_str() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} holds no promise: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while t0.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            g.status(leader).await.map(|s| s["role"].clone()),
            Some("leader".into()),
            "the leader stepped down during the outage:\n{}",
            g.logs()
        );
    }
    match fault {
        Some(id) => {
            g.api().faults().remove(id);
        }
        None => g.api().set_outage(false),
    }
    let t1 = Instant::now();
    // The API is back: the same leader renews at the same epoch; the Events of the
    // episode reach the API.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reasons = event_reasons(&g, &name(leader)).await;
        if reasons.iter().any(|r| r == "FailsafeStarted")
            && reasons.iter().any(|r| r == "FailsafeEnded")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failsafe Events: {reasons:?}\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(g.converged(Duration::from_secs(20)).await, leader);
    assert_eq!(
        lease(&g).await,
        (holder, epoch),
        "the same leader at the same epoch"
    );
    writer.progress(200).await;
    let acks = writer.finish().await;
    let gap = harness::longest_gap_within(&acks, t0, t1);
    assert!(
        gap < JITTER,
        "writes stopped for {gap:?} during the outage\n{}",
        g.logs()
    );
    let missing = lost_writes(&g.redis_addr(leader), &acks).await;
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost",
        missing.len()
    );
    checker.assert_one_master_throughout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_api_outage_of_60_s_costs_no_write_and_no_leader_change() {
    whole_api_outage(
        Group::start_failsafe(3).await,
        false,
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_s_api_blackhole_costs_no_write_and_no_leader_change() {
    whole_api_outage(
        Group::start_failsafe(3).await,
        true,
        Duration::from_secs(60),
    )
    .await;
}

/// Issue 17: with TLS on (Redis, replication, and `--http-tls`, so the failsafe messages go
/// over HTTPS checked against the group's CA and name), an outage of five leases changes
/// nothing either. The members' confirmations can only arrive over HTTPS: their APIs serve
/// nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_over_https_holds_the_leader_through_an_api_outage() {
    whole_api_outage(
        Group::start_failsafe_tls(3).await,
        false,
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_alone_cut_from_the_api_stays_leader() {
    let g = Group::start_failsafe(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let before = lease(&g).await;
    let checker = Checker::start(addrs(&g));
    let writer = g.writer();
    writer.progress(200).await;
    let t0 = Instant::now();
    // Only the leader's API access is gone: the members still see the API, and the Lease
    // there stops changing, so without their promises they would take over after 3 s.
    let cut = g.api().faults().add(kubesim::Fault {
        token: Some(token(leader)),
        blackhole: true,
        ..Default::default()
    });
    wait_failsafe_active(&g, leader, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(lease(&g).await, before, "nobody took the lease");
    g.api().faults().remove(cut);
    let t1 = Instant::now();
    assert_eq!(g.converged(Duration::from_secs(20)).await, leader);
    assert_eq!(lease(&g).await, before);
    writer.progress(200).await;
    let acks = writer.finish().await;
    let gap = harness::longest_gap_within(&acks, t0, t1);
    assert!(gap < JITTER, "writes stopped for {gap:?}\n{}", g.logs());
    let missing = lost_writes(&g.redis_addr(leader), &acks).await;
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost",
        missing.len()
    );
    checker.assert_one_master_throughout().await;
}

/// Cut from the API and from one member (its sidecar stopped): the rounds go unanswered, so
/// the leader fences at its renew deadline, before the member that reaches the API may take
/// over (after its last promise), and a normal failover follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_the_api_and_a_member_fences_then_fails_over() {
    let g = Group::start_failsafe(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    let silent = (leader + 1) % 3;
    let cut = g.api().faults().add(kubesim::Fault {
        token: Some(token(leader)),
        blackhole: true,
        ..Default::default()
    });
    let pid = g.sidecars[silent].as_ref().unwrap().child.id();
    assert!(send_signal(pid, "STOP"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut fenced_first = false;
    let new = loop {
        let fenced = refuses_writes(&g, leader);
        if let Some(h) = g.holder().await
            && h != name(leader)
        {
            assert!(
                fenced_first || fenced,
                "a new leader while the old one took writes"
            );
            break index_of(&h);
        }
        fenced_first |= fenced;
        assert!(Instant::now() < deadline, "no takeover:\n{}", g.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        fenced_first,
        "the old leader did not fence before the takeover"
    );
    assert_eq!(
        new,
        3 - leader - silent,
        "the member that reaches everyone took over"
    );
    assert!(send_signal(pid, "CONT"));
    g.api().faults().remove(cut);
    assert_eq!(g.converged(Duration::from_secs(30)).await, new);
    checker.assert_one_master_throughout().await;
}

fn refuses_writes(g: &Group, i: usize) -> bool {
    g.redis[i]
        .as_ref()
        .unwrap()
        .command(&["SET", "probe", "x"])
        .is_some_and(|r| r.starts_with("-"))
}

/// A member's sidecar restarts during a whole-API outage: it has observed nothing, may
/// confirm (a fresh observer waits a whole lease anyway), and the leader keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_during_an_outage_keeps_confirming() {
    let mut g = Group::start_failsafe(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let before = lease(&g).await;
    let checker = Checker::start(addrs(&g));
    let writer = g.writer();
    writer.progress(200).await;
    let t0 = Instant::now();
    g.api().set_outage(true);
    wait_failsafe_active(&g, leader, Duration::from_secs(10)).await;
    let member = (leader + 1) % 3;
    g.sidecars[member] = None; // killed
    g.start_sidecar(member);
    // Its first promise, then ten more seconds in failsafe.
    let deadline = Instant::now() + Duration::from_secs(10);
    while g
        .status(member)
        .await
        .is_none_or(|s| s["failsafe"]["promisedTo"] != name(leader).as_str())
    {
        assert!(
            Instant::now() < deadline,
            "the restarted member never confirmed\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        g.status(leader).await.map(|s| s["role"].clone()),
        Some("leader".into())
    );
    g.api().set_outage(false);
    let t1 = Instant::now();
    assert_eq!(g.converged(Duration::from_secs(30)).await, leader);
    assert_eq!(lease(&g).await, before);
    writer.progress(200).await;
    let acks = writer.finish().await;
    let gap = harness::longest_gap_within(&acks, t0, t1);
    assert!(gap < JITTER, "writes stopped for {gap:?}\n{}", g.logs());
    checker.assert_one_master_throughout().await;
}

/// 409: somebody else wrote the Lease. The leader steps down at once (well before its renew
/// deadline), fenced; failsafe does not keep a leader whose lease is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_competing_write_ends_leadership_at_once() {
    let g = Group::start_failsafe(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let checker = Checker::start(addrs(&g));
    let api = kube::Api::<Lease>::default_namespaced(g.kube.clone());
    let mut l = api.get("redis").await.unwrap();
    let spec = l.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    let t0 = Instant::now();
    api.replace("redis", &Default::default(), &l).await.unwrap();
    while !refuses_writes(&g, leader) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "still writable 2 s (the renew deadline) after losing the lease\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fenced_after = t0.elapsed();
    assert!(
        fenced_after < Duration::from_millis(1_000),
        "{fenced_after:?}"
    );
    // The intruder never renews: a real failover follows once its lease expires.
    let new = g.converged(Duration::from_secs(30)).await;
    assert!(lease(&g).await.0 == name(new));
    checker.assert_one_master_throughout().await;
}

/// 401 and 403 from the API for 5 s (longer than the lease): the API is unavailable, not
/// the lease lost; with failsafe the leader keeps serving and nobody fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_and_forbidden_for_a_few_seconds_cause_no_failover() {
    let g = Group::start_failsafe(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let before = lease(&g).await;
    let checker = Checker::start(addrs(&g));
    let writer = g.writer();
    writer.progress(200).await;
    let t0 = Instant::now();
    for code in [401, 403] {
        let id = g.api().faults().add(kubesim::Fault {
            error: Some(kubesim::ErrorFault {
                code,
                writes_only: false,
                rate: 1.0,
                retry_after_seconds: None,
            }),
            ..Default::default()
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        g.api().faults().remove(id);
    }
    let t1 = Instant::now();
    assert_eq!(g.converged(Duration::from_secs(20)).await, leader);
    assert_eq!(lease(&g).await, before, "no failover, no new epoch");
    writer.progress(200).await;
    let acks = writer.finish().await;
    let gap = harness::longest_gap_within(&acks, t0, t1);
    assert!(gap < JITTER, "writes stopped for {gap:?}\n{}", g.logs());
    assert!(
        g.api_errors(leader, "forbidden").await > 0,
        "the 403s reached the leader"
    );
    checker.assert_one_master_throughout().await;
}

/// Failsafe messages must be signed with the group's key: an unsigned or wrongly signed one
/// is refused (401) and changes nothing; a replayed one is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_forged_and_replayed_failsafe_messages_are_refused() {
    let g = Group::start_failsafe(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let member = (leader + 1) % 3;
    let url = format!(
        "http://{}/failsafe/v1/ask",
        g.sidecars[member].as_ref().unwrap().http
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let forged = serde_json::json!({
        "group": "default/redis", "from": "attacker", "to": name(member),
        "holder": "attacker", "epoch": 99, "kind": "round",
        "nonce": "00112233445566778899aabbccddeeff", "sentUnixMs": now_ms,
        "sent_unix_ms": now_ms, "mac": "00".repeat(32)
    });
    let r = g.http.post(&url).json(&forged).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body = r.text().await.unwrap();
    assert!(body.contains("bad_signature"), "{body}");
    for bad in ["", "{", "[]", "{\"kind\": 3}"] {
        let r = g.http.post(&url).body(bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad:?}");
    }
    // A body over the limit is refused unread (413), or the connection is closed on it. (A
    // client of its own: the connection the server closes must not go back to the pool the
    // requests below use.)
    let big = "x".repeat(1 << 20);
    if let Ok(r) = reqwest::Client::new().post(&url).body(big).send().await {
        assert_eq!(r.status().as_u16(), 413);
    }
    // A genuine probe (signed with the key) is answered once; the same message again is a
    // replay.
    let key = redis_k8s_election::sidecar::failsafe::PeerKey::from_bytes(
        b"a peer key for the group tests",
    );
    let probe = redis_k8s_election::sidecar::failsafe::AskMessage::signed(
        &key,
        "default/redis",
        "redis-9",
        &name(member),
        "",
        0,
        election::failsafe::AskKind::Probe,
    );
    let r = g.http.post(&url).json(&probe).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let reply: redis_k8s_election::sidecar::failsafe::ReplyMessage = r.json().await.unwrap();
    let answer = reply
        .check(&key, &probe, &name(member))
        .expect("a signed answer");
    assert!(!answer.promise && !answer.leads, "{answer:?}");
    let r = g.http.post(&url).json(&probe).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("replayed"));
    // Nothing changed: no promise, the same leader.
    let st = g.status(member).await.unwrap();
    assert!(st["failsafe"]["promiseUntilUnixMs"].is_null(), "{st}");
    assert_eq!(g.converged(Duration::from_secs(10)).await, leader);
    // The key never shows in status, metrics or logs.
    let key = "a peer key for the group tests";
    let metrics = g.metrics(member).await;
    assert!(
        metrics.contains(
            "redis_election_failsafe_messages_total{kind=\"\",result=\"bad_signature\"} 1"
        ),
        "{metrics}"
    );
    for text in [st.to_string(), metrics, g.logs()] {
        assert!(!text.contains(key), "the peer key leaked");
    }
}
