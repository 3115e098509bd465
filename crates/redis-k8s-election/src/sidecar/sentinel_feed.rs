//! The sidecar's side of the Sentinel-compatible endpoint (crate `sentinel`): it keeps the
//! endpoint's view of the group current (at once when the leader changes, so that
//! `+switch-master` goes out as soon as the Lease says so; the members' details once per
//! retry period) and carries `SENTINEL FAILOVER` to the hand-over.

use super::config::SentinelSettings;
use super::handover::{HandoverError, SwitchoverRequest};
use super::sentinel_view::{MemberFacts, ViewInput, group_view};
use super::*;
use kube_coord::Coord;
use redis_node::NodeConfig;
use sentinel::server::{Failover, FailoverRefusal};
use sentinel::view::GroupView;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, watch};

/// What the control loop keeps for the endpoint.
pub(super) struct SentinelFeed {
    pub(super) settings: SentinelSettings,
    pub(super) tx: watch::Sender<GroupView>,
    /// The members as the members task last listed and probed them: every member but this
    /// pod, terminating ones left out (read without waiting).
    pub(super) members: watch::Receiver<Vec<MemberFacts>>,
    /// Each member's HTTP API (`SENTINEL FAILOVER` on a non-leader goes to the leader's).
    pub(super) http_of: Arc<RwLock<HashMap<String, String>>>,
    /// This pod's endpoint ID.
    my_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SentinelFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SentinelFeed {
    /// Starts the members task: once per `period` it lists the group's pods and probes their
    /// Redis (all at once, each bounded by the Redis timeout). It runs beside the control
    /// loop, never in it: a peer that hangs must not delay an election.
    pub(super) fn start(
        settings: SentinelSettings,
        coord: Coord,
        me: String,
        id_of: impl Fn(&str) -> String + Send + 'static,
        node_config: impl Fn(String, u16) -> NodeConfig + Send + 'static,
        period: Duration,
    ) -> (Self, watch::Receiver<GroupView>) {
        let my_id = id_of(&me);
        let (tx, rx) = watch::channel(GroupView::default());
        let (members_tx, members) = watch::channel(Vec::new());
        let http_of: Arc<RwLock<HashMap<String, String>>> = Default::default();
        let http = http_of.clone();
        let task = tokio::spawn(async move {
            let mut nodes: HashMap<String, redis_node::RedisNode> = HashMap::new();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Ok(peers) = coord.peers().await else {
                    continue;
                };
                *http.write().expect("http map lock") = peers
                    .iter()
                    .filter_map(|p| Some((p.name.clone(), p.vouched_http().ok()?.to_string())))
                    .collect();
                let peers: Vec<_> = peers
                    .into_iter()
                    .filter(|p| p.name != me && !p.terminating && !p.address.is_empty())
                    .collect();
                for p in &peers {
                    if !nodes.contains_key(&p.address)
                        && let Some((host, port)) = split_host_port(&p.address)
                        && let Ok(n) = redis_node::RedisNode::new(node_config(host, port))
                    {
                        nodes.insert(p.address.clone(), n);
                    }
                }
                nodes.retain(|a, _| peers.iter().any(|p| p.address == *a));
                let probes = futures::future::join_all(peers.iter().map(|p| async {
                    match nodes.get(&p.address) {
                        Some(n) => n.probe().await.ok(),
                        None => None,
                    }
                }))
                .await;
                let facts = peers
                    .into_iter()
                    .zip(probes)
                    .map(|(p, probe)| MemberFacts {
                        host: split_host_port(&p.address)
                            .map(|(h, _)| h)
                            .unwrap_or_default(),
                        priority: p
                            .status
                            .as_ref()
                            .map_or(kube_coord::wire::DEFAULT_PRIORITY, |s| s.priority),
                        id: id_of(&p.name),
                        name: p.name,
                        ip: p.ip,
                        probe,
                    })
                    .collect();
                if members_tx.send(facts).is_err() {
                    return;
                }
            }
        });
        (
            Self {
                settings,
                tx,
                members,
                http_of,
                my_id,
                task,
            },
            rx,
        )
    }
}

impl<E: Edges> Sidecar<E> {
    /// Rebuilds the endpoint's view from what is known now (no I/O): called after every
    /// decision, so a leader change reaches subscribers without waiting for a listing, and
    /// whenever the members task has news.
    pub(super) fn update_sentinel_view(&mut self) {
        let Some(feed) = &self.sentinel else {
            return;
        };
        let (leader, epoch) = match self.elector.role() {
            Role::Leader { epoch, .. } => (Some(self.cfg.pod_name.clone()), *epoch),
            Role::Follower { leader, epoch, .. } => (Some(leader.clone()), *epoch),
            _ => (
                None,
                self.elector.observed().map_or(0, |l| l.record.transitions),
            ),
        };
        let me = MemberFacts {
            name: self.cfg.pod_name.clone(),
            id: feed.my_id.clone(),
            ip: self.cfg.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host: split_host_port(&self.address)
                .map(|(h, _)| h)
                .unwrap_or_default(),
            priority: self.priority(),
            probe: self.own_probe.clone(),
        };
        let mut members = vec![me];
        members.extend(feed.members.borrow().iter().cloned());
        let previous = feed.tx.borrow().master.clone();
        let view = group_view(&ViewInput {
            leader: leader.as_deref(),
            epoch,
            members: &members,
            me: &self.cfg.pod_name,
            addresses: feed.settings.addresses,
            redis_port: self.cfg.redis_port,
            sentinel_port: feed.settings.listen.port(),
            previous_master: previous,
        });
        feed.tx.send_if_modified(|v| {
            if *v == view {
                false
            } else {
                *v = view;
                true
            }
        });
    }
}

/// `SENTINEL FAILOVER`: the hand-over `POST /switchover` runs, on this pod when it leads,
/// else on the leader's sidecar (with the admin token, as the CLI sends it).
pub(super) struct SidecarFailover {
    pub(super) switchovers: mpsc::Sender<SwitchoverRequest>,
    pub(super) http_of: Arc<RwLock<HashMap<String, String>>>,
    pub(super) admin_token_file: Option<std::path::PathBuf>,
    pub(super) client: reqwest::Client,
    /// The peers' APIs over HTTPS (`--http-tls`).
    pub(super) api_tls: Option<crate::api_tls::ApiTls>,
}

/// Sentinel's reply for a refused hand-over, from its stable code ([`HandoverError::code`],
/// the `code` of a `/switchover` refusal): the same mapping whether the hand-over was refused
/// here or by the leader's sidecar.
fn refusal(code: &str, message: String) -> FailoverRefusal {
    match code {
        "busy" => FailoverRefusal::InProgress,
        // The target refusals (`election::handover::TargetRefusal::code`): no replica fits.
        "unknown_pod" | "already_leader" | "never_leads" | "terminating" | "not_replica"
        | "not_caught_up" | "no_candidate" => FailoverRefusal::NoGoodReplica(message),
        _ => FailoverRefusal::Other(message),
    }
}

impl SidecarFailover {
    async fn run(&self) -> Result<(), FailoverRefusal> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let req = SwitchoverRequest {
            to: None,
            force: false,
            reply,
        };
        if self.switchovers.try_send(req).is_err() {
            return Err(FailoverRefusal::InProgress);
        }
        match outcome.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(HandoverError::NotLeader { leader: Some(l) })) => self.forward(&l).await,
            Ok(Err(e)) => Err(refusal(e.code(), e.to_string())),
            Err(_) => Err(FailoverRefusal::Other(
                "the sidecar is shutting down".into(),
            )),
        }
    }

    async fn forward(&self, leader: &str) -> Result<(), FailoverRefusal> {
        let other = |m: String| FailoverRefusal::Other(m);
        let http = self
            .http_of
            .read()
            .expect("http map lock")
            .get(leader)
            .cloned()
            .ok_or_else(|| other(format!("the leader {leader}'s sidecar is not known yet")))?;
        let token = self
            .admin_token_file
            .as_deref()
            .and_then(super::http::read_admin_token)
            .ok_or_else(|| other("no admin token configured on this sidecar".into()))?;
        let r = self
            .client
            .post(crate::api_tls::url(
                self.api_tls.as_ref(),
                &http,
                "/switchover",
            ))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| other(format!("the leader's sidecar: {e}")))?;
        if r.status().is_success() {
            return Ok(());
        }
        let body: wire::Refusal = r
            .json()
            .await
            .map_err(|e| other(format!("the leader's sidecar: {e}")))?;
        Err(refusal(&body.code, body.error))
    }
}

impl Failover for SidecarFailover {
    fn failover(&self) -> Pin<Box<dyn Future<Output = Result<(), FailoverRefusal>> + Send + '_>> {
        Box::pin(self.run())
    }
}
