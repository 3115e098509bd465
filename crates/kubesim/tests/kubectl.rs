//! kubectl against kubesim, with the oldest and the newest kubectl the machine ships
//! (`kubectl.1.27` … `kubectl.1.33` beside the `kubectl` dispatcher).

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

use testkit::kubectl_versions;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    /// kubectl `bin` against `s`, as the administrator, in namespace `ns`.
    fn against(bin: &std::path::Path, s: &Sim) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        s.server.write_kubeconfig(&kubeconfig, TOKEN, "ns").unwrap();
        Kubectl {
            bin: bin.to_path_buf(),
            kubeconfig,
            _dir: dir,
        }
    }

    /// Runs kubectl with `args`, within a minute.
    async fn output(&self, args: &[&str]) -> std::process::Output {
        tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(&self.bin)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("kubectl finished")
        .expect("kubectl ran")
    }

    /// Runs a command that must succeed; returns its standard output.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.output(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{stdout}\n{stderr}",
            self.bin.display()
        );
        stdout
    }

    /// Runs a command that must fail; returns its standard error.
    async fn fail(&self, args: &[&str]) -> String {
        let out = self.output(args).await;
        assert!(
            !out.status.success(),
            "{} {args:?} succeeded",
            self.bin.display()
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

#[tokio::test]
async fn kubectl_oldest_and_newest() {
    for bin in kubectl_versions() {
        let s = Sim::new().await;
        let k = Kubectl::against(&bin, &s);
        let v = bin.display().to_string();

        s.lease("l1", "a").await;
        s.pod("p1", json!({"app":"web"})).await;
        s.pod_status("p1", "10.0.0.5", true).await;
        let r = s.post(SVCS, json!({"metadata":{"name":"s1"},"spec":{"selector":{"app":"web"},"ports":[{"port":80,"targetPort":"http"}]}})).await;
        assert_eq!(r.code, 201);
        let r = s.post("/api/v1/namespaces/ns/events", json!({"metadata":{"name":"p1.ev"},"involvedObject":{"kind":"Pod","name":"p1","namespace":"ns"},
            "reason":"Started","message":"hi","type":"Normal","firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z","count":1})).await;
        assert_eq!(r.code, 201);

        // Server-side Tables give kubectl the columns a cluster shows.
        let out = k
            .run(&["get", "leases,pods,services,endpoints,events"])
            .await;
        for needle in [
            "HOLDER",
            "l1   a",
            "READY",
            "STATUS",
            "0/1",
            "Running",
            "p1",
            "CLUSTER-IP",
            "80/TCP",
            "s1",
            "10.0.0.5:8080",
            "REASON",
            "Started",
            "pod/p1",
        ] {
            assert!(out.contains(needle), "{v}: {needle} missing in\n{out}");
        }
        let wide = k.run(&["get", "pods", "-o", "wide"]).await;
        assert!(
            wide.contains("10.0.0.5") && wide.contains("NODE"),
            "{v}:\n{wide}"
        );
        let out = k.run(&["get", "lease", "l1", "-o", "yaml"]).await;
        assert!(
            out.contains("holderIdentity: a") && out.contains("kind: Lease"),
            "{v}:\n{out}"
        );
        let out = k.run(&["get", "pods", "-o", "yaml"]).await;
        assert!(out.contains("podIP: 10.0.0.5"), "{v}:\n{out}");
        let out = k.run(&["get", "endpoints", "s1", "-o", "yaml"]).await;
        assert!(out.contains("ip: 10.0.0.5"), "{v}:\n{out}");
        let out = k.run(&["get", "events", "-o", "yaml"]).await;
        assert!(out.contains("reason: Started"), "{v}:\n{out}");
        k.run(&["get", "services", "-o", "yaml"]).await;

        k.run(&["label", "lease", "l1", "role=leader"]).await;
        k.run(&["annotate", "lease", "l1", "note=x"]).await;
        k.run(&[
            "patch",
            "lease",
            "l1",
            "-p",
            r#"{"spec":{"holderIdentity":"b"}}"#,
        ])
        .await;
        let l = s.get(&format!("{L}/l1")).await.body;
        assert_eq!(l["metadata"]["labels"]["role"], "leader", "{v}");
        assert_eq!(l["metadata"]["annotations"]["note"], "x", "{v}");
        assert_eq!(l["spec"]["holderIdentity"], "b", "{v}");
        k.run(&[
            "patch",
            "lease",
            "l1",
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"c"}}"#,
        ])
        .await;
        k.run(&[
            "patch",
            "lease",
            "l1",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/holderIdentity","value":"d"}]"#,
        ])
        .await;
        assert_eq!(
            s.get(&format!("{L}/l1")).await.body["spec"]["holderIdentity"],
            "d",
            "{v}"
        );
        k.run(&["label", "pod", "p1", "app-"]).await;
        assert!(
            s.get(&format!("{PODS}/p1")).await.body["metadata"]["labels"]
                .get("app")
                .is_none(),
            "{v}"
        );

        k.run(&["delete", "lease", "l1"]).await;
        assert_eq!(s.get(&format!("{L}/l1")).await.code, 404, "{v}");

        // Typed-client commands send protobuf bodies.
        k.run(&["create", "namespace", "kns"]).await;
        k.run(&["create", "serviceaccount", "sa1"]).await;
        let token = k.run(&["create", "token", "sa1"]).await;
        let r = s
            .req_as(Some(token.trim()), "GET", "/version", None, "")
            .await;
        assert_eq!(r.code, 200, "{v}: the issued token authenticates");
        assert_eq!(s.get("/api/v1/namespaces/kns").await.code, 200);
    }
}

/// Issue 18: the API's defaulting of pod specs, as `kubectl describe` shows it: a probe given
/// only its handler is described with the real server's defaults (it printed `timeout=0s
/// #success=0`), and the pod gets its default restart policy and grace period.
#[tokio::test]
async fn pod_specs_get_the_apis_defaults_as_describe_shows_them() {
    for bin in kubectl_versions() {
        let s = Sim::new().await;
        let k = Kubectl::against(&bin, &s);
        let r = s
            .post(
                "/api/v1/namespaces/ns/pods",
                json!({"metadata": {"name": "probed"}, "spec": {"containers": [{
                    "name": "c", "image": "redis:7",
                    "readinessProbe": {"httpGet": {"port": 9121}},
                    "livenessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 5}
                }]}}),
            )
            .await;
        assert_eq!(r.code, 201, "{:?}", r.body);
        let c = &r.body["spec"]["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/");
        assert_eq!(r.body["spec"]["restartPolicy"], "Always");
        assert_eq!(r.body["spec"]["terminationGracePeriodSeconds"], 30);
        let out = k.run(&["describe", "pod", "probed"]).await;
        let v = bin.display();
        for needle in [
            "http-get http://:9121/ delay=0s timeout=1s period=10s #success=1 #failure=3",
            "tcp-socket :6379 delay=0s timeout=1s period=5s #success=1 #failure=3",
        ] {
            assert!(out.contains(needle), "{v}: {needle:?} not in\n{out}");
        }
    }
}

/// Issue 18: kubesim serves the OpenAPI documents (v3 per group-version, v2 as protobuf), so
/// `kubectl apply` validates without `--validate=false`: kubectl finds `fieldValidation` on
/// the kind's PATCH operation and the server refuses an unknown field; `explain` renders the
/// schemas; and `apply`'s strategic merge patch uses the documents' merge keys, so a Service
/// port dropped from the manifest is dropped from the object (with the list taken as atomic,
/// kubectl would send the remaining port and the server's merge by `port` would keep the
/// dropped one).
#[tokio::test]
async fn openapi_documents_let_kubectl_validate_explain_and_merge() {
    for bin in kubectl_versions() {
        let s = Sim::new().await;
        let k = Kubectl::against(&bin, &s);
        let v = bin.display().to_string();
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        };

        let cm = file(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n",
        );
        let out = k.run(&["apply", "-f", &cm]).await;
        assert!(out.contains("configmap/settings created"), "{v}: {out}");

        let bad = file(
            "bad.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndata:\n  a: b\ndatta:\n  c: d\n",
        );
        let err = k.fail(&["apply", "-f", &bad]).await;
        assert!(
            err.contains(r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "datta""#),
            "{v}: {err}"
        );
        assert_eq!(
            s.get("/api/v1/namespaces/ns/configmaps/typo").await.code,
            404
        );

        let explained = k.run(&["explain", "pod.spec.containers"]).await;
        for needle in [
            "KIND:",
            "Pod",
            "containers",
            "[]Container",
            "FIELDS:",
            "image",
        ] {
            assert!(
                explained.contains(needle),
                "{v}: {needle} missing in\n{explained}"
            );
        }
        let explained = k.run(&["explain", "leases.spec.holderIdentity"]).await;
        assert!(
            explained.contains("holderIdentity") && explained.contains("string"),
            "{v}: {explained}"
        );

        let svc = |ports: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n{ports}"
            )
        };
        let two = file(
            "svc2.yaml",
            &svc("  - name: a\n    port: 80\n  - name: b\n    port: 81\n"),
        );
        k.run(&["apply", "-f", &two]).await;
        let one = file("svc1.yaml", &svc("  - name: a\n    port: 80\n"));
        let out = k.run(&["apply", "-f", &one]).await;
        assert!(out.contains("service/web configured"), "{v}: {out}");
        let ports = s.get(&format!("{SVCS}/web")).await.body["spec"]["ports"].clone();
        let ports: Vec<i64> = ports
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, [80], "{v}");
    }
}
