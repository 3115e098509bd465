//! Server-side printing: `meta.k8s.io/v1` Table responses, as kube-apiserver gives kubectl
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the columns of Kubernetes'
//! own printers (`pkg/printers/internalversion/printers.go`) for the kinds served here and the
//! default Name/Created At table for the rest.

use crate::resources::ResourceType;
use serde_json::{Value, json};

/// True when an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// Go's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let sec = secs % 60;
        return if sec == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{sec}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age_of(ts: &str) -> String {
    match ts.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => human_duration(crate::util::now_unix() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn age(obj: &Value) -> String {
    age_of(s(obj, "/metadata/creationTimestamp"))
}

/// (name, type, priority) of each column.
type Column = (&'static str, &'static str, u8);

fn columns(rt: &ResourceType) -> Vec<Column> {
    match (rt.group, rt.kind) {
        ("", "Pod") => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("", "Service") => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        ("", "Endpoints") => vec![
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "Namespace") => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        ("", "ServiceAccount") => vec![
            ("Name", "string", 0),
            ("Secrets", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "ConfigMap") => vec![
            ("Name", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "Secret") => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        ("coordination.k8s.io", _) => vec![
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        ("discovery.k8s.io", _) => vec![
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        ("apps", _) => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        ("rbac.authorization.k8s.io", "Role") => {
            vec![("Name", "string", 0), ("Created At", "string", 0)]
        }
        ("rbac.authorization.k8s.io", _) => vec![
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
        ],
        ("policy", _) => vec![
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "string", 0),
            ("Age", "string", 0),
        ],
        _ => vec![("Name", "string", 0), ("Created At", "date", 0)],
    }
}

fn column_definitions(rt: &ResourceType) -> Value {
    Value::Array(
        columns(rt)
            .into_iter()
            .map(|(name, ty, priority)| {
                let format = if name == "Name" { "name" } else { "" };
                json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
            })
            .collect(),
    )
}

/// `a,b,c` joined, with `+ N more...` past `max`, as kubectl's endpoint printers do.
fn join_more(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let mut out = shown.join(",");
    if items.len() > max {
        out.push_str(&format!(" + {} more...", items.len() - max));
    }
    out
}

fn map_len(v: Option<&Value>) -> usize {
    v.and_then(Value::as_object).map_or(0, |m| m.len())
}

/// A pod's row as `kubectl get pods -o wide` shows it: NAME, READY, STATUS, RESTARTS, AGE,
/// IP, NODE, NOMINATED NODE, READINESS GATES (the server-side printer's columns).
pub fn pod_cells(obj: &Value) -> Vec<Value> {
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

fn service_cells(obj: &Value) -> Vec<Value> {
    let ports: Vec<String> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", p["port"]),
                        None => format!("{}/{proto}", p["port"]),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let selector: Vec<String> = obj
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let cluster_ip = s(obj, "/spec/clusterIP");
    vec![
        json!(s(obj, "/metadata/name")),
        json!(s(obj, "/spec/type")),
        json!(if cluster_ip.is_empty() {
            "<none>"
        } else {
            cluster_ip
        }),
        json!("<none>"),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        json!(age(obj)),
        json!(if selector.is_empty() {
            "<none>".to_string()
        } else {
            selector.join(",")
        }),
    ]
}

fn endpoints_cells(obj: &Value) -> Vec<Value> {
    let mut items = Vec::new();
    for sub in obj
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = sub
            .get("ports")
            .and_then(Value::as_array)
            .map(|ps| ps.iter().filter_map(|p| p["port"].as_i64()).collect())
            .unwrap_or_default();
        for a in sub
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = a["ip"].as_str().unwrap_or_default();
            if ports.is_empty() {
                items.push(ip.to_string());
            }
            for p in &ports {
                items.push(format!("{ip}:{p}"));
            }
        }
    }
    vec![
        json!(s(obj, "/metadata/name")),
        json!(join_more(&items, 3)),
        json!(age(obj)),
    ]
}

/// Cells of a core/v1-shaped event (events.k8s.io views are converted back first).
fn event_cells(obj: &Value) -> Vec<Value> {
    let last = [
        s(obj, "/lastTimestamp"),
        s(obj, "/series/lastObservedTime"),
        s(obj, "/eventTime"),
        s(obj, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or_default();
    let first = [s(obj, "/firstTimestamp"), s(obj, "/eventTime")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let object = format!(
        "{}/{}",
        s(obj, "/involvedObject/kind").to_lowercase(),
        s(obj, "/involvedObject/name")
    );
    let source = [s(obj, "/source/component"), s(obj, "/reportingComponent")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let count = obj
        .pointer("/series/count")
        .and_then(Value::as_i64)
        .or_else(|| obj.get("count").and_then(Value::as_i64))
        .unwrap_or(1);
    vec![
        json!(age_of(last)),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(object),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(age_of(first)),
        json!(count.to_string()),
        json!(s(obj, "/metadata/name")),
    ]
}

fn cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    match (rt.group, rt.kind) {
        ("", "Pod") => pod_cells(obj),
        ("", "Service") => service_cells(obj),
        ("", "Endpoints") => endpoints_cells(obj),
        ("", "Namespace") => vec![name, json!(s(obj, "/status/phase")), json!(age(obj))],
        ("", "Event") => event_cells(obj),
        ("events.k8s.io", "Event") => event_cells(&crate::event_convert::to_core(obj)),
        ("", "ServiceAccount") => vec![
            name,
            json!(
                obj.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(age(obj)),
        ],
        ("", "ConfigMap") => vec![
            name,
            json!(map_len(obj.get("data")) + map_len(obj.get("binaryData"))),
            json!(age(obj)),
        ],
        ("", "Secret") => vec![
            name,
            json!(s(obj, "/type")),
            json!(map_len(obj.get("data"))),
            json!(age(obj)),
        ],
        ("coordination.k8s.io", _) => {
            vec![name, json!(s(obj, "/spec/holderIdentity")), json!(age(obj))]
        }
        ("discovery.k8s.io", _) => {
            let ports: Vec<String> = obj
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64())
                .map(|p| p.to_string())
                .collect();
            let addrs: Vec<String> = obj
                .get("endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            vec![
                name,
                json!(s(obj, "/addressType")),
                json!(join_more(&ports, 3)),
                json!(join_more(&addrs, 3)),
                json!(age(obj)),
            ]
        }
        ("apps", _) => {
            let containers = obj
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let names: Vec<&str> = containers
                .iter()
                .filter_map(|c| c["name"].as_str())
                .collect();
            let images: Vec<&str> = containers
                .iter()
                .filter_map(|c| c["image"].as_str())
                .collect();
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    obj.pointer("/status/readyReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    obj.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                )),
                json!(age(obj)),
                json!(names.join(",")),
                json!(images.join(",")),
            ]
        }
        ("rbac.authorization.k8s.io", "Role") => {
            vec![name, json!(s(obj, "/metadata/creationTimestamp"))]
        }
        ("rbac.authorization.k8s.io", _) => vec![
            name,
            json!(format!(
                "{}/{}",
                s(obj, "/roleRef/kind"),
                s(obj, "/roleRef/name")
            )),
            json!(age(obj)),
        ],
        ("policy", _) => {
            let cell = |p: &str| {
                obj.pointer(p)
                    .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                    .unwrap_or("N/A".into())
            };
            vec![
                name,
                json!(cell("/spec/minAvailable")),
                json!(cell("/spec/maxUnavailable")),
                json!(
                    obj.pointer("/status/disruptionsAllowed")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                ),
                json!(age(obj)),
            ]
        }
        _ => vec![name, json!(s(obj, "/metadata/creationTimestamp"))],
    }
}

fn row(rt: &ResourceType, obj: &Value) -> Value {
    // Rows carry PartialObjectMetadata, kubectl's default `includeObject=Metadata`.
    json!({
        "cells": cells(rt, obj),
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))},
    })
}

/// A Table of `items` (views of `rt`), with the list's metadata.
pub fn table(rt: &ResourceType, items: &[Value], list_meta: Value, with_columns: bool) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(rt) } else { json!([]) },
        "rows": items.iter().map(|o| row(rt, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_go() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn accept_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json,application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }
}
