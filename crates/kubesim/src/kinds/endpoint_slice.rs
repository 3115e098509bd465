//! `discovery.k8s.io/v1 endpointslices`: written by the endpoints controller.

use super::{Column, NAMESPACED, Strategy, immutable, roundtrip};
use crate::resources::{Generation, ResourceType};
use crate::status::Cause;
use serde_json::{Value, json};

/// `discovery.k8s.io/v1 endpointslices`.
pub static ENDPOINT_SLICES: ResourceType = ResourceType {
    group: "discovery.k8s.io",
    plural: "endpointslices",
    singular: "endpointslice",
    kind: "EndpointSlice",
    generation: Generation::NonMetadata,
    storage: "endpointslices",
    strategy: &EndpointSlice,
    ..NAMESPACED
};

/// The endpointslice strategy.
#[derive(Debug)]
pub struct EndpointSlice;

impl Strategy for EndpointSlice {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::discovery::v1::EndpointSlice>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::discovery::v1::EndpointSlice>()
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        let at = obj
            .get("addressType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !["IPv4", "IPv6", "FQDN"].contains(&at) {
            causes.push(Cause::not_supported(
                "addressType",
                at,
                &["FQDN", "IPv4", "IPv6"],
            ));
        }
        immutable(obj, old, "addressType", causes);
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, join_more, s};
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
            json!(s(obj, "/metadata/name")),
            json!(s(obj, "/addressType")),
            json!(join_more(&ports, 3)),
            json!(join_more(&addrs, 3)),
            json!(age(obj)),
        ]
    }
}
