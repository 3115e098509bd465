//! Request parsing: paths to resource targets, query parameters to options, bodies to JSON.

use super::*;

pub(super) fn percent_decode(s: &str) -> String {
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query pairs: empty pairs ignored, values percent-decoded, the first of a repeated key wins.
pub(super) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_insert_with(|| percent_decode(v));
    }
    out
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The request's body: at most [`MAX_BODY`] bytes (a larger declared length is refused before
/// any of it is read), received within the server's body timeout.
pub(super) async fn read_body(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let collected =
        tokio::time::timeout(shared.body_timeout, Limited::new(body, MAX_BODY).collect())
            .await
            .map_err(|_| ApiError::timeout())?;
    match collected {
        Ok(c) => Ok((parts.headers, c.to_bytes())),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(MAX_BODY))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading request body: {e}"
        ))),
    }
}

pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

/// A parsed resource URL.
pub(super) struct Target {
    pub(super) rt: &'static ResourceType,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) subresource: String,
}

pub(super) fn parse_resource_path(
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Target, ApiError> {
    let mut parts = rest.to_vec();
    let mut namespace = String::new();
    if parts.first() == Some(&"namespaces")
        && parts.len() >= 3
        && !matches!(parts[2], "status" | "finalize")
    {
        namespace = parts[1].to_string();
        parts.drain(0..2);
    }
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::no_such_resource());
    }
    let rt = resources::lookup(group, version, parts[0]).ok_or_else(ApiError::no_such_resource)?;
    if !namespace.is_empty() && !rt.namespaced {
        return Err(ApiError::no_such_resource());
    }
    let name = parts.get(1).map(|s| percent_decode(s)).unwrap_or_default();
    let subresource = parts.get(2).map(|s| s.to_string()).unwrap_or_default();
    let sub_ok = match subresource.as_str() {
        "" => true,
        "status" => rt.status_subresource,
        "token" => rt.token_subresource,
        "log" => rt.kind == "Pod",
        _ => false,
    };
    if !sub_ok {
        return Err(ApiError::no_such_resource());
    }
    Ok(Target {
        rt,
        namespace,
        name,
        subresource,
    })
}

pub(super) fn write_options(
    q: &HashMap<String, String>,
    kind: &str,
) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                &format!("{kind}.meta.k8s.io"),
                "meta.k8s.io",
                kind,
                "",
                vec![crate::status::Cause::not_supported(
                    "dryRun",
                    other,
                    &["All"],
                )],
            ));
        }
    };
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            )));
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_validation,
        field_manager: q.get("fieldManager").cloned(),
        force: q.get("force").and_then(|f| parse_bool(f)).unwrap_or(false),
    })
}

pub(super) fn list_options(q: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(
        q.get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?
            .max(0) as usize,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q
            .get("resourceVersionMatch")
            .filter(|c| !c.is_empty())
            .cloned(),
    })
}

pub(super) fn delete_options(
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    if !body.is_empty() {
        let b = parse_json(body)?;
        opts.uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.resource_version = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.grace_period_seconds = b.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.dry_run = b
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    }
    if let Some(g) = q.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    if q.get("dryRun").map(String::as_str) == Some("All") {
        opts.dry_run = true;
    }
    Ok(opts)
}

/// Decodes a create/update body by its Content-Type: JSON, or the Kubernetes protobuf that
/// kubectl's typed clients send.
pub(super) fn decode_write_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let base = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match base.as_str() {
        "application/json" | "" | "*/*" => {
            if body.is_empty() {
                return Err(ApiError::bad_request("the body of the request is empty"));
            }
            parse_json(body)
        }
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::ProtoError::Malformed(_) => ApiError::bad_request(e.to_string()),
            crate::protobuf::ProtoError::Unsupported(_) => {
                ApiError::unsupported_media_type(&format!("{ct}: {e}"))
            }
        }),
        _ => Err(ApiError::unsupported_media_type(ct)),
    }
}
