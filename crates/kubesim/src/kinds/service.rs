//! `services`: cluster IPs handed out on create and kept on update, and the leader
//! Service's endpoints derived from every change.

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::{FieldErrorStyle, ResourceType};
use crate::status::Cause;
use crate::store::Store;
use crate::table::{age, s};
use crate::validation::{self, NameRule};
use serde_json::{Value, json};

/// `v1 services`.
pub static SERVICES: ResourceType = ResourceType {
    plural: "services",
    singular: "service",
    kind: "Service",
    short_names: &["svc"],
    name_rule: NameRule::Dns1035,
    create_on_update: true,
    status_subresource: true,
    extra_fields: &["spec.clusterIP", "spec.type"],
    field_error_style: FieldErrorStyle::Custom,
    storage: "services",
    categories: &["all"],
    strategy: &Service,
    ..NAMESPACED
};

/// The service strategy.
#[derive(Debug)]
pub struct Service;

impl Strategy for Service {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::Service>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::Service>()
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        validate_service(obj, old, causes);
    }

    fn defaults_on_create(&self, obj: &mut Value, cluster_ips: &mut u32) {
        let spec = obj["spec"].as_object_mut();
        if let Some(spec) = spec {
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_string();
            spec.insert("type".into(), json!(ty));
            spec.entry("sessionAffinity").or_insert(json!("None"));
            if ty != "ExternalName" {
                let ip = match spec.get("clusterIP").and_then(Value::as_str) {
                    Some(ip) if !ip.is_empty() => ip.to_string(),
                    _ => {
                        *cluster_ips += 1;
                        let n = *cluster_ips;
                        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
                    }
                };
                spec.insert("clusterIP".into(), json!(ip));
                spec.insert("clusterIPs".into(), json!([ip]));
                spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
                spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
                spec.entry("internalTrafficPolicy")
                    .or_insert(json!("Cluster"));
            }
            if let Some(Value::Array(ps)) = spec.get_mut("ports") {
                for p in ps {
                    if let Some(p) = p.as_object_mut() {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(port);
                        }
                    }
                }
            }
        }
        obj["status"] = json!({"loadBalancer": {}});
    }

    fn prepare_update(&self, obj: &mut Value, old: &Value) {
        // What the server set on create is carried over when the update omits it.
        for f in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "type",
            "sessionAffinity",
            "internalTrafficPolicy",
        ] {
            if obj.pointer(&format!("/spec/{f}")).is_none()
                && let Some(v) = old.pointer(&format!("/spec/{f}")).cloned()
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert(f.into(), v);
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        cells(obj)
    }

    fn after_write(&self, store: &mut Store, ns: &str) {
        crate::endpoints::reconcile_namespace(store, ns);
    }

    fn after_delete(&self, store: &mut Store, ns: &str, name: &str) {
        crate::endpoints::service_deleted(store, ns, name);
    }

    fn apply_keeps_status(&self) -> bool {
        true
    }
}

fn validate_service(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    validation::validate_labels(obj.pointer("/spec/selector"), "spec.selector", causes);
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    if ports.is_none_or(Vec::is_empty) && !headless && ty != "ExternalName" {
        causes.push(Cause::required("spec.ports", ""));
    }
    if let Some(ports) = ports {
        let many = ports.len() > 1;
        let mut names = std::collections::HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            if many && name.is_empty() {
                causes.push(Cause::required(format!("spec.ports[{i}].name"), ""));
            }
            if !name.is_empty() {
                for e in validation::dns1123_label(name) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].name"),
                        &json!(name),
                        &e,
                    ));
                }
                if !names.insert(name) {
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("spec.ports[{i}].name"),
                        format!("Duplicate value: \"{name}\""),
                    ));
                }
            }
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    format!("spec.ports[{i}].port"),
                    &json!(port),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
    if let Some(o) = old {
        let before = o.pointer("/spec/clusterIP");
        let after = obj.pointer("/spec/clusterIP");
        if before.is_some() && before != after {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                after.unwrap_or(&Value::Null),
                "may not change once set",
            ));
        }
    }
}

fn cells(obj: &Value) -> Vec<Value> {
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
