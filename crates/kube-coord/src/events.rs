//! The Events a sidecar records on its own pod (`kubectl describe pod`, `kubectl get events`),
//! typed once: each kind has one reason, one action and one type.

use crate::CoordError;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
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

/// Records Events on one pod, each request bounded by a timeout (an Event must never hold up
/// a role change).
#[derive(Clone)]
pub struct EventRecorder {
    recorder: Recorder,
    pod: ObjectReference,
    timeout: Duration,
}

impl EventRecorder {
    /// Events on pod `pod` in `ns`, reported by the sidecar of that pod.
    pub fn new(client: kube::Client, ns: &str, pod: &str, timeout: Duration) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "redis-k8s-election".into(),
                    instance: Some(pod.to_string()),
                },
            ),
            pod: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.to_string()),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            timeout,
        }
    }

    /// Records `event`; `Err` says why it was not (with the same labels as every other
    /// Kubernetes error, [`CoordError::label`]).
    pub async fn publish(&self, event: &SidecarEvent) -> Result<(), CoordError> {
        let ev = Event {
            type_: if event.kind.is_warning() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: event.kind.reason().into(),
            note: Some(event.note.clone()),
            action: event.kind.action().into(),
            secondary: None,
        };
        crate::bounded(
            "create event",
            self.timeout,
            self.recorder.publish(&ev, &self.pod),
        )
        .await
    }
}
