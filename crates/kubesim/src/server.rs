//! The HTTP front: accept loop, authentication, fault gate, routing, watch streaming and the
//! administrator endpoints under `/kubesim/`.
//!
//! The accept loop is our own (hyper-util per connection) rather than a framework's `serve`,
//! because a full outage must really refuse connections: the listener is closed and every open
//! connection dropped, then the address is bound again when the outage ends.

use crate::api::{self, DeleteOptions, FieldValidation, ListOptions, Part, WriteOptions};
use crate::discovery;
use crate::faults::{Fault, Faults, Verdict};
use crate::patch::PatchType;
use crate::rbac::{self, Attributes, User};
use crate::resources::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Change, ChangeKind, SaToken, Store};
use crate::util;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

/// The request body limit of the real server (`maxRequestBodyBytes`).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

type Body = BoxBody<Bytes, std::io::Error>;

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Administrator bearer tokens (full access).
    pub admin_tokens: Vec<String>,
    /// How many changes watches can resume from.
    pub history: usize,
}

impl Config {
    /// Listen on `listen` with one administrator token.
    pub fn new(listen: SocketAddr, admin_token: impl Into<String>) -> Self {
        Self {
            listen,
            admin_tokens: vec![admin_token.into()],
            history: crate::store::DEFAULT_HISTORY,
        }
    }
}

struct Shared {
    store: Arc<RwLock<Store>>,
    tls: crate::tls::ServingCert,
    admin_tokens: HashSet<String>,
    faults: Faults,
    /// API requests received (not the `/kubesim/` administrator paths), for load figures.
    requests: std::sync::atomic::AtomicU64,
    /// True while the server refuses connections.
    outage: watch::Sender<bool>,
    /// Bumped each time an outage starts: every open connection is dropped on a change, even
    /// when the outage has already ended by the time the connection task looks.
    cuts: watch::Sender<u64>,
    server_address: String,
}

/// A running kubesim API server.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl ApiServer {
    /// Binds and starts serving. `default` and `kube-system` namespaces exist from the start.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        let listener = bind(config.listen)?;
        let addr = listener.local_addr()?;
        let mut store = Store::new(config.history);
        for ns in ["default", "kube-system"] {
            let rt = resources::lookup("", "v1", "namespaces").expect("namespaces served");
            api::create(
                &mut store,
                rt,
                "",
                json!({"metadata": {"name": ns}}),
                &WriteOptions::default(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        let tls = crate::tls::ServingCert::generate(addr.ip()).map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            store: Arc::new(RwLock::new(store)),
            tls,
            admin_tokens: config.admin_tokens.into_iter().collect(),
            faults: Faults::default(),
            outage: watch::channel(false).0,
            cuts: watch::channel(0).0,
            server_address: addr.to_string(),
            requests: std::sync::atomic::AtomicU64::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(shared.clone(), listener, addr, shutdown_rx));
        Ok(Self {
            shared,
            addr,
            shutdown,
            task,
        })
    }

    /// API requests received so far (each watch counted once, when it starts; the
    /// `/kubesim/` administrator paths not at all): what a group of clients costs the server.
    pub fn requests_received(&self) -> u64 {
        self.shared
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR`: what kubeconfigs point at (kubectl sends tokens only over TLS).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `http://ADDR`: the same port without TLS, which kube-rs clients may use.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.tls.ca_pem
    }

    /// The fault rules; changes apply to connected clients at once.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Starts or ends a full outage: connections refused, open ones dropped.
    pub fn set_outage(&self, on: bool) {
        set_outage(&self.shared, on);
    }

    /// Forgets the watch history: watches from any earlier resourceVersion get 410.
    pub fn compact(&self) {
        self.shared.store.write().expect("store lock").compact();
    }

    /// Issues a token for a service account, as `kubectl create token` does through
    /// TokenRequest. Fails with 404 when the account does not exist.
    pub fn issue_token(
        &self,
        namespace: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<String, ApiError> {
        let mut store = self.shared.store.write().expect("store lock");
        issue_token(&mut store, namespace, name, ttl.as_secs() as i64)
    }

    /// The store, shared with in-process components such as the service proxy.
    pub fn store(&self) -> Arc<RwLock<Store>> {
        self.shared.store.clone()
    }

    /// Runs `f` on the store under the lock (for in-process controllers and tests).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.shared.store.write().expect("store lock"))
    }

    /// Writes a kubeconfig for this server, a token and a namespace, usable by kube-rs and
    /// kubectl as it is.
    pub fn write_kubeconfig(
        &self,
        path: &std::path::Path,
        token: &str,
        namespace: &str,
    ) -> std::io::Result<()> {
        std::fs::write(
            path,
            kubeconfig(&self.url(), &self.shared.tls.ca_data(), token, namespace),
        )
    }

    /// Stops accepting, drops every connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// A kubeconfig document for `server` (trusting the base64 PEM `ca_data`), `token` and
/// `namespace`.
pub fn kubeconfig(server: &str, ca_data: &str, token: &str, namespace: &str) -> String {
    // Values are quoted as YAML strings so that tokens and URLs need no escaping rules.
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: \"{server}\"\n    certificate-authority-data: \"{ca_data}\"\nusers:\n- name: kubesim\n  user:\n    token: \"{token}\"\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: \"{namespace}\"\ncurrent-context: kubesim\npreferences: {{}}\n"
    )
}

/// Starts or ends an outage; starting one also cuts every open connection.
fn set_outage(shared: &Shared, on: bool) {
    if on && !*shared.outage.borrow() {
        shared.cuts.send_modify(|c| *c += 1);
    }
    shared.outage.send_replace(on);
}

pub(crate) fn issue_token(
    store: &mut Store,
    namespace: &str,
    name: &str,
    ttl_secs: i64,
) -> Result<String, ApiError> {
    let sa = store
        .get("serviceaccounts", namespace, name)
        .ok_or_else(|| {
            ApiError::not_found(
                crate::status::GroupResource {
                    group: "",
                    resource: "serviceaccounts",
                },
                name,
            )
        })?;
    let uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let token = util::random_token("kubesim-sa-");
    store.sa_tokens.insert(
        token.clone(),
        SaToken {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
            expires_unix: util::now_unix() + ttl_secs,
        },
    );
    Ok(token)
}

async fn accept_loop(
    shared: Arc<Shared>,
    first: TcpListener,
    addr: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut outage = shared.outage.subscribe();
    let mut listener = Some(first);
    loop {
        if *outage.borrow_and_update() {
            listener = None;
            tokio::select! {
                _ = outage.changed() => continue,
                _ = shutdown.changed() => return,
            }
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "rebinding after outage failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        loop {
            tokio::select! {
                accepted = l.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(shared.clone(), stream, shutdown.clone()));
                }
                _ = outage.changed() => {
                    if *outage.borrow() { break; }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Serves one connection, TLS or plain HTTP, told apart by the first byte (a TLS record of
/// type handshake starts with 0x16; an HTTP request line starts with a letter).
async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut cuts = shared.cuts.subscribe();
    let serve = async {
        let mut first = [0u8; 1];
        let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
        if is_tls {
            let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.server_config.clone());
            // A client that never finishes the handshake is dropped after 10 s.
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            {
                serve_http(shared.clone(), TokioIo::new(tls)).await;
            }
        } else {
            serve_http(shared.clone(), TokioIo::new(stream)).await;
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = cuts.changed() => {}
        _ = shutdown.changed() => {}
    }
}

async fn serve_http<I>(shared: Arc<Shared>, io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { handle(shared, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .await;
}

fn full(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
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

fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
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

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status(), &[]);
    if let Some(secs) = e.retry_after_seconds {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    r
}

fn page_not_found() -> Response<Body> {
    full(404, "text/plain; charset=utf-8", "404 page not found\n")
}

fn percent_decode(s: &str) -> String {
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
fn parse_query(q: Option<&str>) -> HashMap<String, String> {
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
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

fn authenticate(shared: &Shared, token: Option<&str>) -> Result<User, ApiError> {
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

async fn read_body(req: Request<Incoming>) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    match Limited::new(body, MAX_BODY).collect().await {
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

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

async fn handle(
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

/// The administrator API under `/kubesim/v1/`.
async fn admin(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let (_, body) = match read_body(req).await {
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

/// A parsed resource URL.
struct Target {
    rt: &'static ResourceType,
    namespace: String,
    name: String,
    subresource: String,
}

fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
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

fn write_options(q: &HashMap<String, String>, kind: &str) -> Result<WriteOptions, ApiError> {
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

fn list_options(q: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
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

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, ApiError> {
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
fn decode_write_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
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

async fn route(
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
            let (headers, body) = read_body(req).await?;
            let b = if body.is_empty() {
                json!({})
            } else {
                decode_write_body(&headers, &body)?
            };
            let exp = b
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            if exp < 600 {
                return Err(ApiError::invalid(
                    "TokenRequest.authentication.k8s.io",
                    "authentication.k8s.io",
                    "TokenRequest",
                    &target.name,
                    vec![crate::status::Cause::invalid(
                        "spec.expirationSeconds",
                        &json!(exp),
                        "may not specify a duration less than 10 minutes",
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
            let (headers, body) = read_body(req).await?;
            let body = decode_write_body(&headers, &body)?;
            let mut store = shared.store.write().expect("store lock");
            let out = api::create(&mut store, rt, &ns, body, &opts)?;
            Ok(json_response(out.code, &out.body, &out.warnings))
        }
        "update" => {
            let opts = write_options(&q, "UpdateOptions")?;
            let (headers, body) = read_body(req).await?;
            let body = decode_write_body(&headers, &body)?;
            let mut store = shared.store.write().expect("store lock");
            let out = api::update(&mut store, rt, &ns, &target.name, body, part, &opts)?;
            Ok(json_response(out.code, &out.body, &out.warnings))
        }
        "patch" => {
            let opts = write_options(&q, "PatchOptions")?;
            let (headers, body) = read_body(req).await?;
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
            let (_, body) = read_body(req).await?;
            let opts = delete_options(&q, &body)?;
            let mut store = shared.store.write().expect("store lock");
            let out = api::delete(&mut store, rt, &ns, &target.name, &opts)?;
            Ok(json_response(out.code, &out.body, &out.warnings))
        }
        "deletecollection" => {
            let (_, body) = read_body(req).await?;
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

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Turns watch events into lines: plain objects, or one-row Tables for `kubectl get -w`
/// (column definitions in the first Table only, as the real server sends them).
struct Encoder {
    rt: &'static ResourceType,
    as_table: bool,
    columns_sent: bool,
}

impl Encoder {
    fn object(&mut self, ty: &str, view: &Value) -> Bytes {
        if !self.as_table {
            return event_line(ty, view);
        }
        let meta = json!({"resourceVersion": view["metadata"]["resourceVersion"].clone()});
        let t = crate::table::table(
            self.rt,
            std::slice::from_ref(view),
            meta,
            !self.columns_sent,
        );
        self.columns_sent = true;
        event_line(ty, &t)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            "BOOKMARK",
            &json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta}),
        )
    }
}

/// What one watch asks for.
struct WatchSpec {
    rt: &'static ResourceType,
    ns: Option<String>,
    opts: ListOptions,
    send_initial_events: Option<bool>,
    bookmarks: bool,
    timeout: Duration,
    token: Option<String>,
    as_table: bool,
}

/// The watch event (if any) a change produces for one watcher, with selector transitions
/// turned into ADDED/DELETED as the cacher does.
fn event_for(spec: &WatchSpec, enc: &mut Encoder, c: &Change) -> Option<Bytes> {
    let rt = spec.rt;
    if c.storage != rt.storage || spec.ns.as_deref().is_some_and(|n| n != c.key.0) {
        return None;
    }
    let new_matches = c.kind != ChangeKind::Deleted && api::matches(&c.new, &spec.opts);
    let old_matches = c.old.as_ref().is_some_and(|o| api::matches(o, &spec.opts));
    let (ty, obj) = match (c.kind, old_matches, new_matches) {
        (ChangeKind::Deleted, true, _) => ("DELETED", (*c.new).clone()),
        (ChangeKind::Deleted, false, _) => return None,
        (_, false, true) => ("ADDED", (*c.new).clone()),
        (_, true, true) => ("MODIFIED", (*c.new).clone()),
        (_, true, false) => {
            // Stopped matching: the previous content with the new resourceVersion.
            let mut o = (**c.old.as_ref().expect("old matched")).clone();
            o["metadata"]["resourceVersion"] = c.new["metadata"]["resourceVersion"].clone();
            ("DELETED", o)
        }
        (_, false, false) => return None,
    };
    Some(enc.object(ty, &api::to_view(rt, &obj)))
}

fn too_large_rv(n: u64, current: u64) -> ApiError {
    ApiError {
        code: 504,
        reason: "Timeout",
        message: format!("Too large resource version: {n}, current: {current}"),
        details: Some(
            json!({"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1}),
        ),
        retry_after_seconds: None,
    }
}

fn start_watch(shared: Arc<Shared>, spec: WatchSpec) -> Result<Response<Body>, ApiError> {
    let rt = spec.rt;
    let rv_param = spec.opts.resource_version.clone().unwrap_or_default();
    let mut enc = Encoder {
        rt,
        as_table: spec.as_table,
        columns_sent: false,
    };
    let mut prelude: Vec<Bytes> = Vec::new();
    let sub: broadcast::Receiver<Arc<Change>>;
    let start_rv: u64;
    {
        let store = shared.store.read().expect("store lock");
        let from_now = rv_param.is_empty() || rv_param == "0";
        let initial = spec.send_initial_events.unwrap_or(from_now);
        if initial || from_now {
            start_rv = store.rv();
            if initial {
                for obj in store.list(rt.storage, spec.ns.as_deref()) {
                    if api::matches(&obj, &spec.opts) {
                        prelude.push(enc.object("ADDED", &api::to_view(rt, &obj)));
                    }
                }
                if spec.send_initial_events == Some(true) && spec.bookmarks {
                    prelude.push(enc.bookmark(start_rv, true));
                }
            }
            sub = store
                .watch_from(start_rv)
                .expect("current rv is retained")
                .1;
        } else {
            let n: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {rv_param}"))
            })?;
            if n > store.rv() {
                return Err(too_large_rv(n, store.rv()));
            }
            match store.watch_from(n) {
                Ok((replay, s)) => {
                    for c in replay {
                        if let Some(line) = event_for(&spec, &mut enc, &c) {
                            prelude.push(line);
                        }
                    }
                    start_rv = store.rv();
                    sub = s;
                }
                Err(floor) => {
                    // In-band 410: HTTP 200, one ERROR line, then the end of the stream.
                    let err = ApiError::expired(format!("too old resource version: {n} ({floor})"));
                    prelude.push(event_line("ERROR", &err.to_status()));
                    let body = StreamBody::new(futures::stream::iter(
                        prelude.into_iter().map(|b| Ok(Frame::data(b))),
                    ));
                    return Ok(stream_response(BodyExt::boxed(body)));
                }
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(256);
    tokio::spawn(run_watch(shared, spec, enc, prelude, sub, start_rv, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(stream_response(BodyExt::boxed(StreamBody::new(stream))))
}

fn stream_response(body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response")
}

/// Sends one line, first passing the client's network-level faults. False: stop the watch.
async fn send_line(
    shared: &Shared,
    token: Option<&str>,
    tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    line: Bytes,
) -> bool {
    if !shared.faults.stream_gate(token).await {
        let _ = tx
            .send(Err(std::io::Error::other(
                "connection dropped by fault injection",
            )))
            .await;
        return false;
    }
    tx.send(Ok(Frame::data(line))).await.is_ok()
}

async fn run_watch(
    shared: Arc<Shared>,
    spec: WatchSpec,
    mut enc: Encoder,
    prelude: Vec<Bytes>,
    mut sub: broadcast::Receiver<Arc<Change>>,
    mut progress_rv: u64,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    let token = spec.token.clone();
    let token = token.as_deref();
    let deadline = tokio::time::Instant::now() + spec.timeout;
    for line in prelude {
        if !send_line(&shared, token, &tx, line).await {
            return;
        }
    }
    let mut bookmark_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(60),
    );
    // Like the cacher, one bookmark shortly before the timeout, so a client can resume exactly.
    let pre_deadline = deadline
        .checked_sub(Duration::from_secs(2))
        .filter(|_| spec.timeout > Duration::from_secs(3));
    let mut pre_deadline_sent = pre_deadline.is_none();
    loop {
        let pre = async {
            match pre_deadline {
                Some(t) if !pre_deadline_sent => tokio::time::sleep_until(t).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = bookmark_tick.tick(), if spec.bookmarks => {
                if !send_line(&shared, token, &tx, enc.bookmark(progress_rv, false)).await { return; }
            }
            _ = pre, if spec.bookmarks => {
                pre_deadline_sent = true;
                if !send_line(&shared, token, &tx, enc.bookmark(progress_rv, false)).await { return; }
            }
            msg = sub.recv() => match msg {
                Ok(c) => {
                    progress_rv = c.rv;
                    if let Some(line) = event_for(&spec, &mut enc, &c)
                        && !send_line(&shared, token, &tx, line).await
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the channel: resume from the history, or expire.
                    let resumed = shared.store.read().expect("store lock").watch_from(progress_rv);
                    match resumed {
                        Ok((replay, s)) => {
                            sub = s;
                            for c in replay {
                                progress_rv = c.rv;
                                if let Some(line) = event_for(&spec, &mut enc, &c)
                                    && !send_line(&shared, token, &tx, line).await
                                {
                                    return;
                                }
                            }
                        }
                        Err(floor) => {
                            let err = ApiError::expired(format!("too old resource version: {progress_rv} ({floor})"));
                            let _ = send_line(&shared, token, &tx, event_line("ERROR", &err.to_status())).await;
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_matches_kube_rs_shapes() {
        let q = parse_query(Some("&watch=true&labelSelector=app%3Dweb&&x"));
        assert_eq!(q["watch"], "true");
        assert_eq!(q["labelSelector"], "app=web");
        assert_eq!(q["x"], "");
        assert!(parse_query(Some("")).is_empty());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%"), "%");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer  T ".parse().unwrap());
        assert_eq!(bearer(&h).as_deref(), Some("T"));
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn kubeconfig_has_the_fields_kube_rs_reads() {
        let k = kubeconfig("https://127.0.0.1:1", "Q0E=", "t", "ns");
        for needle in [
            "server: \"https://127.0.0.1:1\"",
            "certificate-authority-data: \"Q0E=\"",
            "token: \"t\"",
            "namespace: \"ns\"",
            "current-context: kubesim",
        ] {
            assert!(k.contains(needle), "{needle}");
        }
    }
}
