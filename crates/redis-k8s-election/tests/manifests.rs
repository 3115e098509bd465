//! The shipped manifests validate against the Kubernetes schemas offline, with the PyPI
//! package `kubernetes-validate` (installed by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("python3")
        .args(["-m", "kubernetes_validate", "-k", "1.33.0", "--strict"])
        .args(files)
        .output()
        .expect("python3 runs")
}

#[test]
fn shipped_manifests_validate_against_the_schemas() {
    let out = validate(&manifests());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named"),
        "kubernetes-validate is not installed: run .ci/run, or `python3 -m pip install kubernetes-validate`"
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("passed"), "{text}");
}

#[test]
fn the_validator_rejects_a_broken_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: x}\nrules:\n- apiGroups: [\"\"]\n  resources: pods\n  verbs: [\"get\"]\n").unwrap();
    assert!(
        !validate(&[bad]).status.success(),
        "a check that cannot fail proves nothing"
    );
}

#[test]
fn the_kustomization_renders_every_manifest() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for f in manifests() {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            kustomization.contains(&format!("- {name}")),
            "kustomization.yaml does not list {name}"
        );
    }
    // kubectl's built-in kustomize renders the group offline.
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl on PATH");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "kind: ServiceAccount",
        "kind: Role",
        "kind: RoleBinding",
        "kind: Service",
        "kind: StatefulSet",
        "kind: PodDisruptionBudget",
        "kind: NetworkPolicy",
    ] {
        assert!(text.contains(kind), "{kind} missing from:\n{text}");
    }
    // Issue 17: no credential is shipped (the Secret is made by make-secret.sh).
    assert!(!text.contains("kind: Secret"), "{text}");
}

/// `make-secret.sh` writes a valid Secret with every key the manifests read, random each
/// time, each value one the sidecar accepts.
#[test]
fn make_secret_writes_a_valid_secret_with_fresh_strong_values() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/make-secret.sh");
    let mut runs = Vec::new();
    for i in 0..2 {
        let out = Command::new("sh").arg(&script).output().expect("sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.path().join(format!("secret-{i}.yaml"));
        std::fs::write(&path, &out.stdout).unwrap();
        let v = validate(std::slice::from_ref(&path));
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
        let text = String::from_utf8(out.stdout).unwrap();
        let value = |key: &str| -> String {
            let line = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
                .unwrap_or_else(|| panic!("{key} missing:\n{text}"));
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(line)
                    .unwrap(),
            )
            .unwrap()
        };
        let pw = value("password");
        // The same users and rules as `local` and the tests get.
        assert_eq!(
            value("auth.conf"),
            redis_k8s_election::credentials::auth_conf([
                &pw,
                &value("replication-password"),
                &value("sidecar-password"),
                &value("admin-password"),
            ])
        );
        for key in redis_k8s_election::credentials::CREDENTIAL_KEYS {
            assert_eq!(
                redis_k8s_election::sidecar::config::credential_weakness(&value(key)),
                None,
                "{key}"
            );
        }
        runs.push((pw, value("admin-token"), value("peer-key")));
    }
    assert_ne!(runs[0].0, runs[1].0);
    assert_ne!(runs[0].1, runs[1].1);
    assert_ne!(runs[0].2, runs[1].2);
}

/// A kustomization of the shipped base with `components`, in a directory under `target/`
/// (kustomize loads bases and components only by relative paths), rendered by kubectl's
/// kustomize and validated; the directory (holding only the kustomization again) and the
/// rendered text.
fn render_with_components(components: &[&str]) -> (tempfile::TempDir, String) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("kustomize-")
        .tempdir_in(&target)
        .unwrap();
    let mut k = String::from("resources:\n  - ../../deploy/kubernetes\n");
    if !components.is_empty() {
        k.push_str("components:\n");
    }
    for c in components {
        k.push_str(&format!("  - ../../deploy/kubernetes/components/{c}\n"));
    }
    std::fs::write(dir.path().join("kustomization.yaml"), &k).unwrap();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("kubectl on PATH");
    assert!(
        out.status.success(),
        "{components:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).unwrap();
    let v = validate(std::slice::from_ref(&rendered));
    assert!(
        v.status.success(),
        "{components:?}: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    std::fs::remove_file(&rendered).unwrap();
    (dir, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The persistence components render with kubectl's kustomize, validate, and mean the same
/// to kubesim's reader (which `local --persistence` and the tests use).
#[test]
fn each_persistence_component_renders_validates_and_reads_the_same_in_kubesim() {
    for (component, appendonly, claims) in [
        (None, "appendonly yes", true),
        (Some("persistence-rdb"), "appendonly no", true),
        (Some("persistence-none"), "appendonly no", false),
    ] {
        let (dir, text) = render_with_components(component.as_slice());
        assert!(text.contains(appendonly), "{component:?}");
        assert_eq!(
            text.contains("volumeClaimTemplates"),
            claims,
            "{component:?}"
        );
        // kubesim's reader of the same kustomization.
        let objs = kubesim::manifest::load_dir(dir.path()).unwrap();
        let conf = objs
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "redis-persistence")
            .and_then(|c| c["data"]["persistence.conf"].as_str())
            .unwrap();
        assert!(conf.contains(appendonly), "{component:?}: {conf}");
        let set = objs.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
        assert_eq!(
            set["spec"].get("volumeClaimTemplates").is_some(),
            claims,
            "{component:?}"
        );
    }
}

/// The TLS component renders with kubectl's kustomize (alone and with the other components),
/// validates, and kubesim's reader makes the same StatefulSet of it: Redis on the TLS port
/// only (`--port 0`), replication over TLS, the Secret `redis-tls` mounted in both
/// containers, the sidecar told the three files. The persistence `--include` stays last.
#[test]
fn the_tls_component_renders_validates_and_reads_the_same_in_kubesim() {
    for others in [&[][..], &["persistence-rdb", "announce-pod-ip"]] {
        let mut components = vec!["tls"];
        components.extend_from_slice(others);
        let (dir, text) = render_with_components(&components);
        let from_kubectl: Vec<serde_json::Value> =
            kubesim::manifest::parse_documents("rendered", &text).unwrap();
        let from_kubesim = kubesim::manifest::load_dir(dir.path()).unwrap();
        let set = |objs: &[serde_json::Value]| {
            objs.iter()
                .find(|o| o["kind"] == "StatefulSet")
                .cloned()
                .unwrap()
        };
        let set_k = set(&from_kubectl);
        assert_eq!(set_k["spec"], set(&from_kubesim)["spec"], "{others:?}");
        let containers = set_k["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        let args: Vec<&str> = containers[0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let after = |flag: &str| {
            let i = args.iter().position(|a| *a == flag).unwrap_or_else(|| {
                panic!("{flag} not in {args:?}");
            });
            args[i + 1]
        };
        assert_eq!(after("--port"), "0", "{args:?}");
        assert_eq!(after("--tls-port"), "6379");
        assert_eq!(after("--tls-replication"), "yes");
        assert_eq!(after("--tls-cert-file"), "/etc/redis-tls/tls.crt");
        assert_eq!(after("--tls-key-file"), "/etc/redis-tls/tls.key");
        assert_eq!(after("--tls-ca-cert-file"), "/etc/redis-tls/ca.crt");
        assert_eq!(args[args.len() - 2], "--include", "{args:?}");
        for c in containers {
            assert!(
                c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == "tls" && m["mountPath"] == "/etc/redis-tls"),
                "{}",
                c["name"]
            );
        }
        let env: Vec<String> = containers[1]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{}={}", e["name"].as_str().unwrap(), e["value"]))
            .collect();
        for want in [
            "TLS_CA_FILE=\"/etc/redis-tls/ca.crt\"",
            "TLS_CERT_FILE=\"/etc/redis-tls/tls.crt\"",
            "TLS_KEY_FILE=\"/etc/redis-tls/tls.key\"",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
        }
        let volume = set_k["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tls")
            .cloned()
            .unwrap();
        assert_eq!(volume["secret"]["secretName"], "redis-tls");
    }
}
