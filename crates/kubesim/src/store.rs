//! The object store: one global resourceVersion across all kinds (like an etcd revision), the
//! objects by storage key, a bounded history of changes for watches, and the broadcast that
//! live watches follow.
//!
//! Every mutation happens under one lock and is published to the broadcast channel inside that
//! lock, so a watcher that subscribes under the lock sees each change exactly once: either in
//! the history it replays or on the channel.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Namespace and name; the namespace is empty for cluster-scoped objects. Ordered like etcd
/// keys, so lists come out by namespace, then name.
pub type Key = (String, String);

/// What a change did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// The object was created.
    Added,
    /// The object was updated.
    Modified,
    /// The object was deleted.
    Deleted,
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion the change was committed at.
    pub rv: u64,
    /// Storage key of the kind (`events` for both Event APIs).
    pub storage: &'static str,
    /// Object key.
    pub key: Key,
    /// Added, Modified or Deleted.
    pub kind: ChangeKind,
    /// The state before (None for Added).
    pub old: Option<Arc<Value>>,
    /// The state after; for Deleted, the last state carrying the deletion's resourceVersion.
    pub new: Arc<Value>,
}

/// A service-account token issued through TokenRequest.
#[derive(Clone, Debug)]
pub struct SaToken {
    /// Namespace of the account.
    pub namespace: String,
    /// Account name.
    pub name: String,
    /// UID of the account the token was bound to: a token dies with its account.
    pub uid: String,
    /// Expiry as Unix seconds.
    pub expires_unix: i64,
}

/// The changes to replay and the live channel of a new watch.
pub type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

/// How many changes are kept for watches that resume from an older resourceVersion.
pub const DEFAULT_HISTORY: usize = 20_000;

/// The store. Wrapped in a lock by the server.
pub struct Store {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    /// Watches and snapshots from a resourceVersion below this have expired (410).
    floor: u64,
    max_history: usize,
    tx: broadcast::Sender<Arc<Change>>,
    /// Last allocated cluster IP offset.
    pub cluster_ip: u32,
    /// Tokens issued to service accounts.
    pub sa_tokens: HashMap<String, SaToken>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY)
    }
}

impl Store {
    /// An empty store keeping `max_history` changes.
    pub fn new(max_history: usize) -> Self {
        let (tx, _) = broadcast::channel(8192);
        Self {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            floor: 1,
            max_history,
            tx,
            cluster_ip: 0,
            sa_tokens: HashMap::new(),
        }
    }

    /// The current global resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// One object.
    pub fn get(&self, storage: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(storage)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a kind, optionally in one namespace, in key order.
    pub fn list(&self, storage: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(m) = self.objects.get(storage) else {
            return Vec::new();
        };
        match ns {
            None => m.values().cloned().collect(),
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
        }
    }

    /// Number of stored objects of all kinds.
    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > self.max_history {
            if let Some(c) = self.history.pop_front() {
                self.floor = c.rv;
            }
        }
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(change);
    }

    /// Writes `obj` (create or replace) at a new resourceVersion and returns the stored value.
    pub fn put(&mut self, storage: &'static str, key: Key, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let new = Arc::new(obj);
        let old = self
            .objects
            .entry(storage)
            .or_default()
            .insert(key.clone(), new.clone());
        let kind = if old.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        self.record(Change {
            rv,
            storage,
            key,
            kind,
            old,
            new: new.clone(),
        });
        new
    }

    /// Deletes an object at a new resourceVersion and returns its last state (carrying the
    /// deletion's resourceVersion, as the DELETED watch event does).
    pub fn remove(&mut self, storage: &'static str, key: &Key) -> Option<Arc<Value>> {
        let old = self.objects.get_mut(storage)?.remove(key)?;
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        let last = Arc::new(last);
        self.record(Change {
            rv,
            storage,
            key: key.clone(),
            kind: ChangeKind::Deleted,
            old: Some(old),
            new: last.clone(),
        });
        Some(last)
    }

    /// The live channel of committed changes, for in-process controllers (see
    /// [`next_change`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Subscribes for changes after `from_rv`: the retained changes to replay and the live
    /// channel, or `Err(floor)` when `from_rv` is older than the retained history.
    pub fn watch_from(&self, from_rv: u64) -> Result<Subscription, u64> {
        if from_rv < self.floor {
            return Err(self.floor);
        }
        let replay = self
            .history
            .iter()
            .filter(|c| c.rv > from_rv)
            .cloned()
            .collect();
        Ok((replay, self.tx.subscribe()))
    }

    /// The objects of a kind as they were at `rv`, rebuilt by undoing later changes, or
    /// `Err(floor)` when that point is no longer retained.
    pub fn snapshot_at(&self, storage: &str, rv: u64) -> Result<BTreeMap<Key, Arc<Value>>, u64> {
        if rv < self.floor {
            return Err(self.floor);
        }
        let mut state = self.objects.get(storage).cloned().unwrap_or_default();
        for c in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if c.storage != storage {
                continue;
            }
            match &c.old {
                Some(old) => {
                    state.insert(c.key.clone(), old.clone());
                }
                None => {
                    state.remove(&c.key);
                }
            }
        }
        Ok(state)
    }

    /// Forgets all history: every watch or snapshot from before now expires (410).
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }
}

/// Waits until a change to one of `storages` (any, when empty) arrives on `rx`, or `max`
/// passes: the wake-up of kubesim's in-process controllers, with `max` as their periodic
/// resync so that nothing waits on a missed wake-up. A lagging receiver missed changes, so it
/// counts as one.
pub async fn next_change(
    rx: &mut broadcast::Receiver<Arc<Change>>,
    storages: &[&str],
    max: std::time::Duration,
) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(c) if storages.is_empty() || storages.contains(&c.storage) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                // The store owns the sender: closed only while it is being dropped.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    let _ = tokio::time::timeout(max, wait).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Key {
        ("ns".into(), n.into())
    }

    #[test]
    fn rv_is_global_and_increasing() {
        let mut s = Store::default();
        let a = s.put("leases", key("a"), json!({"metadata":{"name":"a"}}));
        let b = s.put("pods", key("b"), json!({"metadata":{"name":"b"}}));
        let ra: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let rb: u64 = b["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rb > ra);
        let d = s.remove("leases", &key("a")).unwrap();
        let rd: u64 = d["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rd > rb);
    }

    #[test]
    fn snapshot_undoes_later_changes() {
        let mut s = Store::default();
        s.put("leases", key("a"), json!({"metadata":{"name":"a"},"v":1}));
        let at = s.rv();
        s.put("leases", key("a"), json!({"metadata":{"name":"a"},"v":2}));
        s.put("leases", key("b"), json!({"metadata":{"name":"b"}}));
        let snap = s.snapshot_at("leases", at).unwrap();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[&key("a")]["v"], 1);
        s.compact();
        assert!(s.snapshot_at("leases", at).is_err());
        assert!(s.watch_from(at).is_err());
    }

    #[test]
    fn list_by_namespace() {
        let mut s = Store::default();
        s.put("pods", ("a".into(), "x".into()), json!({"metadata":{}}));
        s.put("pods", ("b".into(), "y".into()), json!({"metadata":{}}));
        s.put("pods", ("b".into(), "z".into()), json!({"metadata":{}}));
        assert_eq!(s.list("pods", Some("b")).len(), 2);
        assert_eq!(s.list("pods", None).len(), 3);
        assert_eq!(s.list("pods", Some("c")).len(), 0);
    }
}
