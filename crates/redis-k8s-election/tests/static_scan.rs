//! A well-known Kubernetes policy scanner (checkov, from PyPI; installed by `.ci/run`) over
//! the shipped manifests: every finding is either fixed or listed, with its reason, in
//! docs/deploy.md's "Static scan" table, and every listed finding still occurs (a fixed one
//! leaves the table).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The repository's root, without `..` (checkov skips directories whose names start with a
/// dot, `..` included).
fn root() -> std::path::PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap()
}

/// The checks that fail on `dir`, as `(check ID, resource)`.
fn failed_checks(dir: &Path) -> BTreeSet<(String, String)> {
    assert!(
        !dir.components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.')),
        "checkov would skip {}: a hidden directory on the path",
        dir.display()
    );
    let out = Command::new("python3")
        .args(["-m", "checkov.main", "-d", dir.to_str().unwrap()])
        .args([
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "checkov is not installed ({e}): run .ci/run, or `python3 -m pip install checkov`"
            )
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("No module named"),
        "checkov is not installed: run .ci/run, or `python3 -m pip install checkov==3.3.30`"
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "checkov's JSON: {e}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let reports = match v {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    let mut failed = BTreeSet::new();
    for r in reports {
        for f in r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            failed.insert((
                f["check_id"].as_str().unwrap_or_default().to_string(),
                f["resource"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    failed
}

/// The check IDs listed in docs/deploy.md's "Static scan" table (rows `| CKV_… |`).
fn listed_checks() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let section = doc
        .split("### Static scan")
        .nth(1)
        .expect("docs/deploy.md has a \"### Static scan\" section");
    section
        .lines()
        .take_while(|l| !l.starts_with("## ") && !l.starts_with("### "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|id| id.starts_with("CKV"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_static_scan_finding_is_fixed_or_listed_with_its_reason() {
    let failed = failed_checks(&root().join("deploy/kubernetes"));
    let failed_ids: BTreeSet<String> = failed.iter().map(|(id, _)| id.clone()).collect();
    let listed = listed_checks();
    let unlisted: Vec<&(String, String)> = failed
        .iter()
        .filter(|(id, _)| !listed.contains(id))
        .collect();
    assert!(
        unlisted.is_empty(),
        "findings neither fixed nor listed in docs/deploy.md (\"Static scan\"): {unlisted:?}"
    );
    let stale: Vec<&String> = listed.difference(&failed_ids).collect();
    assert!(
        stale.is_empty(),
        "listed in docs/deploy.md but no longer found (remove them): {stale:?}"
    );
}

/// The control: the scanner finds what it must in a plainly bad manifest.
#[test]
fn the_scanner_flags_a_privileged_container() {
    // Not tempfile's default `.tmp…` name: checkov skips hidden directories.
    let dir = tempfile::Builder::new()
        .prefix("static-scan-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: x}\nspec:\n  containers:\n    - name: c\n      image: busybox\n      securityContext: {privileged: true}\n",
    )
    .unwrap();
    let failed = failed_checks(dir.path());
    assert!(
        failed.iter().any(|(id, _)| id == "CKV_K8S_16"),
        "a privileged container passed the scan: {failed:?}"
    );
}
