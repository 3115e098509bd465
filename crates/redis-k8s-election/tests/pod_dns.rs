//! Pod DNS names with the shipped manifests (issue 20): each sidecar announces its Redis as
//! `<pod>.redis-headless.default.svc.cluster.local`, replicas follow the leader by that name,
//! and a pod re-created on a new IP keeps it. Every pod deleted in turn under a writer: each
//! comes back on a new IP, no acknowledged write is lost, no replica is left following a dead
//! address, and the leader moves only by hand-over; then all three deleted at once: the group
//! comes back under the same names, with its data (the shipped AOF persistence).

use harness::cluster::{KubeGroup, Profile, REDIS_PORT};
use harness::measure::{ClientWriter, Route, probe_redis};
use redis_node::info::Role;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const PODS: [&str; 3] = ["redis-0", "redis-1", "redis-2"];

fn dns_name(pod: &str) -> String {
    format!("{pod}.redis-headless.default.svc.cluster.local")
}

/// The Lease's role-change history: (from, to, reason) per entry.
fn history(g: &KubeGroup) -> Vec<(String, String, String)> {
    g.history()
        .into_iter()
        .map(|e| (e.from, e.to, e.reason))
        .collect()
}

/// Waits until `pod` runs again on an IP other than `old`.
async fn back_on_new_ip(g: &KubeGroup, pod: &str, old: Ipv4Addr) -> Ipv4Addr {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(ip) = g.cluster.pod_ip(pod).filter(|ip| *ip != old)
            && g.cluster.container_pid(pod, "redis").is_some()
        {
            return ip;
        }
        assert!(
            Instant::now() < deadline,
            "{pod} did not come back on a new IP within 60 s\n{}",
            g.logs(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every replica follows the leader by its DNS name with its link up, and the leader lists
/// each replica under the replica's DNS name (its `replica-announce-ip`).
async fn follow_by_name(g: &KubeGroup, leader: &str, leader_ip: Ipv4Addr) {
    let addr = |ip: Ipv4Addr| SocketAddr::new(IpAddr::V4(ip), REDIS_PORT);
    let pw = Some(g.admin());
    for pod in PODS.iter().filter(|p| **p != leader) {
        let ip = g.cluster.pod_ip(pod).expect("a running pod has an IP");
        let role = probe_redis(addr(ip), pw).await.unwrap().info.role;
        match &role {
            Role::Replica {
                master_host,
                master_port,
                link_up: true,
                ..
            } if *master_host == dns_name(leader) && *master_port == REDIS_PORT => {}
            other => panic!("{pod} at {ip}: {other:?}, leader {leader}\n{}", g.logs(40)),
        }
    }
    let info = probe_redis(addr(leader_ip), pw).await.unwrap().info;
    let mut listed: Vec<String> = info.replicas.iter().map(|r| r.ip.clone()).collect();
    listed.sort();
    let mut want: Vec<String> = PODS
        .iter()
        .filter(|p| **p != leader)
        .map(|p| dns_name(p))
        .collect();
    want.sort();
    assert_eq!(listed, want, "the leader's replicas\n{}", g.logs(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_deleted_in_turn_and_all_at_once_keep_their_names_and_every_write() {
    let g = KubeGroup::start(3, &Profile::default_timing()).await;
    assert!(
        g.dns_names,
        "pods must resolve DNS names here (the kubelet needs root)"
    );
    let (leader, leader_ip) = g
        .converged(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("no first leader: {e}\n{}", g.logs(40)));
    follow_by_name(&g, &leader, leader_ip).await;
    let writer = ClientWriter::start(
        Route::Service(g.leader_service()),
        Some(g.password.clone()),
        "log".into(),
    );
    assert!(writer.wait_for(200, Duration::from_secs(20)).await);
    let changes_before = history(&g).len();

    // Each pod in turn, whatever its role: deleted (graceful: a leader hands over), back on
    // a new IP under the same name, the group converged with every replica following the
    // leader's name, and writes flowing again.
    let mut leaders_deleted = 0;
    for pod in PODS {
        let old = g.cluster.pod_ip(pod).expect("running");
        if g.holder().as_deref() == Some(pod) {
            leaders_deleted += 1;
        }
        g.cluster.delete_pod(pod).unwrap();
        let new = back_on_new_ip(&g, pod, old).await;
        let (leader, leader_ip) = g
            .converged(Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("not converged after deleting {pod}: {e}\n{}", g.logs(40)));
        assert_eq!(g.cluster.pod_ip(pod), Some(new));
        follow_by_name(&g, &leader, leader_ip).await;
        assert!(
            writer.wait_for(100, Duration::from_secs(30)).await,
            "no writes after {pod} came back\n{}",
            g.logs(40)
        );
    }
    let changes: Vec<_> = history(&g).split_off(changes_before);
    assert!(
        changes.iter().all(|(_, _, why)| why == "handover"),
        "the leader moved other than by hand-over: {changes:?}"
    );
    assert_eq!(
        changes.len(),
        leaders_deleted,
        "one hand-over per deletion of the leader's pod: {changes:?}"
    );

    // All three at once: nothing serves until the pods are back; then the same names, a
    // leader, and every acknowledged write (from the AOF on each pod's claim).
    let ips: Vec<Ipv4Addr> = PODS.iter().map(|p| g.cluster.pod_ip(p).unwrap()).collect();
    for pod in PODS {
        g.cluster.delete_pod(pod).unwrap();
    }
    for (pod, old) in PODS.iter().zip(&ips) {
        back_on_new_ip(&g, pod, *old).await;
    }
    let (leader, leader_ip) = g
        .converged(Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("not converged after deleting all: {e}\n{}", g.logs(40)));
    let mut names = g.cluster.pod_names();
    names.sort();
    assert_eq!(names, PODS);
    follow_by_name(&g, &leader, leader_ip).await;
    assert!(writer.wait_for(100, Duration::from_secs(30)).await);
    let acks = writer.finish().await;
    g.assert_none_lost(
        SocketAddr::new(IpAddr::V4(leader_ip), REDIS_PORT),
        "log",
        &acks,
    )
    .await;
    eprintln!(
        "pod DNS: {} acknowledged writes, leader changes {:?}",
        acks.len(),
        history(&g)
    );
    g.stop().await;
}
