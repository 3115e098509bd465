//! The HTTP front: accept loop, authentication, fault gate, routing, watch streaming and the
//! administrator endpoints under `/kubesim/`.
//!
//! The accept loop is our own (hyper-util per connection) rather than a framework's `serve`,
//! because a full outage must really refuse connections: the listener is closed and every open
//! connection dropped, then the address is bound again when the outage ends.

use crate::api::{self, DeleteOptions, FieldValidation, ListOptions, Part, WriteOptions};
use crate::discovery;
use crate::faults::{Fault, Faults, Verdict};
use crate::openapi;
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

mod admin;
mod auth;
mod listener;
mod logs;
mod params;
mod route;
mod watch_stream;

use admin::*;
use auth::*;
use listener::*;
use params::*;
use route::*;
use watch_stream::*;

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
    /// Time a client has to send a request's headers, and the longest a kept-alive
    /// connection may sit idle (the real server's `ReadHeaderTimeout` is 32 s).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (the real server answers 504 when a
    /// request takes longer than its `--request-timeout`, 60 s by default).
    pub body_timeout: Duration,
}

impl Config {
    /// Listen on `listen` with one administrator token.
    pub fn new(listen: SocketAddr, admin_token: impl Into<String>) -> Self {
        Self {
            listen,
            admin_tokens: vec![admin_token.into()],
            history: crate::store::DEFAULT_HISTORY,
            header_timeout: Duration::from_secs(32),
            body_timeout: Duration::from_secs(60),
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
    header_timeout: Duration,
    body_timeout: Duration,
    /// Where the node's kubelet keeps each pod's files (`<ns>_<name>_<uid>/logs/<c>.log`),
    /// for `pods/log`; unset without a node.
    pod_dirs: RwLock<Option<std::path::PathBuf>>,
}

/// A running kubesim API server.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
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
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            pod_dirs: RwLock::new(None),
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

    /// Serves `pods/log` from the kubelet's pod directories under `dir`.
    pub fn set_pod_dirs(&self, dir: std::path::PathBuf) {
        *self.shared.pod_dirs.write().expect("pod dirs lock") = Some(dir);
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
        // It holds a bearer token: readable by its owner only.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(
            kubeconfig(&self.url(), &self.shared.tls.ca_data(), token, namespace).as_bytes(),
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

/// The longest token a TokenRequest may ask for (the real server refuses more).
pub(crate) const MAX_TOKEN_EXPIRATION_SECS: i64 = 1 << 32;

pub(crate) fn issue_token(
    store: &mut Store,
    namespace: &str,
    name: &str,
    ttl_secs: i64,
) -> Result<String, ApiError> {
    // Callers validate; this keeps any other path from overflowing the expiry.
    let ttl_secs = ttl_secs.clamp(0, MAX_TOKEN_EXPIRATION_SECS);
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
            expires_unix: util::now_unix().saturating_add(ttl_secs),
        },
    );
    Ok(token)
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
