//! `Status` error bodies exactly as kube-apiserver writes them.
//!
//! Clients key their behaviour on `reason` and `code` (kube-rs' `is_not_found`, `is_conflict`,
//! older kube's exact-string matches), and on the message shape in logs, so every constructor
//! here mirrors one of apimachinery's `pkg/api/errors` constructors word for word.

use serde_json::{Map, Value, json};

/// The group and plural resource name that error messages are built from, e.g.
/// `leases.coordination.k8s.io` or, for the core group, just `pods`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupResource {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Plural resource name, possibly with a subresource (`pods/status`).
    pub resource: &'static str,
}

impl GroupResource {
    /// `plural.group`, or just the plural for the core group, as Go's `GroupResource.String()`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// One entry of `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub reason: &'static str,
    /// The field error without the field path, e.g. `Invalid value: 0: must be greater than 0`.
    pub message: String,
    /// The field path, e.g. `spec.leaseDurationSeconds`.
    pub field: String,
}

impl Cause {
    /// A field error with the given cause reason and detail (already formatted by the caller).
    pub fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            field: field.into(),
        }
    }

    /// `field.Invalid(path, value, detail)`: `Invalid value: VALUE: detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("\"{s}\""),
            Value::Null => "null".to_string(),
            other => other.to_string(),
        };
        Self::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {shown}: {detail}"),
        )
    }

    /// `field.Required(path, detail)`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self::new("FieldValueRequired", field, message)
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new("FieldValueForbidden", field, format!("Forbidden: {detail}"))
    }

    /// `field.TooLong(path, value, max)`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        )
    }

    /// `field.NotSupported(path, value, valid)`.
    pub fn not_supported(field: impl Into<String>, value: &str, valid: &[&str]) -> Self {
        let valid: Vec<String> = valid.iter().map(|v| format!("\"{v}\"")).collect();
        Self::new(
            "FieldValueNotSupported",
            field,
            format!(
                "Unsupported value: \"{value}\": supported values: {}",
                valid.join(", ")
            ),
        )
    }

    /// The `field: message` form used inside an Invalid error's message.
    fn rendered(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// A failed request, rendered as a `Status` with the HTTP code equal to `Status.code`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code, also written as `Status.code`.
    pub code: u16,
    /// `Status.reason`; empty means omitted (as for the 500 on create with a resourceVersion).
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the real server sets it.
    pub details: Option<Value>,
    /// Sent as `Retry-After` and `details.retryAfterSeconds` (429/503/504 style faults).
    pub retry_after_seconds: Option<u32>,
}

impl ApiError {
    fn plain(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after_seconds: None,
        }
    }

    fn details_for(gr: GroupResource, name: &str) -> Value {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        if !gr.group.is_empty() {
            d.insert("group".into(), json!(gr.group));
        }
        d.insert("kind".into(), json!(gr.resource));
        Value::Object(d)
    }

    /// 404 `NotFound`: `pods "p1" not found`.
    pub fn not_found(gr: GroupResource, name: &str) -> Self {
        Self {
            details: Some(Self::details_for(gr, name)),
            ..Self::plain(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", gr.qualified()),
            )
        }
    }

    /// 409 `AlreadyExists`.
    pub fn already_exists(gr: GroupResource, name: &str) -> Self {
        Self {
            details: Some(Self::details_for(gr, name)),
            ..Self::plain(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", gr.qualified()),
            )
        }
    }

    /// 409 `Conflict` for a stale resourceVersion.
    pub fn conflict(gr: GroupResource, name: &str) -> Self {
        Self::conflict_with(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 `Conflict` with a custom cause (e.g. a UID precondition).
    pub fn conflict_with(gr: GroupResource, name: &str, cause: &str) -> Self {
        Self {
            details: Some(Self::details_for(gr, name)),
            ..Self::plain(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {cause}",
                    gr.qualified()
                ),
            )
        }
    }

    /// 422 `Invalid`. `qualified_kind` is `Kind.group` (or just `Kind` for core), `kind` the
    /// bare Kind that goes into `details.kind`.
    pub fn invalid(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        causes: Vec<Cause>,
    ) -> Self {
        let rendered: Vec<String> = causes.iter().map(Cause::rendered).collect();
        let joined = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if !group.is_empty() {
            d.insert("group".into(), json!(group));
        }
        d.insert("kind".into(), json!(kind));
        d.insert(
            "causes".into(),
            Value::Array(
                causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect(),
            ),
        );
        Self {
            details: Some(Value::Object(d)),
            ..Self::plain(
                422,
                "Invalid",
                format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
            )
        }
    }

    /// 400 `BadRequest` with free text.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(400, "BadRequest", message)
    }

    /// 401 `Unauthorized`, the exact body of a failed bearer-token authentication.
    pub fn unauthorized() -> Self {
        Self::plain(401, "Unauthorized", "Unauthorized")
    }

    /// 403 `Forbidden` as written by the authorization filter.
    pub fn forbidden(gr: GroupResource, name: &str, why: &str) -> Self {
        let message = if name.is_empty() {
            format!("{} is forbidden: {why}", gr.qualified())
        } else {
            format!("{} \"{name}\" is forbidden: {why}", gr.qualified())
        };
        Self {
            details: Some(Self::details_for(gr, name)),
            ..Self::plain(403, "Forbidden", message)
        }
    }

    /// 410 `Expired` for a resourceVersion older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::plain(410, "Expired", message)
    }

    /// 404 for an unknown resource under a served group/version.
    pub fn no_such_resource() -> Self {
        Self::plain(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::plain(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 415 `UnsupportedMediaType` for a PATCH content type outside the four patch types.
    pub fn unsupported_patch_type(got: &str) -> Self {
        Self::plain(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {got:?})"
            ),
        )
    }

    /// 415 for a non-PATCH write whose body is not JSON.
    pub fn unsupported_media_type(got: &str) -> Self {
        Self::plain(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {got:?})"
            ),
        )
    }

    /// 413 `RequestEntityTooLarge` beyond the 3 MiB request limit.
    pub fn too_large(limit: usize) -> Self {
        Self::plain(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 504 `Timeout`: the request (here, its body) did not arrive within the server's time.
    pub fn timeout() -> Self {
        Self::plain(
            504,
            "Timeout",
            "Timeout: request did not complete within the allotted timeout".to_string(),
        )
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            details: Some(json!({"causes": [{"message": message.clone()}]})),
            ..Self::plain(
                500,
                "InternalError",
                format!("Internal error occurred: {message}"),
            )
        }
    }

    /// A status with an empty reason, e.g. the storage layer's 500 for an RV set on create.
    pub fn reasonless(code: u16, message: impl Into<String>) -> Self {
        Self::plain(code, "", message)
    }

    /// An injected fault response: the reason the real server would give for that code.
    pub fn injected(code: u16, retry_after_seconds: Option<u32>) -> Self {
        let (reason, message) = match code {
            400 => ("BadRequest", "injected fault: bad request"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "injected fault: forbidden"),
            404 => ("NotFound", "injected fault: not found"),
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            ),
            410 => ("Expired", "injected fault: expired"),
            429 => (
                "TooManyRequests",
                "Too many requests, please try again later.",
            ),
            500 => ("InternalError", "Internal error occurred: injected fault"),
            503 => ("ServiceUnavailable", "injected fault: service unavailable"),
            504 => ("Timeout", "injected fault: timeout"),
            _ => ("", "injected fault"),
        };
        Self {
            retry_after_seconds,
            ..Self::plain(code, reason, message)
        }
    }

    /// A bare `Status` with `status: Failure` as a JSON value (also used inside watch ERROR
    /// events, which carry the same object).
    pub fn to_status(&self) -> Value {
        let mut s = Map::new();
        s.insert("kind".into(), json!("Status"));
        s.insert("apiVersion".into(), json!("v1"));
        s.insert("metadata".into(), json!({}));
        s.insert("status".into(), json!("Failure"));
        s.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            s.insert("reason".into(), json!(self.reason));
        }
        let mut details = self.details.clone();
        if let Some(secs) = self.retry_after_seconds {
            let d = details.get_or_insert_with(|| json!({}));
            if let Some(m) = d.as_object_mut() {
                m.insert("retryAfterSeconds".into(), json!(secs));
            }
        }
        if let Some(d) = details {
            s.insert("details".into(), d);
        }
        s.insert("code".into(), json!(self.code));
        Value::Object(s)
    }
}

/// The `Status` a successful DELETE returns for most types.
pub fn success_status(gr: GroupResource, name: &str, uid: &str) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
    if !gr.group.is_empty() {
        d.insert("group".into(), json!(gr.group));
    }
    d.insert("kind".into(), json!(gr.resource));
    d.insert("uid".into(), json!(uid));
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": Value::Object(d),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASES: GroupResource = GroupResource {
        group: "coordination.k8s.io",
        resource: "leases",
    };

    #[test]
    fn not_found_core_has_no_group() {
        let e = ApiError::not_found(
            GroupResource {
                group: "",
                resource: "pods",
            },
            "p1",
        );
        let s = e.to_status();
        assert_eq!(s["message"], "pods \"p1\" not found");
        assert!(s["details"].get("group").is_none());
        assert_eq!(s["details"]["kind"], "pods");
    }

    #[test]
    fn invalid_joins_multiple_causes() {
        let e = ApiError::invalid(
            "Lease.coordination.k8s.io",
            "coordination.k8s.io",
            "Lease",
            "l",
            vec![
                Cause::invalid("spec.a", &json!(0), "x"),
                Cause::required("spec.b", ""),
            ],
        );
        assert_eq!(
            e.message,
            "Lease.coordination.k8s.io \"l\" is invalid: [spec.a: Invalid value: 0: x, spec.b: Required value]"
        );
    }

    #[test]
    fn reasonless_omits_reason() {
        let s = ApiError::reasonless(500, "x").to_status();
        assert!(s.get("reason").is_none());
        assert_eq!(s["code"], 500);
        let s = ApiError::conflict(LEASES, "l1").to_status();
        assert_eq!(s["reason"], "Conflict");
    }
}
