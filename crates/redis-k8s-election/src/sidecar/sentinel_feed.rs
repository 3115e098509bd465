//! The sidecar's side of the Sentinel-compatible endpoint (crate `sentinel`): it keeps the
//! endpoint's view of the group current (at once when the leader changes, so that
//! `+switch-master` goes out as soon as the Lease says so; the members' details once per
//! retry period) and carries `SENTINEL FAILOVER` to the hand-over.

use super::config::SentinelSettings;
use super::handover::{HandoverError, SwitchoverRequest};
use super::sentinel_view::{MemberFacts, ViewInput, group_view, sentinel_id};
use super::*;
use sentinel::server::{Failover, FailoverRefusal};
use sentinel::view::GroupView;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::{mpsc, watch};

/// What the control loop keeps for the endpoint.
pub(super) struct SentinelFeed {
    pub(super) settings: SentinelSettings,
    pub(super) tx: watch::Sender<GroupView>,
    /// The members as last listed and probed (this pod excluded).
    pub(super) peers: Vec<MemberFacts>,
    /// Each member's HTTP API (`SENTINEL FAILOVER` on a non-leader goes to the leader's).
    pub(super) http_of: Arc<RwLock<HashMap<String, String>>>,
    pub(super) refresh: Pacer,
}

impl SentinelFeed {
    pub(super) fn new(
        settings: SentinelSettings,
        retry: Duration,
    ) -> (Self, watch::Receiver<GroupView>) {
        let (tx, rx) = watch::channel(GroupView::default());
        (
            Self {
                settings,
                tx,
                peers: Vec::new(),
                http_of: Arc::new(RwLock::new(HashMap::new())),
                refresh: Pacer::new(retry),
            },
            rx,
        )
    }
}

impl<E: Edges> Sidecar<E> {
    /// Rebuilds the endpoint's view from what is known now (no I/O): called after every
    /// decision, so a leader change reaches subscribers without waiting for a listing.
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
            ip: self.cfg.pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            host: split_host_port(&self.address)
                .map(|(h, _)| h)
                .unwrap_or_default(),
            priority: self.cfg.priority,
            probe: self.own_probe.clone(),
        };
        let mut members = vec![me];
        members.extend(feed.peers.iter().cloned());
        let ns = self.namespace.clone();
        let lease = self.cfg.lease_name.clone();
        let id_of = move |pod: &str| sentinel_id(&ns, &lease, pod);
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
            id_of: &id_of,
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

    /// Once per retry period: the members' addresses and their Redis, for the endpoint's
    /// replica and Sentinel entries.
    pub(super) async fn refresh_sentinel(&mut self) {
        let due = match &self.sentinel {
            Some(f) => f.refresh.due(Instant::now()),
            None => false,
        };
        if !due || self.api_unavailable() {
            return;
        }
        if let Some(f) = &mut self.sentinel {
            f.refresh.attempted(Instant::now());
        }
        let listed = match self.peers.peers().await {
            Ok(p) => p,
            Err(e) => {
                self.api_error(&e);
                return;
            }
        };
        let http: HashMap<String, String> = listed
            .iter()
            .filter(|p| !p.http.is_empty())
            .map(|p| (p.name.clone(), p.http.clone()))
            .collect();
        let ips: HashMap<String, String> = listed
            .iter()
            .map(|p| (p.name.clone(), p.ip.clone()))
            .collect();
        let probed = match self.probe_peers().await {
            Ok(p) => p,
            Err(e) => {
                self.api_error(&e);
                return;
            }
        };
        if let Some(f) = &mut self.sentinel {
            f.peers = probed
                .into_iter()
                .filter(|p| !p.terminating)
                .map(|p| MemberFacts {
                    ip: ips.get(&p.name).cloned().unwrap_or_default(),
                    host: split_host_port(&p.address)
                        .map(|(h, _)| h)
                        .unwrap_or_default(),
                    name: p.name,
                    priority: p.priority,
                    probe: p.probe,
                })
                .collect();
            *f.http_of.write().expect("http map lock") = http;
        }
        self.update_sentinel_view();
    }
}

/// `SENTINEL FAILOVER`: the hand-over `POST /switchover` runs, on this pod when it leads,
/// else on the leader's sidecar (with the admin token, as the CLI sends it).
pub(super) struct SidecarFailover {
    pub(super) switchovers: mpsc::Sender<SwitchoverRequest>,
    pub(super) http_of: Arc<RwLock<HashMap<String, String>>>,
    pub(super) admin_token_file: Option<std::path::PathBuf>,
    pub(super) client: reqwest::Client,
}

fn refusal(e: &HandoverError) -> FailoverRefusal {
    match e {
        HandoverError::Busy => FailoverRefusal::InProgress,
        HandoverError::Target(t) => FailoverRefusal::NoGoodReplica(t.to_string()),
        other => FailoverRefusal::Other(other.to_string()),
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
            Ok(Err(e)) => Err(refusal(&e)),
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
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| other("no admin token configured on this sidecar".into()))?;
        let r = self
            .client
            .post(format!("http://{http}/switchover"))
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
        Err(match body.code.as_str() {
            "busy" => FailoverRefusal::InProgress,
            "no_candidate" | "not_caught_up" | "not_replica" | "terminating" | "unknown_pod" => {
                FailoverRefusal::NoGoodReplica(body.error)
            }
            _ => FailoverRefusal::Other(body.error),
        })
    }
}

impl Failover for SidecarFailover {
    fn failover(&self) -> Pin<Box<dyn Future<Output = Result<(), FailoverRefusal>> + Send + '_>> {
        Box::pin(self.run())
    }
}
