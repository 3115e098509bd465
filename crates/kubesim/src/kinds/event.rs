//! Events, served by both APIs over one store as the real server does: `v1 events` (the
//! form kubectl prints) and `events.k8s.io/v1 events` (the form kube-rs' recorder writes).

use super::{Column, NAMESPACED, Strategy, check_len, roundtrip};
use crate::resources::{FieldErrorStyle, ResourceType, meta_str};
use crate::status::Cause;
use crate::table::{age_of, s};
use crate::validation::{self, NameRule};
use serde_json::{Value, json};

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

/// `v1 events`.
pub static EVENTS: ResourceType = ResourceType {
    plural: "events",
    singular: "event",
    kind: "Event",
    short_names: &["ev"],
    name_rule: NameRule::PathSegment,
    create_on_update: true,
    extra_fields: EVENT_FIELDS,
    field_error_style: FieldErrorStyle::Custom,
    storage: "events",
    strategy: &CoreEvent,
    ..NAMESPACED
};

/// `events.k8s.io/v1 events`.
pub static EVENTS_V1: ResourceType = ResourceType {
    group: "events.k8s.io",
    plural: "events",
    singular: "event",
    kind: "Event",
    short_names: &["ev"],
    create_on_update: true,
    extra_fields: EVENT_FIELDS,
    field_error_style: FieldErrorStyle::Custom,
    storage: "events",
    strategy: &EventV1,
    ..NAMESPACED
};

fn event_columns() -> Vec<Column> {
    vec![
        ("Last Seen", "string", 0),
        ("Type", "string", 0),
        ("Reason", "string", 0),
        ("Object", "string", 0),
        ("Subobject", "string", 1),
        ("Source", "string", 1),
        ("Message", "string", 0),
        ("First Seen", "string", 1),
        ("Count", "string", 1),
        ("Name", "string", 1),
    ]
}

/// The core (`v1`) Event strategy.
#[derive(Debug)]
pub struct CoreEvent;

impl Strategy for CoreEvent {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::core::v1::Event>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::core::v1::Event>()
    }

    fn micro_time_paths(&self) -> &'static [&'static [&'static str]] {
        &[&["eventTime"], &["series", "lastObservedTime"]]
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, causes: &mut Vec<Cause>) {
        validate_core_event(obj, causes);
    }

    fn columns(&self) -> Vec<Column> {
        event_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        cells(obj)
    }
}

/// The `events.k8s.io/v1` Event strategy.
#[derive(Debug)]
pub struct EventV1;

impl Strategy for EventV1 {
    fn canonicalize(&self, v: &Value) -> Result<Value, String> {
        roundtrip::<k8s_openapi::api::events::v1::Event>(v)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<k8s_openapi::api::events::v1::Event>()
    }

    fn micro_time_paths(&self) -> &'static [&'static [&'static str]] {
        &[&["eventTime"], &["series", "lastObservedTime"]]
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
        validate_events_v1(obj, old, causes);
    }

    fn columns(&self) -> Vec<Column> {
        event_columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        cells(&crate::event_convert::to_core(obj))
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

/// Cells of a core/v1-shaped event (events.k8s.io views are converted back first).
fn cells(obj: &Value) -> Vec<Value> {
    let last = [
        s(obj, "/lastTimestamp"),
        s(obj, "/series/lastObservedTime"),
        s(obj, "/eventTime"),
        s(obj, "/metadata/creationTimestamp"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or_default();
    let first = [s(obj, "/firstTimestamp"), s(obj, "/eventTime")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let object = format!(
        "{}/{}",
        s(obj, "/involvedObject/kind").to_lowercase(),
        s(obj, "/involvedObject/name")
    );
    let source = [s(obj, "/source/component"), s(obj, "/reportingComponent")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    let count = obj
        .pointer("/series/count")
        .and_then(Value::as_i64)
        .or_else(|| obj.get("count").and_then(Value::as_i64))
        .unwrap_or(1);
    vec![
        json!(age_of(last)),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(object),
        json!(s(obj, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(obj, "/message").trim()),
        json!(age_of(first)),
        json!(count.to_string()),
        json!(s(obj, "/metadata/name")),
    ]
}
