//! `serviceaccounts`: with the `token` subresource (TokenRequest).

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::ResourceType;
use serde_json::{Value, json};

/// `serviceaccounts`.
pub static SERVICE_ACCOUNTS: ResourceType = ResourceType {
    plural: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    short_names: &["sa"],
    create_on_update: true,
    token_subresource: true,
    storage: "serviceaccounts",
    protobuf: Some(&super::METADATA_ONLY),
    strategy: &ServiceAccount,
    ..NAMESPACED
};

/// The serviceaccount strategy.
#[derive(Debug)]
pub struct ServiceAccount;

impl Strategy for ServiceAccount {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::ServiceAccount>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::ServiceAccount>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Secrets", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        vec![
            json!(s(obj, "/metadata/name")),
            json!(
                obj.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(age(obj)),
        ]
    }
}
