//! Conversion between core/v1 Events (the storage form) and events.k8s.io/v1 Events.
//!
//! The real server stores events once and converts between the two APIs
//! (`pkg/apis/events/v1/conversion.go`), so an event written through either is listable through
//! the other. The field pairs below are that conversion's.

use serde_json::{Map, Value, json};

/// (events.k8s.io field, core/v1 field) pairs that are renamed.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &Value, to_core: bool, api_version: &str) -> Value {
    let mut out = Map::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            let key = RENAMED
                .iter()
                .find_map(|(ev, core)| {
                    if to_core && k == ev {
                        Some(*core)
                    } else if !to_core && k == core {
                        Some(*ev)
                    } else {
                        None
                    }
                })
                .unwrap_or(k.as_str());
            out.insert(key.to_string(), v.clone());
        }
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// events.k8s.io/v1 → core/v1 (storage form).
pub fn to_core(ev: &Value) -> Value {
    let mut v = rename(ev, true, "v1");
    // core/v1 requires involvedObject in the typed struct.
    if v.get("involvedObject").is_none() {
        v["involvedObject"] = json!({});
    }
    v
}

/// core/v1 → events.k8s.io/v1.
pub fn to_events_v1(core: &Value) -> Value {
    let mut v = rename(core, false, "events.k8s.io/v1");
    // An empty legacy source/count is "unset" in the new API.
    if let Some(m) = v.as_object_mut() {
        if m.get("deprecatedSource")
            .is_some_and(|s| s.as_object().is_some_and(Map::is_empty))
        {
            m.remove("deprecatedSource");
        }
        if m.get("deprecatedCount").and_then(Value::as_i64) == Some(0) {
            m.remove("deprecatedCount");
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keeps_fields() {
        let ev = json!({"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"x"},
            "note":"n","regarding":{"name":"p"},"reportingController":"c","action":"a"});
        let core = to_core(&ev);
        assert_eq!(core["message"], "n");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(to_events_v1(&core), ev);
    }
}
