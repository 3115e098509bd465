//! `apps/v1 statefulsets`: the controller (`crate::controllers`) makes their pods.

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::{Generation, ResourceType};
use crate::status::Cause;
use serde_json::{Value, json};

/// `apps/v1 statefulsets`.
pub static STATEFUL_SETS: ResourceType = ResourceType {
    group: "apps",
    plural: "statefulsets",
    singular: "statefulset",
    kind: "StatefulSet",
    short_names: &["sts"],
    status_subresource: true,
    generation: Generation::Spec,
    storage: "statefulsets",
    categories: &["all"],
    strategy: &StatefulSet,
    ..NAMESPACED
};

/// The statefulset strategy.
#[derive(Debug)]
pub struct StatefulSet;

impl Strategy for StatefulSet {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::apps::v1::StatefulSet>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::apps::v1::StatefulSet>()
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, causes: &mut Vec<Cause>) {
        let sel = obj.pointer("/spec/selector");
        if sel.is_none() {
            causes.push(Cause::required("spec.selector", ""));
        } else if let Some(Value::Object(ml)) = sel.and_then(|s| s.get("matchLabels")) {
            let tl = obj
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object);
            let matches = ml.iter().all(|(k, v)| tl.and_then(|t| t.get(k)) == Some(v));
            if !matches {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    obj.pointer("/spec/template/metadata/labels")
                        .unwrap_or(&Value::Null),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }

    fn defaults_on_create(&self, obj: &mut Value, _cluster_ips: &mut u32) {
        if let Some(spec) = obj["spec"].as_object_mut() {
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("podManagementPolicy")
                .or_insert(json!("OrderedReady"));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("updateStrategy")
                .or_insert(json!({"type":"RollingUpdate","rollingUpdate":{"partition":0}}));
            spec.entry("persistentVolumeClaimRetentionPolicy")
                .or_insert(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
            // Claim templates get a claim's defaults, as the real server's
            // SetDefaults_PersistentVolumeClaim gives them (and a Pending status that
            // never changes): what `kubectl get -o yaml` shows there.
            for t in spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(ts) = t.get_mut("spec").and_then(Value::as_object_mut) {
                    ts.entry("volumeMode").or_insert(json!("Filesystem"));
                }
                t["status"] = json!({"phase": "Pending"});
            }
        }
        obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        let containers = obj
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let images: Vec<&str> = containers
            .iter()
            .filter_map(|c| c["image"].as_str())
            .collect();
        vec![
            json!(s(obj, "/metadata/name")),
            json!(format!(
                "{}/{}",
                obj.pointer("/status/readyReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                obj.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            )),
            json!(age(obj)),
            json!(names.join(",")),
            json!(images.join(",")),
        ]
    }

    fn apply_keeps_status(&self) -> bool {
        true
    }
}
