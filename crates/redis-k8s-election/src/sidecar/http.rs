//! The sidecar's HTTP API: `/livez`, `/readyz`, `/leader`, `/replica` (GET and HEAD, for
//! probes and load balancers), `/status` (JSON) and `/metrics` (Prometheus text).

use super::metrics::Metrics;
use super::status::Status;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// Shared status.
    pub status: Arc<RwLock<Status>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `/livez` fails when the control loop has not run for this long.
    pub live_within: Duration,
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn livez(State(s): State<ApiState>) -> Response {
    let st = s.status.read().expect("status lock");
    if st.live(s.live_within) {
        text(StatusCode::OK, "ok\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("control loop stalled for {:?}\n", st.last_loop.elapsed()),
        )
    }
}

async fn readyz(State(s): State<ApiState>) -> Response {
    match s.status.read().expect("status lock").readiness() {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

fn role_check(s: &ApiState, role: &str) -> Response {
    let st = s.status.read().expect("status lock");
    if st.role == role && st.readiness().is_ok() {
        text(StatusCode::OK, format!("{role}\n"))
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not a ready {role} (role {})\n", st.role),
        )
    }
}

async fn leader(State(s): State<ApiState>) -> Response {
    role_check(&s, "leader")
}

async fn replica(State(s): State<ApiState>) -> Response {
    role_check(&s, "replica")
}

async fn status(State(s): State<ApiState>) -> Response {
    let body = s.status.read().expect("status lock").to_json();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let since = s
        .status
        .read()
        .expect("status lock")
        .last_renew
        .map(|t| t.elapsed().as_secs_f64());
    s.metrics.seconds_since_renew.set(since.unwrap_or(-1.0));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// The router (GET routes answer HEAD too).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/leader", get(leader))
        .route("/replica", get(replica))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}
