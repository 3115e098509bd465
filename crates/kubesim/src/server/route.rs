//! Routing: one request to its verb on its resource, through authentication, the fault gate
//! and authorization.

use super::*;

pub(super) fn full(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("valid response")
}

pub(super) fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
    let mut r = full(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    );
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(h) = header::HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

pub(super) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status(), &[]);
    if let Some(secs) = e.retry_after_seconds {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    r
}

/// `GET /openapi/v2`: the gnostic protobuf when asked for it (kubectl always is), else JSON.
fn openapi_v2<B>(req: &Request<B>) -> Response<Body> {
    let docs = openapi::documents();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains(openapi::V2_PROTOBUF) {
        full(
            200,
            openapi::V2_PROTOBUF_CONTENT_TYPE,
            docs.v2_protobuf.clone(),
        )
    } else {
        full(200, "application/json", docs.v2_json.clone())
    }
}

pub(super) fn page_not_found() -> Response<Body> {
    full(404, "text/plain; charset=utf-8", "404 page not found\n")
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let token = bearer(req.headers());
    let path = req.uri().path().to_string();
    let is_admin_path = path.starts_with("/kubesim/");
    if !is_admin_path {
        shared
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let is_write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        match shared.faults.gate(token.as_deref(), is_write).await {
            Verdict::Proceed => {}
            Verdict::Fail(e) => return Ok(error_response(&e)),
            Verdict::Drop => {
                return Err(std::io::Error::other(
                    "connection dropped by fault injection",
                ));
            }
        }
    }
    let user = match authenticate(&shared, token.as_deref()) {
        Ok(u) => u,
        Err(e) => return Ok(error_response(&e)),
    };
    if is_admin_path {
        if user != User::Admin {
            return Ok(error_response(&ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!(
                    "forbidden: User \"{}\" cannot {} path \"{path}\"",
                    user.name(),
                    req.method().as_str().to_lowercase()
                ),
                details: None,
                retry_after_seconds: None,
            }));
        }
        return Ok(admin(&shared, req).await);
    }
    Ok(route(shared, user, token, req)
        .await
        .unwrap_or_else(|e| error_response(&e)))
}

/// `kubectl auth can-i`: a SelfSubjectAccessReview answers whether the requester may do
/// what it names (the same RBAC evaluation as every request), a SelfSubjectRulesReview lists
/// the rules it holds in a namespace. Nothing is stored; anyone authenticated may ask.
async fn self_subject_review(
    shared: &Arc<Shared>,
    user: &User,
    kind: &str,
    method: &Method,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if kind != "selfsubjectaccessreviews" && kind != "selfsubjectrulesreviews" {
        return Ok(page_not_found());
    }
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let (headers, body) = read_body(shared, req).await?;
    let review = decode_write_body(&headers, &body)?;
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let store = shared.store.read().expect("store lock");
    let (kind_name, status) = if kind == "selfsubjectaccessreviews" {
        let allowed = match spec.get("resourceAttributes") {
            Some(ra) => {
                let s = |k: &str| {
                    ra.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                match rbac::known_verb(&s("verb")) {
                    None => false,
                    Some(verb) => rbac::authorize(
                        &store,
                        user,
                        &Attributes {
                            verb,
                            group: s("group"),
                            resource: s("resource"),
                            subresource: s("subresource"),
                            namespace: s("namespace"),
                            name: s("name"),
                        },
                    )
                    .is_ok(),
                }
            }
            // Non-resource URLs (`/healthz`, `/version`, …) are open to every user here.
            None => spec.get("nonResourceAttributes").is_some(),
        };
        (
            "SelfSubjectAccessReview",
            if allowed {
                json!({"allowed": true, "reason": "allowed by kubesim's RBAC"})
            } else {
                json!({"allowed": false})
            },
        )
    } else {
        let ns = spec
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        (
            "SelfSubjectRulesReview",
            json!({
                "resourceRules": rbac::rules_in(&store, user, ns),
                "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            }),
        )
    };
    Ok(json_response(
        201,
        &json!({
            "kind": kind_name,
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status,
        }),
        &[],
    ))
}

pub(super) async fn route(
    shared: Arc<Shared>,
    user: User,
    token: Option<String>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let q = parse_query(req.uri().query());
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = if segs.last() == Some(&"") && segs.len() > 1 {
        segs[..segs.len() - 1].to_vec()
    } else {
        segs
    };
    let (group, version, rest): (&str, &str, Vec<&str>) = match segs.as_slice() {
        ["version"] => return Ok(json_response(200, &discovery::version(), &[])),
        ["healthz"] | ["livez"] | ["readyz"] => {
            return Ok(full(200, "text/plain; charset=utf-8", "ok"));
        }
        ["api"] => {
            return Ok(json_response(
                200,
                &discovery::api_versions(&shared.server_address),
                &[],
            ));
        }
        ["apis"] => return Ok(json_response(200, &discovery::api_group_list(), &[])),
        ["openapi", "v2"] => return Ok(openapi_v2(&req)),
        ["openapi", "v3"] => {
            return Ok(full(
                200,
                "application/json",
                openapi::documents().v3_index.clone(),
            ));
        }
        ["openapi", "v3", gv @ ..] => {
            return Ok(match openapi::documents().v3.get(&gv.join("/")) {
                Some((hash, body)) => {
                    let mut r = full(200, "application/json", body.clone());
                    // The URL names the content by its hash (the index hands it out): a
                    // client may keep it, as with the real server.
                    if q.get("hash") == Some(hash) {
                        r.headers_mut().insert(
                            header::CACHE_CONTROL,
                            header::HeaderValue::from_static("public, immutable"),
                        );
                    }
                    r
                }
                None => page_not_found(),
            });
        }
        ["apis", g] => {
            return Ok(discovery::api_group(g)
                .map(|v| json_response(200, &v, &[]))
                .unwrap_or_else(page_not_found));
        }
        ["api", "v1"] => return Ok(json_response(200, &discovery::resource_list("", "v1"), &[])),
        ["apis", g, v] if discovery::serves(g, v) => {
            return Ok(json_response(200, &discovery::resource_list(g, v), &[]));
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest.to_vec()),
        ["apis", "authorization.k8s.io", "v1", kind] => {
            let kind = kind.to_string();
            return self_subject_review(&shared, &user, &kind, &method, req).await;
        }
        ["apis", g, v, rest @ ..] if discovery::serves(g, v) => (g, v, rest.to_vec()),
        _ => return Ok(page_not_found()),
    };
    let target = parse_resource_path(group, version, &rest)?;
    let rt = target.rt;
    let is_collection = target.name.is_empty();
    let watch = parse_bool(q.get("watch").map(String::as_str).unwrap_or_default()).unwrap_or(false);
    let verb: &'static str = match (&method, is_collection, target.subresource.as_str()) {
        (&Method::GET, true, _) if watch => "watch",
        (&Method::GET, true, _) => "list",
        (&Method::GET, false, "token") => return Err(ApiError::method_not_allowed("GET")),
        (&Method::GET, false, _) => "get",
        (&Method::POST, true, _) => "create",
        (&Method::POST, false, "token") => "create",
        (&Method::PUT, false, s) if s != "token" => "update",
        (&Method::PATCH, false, s) if s != "token" => "patch",
        (&Method::DELETE, false, "") => "delete",
        (&Method::DELETE, true, _) if rt.kind != "Namespace" => "deletecollection",
        (m, _, _) => return Err(ApiError::method_not_allowed(m.as_str())),
    };
    if rt.namespaced && target.namespace.is_empty() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let list_opts = if matches!(verb, "list" | "watch" | "deletecollection") {
        Some(list_options(&q)?)
    } else {
        None
    };
    // A list or watch pinned to one name is authorised by that name, as RequestInfo does.
    let auth_name = match &list_opts {
        Some(o) if verb != "deletecollection" => {
            o.fields.pinned_name().unwrap_or_default().to_string()
        }
        _ => target.name.clone(),
    };
    let ns = if rt.namespaced {
        target.namespace.clone()
    } else {
        String::new()
    };
    {
        let store = shared.store.read().expect("store lock");
        rbac::authorize(
            &store,
            &user,
            &Attributes {
                verb,
                group: rt.group.to_string(),
                resource: rt.plural.to_string(),
                subresource: target.subresource.clone(),
                namespace: if !rt.namespaced {
                    String::new()
                } else {
                    ns.clone()
                },
                name: auth_name,
            },
        )?;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let as_table = crate::table::wants_table(accept);
    let part = if target.subresource == "status" {
        Part::Status
    } else {
        Part::Main
    };
    match verb {
        "get" if target.subresource == "log" => {
            let pod = {
                let store = shared.store.read().expect("store lock");
                api::get(&store, rt, &ns, &target.name)?
            };
            super::logs::pod_log(&shared, &pod, &q).await
        }
        "get" => {
            let store = shared.store.read().expect("store lock");
            let obj = api::get(&store, rt, &ns, &target.name)?;
            if as_table {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"].clone()});
                return Ok(json_response(
                    200,
                    &crate::table::table(rt, &[obj], meta, true),
                    &[],
                ));
            }
            Ok(json_response(200, &obj, &[]))
        }
        "list" => {
            let opts = list_opts.expect("parsed for list");
            let sie = q.get("sendInitialEvents").and_then(|s| parse_bool(s));
            api::validate_list_options(&opts, false, sie)?;
            let store = shared.store.read().expect("store lock");
            let ns_filter = rt
                .namespaced
                .then_some(ns.as_str())
                .filter(|n| !n.is_empty());
            let list = api::list(&store, rt, ns_filter, &opts)?;
            if as_table {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let t = crate::table::table(rt, &items, list["metadata"].clone(), true);
                return Ok(json_response(200, &t, &[]));
            }
            Ok(json_response(200, &list, &[]))
        }
        "watch" => {
            let opts = list_opts.expect("parsed for watch");
            let sie = q.get("sendInitialEvents").and_then(|s| parse_bool(s));
            api::validate_list_options(&opts, true, sie)?;
            for t in &opts.fields.0 {
                rt.check_field(&t.field)?;
            }
            let bookmarks = q
                .get("allowWatchBookmarks")
                .and_then(|s| parse_bool(s))
                .unwrap_or(false);
            let timeout =
                match q.get("timeoutSeconds").map(String::as_str) {
                    None | Some("") => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
                    Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds: {t}"))
                    })?),
                };
            let ns_filter = (rt.namespaced && !ns.is_empty()).then(|| ns.clone());
            start_watch(
                shared,
                WatchSpec {
                    rt,
                    ns: ns_filter,
                    opts,
                    send_initial_events: sie,
                    bookmarks,
                    timeout,
                    token,
                    as_table,
                },
            )
        }
        "create" if target.subresource == "token" => {
            let (headers, body) = read_body(&shared, req).await?;
            let b = if body.is_empty() {
                json!({})
            } else {
                decode_write_body(&headers, &body)?
            };
            let exp = b
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            // The real server's validation (pkg/apis/authentication/validation): at least ten
            // minutes, at most 2^32 seconds.
            let too = if exp < 600 {
                Some("may not specify a duration less than 10 minutes")
            } else if exp > MAX_TOKEN_EXPIRATION_SECS {
                Some("may not specify a duration larger than 2^32 seconds")
            } else {
                None
            };
            if let Some(why) = too {
                return Err(ApiError::invalid(
                    "TokenRequest.authentication.k8s.io",
                    "authentication.k8s.io",
                    "TokenRequest",
                    &target.name,
                    vec![crate::status::Cause::invalid(
                        "spec.expirationSeconds",
                        &json!(exp),
                        why,
                    )],
                ));
            }
            let mut store = shared.store.write().expect("store lock");
            let tok = issue_token(&mut store, &ns, &target.name, exp)?;
            let audiences = b
                .pointer("/spec/audiences")
                .cloned()
                .unwrap_or(json!(["https://kubernetes.default.svc.cluster.local"]));
            Ok(json_response(
                201,
                &json!({
                    "kind": "TokenRequest",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"name": target.name, "namespace": ns, "creationTimestamp": null},
                    "spec": {"audiences": audiences, "expirationSeconds": exp, "boundObjectRef": null},
                    "status": {"token": tok, "expirationTimestamp": util::time_in(exp)},
                }),
                &[],
            ))
        }
        "create" => {
            let opts = write_options(&q, "CreateOptions")?;
            let (headers, body) = read_body(&shared, req).await?;
            let body = decode_write_body(&headers, &body)?;
            let mut store = shared.store.write().expect("store lock");
            let out = api::create(&mut store, rt, &ns, body, &opts)?;
            Ok(json_response(out.code, &out.body, &out.warnings))
        }
        "update" => {
            let opts = write_options(&q, "UpdateOptions")?;
            let (headers, body) = read_body(&shared, req).await?;
            let body = decode_write_body(&headers, &body)?;
            let mut store = shared.store.write().expect("store lock");
            let out = api::update(&mut store, rt, &ns, &target.name, body, part, &opts)?;
            Ok(json_response(out.code, &out.body, &out.warnings))
        }
        "patch" => {
            let opts = write_options(&q, "PatchOptions")?;
            let (headers, body) = read_body(&shared, req).await?;
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let ptype = PatchType::from_content_type(&ct)
                .ok_or_else(|| ApiError::unsupported_patch_type(&ct))?;
            let body = if ptype == PatchType::Apply {
                serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!(
                    "error decoding YAML: {e} (kubesim accepts the JSON form of apply patches, which is what kube-rs and kubectl send)"
                )))?
            } else {
                parse_json(&body)?
            };
            let mut store = shared.store.write().expect("store lock");
            let out = api::patch(&mut store, rt, &ns, &target.name, ptype, body, part, &opts)?;
            Ok(json_response(out.code, &out.body, &out.warnings))
        }
        "delete" => {
            let (_, body) = read_body(&shared, req).await?;
            let opts = delete_options(&q, &body)?;
            let mut store = shared.store.write().expect("store lock");
            let out = api::delete(&mut store, rt, &ns, &target.name, &opts)?;
            Ok(json_response(out.code, &out.body, &out.warnings))
        }
        "deletecollection" => {
            let (_, body) = read_body(&shared, req).await?;
            let del = delete_options(&q, &body)?;
            let opts = list_opts.expect("parsed for deletecollection");
            let mut store = shared.store.write().expect("store lock");
            Ok(json_response(
                200,
                &api::delete_collection(&mut store, rt, &ns, &opts, &del)?,
                &[],
            ))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}
