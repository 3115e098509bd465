//! The four PATCH types the real server accepts.
//!
//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902) come from the `json-patch` crate.
//! Strategic merge patch has no Rust implementation outside Kubernetes' Go code, so the subset
//! that the built-in types in scope need is written here: maps merge key by key, `null`
//! deletes, lists tagged `patchStrategy:"merge"` merge by their merge key, and the `$patch`
//! directives `replace` and `delete` work on maps and list items.

use serde_json::{Map, Value};

/// A PATCH body's type, from its Content-Type (parameters such as `charset` stripped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// Maps a Content-Type to a patch type; `None` means 415.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base.to_ascii_lowercase().as_str() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The patch document itself is malformed (400).
    #[error("{0}")]
    Malformed(String),
    /// A JSON patch operation failed (422 with the generic message).
    #[error("{0}")]
    OpFailed(String),
}

/// RFC 7386 merge of `patch` into `target`.
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 patch. A body that is not an operation list is malformed (400); a failing
/// operation is a 422 `Invalid`, as in the real server.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("error decoding patch: {e}")))?;
    if ops.0.len() > 10_000 {
        return Err(PatchError::Malformed(format!(
            "The allowed maximum operations in a JSON patch is 10000, got {}",
            ops.0.len()
        )));
    }
    json_patch::patch(target, &ops).map_err(|e| PatchError::OpFailed(e.to_string()))
}

/// The merge key of a list field under strategic merge, or `None` for atomic lists.
pub(crate) fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        // Container ports merge by containerPort, Service ports by port.
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Primitive lists that strategic merge unions rather than replaces.
pub(crate) fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge of `patch` into `target`.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Malformed(
            "strategic merge patch must be a JSON object".into(),
        ));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    strategic_map(target.as_object_mut().expect("made an object"), p)
}

fn strategic_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            target.clear();
            for (k, v) in patch {
                if !k.starts_with('$') {
                    target.insert(k.clone(), v.clone());
                }
            }
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::Malformed(format!(
                "Unknown patch type: {other}"
            )));
        }
    }
    for (k, pv) in patch {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (target.get_mut(field), pv) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            // $retainKeys, $setElementOrder/...: ordering and pruning hints we do not need.
            continue;
        }
        match pv {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(k);
                    continue;
                }
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                strategic_map(entry.as_object_mut().expect("object"), pm)?;
            }
            Value::Array(items) => {
                let key = merge_key(k, items);
                match (key, target.get_mut(k)) {
                    (Some(key), Some(Value::Array(cur))) => merge_list(cur, items, key)?,
                    (None, Some(Value::Array(cur))) if is_set_list(k) => {
                        for i in items {
                            if !cur.contains(i) {
                                cur.push(i.clone());
                            }
                        }
                    }
                    _ => {
                        let cleaned: Vec<Value> = items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .cloned()
                            .collect();
                        target.insert(k.clone(), Value::Array(cleaned));
                    }
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], key: &str) -> Result<(), PatchError> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *cur = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    for item in items {
        let Some(im) = item.as_object() else {
            return Err(PatchError::Malformed(format!(
                "unable to find api field in struct for merge key {key}"
            )));
        };
        let Some(kv) = im.get(key) else {
            return Err(PatchError::Malformed(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(kv));
        if im.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                cur.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => {
                if let Value::Object(cm) = &mut cur[i] {
                    strategic_map(cm, im)?;
                }
            }
            None => cur.push(item.clone()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_labels_merge_and_delete() {
        let mut t = json!({"metadata":{"labels":{"a":"1","old":"x"}}});
        strategic(
            &mut t,
            &json!({"metadata":{"labels":{"role":"leader","old":null}}}),
        )
        .unwrap();
        assert_eq!(t, json!({"metadata":{"labels":{"a":"1","role":"leader"}}}));
    }

    #[test]
    fn strategic_selector_replace_directive() {
        let mut t = json!({"spec":{"selector":{"app":"a","tier":"x"}}});
        strategic(
            &mut t,
            &json!({"spec":{"selector":{"$patch":"replace","app":"b"}}}),
        )
        .unwrap();
        assert_eq!(t, json!({"spec":{"selector":{"app":"b"}}}));
    }

    #[test]
    fn strategic_conditions_merge_by_type() {
        let mut t = json!({"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"X","status":"True"}]}});
        strategic(
            &mut t,
            &json!({"status":{"conditions":[{"type":"Ready","status":"False"}]}}),
        )
        .unwrap();
        assert_eq!(
            t["status"]["conditions"],
            json!([{"type":"Ready","status":"False"},{"type":"X","status":"True"}])
        );
        strategic(
            &mut t,
            &json!({"status":{"conditions":[{"type":"X","$patch":"delete"}]}}),
        )
        .unwrap();
        assert_eq!(
            t["status"]["conditions"],
            json!([{"type":"Ready","status":"False"}])
        );
    }

    #[test]
    fn json_patch_test_failure_is_op_failed() {
        let mut t = json!({"metadata":{"resourceVersion":"5"}});
        let r = json_patch(
            &mut t,
            &json!([{"op":"test","path":"/metadata/resourceVersion","value":"1"}]),
        );
        assert!(matches!(r, Err(PatchError::OpFailed(_))));
        let r = json_patch(&mut t, &json!({"op":"add"}));
        assert!(matches!(r, Err(PatchError::Malformed(_))));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }
}
