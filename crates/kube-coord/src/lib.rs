//! Kubernetes I/O of the sidecar: the Lease (read, compare-and-set writes, watch), routing
//! (the leader Service's selector, role labels, pod annotations), peer discovery and Events.
//!
//! Every request has its own timeout (kube-rs sets none for reads), and every failure is a
//! typed [`CoordError`] that the runtime retries within the renew deadline.

pub mod client;
pub mod events;
pub mod history;
pub mod wire;

use election::elector::{LeaseRecord, ObservedLease, Stamp, WriteIntent};
use election::failsafe::Member;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Lease annotation: the holder's announce address, so followers need no other lookup.
pub const LEADER_ADDRESS_ANNOTATION: &str = "redis-k8s-election.io/leader-address";
/// Lease annotation: the holder a leader handed the lease to on a planned move.
pub const HANDOVER_ANNOTATION: &str = "redis-k8s-election.io/handover-to";
/// Lease annotation: set while automatic failover is paused (`redis-k8s-election pause`).
pub const PAUSED_ANNOTATION: &str = "redis-k8s-election.io/paused";
/// Lease annotation: the last role changes, as JSON (see [`history`]).
pub const HISTORY_ANNOTATION: &str = "redis-k8s-election.io/history";
/// Lease annotation: the group as its holder last listed it, as JSON (`[{"name", "http"}]`):
/// the members a failsafe round asks, and the pods a joining pod must prove free (DESIGN 3a).
pub const MEMBERS_ANNOTATION: &str = "redis-k8s-election.io/members";
/// Pod annotation: where this sidecar's HTTP API listens (`host:port`).
pub const POD_HTTP_ANNOTATION: &str = "redis-k8s-election.io/http";
/// Pod annotation: this sidecar's announce address.
pub const POD_ADDRESS_ANNOTATION: &str = "redis-k8s-election.io/address";
/// Pod annotation: which Lease this pod competes for (peer discovery).
pub const POD_LEASE_ANNOTATION: &str = "redis-k8s-election.io/lease";
/// Pod annotation: a short JSON status (role, epoch, priority, offset, fenced).
pub const POD_STATUS_ANNOTATION: &str = "redis-k8s-election.io/status";
/// The label a StatefulSet puts on each pod, which the leader Service selects on.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Pod tag (an annotation an operator sets, as Patroni's `nofailover`): `"true"` and this pod
/// never leads, whatever `--priority` says.
pub const TAG_NOFAILOVER: &str = "redis-k8s-election.io/nofailover";
/// Pod tag (Patroni's `noloadbalance`): `"true"` keeps this pod out of the read Service.
pub const TAG_NOLOADBALANCE: &str = "redis-k8s-election.io/noloadbalance";
/// Pod tag: this pod's leadership priority (lower leads first, 0 never), over `--priority`.
pub const TAG_PRIORITY: &str = "redis-k8s-election.io/priority";
/// Pod label the sidecar keeps: `"true"` while the pod may serve reads (ready, not tagged
/// `noloadbalance`); the shipped read Service selects it.
pub const READ_LABEL: &str = "redis-k8s-election.io/read";

/// A pod's tags, read from its annotations ([`TAG_NOFAILOVER`], [`TAG_NOLOADBALANCE`],
/// [`TAG_PRIORITY`]): what an operator says of one pod without restarting it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tags {
    /// Never lead.
    pub nofailover: bool,
    /// Stay out of the read Service.
    pub noloadbalance: bool,
    /// The priority the annotation sets, if it sets a valid one.
    pub priority: Option<u32>,
    /// Annotations that could not be read, with why (they are ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Tags {
    /// The tags `annotations` set. A value that is not `true`/`false` (or, for the priority,
    /// a whole number) is ignored and named in [`Tags::problems`].
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Self {
        let mut tags = Tags::default();
        let mut flag = |key: &str| match annotations.get(key).map(|v| v.trim()) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => {
                tags.problems
                    .push(format!("{key}: {v:?} is not true or false; ignored"));
                false
            }
        };
        let nofailover = flag(TAG_NOFAILOVER);
        let noloadbalance = flag(TAG_NOLOADBALANCE);
        tags.nofailover = nofailover;
        tags.noloadbalance = noloadbalance;
        if let Some(v) = annotations.get(TAG_PRIORITY) {
            match v.trim().parse::<u32>() {
                Ok(p) => tags.priority = Some(p),
                Err(_) => tags.problems.push(format!(
                    "{TAG_PRIORITY}: {v:?} is not a whole number; ignored"
                )),
            }
        }
        tags
    }

    /// The leadership priority these tags leave of `configured` (`--priority`).
    pub fn priority(&self, configured: u32) -> u32 {
        if self.nofailover {
            0
        } else {
            self.priority.unwrap_or(configured)
        }
    }
}

/// The typed meaning of a failed Lease call ([`CoordError::outcome`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiOutcome {
    /// Somebody else wrote or deleted the Lease: leadership ends at once.
    LeaseLost,
    /// The API did not serve us: the lease may still be ours.
    Unavailable,
}

/// Why a Kubernetes call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// No answer within the request timeout.
    #[error("{op}: no answer from the API server within {timeout:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The bound.
        timeout: Duration,
    },
    /// 409: a compare-and-set lost, or the object already exists.
    #[error("{op}: conflict: {message}")]
    Conflict {
        /// The operation.
        op: &'static str,
        /// The server's message.
        message: String,
    },
    /// Any other API answer (401, 403, 404, 422, 5xx), with the server's code and reason.
    #[error("{op}: {code} {reason}: {message}")]
    Api {
        /// The operation.
        op: &'static str,
        /// HTTP code.
        code: u16,
        /// Status reason.
        reason: String,
        /// Status message.
        message: String,
    },
    /// Transport or decoding failure.
    #[error("{op}: {message}")]
    Transport {
        /// The operation.
        op: &'static str,
        /// What happened.
        message: String,
    },
}

impl CoordError {
    /// A short label for metrics: `timeout`, `conflict`, `unauthorized`, `forbidden`,
    /// `not_found`, `invalid`, `server_error`, `transport`.
    pub fn label(&self) -> &'static str {
        match self {
            CoordError::Timeout { .. } => "timeout",
            CoordError::Conflict { .. } => "conflict",
            CoordError::Api { code: 401, .. } => "unauthorized",
            CoordError::Api { code: 403, .. } => "forbidden",
            CoordError::Api { code: 404, .. } => "not_found",
            CoordError::Api { code: 422, .. } => "invalid",
            CoordError::Api { .. } => "server_error",
            CoordError::Transport { .. } => "transport",
        }
    }

    /// The object does not exist (404): for a pod that is gone, not an error worth a retry.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CoordError::Api { code: 404, .. })
    }

    /// What a failed Lease call means for the election (DESIGN 3a): only a 409 (somebody
    /// else wrote the Lease) or a 404 (somebody deleted it) says the lease is lost. Every
    /// other failure (refused or reset connections, timeouts, 5xx, 429, 401, 403, a broken
    /// watch, an answer that does not parse) says only that the API is unavailable to us:
    /// the lease may well still be ours, and the leader keeps it as long as its validity
    /// lasts, through failsafe when that is on. Patroni demoted primaries on exactly these
    /// (its issues #3344 and #3462 and PR #3687) because it did not tell them apart.
    pub fn outcome(&self) -> ApiOutcome {
        match self {
            CoordError::Conflict { .. } | CoordError::Api { code: 404, .. } => {
                ApiOutcome::LeaseLost
            }
            _ => ApiOutcome::Unavailable,
        }
    }

    fn from_kube(op: &'static str, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) if s.code == 409 => CoordError::Conflict {
                op,
                message: s.message,
            },
            kube::Error::Api(s) => CoordError::Api {
                op,
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            other => CoordError::Transport {
                op,
                message: other.to_string(),
            },
        }
    }
}

/// Runs a call with the request timeout.
async fn bounded<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CoordError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(CoordError::Timeout { op, timeout }),
        Ok(r) => r.map_err(|e| CoordError::from_kube(op, e)),
    }
}

/// The wall-clock time now, RFC 3339 (for history entries and markers people read).
pub fn now_rfc3339() -> String {
    now().to_string()
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(d.as_secs() as i64, d.subsec_nanos() as i32).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn stamp(t: &Option<MicroTime>) -> String {
    t.as_ref().map(|m| m.0.to_string()).unwrap_or_default()
}

/// The election's view of a Lease.
pub fn observe(lease: &Lease) -> ObservedLease {
    let spec = lease.spec.clone().unwrap_or_default();
    ObservedLease {
        record: LeaseRecord {
            holder: spec.holder_identity.unwrap_or_default(),
            holder_address: lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEADER_ADDRESS_ANNOTATION).cloned())
                .unwrap_or_default(),
            lease_duration: Duration::from_secs(
                spec.lease_duration_seconds.unwrap_or(0).max(0) as u64
            ),
            transitions: spec.lease_transitions.unwrap_or(0).max(0) as u32,
            acquire_stamp: stamp(&spec.acquire_time),
            renew_stamp: stamp(&spec.renew_time),
            handover_to: annotation(lease, HANDOVER_ANNOTATION),
            paused: annotation(lease, PAUSED_ANNOTATION),
            history: annotation(lease, HISTORY_ANNOTATION),
            members: decode_members(&annotation(lease, MEMBERS_ANNOTATION)),
        },
        version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

fn annotation(lease: &Lease, key: &str) -> String {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key).cloned())
        .unwrap_or_default()
}

/// The membership annotation's value; empty for no members.
pub fn encode_members(members: &[Member]) -> String {
    if members.is_empty() {
        return String::new();
    }
    serde_json::Value::Array(
        members
            .iter()
            .map(|m| json!({"name": m.name, "http": m.http}))
            .collect(),
    )
    .to_string()
}

/// The membership an annotation records. Anything that does not parse as the list
/// [`encode_members`] writes counts as no membership (failsafe off for that lease), never as
/// an error: the annotation is written by sidecars, but anyone allowed to patch the Lease
/// could change it.
pub fn decode_members(s: &str) -> Vec<Member> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(s) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        match (
            item.get("name").and_then(|v| v.as_str()),
            item.get("http").and_then(|v| v.as_str()),
        ) {
            (Some(name), Some(http)) if !name.is_empty() => out.push(Member {
                name: name.to_string(),
                http: http.to_string(),
            }),
            _ => return Vec::new(),
        }
    }
    out
}

/// The Lease object a write intent stands for (renewTime = now).
pub fn lease_for(name: &str, intent: &WriteIntent) -> Lease {
    let t = now();
    let acquire = match &intent.acquire {
        Stamp::Now => Some(MicroTime(t)),
        Stamp::Keep(s) if s.is_empty() => None,
        Stamp::Keep(s) => s
            .parse::<Timestamp>()
            .ok()
            .map(MicroTime)
            .or(Some(MicroTime(t))),
    };
    let mut annotations = BTreeMap::new();
    if !intent.holder_address.is_empty() {
        annotations.insert(
            LEADER_ADDRESS_ANNOTATION.to_string(),
            intent.holder_address.clone(),
        );
    }
    if !intent.handover_to.is_empty() {
        annotations.insert(HANDOVER_ANNOTATION.to_string(), intent.handover_to.clone());
    }
    if !intent.paused.is_empty() {
        annotations.insert(PAUSED_ANNOTATION.to_string(), intent.paused.clone());
    }
    let members = encode_members(&intent.members);
    if !members.is_empty() {
        annotations.insert(MEMBERS_ANNOTATION.to_string(), members);
    }
    // A new leader's entry goes into the same compare-and-set write that makes it leader.
    let history = match &intent.change {
        Some(change) => history::record(
            &intent.history,
            intent.transitions,
            &intent.holder,
            change,
            t.to_string(),
        ),
        None => intent.history.clone(),
    };
    if !history.is_empty() {
        annotations.insert(HISTORY_ANNOTATION.to_string(), history);
    }
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version: intent.version.clone(),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(intent.holder.clone()),
            // Lease durations are whole seconds; round up, never down.
            lease_duration_seconds: Some(intent.lease_duration.as_secs_f64().ceil().max(1.0) as i32),
            acquire_time: acquire,
            renew_time: Some(MicroTime(t)),
            lease_transitions: Some(intent.transitions as i32),
            ..LeaseSpec::default()
        }),
    }
}

/// A peer sidecar as its pod shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Pod name.
    pub name: String,
    /// Its announce address.
    pub address: String,
    /// Where its HTTP API listens (empty: not published).
    pub http: String,
    /// The pod's labels (role label, pod-name label).
    pub labels: BTreeMap<String, String>,
    /// Its last published summary, if any (and if it parses).
    pub status: Option<wire::PodSummary>,
    /// The pod is being deleted (it has a `deletionTimestamp`): it is shutting down and must
    /// not be handed the lease, e.g. when a node drain stops several pods at once.
    pub terminating: bool,
    /// `status.podIP` (empty before the kubelet set it): written only by the node, so an
    /// address the API vouches for.
    pub ip: String,
    /// The operator's tags on the pod.
    pub tags: Tags,
}

impl Peer {
    /// Where this pod's sidecar API listens, as the API vouches for it. The `http` annotation
    /// is a hint that anyone allowed to patch pods can write (the sidecars' own service
    /// account can): a patched one made `switchover` send the admin token to a listener of
    /// the attacker's. It is taken only when its host is the pod's IP (`status.podIP`,
    /// written by the node alone); otherwise the reason it is not.
    pub fn vouched_http(&self) -> Result<&str, String> {
        if self.http.is_empty() {
            return Err("the pod does not publish its HTTP address".into());
        }
        if self.ip.is_empty() {
            return Err("the pod has no IP yet".into());
        }
        let host = self
            .http
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or_default();
        let same = host == self.ip
            || matches!(
                (host.parse::<std::net::IpAddr>(), self.ip.parse::<std::net::IpAddr>()),
                (Ok(a), Ok(b)) if a == b
            );
        if same {
            Ok(&self.http)
        } else {
            Err(format!(
                "its published HTTP address {} is not on its pod IP {}: ignored",
                self.http, self.ip
            ))
        }
    }
}

#[cfg(test)]
mod peer_tests {
    use super::Peer;

    fn peer(http: &str, ip: &str) -> Peer {
        Peer {
            name: "redis-1".into(),
            address: String::new(),
            http: http.into(),
            labels: Default::default(),
            status: None,
            terminating: false,
            ip: ip.into(),
            tags: crate::Tags::default(),
        }
    }

    #[test]
    fn the_http_annotation_counts_only_on_the_pod_ip() {
        assert_eq!(
            peer("10.0.0.7:9121", "10.0.0.7").vouched_http(),
            Ok("10.0.0.7:9121")
        );
        assert_eq!(
            peer("[fd00::7]:9121", "fd00::7").vouched_http(),
            Ok("[fd00::7]:9121")
        );
        for (http, ip) in [
            ("10.0.0.66:9121", "10.0.0.7"),
            ("evil.example:9121", "10.0.0.7"),
            ("10.0.0.7:9121", ""),
            ("", "10.0.0.7"),
            ("10.0.0.7", "10.0.0.7"),
        ] {
            assert!(peer(http, ip).vouched_http().is_err(), "{http} on {ip}");
        }
    }
}

/// Kubernetes access for one sidecar.
#[derive(Clone)]
pub struct Coord {
    leases: Api<Lease>,
    pods: Api<Pod>,
    services: Api<Service>,
    lease_name: String,
    namespace: String,
    timeout: Duration,
}

impl Coord {
    /// Access to namespace `ns` for the Lease `lease_name`, each request bounded by `timeout`.
    pub fn new(client: kube::Client, ns: &str, lease_name: &str, timeout: Duration) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client.clone(), ns),
            services: Api::namespaced(client, ns),
            lease_name: lease_name.to_string(),
            namespace: ns.to_string(),
            timeout,
        }
    }

    /// The namespace it works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Reads the Lease; `None` when it does not exist.
    pub async fn get_lease(&self) -> Result<Option<ObservedLease>, CoordError> {
        let l = bounded(
            "get lease",
            self.timeout,
            self.leases.get_opt(&self.lease_name),
        )
        .await?;
        Ok(l.as_ref().map(observe))
    }

    /// Creates (no version) or compare-and-set replaces the Lease.
    pub async fn write_lease(&self, intent: &WriteIntent) -> Result<ObservedLease, CoordError> {
        let lease = lease_for(&self.lease_name, intent);
        let written = match intent.version {
            None => {
                bounded(
                    "create lease",
                    self.timeout,
                    self.leases.create(&PostParams::default(), &lease),
                )
                .await?
            }
            Some(_) => {
                bounded(
                    "replace lease",
                    self.timeout,
                    self.leases
                        .replace(&self.lease_name, &PostParams::default(), &lease),
                )
                .await?
            }
        };
        Ok(observe(&written))
    }

    /// The Lease's state after every change (`None` while it does not exist), from a watch
    /// that relists after errors with kube-rs' default backoff.
    pub fn watch_lease(
        &self,
    ) -> impl Stream<Item = Result<Option<ObservedLease>, CoordError>> + Send + 'static {
        use kube::runtime::WatchStreamExt;
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.lease_name));
        let mut current: Option<ObservedLease> = None;
        watcher::watcher(self.leases.clone(), cfg)
            .default_backoff()
            .filter_map(move |ev| {
                let out = match ev {
                    Ok(watcher::Event::Init) => {
                        current = None;
                        None
                    }
                    Ok(watcher::Event::InitApply(l)) => {
                        current = Some(observe(&l));
                        None
                    }
                    Ok(watcher::Event::InitDone) => Some(Ok(current.clone())),
                    Ok(watcher::Event::Apply(l)) => {
                        current = Some(observe(&l));
                        Some(Ok(current.clone()))
                    }
                    Ok(watcher::Event::Delete(_)) => {
                        current = None;
                        Some(Ok(None))
                    }
                    Err(e) => Some(Err(CoordError::Transport {
                        op: "watch lease",
                        message: e.to_string(),
                    })),
                };
                futures::future::ready(out)
            })
    }

    /// Points the Service's selector at one pod, as one write (the whole selector replaced).
    pub async fn route_service(&self, service: &str, pod: &str) -> Result<(), CoordError> {
        let patch =
            json!([{"op": "add", "path": "/spec/selector", "value": {POD_NAME_LABEL: pod}}]);
        let p: Patch<()> = Patch::Json(serde_json::from_value(patch).expect("valid JSON patch"));
        bounded(
            "route service",
            self.timeout,
            self.services.patch(service, &PatchParams::default(), &p),
        )
        .await?;
        Ok(())
    }

    /// The pod the Service's selector names (`statefulset.kubernetes.io/pod-name`), if any.
    pub async fn service_routes_to(&self, service: &str) -> Result<Option<String>, CoordError> {
        Ok(self
            .service_selector(service)
            .await?
            .and_then(|s| s.get(POD_NAME_LABEL).cloned()))
    }

    /// Sets labels and annotations on a pod (strategic merge; `None` removes a key).
    pub async fn patch_pod(
        &self,
        pod: &str,
        labels: BTreeMap<String, Option<String>>,
        annotations: BTreeMap<String, Option<String>>,
    ) -> Result<(), CoordError> {
        let patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
        bounded(
            "patch pod",
            self.timeout,
            self.pods
                .patch(pod, &PatchParams::default(), &Patch::Strategic(patch)),
        )
        .await?;
        Ok(())
    }

    /// Sets (`Some(marker)`) or clears the pause marker on the Lease with a merge patch of
    /// that one annotation. The holder's next renewal then conflicts, rereads and carries
    /// the marker on, so no write of the holder can drop it.
    pub async fn set_paused(&self, marker: Option<&str>) -> Result<ObservedLease, CoordError> {
        let patch = json!({"metadata": {"annotations": {PAUSED_ANNOTATION: marker}}});
        let l = bounded(
            "patch lease",
            self.timeout,
            self.leases.patch(
                &self.lease_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            ),
        )
        .await?;
        Ok(observe(&l))
    }

    /// The Service's selector as a whole (`None`: no selector).
    pub async fn service_selector(
        &self,
        service: &str,
    ) -> Result<Option<BTreeMap<String, String>>, CoordError> {
        let svc = bounded("get service", self.timeout, self.services.get(service)).await?;
        Ok(svc.spec.and_then(|s| s.selector))
    }

    /// Pods that compete for the same Lease (by their lease annotation), with their addresses.
    pub async fn peers(&self) -> Result<Vec<Peer>, CoordError> {
        let list = bounded(
            "list pods",
            self.timeout,
            self.pods.list(&Default::default()),
        )
        .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|p| {
                let a = p.metadata.annotations.clone().unwrap_or_default();
                if a.get(POD_LEASE_ANNOTATION) != Some(&self.lease_name) {
                    return None;
                }
                Some(Peer {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    address: a.get(POD_ADDRESS_ANNOTATION).cloned().unwrap_or_default(),
                    http: a.get(POD_HTTP_ANNOTATION).cloned().unwrap_or_default(),
                    labels: p.metadata.labels.clone().unwrap_or_default(),
                    status: a
                        .get(POD_STATUS_ANNOTATION)
                        .and_then(|s| serde_json::from_str(s).ok()),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    tags: Tags::from_annotations(&a),
                    ip: p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.clone())
                        .unwrap_or_default(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_to_lease_and_back() {
        let intent = WriteIntent {
            purpose: election::elector::Purpose::Acquire,
            version: Some("7".into()),
            holder: "redis-1".into(),
            holder_address: "redis-1.redis.ns.svc.cluster.local:6379".into(),
            lease_duration: Duration::from_millis(2_500),
            transitions: 4,
            acquire: Stamp::Now,
            handover_to: String::new(),
            paused: "since 2026-11-24T00:00:00Z".into(),
            history: "[]".into(),
            members: vec![Member {
                name: "redis-1".into(),
                http: "10.0.0.2:9121".into(),
            }],
            change: None,
        };
        let lease = lease_for("l", &intent);
        assert_eq!(observe(&lease).record.members, intent.members);
        assert_eq!(lease.spec.as_ref().unwrap().lease_duration_seconds, Some(3));
        let o = observe(&lease);
        assert_eq!(o.record.holder, "redis-1");
        assert_eq!(
            o.record.holder_address,
            "redis-1.redis.ns.svc.cluster.local:6379"
        );
        assert_eq!(o.record.transitions, 4);
        assert_eq!(o.version, "7");
        assert_eq!(
            (o.record.paused.as_str(), o.record.history.as_str()),
            ("since 2026-11-24T00:00:00Z", "[]")
        );
        // A kept acquire stamp survives the round trip.
        let keep = WriteIntent {
            acquire: Stamp::Keep(o.record.acquire_stamp.clone()),
            ..intent
        };
        assert_eq!(
            observe(&lease_for("l", &keep)).record.acquire_stamp,
            o.record.acquire_stamp
        );
    }

    #[test]
    fn members_round_trip_and_bad_values_mean_none() {
        let m = vec![
            Member {
                name: "redis-0".into(),
                http: "10.0.0.1:9121".into(),
            },
            Member {
                name: "redis-1".into(),
                http: "10.0.0.2:9121".into(),
            },
        ];
        assert_eq!(decode_members(&encode_members(&m)), m);
        assert_eq!(encode_members(&[]), "");
        for bad in [
            "",
            "{}",
            "[1]",
            r#"[{"name": "a"}]"#,
            r#"[{"name": "", "http": "x"}]"#,
            "nonsense",
        ] {
            assert!(decode_members(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn only_a_conflict_or_a_deleted_lease_is_lost() {
        let api = |code: u16| CoordError::Api {
            op: "replace lease",
            code,
            reason: String::new(),
            message: String::new(),
        };
        let conflict = CoordError::Conflict {
            op: "replace lease",
            message: String::new(),
        };
        assert_eq!(conflict.outcome(), ApiOutcome::LeaseLost);
        assert_eq!(api(404).outcome(), ApiOutcome::LeaseLost);
        for code in [401, 403, 429, 500, 502, 503, 504] {
            assert_eq!(api(code).outcome(), ApiOutcome::Unavailable, "{code}");
        }
        let timeout = CoordError::Timeout {
            op: "replace lease",
            timeout: Duration::from_secs(2),
        };
        let refused = CoordError::Transport {
            op: "replace lease",
            message: "connection refused".into(),
        };
        assert_eq!(timeout.outcome(), ApiOutcome::Unavailable);
        assert_eq!(refused.outcome(), ApiOutcome::Unavailable);
    }
}
