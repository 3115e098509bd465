//! The StatefulSet controller's pure part: the pods a StatefulSet wants, as the real
//! controller makes them (`pkg/controller/statefulset/stateful_set_utils.go`): pod `N` is
//! named `<set>-<N>`, carries the template's labels plus `statefulset.kubernetes.io/pod-name`
//! and `apps.kubernetes.io/pod-index`, gets `hostname` and `subdomain` (the governing
//! Service) for its DNS name, and is owned by the set (controller, blocking deletion).
//!
//! Each `volumeClaimTemplates` entry becomes a PersistentVolumeClaim per pod,
//! `<template>-<set>-<N>`, mounted by the pod under the template's name; the claims outlive
//! their pods, and go with the set or with a scaled-away pod only as
//! `persistentVolumeClaimRetentionPolicy` says (Kubernetes 1.32+: owner references the
//! garbage collector follows).

use serde_json::{Value, json};

/// The label naming the pod, which the leader Service's selector uses.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal (Kubernetes 1.28+).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `spec.replicas` (default 1, as the API server defaults it).
pub fn replicas(set: &Value) -> usize {
    set.pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize
}

/// Pod `ordinal` of `set` as the controller creates it (no status; the kubelet fills it).
pub fn pod_for(set: &Value, ordinal: usize) -> Value {
    let set_name = set
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = set
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = format!("{set_name}-{ordinal}");
    let template = set
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut metadata = template
        .get("metadata")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let labels = metadata
        .as_object_mut()
        .expect("an object")
        .entry("labels")
        .or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[POD_NAME_LABEL] = json!(name);
    labels[POD_INDEX_LABEL] = json!(ordinal.to_string());
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(ns);
    metadata["ownerReferences"] = owned_by(set);
    let mut spec = template
        .get("spec")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    // The claims' volumes replace any pod volume of the same name, as in the real controller.
    let templates = claim_templates(set);
    if !templates.is_empty() {
        let mut volumes: Vec<Value> = spec
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in &templates {
            let tname = t
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            volumes.retain(|v| v["name"] != tname);
            volumes.push(json!({"name": tname,
                "persistentVolumeClaim": {"claimName": claim_name(tname, set_name, ordinal)}}));
        }
        spec["volumes"] = json!(volumes);
    }
    spec["hostname"] = json!(name);
    if let Some(svc) = set.pointer("/spec/serviceName").and_then(Value::as_str)
        && !svc.is_empty()
    {
        spec["subdomain"] = json!(svc);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// `spec.volumeClaimTemplates`.
pub fn claim_templates(set: &Value) -> Vec<Value> {
    set.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The claim of template `template` for pod `ordinal` of set `set_name`.
pub fn claim_name(template: &str, set_name: &str, ordinal: usize) -> String {
    format!("{template}-{set_name}-{ordinal}")
}

/// `persistentVolumeClaimRetentionPolicy`: delete the claims when the set is deleted, and
/// when their pod is scaled away. Both `Retain` unless the set says `Delete`.
pub fn retention(set: &Value) -> (bool, bool) {
    let delete = |k: &str| {
        set.pointer(&format!("/spec/persistentVolumeClaimRetentionPolicy/{k}"))
            .and_then(Value::as_str)
            == Some("Delete")
    };
    (delete("whenDeleted"), delete("whenScaled"))
}

/// The claims pod `ordinal` of `set` mounts, as the controller creates them: the template's
/// labels plus the set's selector labels, owned by the set when `whenDeleted: Delete`.
pub fn claims_for(set: &Value, ordinal: usize) -> Vec<Value> {
    let set_name = set
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (when_deleted, _) = retention(set);
    claim_templates(set)
        .into_iter()
        .map(|t| {
            let tname = t
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut metadata = t
                .get("metadata")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            let mut labels = metadata
                .get("labels")
                .cloned()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            if let Some(Value::Object(sel)) = set.pointer("/spec/selector/matchLabels") {
                for (k, v) in sel {
                    labels[k] = v.clone();
                }
            }
            metadata["labels"] = labels;
            metadata["name"] = json!(claim_name(&tname, set_name, ordinal));
            if let Some(ns) = set.pointer("/metadata/namespace") {
                metadata["namespace"] = ns.clone();
            }
            if when_deleted {
                metadata["ownerReferences"] = owned_by(set);
            } else if let Some(m) = metadata.as_object_mut() {
                m.remove("ownerReferences");
            }
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata,
                "spec": t.get("spec").cloned().unwrap_or_else(|| json!({}))})
        })
        .collect()
}

/// `ownerReferences` naming `set` as the controlling owner (blocking deletion), as the real
/// controller writes them on its pods and on the claims it deletes with the set.
fn owned_by(set: &Value) -> Value {
    json!([{
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": set.pointer("/metadata/name").cloned().unwrap_or(json!("")),
        "uid": set.pointer("/metadata/uid").cloned().unwrap_or(json!("")),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// The pods `set` wants, ordinal 0 first (the controller creates them one at a time; the
/// tests check the whole set).
#[cfg(test)]
pub fn desired_pods(set: &Value) -> Vec<Value> {
    (0..replicas(set)).map(|i| pod_for(set, i)).collect()
}

/// The ordinal of a pod named `<set>-<N>` owned by `set_name`, if it is one of its pods.
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<usize> {
    let n = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "redis", "namespace": "db", "uid": "u-1"},
            "spec": {"replicas": 3, "serviceName": "redis-headless",
                "selector": {"matchLabels": {"app": "redis"}},
                "template": {"metadata": {"labels": {"app": "redis"}},
                    "spec": {"containers": [{"name": "redis", "image": "redis:7.2"}]}}}})
    }

    #[test]
    fn pods_are_named_labelled_owned_and_addressable() {
        let pods = desired_pods(&set());
        assert_eq!(pods.len(), 3);
        let p = &pods[2];
        assert_eq!(p["metadata"]["name"], "redis-2");
        assert_eq!(p["metadata"]["namespace"], "db");
        assert_eq!(p["metadata"]["labels"]["app"], "redis");
        assert_eq!(p["metadata"]["labels"][POD_NAME_LABEL], "redis-2");
        assert_eq!(p["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["spec"]["hostname"], "redis-2");
        assert_eq!(p["spec"]["subdomain"], "redis-headless");
        assert_eq!(p["spec"]["containers"][0]["image"], "redis:7.2");
        // It decodes as a Pod.
        let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(p.clone()).unwrap();
    }

    #[test]
    fn defaults_and_odd_templates() {
        let mut s = set();
        s["spec"].as_object_mut().unwrap().remove("replicas");
        s["spec"]["template"]["metadata"] = json!(null);
        let pods = desired_pods(&s);
        assert_eq!(pods.len(), 1, "replicas defaults to 1");
        assert_eq!(pods[0]["metadata"]["labels"][POD_NAME_LABEL], "redis-0");
        s["spec"]["replicas"] = json!(0);
        assert!(desired_pods(&s).is_empty());
    }

    #[test]
    fn claims_from_templates_mounted_by_their_pods() {
        let mut s = set();
        s["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data", "labels": {"tier": "db"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
        s["spec"]["template"]["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}, {"name": "auth", "secret": {"secretName": "a"}}]);
        let claims = claims_for(&s, 1);
        assert_eq!(claims.len(), 1);
        let c = &claims[0];
        assert_eq!(c["metadata"]["name"], "data-redis-1");
        assert_eq!(c["metadata"]["namespace"], "db");
        assert_eq!(c["metadata"]["labels"]["tier"], "db");
        assert_eq!(
            c["metadata"]["labels"]["app"], "redis",
            "the selector's labels"
        );
        assert!(
            c["metadata"].get("ownerReferences").is_none(),
            "Retain by default"
        );
        let _: k8s_openapi::api::core::v1::PersistentVolumeClaim =
            serde_json::from_value(c.clone()).unwrap();
        let pod = pod_for(&s, 1);
        let vols = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(
            vols.len(),
            2,
            "the claim replaces the emptyDir of the same name"
        );
        assert!(
            vols.iter()
                .any(|v| v["persistentVolumeClaim"]["claimName"] == "data-redis-1")
        );
        assert_eq!(retention(&s), (false, false));
        s["spec"]["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": "Delete", "whenScaled": "Retain"});
        assert_eq!(retention(&s), (true, false));
        let owned = claims_for(&s, 0);
        assert_eq!(owned[0]["metadata"]["ownerReferences"][0]["uid"], "u-1");
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("redis", "redis-0"), Some(0));
        assert_eq!(ordinal_of("redis", "redis-12"), Some(12));
        assert_eq!(ordinal_of("redis", "redis-01"), None);
        assert_eq!(ordinal_of("redis", "redis-"), None);
        assert_eq!(ordinal_of("redis", "redis-x"), None);
        assert_eq!(ordinal_of("redis", "redisx-1"), None);
        assert_eq!(ordinal_of("redis", "other-1"), None);
    }
}
