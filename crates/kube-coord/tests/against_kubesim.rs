//! kube-coord against kubesim's API server.

use election::elector::{Purpose, Stamp, WriteIntent};
use futures::StreamExt;
use kube_coord::{Coord, CoordError};
use std::time::Duration;

const TOKEN: &str = "T";

async fn server() -> kubesim::ApiServer {
    kubesim::ApiServer::start(kubesim::Config::new("127.0.0.1:0".parse().unwrap(), TOKEN))
        .await
        .unwrap()
}

async fn client(s: &kubesim::ApiServer, token: &str) -> kube::Client {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    s.write_kubeconfig(&path, token, "default").unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn intent(holder: &str, version: Option<String>, transitions: u32) -> WriteIntent {
    WriteIntent {
        purpose: Purpose::Acquire,
        version,
        holder: holder.into(),
        holder_address: format!("{holder}:6379"),
        lease_duration: Duration::from_secs(10),
        transitions,
        acquire: Stamp::Now,
        handover_to: String::new(),
        paused: String::new(),
        history: String::new(),
        members: Vec::new(),
        change: None,
    }
}

#[tokio::test]
async fn lease_compare_and_set_and_watch() {
    let s = server().await;
    let coord = Coord::new(
        client(&s, TOKEN).await,
        "default",
        "redis",
        Duration::from_secs(2),
    );
    let mut watch = Box::pin(coord.watch_lease());
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, None, "no lease yet");
    assert_eq!(coord.get_lease().await.unwrap(), None);

    let created = coord.write_lease(&intent("a", None, 0)).await.unwrap();
    assert_eq!(created.record.holder, "a");
    assert_eq!(created.record.holder_address, "a:6379");
    let seen = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.unwrap().record.holder, "a");

    // A second create loses; a replace with the current version wins; a stale one loses.
    assert!(matches!(
        coord.write_lease(&intent("b", None, 0)).await,
        Err(CoordError::Conflict { .. })
    ));
    let renewed = coord
        .write_lease(&intent("a", Some(created.version.clone()), 0))
        .await
        .unwrap();
    assert_ne!(renewed.record.renew_stamp, "");
    let stale = coord
        .write_lease(&intent("b", Some(created.version.clone()), 1))
        .await
        .unwrap_err();
    assert!(matches!(stale, CoordError::Conflict { .. }), "{stale}");
    assert_eq!(stale.label(), "conflict");
    assert_eq!(coord.get_lease().await.unwrap().unwrap().record.holder, "a");
}

#[tokio::test]
async fn routing_labels_and_peers() {
    let s = server().await;
    let http = client(&s, TOKEN).await;
    let coord = Coord::new(
        client(&s, TOKEN).await,
        "default",
        "redis",
        Duration::from_secs(2),
    );
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::default_namespaced(http.clone());
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "redis-leader"},
        "spec": {"selector": {"app": "redis", "tier": "x"}, "ports": [{"port": 6379}]}}))
    .unwrap();
    api.create(&Default::default(), &svc).await.unwrap();
    coord
        .route_service("redis-leader", "redis-1")
        .await
        .unwrap();
    let got = api.get("redis-leader").await.unwrap();
    assert_eq!(
        got.spec.unwrap().selector.unwrap(),
        [(
            "statefulset.kubernetes.io/pod-name".to_string(),
            "redis-1".to_string()
        )]
        .into(),
        "the whole selector is replaced in one write"
    );

    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(http);
    for name in ["redis-0", "redis-1", "other"] {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "redis"}]}}))
        .unwrap();
        pods.create(&Default::default(), &p).await.unwrap();
    }
    for name in ["redis-0", "redis-1"] {
        coord
            .patch_pod(
                name,
                [("redis-role".to_string(), Some("replica".to_string()))].into(),
                [
                    (
                        kube_coord::POD_LEASE_ANNOTATION.to_string(),
                        Some("redis".to_string()),
                    ),
                    (
                        kube_coord::POD_ADDRESS_ANNOTATION.to_string(),
                        Some(format!("{name}:6379")),
                    ),
                ]
                .into(),
            )
            .await
            .unwrap();
    }
    let peers = coord.peers().await.unwrap();
    let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["redis-0", "redis-1"]);
    assert_eq!(peers[1].address, "redis-1:6379");
    coord
        .patch_pod(
            "redis-0",
            [("redis-role".to_string(), None)].into(),
            Default::default(),
        )
        .await
        .unwrap();
    let p0 = pods.get("redis-0").await.unwrap();
    assert!(
        !p0.metadata
            .labels
            .unwrap_or_default()
            .contains_key("redis-role")
    );
}

#[tokio::test]
async fn timeouts_and_refusals_are_typed() {
    let s = server().await;
    let coord = Coord::new(
        client(&s, TOKEN).await,
        "default",
        "redis",
        Duration::from_millis(300),
    );
    let id = s.faults().add(kubesim::Fault {
        token: Some(TOKEN.into()),
        blackhole: true,
        ..Default::default()
    });
    let e = coord.get_lease().await.unwrap_err();
    assert!(matches!(e, CoordError::Timeout { .. }), "{e}");
    assert_eq!(e.label(), "timeout");
    s.faults().remove(id);
    s.faults().add(kubesim::Fault {
        token: Some(TOKEN.into()),
        error: Some(kubesim::ErrorFault {
            code: 500,
            writes_only: true,
            rate: 1.0,
            retry_after_seconds: None,
        }),
        ..Default::default()
    });
    let e = coord.write_lease(&intent("a", None, 0)).await.unwrap_err();
    assert_eq!(e.label(), "server_error", "{e}");
    s.faults().clear();

    // A service account without a Role: 403, typed.
    let sa: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::default_namespaced(client(&s, TOKEN).await);
    sa.create(
        &Default::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}})).unwrap(),
    )
    .await
    .unwrap();
    let tok = s
        .issue_token("default", "nobody", Duration::from_secs(600))
        .unwrap();
    let weak = Coord::new(
        client(&s, &tok).await,
        "default",
        "redis",
        Duration::from_secs(2),
    );
    let e = weak.get_lease().await.unwrap_err();
    assert_eq!(e.label(), "forbidden", "{e}");
}

#[tokio::test]
async fn pause_marker_survives_the_holders_writes() {
    let s = server().await;
    let coord = Coord::new(
        client(&s, TOKEN).await,
        "default",
        "redis",
        Duration::from_secs(2),
    );
    let created = coord.write_lease(&intent("a", None, 0)).await.unwrap();
    let paused = coord.set_paused(Some("by ops")).await.unwrap();
    assert_eq!(paused.record.paused, "by ops");
    assert_eq!(
        paused.record.holder, "a",
        "the patch touches only the marker"
    );
    // The holder's renewal built before the pause conflicts, so it cannot drop the marker.
    let stale = coord
        .write_lease(&intent("a", Some(created.version.clone()), 0))
        .await
        .unwrap_err();
    assert!(matches!(stale, CoordError::Conflict { .. }), "{stale}");
    // Built from the reread record, it carries the marker on.
    let renew = WriteIntent {
        purpose: Purpose::Renew,
        paused: paused.record.paused.clone(),
        ..intent("a", Some(paused.version.clone()), 0)
    };
    let renewed = coord.write_lease(&renew).await.unwrap();
    assert_eq!(renewed.record.paused, "by ops");
    let resumed = coord.set_paused(None).await.unwrap();
    assert_eq!(resumed.record.paused, "");
    assert_eq!(resumed.record.holder, "a");
}

/// Issue 18: the sidecar's Events name the pod with its uid, so `kubectl describe pod` (which
/// selects Events by `involvedObject.uid`) lists them, with the oldest and the newest kubectl;
/// a repeat of the same note counts into its series, and another note (a later epoch) is an
/// Event of its own. The control: an Event written without the uid is not listed.
#[tokio::test]
async fn events_name_the_pod_with_its_uid_so_kubectl_describe_lists_them() {
    use k8s_openapi::api::core::v1::Pod;
    use kube_coord::events::{EventKind, EventRecorder, SidecarEvent};
    let s = server().await;
    let kube = client(&s, TOKEN).await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "redis-0"},
        "spec": {"containers": [{"name": "redis", "image": "redis:7"}]}
    }))
    .unwrap();
    kube::Api::<Pod>::default_namespaced(kube.clone())
        .create(&Default::default(), &pod)
        .await
        .unwrap();
    let rec = EventRecorder::new(kube.clone(), "default", "redis-0", Duration::from_secs(2));
    let promoted = |epoch: u32| {
        SidecarEvent::new(
            EventKind::Promoted,
            format!("promoted to leader at epoch {epoch}"),
        )
    };
    rec.publish(&promoted(1)).await.unwrap();
    rec.publish(&promoted(1)).await.unwrap();
    rec.publish(&promoted(3)).await.unwrap();
    // The control: the same kind of Event without the uid, as kube-rs' Recorder wrote it.
    let no_uid: k8s_openapi::api::events::v1::Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "redis-0.nouid"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "redis-k8s-election", "reportingInstance": "redis-0",
        "action": "Promote", "reason": "Promoted", "type": "Normal",
        "note": "written without the uid",
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "redis-0", "namespace": "default"}
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::events::v1::Event>::default_namespaced(kube.clone())
        .create(&Default::default(), &no_uid)
        .await
        .unwrap();
    let events: Vec<_> = kube::Api::<k8s_openapi::api::events::v1::Event>::default_namespaced(kube)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Promoted"))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let epoch1 = events
        .iter()
        .find(|e| e.note.as_deref() == Some("promoted to leader at epoch 1"))
        .unwrap();
    assert_eq!(epoch1.series.as_ref().map(|s| s.count), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    s.write_kubeconfig(&kubeconfig, TOKEN, "default").unwrap();
    for kubectl in testkit::kubectl_versions() {
        let out = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["describe", "pod", "redis-0"])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for note in [
            "promoted to leader at epoch 1",
            "promoted to leader at epoch 3",
        ] {
            assert!(
                text.contains(note),
                "{}: no {note:?} in\n{text}",
                kubectl.display()
            );
        }
        assert!(
            !text.contains("written without the uid"),
            "{}: listed an Event without the uid:\n{text}",
            kubectl.display()
        );
    }
}
