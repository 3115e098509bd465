//! The resource types kubesim serves and each one's write strategy, as in the real server's
//! `pkg/registry/*/strategy.go`: naming rule, create-on-update, unconditional update, status
//! subresource, field labels, defaults and validation.
//!
//! Bodies are decoded through k8s-openapi's typed structs, which is what makes a wrong field
//! type a 400 and drops unknown fields (the server's default `fieldValidation=Warn`), then
//! stored as canonical JSON.

use crate::kinds::Strategy;
use crate::status::{ApiError, Cause, GroupResource};
use crate::validation::{self, NameRule};
use serde_json::{Map, Value, json};

/// How a resource's `metadata.generation` evolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// No generation field (Leases, Services, Events, ...).
    None,
    /// 1 on create, +1 when `spec` changes (Pods, StatefulSets).
    Spec,
    /// 1 on create, +1 when anything but metadata changes, or labels change (EndpointSlices).
    NonMetadata,
}

/// How unsupported field selectors are reported (the message differs by type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorStyle {
    /// `field label not supported: F` (Pods, Services, Events).
    Custom,
    /// `"F" is not a known field selector: only "metadata.name", "metadata.namespace"`.
    Default,
}

/// One served resource type.
#[derive(Debug)]
pub struct ResourceType {
    /// API group; empty for core.
    pub group: &'static str,
    /// Version, always `v1` here.
    pub version: &'static str,
    /// Plural resource name used in URLs.
    pub plural: &'static str,
    /// Singular name for discovery.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for discovery (kubectl `get ep`, `svc`, ...).
    pub short_names: &'static [&'static str],
    /// The `metadata.name` rule.
    pub name_rule: NameRule,
    /// PUT of a missing object creates it.
    pub create_on_update: bool,
    /// PUT without `metadata.resourceVersion` overwrites (otherwise 422).
    pub unconditional_update: bool,
    /// Has a `/status` subresource; the main resource then ignores status changes.
    pub status_subresource: bool,
    /// Field labels accepted in field selectors besides `metadata.name/namespace`.
    pub extra_fields: &'static [&'static str],
    /// How an unsupported field label is reported.
    pub field_error_style: FieldErrorStyle,
    /// Generation rule.
    pub generation: Generation,
    /// Storage key: both Event APIs share one store, as in the real server.
    pub storage: &'static str,
    /// DELETE returns the object rather than a Success Status.
    pub delete_returns_object: bool,
    /// Discovery categories (`all`: `kubectl get all` lists it).
    pub categories: &'static [&'static str],
    /// Has the `token` subresource (TokenRequest).
    pub token_subresource: bool,
    /// Supports `deletecollection`.
    pub delete_collection: bool,
    /// How its protobuf message maps to JSON, for the kinds kubesim accepts as protobuf.
    pub protobuf: Option<&'static crate::protobuf::ProtoLayout>,
    /// The kind's behaviour.
    pub strategy: &'static dyn Strategy,
}

/// Every served resource type ([`crate::kinds`]).
pub static RESOURCES: &[&ResourceType] = crate::kinds::ALL;

/// Finds a served type by group, version and plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .copied()
}

/// Finds the type of a storage key as served at a group (used for watch conversion).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .copied()
}

impl ResourceType {
    /// `group/version`, or `v1` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Group and plural, for error messages.
    pub fn gr(&self) -> GroupResource {
        GroupResource {
            group: self.group,
            resource: self.plural,
        }
    }

    /// `Kind.group` (or `Kind` for core), the prefix of an Invalid message.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// A 422 `Invalid` for this type.
    pub fn invalid(&self, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(&self.qualified_kind(), self.group, self.kind, name, causes)
    }

    /// Checks that a field label is supported for field selectors.
    pub fn check_field(&self, field: &str) -> Result<(), ApiError> {
        if field == "metadata.name"
            || field == "metadata.namespace"
            || self.extra_fields.contains(&field)
        {
            return Ok(());
        }
        Err(ApiError::bad_request(match self.field_error_style {
            FieldErrorStyle::Custom => format!("field label not supported: {field}"),
            FieldErrorStyle::Default => format!(
                "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            ),
        }))
    }

    /// Decodes a body the way the real server does: kind/apiVersion check, MicroTime layout,
    /// then typed decoding. Returns the canonical JSON and the unknown fields that were dropped.
    pub fn decode(&self, mut body: Value) -> Result<(Value, Vec<String>), ApiError> {
        let Value::Object(map) = &mut body else {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: json: cannot unmarshal {} into Go value of type struct",
                self.kind,
                self.version,
                self.kind,
                json_type(&body)
            )));
        };
        let want_av = self.api_version();
        match map.get("apiVersion") {
            None | Some(Value::Null) => {
                map.insert("apiVersion".into(), json!(want_av));
            }
            Some(Value::String(s)) if s.is_empty() => {
                map.insert("apiVersion".into(), json!(want_av));
            }
            Some(Value::String(s)) if *s == want_av => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({want_av})",
                    other.as_str().unwrap_or(&other.to_string())
                )));
            }
        }
        match map.get("kind") {
            None | Some(Value::Null) => {
                map.insert("kind".into(), json!(self.kind));
            }
            Some(Value::String(s)) if s.is_empty() => {
                map.insert("kind".into(), json!(self.kind));
            }
            Some(Value::String(s)) if s == self.kind => {}
            Some(other) => {
                let k = other
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(other.to_string());
                return Err(ApiError::bad_request(format!(
                    "{k} in version \"{}\" cannot be handled as a {}: no kind \"{k}\" is registered for version \"{want_av}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\"",
                    self.version, self.kind
                )));
            }
        }
        for path in self.strategy.micro_time_paths() {
            let mut cur = Some(&body);
            for seg in *path {
                cur = cur.and_then(|v| v.get(seg));
            }
            if let Some(Value::String(s)) = cur
                && !validation::is_micro_time(s)
            {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: parsing time \"{s}\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"{s}\" as \"2006-01-02T15:04:05.000000Z07:00\"",
                    self.kind, self.version, self.kind
                )));
            }
        }
        let canonical = self.strategy.canonicalize(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                self.kind, self.version, self.kind
            ))
        })?;
        let mut unknown = Vec::new();
        unknown_fields(&body, &canonical, "", &mut unknown);
        Ok((canonical, unknown))
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Records each non-null field of `orig` that the typed decode dropped, as `a.b[0].c` paths.
fn unknown_fields(orig: &Value, canon: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, canon) {
        (Value::Object(o), Value::Object(c)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match c.get(k) {
                    Some(cv) => unknown_fields(v, cv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(c)) => {
            for (i, (ov, cv)) in o.iter().zip(c.iter()).enumerate() {
                unknown_fields(ov, cv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The metadata map of an object (created if missing).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(key)?.as_str()
}

/// Validation shared by all types: name, namespace, labels, annotations.
fn validate_meta(rt: &ResourceType, obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta_str(obj, "name").unwrap_or_default();
    let generate = meta_str(obj, "generateName").unwrap_or_default();
    if name.is_empty() {
        if generate.is_empty() {
            causes.push(Cause::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for e in validation::name_errors(rt.name_rule, name) {
            causes.push(Cause::invalid("metadata.name", &json!(name), &e));
        }
    }
    let meta = obj.get("metadata");
    validation::validate_labels(
        meta.and_then(|m| m.get("labels")),
        "metadata.labels",
        causes,
    );
    validation::validate_annotations(meta.and_then(|m| m.get("annotations")), causes);
}

/// Type-specific validation (`pkg/apis/*/validation`). `old` is set on update.
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    validate_meta(rt, obj, &mut causes);
    rt.strategy.validate(obj, old, &mut causes);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(rt.invalid(meta_str(obj, "name").unwrap_or_default(), causes))
    }
}

/// The field-selector value of `field` on `obj`, as the type's field-label conversion does.
pub fn field_value(obj: &Value, field: &str) -> String {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match field {
        "metadata.name" => s("/metadata/name"),
        "metadata.namespace" => s("/metadata/namespace"),
        "spec.nodeName" | "spec.host" => s("/spec/nodeName"),
        "spec.hostNetwork" => obj
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
        "status.podIPs" => obj
            .pointer("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        "source" => s("/source/component"),
        other => {
            let ptr = format!("/{}", other.replace('.', "/"));
            match obj.pointer(&ptr) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> &'static ResourceType {
        lookup("coordination.k8s.io", "v1", "leases").unwrap()
    }

    #[test]
    fn decode_drops_unknown_fields_and_reports_them() {
        let (v, unknown) = lease()
            .decode(json!({"metadata":{"name":"a"},"spec":{"holderIdentity":"x","foo":1}}))
            .unwrap();
        assert_eq!(unknown, ["spec.foo"]);
        assert_eq!(v["kind"], "Lease");
        assert!(v["spec"].get("foo").is_none());
    }

    #[test]
    fn decode_rejects_wrong_types_and_versions() {
        assert_eq!(
            lease()
                .decode(json!({"spec":{"leaseDurationSeconds":"x"}}))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            lease().decode(json!({"apiVersion":"v1"})).unwrap_err().code,
            400
        );
        assert_eq!(lease().decode(json!({"kind":"Pod"})).unwrap_err().code, 400);
        assert_eq!(lease().decode(json!([1])).unwrap_err().code, 400);
    }

    #[test]
    fn micro_time_is_canonicalised() {
        let (v, _) = lease()
            .decode(json!({"metadata":{"name":"a"},"spec":{"renewTime":"2026-01-01T02:00:00.123456+02:00"}}))
            .unwrap();
        assert_eq!(v["spec"]["renewTime"], "2026-01-01T00:00:00.123456Z");
    }
}
