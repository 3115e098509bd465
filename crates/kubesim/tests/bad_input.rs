//! Bad input gets the real server's answer: never a panic, a hang or a dropped connection.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn assert_status(r: &Resp, code: u16, reason: &str) {
    assert_eq!(r.code, code, "{}", r.body);
    assert_eq!(r.body["kind"], "Status", "{}", r.body);
    assert_eq!(r.body["code"], code);
    assert_eq!(r.body["reason"], reason, "{}", r.body);
}

async fn raw(s: &Sim, method: &str, path: &str, body: Vec<u8>, ct: &str) -> Resp {
    let r = s
        .http
        .request(method.parse().unwrap(), format!("{}{path}", s.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .expect("answered, not dropped");
    let code = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        code,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

#[tokio::test]
async fn malformed_bodies() {
    let s = Sim::new().await;
    assert_status(
        &raw(&s, "POST", L, b"{not json".to_vec(), "application/json").await,
        400,
        "BadRequest",
    );
    assert_status(
        &raw(&s, "POST", L, b"".to_vec(), "application/json").await,
        400,
        "BadRequest",
    );
    assert_status(&s.post(L, json!([1, 2])).await, 400, "BadRequest");
    assert_status(
        &s.post(
            L,
            json!({"metadata":{"name":"x"},"spec":{"leaseDurationSeconds":"ten"}}),
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(&s.post(L, json!({"metadata":"x"})).await, 400, "BadRequest");
    assert_status(
        &raw(&s, "POST", L, b"{}".to_vec(), "application/xml").await,
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        &raw(
            &s,
            "POST",
            L,
            b"k8s\0garbage".to_vec(),
            "application/vnd.kubernetes.protobuf",
        )
        .await,
        400,
        "BadRequest",
    );
}

#[tokio::test]
async fn wrong_kind_and_version() {
    let s = Sim::new().await;
    let r = s
        .post(
            L,
            json!({"apiVersion":"v1","kind":"Lease","metadata":{"name":"x"}}),
        )
        .await;
    assert_status(&r, 400, "BadRequest");
    assert_eq!(
        r.body["message"],
        "the API version in the data (v1) does not match the expected API version (coordination.k8s.io/v1)"
    );
    let r = s
        .post(
            L,
            json!({"apiVersion":"coordination.k8s.io/v1","kind":"Pod","metadata":{"name":"x"}}),
        )
        .await;
    assert_status(&r, 400, "BadRequest");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Pod in version \"v1\" cannot be handled as a Lease")
    );
}

#[tokio::test]
async fn invalid_names_and_labels() {
    let s = Sim::new().await;
    let r = s
        .post(
            SVCS,
            json!({"metadata":{"name":"a.b"},"spec":{"ports":[{"port":80}]}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    let r = s
        .post(
            L,
            json!({"metadata":{"name":"ok","labels":{"bad key":"v"}}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    let r = s
        .post(
            L,
            json!({"metadata":{"name":"ok","labels":{"k":"bad value!"}}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    let r = s.post(L, json!({"metadata":{}})).await;
    assert_status(&r, 422, "Invalid");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("name or generateName is required")
    );
    let r = s
        .post("/api/v1/namespaces", json!({"metadata":{"name":"a.b"}}))
        .await;
    assert_status(&r, 422, "Invalid");
}

#[tokio::test]
async fn oversized_body_is_413_and_server_lives_on() {
    let s = Sim::new().await;
    let big = format!(
        "{{\"metadata\":{{\"name\":\"x\"}},\"pad\":\"{}\"}}",
        "a".repeat(3 * 1024 * 1024 + 10)
    );
    let r = raw(&s, "POST", L, big.into_bytes(), "application/json").await;
    assert_status(&r, 413, "RequestEntityTooLarge");
    assert_eq!(s.get(L).await.code, 200);
    // Just under the limit is decoded (and the unknown field reported, not fatal).
    let ok = format!(
        "{{\"metadata\":{{\"name\":\"x\"}},\"pad\":\"{}\"}}",
        "a".repeat(1024 * 1024)
    );
    let r = raw(&s, "POST", L, ok.into_bytes(), "application/json").await;
    assert_eq!(r.code, 201);
    assert_eq!(
        r.headers.get("warning").unwrap(),
        "299 - \"unknown field \\\"pad\\\"\""
    );
}

#[tokio::test]
async fn unknown_resources_paths_and_methods() {
    let s = Sim::new().await;
    let r = s.get("/api/v1/namespaces/ns/widgets").await;
    assert_status(&r, 404, "NotFound");
    assert_eq!(
        r.body["message"],
        "the server could not find the requested resource"
    );
    let r = s.get("/api/v1/namespaces/ns/pods/p/log").await;
    assert_status(&r, 404, "NotFound");
    let r = s.get("/nothing/here").await;
    assert_eq!(r.code, 404);
    assert_eq!(r.body, Value::String("404 page not found\n".into()));
    assert_eq!(s.get("/apis/example.com/v1/things").await.code, 404);
    assert_status(
        &s.req("PUT", L, Some(json!({})), "application/json").await,
        405,
        "MethodNotAllowed",
    );
    assert_status(
        &s.req(
            "POST",
            &format!("{L}/x"),
            Some(json!({})),
            "application/json",
        )
        .await,
        405,
        "MethodNotAllowed",
    );
    assert_status(
        &s.req("DELETE", "/api/v1/namespaces", None, "").await,
        405,
        "MethodNotAllowed",
    );
    let r = s
        .post(
            "/api/v1/namespaces/missing/pods",
            json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}}),
        )
        .await;
    assert_status(&r, 404, "NotFound");
    assert_eq!(r.body["message"], "namespaces \"missing\" not found");
    // A list in a missing namespace is empty, not 404.
    assert_eq!(s.get("/api/v1/namespaces/missing/pods").await.code, 200);
}

#[tokio::test]
async fn bad_selectors_and_resource_versions() {
    let s = Sim::new().await;
    assert_status(
        &s.get(&format!("{PODS}?labelSelector=a%20in%20(b")).await,
        400,
        "BadRequest",
    );
    assert_status(
        &s.get(&format!("{PODS}?fieldSelector=nonsense")).await,
        400,
        "BadRequest",
    );
    assert_status(
        &s.get(&format!("{L}?fieldSelector=spec.holderIdentity%3Dx"))
            .await,
        400,
        "BadRequest",
    );
    assert_status(
        &s.get(&format!("{L}?resourceVersion=abc")).await,
        400,
        "BadRequest",
    );
    assert_status(
        &s.get(&format!("{L}?watch=true&resourceVersion=abc")).await,
        400,
        "BadRequest",
    );
    assert_status(&s.get(&format!("{L}?limit=x")).await, 400, "BadRequest");
    assert_status(&s.get(&format!("{L}?continue=zz")).await, 400, "BadRequest");
    assert_status(
        &s.get(&format!("{L}?resourceVersion=0&resourceVersionMatch=Exact"))
            .await,
        422,
        "Invalid",
    );
    assert_status(
        &s.get(&format!(
            "{L}?resourceVersion=1&resourceVersionMatch=Sometimes"
        ))
        .await,
        422,
        "Invalid",
    );
    let l = s.lease("l1", "a").await;
    let mut body = l;
    body["metadata"]["resourceVersion"] = json!("abc");
    assert_status(&s.put(&format!("{L}/l1"), body).await, 400, "BadRequest");
    assert_status(
        &s.post(
            &format!("{L}?dryRun=Some"),
            json!({"metadata":{"name":"d"}}),
        )
        .await,
        422,
        "Invalid",
    );
    assert_status(
        &s.post(
            &format!("{L}?fieldValidation=Loose"),
            json!({"metadata":{"name":"d"}}),
        )
        .await,
        400,
        "BadRequest",
    );
    let r = s
        .post(
            &format!("{L}?fieldValidation=Strict"),
            json!({"metadata":{"name":"d"},"spec":{"nope":1}}),
        )
        .await;
    assert_status(&r, 400, "BadRequest");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.nope\"")
    );
    // A too-new resourceVersion on a list answers at once rather than hanging.
    let r = s
        .get(&format!(
            "{L}?resourceVersion=99999999&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(r.code, 504);
}

#[tokio::test]
async fn namespace_mismatch_and_pod_spec_immutability() {
    let s = Sim::new().await;
    let r = s
        .post(L, json!({"metadata":{"name":"x","namespace":"other"}}))
        .await;
    assert_status(&r, 400, "BadRequest");
    s.pod("p1", json!({})).await;
    let r = s
        .strategic(
            &format!("{PODS}/p1"),
            json!({"spec":{"restartPolicy":"Never"}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    let r = s
        .strategic(
            &format!("{PODS}/p1"),
            json!({"spec":{"containers":[{"name":"c","image":"redis:8"}]}}),
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["generation"], 2);
}

#[test]
fn random_requests_always_get_an_answer() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(Sim::new());
    rt.block_on(s.lease("l1", "a"));
    let methods = prop::sample::select(vec![
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS",
    ]);
    let prefixes = prop::sample::select(vec![
        "/api/v1/namespaces/ns/pods",
        "/apis/coordination.k8s.io/v1/namespaces/ns/leases",
        "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l1",
        "/api/v1/namespaces",
        "/apis/events.k8s.io/v1/namespaces/ns/events",
        "/api/v1",
        "/apis",
        "/",
    ]);
    let content_types = prop::sample::select(vec![
        "application/json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
    ]);
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // Every query parameter the server reads, with values from the plausible to the absurd
    // (issue 17: one timeoutSeconds aborted the server).
    let param_names = prop::sample::select(vec![
        "watch",
        "timeoutSeconds",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "labelSelector",
        "fieldSelector",
        "allowWatchBookmarks",
        "sendInitialEvents",
        "dryRun",
        "fieldManager",
        "force",
        "propagationPolicy",
        "gracePeriodSeconds",
        "fieldValidation",
        "pretty",
    ]);
    let param_values = prop_oneof![
        Just(String::new()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("9223372036854775807".to_string()),
        Just("1e400".to_string()),
        Just("%FF%FE".to_string()),
        "[0-9]{1,22}",
        "[a-zA-Z0-9=,!()%.-]{0,16}",
    ];
    let query = prop::collection::vec((param_names, param_values), 0..5);
    proptest!(config, |(method in methods, prefix in prefixes, suffix in "[a-z0-9/%.?&=_-]{0,24}",
                        query in query,
                        ct in content_types, body in proptest::collection::vec(any::<u8>(), 0..64),
                        json_body in prop::option::of(prop::sample::select(vec![
                            json!({}), json!([]), json!(null), json!({"metadata": 5}),
                            json!({"metadata": {"name": "l1", "resourceVersion": "1"}}),
                            json!([{"op": "remove", "path": "/spec"}]),
                        ])))| {
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path = if query.is_empty() {
            format!("{prefix}{suffix}")
        } else {
            format!("{prefix}{suffix}?{}", query.join("&"))
        };
        let bytes = match &json_body { Some(j) => serde_json::to_vec(j).unwrap(), None => body };
        let r = rt.block_on(async {
            s.http
                .request(method.parse().unwrap(), format!("{}{path}", s.base))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .header("Content-Type", ct)
                .body(bytes)
                .send()
                .await
        });
        let r = r.map_err(|e| TestCaseError::fail(format!("{method} {path}: no answer: {e}")))?;
        let code = r.status().as_u16();
        let is_head = method == "HEAD";
        let text = rt.block_on(r.text()).unwrap();
        // The only 5xx answers the real server gives to bad input: the storage layer's 500 for a
        // resourceVersion on create, and 504 for a resourceVersion from the future.
        let allowed_5xx = code == 504 || text.contains("resourceVersion should not be set on objects to be created");
        prop_assert!(code < 500 || allowed_5xx, "{method} {path} -> {code}: {text}");
        if code >= 400 && !is_head && text != "404 page not found\n" {
            let v: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(&v["kind"], "Status");
            prop_assert_eq!(v["code"].as_u64(), Some(u64::from(code)));
        }
    });
    // The server still works after all that.
    assert_eq!(rt.block_on(s.get(L)).code, 200);
}

/// Durations from requests never overflow the server (issue 17: one watch with
/// `timeoutSeconds=18446744073709551615` aborted the whole process, taking every pod under
/// `local` with it; `expirationSeconds=i64::MAX` made a token expired at birth).
#[tokio::test]
async fn huge_durations_in_requests_are_answered_as_the_real_server_does() {
    let s = Sim::new().await;
    // The longest watch a client can ask for: a stream that stays open (200), and the server
    // answers other requests meanwhile.
    let watch = s
        .http
        .get(format!(
            "{}{L}?watch=1&timeoutSeconds=18446744073709551615",
            s.base
        ))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .expect("the watch is answered");
    assert_eq!(watch.status().as_u16(), 200);
    let mut watch = watch;
    // No lease exists, so nothing is sent; a stream that ends at once is a watch whose task
    // died (in a release build, with panic = "abort", the whole server would have).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(1), watch.chunk()).await;
    assert!(ended.is_err(), "the watch ended at once: {ended:?}");
    assert_eq!(s.get(L).await.code, 200, "the server lives on");
    drop(watch);
    // Negative and non-numeric timeouts: 400, as ever.
    assert_status(
        &s.get(&format!("{L}?watch=1&timeoutSeconds=-1")).await,
        400,
        "BadRequest",
    );

    // TokenRequest: beyond 2^32 seconds is invalid (422, the real text); 2^32 itself is a
    // working token.
    let sa = s
        .post(
            "/api/v1/namespaces/ns/serviceaccounts",
            json!({"metadata": {"name": "app"}}),
        )
        .await;
    assert_eq!(sa.code, 201, "{}", sa.body);
    let path = "/api/v1/namespaces/ns/serviceaccounts/app/token";
    let r = s
        .post(
            path,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": i64::MAX}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("may not specify a duration larger than 2^32 seconds"),
        "{}",
        r.body
    );
    let r = s
        .post(
            path,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": 1i64 << 32}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let token = r.body["status"]["token"].as_str().unwrap().to_string();
    // The token works (it is not expired at birth): the service account may at least ask
    // who it is allowed to be, and is not refused as unauthenticated.
    let who = s
        .req_as(Some(&token), "GET", "/api/v1/namespaces/ns/pods", None, "")
        .await;
    assert_ne!(who.code, 401, "a fresh token was refused: {}", who.body);
}
