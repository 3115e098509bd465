//! The endpoints and EndpointSlice controllers, run synchronously after every Pod or Service
//! write (there is no controller-manager): each Service with a selector gets an Endpoints
//! object and EndpointSlices derived from the ready state of its pods, rewritten only when their
//! content changes, as `endpoints_controller.go` and `endpointslice/utils.go` do.

use crate::selector::LabelSelector;
use crate::store::{Key, Store};
use crate::util;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER: &str = "endpointslice-controller.k8s.io";
const SERVICE_NAME: &str = "kubernetes.io/service-name";
const HEADLESS: &str = "service.kubernetes.io/headless";
const MAX_PER_SLICE: usize = 100;

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True")
        })
}

fn pod_ip(pod: &Value) -> Option<String> {
    let ip = s(pod, "/status/podIP");
    if !ip.is_empty() {
        return Some(ip.to_string());
    }
    let ip = s(pod, "/status/podIPs/0/ip");
    (!ip.is_empty()).then(|| ip.to_string())
}

/// `FindPort`: an integer targetPort as is, a named one looked up in the pod's container ports
/// with the same protocol.
fn find_port(pod: &Value, svc_port: &Value) -> Option<i64> {
    let proto = svc_port
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP");
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => {
            let lists = ["/spec/containers", "/spec/initContainers"];
            lists
                .iter()
                .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
                .flatten()
                .filter_map(|c| c.get("ports").and_then(Value::as_array))
                .flatten()
                .find(|p| {
                    s(p, "/name") == name
                        && p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == proto
                })
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        }
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

fn target_ref(pod: &Value) -> Value {
    json!({"kind": "Pod", "namespace": s(pod, "/metadata/namespace"), "name": s(pod, "/metadata/name"), "uid": s(pod, "/metadata/uid")})
}

struct PodEndpoint {
    pod: Arc<Value>,
    ip: String,
    ports: Vec<Value>,
    ready: bool,
    terminating: bool,
}

impl PodEndpoint {
    /// The fields an Endpoints address and an EndpointSlice endpoint share: the hostname (for a
    /// pod whose subdomain is this Service), the node, and the reference to the pod.
    fn add_pod_fields(&self, svc_name: &str, m: &mut Map<String, Value>) {
        let host = s(&self.pod, "/spec/hostname");
        if !host.is_empty() && s(&self.pod, "/spec/subdomain") == svc_name {
            m.insert("hostname".into(), json!(host));
        }
        let node = s(&self.pod, "/spec/nodeName");
        if !node.is_empty() {
            m.insert("nodeName".into(), json!(node));
        }
        m.insert("targetRef".into(), target_ref(&self.pod));
    }
}

/// Recomputes the Endpoints and EndpointSlices of every Service in `ns`.
pub fn reconcile_namespace(store: &mut Store, ns: &str) {
    for svc in store.list("services", Some(ns)) {
        reconcile_service(store, &svc);
    }
}

/// Removes what the controllers made for a deleted Service.
pub fn service_deleted(store: &mut Store, ns: &str, name: &str) {
    let key: Key = (ns.to_string(), name.to_string());
    if store.get("endpoints", ns, name).is_some() {
        store.remove("endpoints", &key);
    }
    for slice in owned_slices(store, ns, name) {
        let k = (ns.to_string(), s(&slice, "/metadata/name").to_string());
        store.remove("endpointslices", &k);
    }
}

fn owned_slices(store: &Store, ns: &str, svc: &str) -> Vec<Arc<Value>> {
    store
        .list("endpointslices", Some(ns))
        .into_iter()
        .filter(|sl| {
            s(sl, "/metadata/labels/kubernetes.io~1service-name") == svc
                && s(
                    sl,
                    "/metadata/labels/endpointslice.kubernetes.io~1managed-by",
                ) == CONTROLLER
        })
        .collect()
}

fn reconcile_service(store: &mut Store, svc: &Value) {
    let selector = match svc.pointer("/spec/selector").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => LabelSelector::from_map(m),
        _ => return,
    };
    if s(svc, "/spec/type") == "ExternalName" {
        return;
    }
    let ns = s(svc, "/metadata/namespace").to_string();
    let name = s(svc, "/metadata/name").to_string();
    let publish_not_ready = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let headless = s(svc, "/spec/clusterIP") == "None";
    let svc_ports: Vec<Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let mut eps = Vec::new();
    for pod in store.list("pods", Some(&ns)) {
        let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
        if !selector.matches(labels) {
            continue;
        }
        let phase = s(&pod, "/status/phase");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let Some(ip) = pod_ip(&pod) else { continue };
        let mut ports = Vec::new();
        for sp in &svc_ports {
            if let Some(port) = find_port(&pod, sp) {
                let mut p = Map::new();
                p.insert("name".into(), json!(s(sp, "/name")));
                p.insert("port".into(), json!(port));
                p.insert(
                    "protocol".into(),
                    json!(sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP")),
                );
                if let Some(ap) = sp.get("appProtocol") {
                    p.insert("appProtocol".into(), ap.clone());
                }
                ports.push(Value::Object(p));
            }
        }
        if !svc_ports.is_empty() && ports.is_empty() {
            continue;
        }
        eps.push(PodEndpoint {
            ready: pod_ready(&pod),
            terminating: pod
                .pointer("/metadata/deletionTimestamp")
                .is_some_and(|v| !v.is_null()),
            pod,
            ip,
            ports,
        });
    }

    let mut labels = svc
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if headless {
        labels.insert(HEADLESS.into(), json!(""));
    }
    write_endpoints(store, &ns, &name, &labels, &eps, publish_not_ready);
    write_slices(store, svc, &ns, &name, &labels, &eps, publish_not_ready);
}

/// (ports, ready addresses, not-ready addresses) of one Endpoints subset.
type SubsetParts = (Vec<Value>, Vec<Value>, Vec<Value>);

fn write_endpoints(
    store: &mut Store,
    ns: &str,
    name: &str,
    labels: &Map<String, Value>,
    eps: &[PodEndpoint],
    publish_not_ready: bool,
) {
    // Group by port set, as RepackSubsets does.
    let mut groups: BTreeMap<String, SubsetParts> = BTreeMap::new();
    for e in eps {
        if e.terminating && !publish_not_ready {
            continue;
        }
        let mut addr = Map::new();
        addr.insert("ip".into(), json!(e.ip));
        e.add_pod_fields(name, &mut addr);
        let g = groups
            .entry(serde_json::to_string(&e.ports).unwrap_or_default())
            .or_insert_with(|| (e.ports.clone(), Vec::new(), Vec::new()));
        if e.ready || publish_not_ready {
            g.1.push(Value::Object(addr));
        } else {
            g.2.push(Value::Object(addr));
        }
    }
    let by_ip = |v: &Value| s(v, "/ip").to_string();
    let subsets: Vec<Value> = groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by_key(by_ip);
            not_ready.sort_by_key(by_ip);
            let mut sub = Map::new();
            if !ready.is_empty() {
                sub.insert("addresses".into(), Value::Array(ready));
            }
            if !not_ready.is_empty() {
                sub.insert("notReadyAddresses".into(), Value::Array(not_ready));
            }
            if !ports.is_empty() {
                sub.insert("ports".into(), Value::Array(ports));
            }
            Value::Object(sub)
        })
        .collect();
    let existing = store.get("endpoints", ns, name);
    let mut obj = json!({
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
    });
    if !subsets.is_empty() {
        obj["subsets"] = Value::Array(subsets);
    }
    match &existing {
        Some(old) => {
            if old.get("subsets") == obj.get("subsets")
                && old.pointer("/metadata/labels") == obj.pointer("/metadata/labels")
            {
                return;
            }
            let mut meta = old["metadata"].clone();
            meta["labels"] = json!(labels);
            obj["metadata"] = meta;
        }
        None => {
            obj["metadata"]["uid"] = json!(util::new_uid());
            obj["metadata"]["creationTimestamp"] = json!(util::now_time());
        }
    }
    store.put("endpoints", (ns.to_string(), name.to_string()), obj);
}

fn write_slices(
    store: &mut Store,
    svc: &Value,
    ns: &str,
    name: &str,
    labels: &Map<String, Value>,
    eps: &[PodEndpoint],
    publish_not_ready: bool,
) {
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for e in eps {
        let mut ep = Map::new();
        ep.insert("addresses".into(), json!([e.ip]));
        ep.insert(
            "conditions".into(),
            json!({"ready": publish_not_ready || (e.ready && !e.terminating), "serving": e.ready, "terminating": e.terminating}),
        );
        e.add_pod_fields(name, &mut ep);
        groups
            .entry(serde_json::to_string(&e.ports).unwrap_or_default())
            .or_insert_with(|| (e.ports.clone(), Vec::new()))
            .1
            .push(Value::Object(ep));
    }
    // (ports, endpoints) per desired slice; a Service without pods keeps one empty placeholder.
    let mut desired: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
    for (_, (ports, mut list)) in groups {
        list.sort_by_key(|e| s(e, "/addresses/0").to_string());
        for chunk in list.chunks(MAX_PER_SLICE) {
            desired.push((ports.clone(), chunk.to_vec()));
        }
    }
    if desired.is_empty() {
        desired.push((Vec::new(), Vec::new()));
    }
    let mut slice_labels = labels.clone();
    slice_labels.insert(SERVICE_NAME.into(), json!(name));
    slice_labels.insert(MANAGED_BY.into(), json!(CONTROLLER));
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name, "uid": s(svc, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true}]);

    let mut existing = owned_slices(store, ns, name);
    existing.sort_by_key(|sl| s(sl, "/metadata/name").to_string());
    let mut existing = existing.into_iter();
    for (ports, endpoints) in desired {
        let mut obj = json!({
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        match existing.next() {
            Some(old) => {
                if old.get("endpoints") == obj.get("endpoints")
                    && old.get("ports") == obj.get("ports")
                    && old.pointer("/metadata/labels") == Some(&json!(slice_labels))
                {
                    continue;
                }
                let mut meta = old["metadata"].clone();
                meta["labels"] = json!(slice_labels);
                let generation = meta["generation"].as_i64().unwrap_or(1) + 1;
                meta["generation"] = json!(generation);
                obj["metadata"] = meta;
                let slice_name = s(&old, "/metadata/name").to_string();
                store.put("endpointslices", (ns.to_string(), slice_name), obj);
            }
            None => {
                let mut slice_name = util::generate_name(&format!("{name}-"));
                while store.get("endpointslices", ns, &slice_name).is_some() {
                    slice_name = util::generate_name(&format!("{name}-"));
                }
                obj["metadata"] = json!({
                    "name": slice_name,
                    "generateName": format!("{name}-"),
                    "namespace": ns,
                    "uid": util::new_uid(),
                    "creationTimestamp": util::now_time(),
                    "generation": 1,
                    "labels": slice_labels,
                    "ownerReferences": owner,
                });
                store.put("endpointslices", (ns.to_string(), slice_name), obj);
            }
        }
    }
    for extra in existing {
        let k = (ns.to_string(), s(&extra, "/metadata/name").to_string());
        store.remove("endpointslices", &k);
    }
}
