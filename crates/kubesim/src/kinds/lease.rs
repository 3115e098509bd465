//! `coordination.k8s.io/v1 leases`: MicroTime stamps, and the fields of the
//! CoordinatedLeaderElection gate (off) dropped.

use super::{Column, NAMESPACED, Strategy, positive, roundtrip};
use crate::resources::ResourceType;
use crate::status::Cause;
use serde_json::{Value, json};

/// `coordination.k8s.io/v1 leases`.
pub static LEASES: ResourceType = ResourceType {
    group: "coordination.k8s.io",
    plural: "leases",
    singular: "lease",
    kind: "Lease",
    create_on_update: true,
    unconditional_update: false,
    storage: "leases",
    strategy: &Lease,
    ..NAMESPACED
};

/// The lease strategy.
#[derive(Debug)]
pub struct Lease;

impl Strategy for Lease {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::coordination::v1::Lease>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::coordination::v1::Lease>()
    }

    fn micro_time_paths(&self) -> &'static [&'static [&'static str]] {
        &[&["spec", "acquireTime"], &["spec", "renewTime"]]
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, causes: &mut Vec<Cause>) {
        validate_lease(obj, causes);
    }

    fn defaults_on_create(&self, obj: &mut Value, _cluster_ips: &mut u32) {
        // CoordinatedLeaderElection is off: strategy and preferredHolder are dropped.
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("strategy");
            spec.remove("preferredHolder");
        }
    }

    fn prepare_update(&self, obj: &mut Value, old: &Value) {
        // The gated fields are kept only if already stored.
        for f in ["strategy", "preferredHolder"] {
            if old.pointer(&format!("/spec/{f}")).is_none()
                && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.remove(f);
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        vec![
            json!(s(obj, "/metadata/name")),
            json!(s(obj, "/spec/holderIdentity")),
            json!(age(obj)),
        ]
    }
}

fn validate_lease(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(d) = positive(obj, &["spec", "leaseDurationSeconds"])
        && d <= 0
    {
        causes.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            &json!(d),
            "must be greater than 0",
        ));
    }
    if let Some(t) = positive(obj, &["spec", "leaseTransitions"])
        && t < 0
    {
        causes.push(Cause::invalid(
            "spec.leaseTransitions",
            &json!(t),
            "must be greater than or equal to 0",
        ));
    }
    let strategy = obj.pointer("/spec/strategy").and_then(Value::as_str);
    if obj
        .pointer("/spec/preferredHolder")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty())
        && strategy.is_none_or(str::is_empty)
    {
        causes.push(Cause::forbidden(
            "spec.preferredHolder",
            "may only be specified if strategy is defined",
        ));
    }
    if let Some(s) = strategy
        && !s.is_empty()
        && !s.contains('/')
        && s != "OldestEmulationVersion"
    {
        causes.push(Cause::not_supported(
            "spec.strategy",
            s,
            &["OldestEmulationVersion"],
        ));
    }
}
