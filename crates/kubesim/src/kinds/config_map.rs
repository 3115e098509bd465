//! `configmaps`.

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::ResourceType;
use serde_json::{Value, json};

/// `configmaps`.
pub static CONFIG_MAPS: ResourceType = ResourceType {
    plural: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    short_names: &["cm"],
    storage: "configmaps",
    protobuf: Some(&crate::protobuf::ProtoLayout {
        maps: &[
            crate::protobuf::ProtoMap {
                field: 2,
                key: "data",
                bytes: false,
            },
            crate::protobuf::ProtoMap {
                field: 3,
                key: "binaryData",
                bytes: true,
            },
        ],
        strings: &[],
    }),
    strategy: &ConfigMap,
    ..NAMESPACED
};

/// The configmap strategy.
#[derive(Debug)]
pub struct ConfigMap;

impl Strategy for ConfigMap {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::ConfigMap>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::ConfigMap>()
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, map_len, s};
        vec![
            json!(s(obj, "/metadata/name")),
            json!(map_len(obj.get("data")) + map_len(obj.get("binaryData"))),
            json!(age(obj)),
        ]
    }
}
