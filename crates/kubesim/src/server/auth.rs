//! Authentication: bearer tokens of administrators and of service accounts.

use super::*;

pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

pub(super) fn authenticate(shared: &Shared, token: Option<&str>) -> Result<User, ApiError> {
    let Some(token) = token else {
        return Err(ApiError::unauthorized());
    };
    if shared.admin_tokens.contains(token) {
        return Ok(User::Admin);
    }
    let store = shared.store.read().expect("store lock");
    let Some(t) = store.sa_tokens.get(token) else {
        return Err(ApiError::unauthorized());
    };
    let alive = t.expires_unix > util::now_unix()
        && store
            .get("serviceaccounts", &t.namespace, &t.name)
            .is_some_and(|sa| {
                sa.pointer("/metadata/uid").and_then(Value::as_str) == Some(t.uid.as_str())
            });
    if !alive {
        return Err(ApiError::unauthorized());
    }
    Ok(User::ServiceAccount {
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    })
}
