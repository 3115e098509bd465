//! `namespaces`: cluster-scoped; deleting one deletes everything in it, and the
//! serviceaccount controller gives each a `default` account.

use super::{Deletion, NAMESPACED, Strategy, roundtrip};
use crate::resources::{FieldErrorStyle, ResourceType, meta_mut, meta_str};
use crate::store::Store;
use crate::validation::NameRule;
use serde_json::{Value, json};

/// `v1 namespaces`.
pub static NAMESPACES: ResourceType = ResourceType {
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    namespaced: false,
    short_names: &["ns"],
    name_rule: NameRule::Label,
    status_subresource: true,
    extra_fields: &["status.phase"],
    field_error_style: FieldErrorStyle::Custom,
    storage: "namespaces",
    delete_returns_object: true,
    delete_collection: false,
    protobuf: Some(&super::METADATA_ONLY),
    strategy: &Namespace,
    ..NAMESPACED
};

/// The namespace strategy.
#[derive(Debug)]
pub struct Namespace;

impl Strategy for Namespace {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::Namespace>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::Namespace>()
    }

    fn defaults_on_create(&self, obj: &mut Value, _cluster_ips: &mut u32) {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
        let name = meta_str(obj, "name").unwrap_or_default().to_string();
        let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }

    fn columns(&self) -> Vec<super::Column> {
        vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        vec![
            json!(s(obj, "/metadata/name")),
            json!(s(obj, "/status/phase")),
            json!(age(obj)),
        ]
    }

    fn deletion(&self) -> Deletion {
        Deletion::Namespace
    }

    fn after_create(&self, store: &mut Store, _ns: &str, name: &str) {
        // The serviceaccount controller gives every namespace a `default` account.
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": "default", "namespace": name, "uid": crate::util::new_uid(),
            "creationTimestamp": crate::util::now_time()}});
        store.put("serviceaccounts", crate::api::key(name, "default"), sa);
    }
}
