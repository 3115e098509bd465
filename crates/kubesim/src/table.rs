//! Server-side printing: `meta.k8s.io/v1` Table responses, as kube-apiserver gives kubectl
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the columns of Kubernetes'
//! own printers (`pkg/printers/internalversion/printers.go`) for the kinds served here and the
//! default Name/Created At table for the rest.

pub use crate::kinds::pod::cells as pod_cells;
use crate::resources::ResourceType;
use serde_json::{Value, json};

/// True when an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

pub(crate) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// Go's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let sec = secs % 60;
        return if sec == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{sec}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

pub(crate) fn age_of(ts: &str) -> String {
    match ts.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => human_duration(crate::util::now_unix() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

pub(crate) fn age(obj: &Value) -> String {
    age_of(s(obj, "/metadata/creationTimestamp"))
}

fn column_definitions(rt: &ResourceType) -> Value {
    Value::Array(
        rt.strategy
            .columns()
            .into_iter()
            .map(|(name, ty, priority)| {
                let format = if name == "Name" { "name" } else { "" };
                json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
            })
            .collect(),
    )
}

/// `a,b,c` joined, with `+ N more...` past `max`, as kubectl's endpoint printers do.
pub(crate) fn join_more(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let mut out = shown.join(",");
    if items.len() > max {
        out.push_str(&format!(" + {} more...", items.len() - max));
    }
    out
}

pub(crate) fn map_len(v: Option<&Value>) -> usize {
    v.and_then(Value::as_object).map_or(0, |m| m.len())
}

fn row(rt: &ResourceType, obj: &Value) -> Value {
    // Rows carry PartialObjectMetadata, kubectl's default `includeObject=Metadata`.
    json!({
        "cells": rt.strategy.cells(obj),
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))},
    })
}

/// A Table of `items` (views of `rt`), with the list's metadata.
pub fn table(rt: &ResourceType, items: &[Value], list_meta: Value, with_columns: bool) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(rt) } else { json!([]) },
        "rows": items.iter().map(|o| row(rt, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_go() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn accept_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json,application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }
}
