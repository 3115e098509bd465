//! `persistentvolumeclaims`: bound at once to a directory on this machine (kubesim stands in
//! for a dynamic provisioner with a local volume per claim; the kubelet makes the directory).

use super::{Column, NAMESPACED, Strategy, roundtrip};
use crate::resources::ResourceType;
use crate::status::Cause;
use serde_json::{Value, json};

/// `persistentvolumeclaims`.
pub static PERSISTENT_VOLUME_CLAIMS: ResourceType = ResourceType {
    plural: "persistentvolumeclaims",
    singular: "persistentvolumeclaim",
    kind: "PersistentVolumeClaim",
    short_names: &["pvc"],
    status_subresource: true,
    storage: "persistentvolumeclaims",
    strategy: &PersistentVolumeClaim,
    ..NAMESPACED
};

/// The persistentvolumeclaim strategy.
#[derive(Debug)]
pub struct PersistentVolumeClaim;

impl Strategy for PersistentVolumeClaim {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::PersistentVolumeClaim>()
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        let modes = obj
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if modes == 0 {
            causes.push(Cause::required("spec.accessModes", ""));
        }
        if obj.pointer("/spec/resources/requests/storage").is_none() {
            causes.push(Cause::required("spec.resources[storage]", ""));
        }
        // The spec is immutable once bound, but for a larger size (as the real server has it
        // with expansion): a claim keeps its volume.
        if let Some(old) = old {
            let mut a = obj.get("spec").cloned().unwrap_or_default();
            let mut b = old.get("spec").cloned().unwrap_or_default();
            for s in [&mut a, &mut b] {
                if let Some(r) = s.pointer_mut("/resources/requests") {
                    *r = json!({});
                }
            }
            if a != b {
                causes.push(Cause::invalid(
                    "spec",
                    &Value::Null,
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
    }

    fn defaults_on_create(&self, obj: &mut Value, _cluster_ips: &mut u32) {
        if let Some(spec) = obj["spec"].as_object_mut() {
            spec.entry("volumeMode").or_insert(json!("Filesystem"));
            spec.entry("volumeName")
                .or_insert(json!(format!("pvc-{}", crate::util::new_uid())));
        }
        // Bound at once, to the size asked for.
        obj["status"] = json!({
            "phase": "Bound",
            "accessModes": obj.pointer("/spec/accessModes").cloned().unwrap_or(json!([])),
            "capacity": {"storage": obj.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("0"))},
        });
    }

    fn prepare_update(&self, obj: &mut Value, old: &Value) {
        // The volume a claim is bound to never changes.
        if let Some(v) = old.pointer("/spec/volumeName").cloned() {
            obj["spec"]["volumeName"] = v;
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        use crate::table::{age, s};
        let modes: Vec<&str> = obj
            .pointer("/status/accessModes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|m| match m {
                "ReadWriteOnce" => "RWO",
                "ReadOnlyMany" => "ROX",
                "ReadWriteMany" => "RWX",
                "ReadWriteOncePod" => "RWOP",
                other => other,
            })
            .collect();
        vec![
            json!(s(obj, "/metadata/name")),
            json!(s(obj, "/status/phase")),
            json!(s(obj, "/spec/volumeName")),
            json!(s(obj, "/status/capacity/storage")),
            json!(modes.join(",")),
            json!(match s(obj, "/spec/storageClassName") {
                "" => "<unset>",
                c => c,
            }),
            json!("<unset>"),
            json!(age(obj)),
            json!(s(obj, "/spec/volumeMode")),
        ]
    }

    fn apply_keeps_status(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_bound_at_once_and_keeps_its_volume() {
        let mut c = json!({"metadata": {"name": "data-redis-0"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        PersistentVolumeClaim.defaults_on_create(&mut c, &mut 0);
        assert_eq!(c["status"]["phase"], "Bound");
        assert_eq!(c["status"]["capacity"]["storage"], "1Gi");
        let vol = c["spec"]["volumeName"].as_str().unwrap().to_string();
        assert!(vol.starts_with("pvc-"));
        let mut causes = Vec::new();
        PersistentVolumeClaim.validate(&c, None, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut grown = c.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        grown["spec"]["volumeName"] = json!("other");
        PersistentVolumeClaim.prepare_update(&mut grown, &c);
        assert_eq!(grown["spec"]["volumeName"], vol.as_str());
        PersistentVolumeClaim.validate(&grown, Some(&c), &mut causes);
        assert!(causes.is_empty(), "growing is allowed: {causes:?}");
        let mut changed = c.clone();
        changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        PersistentVolumeClaim.validate(&changed, Some(&c), &mut causes);
        assert_eq!(causes.len(), 1);
        let mut bad = json!({"metadata": {"name": "x"}, "spec": {}});
        PersistentVolumeClaim.defaults_on_create(&mut bad, &mut 0);
        let mut causes = Vec::new();
        PersistentVolumeClaim.validate(&bad, None, &mut causes);
        assert_eq!(causes.len(), 2, "{causes:?}");
    }
}
