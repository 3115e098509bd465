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
        "kind: Secret",
        "kind: Service",
        "kind: StatefulSet",
        "kind: PodDisruptionBudget",
    ] {
        assert!(text.contains(kind), "{kind} missing from:\n{text}");
    }
}
