//! `pods`: graceful deletion while bound to a node, the pod update rules, the kubelet's
//! printer columns, and endpoints derived from every change.

use super::{Column, Deletion, NAMESPACED, Strategy, roundtrip};
use crate::resources::{FieldErrorStyle, Generation, ResourceType};
use crate::status::Cause;
use crate::store::Store;
use crate::table::{age, s};
use crate::validation;
use serde_json::{Value, json};

/// `v1 pods`.
pub static PODS: ResourceType = ResourceType {
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    short_names: &["po"],
    status_subresource: true,
    extra_fields: &[
        "spec.nodeName",
        "spec.host",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    ],
    field_error_style: FieldErrorStyle::Custom,
    generation: Generation::Spec,
    storage: "pods",
    delete_returns_object: true,
    categories: &["all"],
    strategy: &Pod,
    ..NAMESPACED
};

/// The pod strategy.
#[derive(Debug)]
pub struct Pod;

/// A probe's defaults (`SetDefaults_Probe`, `SetDefaults_HTTPGetAction`): what `kubectl
/// describe` prints as `delay=0s timeout=1s period=10s #success=1 #failure=3`.
fn default_probe(p: &mut serde_json::Map<String, Value>) {
    p.entry("timeoutSeconds").or_insert(json!(1));
    p.entry("periodSeconds").or_insert(json!(10));
    p.entry("successThreshold").or_insert(json!(1));
    p.entry("failureThreshold").or_insert(json!(3));
    if let Some(Value::Object(get)) = p.get_mut("httpGet") {
        get.entry("scheme").or_insert(json!("HTTP"));
        get.entry("path").or_insert(json!("/"));
    }
}

impl Strategy for Pod {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::Pod>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::Pod>()
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        validate_pod(obj, old, causes);
    }

    fn defaults_on_create(&self, obj: &mut Value, _cluster_ips: &mut u32) {
        let spec = obj["spec"].as_object_mut();
        if let Some(spec) = spec {
            spec.entry("restartPolicy").or_insert(json!("Always"));
            spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
            spec.entry("schedulerName")
                .or_insert(json!("default-scheduler"));
            spec.entry("terminationGracePeriodSeconds")
                .or_insert(json!(30));
            spec.entry("securityContext").or_insert(json!({}));
            spec.entry("enableServiceLinks").or_insert(json!(true));
            if let Some(Value::Array(cs)) = spec.get_mut("containers") {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.entry("terminationMessagePath")
                            .or_insert(json!("/dev/termination-log"));
                        c.entry("terminationMessagePolicy").or_insert(json!("File"));
                        let latest = c
                            .get("image")
                            .and_then(Value::as_str)
                            .is_some_and(|i| !i.contains(':') || i.ends_with(":latest"));
                        c.entry("imagePullPolicy").or_insert(json!(if latest {
                            "Always"
                        } else {
                            "IfNotPresent"
                        }));
                        if let Some(Value::Array(ps)) = c.get_mut("ports") {
                            for p in ps {
                                if let Some(p) = p.as_object_mut() {
                                    p.entry("protocol").or_insert(json!("TCP"));
                                }
                            }
                        }
                        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                            if let Some(Value::Object(p)) = c.get_mut(probe) {
                                default_probe(p);
                            }
                        }
                    }
                }
            }
            if let Some(Value::Array(vs)) = spec.get_mut("volumes") {
                for v in vs.iter_mut().filter_map(Value::as_object_mut) {
                    for source in ["secret", "configMap", "projected", "downwardAPI"] {
                        if let Some(Value::Object(src)) = v.get_mut(source) {
                            src.entry("defaultMode").or_insert(json!(420));
                        }
                    }
                }
            }
            spec.entry("serviceAccountName").or_insert(json!("default"));
        }
        // PrepareForCreate resets status.
        obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        cells(obj)
    }

    fn deletion(&self) -> Deletion {
        Deletion::GracefulPod
    }

    fn after_write(&self, store: &mut Store, ns: &str) {
        crate::endpoints::reconcile_namespace(store, ns);
    }
}

fn validate_pod(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    match obj.pointer("/spec/containers").and_then(Value::as_array) {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    causes.push(Cause::required(format!("spec.containers[{i}].name"), ""));
                } else {
                    for e in validation::dns1123_label(name) {
                        causes.push(Cause::invalid(
                            format!("spec.containers[{i}].name"),
                            &json!(name),
                            &e,
                        ));
                    }
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    causes.push(Cause::required(format!("spec.containers[{i}].image"), ""));
                }
            }
        }
        _ => causes.push(Cause::required("spec.containers", "")),
    }
    if let Some(o) = old {
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = s.get_mut(list) {
                    for c in cs {
                        if let Some(m) = c.as_object_mut() {
                            m.remove("image");
                        }
                    }
                }
            }
            if let Some(m) = s.as_object_mut() {
                for f in [
                    "activeDeadlineSeconds",
                    "terminationGracePeriodSeconds",
                    "tolerations",
                ] {
                    m.remove(f);
                }
            }
            s
        };
        if strip(o) != strip(obj) {
            causes.push(Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }
}

/// A pod's row as `kubectl get pods -o wide` prints it: name, ready, status, restarts, age,
/// IP, node, nominated node, readiness gates.
/// A pod's row as `kubectl get pods -o wide` shows it: NAME, READY, STATUS, RESTARTS, AGE,
/// IP, NODE, NOMINATED NODE, READINESS GATES (the server-side printer's columns).
pub fn cells(obj: &Value) -> Vec<Value> {
    let containers = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    let ready = statuses.map_or(0, |st| st.iter().filter(|c| c["ready"] == true).count());
    let restarts: i64 = statuses.map_or(0, |st| {
        st.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
    });
    let mut status = s(obj, "/status/phase").to_string();
    if let Some(st) = statuses {
        for c in st {
            let waiting = s(c, "/state/waiting/reason");
            let terminated = s(c, "/state/terminated/reason");
            if !waiting.is_empty() {
                status = waiting.to_string();
            } else if !terminated.is_empty() {
                status = terminated.to_string();
            }
        }
    }
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        status = "Terminating".into();
    }
    let ip = s(obj, "/status/podIP");
    let node = s(obj, "/spec/nodeName");
    vec![
        json!(s(obj, "/metadata/name")),
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(obj)),
        json!(if ip.is_empty() { "<none>" } else { ip }),
        json!(if node.is_empty() { "<none>" } else { node }),
        json!("<none>"),
        json!("<none>"),
    ]
}
