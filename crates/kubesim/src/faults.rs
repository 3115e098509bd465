//! Fault injection for tests: per-token or global latency, error answers, blackholes and
//! dropped connections. Rules can be changed while clients are connected; requests held by a
//! blackhole wake up and re-check when the rules change (a healed partition delivers what was
//! in flight, as TCP would).

use crate::status::ApiError;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// An injected error answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorFault {
    /// HTTP status to answer with (the body is the matching Status).
    pub code: u16,
    /// Only writes (POST, PUT, PATCH, DELETE) get the error.
    #[serde(default)]
    pub writes_only: bool,
    /// Fraction of matching requests that fail, 0.0–1.0; default 1.0.
    #[serde(default = "one")]
    pub rate: f64,
    /// `Retry-After` seconds to send with the error, if any.
    #[serde(default)]
    pub retry_after_seconds: Option<u32>,
}

fn one() -> f64 {
    1.0
}

/// One fault rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// The bearer token whose requests it affects; `None` affects every client.
    #[serde(default)]
    pub token: Option<String>,
    /// Added delay before each request is handled and before each watch event is sent.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Answer with an error instead of handling the request.
    #[serde(default)]
    pub error: Option<ErrorFault>,
    /// Accept, never answer: requests hang and watch streams stall while the rule stands.
    #[serde(default)]
    pub blackhole: bool,
    /// Close the connection without an answer (this client's view of an outage).
    #[serde(default)]
    pub drop_connections: bool,
}

/// What the request path must do under the current rules.
#[derive(Debug)]
pub enum Verdict {
    /// Handle it.
    Proceed,
    /// Answer with this error.
    Fail(ApiError),
    /// Close the connection without answering.
    Drop,
}

/// The rule set, with a version channel that wakes held requests on change.
pub struct Faults {
    rules: Mutex<Vec<(u64, Fault)>>,
    next_id: Mutex<u64>,
    changed: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            next_id: Mutex::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Adds a rule and returns its id.
    pub fn add(&self, fault: Fault) -> u64 {
        let id = {
            let mut n = self.next_id.lock().expect("fault id lock");
            *n += 1;
            *n
        };
        self.rules.lock().expect("fault lock").push((id, fault));
        self.changed.send_modify(|v| *v += 1);
        id
    }

    /// Removes one rule; false if there was none with that id.
    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.lock().expect("fault lock");
        let before = rules.len();
        rules.retain(|(i, _)| *i != id);
        let removed = rules.len() != before;
        drop(rules);
        self.changed.send_modify(|v| *v += 1);
        removed
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().expect("fault lock").clear();
        self.changed.send_modify(|v| *v += 1);
    }

    /// The current rules with their ids.
    pub fn list(&self) -> Vec<(u64, Fault)> {
        self.rules.lock().expect("fault lock").clone()
    }

    fn matching(&self, token: Option<&str>) -> Vec<Fault> {
        self.rules
            .lock()
            .expect("fault lock")
            .iter()
            .filter(|(_, f)| f.token.is_none() || f.token.as_deref() == token)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// Applies the rules to a request: waits out a blackhole (until the rules change), sleeps
    /// the latency, then decides.
    pub async fn gate(&self, token: Option<&str>, is_write: bool) -> Verdict {
        let mut rx = self.changed.subscribe();
        loop {
            let rules = self.matching(token);
            if rules.iter().any(|f| f.drop_connections) {
                return Verdict::Drop;
            }
            if rules.iter().any(|f| f.blackhole) {
                // Held until some rule changes; then decide again.
                if rx.changed().await.is_err() {
                    return Verdict::Drop;
                }
                continue;
            }
            let latency: u64 = rules.iter().filter_map(|f| f.latency_ms).sum();
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            for f in &rules {
                if let Some(e) = &f.error
                    && (!e.writes_only || is_write)
                    && (e.rate >= 1.0 || rand::random::<f64>() < e.rate)
                {
                    return Verdict::Fail(ApiError::injected(e.code, e.retry_after_seconds));
                }
            }
            return Verdict::Proceed;
        }
    }

    /// Applies the network-level rules before a watch event is sent: stalls while
    /// blackholed, delays by the latency, and says whether to cut the stream.
    pub async fn stream_gate(&self, token: Option<&str>) -> bool {
        let mut rx = self.changed.subscribe();
        loop {
            let rules = self.matching(token);
            if rules.iter().any(|f| f.drop_connections) {
                return false;
            }
            if rules.iter().any(|f| f.blackhole) {
                if rx.changed().await.is_err() {
                    return false;
                }
                continue;
            }
            let latency: u64 = rules.iter().filter_map(|f| f.latency_ms).sum();
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn token_scoped_rules() {
        let f = Faults::default();
        f.add(Fault {
            token: Some("a".into()),
            error: Some(ErrorFault {
                code: 503,
                writes_only: true,
                rate: 1.0,
                retry_after_seconds: None,
            }),
            ..Fault::default()
        });
        assert!(matches!(f.gate(Some("a"), true).await, Verdict::Fail(e) if e.code == 503));
        assert!(matches!(f.gate(Some("a"), false).await, Verdict::Proceed));
        assert!(matches!(f.gate(Some("b"), true).await, Verdict::Proceed));
    }

    #[tokio::test]
    async fn blackhole_releases_on_clear() {
        let f = std::sync::Arc::new(Faults::default());
        let id = f.add(Fault {
            blackhole: true,
            ..Fault::default()
        });
        let g = f.clone();
        let held = tokio::spawn(async move { g.gate(None, false).await });
        tokio::task::yield_now().await;
        assert!(!held.is_finished());
        f.remove(id);
        assert!(matches!(held.await.unwrap(), Verdict::Proceed));
    }
}
