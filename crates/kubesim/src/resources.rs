//! The resource types kubesim serves and each one's write strategy, as in the real server's
//! `pkg/registry/*/strategy.go`: naming rule, create-on-update, unconditional update, status
//! subresource, field labels, defaults and validation.
//!
//! Bodies are decoded through k8s-openapi's typed structs, which is what makes a wrong field
//! type a 400 and drops unknown fields (the server's default `fieldValidation=Warn`), then
//! stored as canonical JSON.

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
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

macro_rules! rt {
    ($group:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $rule:expr,
     $cou:expr, $uncond:expr, $status:expr, $fields:expr, $style:expr, $gen:expr, $storage:expr, $delobj:expr) => {
        ResourceType {
            group: $group,
            version: "v1",
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            name_rule: $rule,
            create_on_update: $cou,
            unconditional_update: $uncond,
            status_subresource: $status,
            extra_fields: $fields,
            field_error_style: $style,
            generation: $gen,
            storage: $storage,
            delete_returns_object: $delobj,
        }
    };
}

use FieldErrorStyle::{Custom, Default as Dflt};
use NameRule::{Dns1035, Label, PathSegment, Subdomain};

/// Every served resource type.
pub static RESOURCES: &[ResourceType] = &[
    rt!(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        Label,
        false,
        true,
        true,
        &["status.phase"],
        Custom,
        Generation::None,
        "namespaces",
        true
    ),
    rt!(
        "",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        Subdomain,
        false,
        true,
        true,
        &[
            "spec.nodeName",
            "spec.host",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName"
        ],
        Custom,
        Generation::Spec,
        "pods",
        true
    ),
    rt!(
        "",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        Dns1035,
        true,
        true,
        true,
        &["spec.clusterIP", "spec.type"],
        Custom,
        Generation::None,
        "services",
        false
    ),
    rt!(
        "",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        Subdomain,
        true,
        true,
        false,
        &[],
        Dflt,
        Generation::None,
        "endpoints",
        false
    ),
    rt!(
        "",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        PathSegment,
        true,
        true,
        false,
        EVENT_FIELDS,
        Custom,
        Generation::None,
        "events",
        false
    ),
    rt!(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        Subdomain,
        true,
        true,
        false,
        &[],
        Dflt,
        Generation::None,
        "serviceaccounts",
        false
    ),
    rt!(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        Subdomain,
        false,
        true,
        false,
        &[],
        Dflt,
        Generation::None,
        "configmaps",
        false
    ),
    rt!(
        "",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        Subdomain,
        false,
        true,
        false,
        &["type"],
        Custom,
        Generation::None,
        "secrets",
        false
    ),
    rt!(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        Subdomain,
        true,
        false,
        false,
        &[],
        Dflt,
        Generation::None,
        "leases",
        false
    ),
    rt!(
        "discovery.k8s.io",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        Subdomain,
        false,
        true,
        false,
        &[],
        Dflt,
        Generation::NonMetadata,
        "endpointslices",
        false
    ),
    rt!(
        "events.k8s.io",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        Subdomain,
        true,
        true,
        false,
        EVENT_FIELDS,
        Custom,
        Generation::None,
        "events",
        false
    ),
    rt!(
        "rbac.authorization.k8s.io",
        "roles",
        "role",
        "Role",
        true,
        &[],
        PathSegment,
        true,
        true,
        false,
        &[],
        Dflt,
        Generation::None,
        "roles",
        false
    ),
    rt!(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        PathSegment,
        true,
        true,
        false,
        &[],
        Dflt,
        Generation::None,
        "rolebindings",
        false
    ),
    rt!(
        "apps",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        Subdomain,
        false,
        true,
        true,
        &[],
        Dflt,
        Generation::Spec,
        "statefulsets",
        false
    ),
    rt!(
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        Subdomain,
        false,
        true,
        true,
        &[],
        Dflt,
        Generation::Spec,
        "poddisruptionbudgets",
        false
    ),
];

/// Finds a served type by group, version and plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds the type of a storage key as served at a group (used for watch conversion).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
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
            Custom => format!("field label not supported: {field}"),
            Dflt => format!(
                "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            ),
        }))
    }

    /// Which top-level paths of this type hold MicroTime values (strictly formatted on input).
    fn micro_time_paths(&self) -> &'static [&'static [&'static str]] {
        match (self.group, self.kind) {
            ("coordination.k8s.io", "Lease") => &[&["spec", "acquireTime"], &["spec", "renewTime"]],
            (_, "Event") => &[&["eventTime"], &["series", "lastObservedTime"]],
            _ => &[],
        }
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
        for path in self.micro_time_paths() {
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
        let canonical = canonicalize(self, &body).map_err(|e| {
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

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decodes through the k8s-openapi type and re-encodes.
fn canonicalize(rt: &ResourceType, v: &Value) -> Result<Value, String> {
    use k8s_openapi::api::{
        apps::v1 as apps, coordination::v1 as coord, core::v1 as core, discovery::v1 as disc,
        events::v1 as ev, policy::v1 as policy, rbac::v1 as rbac,
    };
    let out = match (rt.group, rt.kind) {
        ("", "Namespace") => roundtrip::<core::Namespace>(v),
        ("", "Pod") => roundtrip::<core::Pod>(v),
        ("", "Service") => roundtrip::<core::Service>(v),
        ("", "Endpoints") => roundtrip::<core::Endpoints>(v),
        ("", "Event") => roundtrip::<core::Event>(v),
        ("", "ServiceAccount") => roundtrip::<core::ServiceAccount>(v),
        ("", "ConfigMap") => roundtrip::<core::ConfigMap>(v),
        ("", "Secret") => roundtrip::<core::Secret>(v),
        ("coordination.k8s.io", _) => roundtrip::<coord::Lease>(v),
        ("discovery.k8s.io", _) => roundtrip::<disc::EndpointSlice>(v),
        ("events.k8s.io", _) => roundtrip::<ev::Event>(v),
        ("rbac.authorization.k8s.io", "Role") => roundtrip::<rbac::Role>(v),
        ("rbac.authorization.k8s.io", _) => roundtrip::<rbac::RoleBinding>(v),
        ("apps", _) => roundtrip::<apps::StatefulSet>(v),
        ("policy", _) => roundtrip::<policy::PodDisruptionBudget>(v),
        _ => return Err(format!("no decoder for {}", rt.kind)),
    }?;
    // The typed round trip turns an absent `metadata` into `{}`; keep kind/apiVersion first-class.
    Ok(out)
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

fn positive(obj: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = obj;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_i64()
}

/// Type-specific validation (`pkg/apis/*/validation`). `old` is set on update.
pub fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    validate_meta(rt, obj, &mut causes);
    match (rt.group, rt.kind) {
        ("coordination.k8s.io", "Lease") => validate_lease(obj, &mut causes),
        ("events.k8s.io", "Event") => validate_events_v1(obj, old, &mut causes),
        ("", "Event") => validate_core_event(obj, &mut causes),
        ("", "Service") => validate_service(obj, old, &mut causes),
        ("", "Pod") => validate_pod(obj, old, &mut causes),
        ("discovery.k8s.io", _) => {
            let at = obj
                .get("addressType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !["IPv4", "IPv6", "FQDN"].contains(&at) {
                causes.push(Cause::not_supported(
                    "addressType",
                    at,
                    &["FQDN", "IPv4", "IPv6"],
                ));
            }
            if let Some(o) = old
                && o.get("addressType") != obj.get("addressType")
            {
                causes.push(Cause::invalid(
                    "addressType",
                    &obj["addressType"],
                    "field is immutable",
                ));
            }
        }
        ("rbac.authorization.k8s.io", "Role") => {
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
        ("rbac.authorization.k8s.io", "RoleBinding") => {
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
        ("apps", "StatefulSet") => {
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
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(rt.invalid(meta_str(obj, "name").unwrap_or_default(), causes))
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

fn check_len(
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

/// The new-style event fields both Event APIs require: the reporting controller (a qualified
/// name, called `controller_field` in that API), instance, action and reason.
fn validate_reporting(obj: &Value, controller_field: &str, causes: &mut Vec<Cause>) {
    let rc = obj
        .get(controller_field)
        .and_then(Value::as_str)
        .unwrap_or_default();
    if rc.is_empty() {
        causes.push(Cause::required(controller_field, ""));
    } else {
        for e in validation::qualified_name(rc) {
            causes.push(Cause::invalid(controller_field, &json!(rc), &e));
        }
    }
    check_len(
        obj,
        "reportingInstance",
        "reportingInstance",
        128,
        true,
        causes,
    );
    check_len(obj, "action", "action", 128, true, causes);
    check_len(obj, "reason", "reason", 128, true, causes);
}

/// `ValidateEventCreate`/`Update` for events.k8s.io/v1, applied to the events.k8s.io form.
fn validate_events_v1(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    if obj.get("eventTime").is_none_or(Value::is_null) {
        causes.push(Cause::required("eventTime", ""));
    }
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or_default();
    if ty != "Normal" && ty != "Warning" {
        causes.push(Cause::not_supported("type", ty, &["Normal", "Warning"]));
    }
    for f in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ] {
        let set = match obj.get(f) {
            None | Some(Value::Null) => false,
            Some(Value::Object(m)) => !m.is_empty(),
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            Some(_) => true,
        };
        if set {
            causes.push(Cause::invalid(f, &obj[f], "needs to be unset"));
        }
    }
    validate_series(obj, causes);
    validate_reporting(obj, "reportingController", causes);
    check_len(obj, "note", "note", 1024, false, causes);
    let regarding_ns = obj
        .pointer("/regarding/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ns = meta_str(obj, "namespace").unwrap_or_default();
    if regarding_ns.is_empty() && !ns.is_empty() && ns != "default" && ns != "kube-system" {
        causes.push(Cause::invalid(
            "metadata.namespace",
            &json!(ns),
            "does not match event.namespace",
        ));
    }
    if let Some(o) = old {
        for f in [
            "regarding",
            "reason",
            "note",
            "type",
            "eventTime",
            "action",
            "related",
            "reportingController",
            "reportingInstance",
            "deprecatedSource",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ] {
            if o.get(f) != obj.get(f) {
                causes.push(Cause::invalid(
                    f,
                    obj.get(f).unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
    }
}

fn validate_series(obj: &Value, causes: &mut Vec<Cause>) {
    if let Some(s) = obj.get("series").filter(|s| !s.is_null()) {
        let count = s.get("count").and_then(Value::as_i64).unwrap_or(0);
        if count < 2 {
            causes.push(Cause::invalid(
                "series.count",
                &json!(count),
                "should be at least 2",
            ));
        }
        if s.get("lastObservedTime").is_none_or(Value::is_null) {
            causes.push(Cause::required("series.lastObservedTime", ""));
        }
    }
}

/// Legacy core/v1 Event validation.
fn validate_core_event(obj: &Value, causes: &mut Vec<Cause>) {
    let ns = meta_str(obj, "namespace").unwrap_or_default();
    let involved_ns = obj
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if obj.get("eventTime").is_none_or(Value::is_null) {
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            causes.push(Cause::invalid(
                "involvedObject.namespace",
                &json!(involved_ns),
                "does not match event.namespace",
            ));
        }
    } else {
        validate_reporting(obj, "reportingComponent", causes);
        validate_series(obj, causes);
    }
    for e in validation::dns1123_subdomain(ns) {
        causes.push(Cause::invalid("metadata.namespace", &json!(ns), &e));
    }
}

fn validate_service(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    validation::validate_labels(obj.pointer("/spec/selector"), "spec.selector", causes);
    let headless = obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let ports = obj.pointer("/spec/ports").and_then(Value::as_array);
    if ports.is_none_or(Vec::is_empty) && !headless && ty != "ExternalName" {
        causes.push(Cause::required("spec.ports", ""));
    }
    if let Some(ports) = ports {
        let many = ports.len() > 1;
        let mut names = std::collections::HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            if many && name.is_empty() {
                causes.push(Cause::required(format!("spec.ports[{i}].name"), ""));
            }
            if !name.is_empty() {
                for e in validation::dns1123_label(name) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].name"),
                        &json!(name),
                        &e,
                    ));
                }
                if !names.insert(name) {
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("spec.ports[{i}].name"),
                        format!("Duplicate value: \"{name}\""),
                    ));
                }
            }
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    format!("spec.ports[{i}].port"),
                    &json!(port),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
    if let Some(o) = old {
        let before = o.pointer("/spec/clusterIP");
        let after = obj.pointer("/spec/clusterIP");
        if before.is_some() && before != after {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                after.unwrap_or(&Value::Null),
                "may not change once set",
            ));
        }
    }
}

fn validate_pod(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    match obj.pointer("/spec/containers").and_then(Value::as_array) {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                if name.is_empty() {
                    causes.push(Cause::required(format!("spec.containers[{i}].name"), ""));
                } else {
                    for e in validation::dns1123_label(name) {
                        causes.push(Cause::invalid(
                            format!("spec.containers[{i}].name"),
                            &json!(name),
                            &e,
                        ));
                    }
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    causes.push(Cause::required(format!("spec.containers[{i}].image"), ""));
                }
            }
        }
        _ => causes.push(Cause::required("spec.containers", "")),
    }
    if let Some(o) = old {
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
            for list in ["containers", "initContainers"] {
                if let Some(Value::Array(cs)) = s.get_mut(list) {
                    for c in cs {
                        if let Some(m) = c.as_object_mut() {
                            m.remove("image");
                        }
                    }
                }
            }
            if let Some(m) = s.as_object_mut() {
                for f in [
                    "activeDeadlineSeconds",
                    "terminationGracePeriodSeconds",
                    "tolerations",
                ] {
                    m.remove(f);
                }
            }
            s
        };
        if strip(o) != strip(obj) {
            causes.push(Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }
}

/// Defaults the real server fills on create (`pkg/apis/*/v1/defaults.go` and PrepareForCreate).
pub fn apply_create_defaults(rt: &ResourceType, obj: &mut Value, next_cluster_ip: &mut u32) {
    match (rt.group, rt.kind) {
        ("", "Pod") => {
            let spec = obj["spec"].as_object_mut();
            if let Some(spec) = spec {
                spec.entry("restartPolicy").or_insert(json!("Always"));
                spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
                spec.entry("schedulerName")
                    .or_insert(json!("default-scheduler"));
                spec.entry("terminationGracePeriodSeconds")
                    .or_insert(json!(30));
                spec.entry("securityContext").or_insert(json!({}));
                spec.entry("enableServiceLinks").or_insert(json!(true));
                if let Some(Value::Array(cs)) = spec.get_mut("containers") {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.entry("terminationMessagePath")
                                .or_insert(json!("/dev/termination-log"));
                            c.entry("terminationMessagePolicy").or_insert(json!("File"));
                            let latest = c
                                .get("image")
                                .and_then(Value::as_str)
                                .is_some_and(|i| !i.contains(':') || i.ends_with(":latest"));
                            c.entry("imagePullPolicy").or_insert(json!(if latest {
                                "Always"
                            } else {
                                "IfNotPresent"
                            }));
                            if let Some(Value::Array(ps)) = c.get_mut("ports") {
                                for p in ps {
                                    if let Some(p) = p.as_object_mut() {
                                        p.entry("protocol").or_insert(json!("TCP"));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            // PrepareForCreate resets status.
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("", "Service") => {
            let spec = obj["spec"].as_object_mut();
            if let Some(spec) = spec {
                let ty = spec
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_string();
                spec.insert("type".into(), json!(ty));
                spec.entry("sessionAffinity").or_insert(json!("None"));
                if ty != "ExternalName" {
                    let ip = match spec.get("clusterIP").and_then(Value::as_str) {
                        Some(ip) if !ip.is_empty() => ip.to_string(),
                        _ => {
                            *next_cluster_ip += 1;
                            let n = *next_cluster_ip;
                            format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
                        }
                    };
                    spec.insert("clusterIP".into(), json!(ip));
                    spec.insert("clusterIPs".into(), json!([ip]));
                    spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
                    spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
                    spec.entry("internalTrafficPolicy")
                        .or_insert(json!("Cluster"));
                }
                if let Some(Value::Array(ps)) = spec.get_mut("ports") {
                    for p in ps {
                        if let Some(p) = p.as_object_mut() {
                            p.entry("protocol").or_insert(json!("TCP"));
                            if let Some(port) = p.get("port").cloned() {
                                p.entry("targetPort").or_insert(port);
                            }
                        }
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "Namespace") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let name = meta_str(obj, "name").unwrap_or_default().to_string();
            let labels = meta_mut(obj).entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("coordination.k8s.io", _) => {
            // CoordinatedLeaderElection is off: strategy and preferredHolder are dropped.
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("strategy");
                spec.remove("preferredHolder");
            }
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = obj["spec"].as_object_mut() {
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("podManagementPolicy")
                    .or_insert(json!("OrderedReady"));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                spec.entry("updateStrategy")
                    .or_insert(json!({"type":"RollingUpdate","rollingUpdate":{"partition":0}}));
            }
            obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
        }
        ("", "Secret") => {
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
            merge_string_data(obj);
        }
        _ => {}
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

/// Update-time adjustments: Lease gated fields kept only if already stored, Service
/// clusterIP carried over when omitted.
pub fn apply_update_rules(rt: &ResourceType, obj: &mut Value, old: &Value) {
    match (rt.group, rt.kind) {
        ("coordination.k8s.io", _) => {
            for f in ["strategy", "preferredHolder"] {
                if old.pointer(&format!("/spec/{f}")).is_none()
                    && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
                {
                    spec.remove(f);
                }
            }
        }
        ("", "Service") => {
            for f in [
                "clusterIP",
                "clusterIPs",
                "ipFamilies",
                "ipFamilyPolicy",
                "type",
                "sessionAffinity",
                "internalTrafficPolicy",
            ] {
                if obj.pointer(&format!("/spec/{f}")).is_none()
                    && let Some(v) = old.pointer(&format!("/spec/{f}")).cloned()
                    && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
                {
                    spec.insert(f.into(), v);
                }
            }
        }
        ("", "Secret") => merge_string_data(obj),
        _ => {}
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
