//! Test harness: an in-process kubesim on an ephemeral loopback port, raw HTTP helpers and a
//! line reader for watch streams that waits with deadlines, never fixed sleeps.

#![allow(dead_code)]

use kubesim::{ApiServer, Config};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The administrator token every test server accepts.
pub const TOKEN: &str = "T";
/// A second administrator token, for a client whose connections a test cuts alone.
pub const TOKEN2: &str = "T2";
/// The lease collection of the test namespace.
pub const L: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases";
/// The pod collection of the test namespace.
pub const PODS: &str = "/api/v1/namespaces/ns/pods";
/// The service collection of the test namespace.
pub const SVCS: &str = "/api/v1/namespaces/ns/services";

/// A running server and a client for it.
pub struct Sim {
    pub server: ApiServer,
    pub http: reqwest::Client,
    pub base: String,
}

/// A response: status, headers, JSON body (or the text as a JSON string).
pub struct Resp {
    pub code: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Sim {
    /// Starts a server with namespace `ns`.
    pub async fn new() -> Self {
        Self::with_history(kubesim::store::DEFAULT_HISTORY).await
    }

    /// Starts a server keeping `history` changes for watches.
    pub async fn with_history(history: usize) -> Self {
        Self::with_config(|c| c.history = history).await
    }

    /// Starts a server with its settings changed by `change`.
    pub async fn with_config(change: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap(), TOKEN);
        config.admin_tokens.push(TOKEN2.to_string());
        change(&mut config);
        let server = ApiServer::start(config).await.expect("server starts");
        let base = server.http_url();
        let sim = Self {
            server,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base,
        };
        let r = sim
            .post("/api/v1/namespaces", json!({"metadata": {"name": "ns"}}))
            .await;
        assert_eq!(r.code, 201, "{}", r.body);
        sim
    }

    /// Sends a request with the admin token.
    pub async fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> Resp {
        self.req_as(Some(TOKEN), method, path, body, content_type)
            .await
    }

    /// Sends a request with a given token (`None`: no Authorization header).
    pub async fn req_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> Resp {
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", content_type)
                .body(serde_json::to_vec(&b).unwrap());
        }
        let r = rb.send().await.expect("request sent");
        let code = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            code,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, None, "").await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.req("POST", path, Some(body), "application/json").await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.req("PUT", path, Some(body), "application/json").await
    }
    pub async fn merge(&self, path: &str, body: Value) -> Resp {
        self.req("PATCH", path, Some(body), "application/merge-patch+json")
            .await
    }
    pub async fn strategic(&self, path: &str, body: Value) -> Resp {
        self.req(
            "PATCH",
            path,
            Some(body),
            "application/strategic-merge-patch+json",
        )
        .await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.req("DELETE", path, None, "").await
    }

    /// Creates lease `name` held by `holder`.
    pub async fn lease(&self, name: &str, holder: &str) -> Value {
        let r = self
            .post(L, json!({"metadata": {"name": name}, "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}))
            .await;
        assert_eq!(r.code, 201, "{}", r.body);
        r.body
    }

    /// Creates pod `name` with labels and an `http` container port 8080.
    pub async fn pod(&self, name: &str, labels: Value) -> Value {
        let r = self
            .post(PODS, json!({"metadata": {"name": name, "labels": labels}, "spec": {"containers": [
                {"name": "c", "image": "redis:7", "ports": [{"name": "http", "containerPort": 8080}]}]}}))
            .await;
        assert_eq!(r.code, 201, "{}", r.body);
        r.body
    }

    /// Sets a pod's IP, phase and Ready condition through `/status`.
    pub async fn pod_status(&self, name: &str, ip: &str, ready: bool) -> Value {
        let r = self
            .strategic(&format!("{PODS}/{name}/status"), json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
            .await;
        assert_eq!(r.code, 200, "{}", r.body);
        r.body
    }

    /// Opens a watch (path includes the query).
    pub async fn watch(&self, path: &str) -> Watch {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .expect("watch opened");
        Watch {
            code: r.status().as_u16(),
            content_type: r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            resp: r,
            buf: Vec::new(),
        }
    }
}

/// `metadata.resourceVersion` as a number.
pub fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
        .parse()
        .unwrap()
}

/// A watch response read line by line.
pub struct Watch {
    pub code: u16,
    pub content_type: String,
    resp: reqwest::Response,
    buf: Vec<u8>,
}

/// What reading the next line found.
#[derive(Debug)]
pub enum Next {
    /// One event line, parsed, with its raw text.
    Line(Value, String),
    /// The stream ended cleanly.
    End,
    /// Nothing arrived before the deadline.
    Timeout,
    /// The connection broke (not a clean end).
    Failed,
}

impl Watch {
    /// The next line, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
                let v = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("bad line {text:?}: {e}"));
                return Next::Line(v, text);
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(Some(c))) => self.buf.extend_from_slice(&c),
                Ok(Ok(None)) => {
                    assert!(self.buf.is_empty(), "stream ended mid-line");
                    return Next::End;
                }
                Ok(Err(_)) => return Next::Failed,
            }
        }
    }

    /// The next event, skipping bookmarks; panics on timeout or end.
    pub async fn event(&mut self) -> Value {
        loop {
            match self.next(Duration::from_secs(10)).await {
                Next::Line(v, _) if v["type"] == "BOOKMARK" => continue,
                Next::Line(v, _) => return v,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }
}

/// Polls `f` every 50 ms until it gives a value; fails the test naming `what` after `within`.
/// (For tests that watch processes and files from a blocking section.)
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
