//! `networking.k8s.io/v1 networkpolicies`: stored and served, not enforced (pods share the
//! host's network here; enforcement is the cluster's network plugin's job).

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::{Generation, ResourceType};
use serde_json::{Value, json};

/// `networking.k8s.io/v1 networkpolicies`.
pub static NETWORK_POLICIES: ResourceType = ResourceType {
    group: "networking.k8s.io",
    plural: "networkpolicies",
    singular: "networkpolicy",
    kind: "NetworkPolicy",
    short_names: &["netpol"],
    generation: Generation::Spec,
    storage: "networkpolicies",
    strategy: &NetworkPolicy,
    ..NAMESPACED
};

/// The network policy strategy.
#[derive(Debug)]
pub struct NetworkPolicy;

impl Strategy for NetworkPolicy {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::networking::v1::NetworkPolicy>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::networking::v1::NetworkPolicy>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Pod-Selector", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        let selector = obj
            .pointer("/spec/podSelector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into());
        vec![
            json!(s(obj, "/metadata/name")),
            json!(selector),
            json!(age(obj)),
        ]
    }
}
