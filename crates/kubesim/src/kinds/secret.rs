//! `secrets`: `stringData` is write-only, merged into `data`.

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::ResourceType;
use serde_json::{Value, json};

/// `secrets`.
pub static SECRETS: ResourceType = ResourceType {
    plural: "secrets",
    singular: "secret",
    kind: "Secret",
    extra_fields: &["type"],
    field_error_style: crate::resources::FieldErrorStyle::Custom,
    storage: "secrets",
    protobuf: Some(&crate::protobuf::ProtoLayout {
        maps: &[
            crate::protobuf::ProtoMap {
                field: 2,
                key: "data",
                bytes: true,
            },
            crate::protobuf::ProtoMap {
                field: 4,
                key: "stringData",
                bytes: false,
            },
        ],
        strings: &[(3, "type")],
    }),
    strategy: &Secret,
    ..NAMESPACED
};

/// The secret strategy.
#[derive(Debug)]
pub struct Secret;

impl Strategy for Secret {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::Secret>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::Secret>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, map_len, s};
        vec![
            json!(s(obj, "/metadata/name")),
            json!(s(obj, "/type")),
            json!(map_len(obj.get("data"))),
            json!(age(obj)),
        ]
    }

    fn defaults_on_create(&self, obj: &mut Value, _cluster_ips: &mut u32) {
        if obj.get("type").is_none() {
            obj["type"] = json!("Opaque");
        }
        merge_string_data(obj);
    }

    fn prepare_update(&self, obj: &mut Value, _old: &Value) {
        merge_string_data(obj);
    }
}

/// `stringData` is write-only: the server merges it into `data` (base64, its keys winning)
/// and never stores or returns it (`pkg/apis/core/v1/conversion.go`).
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(pairs) = string_data.as_object() else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in pairs {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}
