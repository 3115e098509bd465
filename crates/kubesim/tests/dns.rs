//! Cluster DNS inside pods: a StatefulSet's pods resolve each other by
//! `<pod>.<service>.<ns>.svc.cluster.local` (and the short forms the search domains allow)
//! with the system resolver (`getent`), names follow a pod re-created on a new IP and vanish
//! with the pod; a pod whose resolver is not the cluster's resolves none of them (the control
//! case). Needs root (mount namespaces and port 53), as the whole suite does.

mod common;

use common::wait_for;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use kubesim::cluster::{Cluster, ClusterConfig};
use kubesim::kubelet::plan::ImageRule;
use kubesim::manifest;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Each pod writes, every 200 ms, what its resolver answers for each name into
/// `$DATA/<name>` (the IPs, one per line; empty when the name does not resolve) and counts
/// its rounds in `$DATA/rounds`.
const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: scripts}
data:
  resolve.sh: |
    n=0
    while true; do
      for name in web-0.web.dnstest.svc.cluster.local web-1.web.dnstest.svc.cluster.local web-1.web web.dnstest.svc.cluster.local "$HOSTNAME"; do
        getent ahostsv4 "$name" | awk '$2 == "STREAM" {print $1}' > "$DATA/.$name"
        mv "$DATA/.$name" "$DATA/$name"
      done
      n=$((n+1)); echo $n > "$DATA/.rounds"; mv "$DATA/.rounds" "$DATA/rounds"
      sleep 0.2
    done
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 2
  serviceName: web
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: resolve
          image: bash:5
          command: [bash, /scripts/resolve.sh]
          env: [{name: DATA, value: /data}]
          volumeMounts:
            - {name: data, mountPath: /data}
            - {name: scripts, mountPath: /scripts}
      volumes:
        - {name: data, emptyDir: {}}
        - {name: scripts, configMap: {name: scripts}}
---
apiVersion: v1
kind: Pod
metadata: {name: outsider}
spec:
  terminationGracePeriodSeconds: 1
  # The control case: a resolver that is not cluster DNS (nothing listens there).
  dnsPolicy: None
  dnsConfig:
    nameservers: [127.0.0.1]
    searches: [dnstest.svc.cluster.local]
  containers:
    - name: resolve
      image: bash:5
      command: [bash, /scripts/resolve.sh]
      env: [{name: DATA, value: /data}]
      volumeMounts:
        - {name: data, mountPath: /data}
        - {name: scripts, mountPath: /scripts}
  volumes:
    - {name: data, emptyDir: {}}
    - {name: scripts, configMap: {name: scripts}}
"#;

fn pod_network() -> (IpAddr, Vec<Ipv4Addr>) {
    // A /24 of its own per test run: the cluster's address (API, DNS) and its pods'.
    let a = testkit::free_loopback_addr();
    let IpAddr::V4(ip) = a.ip() else {
        unreachable!()
    };
    let [_, b, c, _] = ip.octets();
    (
        IpAddr::V4(Ipv4Addr::new(127, b, c, 1)),
        (2..250).map(|d| Ipv4Addr::new(127, b, c, d)).collect(),
    )
}

/// The emptyDir of `pod`'s `data` volume (where its script writes).
fn data_dir(cluster: &Cluster, pod: &str) -> Option<PathBuf> {
    let dir = cluster
        .kubelet
        .as_ref()?
        .pod_dir(cluster.namespace(), pod)?;
    Some(dir.join("volumes/data"))
}

/// What `pod` last resolved `name` to (`None` before its first round).
fn resolved(cluster: &Cluster, pod: &str, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(data_dir(cluster, pod)?.join(name)).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

fn rounds(cluster: &Cluster, pod: &str) -> u64 {
    data_dir(cluster, pod)
        .and_then(|d| std::fs::read_to_string(d.join("rounds")).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until `pod` resolves `name` to exactly `ips` (empty: does not resolve).
fn wait_resolves(cluster: &Cluster, pod: &str, name: &str, ips: &[String]) {
    wait_for(
        &format!("{pod} to resolve {name} to {ips:?}"),
        Duration::from_secs(30),
        || (resolved(cluster, pod, name)? == ips).then_some(()),
    );
}

/// Asks the cluster's DNS server directly, as any resolver would.
fn ask(server: std::net::SocketAddr, name: &str) -> (ResponseCode, Vec<Ipv4Addr>) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket.send_to(&q.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(r.metadata.id, q.metadata.id);
    let ips = r
        .answers
        .iter()
        .filter_map(|a| match a.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    (r.metadata.response_code, ips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_resolve_each_other_by_name_and_names_follow_the_pods() {
    let state = tempfile::tempdir().unwrap();
    let (address, pod_ips) = pod_network();
    let mut config = ClusterConfig::new(address, state.path().to_path_buf());
    config.namespace = "dnstest".into();
    config.pod_ips = pod_ips;
    config.node = true;
    config.dns_address = Some(address);
    config.images = vec![ImageRule {
        repository: "bash".into(),
        entrypoint: vec!["bash".into()],
        programs: Default::default(),
    }];
    let objects = manifest::parse_documents("test", MANIFEST).unwrap();
    let cluster = Cluster::start(config, &objects).await.unwrap();
    assert!(
        cluster.pod_dns(),
        "pod DNS needs root (mount namespaces and UDP port 53); this suite runs as root"
    );
    let dns = cluster.dns_addr().expect("the DNS server runs");
    assert_eq!(dns, std::net::SocketAddr::new(address, 53));

    let ip = |pod: &str| {
        wait_for(&format!("{pod}'s IP"), Duration::from_secs(20), || {
            cluster.pod_ip(pod).map(|ip| ip.to_string())
        })
    };
    let (ip0, ip1) = tokio::task::block_in_place(|| (ip("web-0"), ip("web-1")));
    tokio::task::block_in_place(|| {
        // Full names, the short form through the search domains, the headless Service's
        // name (both pods), and the pod's own name from its hosts file.
        for (pod, own) in [("web-0", &ip0), ("web-1", &ip1)] {
            wait_resolves(
                &cluster,
                pod,
                "web-0.web.dnstest.svc.cluster.local",
                std::slice::from_ref(&ip0),
            );
            wait_resolves(
                &cluster,
                pod,
                "web-1.web.dnstest.svc.cluster.local",
                std::slice::from_ref(&ip1),
            );
            wait_resolves(&cluster, pod, "web-1.web", std::slice::from_ref(&ip1));
            let mut both = vec![ip0.clone(), ip1.clone()];
            both.sort();
            let mut got = wait_for("the Service's addresses", Duration::from_secs(30), || {
                resolved(&cluster, pod, "web.dnstest.svc.cluster.local").filter(|v| v.len() == 2)
            });
            got.sort();
            assert_eq!(got, both);
            wait_resolves(&cluster, pod, pod, std::slice::from_ref(own));
        }
    });
    // The server answers a resolver outside the pods too (the same records).
    let (code, ips) = ask(dns, "web-1.web.dnstest.svc.cluster.local.");
    assert_eq!(
        (code, ips),
        (ResponseCode::NoError, vec![ip1.parse().unwrap()])
    );
    assert_eq!(
        ask(dns, "web-9.web.dnstest.svc.cluster.local.").0,
        ResponseCode::NXDomain
    );

    // Control: the outsider's resolver is not the cluster's, so after rounds of asking it
    // resolved none of the names.
    tokio::task::block_in_place(|| {
        wait_for("the outsider's rounds", Duration::from_secs(60), || {
            (rounds(&cluster, "outsider") >= 2).then_some(())
        });
    });
    for name in [
        "web-0.web.dnstest.svc.cluster.local",
        "web-1.web",
        "web.dnstest.svc.cluster.local",
    ] {
        assert_eq!(
            resolved(&cluster, "outsider", name),
            Some(vec![]),
            "{name} resolved without cluster DNS"
        );
    }

    // web-1 re-created: a new IP, and web-0 resolves its name to it.
    cluster.delete_pod("web-1").unwrap();
    let new1 = tokio::task::block_in_place(|| {
        wait_for("web-1 back on a new IP", Duration::from_secs(30), || {
            cluster
                .pod_ip("web-1")
                .map(|ip| ip.to_string())
                .filter(|ip| *ip != ip1)
        })
    });
    tokio::task::block_in_place(|| {
        wait_resolves(
            &cluster,
            "web-0",
            "web-1.web.dnstest.svc.cluster.local",
            std::slice::from_ref(&new1),
        );
    });

    // Scaled down to one pod: web-1's name goes with it.
    let scaled = MANIFEST.replace("replicas: 2", "replicas: 1");
    let objects: Vec<_> = manifest::parse_documents("test", &scaled)
        .unwrap()
        .into_iter()
        .filter(|o| o["kind"] == "StatefulSet")
        .collect();
    cluster
        .server
        .with_store(|s| manifest::apply(s, "dnstest", &objects))
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_resolves(
            &cluster,
            "web-0",
            "web-1.web.dnstest.svc.cluster.local",
            &[],
        );
        wait_resolves(&cluster, "web-0", "web-1.web", &[]);
    });
    assert_eq!(
        ask(dns, "web-1.web.dnstest.svc.cluster.local.").0,
        ResponseCode::NXDomain
    );
    cluster.shutdown().await;
}
