//! The sidecar's edges: every piece of I/O the control loop does, behind small traits, so
//! that the loop runs against the real Kubernetes API and Redis in production and against
//! in-memory fakes in its unit tests (as kube-rs' controller-rs does with its API verifier).
//!
//! * [`LeaseStore`]: the Lease (read, compare-and-set write, watch);
//! * [`Routing`]: the leader Service's selector, pod labels and annotations;
//! * [`PeerDirectory`]: the pods competing for the same Lease;
//! * [`RedisControl`] and [`RedisDialer`]: a Redis (the local one, a peer's, the leader's);
//! * [`EventSink`]: Events on the pod;
//! * [`FailsafeTransport`]: failsafe messages to the members' sidecars;
//! * [`Checkpoints`]: the leader's checkpoint writes into its Redis' data.
//!
//! A new coordination backend (another store for the lease) implements these traits and an
//! [`Edges`] that names them; nothing in the loop changes.

pub use super::failsafe::FailsafeTransport;
use super::failsafe::{HttpPeers, unix_ms};
use election::checkpoint::Checkpoint;
use election::elector::{ObservedLease, WriteIntent};
use futures::stream::BoxStream;
use kube_coord::events::{EventRecorder, SidecarEvent};
use kube_coord::{Coord, CoordError, Peer};
use redis_node::{NodeConfig, NodeError, Probe, RedisNode};
use std::collections::BTreeMap;
use std::time::Duration;

/// Label or annotation changes for a pod: `None` removes the key.
pub type Changes = BTreeMap<String, Option<String>>;

/// The Lease the group competes for.
pub trait LeaseStore {
    /// The Lease now; `None` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<ObservedLease>, CoordError>>;
    /// A compare-and-set write; `Err(CoordError::Conflict)` when it lost the race.
    fn write(
        &self,
        intent: &WriteIntent,
    ) -> impl Future<Output = Result<ObservedLease, CoordError>>;
    /// The Lease after every change, for as long as the stream is polled.
    fn watch(&self) -> BoxStream<'static, Result<Option<ObservedLease>, CoordError>>;
}

/// Where clients are sent: the leader Service and the pods' role labels and annotations.
pub trait Routing {
    /// Points `service`'s selector at `pod`.
    fn route_service(
        &self,
        service: &str,
        pod: &str,
    ) -> impl Future<Output = Result<(), CoordError>>;
    /// The pod `service` routes to, if it selects one.
    fn service_routes_to(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<Option<String>, CoordError>>;
    /// Changes `pod`'s labels and annotations.
    fn patch_pod(
        &self,
        pod: &str,
        labels: Changes,
        annotations: Changes,
    ) -> impl Future<Output = Result<(), CoordError>>;
}

/// The pods that compete for the same Lease.
pub trait PeerDirectory {
    /// Every such pod, this one included.
    fn peers(&self) -> impl Future<Output = Result<Vec<Peer>, CoordError>>;
}

/// One Redis, as the sidecar drives it.
pub trait RedisControl {
    /// `INFO` and the fence state.
    fn probe(&self) -> impl Future<Output = Result<Probe, NodeError>>;
    /// Refuses writes (`min-replicas-to-write` at the fence value).
    fn fence(&self) -> impl Future<Output = Result<(), NodeError>>;
    /// Takes writes again (or under the RPO mode's settings).
    fn unfence(&self, checkpoint: Option<&str>) -> impl Future<Output = Result<(), NodeError>>;
    /// `REPLICAOF NO ONE`.
    fn promote(&self) -> impl Future<Output = Result<(), NodeError>>;
    /// `REPLICAOF host port`.
    fn follow(&self, host: &str, port: u16) -> impl Future<Output = Result<(), NodeError>>;
    /// Disconnects clients (they reconnect through the Services); how many.
    fn drop_clients(&self) -> impl Future<Output = Result<u64, NodeError>>;
    /// `CLIENT PAUSE WRITE` for at most `timeout`.
    fn pause_writes(&self, timeout: Duration) -> impl Future<Output = Result<(), NodeError>>;
    /// `CLIENT UNPAUSE`.
    fn unpause(&self) -> impl Future<Output = Result<(), NodeError>>;
}

/// Connections to Redis servers: the peers' and the leader's.
pub trait RedisDialer {
    /// What a connection is.
    type Node: RedisControl;
    /// A (lazily connecting) handle on the Redis `cfg` names.
    fn dial(&self, cfg: NodeConfig) -> Result<Self::Node, NodeError>;
}

/// Events on this sidecar's pod.
pub trait EventSink {
    /// Records `event`; best effort.
    fn publish(&self, event: &SidecarEvent) -> impl Future<Output = Result<(), CoordError>>;
}

/// The leader's checkpoints (`election::checkpoint`): written into the local Redis' data
/// every checkpoint interval while this sidecar leads a writable Redis, off the control loop
/// (a write held by `CLIENT PAUSE WRITE` or a hung Redis must never stall the loop).
pub trait Checkpoints {
    /// Write checkpoints of `epoch` from now on; `None` stops. Cheap; called on every loop.
    fn leading(&self, epoch: Option<u32>);
}

/// Production: a task with a connection of its own to the local Redis.
pub struct CheckpointTask {
    leading: tokio::sync::watch::Sender<Option<u32>>,
}

impl CheckpointTask {
    /// Starts the task, writing every `interval` as `holder`; a zero interval writes nothing.
    pub fn start(node: RedisNode, holder: String, interval: Duration) -> Self {
        let (leading, mut rx) = tokio::sync::watch::channel(None::<u32>);
        if !interval.is_zero() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // The last checkpoint this task wrote (or read back), for the next to exceed.
                let mut last: Option<Checkpoint> = None;
                loop {
                    tick.tick().await;
                    let Some(epoch) = *rx.borrow_and_update() else {
                        last = None;
                        if rx.changed().await.is_err() {
                            return;
                        }
                        continue;
                    };
                    let epoch = u64::from(epoch);
                    if last.as_ref().is_none_or(|l| l.epoch != epoch) {
                        // A restarted sidecar of the same leader continues above what its
                        // Redis holds, whatever the wall clock did meanwhile.
                        last = match node.probe().await {
                            Ok(p) => p.checkpoint.as_deref().and_then(Checkpoint::parse),
                            Err(_) => continue,
                        };
                    }
                    let next = Checkpoint::next(epoch, &holder, last.as_ref(), unix_ms());
                    match node.write_checkpoint(&next.encode()).await {
                        Ok(()) => last = Some(next),
                        Err(e) => tracing::debug!(error = %e, "checkpoint not written"),
                    }
                }
            });
        }
        Self { leading }
    }
}

impl Checkpoints for CheckpointTask {
    fn leading(&self, epoch: Option<u32>) {
        self.leading.send_if_modified(|cur| {
            let changed = *cur != epoch;
            *cur = epoch;
            changed
        });
    }
}

/// The set of edges one sidecar runs against.
pub trait Edges {
    /// The Lease.
    type Lease: LeaseStore;
    /// Services and pod metadata.
    type Routing: Routing;
    /// The group's pods.
    type Peers: PeerDirectory;
    /// A Redis: the local one and, through [`Edges::Dialer`], the others.
    type Redis: RedisControl;
    /// Connections to other Redis servers.
    type Dialer: RedisDialer<Node = Self::Redis>;
    /// Events.
    type Events: EventSink;
    /// Failsafe messages to the members' sidecars.
    type Failsafe: FailsafeTransport;
    /// The leader's checkpoints.
    type Checkpoints: Checkpoints;
}

/// Production: the Kubernetes API through [`Coord`], Redis through [`RedisNode`].
pub struct Kubernetes;

impl Edges for Kubernetes {
    type Lease = Coord;
    type Routing = Coord;
    type Peers = Coord;
    type Redis = RedisNode;
    type Dialer = Dial;
    type Events = EventRecorder;
    type Failsafe = HttpPeers;
    type Checkpoints = CheckpointTask;
}

/// Dials real Redis servers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dial;

impl RedisDialer for Dial {
    type Node = RedisNode;
    fn dial(&self, cfg: NodeConfig) -> Result<RedisNode, NodeError> {
        RedisNode::new(cfg)
    }
}

impl LeaseStore for Coord {
    async fn get(&self) -> Result<Option<ObservedLease>, CoordError> {
        self.get_lease().await
    }
    async fn write(&self, intent: &WriteIntent) -> Result<ObservedLease, CoordError> {
        self.write_lease(intent).await
    }
    fn watch(&self) -> BoxStream<'static, Result<Option<ObservedLease>, CoordError>> {
        Box::pin(self.watch_lease())
    }
}

impl Routing for Coord {
    async fn route_service(&self, service: &str, pod: &str) -> Result<(), CoordError> {
        Coord::route_service(self, service, pod).await
    }
    async fn service_routes_to(&self, service: &str) -> Result<Option<String>, CoordError> {
        Coord::service_routes_to(self, service).await
    }
    async fn patch_pod(
        &self,
        pod: &str,
        labels: Changes,
        annotations: Changes,
    ) -> Result<(), CoordError> {
        Coord::patch_pod(self, pod, labels, annotations).await
    }
}

impl PeerDirectory for Coord {
    async fn peers(&self) -> Result<Vec<Peer>, CoordError> {
        Coord::peers(self).await
    }
}

impl RedisControl for RedisNode {
    async fn probe(&self) -> Result<Probe, NodeError> {
        RedisNode::probe(self).await
    }
    async fn fence(&self) -> Result<(), NodeError> {
        RedisNode::fence(self).await
    }
    async fn unfence(&self, checkpoint: Option<&str>) -> Result<(), NodeError> {
        RedisNode::unfence(self, checkpoint).await
    }
    async fn promote(&self) -> Result<(), NodeError> {
        RedisNode::promote(self).await
    }
    async fn follow(&self, host: &str, port: u16) -> Result<(), NodeError> {
        RedisNode::follow(self, host, port).await
    }
    async fn drop_clients(&self) -> Result<u64, NodeError> {
        RedisNode::drop_clients(self).await
    }
    async fn pause_writes(&self, timeout: Duration) -> Result<(), NodeError> {
        RedisNode::pause_writes(self, timeout).await
    }
    async fn unpause(&self) -> Result<(), NodeError> {
        RedisNode::unpause(self).await
    }
}

impl EventSink for EventRecorder {
    async fn publish(&self, event: &SidecarEvent) -> Result<(), CoordError> {
        EventRecorder::publish(self, event).await
    }
}
