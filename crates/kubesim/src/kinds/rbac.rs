//! `rbac.authorization.k8s.io/v1 roles` and `rolebindings`, which the authorizer reads.

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::ResourceType;
use crate::status::Cause;
use crate::validation::NameRule;
use serde_json::{Value, json};

/// `rbac.authorization.k8s.io/v1 roles`.
pub static ROLES: ResourceType = ResourceType {
    group: "rbac.authorization.k8s.io",
    plural: "roles",
    singular: "role",
    kind: "Role",
    name_rule: NameRule::PathSegment,
    create_on_update: true,
    storage: "roles",
    strategy: &Role,
    ..NAMESPACED
};

/// `rbac.authorization.k8s.io/v1 rolebindings`.
pub static ROLE_BINDINGS: ResourceType = ResourceType {
    group: "rbac.authorization.k8s.io",
    plural: "rolebindings",
    singular: "rolebinding",
    kind: "RoleBinding",
    name_rule: NameRule::PathSegment,
    create_on_update: true,
    storage: "rolebindings",
    strategy: &RoleBinding,
    ..NAMESPACED
};

/// The role strategy.
#[derive(Debug)]
pub struct Role;

impl Strategy for Role {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::rbac::v1::Role>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::rbac::v1::Role>()
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, causes: &mut Vec<Cause>) {
        if let Some(Value::Array(rules)) = obj.get("rules") {
            for (i, r) in rules.iter().enumerate() {
                if r.get("verbs")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
                {
                    causes.push(Cause::required(
                        format!("rules[{i}].verbs"),
                        "verbs must contain at least one value",
                    ));
                }
            }
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![("Name", "string", 0), ("Created At", "string", 0)]
    }
}

/// The role binding strategy.
#[derive(Debug)]
pub struct RoleBinding;

impl Strategy for RoleBinding {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::rbac::v1::RoleBinding>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::rbac::v1::RoleBinding>()
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        let kind = obj
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !["Role", "ClusterRole"].contains(&kind) {
            causes.push(Cause::not_supported(
                "roleRef.kind",
                kind,
                &["Role", "ClusterRole"],
            ));
        }
        if obj
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            causes.push(Cause::required("roleRef.name", ""));
        }
        if let Some(o) = old
            && o.get("roleRef") != obj.get("roleRef")
        {
            causes.push(Cause::invalid(
                "roleRef",
                &obj["roleRef"],
                "cannot change roleRef",
            ));
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        vec![
            json!(s(obj, "/metadata/name")),
            json!(format!(
                "{}/{}",
                s(obj, "/roleRef/kind"),
                s(obj, "/roleRef/name")
            )),
            json!(age(obj)),
        ]
    }
}
