//! The resource kinds kubesim serves, one module each, as the real API server's registry
//! (`pkg/registry/*/strategy.go`) has one strategy per kind: how a body decodes, how it is
//! validated and defaulted, what an update keeps, how it prints as a table row, and what its
//! deletion does. Generic code (the API, the server, the table printer, discovery, manifest
//! apply) asks the kind's [`Strategy`] and its [`ResourceType`] fields; it never matches on a
//! kind's name.

pub mod config_map;
pub mod endpoint_slice;
pub mod endpoints;
pub mod event;
pub mod lease;
pub mod namespace;
pub mod network_policy;
pub mod node;
pub mod pdb;
pub mod pod;
pub mod pvc;
pub mod rbac;
pub mod secret;
pub mod service;
pub mod service_account;
pub mod stateful_set;

use crate::resources::{FieldErrorStyle, Generation, ResourceType};
use crate::status::Cause;
use crate::store::Store;
use crate::validation::NameRule;
use serde_json::{Value, json};

/// A printer column: name, type, priority (0: always shown, 1: with `-o wide`).
pub type Column = (&'static str, &'static str, u8);

/// What a DELETE does beyond removing the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Removed at once (unless finalizers hold it).
    Immediate,
    /// A pod bound to a node stays, marked with a deletion timestamp, until its kubelet
    /// confirms (or the grace period is zero).
    GracefulPod,
    /// The namespace goes with everything in it.
    Namespace,
}

/// The per-kind behaviour behind a [`ResourceType`].
pub trait Strategy: Sync + std::fmt::Debug {
    /// Decodes a body through the kind's k8s-openapi type and re-encodes it: what makes a
    /// wrong field type a 400 and drops unknown fields.
    fn canonicalize(&self, v: &Value) -> Result<Value, String>;

    /// The kind's schema, from the same k8s-openapi type `canonicalize` decodes with (its
    /// `schemars` implementation): a `$ref` into the generator's definitions. The OpenAPI
    /// documents ([`crate::openapi`]) are built from it, so what kubectl validates and explains
    /// is what the server decodes.
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;

    /// Top-level paths holding MicroTime values (strictly formatted on input).
    fn micro_time_paths(&self) -> &'static [&'static [&'static str]] {
        &[]
    }

    /// Kind-specific validation (`pkg/apis/*/validation`); `old` is set on update.
    fn validate(&self, _obj: &Value, _old: Option<&Value>, _causes: &mut Vec<Cause>) {}

    /// Defaults the server fills on create (`defaults.go`, `PrepareForCreate`);
    /// `cluster_ips` counts the Service cluster IPs handed out.
    fn defaults_on_create(&self, _obj: &mut Value, _cluster_ips: &mut u32) {}

    /// What an update keeps from the stored object (`PrepareForUpdate`).
    fn prepare_update(&self, _obj: &mut Value, _old: &Value) {}

    /// Printer columns (`kubectl get`).
    fn columns(&self) -> Vec<Column> {
        vec![("Name", "string", 0), ("Created At", "date", 0)]
    }

    /// A row's cells, in the order of [`Strategy::columns`].
    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(crate::table::s(obj, "/metadata/name")),
            json!(crate::table::s(obj, "/metadata/creationTimestamp")),
        ]
    }

    /// What a DELETE does.
    fn deletion(&self) -> Deletion {
        Deletion::Immediate
    }

    /// After a write to an object of this kind in `ns` has committed (controllers' reactions:
    /// derived endpoints).
    fn after_write(&self, _store: &mut Store, _ns: &str) {}

    /// After an object `name` of this kind in `ns` was created.
    fn after_create(&self, _store: &mut Store, _ns: &str, _name: &str) {}

    /// After an object `name` of this kind in `ns` was removed.
    fn after_delete(&self, _store: &mut Store, _ns: &str, _name: &str) {}

    /// `kubectl apply` of an existing object keeps the server's `status` (and what the
    /// server set on create) rather than sending the manifest's.
    fn apply_keeps_status(&self) -> bool {
        false
    }
}

/// Every served kind.
pub static ALL: &[&ResourceType] = &[
    &namespace::NAMESPACES,
    &pod::PODS,
    &service::SERVICES,
    &endpoints::ENDPOINTS,
    &event::EVENTS,
    &service_account::SERVICE_ACCOUNTS,
    &config_map::CONFIG_MAPS,
    &secret::SECRETS,
    &lease::LEASES,
    &endpoint_slice::ENDPOINT_SLICES,
    &event::EVENTS_V1,
    &rbac::ROLES,
    &rbac::ROLE_BINDINGS,
    &stateful_set::STATEFUL_SETS,
    &pdb::POD_DISRUPTION_BUDGETS,
    &network_policy::NETWORK_POLICIES,
    &pvc::PERSISTENT_VOLUME_CLAIMS,
    &node::NODES,
];

/// The defaults of a namespaced core kind; each kind names what differs.
pub(crate) const NAMESPACED: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "",
    singular: "",
    kind: "",
    namespaced: true,
    short_names: &[],
    name_rule: NameRule::Subdomain,
    create_on_update: false,
    unconditional_update: true,
    status_subresource: false,
    extra_fields: &[],
    field_error_style: FieldErrorStyle::Default,
    generation: Generation::None,
    storage: "",
    delete_returns_object: false,
    categories: &[],
    token_subresource: false,
    delete_collection: true,
    protobuf: None,
    strategy: &Unset,
};

/// A protobuf message with only `metadata` (field 1).
pub(crate) static METADATA_ONLY: crate::protobuf::ProtoLayout = crate::protobuf::ProtoLayout {
    maps: &[],
    strings: &[],
};

/// The placeholder strategy of [`NAMESPACED`]: every kind replaces it.
#[derive(Debug)]
pub(crate) struct Unset;

impl Strategy for Unset {
    fn canonicalize(&self, _v: &Value) -> Result<Value, String> {
        Err("kubesim has no decoder for this kind".into())
    }

    fn schema(&self, _generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::Schema::default()
    }
}

pub(crate) fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

pub(crate) fn positive(obj: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = obj;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_i64()
}

pub(crate) fn check_len(
    obj: &Value,
    key: &str,
    field: &str,
    max: usize,
    required: bool,
    causes: &mut Vec<Cause>,
) {
    let v = obj.get(key).and_then(Value::as_str).unwrap_or_default();
    if v.is_empty() {
        if required {
            causes.push(Cause::required(field, ""));
        }
    } else if v.len() > max {
        causes.push(Cause::too_long(field, max));
    }
}

/// Adds an "immutable" cause when `key` differs between `obj` and `old`.
pub(crate) fn immutable(obj: &Value, old: Option<&Value>, key: &str, causes: &mut Vec<Cause>) {
    if let Some(o) = old
        && o.get(key) != obj.get(key)
    {
        causes.push(Cause::invalid(key, &obj[key], "field is immutable"));
    }
}
