//! A leader pod killed whole (Redis and sidecar by SIGKILL) with the shipped manifests and
//! default timing. Its containers restart within a second, long before its 10 s lease could
//! expire, with an empty Redis. Two things went wrong here before (issue 6, scenario (b) of
//! the benchmark): the restarted Redis came up as a master and its peers, still replicating
//! from its address, copied its empty data set (every write lost), and the restarted sidecar
//! left its unrenewed lease to expire instead of releasing it. Now the Redis starts as a
//! replica of itself (it refuses to serve a sync) and the sidecar, outranked by a peer with
//! data, releases the lease at once.

use harness::cluster::{KubeGroup, Profile, REDIS_PORT};
use harness::measure::{ClientWriter, Route, send_signal};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_pod_killed_whole_releases_on_restart_and_loses_no_write() {
    pod_killed_whole(false).await;
}

/// The same pod also cut off from the API server, so that its restarted sidecar cannot
/// release: the peers wait for the lease to expire (10 s), and all that time they try to
/// resync from the restarted Redis at their master's address. A Redis restarted as a master
/// served them its empty data set (after the 5 s `repl-diskless-sync-delay` the manifests
/// once had; at once with the disk-based sync they have now); one restarted as a replica of
/// itself refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_pod_killed_whole_and_cut_from_the_api_lets_it_expire_and_loses_no_write() {
    pod_killed_whole(true).await;
}

async fn pod_killed_whole(cut_from_api: bool) {
    let g = KubeGroup::start(3, &Profile::default_timing()).await;
    let (old, old_ip) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("no first leader: {e}\n{}", g.logs(40)));
    let writer = ClientWriter::start(
        Route::Service(g.leader_service()),
        Some(g.password.clone()),
        "log".into(),
    );
    assert!(
        writer.wait_for(200, Duration::from_secs(20)).await,
        "the writer gets nothing through"
    );
    let pid = |c: &str| g.cluster.container_pid(&old, c).expect("running");
    let (redis, sidecar) = (pid("redis"), pid("sidecar"));
    let cut = cut_from_api.then(|| {
        let token = g.cluster.pod_token(&old).expect("the pod has a token");
        g.cluster.server.faults().add(kubesim::Fault {
            token: Some(token),
            blackhole: true,
            ..Default::default()
        })
    });
    let t0 = Instant::now();
    assert!(send_signal(redis, "KILL") && send_signal(sidecar, "KILL"));

    // Writes reach another Redis, and the Lease's history says the old leader released it:
    // the new leader did not wait for the lease to expire.
    let deadline = t0 + Duration::from_secs(60);
    let first = loop {
        if let Some(a) = writer.first_elsewhere(t0, IpAddr::V4(old_ip)) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no write reached another Redis within 60 s\n{}",
            g.logs(40)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if let Some(id) = cut {
        g.cluster.server.faults().remove(id);
    }
    let (new, _) = g
        .converged(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("not converged after the kill: {e}\n{}", g.logs(40)));
    assert_ne!(new, old, "the restarted pod took its lease back");
    let history = g.history();
    let last = history.last().expect("a history entry");
    let how = if cut_from_api { "expired" } else { "released" };
    assert_eq!(
        (last.from.as_str(), last.to.as_str(), last.reason.as_str()),
        (old.as_str(), new.as_str(), how),
        "history: {history:?}"
    );

    // Every acknowledged write, before and after the kill, is on the new master: the
    // restarted empty Redis handed nothing to its peers.
    assert!(writer.wait_for(200, Duration::from_secs(20)).await);
    let acks = writer.finish().await;
    g.assert_none_lost(SocketAddr::new(first.node, REDIS_PORT), "log", &acks)
        .await;
    g.stop().await;
}
