//! `policy/v1 poddisruptionbudgets`.

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::{Generation, ResourceType};
use serde_json::{Value, json};

/// `policy/v1 poddisruptionbudgets`.
pub static POD_DISRUPTION_BUDGETS: ResourceType = ResourceType {
    group: "policy",
    plural: "poddisruptionbudgets",
    singular: "poddisruptionbudget",
    kind: "PodDisruptionBudget",
    short_names: &["pdb"],
    status_subresource: true,
    generation: Generation::Spec,
    storage: "poddisruptionbudgets",
    strategy: &PodDisruptionBudget,
    ..NAMESPACED
};

/// The pod disruption budget strategy.
#[derive(Debug)]
pub struct PodDisruptionBudget;

impl Strategy for PodDisruptionBudget {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::policy::v1::PodDisruptionBudget>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        let cell = |p: &str| {
            obj.pointer(p)
                .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                .unwrap_or("N/A".into())
        };
        vec![
            json!(s(obj, "/metadata/name")),
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
}
