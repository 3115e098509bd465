//! The Events a sidecar records on its own pod (`kubectl describe pod`, `kubectl get events`),
//! typed once: each kind has one reason, one action and one type.

use crate::CoordError;
use k8s_openapi::api::core::v1::ObjectReference;
use std::time::Duration;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The lease was released (shutdown, an unhealthy Redis, a restarted holder outranked).
    Released,
    /// The local Redis was fenced.
    Fenced,
    /// The previous leader's Redis was fenced by the new leader.
    FencedPrevious,
    /// This pod became the leader.
    Promoted,
    /// This pod follows a (new) leader.
    Following,
    /// This pod is no longer the leader.
    SteppedDown,
    /// The local Redis stopped answering, or is loading.
    RedisUnhealthy,
    /// The local Redis answers again.
    RedisHealthy,
    /// The leader's Redis was made a writable master again.
    Reconciled,
    /// An operator's switchover was refused.
    SwitchoverRefused,
    /// A stopping leader could not hand over and releases instead.
    HandoverSkipped,
    /// The lease was handed to a caught-up replica.
    HandedOver,
    /// The Kubernetes API became unavailable and this leader serves in failsafe.
    FailsafeStarted,
    /// A failsafe episode ended (the API answers again, or leadership ended).
    FailsafeEnded,
    /// After a whole-group restart, this pod waits for a majority of the members before it
    /// runs for the lease.
    ColdStartWaiting,
    /// The cold start's wait ended (a majority answered, the wait passed, or an operator
    /// forced the election); the note names the members missing.
    ColdStartEnded,
}

impl EventKind {
    /// The Event's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            EventKind::Released => "Released",
            EventKind::Fenced => "Fenced",
            EventKind::FencedPrevious => "FencedPrevious",
            EventKind::Promoted => "Promoted",
            EventKind::Following => "Following",
            EventKind::SteppedDown => "SteppedDown",
            EventKind::RedisUnhealthy => "RedisUnhealthy",
            EventKind::RedisHealthy => "RedisHealthy",
            EventKind::Reconciled => "Reconciled",
            EventKind::SwitchoverRefused => "SwitchoverRefused",
            EventKind::HandoverSkipped => "HandoverSkipped",
            EventKind::HandedOver => "HandedOver",
            EventKind::FailsafeStarted => "FailsafeStarted",
            EventKind::FailsafeEnded => "FailsafeEnded",
            EventKind::ColdStartWaiting => "ColdStartWaiting",
            EventKind::ColdStartEnded => "ColdStartEnded",
        }
    }

    /// The Event's `action`.
    pub fn action(self) -> &'static str {
        match self {
            EventKind::Released => "Release",
            EventKind::Fenced | EventKind::FencedPrevious => "Fence",
            EventKind::Promoted | EventKind::Reconciled => "Promote",
            EventKind::Following => "Follow",
            EventKind::SteppedDown => "Demote",
            EventKind::RedisUnhealthy | EventKind::RedisHealthy => "Probe",
            EventKind::SwitchoverRefused => "Switchover",
            EventKind::HandoverSkipped | EventKind::HandedOver => "Handover",
            EventKind::FailsafeStarted | EventKind::FailsafeEnded => "Failsafe",
            EventKind::ColdStartWaiting | EventKind::ColdStartEnded => "ColdStart",
        }
    }

    /// Whether it is a `Warning` (something an operator should look at) or `Normal`.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventKind::Fenced
                | EventKind::SteppedDown
                | EventKind::RedisUnhealthy
                | EventKind::Reconciled
                | EventKind::SwitchoverRefused
                | EventKind::HandoverSkipped
                | EventKind::FailsafeStarted
                | EventKind::ColdStartWaiting
        )
    }
}

/// One Event: its kind and what happened, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarEvent {
    /// Reason, action and type.
    pub kind: EventKind,
    /// The note people read.
    pub note: String,
}

impl SidecarEvent {
    /// An Event of `kind` saying `note`.
    pub fn new(kind: EventKind, note: impl Into<String>) -> Self {
        Self {
            kind,
            note: note.into(),
        }
    }
}

/// How long a repeat of an Event (same reason and note) counts into the first one's series
/// instead of making a new Event: client-go's events library's window.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// An Event recorded earlier, for its repeats.
#[derive(Clone, Debug)]
struct Recorded {
    name: String,
    count: i32,
    first: std::time::Instant,
}

/// Records `events.k8s.io/v1` Events on one pod, each request bounded by a timeout (an Event
/// must never hold up a role change).
///
/// Written over the Events API rather than with kube-rs' `Recorder` for two reasons kubectl
/// users see (issue 18): the Event must name the pod with its `uid`, or `kubectl describe
/// pod` (which selects by `involvedObject.uid`) lists none; and a repeat must be an Event
/// with the same note, where kube-rs' key leaves the note out, so "promoted at epoch 3"
/// was folded into the series of "promoted at epoch 1".
#[derive(Clone)]
pub struct EventRecorder {
    events: kube::Api<k8s_openapi::api::events::v1::Event>,
    pods: kube::Api<k8s_openapi::api::core::v1::Pod>,
    pod: String,
    ns: String,
    uid: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    recorded:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), Recorded>>>,
    timeout: Duration,
}

impl EventRecorder {
    /// Events on pod `pod` in `ns`, reported by the sidecar of that pod.
    pub fn new(client: kube::Client, ns: &str, pod: &str, timeout: Duration) -> Self {
        Self {
            events: kube::Api::namespaced(client.clone(), ns),
            pods: kube::Api::namespaced(client, ns),
            pod: pod.to_string(),
            ns: ns.to_string(),
            uid: Default::default(),
            recorded: Default::default(),
            timeout,
        }
    }

    /// The pod as Events name it: with its uid once known (read once; a pod re-created under
    /// the same name is a new sidecar process too).
    async fn regarding(&self) -> ObjectReference {
        let known = self.uid.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let uid = match known {
            Some(uid) => Some(uid),
            None => {
                // A list pinned to the name: the sidecar's Role may list pods, not get them.
                let only =
                    kube::api::ListParams::default().fields(&format!("metadata.name={}", self.pod));
                let pod = crate::bounded("list pods", self.timeout, self.pods.list(&only))
                    .await
                    .ok()
                    .and_then(|l| l.items.into_iter().next());
                let uid = pod.and_then(|p| p.metadata.uid);
                if let Some(u) = &uid {
                    *self.uid.lock().unwrap_or_else(|p| p.into_inner()) = Some(u.clone());
                }
                uid
            }
        };
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(self.pod.clone()),
            namespace: Some(self.ns.clone()),
            uid,
            ..Default::default()
        }
    }

    /// Records `event`; `Err` says why it was not (with the same labels as every other
    /// Kubernetes error, [`CoordError::label`]). A repeat within six minutes counts into the
    /// first one's `series`.
    pub async fn publish(&self, event: &SidecarEvent) -> Result<(), CoordError> {
        use k8s_openapi::api::events::v1::{Event, EventSeries};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let key = (event.kind.reason().to_string(), event.note.clone());
        let earlier = {
            let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            recorded.retain(|_, r| r.first.elapsed() < SERIES_WINDOW);
            recorded.get(&key).cloned()
        };
        let now = MicroTime(crate::now());
        if let Some(r) = earlier {
            let count = r.count + 1;
            let series = EventSeries {
                count,
                last_observed_time: now.clone(),
            };
            let patch = serde_json::json!({ "series": series });
            let patched = crate::bounded(
                "patch event",
                self.timeout,
                self.events.patch(
                    &r.name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                ),
            )
            .await;
            match patched {
                Ok(_) => {
                    if let Some(r) = self
                        .recorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&key)
                    {
                        r.count = count;
                    }
                    return Ok(());
                }
                // Deleted meanwhile (Events expire): record it anew.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // Names as client-go makes them: the object's name and a unique suffix.
        let name = format!("{}.{:016x}", self.pod, rand::random::<u64>());
        // The API refuses notes over 1 KiB.
        let mut note = event.note.clone();
        if note.len() > 1024 {
            let mut cut = 1024;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                ..Default::default()
            },
            event_time: Some(now),
            type_: Some(
                if event.kind.is_warning() {
                    "Warning"
                } else {
                    "Normal"
                }
                .into(),
            ),
            reason: Some(event.kind.reason().into()),
            action: Some(event.kind.action().into()),
            note: Some(note),
            regarding: Some(self.regarding().await),
            reporting_controller: Some("redis-k8s-election".into()),
            reporting_instance: Some(self.pod.clone()),
            ..Default::default()
        };
        crate::bounded(
            "create event",
            self.timeout,
            self.events.create(&kube::api::PostParams::default(), &ev),
        )
        .await?;
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                Recorded {
                    name,
                    count: 1,
                    first: std::time::Instant::now(),
                },
            );
        Ok(())
    }
}
