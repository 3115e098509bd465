//! The sidecar's HTTP API: `/livez`, `/readyz`, `/leader`, `/replica` (GET and HEAD, for
//! probes and load balancers), `/status` (JSON), `/metrics` (Prometheus text), and
//! `POST /switchover`, which changes state and so needs the admin bearer token, and
//! `POST /failsafe/v1/ask`, the failsafe messages between sidecars, which must be signed with
//! the group's peer key.

use super::failsafe::{self, AskMessage, AskRequest, PeerKey, ReplayGuard, ReplyMessage};
use super::handover::{HandoverError, SwitchoverRequest};
use super::metrics::Metrics;
use super::status::Status;
use crate::wire::{Refusal, SidecarRole, SwitchoverDone};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// Shared status.
    pub status: Arc<RwLock<Status>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `/livez` fails when the control loop has not run for this long.
    pub live_within: Duration,
    /// State-changing requests; `None` when no admin token is configured.
    pub admin: Option<Arc<Admin>>,
    /// Failsafe messages; `None` when no peer key is configured.
    pub failsafe: Option<Arc<FailsafeEndpoint>>,
}

/// What the failsafe endpoint needs.
pub struct FailsafeEndpoint {
    /// The group's peer key.
    pub key: Arc<PeerKey>,
    /// Accepts each question once, within the staleness window.
    pub guard: ReplayGuard,
    /// `namespace/lease`.
    pub group: String,
    /// This pod.
    pub pod: String,
    /// Where checked questions go (the control loop).
    pub asks: mpsc::Sender<AskRequest>,
    /// How long a question may wait for the elector's answer.
    pub answer_within: Duration,
}

/// What state-changing requests need.
pub struct Admin {
    /// The file holding the bearer token (read per request: rotation needs no restart).
    pub token_file: PathBuf,
    /// Where switchover requests go (the control loop).
    pub switchovers: mpsc::Sender<SwitchoverRequest>,
    /// How long a request may wait for its outcome.
    pub answer_within: Duration,
    /// Set by `POST /force-election`: a cold start stops waiting for a majority.
    pub cold_forced: Arc<std::sync::atomic::AtomicBool>,
}

fn json_reply(code: StatusCode, body: Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refusal(code: StatusCode, reason: &str, error: String) -> Response {
    json_reply(
        code,
        json!(Refusal {
            ok: false,
            code: reason.to_string(),
            error,
        }),
    )
}

/// Compares without an early exit, so the time taken does not tell how much of a guessed
/// token was right. (Written here: a dependency for six lines is not worth it.)
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    // Compared as SHA-256 digests: always 32 bytes against 32, so the time taken says
    // nothing about the token's length (a byte-wise comparison of unequal lengths returns
    // at once).
    let digest = |x: &[u8]| ring::digest::digest(&ring::digest::SHA256, x);
    let (da, db) = (digest(a), digest(b));
    da.as_ref()
        .iter()
        .zip(db.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Checks the admin token from the headers before the handler reads a body: an
/// unauthenticated client cannot make the sidecar buffer anything. The handler gets the
/// admin settings as a request extension (the one check, not a second one).
async fn admin_gate(
    State(s): State<ApiState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorized_admin(&s, req.headers()) {
        Ok(admin) => {
            req.extensions_mut().insert(admin);
        }
        Err(r) => return *r,
    }
    // A declared length over the cap is refused before a byte of it is read (the body
    // limit alone only stops reading once the cap is passed).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > ADMIN_BODY_LIMIT as u64) {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies here are at most {ADMIN_BODY_LIMIT} bytes"),
        );
    }
    next.run(req).await
}

/// The largest body a state-changing request may have (a switchover's is a few dozen bytes).
const ADMIN_BODY_LIMIT: usize = 4 * 1024;

/// The admin token in `file`, trimmed; `None` when the file is missing or empty. Read on
/// each use, so a rotated Secret takes effect without a restart.
pub(super) fn read_admin_token(file: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| super::config::credential_weakness(t).is_none())
}

/// `None` when the request carries the admin token; otherwise the refusal to send.
fn refuse_unauthorized(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    let expected = match read_admin_token(&admin.token_file) {
        Some(t) => t,
        None => {
            return Some(refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "token_unreadable",
                format!(
                    "the admin token file {} is missing, empty, too short or a placeholder",
                    admin.token_file.display()
                ),
            ));
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if same_secret(t.as_bytes(), expected.as_bytes()) => None,
        _ => {
            let mut r = refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin bearer token is required (Authorization: Bearer <token>)".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"redis-k8s-election\""),
            );
            Some(r)
        }
    }
}

/// The admin settings when state-changing requests are enabled and this one carries the
/// token; otherwise the refusal to send (403 disabled, 401 unauthorized, 500 unreadable).
/// (The refusal is boxed: a `Response` is large for an `Err`.)
fn authorized_admin(s: &ApiState, headers: &HeaderMap) -> Result<Arc<Admin>, Box<Response>> {
    let Some(admin) = s.admin.clone() else {
        return Err(Box::new(refusal(
            StatusCode::FORBIDDEN,
            "disabled",
            "state-changing requests are disabled: the sidecar runs without --admin-token-file"
                .into(),
        )));
    };
    match refuse_unauthorized(&admin, headers) {
        Some(r) => Err(Box::new(r)),
        None => Ok(admin),
    }
}

/// The switchover request body: `{"to": "pod"?, "force": bool?}`, or empty.
fn switchover_body(body: &[u8]) -> Result<(Option<String>, bool), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, false));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("body must be a JSON object like {\"to\": \"redis-1\"}")?;
    if let Some(k) = obj.keys().find(|k| *k != "to" && *k != "force") {
        return Err(format!("unknown field {k:?} (known: to, force)"));
    }
    let to = match obj.get("to") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => return Err(format!("\"to\" must be a pod name, not {other}")),
    };
    let force = match obj.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("\"force\" must be true or false, not {other}")),
    };
    Ok((to, force))
}

fn handover_status(e: &HandoverError) -> StatusCode {
    match e {
        HandoverError::NotLeader { .. } | HandoverError::Paused(_) | HandoverError::Busy => {
            StatusCode::CONFLICT
        }
        HandoverError::Target(_) => StatusCode::UNPROCESSABLE_ENTITY,
        HandoverError::Timeout { .. } | HandoverError::Redis(_) | HandoverError::Api(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

fn handover_refusal(e: &HandoverError) -> Response {
    refusal(handover_status(e), e.code(), e.to_string())
}

async fn switchover(Extension(admin): Extension<Arc<Admin>>, body: Bytes) -> Response {
    let (to, force) = match switchover_body(&body) {
        Ok(v) => v,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let (reply, outcome) = oneshot::channel();
    let req = SwitchoverRequest { to, force, reply };
    if admin.switchovers.try_send(req).is_err() {
        return handover_refusal(&HandoverError::Busy);
    }
    match tokio::time::timeout(admin.answer_within, outcome).await {
        Ok(Ok(Ok(h))) => json_reply(
            StatusCode::OK,
            json!(SwitchoverDone {
                ok: true,
                from: h.from,
                to: h.to,
                epoch: h.epoch,
                pause_ms: h.pause.as_secs_f64() * 1000.0,
                routed: h.routed,
            }),
        ),
        Ok(Ok(Err(e))) => handover_refusal(&e),
        Ok(Err(_)) => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the sidecar is shutting down".into(),
        ),
        Err(_) => refusal(
            StatusCode::GATEWAY_TIMEOUT,
            "no_answer",
            format!(
                "no outcome within {:?}; check `redis-k8s-election status`",
                admin.answer_within
            ),
        ),
    }
}

/// `POST /force-election` (admin token): a pod in a cold start stops waiting for a majority
/// of the members and runs for the lease with the members present (the ranking among them
/// still decides). Answers whether this pod was in a cold start; harmless otherwise.
async fn force_election(
    State(s): State<ApiState>,
    Extension(admin): Extension<Arc<Admin>>,
) -> Response {
    admin
        .cold_forced
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (pod, cold, waiting_for) = {
        let st = s.status.read().expect("status lock");
        (
            st.pod.clone(),
            st.cold_start.cold,
            st.cold_start.waiting_for.clone(),
        )
    };
    json_reply(
        StatusCode::OK,
        json!(crate::wire::ForceElectionDone {
            ok: true,
            pod,
            cold,
            waiting_for,
        }),
    )
}

/// `POST /failsafe/v1/ask`: a signed question from another sidecar of the group. Anything
/// unsigned, misaddressed, stale or replayed is refused (401) before the control loop sees
/// it, and changes nothing; the answer is signed and echoes the question's nonce.
async fn failsafe_ask(State(s): State<ApiState>, body: Bytes) -> Response {
    let Some(fs) = s.failsafe.clone() else {
        return refusal(
            StatusCode::NOT_FOUND,
            "disabled",
            "failsafe messages are disabled: the sidecar runs without --peer-key-file".into(),
        );
    };
    let ask: AskMessage = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            s.metrics.failsafe_rejected("malformed");
            return refusal(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("not a failsafe message: {e}"),
            );
        }
    };
    let kind = match fs
        .guard
        .check(&fs.key, &fs.group, &fs.pod, &ask, failsafe::unix_ms())
    {
        Ok(k) => k,
        Err(r) => {
            s.metrics.failsafe_rejected(r.code());
            tracing::warn!(from = %ask.from, reason = %r, "refused a failsafe message");
            return refusal(StatusCode::UNAUTHORIZED, r.code(), r.to_string());
        }
    };
    let (reply, answer) = oneshot::channel();
    let req = AskRequest {
        holder: ask.holder.clone(),
        epoch: ask.epoch,
        kind,
        reply,
    };
    if fs.asks.try_send(req).is_err() {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many failsafe messages waiting".into(),
        );
    }
    match tokio::time::timeout(fs.answer_within, answer).await {
        Ok(Ok(r)) => {
            s.metrics.failsafe_answered(kind.as_str(), r.confirmed);
            json_reply(
                StatusCode::OK,
                json!(ReplyMessage::signed(&fs.key, &ask, &fs.pod, &r)),
            )
        }
        _ => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_answer",
            "the control loop did not answer in time".into(),
        ),
    }
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

/// The largest replica lag a request allows: `max-lag` (or Patroni's `lag`) in bytes, with an
/// optional unit (`kB`, `MB`, `GB`, powers of 1024 as Patroni reads them); `None` when not
/// given. A value that does not parse is the client's error (400), never a default.
fn max_lag_param(query: &HashMap<String, String>) -> Result<Option<u64>, String> {
    let Some(raw) = query.get("max-lag").or_else(|| query.get("lag")) else {
        return Ok(None);
    };
    let v = raw.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("max-lag {raw:?}: expected bytes, e.g. 1048576 or 1MB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return Err(format!("max-lag {raw:?}: the unit must be B, kB, MB or GB")),
    };
    n.checked_mul(factor)
        .map(Some)
        .ok_or_else(|| format!("max-lag {raw:?}: too large"))
}

/// What a load-balancer check asks of this pod (Patroni's endpoints).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A ready leader (writes go here).
    Leader,
    /// A ready replica within the lag limit.
    Replica,
    /// Either (reads go here).
    ReadOnly,
}

/// Answers a check: 200 when this pod qualifies, 503 when not, 400 for a bad query.
fn check(s: &ApiState, what: Check, query: &HashMap<String, String>) -> Response {
    let max_lag = match max_lag_param(query) {
        Ok(m) => m,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let st = s.status.read().expect("status lock");
    let ready = st.readiness_within(max_lag.unwrap_or(st.max_lag));
    let role_fits = match what {
        Check::Leader => st.role == SidecarRole::Leader,
        Check::Replica => st.role == SidecarRole::Replica,
        Check::ReadOnly => matches!(st.role, SidecarRole::Leader | SidecarRole::Replica),
    };
    match (role_fits, ready) {
        (true, Ok(())) => text(StatusCode::OK, format!("{}\n", st.role)),
        (true, Err(why)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} but not ready: {why}\n", st.role),
        ),
        (false, _) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("role is {}\n", st.role),
        ),
    }
}

async fn leader(State(s): State<ApiState>, Query(q): Query<HashMap<String, String>>) -> Response {
    check(&s, Check::Leader, &q)
}

async fn replica(State(s): State<ApiState>, Query(q): Query<HashMap<String, String>>) -> Response {
    check(&s, Check::Replica, &q)
}

async fn read_only(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    check(&s, Check::ReadOnly, &q)
}

/// Patroni's `/health`: the sidecar's loop runs and its Redis answers, whatever the role.
async fn health(State(s): State<ApiState>) -> Response {
    let st = s.status.read().expect("status lock");
    match (&st.redis, st.live(s.live_within)) {
        (Some(_), true) => text(StatusCode::OK, "redis answers\n".into()),
        (None, _) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "local Redis not answering: {}\n",
                st.redis_error.clone().unwrap_or_default()
            ),
        ),
        (Some(_), false) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("control loop stalled for {:?}\n", st.last_loop.elapsed()),
        ),
    }
}

async fn status(State(s): State<ApiState>) -> Response {
    let report = s.status.read().expect("status lock").report();
    match serde_json::to_value(&report) {
        Ok(body) => json_reply(StatusCode::OK, body),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding",
            format!("encoding the status: {e}"),
        ),
    }
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
    // State-changing routes: the token first, then at most 4 KiB of body.
    let admin = Router::new()
        .route("/switchover", post(switchover))
        .route("/force-election", post(force_election))
        .layer(axum::extract::DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_gate,
        ));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        // Load-balancer checks, as Patroni answers them: GET, HEAD and OPTIONS (HAProxy's
        // `option httpchk OPTIONS /leader`), 200 or 503.
        .route("/leader", get(leader).options(leader))
        .route("/replica", get(replica).options(replica))
        .route("/read-only", get(read_only).options(read_only))
        .route("/health", get(health).options(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .merge(admin)
        .route(failsafe::ASK_PATH, post(failsafe_ask))
        // Failsafe messages and switchover bodies are small: refuse large ones unread.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switchover_bodies() {
        assert_eq!(switchover_body(b""), Ok((None, false)));
        assert_eq!(switchover_body(b"  \n"), Ok((None, false)));
        assert_eq!(
            switchover_body(br#"{"to":"redis-2","force":true}"#),
            Ok((Some("redis-2".into()), true))
        );
        assert_eq!(switchover_body(br#"{"to":null}"#), Ok((None, false)));
        assert!(switchover_body(b"{").unwrap_err().contains("not JSON"));
        assert!(switchover_body(b"[]").unwrap_err().contains("object"));
        assert!(
            switchover_body(br#"{"too":"x"}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            switchover_body(br#"{"to":3}"#)
                .unwrap_err()
                .contains("pod name")
        );
        assert!(
            switchover_body(br#"{"force":"yes"}"#)
                .unwrap_err()
                .contains("true or false")
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
