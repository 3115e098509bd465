//! The conformance checklist of `shared/reference/kube-api-subset.md` section 12, one test per
//! item, named after its number. Each test starts its own server on an ephemeral port.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn is_failure_status(v: &Value, code: u16) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["metadata"], json!({}), "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
}

#[tokio::test]
async fn c01_version() {
    let s = Sim::new().await;
    let r = s.get("/version").await;
    assert_eq!(r.code, 200);
    for k in [
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    ] {
        assert!(
            r.body[k].as_str().is_some_and(|v| !v.is_empty()),
            "{k} in {}",
            r.body
        );
    }
}

#[tokio::test]
async fn c02_missing_or_wrong_token_is_401() {
    let s = Sim::new().await;
    let want = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401});
    for token in [None, Some("wrong")] {
        let r = s.req_as(token, "GET", &format!("{L}/x"), None, "").await;
        assert_eq!(r.code, 401);
        assert_eq!(r.body, want);
    }
}

#[tokio::test]
async fn c03_lowercase_bearer_scheme() {
    let s = Sim::new().await;
    let r = s
        .http
        .get(format!("{}{L}", s.base))
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn c04_create_lease() {
    let s = Sim::new().await;
    let r = s
        .post(&format!("{L}?"), json!({"metadata":{"name":"l1"},"spec":{"holderIdentity":"a","leaseDurationSeconds":15}}))
        .await;
    assert_eq!(r.code, 201);
    let m = &r.body["metadata"];
    assert!(m["uid"].as_str().is_some_and(|u| u.len() == 36));
    let ts = m["creationTimestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 20, "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    assert!(
        m["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(m["namespace"], "ns");
}

#[tokio::test]
async fn c05_create_existing_is_already_exists() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let r = s.post(L, json!({"metadata":{"name":"l1"}})).await;
    assert_eq!(r.code, 409);
    is_failure_status(&r.body, 409);
    assert_eq!(r.body["reason"], "AlreadyExists");
    assert_eq!(
        r.body["details"],
        json!({"name":"l1","group":"coordination.k8s.io","kind":"leases"})
    );
    assert_eq!(
        r.body["message"],
        "leases.coordination.k8s.io \"l1\" already exists"
    );
}

#[tokio::test]
async fn c06_not_found_messages() {
    let s = Sim::new().await;
    let r = s.get(&format!("{L}/missing")).await;
    assert_eq!(r.code, 404);
    assert_eq!(r.body["reason"], "NotFound");
    assert_eq!(
        r.body["message"],
        "leases.coordination.k8s.io \"missing\" not found"
    );
    let r = s.get(&format!("{PODS}/missing")).await;
    assert_eq!(r.body["message"], "pods \"missing\" not found");
    assert!(r.body["details"].get("group").is_none());
}

#[tokio::test]
async fn c07_resource_version_on_create_is_500() {
    let s = Sim::new().await;
    let r = s
        .post(L, json!({"metadata":{"name":"l1","resourceVersion":"5"}}))
        .await;
    assert_eq!(r.code, 500);
    assert_eq!(
        r.body["message"],
        "resourceVersion should not be set on objects to be created"
    );
    assert!(r.body.get("reason").is_none());
}

#[tokio::test]
async fn c08_bad_name_is_invalid() {
    let s = Sim::new().await;
    let r = s.post(L, json!({"metadata":{"name":"Bad_Name"}})).await;
    assert_eq!(r.code, 422);
    assert_eq!(r.body["reason"], "Invalid");
    assert_eq!(r.body["details"]["causes"][0]["field"], "metadata.name");
}

#[tokio::test]
async fn c09_zero_lease_duration_is_invalid() {
    let s = Sim::new().await;
    let r = s
        .post(
            L,
            json!({"metadata":{"name":"l1"},"spec":{"leaseDurationSeconds":0}}),
        )
        .await;
    assert_eq!(r.code, 422);
    assert_eq!(r.body["details"]["kind"], "Lease");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0")
    );
}

#[tokio::test]
async fn c10_micro_time_layout() {
    let s = Sim::new().await;
    let r = s
        .post(
            L,
            json!({"metadata":{"name":"l1"},"spec":{"renewTime":"2026-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(r.code, 400, "{}", r.body);
    let r = s
        .post(
            L,
            json!({"metadata":{"name":"l2"},"spec":{"renewTime":"2026-01-01T00:00:00.123456Z"}}),
        )
        .await;
    assert_eq!(r.code, 201);
    let g = s.get(&format!("{L}/l2")).await;
    assert_eq!(g.body["spec"]["renewTime"], "2026-01-01T00:00:00.123456Z");
}

#[tokio::test]
async fn c11_put_with_current_rv() {
    let s = Sim::new().await;
    let mut l = s.lease("l1", "a").await;
    let old = rv(&l);
    l["spec"]["holderIdentity"] = json!("b");
    let r = s.put(&format!("{L}/l1"), l).await;
    assert_eq!(r.code, 200);
    assert!(rv(&r.body) > old);
    assert_eq!(r.body["spec"]["holderIdentity"], "b");
}

#[tokio::test]
async fn c12_put_with_stale_rv_conflicts() {
    let s = Sim::new().await;
    let l = s.lease("l1", "a").await;
    let mut fresh = l.clone();
    fresh["spec"]["holderIdentity"] = json!("b");
    assert_eq!(s.put(&format!("{L}/l1"), fresh).await.code, 200);
    let mut stale = l;
    stale["spec"]["holderIdentity"] = json!("c");
    let r = s.put(&format!("{L}/l1"), stale).await;
    assert_eq!(r.code, 409);
    assert_eq!(r.body["reason"], "Conflict");
    assert_eq!(
        r.body["message"],
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"l1\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test]
async fn c13_put_without_rv() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let r = s
        .put(
            &format!("{L}/l1"),
            json!({"metadata":{"name":"l1"},"spec":{"holderIdentity":"b"}}),
        )
        .await;
    assert_eq!(r.code, 422);
    assert_eq!(
        r.body["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );
    assert_eq!(r.body["details"]["kind"], "leases");
    assert_eq!(
        r.body["message"],
        "leases.coordination.k8s.io \"l1\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update"
    );
    let p = s.pod("p1", json!({"app":"web"})).await;
    let mut body = p.clone();
    body["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    body["metadata"]["labels"]["x"] = json!("y");
    let r = s.put(&format!("{PODS}/p1"), body).await;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["metadata"]["labels"]["x"], "y");
}

#[tokio::test]
async fn c14_put_missing() {
    let s = Sim::new().await;
    let r = s
        .put(
            &format!("{L}/new1"),
            json!({"metadata":{"name":"new1"},"spec":{"holderIdentity":"a"}}),
        )
        .await;
    assert_eq!(r.code, 201);
    assert_eq!(s.get(&format!("{L}/new1")).await.code, 200);
    let r = s
        .put(
            &format!("{PODS}/missing"),
            json!({"metadata":{"name":"missing"},"spec":{"containers":[{"name":"c","image":"i"}]}}),
        )
        .await;
    assert_eq!(r.code, 404);
}

#[tokio::test]
async fn c15_put_name_mismatch() {
    let s = Sim::new().await;
    let l = s.lease("l1", "a").await;
    let mut body = l;
    body["metadata"]["name"] = json!("other");
    let r = s.put(&format!("{L}/l1"), body).await;
    assert_eq!(r.code, 400);
    assert_eq!(r.body["reason"], "BadRequest");
    assert_eq!(
        r.body["message"],
        "the name of the object (other) does not match the name on the URL (l1)"
    );
}

#[tokio::test]
async fn c16_merge_patch_keeps_other_fields() {
    let s = Sim::new().await;
    let l = s.lease("l1", "a").await;
    let r = s
        .merge(&format!("{L}/l1"), json!({"spec":{"holderIdentity":"b"}}))
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["spec"]["holderIdentity"], "b");
    assert_eq!(r.body["spec"]["leaseDurationSeconds"], 15);
    assert!(rv(&r.body) > rv(&l));
}

#[tokio::test]
async fn c17_merge_patch_with_stale_rv() {
    let s = Sim::new().await;
    let l = s.lease("l1", "a").await;
    s.merge(&format!("{L}/l1"), json!({"spec":{"holderIdentity":"b"}}))
        .await;
    let r = s
        .merge(&format!("{L}/l1"), json!({"metadata":{"resourceVersion": l["metadata"]["resourceVersion"]},"spec":{"holderIdentity":"c"}}))
        .await;
    assert_eq!(r.code, 409);
    assert_eq!(r.body["reason"], "Conflict");
}

#[tokio::test]
async fn c18_noop_patch_keeps_rv_and_emits_nothing() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let first = s
        .merge(&format!("{L}/l1"), json!({"spec":{"holderIdentity":"b"}}))
        .await;
    let mut w = s
        .watch(&format!(
            "{L}?watch=true&resourceVersion={}",
            rv(&first.body)
        ))
        .await;
    let again = s
        .merge(&format!("{L}/l1"), json!({"spec":{"holderIdentity":"b"}}))
        .await;
    assert_eq!(again.code, 200);
    assert_eq!(rv(&again.body), rv(&first.body));
    // A sentinel write: the next event must be it, so the no-op produced none.
    s.lease("sentinel", "z").await;
    let ev = w.event().await;
    assert_eq!(ev["object"]["metadata"]["name"], "sentinel", "{ev}");
}

#[tokio::test]
async fn c19_patch_content_types() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let r = s
        .req(
            "PATCH",
            &format!("{L}/l1"),
            Some(json!({"spec":{}})),
            "application/json",
        )
        .await;
    assert_eq!(r.code, 415);
    assert_eq!(r.body["reason"], "UnsupportedMediaType");
    let r = s.merge(&format!("{L}/missing"), json!({"spec":{}})).await;
    assert_eq!(r.code, 404);
}

#[tokio::test]
async fn c20_strategic_labels() {
    let s = Sim::new().await;
    s.pod("p1", json!({"old":"x","keep":"y"})).await;
    let r = s
        .strategic(
            &format!("{PODS}/p1"),
            json!({"metadata":{"labels":{"role":"leader","old":null}}}),
        )
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(
        r.body["metadata"]["labels"],
        json!({"keep":"y","role":"leader"})
    );
    assert_eq!(r.body["metadata"]["generation"], 1);
}

#[tokio::test]
async fn c21_json_patch_failed_test_is_invalid() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let r = s
        .req(
            "PATCH",
            &format!("{L}/l1"),
            Some(json!([{"op":"test","path":"/metadata/resourceVersion","value":"1"}])),
            "application/json-patch+json",
        )
        .await;
    assert_eq!(r.code, 422);
    assert_eq!(r.body["reason"], "Invalid");
}

#[tokio::test]
async fn c22_selector_merge() {
    let s = Sim::new().await;
    let r = s
        .post(SVCS, json!({"metadata":{"name":"s1"},"spec":{"selector":{"app":"a","tier":"x"},"ports":[{"port":80}]}}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = s
        .merge(
            &format!("{SVCS}/s1"),
            json!({"spec":{"selector":{"app":"b"}}}),
        )
        .await;
    assert_eq!(r.body["spec"]["selector"], json!({"app":"b","tier":"x"}));
    let r = s
        .merge(
            &format!("{SVCS}/s1"),
            json!({"spec":{"selector":{"app":"b","tier":null}}}),
        )
        .await;
    assert_eq!(r.body["spec"]["selector"], json!({"app":"b"}));
}

#[tokio::test]
async fn c23_apply_patch() {
    let s = Sim::new().await;
    let body = json!({"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"ap"},"spec":{"holderIdentity":"a"}});
    let r = s
        .req(
            "PATCH",
            &format!("{L}/ap"),
            Some(body.clone()),
            "application/apply-patch+yaml",
        )
        .await;
    assert_eq!(r.code, 422);
    let r = s
        .req(
            "PATCH",
            &format!("{L}/ap?fieldManager=m"),
            Some(body),
            "application/apply-patch+yaml",
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let r = s
        .req(
            "PATCH",
            &format!("{L}/ap?force=true"),
            Some(json!({})),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(r.code, 422);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("force: Forbidden: may not be specified for non-apply patch")
    );
}

#[tokio::test]
async fn c24_list_with_label_selector() {
    let s = Sim::new().await;
    s.pod("b", json!({"app":"web"})).await;
    s.pod("a", json!({"app":"web"})).await;
    s.pod("c", json!({"app":"db"})).await;
    let r = s.get(&format!("{PODS}?labelSelector=app%3Dweb")).await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["kind"], "PodList");
    assert_eq!(r.body["apiVersion"], "v1");
    assert!(
        !r.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let items = r.body["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(items.iter().all(|i| i.get("kind").is_none()));
}

#[tokio::test]
async fn c25_set_based_selectors() {
    let s = Sim::new().await;
    s.pod("a", json!({"app":"web","tier":"fe"})).await;
    s.pod("b", json!({"app":"db"})).await;
    s.pod("c", json!({})).await;
    for (sel, want) in [
        ("app!=web", vec!["b", "c"]),
        ("app in (web,db)", vec!["a", "b"]),
        ("app notin (web)", vec!["b", "c"]),
        ("tier", vec!["a"]),
        ("!tier", vec!["b", "c"]),
        ("app=web,tier=fe", vec!["a"]),
    ] {
        let q: String = url_encode(sel);
        let r = s.get(&format!("{PODS}?labelSelector={q}")).await;
        let names: Vec<String> = r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, want, "{sel}");
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn c26_malformed_label_selector() {
    let s = Sim::new().await;
    for sel in ["app in ()", "=="] {
        let r = s
            .get(&format!("{PODS}?labelSelector={}", url_encode(sel)))
            .await;
        assert_eq!(r.code, 400, "{sel}");
        assert_eq!(r.body["reason"], "BadRequest");
    }
}

#[tokio::test]
async fn c27_field_selectors() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    s.lease("l2", "a").await;
    let r = s
        .get(&format!("{L}?fieldSelector=metadata.name%3Dl1"))
        .await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "l1");
    assert_eq!(
        s.get(&format!("{L}?fieldSelector=spec.holderIdentity%3Da"))
            .await
            .code,
        400
    );
    s.pod("p1", json!({})).await;
    s.pod("p2", json!({})).await;
    s.pod_status("p1", "10.0.0.1", true).await;
    let r = s
        .get(&format!("{PODS}?fieldSelector=status.phase%3DRunning"))
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = s.get(&format!("{PODS}?fieldSelector=spec.foo%3Dx")).await;
    assert_eq!(r.code, 400);
    assert_eq!(r.body["message"], "field label not supported: spec.foo");
}

#[tokio::test]
async fn c28_query_shapes() {
    let s = Sim::new().await;
    assert_eq!(s.get(&format!("{PODS}?&limit=500")).await.code, 200);
    assert_eq!(s.get(&format!("{L}?")).await.code, 200);
    let r = s.get(&format!("{L}?resourceVersionMatch=Exact")).await;
    assert_eq!(r.code, 422);
}

async fn list_rv(s: &Sim, path: &str) -> u64 {
    s.get(path).await.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn c29_watch_from_list_rv() {
    let s = Sim::new().await;
    let list_rv = list_rv(&s, L).await;
    let mut w = s
        .watch(&format!(
            "{L}?&watch=true&timeoutSeconds=5&allowWatchBookmarks=true&resourceVersion={list_rv}"
        ))
        .await;
    assert_eq!(w.code, 200);
    assert!(w.content_type.starts_with("application/json"));
    s.lease("l1", "a").await;
    let Next::Line(ev, raw) = w.next(Duration::from_secs(5)).await else {
        panic!("no event")
    };
    assert!(!raw.contains('\n'));
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "Lease");
    assert_eq!(ev["object"]["apiVersion"], "coordination.k8s.io/v1");
    assert!(rv(&ev["object"]) > list_rv);
}

#[tokio::test]
async fn c30_modified_then_deleted() {
    let s = Sim::new().await;
    let l = s.lease("l1", "a").await;
    let mut w = s
        .watch(&format!("{L}?watch=true&resourceVersion={}", rv(&l)))
        .await;
    s.merge(&format!("{L}/l1"), json!({"spec":{"holderIdentity":"b"}}))
        .await;
    assert_eq!(s.delete(&format!("{L}/l1")).await.code, 200);
    let m = w.event().await;
    let d = w.event().await;
    assert_eq!(m["type"], "MODIFIED");
    assert_eq!(d["type"], "DELETED");
    assert!(rv(&d["object"]) > rv(&m["object"]));
}

#[tokio::test]
async fn c31_watch_timeout_ends_cleanly() {
    let s = Sim::new().await;
    let start = Instant::now();
    let mut w = s
        .watch(&format!(
            "{L}?watch=true&timeoutSeconds=2&resourceVersion={}",
            list_rv(&s, L).await
        ))
        .await;
    loop {
        match w.next(Duration::from_secs(10)).await {
            Next::End => break,
            Next::Line(v, _) => assert_ne!(v["type"], "ERROR", "{v}"),
            other @ (Next::Timeout | Next::Failed) => {
                panic!("watch did not end cleanly: {other:?}")
            }
        }
    }
    // Not before the timeout; the upper bound is the 10 s deadline of each read above.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
}

#[tokio::test]
async fn c32_initial_events() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    s.lease("l2", "a").await;
    for q in ["resourceVersion=0", ""] {
        let existing = s.get(L).await.body["items"].as_array().unwrap().len();
        let mut w = s.watch(&format!("{L}?watch=true&{q}")).await;
        for i in 0..existing {
            let ev = w.event().await;
            assert_eq!(ev["type"], "ADDED");
            if i == 0 {
                assert_eq!(ev["object"]["metadata"]["name"], "l1");
            }
        }
        s.lease(&format!("live{}", q.len()), "a").await;
        let c = w.event().await;
        assert_eq!(c["object"]["metadata"]["name"], format!("live{}", q.len()));
    }
    let mut w = s
        .watch(&format!(
            "{L}?watch=true&resourceVersion={}",
            list_rv(&s, L).await
        ))
        .await;
    s.lease("after", "a").await;
    assert_eq!(w.event().await["object"]["metadata"]["name"], "after");
}

#[tokio::test]
async fn c33_compacted_watch_gets_in_band_410() {
    let s = Sim::new().await;
    let old = s.lease("l1", "a").await;
    s.merge(&format!("{L}/l1"), json!({"spec":{"holderIdentity":"b"}}))
        .await;
    s.server.compact();
    let mut w = s
        .watch(&format!("{L}?watch=true&resourceVersion={}", rv(&old)))
        .await;
    assert_eq!(w.code, 200);
    let Next::Line(ev, _) = w.next(Duration::from_secs(5)).await else {
        panic!()
    };
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["reason"], "Expired");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["kind"], "Status");
    assert!(matches!(w.next(Duration::from_secs(5)).await, Next::End));
}

#[tokio::test]
async fn c34_label_selector_transitions() {
    let s = Sim::new().await;
    let p = s.pod("p1", json!({"app":"web"})).await;
    let mut w = s
        .watch(&format!(
            "{PODS}?watch=true&labelSelector=role%3Dleader&resourceVersion={}",
            rv(&p)
        ))
        .await;
    s.strategic(
        &format!("{PODS}/p1"),
        json!({"metadata":{"labels":{"role":"leader"}}}),
    )
    .await;
    let added = w.event().await;
    assert_eq!(added["type"], "ADDED");
    let gone = s
        .strategic(
            &format!("{PODS}/p1"),
            json!({"metadata":{"labels":{"role":null}}}),
        )
        .await;
    let del = w.event().await;
    assert_eq!(del["type"], "DELETED");
    assert_eq!(del["object"]["metadata"]["labels"]["role"], "leader");
    assert_eq!(rv(&del["object"]), rv(&gone.body));
}

#[tokio::test]
async fn c35_field_selector_watch() {
    let s = Sim::new().await;
    let mut w = s
        .watch(&format!(
            "{L}?watch=true&fieldSelector=metadata.name%3Dl1&resourceVersion={}",
            list_rv(&s, L).await
        ))
        .await;
    s.lease("l2", "a").await;
    s.lease("l1", "a").await;
    let ev = w.event().await;
    assert_eq!(ev["object"]["metadata"]["name"], "l1");
}

#[tokio::test]
async fn c36_streaming_list() {
    let s = Sim::new().await;
    let a = s.lease("l1", "a").await;
    let b = s.lease("l2", "a").await;
    let mut w = s.watch(&format!("{L}?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0")).await;
    let mut added = 0;
    let bm = loop {
        let Next::Line(ev, _) = w.next(Duration::from_secs(5)).await else {
            panic!()
        };
        match ev["type"].as_str() {
            Some("ADDED") => added += 1,
            Some("BOOKMARK") => break ev,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(added, 2);
    assert_eq!(
        bm["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert!(rv(&bm["object"]) >= rv(&a).max(rv(&b)));
    let r = s
        .get(&format!(
            "{L}?watch=true&sendInitialEvents=true&resourceVersion=0"
        ))
        .await;
    assert_eq!(r.code, 422);
}

#[tokio::test]
async fn c37_bookmarks_only_when_allowed() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    // Without allowWatchBookmarks, a streaming list that would end in a bookmark sends none.
    let mut w = s.watch(&format!("{L}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0&timeoutSeconds=4")).await;
    loop {
        match w.next(Duration::from_secs(10)).await {
            Next::Line(v, _) => assert_ne!(v["type"], "BOOKMARK", "{v}"),
            Next::End => break,
            other @ (Next::Timeout | Next::Failed) => {
                panic!("watch did not end cleanly: {other:?}")
            }
        }
    }
    // With it, the stream's bookmarks carry the watched kind and a resourceVersion.
    let mut w = s
        .watch(&format!(
            "{L}?watch=true&allowWatchBookmarks=true&timeoutSeconds=4&resourceVersion={}",
            list_rv(&s, L).await
        ))
        .await;
    let bm = loop {
        match w.next(Duration::from_secs(10)).await {
            Next::Line(v, _) if v["type"] == "BOOKMARK" => break v,
            Next::Line(_, _) => continue,
            other => panic!("no bookmark: {other:?}"),
        }
    };
    assert_eq!(bm["object"]["kind"], "Lease");
    assert_eq!(bm["object"]["apiVersion"], "coordination.k8s.io/v1");
    assert!(
        bm["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some()
    );
}

#[tokio::test]
async fn c38_kube_watcher_relists_after_compaction() {
    use futures::StreamExt;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::runtime::watcher::{self, Event};
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let client = kube_client(&s, TOKEN2).await;
    let api: kube::Api<Lease> = kube::Api::namespaced(client, "ns");
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    async fn next(
        stream: &mut futures::stream::BoxStream<'static, Result<Event<Lease>, watcher::Error>>,
    ) -> Result<Event<Lease>, watcher::Error> {
        tokio::time::timeout(Duration::from_secs(15), stream.next())
            .await
            .expect("watcher event in time")
            .expect("stream open")
    }
    assert!(matches!(next(&mut stream).await, Ok(Event::Init)));
    assert!(
        matches!(next(&mut stream).await, Ok(Event::InitApply(l)) if l.metadata.name.as_deref() == Some("l1"))
    );
    assert!(matches!(next(&mut stream).await, Ok(Event::InitDone)));
    s.lease("l2", "a").await;
    assert!(
        matches!(next(&mut stream).await, Ok(Event::Apply(l)) if l.metadata.name.as_deref() == Some("l2"))
    );
    // The watcher misses a change (its stream is cut as the change is sent), the history is
    // compacted past its resourceVersion, and its re-watch must get 410 and relist.
    let cut = s.server.faults().add(kubesim::Fault {
        token: Some(TOKEN2.into()),
        drop_connections: true,
        ..Default::default()
    });
    s.lease("l3", "a").await;
    s.server.compact();
    s.server.faults().remove(cut);
    let mut saw_410 = false;
    loop {
        match next(&mut stream).await {
            Err(watcher::Error::WatchError(e)) if e.code == 410 => saw_410 = true,
            Err(_) => continue,
            Ok(Event::Init) => break,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_410, "relisted without a 410");
    assert!(matches!(next(&mut stream).await, Ok(Event::InitApply(_))));
}

/// A kube-rs client from a written kubeconfig, as users would make it.
pub async fn kube_client(s: &Sim, token: &str) -> kube::Client {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    s.server.write_kubeconfig(&path, token, "ns").unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn c39_recorder_event_and_series_patch() {
    let s = Sim::new().await;
    let ev = json!({"apiVersion":"events.k8s.io/v1","kind":"Event",
        "metadata":{"name":"p1.1a2b3c","namespace":"ns"},
        "eventTime":"2026-01-01T00:00:00.000000Z","action":"Promote","reason":"Elected","note":"won","type":"Normal",
        "regarding":{"kind":"Pod","name":"p1","namespace":"ns"},
        "reportingController":"redis-k8s-election","reportingInstance":"p1"});
    let r = s
        .post("/apis/events.k8s.io/v1/namespaces/ns/events", ev.clone())
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let mut patch = ev;
    patch["series"] = json!({"count":2,"lastObservedTime":"2026-01-01T00:00:01.000000Z"});
    let r = s
        .merge(
            "/apis/events.k8s.io/v1/namespaces/ns/events/p1.1a2b3c",
            patch,
        )
        .await;
    assert_eq!(r.code, 200, "{}", r.body);
    let g = s
        .get("/apis/events.k8s.io/v1/namespaces/ns/events/p1.1a2b3c")
        .await;
    assert_eq!(g.body["series"]["count"], 2);
}

/// A change to a valid body that makes one field invalid.
type Mutation = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn c40_events_v1_validation() {
    let s = Sim::new().await;
    let base = json!({"metadata":{"name":"e1"},"eventTime":"2026-01-01T00:00:00.000000Z","action":"a","reason":"r","type":"Normal",
        "regarding":{"kind":"Pod","name":"p1","namespace":"ns"},"reportingController":"c","reportingInstance":"i"});
    let path = "/apis/events.k8s.io/v1/namespaces/ns/events";
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "eventTime",
            Box::new(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("eventTime");
            }),
        ),
        ("type", Box::new(|v: &mut Value| v["type"] = json!("Info"))),
        (
            "deprecatedCount",
            Box::new(|v: &mut Value| v["deprecatedCount"] = json!(3)),
        ),
        (
            "reportingController",
            Box::new(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("reportingController");
            }),
        ),
        (
            "action",
            Box::new(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("action");
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut body = base.clone();
        mutate(&mut body);
        let r = s.post(path, body).await;
        assert_eq!(r.code, 422, "{field}: {}", r.body);
        let causes = r.body["details"]["causes"].as_array().unwrap();
        assert!(
            causes.iter().any(|c| c["field"] == field),
            "{field}: {}",
            r.body
        );
    }
    assert_eq!(s.post(path, base).await.code, 201);
    let r = s
        .merge(&format!("{path}/e1"), json!({"note":"changed"}))
        .await;
    assert_eq!(r.code, 422);
}

#[tokio::test]
async fn c41_generate_name() {
    let s = Sim::new().await;
    let r = s
        .post("/apis/events.k8s.io/v1/namespaces/ns/events", json!({"metadata":{"generateName":"ctrl-"},
            "eventTime":"2026-01-01T00:00:00.000000Z","action":"a","reason":"r","type":"Normal",
            "regarding":{"kind":"Pod","name":"p1","namespace":"ns"},"reportingController":"c","reportingInstance":"i"}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let name = r.body["metadata"]["name"].as_str().unwrap();
    assert_eq!(name.len(), 10);
    assert!(name.starts_with("ctrl-"));
    assert!(
        name[5..]
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{name}"
    );
}

#[tokio::test]
async fn c42_legacy_events() {
    let s = Sim::new().await;
    let r = s
        .post("/api/v1/namespaces/ns/events", json!({"metadata":{"name":"x1"},"involvedObject":{"kind":"Pod","name":"p","namespace":"other"},"reason":"r"}))
        .await;
    assert_eq!(r.code, 422);
    let r = s
        .post("/api/v1/namespaces/ns/events", json!({"metadata":{"name":"p.123"},"involvedObject":{"kind":"Pod","name":"p","namespace":"ns"},
            "reason":"Started","message":"hello","type":"Normal","source":{"component":"kubelet"},
            "firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z","count":1}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let l = s.get("/apis/events.k8s.io/v1/namespaces/ns/events").await;
    let item = &l.body["items"][0];
    assert_eq!(item["note"], "hello");
    assert_eq!(item["regarding"]["name"], "p");
    assert_eq!(l.body["kind"], "EventList");
    assert_eq!(l.body["apiVersion"], "events.k8s.io/v1");
}

async fn service_and_ready_pod(s: &Sim) {
    let r = s
        .post(SVCS, json!({"metadata":{"name":"s1"},"spec":{"selector":{"app":"web"},"ports":[{"port":80,"targetPort":"http"}]}}))
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    s.pod("p1", json!({"app":"web"})).await;
    s.pod_status("p1", "10.0.0.5", true).await;
}

#[tokio::test]
async fn c43_endpoints_derived() {
    let s = Sim::new().await;
    service_and_ready_pod(&s).await;
    let e = s.get("/api/v1/namespaces/ns/endpoints/s1").await;
    assert_eq!(e.code, 200);
    let sub = &e.body["subsets"][0];
    assert_eq!(sub["addresses"][0]["ip"], "10.0.0.5");
    assert_eq!(sub["addresses"][0]["targetRef"]["name"], "p1");
    assert_eq!(sub["ports"][0]["port"], 8080);
}

#[tokio::test]
async fn c44_endpointslice_derived() {
    let s = Sim::new().await;
    service_and_ready_pod(&s).await;
    let r = s.get("/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Ds1").await;
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let sl = &items[0];
    assert_eq!(sl["addressType"], "IPv4");
    assert_eq!(sl["endpoints"][0]["addresses"], json!(["10.0.0.5"]));
    assert_eq!(sl["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(sl["ports"][0]["port"], 8080);
    assert_eq!(
        sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
}

#[tokio::test]
async fn c45_not_ready_moves_addresses() {
    let s = Sim::new().await;
    service_and_ready_pod(&s).await;
    let before_ep = s.get("/api/v1/namespaces/ns/endpoints/s1").await.body;
    let slices = "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices";
    let before_sl = s.get(slices).await.body["items"][0].clone();
    let mut w_ep = s
        .watch(&format!(
            "/api/v1/namespaces/ns/endpoints?watch=true&resourceVersion={}",
            rv(&before_ep)
        ))
        .await;
    let mut w_sl = s
        .watch(&format!(
            "{slices}?watch=true&resourceVersion={}",
            rv(&before_sl)
        ))
        .await;
    s.pod_status("p1", "10.0.0.5", false).await;
    let e = s.get("/api/v1/namespaces/ns/endpoints/s1").await.body;
    assert!(e["subsets"][0].get("addresses").is_none());
    assert_eq!(e["subsets"][0]["notReadyAddresses"][0]["ip"], "10.0.0.5");
    let sl = s.get(slices).await.body["items"][0].clone();
    assert_eq!(sl["endpoints"][0]["conditions"]["ready"], false);
    assert_eq!(sl["endpoints"][0]["conditions"]["serving"], false);
    assert!(rv(&e) > rv(&before_ep) && rv(&sl) > rv(&before_sl));
    assert_eq!(w_ep.event().await["type"], "MODIFIED");
    assert_eq!(w_sl.event().await["type"], "MODIFIED");
}

#[tokio::test]
async fn c46_status_ignored_on_main_resource() {
    let s = Sim::new().await;
    s.pod("p1", json!({})).await;
    let r = s
        .merge(&format!("{PODS}/p1"), json!({"status":{"phase":"Running"}}))
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["status"]["phase"], "Pending");
}

#[tokio::test]
async fn c47_selector_changes_and_exclusions() {
    let s = Sim::new().await;
    service_and_ready_pod(&s).await;
    s.merge(
        &format!("{SVCS}/s1"),
        json!({"spec":{"selector":{"app":"none"}}}),
    )
    .await;
    let e = s.get("/api/v1/namespaces/ns/endpoints/s1").await.body;
    assert!(
        e.get("subsets")
            .is_none_or(|v| v.as_array().unwrap().is_empty()),
        "{e}"
    );
    let sl = s
        .get("/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices")
        .await
        .body;
    assert_eq!(sl["items"][0]["endpoints"], json!([]));
    // No selector: no managed objects.
    s.post(
        SVCS,
        json!({"metadata":{"name":"manual"},"spec":{"ports":[{"port":80}]}}),
    )
    .await;
    assert_eq!(
        s.get("/api/v1/namespaces/ns/endpoints/manual").await.code,
        404
    );
    // A Succeeded pod is excluded.
    s.merge(
        &format!("{SVCS}/s1"),
        json!({"spec":{"selector":{"app":"web"}}}),
    )
    .await;
    s.strategic(
        &format!("{PODS}/p1/status"),
        json!({"status":{"phase":"Succeeded"}}),
    )
    .await;
    let e = s.get("/api/v1/namespaces/ns/endpoints/s1").await.body;
    assert!(e.get("subsets").is_none(), "{e}");
}

#[tokio::test]
async fn c48_delete_twice() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let r = s.delete(&format!("{L}/l1")).await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["status"], "Success");
    assert_eq!(s.delete(&format!("{L}/l1")).await.code, 404);
}

#[tokio::test]
async fn c49_dry_run() {
    let s = Sim::new().await;
    let l = s.lease("l1", "a").await;
    let mut w = s
        .watch(&format!("{L}?watch=true&resourceVersion={}", rv(&l)))
        .await;
    let r = s
        .post(
            &format!("{L}?dryRun=All"),
            json!({"metadata":{"name":"dry"}}),
        )
        .await;
    assert_eq!(r.code, 201);
    assert_eq!(s.get(&format!("{L}/dry")).await.code, 404);
    let r = s
        .merge(
            &format!("{L}/l1?dryRun=All"),
            json!({"spec":{"holderIdentity":"z"}}),
        )
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(r.body["spec"]["holderIdentity"], "z");
    assert_eq!(
        s.get(&format!("{L}/l1")).await.body["spec"]["holderIdentity"],
        "a"
    );
    let r = s
        .req("DELETE", &format!("{L}/l1?dryRun=All"), None, "")
        .await;
    assert_eq!(r.code, 200);
    assert_eq!(s.get(&format!("{L}/l1")).await.code, 200);
    s.lease("sentinel", "z").await;
    assert_eq!(w.event().await["object"]["metadata"]["name"], "sentinel");
}

#[tokio::test]
async fn c50_every_error_is_a_status() {
    let s = Sim::new().await;
    s.lease("l1", "a").await;
    let cases = vec![
        s.get(&format!("{L}/missing")).await,
        s.post(L, json!({"metadata":{"name":"l1"}})).await,
        s.post(L, json!({"metadata":{"name":"BAD"}})).await,
        s.get(&format!("{PODS}?labelSelector=%3D%3D")).await,
        s.req("PATCH", &format!("{L}/l1"), Some(json!({})), "text/plain")
            .await,
        s.req_as(Some("nope"), "GET", L, None, "").await,
        s.post(L, json!({"metadata":{"name":"x","resourceVersion":"1"}}))
            .await,
        s.get("/api/v1/namespaces/ns/nothings").await,
    ];
    for r in cases {
        assert!(r.code >= 400);
        is_failure_status(&r.body, r.code);
    }
}

#[tokio::test]
async fn c51_kube_client_from_kubeconfig() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use kube::api::{Patch, PatchParams, PostParams};
    let s = Sim::new().await;
    let client = kube_client(&s, TOKEN).await;
    let api: kube::Api<Lease> = kube::Api::default_namespaced(client);
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("k1".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("a".into()),
            ..Default::default()
        }),
    };
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("ns"));
    let mut got = api.get("k1").await.unwrap();
    got.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let replaced = api
        .replace("k1", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_eq!(replaced.spec.unwrap().holder_identity.as_deref(), Some("b"));
    let stale = api
        .replace("k1", &PostParams::default(), &got)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, kube::Error::Api(ref s) if s.code == 409),
        "{stale:?}"
    );
    let patched = api
        .patch(
            "k1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec":{"holderIdentity":"c"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().holder_identity.as_deref(), Some("c"));
    let bad = kube_client(&s, "wrong").await;
    let err = kube::Api::<Lease>::default_namespaced(bad)
        .get("k1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401),
        "{err:?}"
    );
}

/// Beyond the checklist: kube-rs' own events Recorder (POST, then the series merge PATCH on a
/// repeat) works end to end, as the sidecar uses it.
#[tokio::test]
async fn kube_recorder_publishes_and_repeats() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let s = Sim::new().await;
    let client = kube_client(&s, TOKEN).await;
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "redis-k8s-election".into(),
            instance: Some("p1".into()),
        },
    );
    let reference = ObjectReference {
        kind: Some("Pod".into()),
        name: Some("p1".into()),
        namespace: Some("ns".into()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "Elected".into(),
        note: Some("epoch 1".into()),
        action: "Promote".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let list = s
        .get("/apis/events.k8s.io/v1/namespaces/ns/events")
        .await
        .body;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["series"]["count"], 2);
    assert_eq!(items[0]["reason"], "Elected");
    // The same event through the legacy API.
    let core = s.get("/api/v1/namespaces/ns/events").await.body;
    assert_eq!(core["items"][0]["message"], "epoch 1");
}
