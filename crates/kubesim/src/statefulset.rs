//! The StatefulSet controller's pure part: the pods a StatefulSet wants, as the real
//! controller makes them (`pkg/controller/statefulset/stateful_set_utils.go`): pod `N` is
//! named `<set>-<N>`, carries the template's labels plus `statefulset.kubernetes.io/pod-name`
//! and `apps.kubernetes.io/pod-index`, gets `hostname` and `subdomain` (the governing
//! Service) for its DNS name, and is owned by the set (controller, blocking deletion).

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
    metadata["ownerReferences"] = json!([{
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": set_name,
        "uid": set.pointer("/metadata/uid").cloned().unwrap_or(json!("")),
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    let mut spec = template
        .get("spec")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    spec["hostname"] = json!(name);
    if let Some(svc) = set.pointer("/spec/serviceName").and_then(Value::as_str)
        && !svc.is_empty()
    {
        spec["subdomain"] = json!(svc);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
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
