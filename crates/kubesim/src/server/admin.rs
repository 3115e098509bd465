//! The administrator API under `/kubesim/v1/` (faults, outages, compaction, tokens).

use super::*;

/// The administrator API under `/kubesim/v1/`.
pub(super) async fn admin(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let (_, body) = match read_body(shared, req).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let parsed = || -> Result<Value, ApiError> {
        if body.is_empty() {
            Ok(json!({}))
        } else {
            parse_json(&body)
        }
    };
    let result: Result<(u16, Value), ApiError> = (|| match (method.clone(), path.as_str()) {
        (Method::GET, "/kubesim/v1/faults") => Ok((
            200,
            json!(
                shared
                    .faults
                    .list()
                    .into_iter()
                    .map(|(id, f)| json!({"id": id, "fault": f}))
                    .collect::<Vec<_>>()
            ),
        )),
        (Method::POST, "/kubesim/v1/faults") => {
            let fault: Fault = serde_json::from_value(parsed()?)
                .map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))?;
            Ok((201, json!({"id": shared.faults.add(fault)})))
        }
        (Method::DELETE, "/kubesim/v1/faults") => {
            shared.faults.clear();
            Ok((200, json!({})))
        }
        (Method::DELETE, p) if p.starts_with("/kubesim/v1/faults/") => {
            let id: u64 = p
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad_request("fault id must be a number"))?;
            if shared.faults.remove(id) {
                Ok((200, json!({})))
            } else {
                Err(ApiError::bad_request(format!("no fault with id {id}")))
            }
        }
        (Method::POST, "/kubesim/v1/outage") => {
            let ms = parsed()?.get("durationMs").and_then(Value::as_u64).ok_or_else(|| {
                ApiError::bad_request("durationMs is required: the outage also makes this endpoint unreachable, so it must end by itself")
            })?;
            let shared2 = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                set_outage(&shared2, true);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                set_outage(&shared2, false);
            });
            Ok((202, json!({"startsInMs": 50, "durationMs": ms})))
        }
        (Method::POST, "/kubesim/v1/compact") => {
            let mut store = shared.store.write().expect("store lock");
            store.compact();
            Ok((200, json!({"compactedAt": store.rv().to_string()})))
        }
        (Method::POST, "/kubesim/v1/tokens") => {
            let b = parsed()?;
            let ns = b
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let name = b
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("name is required"))?;
            let ttl = b
                .get("expirationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            let mut store = shared.store.write().expect("store lock");
            Ok((
                201,
                json!({"token": issue_token(&mut store, ns, name, ttl)?}),
            ))
        }
        _ => Err(ApiError::no_such_resource()),
    })();
    match result {
        Ok((code, v)) => json_response(code, &v, &[]),
        Err(e) => error_response(&e),
    }
}
