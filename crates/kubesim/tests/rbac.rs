//! A service-account token is allowed exactly what its Role grants, and nothing once the
//! account, binding or token is gone.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/ns";

async fn setup(s: &Sim) -> String {
    assert_eq!(
        s.post(
            "/api/v1/namespaces/ns/serviceaccounts",
            json!({"metadata":{"name":"sa1"}})
        )
        .await
        .code,
        201
    );
    let role = json!({"metadata":{"name":"r1"},"rules":[
        {"apiGroups":["coordination.k8s.io"],"resources":["leases"],"verbs":["get","update"],"resourceNames":["l1"]},
        {"apiGroups":["coordination.k8s.io"],"resources":["leases"],"verbs":["list","watch"]},
        {"apiGroups":[""],"resources":["pods/status"],"verbs":["patch"]},
    ]});
    assert_eq!(s.post(&format!("{RBAC}/roles"), role).await.code, 201);
    let binding = json!({"metadata":{"name":"b1"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"r1"},
        "subjects":[{"kind":"ServiceAccount","name":"sa1","namespace":"ns"}]});
    assert_eq!(
        s.post(&format!("{RBAC}/rolebindings"), binding).await.code,
        201
    );
    let r = s
        .post(
            "/api/v1/namespaces/ns/serviceaccounts/sa1/token",
            json!({"spec":{"expirationSeconds":3600}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["kind"], "TokenRequest");
    r.body["status"]["token"].as_str().unwrap().to_string()
}

async fn as_sa(
    s: &Sim,
    tok: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    ct: &str,
) -> Resp {
    s.req_as(Some(tok), method, path, body, ct).await
}

#[tokio::test]
async fn role_grants_exactly_its_rules() {
    let s = Sim::new().await;
    let l1 = s.lease("l1", "a").await;
    s.lease("l2", "a").await;
    s.pod("p1", json!({})).await;
    let tok = setup(&s).await;

    // Granted.
    assert_eq!(
        as_sa(&s, &tok, "GET", &format!("{L}/l1"), None, "")
            .await
            .code,
        200
    );
    assert_eq!(as_sa(&s, &tok, "GET", L, None, "").await.code, 200);
    let mut upd = l1.clone();
    upd["spec"]["holderIdentity"] = json!("sa");
    assert_eq!(
        as_sa(
            &s,
            &tok,
            "PUT",
            &format!("{L}/l1"),
            Some(upd),
            "application/json"
        )
        .await
        .code,
        200
    );
    let st = as_sa(
        &s,
        &tok,
        "PATCH",
        &format!("{PODS}/p1/status"),
        Some(json!({"status":{"phase":"Running"}})),
        "application/merge-patch+json",
    )
    .await;
    assert_eq!(st.code, 200, "{}", st.body);

    // Refused, with the real message shape.
    let r = as_sa(&s, &tok, "GET", &format!("{L}/l2"), None, "").await;
    assert_eq!(r.code, 403);
    assert_eq!(r.body["reason"], "Forbidden");
    assert_eq!(
        r.body["message"],
        "leases.coordination.k8s.io \"l2\" is forbidden: User \"system:serviceaccount:ns:sa1\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"ns\""
    );
    assert_eq!(
        r.body["details"],
        json!({"name":"l2","group":"coordination.k8s.io","kind":"leases"})
    );
    for (method, path, body, ct) in [
        (
            "POST",
            L.to_string(),
            Some(json!({"metadata":{"name":"l3"}})),
            "application/json",
        ),
        ("DELETE", format!("{L}/l1"), None, ""),
        (
            "PATCH",
            format!("{L}/l1"),
            Some(json!({})),
            "application/merge-patch+json",
        ),
        (
            "PATCH",
            format!("{PODS}/p1"),
            Some(json!({})),
            "application/merge-patch+json",
        ),
        ("GET", PODS.to_string(), None, ""),
        (
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases".to_string(),
            None,
            "",
        ),
        ("GET", "/api/v1/namespaces".to_string(), None, ""),
    ] {
        let r = as_sa(&s, &tok, method, &path, body, ct).await;
        assert_eq!(r.code, 403, "{method} {path}: {}", r.body);
    }
    let r = as_sa(&s, &tok, "GET", PODS, None, "").await;
    assert_eq!(
        r.body["message"],
        "pods is forbidden: User \"system:serviceaccount:ns:sa1\" cannot list resource \"pods\" in API group \"\" in the namespace \"ns\""
    );
    let r = as_sa(&s, &tok, "GET", "/api/v1/namespaces", None, "").await;
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .ends_with("at the cluster scope"),
        "{}",
        r.body
    );
    // Discovery and version are open to every authenticated user, the admin API is not.
    assert_eq!(as_sa(&s, &tok, "GET", "/apis", None, "").await.code, 200);
    assert_eq!(as_sa(&s, &tok, "GET", "/version", None, "").await.code, 200);
    assert_eq!(
        as_sa(&s, &tok, "GET", "/kubesim/v1/faults", None, "")
            .await
            .code,
        403
    );
}

#[tokio::test]
async fn watch_is_authorised_and_pinned_names_use_resource_names() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let tok = setup(&s).await;
    // A role that may only get/watch l1 by name: a pinned watch passes, an unpinned one does not.
    let role = json!({"metadata":{"name":"r2"},"rules":[{"apiGroups":["coordination.k8s.io"],"resources":["leases"],"verbs":["watch","list"],"resourceNames":["l1"]}]});
    assert_eq!(s.post(&format!("{RBAC}/roles"), role).await.code, 201);
    assert_eq!(
        s.post(
            "/api/v1/namespaces/ns/serviceaccounts",
            json!({"metadata":{"name":"sa2"}})
        )
        .await
        .code,
        201
    );
    let binding = json!({"metadata":{"name":"b2"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"r2"},
        "subjects":[{"kind":"ServiceAccount","name":"sa2","namespace":"ns"}]});
    assert_eq!(
        s.post(&format!("{RBAC}/rolebindings"), binding).await.code,
        201
    );
    let tok2 = s
        .server
        .issue_token("ns", "sa2", Duration::from_secs(600))
        .unwrap();
    let pinned = as_sa(
        &s,
        &tok2,
        "GET",
        &format!("{L}?fieldSelector=metadata.name%3Dl1"),
        None,
        "",
    )
    .await;
    assert_eq!(pinned.code, 200, "{}", pinned.body);
    assert_eq!(as_sa(&s, &tok2, "GET", L, None, "").await.code, 403);
    assert_eq!(
        as_sa(
            &s,
            &tok,
            "GET",
            &format!("{L}?watch=true&timeoutSeconds=1"),
            None,
            ""
        )
        .await
        .code,
        200
    );
}

#[tokio::test]
async fn rule_changes_apply_at_once_and_dead_tokens_get_401() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let tok = setup(&s).await;
    assert_eq!(
        as_sa(&s, &tok, "GET", &format!("{L}/l1"), None, "")
            .await
            .code,
        200
    );
    // Remove the rule that grants get.
    let r = s
        .req(
            "PATCH",
            &format!("{RBAC}/roles/r1"),
            Some(json!([{"op":"remove","path":"/rules/0"}])),
            "application/json-patch+json",
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(
        as_sa(&s, &tok, "GET", &format!("{L}/l1"), None, "")
            .await
            .code,
        403
    );
    // A binding to a ClusterRole grants nothing here (no ClusterRoles are served).
    let binding = json!({"metadata":{"name":"cr"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"admin"},
        "subjects":[{"kind":"ServiceAccount","name":"sa1","namespace":"ns"}]});
    assert_eq!(
        s.post(&format!("{RBAC}/rolebindings"), binding).await.code,
        201
    );
    assert_eq!(
        as_sa(&s, &tok, "GET", &format!("{L}/l1"), None, "")
            .await
            .code,
        403
    );
    // An expired token and a token of a deleted account are unauthenticated.
    let expired = s.server.issue_token("ns", "sa1", Duration::ZERO).unwrap();
    assert_eq!(as_sa(&s, &expired, "GET", L, None, "").await.code, 401);
    assert_eq!(
        s.delete("/api/v1/namespaces/ns/serviceaccounts/sa1")
            .await
            .code,
        200
    );
    assert_eq!(as_sa(&s, &tok, "GET", L, None, "").await.code, 401);
    // A recreated account with the same name does not revive the old token (bound to the UID).
    assert_eq!(
        s.post(
            "/api/v1/namespaces/ns/serviceaccounts",
            json!({"metadata":{"name":"sa1"}})
        )
        .await
        .code,
        201
    );
    assert_eq!(as_sa(&s, &tok, "GET", L, None, "").await.code, 401);
}

#[tokio::test]
async fn token_requests_are_validated() {
    let s = Sim::new().await;
    let r = s
        .post(
            "/api/v1/namespaces/ns/serviceaccounts/nobody/token",
            json!({"spec":{}}),
        )
        .await;
    assert_eq!(r.code, 404);
    assert_eq!(r.body["message"], "serviceaccounts \"nobody\" not found");
    let r = s
        .post(
            "/api/v1/namespaces/ns/serviceaccounts/default/token",
            json!({"spec":{"expirationSeconds":60}}),
        )
        .await;
    assert_eq!(r.code, 422);
    // Every namespace has a `default` account.
    let r = s
        .post(
            "/api/v1/namespaces/ns/serviceaccounts/default/token",
            json!({"spec":{}}),
        )
        .await;
    assert_eq!(r.code, 201);
}
