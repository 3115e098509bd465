//! The kubelet and the StatefulSet controller running real `redis-server` pods: addresses,
//! environment, volumes, service-account files, probes feeding endpoints, restarts, and
//! graceful deletion with a preStop hook.

mod common;

use common::{Sim, wait_for};
use kubesim::controllers::StatefulSetController;
use kubesim::kubelet::plan::ImageRule;
use kubesim::kubelet::{Kubelet, KubeletConfig};
use kubesim::manifest;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

const MANIFEST: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: app}
---
apiVersion: v1
kind: Secret
metadata: {name: conf}
stringData:
  redis.conf: |
    requirepass s3cret
---
apiVersion: v1
kind: Service
metadata: {name: kv}
spec:
  selector: {app: kv}
  ports: [{name: redis, port: 6379, targetPort: redis}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: kv}
spec:
  replicas: 2
  serviceName: kv
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: kv}}
  template:
    metadata: {labels: {app: kv}}
    spec:
      serviceAccountName: app
      terminationGracePeriodSeconds: 5
      containers:
        - name: redis
          image: redis:7.2
          command: [redis-server]
          args: [/etc/conf/redis.conf, --bind, $(POD_IP), --port, "6379", --save, "", --dir, /data]
          env:
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
          ports: [{name: redis, containerPort: 6379}]
          readinessProbe:
            tcpSocket: {port: redis}
            periodSeconds: 1
            failureThreshold: 1
          volumeMounts:
            - {name: conf, mountPath: /etc/conf, readOnly: true}
            - {name: data, mountPath: /data}
        - name: shell
          image: bash:5
          command: [bash, -c]
          args:
            - |
              echo "pod=$POD_NAME ns=$POD_NAMESPACE ip=$POD_IP conf=$(cat $CONF)"
              if [ -r /var/run/secrets/kubernetes.io/serviceaccount/namespace ]; then
                echo "in-cluster ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace) host=$KUBERNETES_SERVICE_HOST"
              else
                echo "kubeconfig=$KUBECONFIG"
              fi
              exec sleep 1000
          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: CONF, value: /etc/conf/redis.conf}
            - {name: DATA, value: /data}
          lifecycle:
            preStop:
              exec:
                # Paths inside a script are not mapped, paths in the environment are.
                command: [bash, -c, "echo stopping > $DATA/prestop-ran"]
          volumeMounts:
            - {name: conf, mountPath: /etc/conf, readOnly: true}
            - {name: data, mountPath: /data}
      volumes:
        - {name: conf, secret: {secretName: conf, defaultMode: 0440}}
        - {name: data, emptyDir: {}}
"#;

fn pod(sim: &Sim, name: &str) -> Option<Value> {
    sim.server
        .with_store(|s| s.get("pods", "ns", name).map(|p| (*p).clone()))
}

fn ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// `redis-cli` against the pod's Redis at `ip`, with the Secret's password: its answer.
fn redis_cli(ip: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", ip, "-p", "6379", "-a", "s3cret", "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn redis_ping(ip: &str) -> bool {
    redis_cli(ip, &["PING"]) == "PONG"
}

fn pod_network() -> Vec<Ipv4Addr> {
    // A /24 of its own per test run, so parallel tests never share a pod address.
    let a = testkit::free_loopback_addr();
    let std::net::IpAddr::V4(ip) = a.ip() else {
        unreachable!()
    };
    let [_, b, c, _] = ip.octets();
    (2..250).map(|d| Ipv4Addr::new(127, b, c, d)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_as_processes_with_probes_restarts_and_graceful_deletion() {
    let sim = Sim::new().await;
    let state = tempfile::tempdir().unwrap();
    let images = vec![
        ImageRule {
            repository: "redis".into(),
            entrypoint: vec!["redis-server".into()],
            programs: Default::default(),
        },
        ImageRule {
            repository: "bash".into(),
            entrypoint: vec!["bash".into()],
            programs: Default::default(),
        },
    ];
    let mut config = KubeletConfig::new(
        "node-1",
        pod_network(),
        state.path().to_path_buf(),
        images,
        sim.server.addr(),
        sim.server.ca_pem(),
    );
    config.backoff_initial = Duration::from_millis(500);
    let kubelet = Kubelet::start(sim.server.store(), config).unwrap();
    let _controller = StatefulSetController::start(sim.server.store());
    let objects = manifest::parse_documents("test", MANIFEST).unwrap();
    sim.server
        .with_store(|s| manifest::apply(s, "ns", &objects))
        .unwrap();

    // Both pods come up Ready on their own addresses, with the pod-name label, and Redis
    // answers there with the password from the Secret volume.
    let (p0, p1) = tokio::task::block_in_place(|| {
        wait_for("two ready pods", Duration::from_secs(20), || {
            let a = pod(&sim, "kv-0").filter(ready)?;
            let b = pod(&sim, "kv-1").filter(ready)?;
            Some((a, b))
        })
    });
    let ip0 = p0["status"]["podIP"].as_str().unwrap().to_string();
    let ip1 = p1["status"]["podIP"].as_str().unwrap().to_string();
    assert_ne!(ip0, ip1);
    assert!(ip0.starts_with("127."), "{ip0}");
    assert_eq!(p0["spec"]["nodeName"], "node-1");
    assert_eq!(
        p0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "kv-0"
    );
    assert_eq!(p0["status"]["phase"], "Running");
    assert!(redis_ping(&ip0) && redis_ping(&ip1));

    // The endpoints controller sees the readiness the probes reported.
    let endpoints = sim.server.with_store(|s| {
        s.get("endpoints", "ns", "kv")
            .map(|e| e.to_string())
            .unwrap_or_default()
    });
    assert!(
        endpoints.contains(&ip0) && endpoints.contains(&ip1),
        "{endpoints}"
    );

    // fieldRef env, a mapped Secret path, and the service-account files where in-cluster
    // configuration reads them (as root) or a kubeconfig of them (otherwise).
    let dir0 = kubelet.pod_dir("ns", "kv-0").unwrap();
    let log = tokio::task::block_in_place(|| {
        wait_for(
            "the shell container's output",
            Duration::from_secs(10),
            || {
                let l = std::fs::read_to_string(dir0.join("logs/shell.log")).ok()?;
                (l.lines().count() >= 2).then_some(l)
            },
        )
    });
    assert!(
        log.contains(&format!("pod=kv-0 ns=ns ip={ip0} conf=requirepass s3cret")),
        "{log}"
    );
    eprintln!("in-cluster files: {}", kubelet.in_cluster_files());
    if kubelet.in_cluster_files() {
        assert!(
            log.contains(&format!("in-cluster ns=ns host={}", sim.server.addr().ip())),
            "{log}"
        );
    } else {
        assert!(log.contains("kubeconfig="), "{log}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir0.join("volumes/conf/redis.conf"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o440, "defaultMode 0440 read as octal");
    // The Secret's volume is read-only inside the pod, as a real kubelet mounts it: Redis
    // (root here) cannot rewrite the config file it was started from (issue 17: `CONFIG
    // REWRITE` rewrote the Secret-mounted auth.conf). Where containers share the host's mount
    // namespace (not root) the files are plain files and this cannot hold.
    if kubelet.in_cluster_files() {
        let answer = redis_cli(&ip0, &["CONFIG", "REWRITE"]);
        assert!(answer.contains("Read-only file system"), "{answer}");
        // The control: the emptyDir beside it is writable.
        assert_eq!(redis_cli(&ip0, &["SAVE"]), "OK");
    }

    // A crashed container is restarted and the pod is Ready again.
    let pid = kubelet.container_pid("ns", "kv-1", "redis").unwrap();
    testkit::signal(pid, "-KILL");
    tokio::task::block_in_place(|| {
        wait_for("kv-1 restarted and ready", Duration::from_secs(20), || {
            let p = pod(&sim, "kv-1")?;
            let restarts = p["status"]["containerStatuses"][0]["restartCount"].as_u64()?;
            (restarts == 1 && ready(&p) && redis_ping(&ip1)).then_some(())
        })
    });
    assert_ne!(kubelet.container_pid("ns", "kv-1", "redis"), Some(pid));

    // Deleting a pod runs its preStop hook, ends its processes and removes it; the
    // controller makes it again with a new UID (and, as in a cluster, another address).
    let old_uid = p0["metadata"]["uid"].clone();
    let old_pids = [
        kubelet.container_pid("ns", "kv-0", "redis").unwrap(),
        kubelet.container_pid("ns", "kv-0", "shell").unwrap(),
    ];
    let r = sim.delete("/api/v1/namespaces/ns/pods/kv-0").await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    let fresh = tokio::task::block_in_place(|| {
        wait_for("kv-0 made again", Duration::from_secs(20), || {
            pod(&sim, "kv-0").filter(|p| p["metadata"]["uid"] != old_uid && ready(p))
        })
    });
    assert_eq!(
        std::fs::read_to_string(dir0.join("volumes/data/prestop-ran")).unwrap(),
        "stopping\n"
    );
    for pid in old_pids {
        assert!(
            !testkit::process_alive(pid),
            "process {pid} of the deleted pod is gone"
        );
    }
    assert_ne!(fresh["status"]["podIP"].as_str().unwrap(), ip0);
    let reasons: Vec<String> = sim.server.with_store(|s| {
        s.list("events", Some("ns"))
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    });
    for r in ["Scheduled", "Started", "Killing", "SuccessfulCreate"] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }

    let pids: Vec<u32> = ["kv-0", "kv-1"]
        .iter()
        .flat_map(|p| {
            ["redis", "shell"]
                .iter()
                .filter_map(|c| kubelet.container_pid("ns", p, c))
                .collect::<Vec<_>>()
        })
        .collect();
    drop(_controller);
    kubelet.shutdown().await;
    for pid in pids {
        assert!(!testkit::process_alive(pid), "shutdown ended {pid}");
    }
}

const ONE_CONTAINER_TOKEN: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: split}
spec:
  serviceAccountName: app
  automountServiceAccountToken: false
  containers:
    - name: with
      image: bash:5
      command: [bash, -c]
      args:
        - |
          if [ -r /var/run/secrets/kubernetes.io/serviceaccount/token ] || [ -n "$KUBECONFIG" ]; then echo "token: yes"; else echo "token: no"; fi
          exec sleep 1000
      volumeMounts:
        - {name: sa, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
    - name: without
      image: bash:5
      command: [bash, -c]
      args:
        - |
          if [ -r /var/run/secrets/kubernetes.io/serviceaccount/token ] || [ -n "$KUBECONFIG" ]; then echo "token: yes"; else echo "token: no"; fi
          exec sleep 1000
  volumes:
    - name: sa
      projected:
        sources:
          - serviceAccountToken: {path: token, expirationSeconds: 3607}
          - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
          - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
"#;

/// Issue 17: the service-account token reached every container of the pod, the Redis
/// container too. With `automountServiceAccountToken: false` and the token projected into
/// one container, only that container has it (the control: the container beside it has
/// none), as on a real kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projected_token_reaches_only_the_container_that_mounts_it() {
    let sim = Sim::new().await;
    let state = tempfile::tempdir().unwrap();
    let images = vec![ImageRule {
        repository: "bash".into(),
        entrypoint: vec!["bash".into()],
        programs: Default::default(),
    }];
    let config = KubeletConfig::new(
        "node-1",
        pod_network(),
        state.path().to_path_buf(),
        images,
        sim.server.addr(),
        sim.server.ca_pem(),
    );
    let kubelet = Kubelet::start(sim.server.store(), config).unwrap();
    let objects = manifest::parse_documents("test", ONE_CONTAINER_TOKEN).unwrap();
    sim.server
        .with_store(|s| manifest::apply(s, "ns", &objects))
        .unwrap();
    let dir = tokio::task::block_in_place(|| {
        wait_for("the pod's directory", Duration::from_secs(20), || {
            kubelet.pod_dir("ns", "split")
        })
    });
    let said = |container: &str| {
        let log = dir.join(format!("logs/{container}.log"));
        tokio::task::block_in_place(|| {
            wait_for(
                &format!("{container}'s output"),
                Duration::from_secs(10),
                || {
                    std::fs::read_to_string(&log)
                        .ok()
                        .filter(|l| l.contains("token: "))
                },
            )
        })
    };
    assert!(said("with").contains("token: yes"), "{}", said("with"));
    assert!(said("without").contains("token: no"), "{}", said("without"));
}
