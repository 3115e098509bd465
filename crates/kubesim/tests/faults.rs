//! Fault injection through the library API and the administrator HTTP endpoint, set and
//! cleared while clients are connected.

mod common;

use common::*;
use kubesim::{ErrorFault, Fault};
use serde_json::json;
use std::time::{Duration, Instant};

/// Waits (with a deadline) until connecting to `addr` gives `refused == true/false`.
async fn wait_refused(addr: std::net::SocketAddr, refused: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = tokio::net::TcpStream::connect(addr).await.is_ok();
        if ok != refused {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connection state never became refused={refused}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn latency_applies_per_token() {
    let s = Sim::new().await;
    s.server.faults().add(Fault {
        token: Some(TOKEN2.into()),
        latency_ms: Some(300),
        ..Default::default()
    });
    let t = Instant::now();
    assert_eq!(s.req_as(Some(TOKEN2), "GET", L, None, "").await.code, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // The other client is not slowed: with a very long delay on TOKEN2, a TOKEN request
    // completes while TOKEN2's is still waiting.
    s.server.faults().clear();
    s.server.faults().add(Fault {
        token: Some(TOKEN2.into()),
        latency_ms: Some(600_000),
        ..Default::default()
    });
    let slow = {
        let http = s.http.clone();
        let url = format!("{}{L}", s.base);
        tokio::spawn(async move {
            http.get(url)
                .header("Authorization", format!("Bearer {TOKEN2}"))
                .send()
                .await
        })
    };
    assert_eq!(s.get(L).await.code, 200);
    assert!(!slow.is_finished());
    slow.abort();
}

#[tokio::test]
async fn errors_on_writes_only() {
    let s = Sim::new().await;
    s.server.faults().add(Fault {
        token: Some(TOKEN2.into()),
        error: Some(ErrorFault {
            code: 503,
            writes_only: true,
            rate: 1.0,
            retry_after_seconds: Some(1),
        }),
        ..Default::default()
    });
    let r = s
        .req_as(
            Some(TOKEN2),
            "POST",
            L,
            Some(json!({"metadata":{"name":"x"}})),
            "application/json",
        )
        .await;
    assert_eq!(r.code, 503);
    assert_eq!(r.body["reason"], "ServiceUnavailable");
    assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    assert_eq!(
        s.get(&format!("{L}/x")).await.code,
        404,
        "the failed write changed nothing"
    );
    assert_eq!(s.req_as(Some(TOKEN2), "GET", L, None, "").await.code, 200);
    assert_eq!(s.post(L, json!({"metadata":{"name":"x"}})).await.code, 201);
    s.server.faults().clear();
    let r = s
        .req_as(
            Some(TOKEN2),
            "POST",
            L,
            Some(json!({"metadata":{"name":"y"}})),
            "application/json",
        )
        .await;
    assert_eq!(r.code, 201);
}

#[tokio::test]
async fn conflict_errors_look_real() {
    let s = Sim::new().await;
    s.server.faults().add(Fault {
        error: Some(ErrorFault {
            code: 409,
            writes_only: true,
            rate: 1.0,
            retry_after_seconds: None,
        }),
        ..Default::default()
    });
    let r = s.post(L, json!({"metadata":{"name":"x"}})).await;
    assert_eq!(r.code, 409);
    assert_eq!(r.body["reason"], "Conflict");
}

#[tokio::test]
async fn blackhole_holds_requests_and_stalls_watches_until_cleared() {
    let s = Sim::new().await;
    let start = s.lease("l0", "a").await;
    // A watch by the blackholed client, opened before the fault.
    let mut w = {
        let r = s
            .http
            .get(format!(
                "{}{L}?watch=true&resourceVersion={}",
                s.base,
                rv(&start)
            ))
            .header("Authorization", format!("Bearer {TOKEN2}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r
    };
    let id = s.server.faults().add(Fault {
        token: Some(TOKEN2.into()),
        blackhole: true,
        ..Default::default()
    });
    // A request by that client gets no answer: its own client timeout fires.
    let held = s
        .http
        .get(format!("{}{L}", s.base))
        .header("Authorization", format!("Bearer {TOKEN2}"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(held.unwrap_err().is_timeout());
    // Other clients are served, and their write is held back from the blackholed watch.
    s.lease("l1", "a").await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.chunk())
            .await
            .is_err(),
        "event leaked through the blackhole"
    );
    // A request in flight when the blackhole lifts is answered, and the stalled watch resumes.
    let pending = {
        let http = s.http.clone();
        let url = format!("{}{L}/l1", s.base);
        tokio::spawn(async move {
            http.get(url)
                .header("Authorization", format!("Bearer {TOKEN2}"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    s.server.faults().remove(id);
    assert_eq!(pending.await.unwrap(), 200);
    let chunk = tokio::time::timeout(Duration::from_secs(5), w.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("\"l1\""));
}

#[tokio::test]
async fn dropped_connections_per_token() {
    let s = Sim::new().await;
    s.server.faults().add(Fault {
        token: Some(TOKEN2.into()),
        drop_connections: true,
        ..Default::default()
    });
    let r = s
        .http
        .get(format!("{}{L}", s.base))
        .header("Authorization", format!("Bearer {TOKEN2}"))
        .send()
        .await;
    let e = r.unwrap_err();
    assert!(!e.is_status() && !e.is_timeout(), "{e:?}");
    assert_eq!(s.get(L).await.code, 200);
}

#[tokio::test]
async fn admin_http_endpoint_sets_lists_and_clears_faults() {
    let s = Sim::new().await;
    let r = s
        .post(
            "/kubesim/v1/faults",
            json!({"token": TOKEN2, "error": {"code": 500}}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let id = r.body["id"].as_u64().unwrap();
    let listed = s.get("/kubesim/v1/faults").await;
    assert_eq!(listed.body[0]["fault"]["error"]["code"], 500);
    let r = s.req_as(Some(TOKEN2), "GET", L, None, "").await;
    assert_eq!(r.code, 500);
    assert_eq!(r.body["reason"], "InternalError");
    assert_eq!(
        s.delete(&format!("/kubesim/v1/faults/{id}")).await.code,
        200
    );
    assert_eq!(s.req_as(Some(TOKEN2), "GET", L, None, "").await.code, 200);
    assert_eq!(
        s.post("/kubesim/v1/faults", json!({"error": {"code": "x"}}))
            .await
            .code,
        400
    );
    assert_eq!(s.delete("/kubesim/v1/faults/999").await.code, 400);
    // Global faults affect everyone, and clearing all removes them; the admin API is exempt.
    s.post("/kubesim/v1/faults", json!({"error": {"code": 503}}))
        .await;
    assert_eq!(s.get(L).await.code, 503);
    assert_eq!(s.delete("/kubesim/v1/faults").await.code, 200);
    assert_eq!(s.get(L).await.code, 200);
}

#[tokio::test]
async fn outage_refuses_connections_then_recovers() {
    let s = Sim::new().await;
    let addr = s.server.addr();
    // Through the library, with a client connected (a watch) when it starts.
    let mut w = s.watch(&format!("{L}?watch=true")).await;
    s.server.set_outage(true);
    wait_refused(addr, true).await;
    // The open watch is cut: an error, not a clean end or a timeout.
    let got = w.next(Duration::from_secs(5)).await;
    assert!(matches!(got, Next::Failed), "{got:?}");
    s.server.set_outage(false);
    wait_refused(addr, false).await;
    assert_eq!(s.get(L).await.code, 200);
    // Through the HTTP endpoint, which must end by itself.
    assert_eq!(s.post("/kubesim/v1/outage", json!({})).await.code, 400);
    let r = s
        .post("/kubesim/v1/outage", json!({"durationMs": 300}))
        .await;
    assert_eq!(r.code, 202);
    wait_refused(addr, true).await;
    wait_refused(addr, false).await;
    assert_eq!(s.get(L).await.code, 200);
}

#[tokio::test]
async fn compaction_through_http_expires_old_watches() {
    let s = Sim::new().await;
    let l = s.lease("l1", "a").await;
    s.lease("l2", "a").await;
    assert_eq!(s.post("/kubesim/v1/compact", json!({})).await.code, 200);
    let mut w = s
        .watch(&format!("{L}?watch=true&resourceVersion={}", rv(&l)))
        .await;
    let ev = w.event().await;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
}
