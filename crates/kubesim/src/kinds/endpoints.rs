//! `endpoints`: written by the endpoints controller, listed by kubectl as `ep`.

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::ResourceType;
use crate::table::{age, join_more, s};
use serde_json::{Value, json};

/// `v1 endpoints`.
pub static ENDPOINTS: ResourceType = ResourceType {
    plural: "endpoints",
    singular: "endpoints",
    kind: "Endpoints",
    short_names: &["ep"],
    create_on_update: true,
    storage: "endpoints",
    categories: &["all"],
    strategy: &Endpoints,
    ..NAMESPACED
};

/// The endpoints strategy.
#[derive(Debug)]
pub struct Endpoints;

impl Strategy for Endpoints {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::Endpoints>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::Endpoints>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        cells(obj)
    }
}

fn cells(obj: &Value) -> Vec<Value> {
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
