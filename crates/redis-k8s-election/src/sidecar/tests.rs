//! Unit tests of the control loop over fake edges: an in-memory Lease with compare-and-set,
//! in-memory Redis servers by address, a pod list, routing and Events, all in one [`World`]
//! the test inspects. Time is tokio's paused clock, so deadlines pass when a test says so.

use super::edges::{
    Changes, Edges, EventSink, LeaseStore, PeerDirectory, RedisControl, RedisDialer, Routing,
};
use super::handover::{HandoverError, Trigger};
use super::*;
use election::elector::{ObservedLease, WriteIntent};
use election::failsafe::{Member, Reply};
use election::handover::TargetRefusal;
use failsafe::{AskMessage, PeerKey, ReplyMessage};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kube_coord::Peer;
use redis_node::info::{NodeInfo, Role as RedisRole};
use redis_node::{NodeConfig, NodeError, Probe};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;

/// One Redis server.
#[derive(Clone, Debug)]
struct FakeRedis {
    up: bool,
    /// `None`: a master.
    master: Option<(String, u16)>,
    link_up: bool,
    offset: u64,
    fenced: bool,
    paused: bool,
    /// The checkpoint its data holds.
    checkpoint: Option<String>,
    /// Its process' `run_id`.
    run_id: String,
}

impl FakeRedis {
    /// How the manifests start Redis: a fenced replica of itself, empty.
    fn started(host: &str) -> Self {
        FakeRedis {
            up: true,
            master: Some((host.into(), 6379)),
            link_up: false,
            offset: 0,
            fenced: true,
            paused: false,
            checkpoint: None,
            run_id: format!("{host}-1"),
        }
    }

    fn replica_of(leader: &str, offset: u64) -> Self {
        FakeRedis {
            up: true,
            master: Some((leader.into(), 6379)),
            link_up: true,
            offset,
            fenced: false,
            paused: false,
            checkpoint: None,
            run_id: format!("{leader}-replica"),
        }
    }
}

/// How the next Lease writes end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writes {
    /// Compare-and-set, answered.
    Normal,
    /// No answer (the API is unreachable); nothing committed.
    TimeOut,
    /// The next write commits, but its answer is lost; later writes are answered.
    CommitUnanswered,
}

/// Everything the fake edges share.
struct World {
    lease: Option<ObservedLease>,
    version: u64,
    writes: Writes,
    reads_fail: bool,
    /// Every Lease call and listing hangs for `hang_for` (the request timeout), then fails
    /// (a blackholed API).
    hang: bool,
    hang_for: Duration,
    redis: HashMap<String, FakeRedis>,
    pods: Vec<Peer>,
    routed_to: Option<String>,
    labels: HashMap<String, String>,
    /// The read label ([`kube_coord::READ_LABEL`]) by pod.
    read_labels: HashMap<String, String>,
    events: Vec<SidecarEvent>,
    /// What the sidecar last told its checkpoint writer.
    checkpoint_epoch: Option<u32>,
}

type Shared = Rc<RefCell<World>>;

fn timeout(op: &'static str) -> CoordError {
    CoordError::Timeout {
        op,
        timeout: Duration::from_millis(500),
    }
}

struct Fakes;

impl Edges for Fakes {
    type Lease = FakeEdge;
    type Routing = FakeEdge;
    type Peers = FakeEdge;
    type Redis = FakeNode;
    type Dialer = FakeEdge;
    type Events = FakeEdge;
    type Failsafe = FakePeers;
    type Checkpoints = FakeEdge;
}

/// The members' sidecars: each answers a failsafe question as set here (`None`: silence),
/// signed with the group's key. Shared across threads, as the rounds run in tasks.
#[derive(Clone, Default)]
struct FakePeers(Arc<Mutex<HashMap<String, Option<Reply>>>>);

const TEST_KEY: &[u8] = b"a test peer key of the group";

impl FakePeers {
    fn answer(&self, member: &str, reply: Option<Reply>) {
        self.0.lock().unwrap().insert(member.into(), reply);
    }
}

impl failsafe::FailsafeTransport for FakePeers {
    fn ask(&self, member: Member, ask: AskMessage) -> BoxFuture<'static, Option<ReplyMessage>> {
        let reply = self.0.lock().unwrap().get(&member.name).cloned().flatten();
        Box::pin(async move {
            let key = PeerKey::from_bytes(TEST_KEY);
            reply.map(|r| ReplyMessage::signed(&key, &ask, &member.name, &r))
        })
    }
}

#[derive(Clone)]
struct FakeEdge(Shared);

#[derive(Clone)]
struct FakeNode {
    world: Shared,
    addr: String,
}

impl FakeEdge {
    /// A blackholed API: the call waits the request timeout, then fails.
    async fn hang(&self, op: &'static str) -> Result<(), CoordError> {
        let (hang, d) = {
            let w = self.0.borrow();
            (w.hang, w.hang_for)
        };
        if hang {
            tokio::time::sleep(d).await;
            return Err(timeout(op));
        }
        Ok(())
    }
}

impl LeaseStore for FakeEdge {
    async fn get(&self) -> Result<Option<ObservedLease>, CoordError> {
        self.hang("get lease").await?;
        let w = self.0.borrow();
        if w.reads_fail {
            return Err(timeout("get lease"));
        }
        Ok(w.lease.clone())
    }

    async fn write(&self, intent: &WriteIntent) -> Result<ObservedLease, CoordError> {
        self.hang("replace lease").await?;
        let mut w = self.0.borrow_mut();
        if w.writes == Writes::TimeOut {
            return Err(timeout("replace lease"));
        }
        let current = w.lease.as_ref().map(|l| l.version.clone());
        if intent.version != current {
            return Err(CoordError::Conflict {
                op: "replace lease",
                message: "the object has been modified".into(),
            });
        }
        w.version += 1;
        let mut stored = kube_coord::observe(&kube_coord::lease_for("redis", intent));
        stored.version = w.version.to_string();
        w.lease = Some(stored.clone());
        if w.writes == Writes::CommitUnanswered {
            w.writes = Writes::Normal;
            return Err(timeout("replace lease"));
        }
        Ok(stored)
    }

    fn watch(&self) -> BoxStream<'static, Result<Option<ObservedLease>, CoordError>> {
        Box::pin(futures::stream::pending())
    }
}

impl Routing for FakeEdge {
    async fn route_service(&self, _service: &str, pod: &str) -> Result<(), CoordError> {
        self.0.borrow_mut().routed_to = Some(pod.into());
        Ok(())
    }

    async fn service_routes_to(&self, _service: &str) -> Result<Option<String>, CoordError> {
        Ok(self.0.borrow().routed_to.clone())
    }

    async fn patch_pod(&self, pod: &str, labels: Changes, _: Changes) -> Result<(), CoordError> {
        let mut w = self.0.borrow_mut();
        // The role label (what the tests read); the read label has its own map.
        for (k, v) in labels {
            let Some(v) = v else { continue };
            if k == kube_coord::READ_LABEL {
                w.read_labels.insert(pod.into(), v);
            } else {
                w.labels.insert(pod.into(), v);
            }
        }
        Ok(())
    }
}

impl PeerDirectory for FakeEdge {
    async fn peers(&self) -> Result<Vec<Peer>, CoordError> {
        self.hang("list pods").await?;
        Ok(self.0.borrow().pods.clone())
    }
}

impl EventSink for FakeEdge {
    async fn publish(&self, event: &SidecarEvent) -> Result<(), CoordError> {
        self.0.borrow_mut().events.push(event.clone());
        Ok(())
    }
}

impl RedisDialer for FakeEdge {
    type Node = FakeNode;
    fn dial(&self, cfg: NodeConfig) -> Result<FakeNode, NodeError> {
        Ok(FakeNode {
            world: self.0.clone(),
            addr: format!("{}:{}", cfg.host, cfg.port),
        })
    }
}

impl FakeNode {
    fn with<T>(&self, f: impl FnOnce(&mut FakeRedis) -> T) -> Result<T, NodeError> {
        let mut w = self.world.borrow_mut();
        match w.redis.get_mut(&self.addr) {
            Some(r) if r.up => Ok(f(r)),
            _ => Err(NodeError::Timeout {
                addr: self.addr.clone(),
                timeout: Duration::from_millis(150),
            }),
        }
    }
}

impl super::edges::Checkpoints for FakeEdge {
    fn leading(&self, epoch: Option<u32>) {
        self.0.borrow_mut().checkpoint_epoch = epoch;
    }
}

impl RedisControl for FakeNode {
    async fn probe(&self) -> Result<Probe, NodeError> {
        self.with(|r| Probe {
            info: NodeInfo {
                role: match &r.master {
                    None => RedisRole::Master,
                    Some((host, port)) => RedisRole::Replica {
                        master_host: host.clone(),
                        master_port: *port,
                        link_up: r.link_up,
                        syncing: false,
                    },
                },
                offset: r.offset,
                loading: false,
                keys: u64::from(r.offset > 0),
                connected_replicas: 0,
                config_file: String::new(),
                version: "7.0.15".into(),
                run_id: r.run_id.clone(),
                replicas: Vec::new(),
                good_replicas: None,
            },
            fenced: r.fenced,
            checkpoint: r.checkpoint.clone(),
        })
    }
    async fn fence(&self) -> Result<(), NodeError> {
        self.with(|r| r.fenced = true)
    }
    async fn unfence(&self, checkpoint: Option<&str>) -> Result<(), NodeError> {
        self.with(|r| {
            r.fenced = false;
            if let Some(c) = checkpoint {
                r.checkpoint = Some(c.to_string());
            }
        })
    }
    async fn promote(&self) -> Result<(), NodeError> {
        self.with(|r| {
            r.master = None;
            r.link_up = false;
        })
    }
    async fn follow(&self, host: &str, port: u16) -> Result<(), NodeError> {
        self.with(|r| {
            r.master = Some((host.into(), port));
            r.link_up = true;
        })
    }
    async fn drop_clients(&self) -> Result<u64, NodeError> {
        self.with(|_| 0)
    }
    async fn pause_writes(&self, _timeout: Duration) -> Result<(), NodeError> {
        self.with(|r| r.paused = true)
    }
    async fn unpause(&self) -> Result<(), NodeError> {
        self.with(|r| r.paused = false)
    }
}

fn pod(name: &str) -> Peer {
    Peer {
        name: name.into(),
        address: format!("{name}:6379"),
        // The fake pod IP is its name, so the fake HTTP address is on it (`vouched_http`).
        http: format!("{name}:9121"),
        labels: Default::default(),
        status: None,
        terminating: false,
        ip: name.into(),
        tags: Default::default(),
    }
}

/// Timing of the tests: lease 3 s, renew deadline 2 s, retry period 250 ms.
fn config() -> SidecarConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        a: config::SidecarArgs,
    }
    let args = Args::try_parse_from([
        "sidecar",
        "--lease-name",
        "redis",
        "--pod-name",
        "a",
        "--announce-addr",
        "a:6379",
        "--redis-addr",
        "a:6379",
        "--leader-service",
        "redis-leader",
        "--lease-duration",
        "3s",
        "--renew-deadline",
        "2s",
        "--retry-period",
        "250ms",
        "--request-timeout",
        "500ms",
        "--redis-timeout",
        "150ms",
        "--handover-timeout",
        "2s",
        "--max-lag",
        "100",
    ])
    .expect("test flags parse");
    args.a.validate(None).expect("test flags validate")
}

/// A sidecar for pod `a` (Redis at `a:6379`) in a world with the pods `peers` besides it.
fn sidecar(peers: &[&str]) -> (Sidecar<Fakes>, Shared) {
    sidecar_with(peers, config(), FakePeers::default())
}

/// The same with failsafe on, and the members' sidecars answering as `answers` says.
fn failsafe_sidecar(peers: &[&str], answers: FakePeers) -> (Sidecar<Fakes>, Shared) {
    let mut cfg = config();
    cfg.peer_key = Some(Arc::new(PeerKey::from_bytes(TEST_KEY)));
    cfg.failsafe = true;
    sidecar_with(peers, cfg, answers)
}

fn sidecar_with(
    peers: &[&str],
    cfg: SidecarConfig,
    answers: FakePeers,
) -> (Sidecar<Fakes>, Shared) {
    let mut redis = HashMap::from([("a:6379".to_string(), FakeRedis::started("a"))]);
    let mut pods = vec![pod("a")];
    for p in peers {
        redis.insert(format!("{p}:6379"), FakeRedis::started(p));
        pods.push(pod(p));
    }
    let world = Rc::new(RefCell::new(World {
        lease: None,
        version: 0,
        writes: Writes::Normal,
        reads_fail: false,
        hang: false,
        hang_for: Duration::from_millis(500),
        redis,
        pods,
        routed_to: None,
        labels: HashMap::new(),
        read_labels: HashMap::new(),
        events: Vec::new(),
        checkpoint_epoch: None,
    }));
    let status = Arc::new(RwLock::new(Status::new("a", cfg.max_lag)));
    let edge = FakeEdge(world.clone());
    let edges = EdgeSet::<Fakes> {
        redis: FakeNode {
            world: world.clone(),
            addr: "a:6379".into(),
        },
        lease: edge.clone(),
        routing: edge.clone(),
        peers: edge.clone(),
        dialer: edge.clone(),
        events: edge.clone(),
        failsafe: answers,
        checkpoints: edge,
    };
    let rt = Sidecar::new(
        cfg,
        "default".into(),
        "a:6379".into(),
        "a:9121".into(),
        edges,
        status,
        Arc::new(Metrics::new()),
    );
    (rt, world)
}

impl Sidecar<Fakes> {
    /// One turn of the loop as `drive` runs it: time, a probe, the candidacy, routing.
    async fn turn(&mut self) {
        self.feed(Input::Tick).await;
        self.probe().await;
        // Failsafe rounds run in tasks: let them finish, then feed their outcomes.
        tokio::task::yield_now().await;
        self.feed(Input::Tick).await;
        self.ensure_routing().await;
        self.list_members().await;
        self.refresh_tags().await;
        self.publish().await;
        self.flush_events().await;
    }

    /// Turns of the loop every retry period for `d`.
    async fn run_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.turn().await;
            tokio::time::advance(self.cfg.timing.retry_period).await;
        }
    }

    fn role(&self) -> SidecarRole {
        self.status.read().unwrap().role
    }
}

fn redis(world: &Shared, addr: &str) -> FakeRedis {
    world.borrow().redis[addr].clone()
}

fn holder(world: &Shared) -> String {
    world
        .borrow()
        .lease
        .as_ref()
        .map(|l| l.record.holder.clone())
        .unwrap_or_default()
}

fn kinds(world: &Shared) -> Vec<EventKind> {
    world.borrow().events.iter().map(|e| e.kind).collect()
}

/// The sidecar of `a` alone leads, its Redis a writable master, routed and labelled.
async fn leading(peers: &[&str]) -> (Sidecar<Fakes>, Shared) {
    let (mut rt, world) = sidecar(peers);
    rt.turn().await;
    rt.turn().await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    (rt, world)
}

#[tokio::test(start_paused = true)]
async fn promotes_on_a_free_lease_and_routes_to_itself() {
    let (mut rt, world) = sidecar(&[]);
    rt.turn().await;
    rt.turn().await;
    assert_eq!(rt.role(), SidecarRole::Leader);
    let r = redis(&world, "a:6379");
    assert!(r.master.is_none() && !r.fenced, "a writable master: {r:?}");
    let w = world.borrow();
    assert_eq!(w.routed_to.as_deref(), Some("a"));
    assert_eq!(w.labels.get("a").map(String::as_str), Some("leader"));
    // A ready leader untagged serves reads.
    assert_eq!(w.read_labels.get("a").map(String::as_str), Some("true"));
    assert!(w.events.iter().any(|e| e.kind == EventKind::Promoted));
    let history = kube_coord::history::parse(&w.lease.as_ref().unwrap().record.history);
    assert_eq!((history.len(), history[0].reason.as_str()), (1, "elected"));
}

/// Someone else's write: `holder` took the Lease at the next epoch, recording `address`;
/// the Lease as a watch shows it next.
fn taken_by(world: &Shared, holder: &str, address: &str) -> ObservedLease {
    let mut w = world.borrow_mut();
    let mut l = w.lease.clone().unwrap();
    l.record.holder = holder.into();
    l.record.holder_address = address.into();
    l.record.transitions += 1;
    w.version += 1;
    l.version = w.version.to_string();
    w.lease = Some(l.clone());
    l
}

#[tokio::test(start_paused = true)]
async fn steps_down_and_follows_when_another_pod_holds_the_lease() {
    let (mut rt, world) = leading(&["b"]).await;
    // Someone else's write took the Lease (b, at a new epoch).
    let taken = taken_by(&world, "b", "b:6379");
    rt.feed(Input::Observed(Some(taken))).await;
    assert_eq!(rt.role(), SidecarRole::Replica);
    let r = redis(&world, "a:6379");
    assert_eq!(r.master, Some(("b".into(), 6379)), "follows b");
    let k = kinds(&world);
    assert!(k.contains(&EventKind::SteppedDown) && k.contains(&EventKind::Following));
    assert_eq!(
        world.borrow().labels.get("a").map(String::as_str),
        Some("replica")
    );
}

#[tokio::test(start_paused = true)]
async fn fences_its_redis_when_it_cannot_renew_before_the_deadline() {
    let (mut rt, world) = leading(&[]).await;
    world.borrow_mut().writes = Writes::TimeOut;
    // Within the renew deadline it keeps leading on a writable Redis ...
    rt.run_for(Duration::from_millis(1_500)).await;
    assert_eq!(rt.role(), SidecarRole::Leader);
    assert!(!redis(&world, "a:6379").fenced);
    // ... past it, it fences and stops leading.
    rt.run_for(Duration::from_millis(750)).await;
    assert_eq!(rt.role(), SidecarRole::Candidate);
    assert!(redis(&world, "a:6379").fenced);
    // Its Events wait for the API (a hanging API must not stall the loop) ...
    assert!(!kinds(&world).contains(&EventKind::SteppedDown));
    // ... and are published once a Lease write succeeds again.
    world.borrow_mut().writes = Writes::Normal;
    rt.run_for(Duration::from_secs(1)).await;
    let k = kinds(&world);
    assert!(
        k.contains(&EventKind::Fenced) && k.contains(&EventKind::SteppedDown),
        "{k:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn backs_off_for_a_peer_with_more_data_but_not_beyond_its_bound() {
    let (mut rt, world) = sidecar(&["b"]);
    // b's Redis has more data and is healthy, but b's sidecar never runs for the lease.
    world
        .borrow_mut()
        .redis
        .insert("b:6379".into(), FakeRedis::replica_of("b", 500));
    world.borrow_mut().redis.get_mut("a:6379").unwrap().offset = 100;
    rt.run_for(Duration::from_millis(3_000)).await;
    assert_eq!(rt.role(), SidecarRole::Candidate, "backing off for b");
    assert_eq!(holder(&world), "");
    rt.run_for(Duration::from_millis(5_500)).await;
    assert_eq!(holder(&world), "", "waits while b has more data");
    // The bound: one lease duration, then two more while b still has more data.
    rt.run_for(Duration::from_millis(1_000)).await;
    assert_eq!(
        rt.role(),
        SidecarRole::Leader,
        "runs anyway after the bound"
    );
    assert_eq!(holder(&world), "a");
}

#[tokio::test(start_paused = true)]
async fn a_peer_with_less_data_does_not_hold_it_back() {
    let (mut rt, world) = sidecar(&["b"]);
    world
        .borrow_mut()
        .redis
        .insert("b:6379".into(), FakeRedis::replica_of("b", 50));
    world.borrow_mut().redis.get_mut("a:6379").unwrap().offset = 100;
    rt.turn().await;
    rt.turn().await;
    assert_eq!(rt.role(), SidecarRole::Leader);
}

#[tokio::test(start_paused = true)]
async fn hands_over_to_a_caught_up_replica() {
    let (mut rt, world) = leading(&["b"]).await;
    world
        .borrow_mut()
        .redis
        .insert("b:6379".into(), FakeRedis::replica_of("a", 0));
    let handed = rt
        .hand_over(Trigger::Switchover, None, false)
        .await
        .expect("hand-over");
    assert_eq!((handed.from.as_str(), handed.to.as_str()), ("a", "b"));
    assert_eq!(holder(&world), "b");
    let w = world.borrow();
    let record = &w.lease.as_ref().unwrap().record;
    assert_eq!((record.handover_to.as_str(), record.transitions), ("b", 1));
    let last = kube_coord::history::parse(&record.history).pop().unwrap();
    assert_eq!(
        (last.from.as_str(), last.reason.as_str()),
        ("a", "switchover")
    );
    let r = &w.redis["a:6379"];
    assert!(r.fenced && !r.paused, "fenced, writes released: {r:?}");
    drop(w);
    assert!(kinds(&world).contains(&EventKind::HandedOver));
    assert_ne!(rt.role(), SidecarRole::Leader);
}

#[tokio::test(start_paused = true)]
async fn a_refused_hand_over_leaves_the_leader_writable() {
    let (mut rt, world) = leading(&["b"]).await;
    // b lags 900 bytes (at most 100 allowed).
    world.borrow_mut().redis.get_mut("a:6379").unwrap().offset = 1_000;
    world
        .borrow_mut()
        .redis
        .insert("b:6379".into(), FakeRedis::replica_of("a", 100));
    let refused = rt.hand_over(Trigger::Switchover, Some("b"), false).await;
    assert!(
        matches!(
            refused,
            Err(HandoverError::Target(TargetRefusal::NotCaughtUp { .. }))
        ),
        "{refused:?}"
    );
    let refused = rt.hand_over(Trigger::Switchover, Some("zz"), false).await;
    assert_eq!(
        refused,
        Err(HandoverError::Target(TargetRefusal::UnknownPod(
            "zz".into()
        )))
    );
    assert_eq!(rt.role(), SidecarRole::Leader);
    assert_eq!(holder(&world), "a");
    let r = redis(&world, "a:6379");
    assert!(!r.fenced && !r.paused, "still writable: {r:?}");
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_hand_over_keeps_writes_held_until_the_lease_says_whose_it_is() {
    let (mut rt, world) = leading(&["b"]).await;
    world
        .borrow_mut()
        .redis
        .insert("b:6379".into(), FakeRedis::replica_of("a", 0));
    // The hand-over write commits but its answer is lost, and the Lease cannot be read.
    {
        let mut w = world.borrow_mut();
        w.writes = Writes::CommitUnanswered;
        w.reads_fail = true;
    }
    let outcome = rt.hand_over(Trigger::Switchover, Some("b"), false).await;
    assert!(matches!(outcome, Err(HandoverError::Api(_))), "{outcome:?}");
    assert_eq!(holder(&world), "b", "it did commit");
    // b leads now: a must not take writes again, though its elector still thinks it leads.
    for _ in 0..4 {
        rt.turn().await;
        assert!(redis(&world, "a:6379").fenced, "a stays fenced");
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // Its next renewal loses the race; the Lease, once readable, names b: it follows.
    world.borrow_mut().reads_fail = false;
    rt.run_for(Duration::from_millis(1_000)).await;
    assert_eq!(rt.role(), SidecarRole::Replica);
    assert!(redis(&world, "a:6379").master == Some(("b".into(), 6379)));
}

fn confirm() -> Option<Reply> {
    Some(Reply {
        confirmed: true,
        promise: true,
        ..Reply::default()
    })
}

/// Leads with failsafe on and the membership {a, b, c} recorded on the Lease.
async fn failsafe_leading(answers: &FakePeers) -> (Sidecar<Fakes>, Shared) {
    let (mut rt, world) = failsafe_sidecar(&["b", "c"], answers.clone());
    rt.run_for(Duration::from_secs(1)).await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    let recorded: Vec<String> = world
        .borrow()
        .lease
        .as_ref()
        .unwrap()
        .record
        .members
        .iter()
        .map(|m| m.name.clone())
        .collect();
    assert_eq!(recorded, ["a", "b", "c"], "the membership is on the Lease");
    (rt, world)
}

#[tokio::test(start_paused = true)]
async fn failsafe_keeps_a_confirmed_leader_writable_through_an_api_outage() {
    let answers = FakePeers::default();
    answers.answer("b", confirm());
    answers.answer("c", confirm());
    let (mut rt, world) = failsafe_leading(&answers).await;
    let version = world.borrow().lease.as_ref().unwrap().version.clone();
    world.borrow_mut().writes = Writes::TimeOut;
    world.borrow_mut().reads_fail = true;
    // Ten seconds: far beyond the renew deadline (2 s) and the lease (3 s).
    rt.run_for(Duration::from_secs(10)).await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    let r = redis(&world, "a:6379");
    assert!(
        r.master.is_none() && !r.fenced,
        "still a writable master: {r:?}"
    );
    let st = rt.status.read().unwrap().failsafe.clone();
    assert!(
        st.enabled && st.active && st.members == 2 && st.confirmed == 2,
        "{st:?}"
    );
    assert!(
        !kinds(&world).contains(&EventKind::FailsafeStarted),
        "held while the API is down"
    );
    // The API comes back: the same epoch renews with the version it had, and the Events
    // of the episode are published.
    world.borrow_mut().writes = Writes::Normal;
    world.borrow_mut().reads_fail = false;
    rt.run_for(Duration::from_secs(1)).await;
    let w = world.borrow();
    let lease = w.lease.as_ref().unwrap();
    assert_eq!(
        (lease.record.holder.as_str(), lease.record.transitions),
        ("a", 0)
    );
    assert_ne!(lease.version, version, "renewed");
    let k: Vec<EventKind> = w.events.iter().map(|e| e.kind).collect();
    assert!(
        k.contains(&EventKind::FailsafeStarted) && k.contains(&EventKind::FailsafeEnded),
        "{k:?}"
    );
    assert!(!k.contains(&EventKind::SteppedDown), "{k:?}");
    drop(w);
    assert!(!rt.status.read().unwrap().failsafe.active);
}

#[tokio::test(start_paused = true)]
async fn failsafe_ends_when_a_member_is_silent_or_refuses() {
    // Control: the same outage with one member silent fences at the renew deadline.
    let answers = FakePeers::default();
    answers.answer("b", confirm());
    answers.answer("c", None);
    let (mut rt, world) = failsafe_leading(&answers).await;
    world.borrow_mut().writes = Writes::TimeOut;
    world.borrow_mut().reads_fail = true;
    rt.run_for(Duration::from_secs(3)).await;
    assert_ne!(rt.role(), SidecarRole::Leader);
    assert!(redis(&world, "a:6379").fenced);
    // A refusal ends it at once.
    let answers = FakePeers::default();
    answers.answer("b", confirm());
    answers.answer("c", confirm());
    let (mut rt, world) = failsafe_leading(&answers).await;
    world.borrow_mut().writes = Writes::TimeOut;
    world.borrow_mut().reads_fail = true;
    rt.run_for(Duration::from_secs(1)).await;
    assert_eq!(rt.role(), SidecarRole::Leader);
    answers.answer("c", Some(Reply::refuse("this pod has seen a newer lease")));
    rt.run_for(Duration::from_millis(600)).await;
    assert_ne!(rt.role(), SidecarRole::Leader);
    assert!(redis(&world, "a:6379").fenced);
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_steps_down_at_once() {
    let (mut rt, world) = leading(&["b"]).await;
    // Someone else writes the Lease: the next renewal conflicts.
    {
        let mut w = world.borrow_mut();
        w.version += 1;
        let v = w.version.to_string();
        let l = w.lease.as_mut().unwrap();
        l.record.holder = "b".into();
        l.record.transitions += 1;
        l.version = v;
    }
    rt.turn().await;
    tokio::time::advance(Duration::from_millis(250)).await;
    rt.turn().await;
    assert_ne!(rt.role(), SidecarRole::Leader);
    assert!(redis(&world, "a:6379").fenced);
}

/// A blackholed API holds the listing, the renewal and the read that follows it for the
/// request timeout each. A round answered meanwhile must count before the read's failure is
/// weighed against the renew deadline (found by the benchmark's scenario (e): the answer
/// waited behind the read, and the leader fenced at its deadline).
#[tokio::test(start_paused = true)]
async fn failsafe_holds_when_every_api_call_hangs() {
    let answers = FakePeers::default();
    answers.answer("b", confirm());
    answers.answer("c", confirm());
    let (mut rt, world) = failsafe_leading(&answers).await;
    world.borrow_mut().hang = true;
    rt.run_for(Duration::from_secs(10)).await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    assert!(!redis(&world, "a:6379").fenced);
    assert!(rt.status.read().unwrap().failsafe.active);
}

/// The same with the shipped timing (lease 10 s, renew deadline 6 s, retry period 1 s,
/// request timeout 2 s): each hanging call holds the loop 2 s.
#[tokio::test(start_paused = true)]
async fn failsafe_holds_when_every_api_call_hangs_with_the_shipped_timing() {
    let answers = FakePeers::default();
    answers.answer("b", confirm());
    answers.answer("c", confirm());
    let mut cfg = config();
    cfg.peer_key = Some(Arc::new(PeerKey::from_bytes(TEST_KEY)));
    cfg.failsafe = true;
    cfg.timing = election::timing::Timing::defaults();
    let (mut rt, world) = sidecar_with(&["b", "c"], cfg, answers);
    rt.run_for(Duration::from_secs(12)).await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    assert_eq!(rt.status.read().unwrap().failsafe.members, 2, "recorded");
    for offset in [0, 300, 700] {
        tokio::time::advance(Duration::from_millis(offset)).await;
        world.borrow_mut().hang_for = Duration::from_secs(2);
        world.borrow_mut().hang = true;
        rt.run_for(Duration::from_secs(20)).await;
        assert_eq!(
            rt.role(),
            SidecarRole::Leader,
            "offset {offset}: {:?}",
            kinds(&world)
        );
        assert!(!redis(&world, "a:6379").fenced);
        world.borrow_mut().hang = false;
        rt.run_for(Duration::from_secs(3)).await;
        assert!(!rt.status.read().unwrap().failsafe.active);
    }
}

/// The blackhole begins right after a renewal, while a listing is due: the listing holds the
/// loop 2 s, the next renewal 2 s more, and the read after it 2 s more. The round sent when
/// the renewal failed (still valid) is weighed only after the deadline, and must count from
/// its send (found by the benchmark's scenario (e) with the shipped timing, in the first run
/// after start, whose listing fell right after a renewal).
#[tokio::test(start_paused = true)]
async fn a_round_sent_in_time_counts_after_a_listing_held_the_loop() {
    let answers = FakePeers::default();
    answers.answer("b", confirm());
    answers.answer("c", confirm());
    let mut cfg = config();
    cfg.peer_key = Some(Arc::new(PeerKey::from_bytes(TEST_KEY)));
    cfg.failsafe = true;
    cfg.timing = election::timing::Timing::defaults();
    let (mut rt, world) = sidecar_with(&["b", "c"], cfg, answers);
    rt.run_for(Duration::from_secs(12)).await;
    assert_eq!(rt.role(), SidecarRole::Leader);
    // A renewal succeeds now ...
    tokio::time::advance(Duration::from_millis(1_000)).await;
    let v0 = world.borrow().lease.as_ref().unwrap().version.clone();
    rt.feed(Input::Tick).await;
    assert_ne!(
        world.borrow().lease.as_ref().unwrap().version,
        v0,
        "renewed"
    );
    // ... then the API hangs, and the listing is due at once.
    world.borrow_mut().hang_for = Duration::from_secs(2);
    world.borrow_mut().hang = true;
    rt.listing = Pacer::new(Duration::from_secs(1));
    rt.list_members().await;
    rt.run_for(Duration::from_secs(20)).await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    assert!(!redis(&world, "a:6379").fenced);
}

#[tokio::test(start_paused = true)]
async fn a_leader_writes_checkpoints_only_while_its_redis_is_writable() {
    let (mut rt, world) = leading(&[]).await;
    let epoch = world.borrow().lease.as_ref().unwrap().record.transitions;
    assert_eq!(world.borrow().checkpoint_epoch, Some(epoch));
    // The first checkpoint of the epoch went in with the unfencing.
    let first = redis(&world, "a:6379")
        .checkpoint
        .expect("an opening checkpoint");
    let first = election::checkpoint::Checkpoint::parse(&first).unwrap();
    assert_eq!(
        (first.epoch, first.writer.as_str()),
        (u64::from(epoch), "a")
    );
    // Past its renew deadline it fences, and the writer stops with it.
    world.borrow_mut().writes = Writes::TimeOut;
    rt.run_for(Duration::from_millis(2_250)).await;
    assert!(redis(&world, "a:6379").fenced);
    assert_eq!(world.borrow().checkpoint_epoch, None);
}

/// The Lease as a whole-group restart leaves it: held by `b` at epoch 3, never renewed
/// again, with a history.
fn lease_left_by_b(world: &Shared) {
    let intent = WriteIntent {
        purpose: election::elector::Purpose::Acquire,
        version: None,
        holder: "b".into(),
        holder_address: "b:6379".into(),
        lease_duration: Duration::from_secs(3),
        transitions: 3,
        acquire: election::elector::Stamp::Now,
        handover_to: String::new(),
        paused: String::new(),
        history: String::new(),
        members: Vec::new(),
        change: None,
    };
    let mut w = world.borrow_mut();
    w.version += 1;
    let mut stored = kube_coord::observe(&kube_coord::lease_for("redis", &intent));
    stored.version = w.version.to_string();
    w.lease = Some(stored);
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_waits_for_a_majority_then_the_freshest_copy_is_waited_for() {
    let (mut rt, world) = sidecar(&["b", "c"]);
    lease_left_by_b(&world);
    {
        let mut w = world.borrow_mut();
        w.redis.get_mut("a:6379").unwrap().checkpoint = Some("3:100:b".into());
        w.redis.get_mut("b:6379").unwrap().up = false;
        w.redis.get_mut("c:6379").unwrap().up = false;
    }
    // Well past the lease's expiry, alone of three, it waits.
    rt.run_for(Duration::from_secs(10)).await;
    assert_eq!(rt.role(), SidecarRole::Candidate);
    assert_eq!(holder(&world), "b", "nobody took the lease");
    assert!(kinds(&world).contains(&EventKind::ColdStartWaiting));
    let report = rt.status.read().unwrap().report();
    assert!(report.cold_start.cold);
    assert_eq!(report.cold_start.waiting_for, vec!["b", "c"]);
    // b comes back with later data: the majority is there, and a backs off for b.
    {
        let mut w = world.borrow_mut();
        let b = w.redis.get_mut("b:6379").unwrap();
        b.up = true;
        b.checkpoint = Some("3:500:b".into());
    }
    rt.run_for(Duration::from_secs(2)).await;
    assert!(kinds(&world).contains(&EventKind::ColdStartEnded));
    assert_eq!(holder(&world), "b", "a backs off for the fresher copy");
    assert_eq!(rt.role(), SidecarRole::Candidate);
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_with_the_freshest_copy_present_leads_at_once_and_force_ends_a_wait() {
    let (mut rt, world) = sidecar(&["b", "c"]);
    lease_left_by_b(&world);
    {
        let mut w = world.borrow_mut();
        w.redis.get_mut("a:6379").unwrap().checkpoint = Some("3:500:b".into());
        w.redis.get_mut("b:6379").unwrap().checkpoint = Some("3:100:b".into());
        w.redis.get_mut("c:6379").unwrap().up = false;
    }
    rt.run_for(Duration::from_secs(5)).await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    assert!(!kinds(&world).contains(&EventKind::ColdStartWaiting));

    // Alone, it waits until an operator forces the election.
    let (mut rt, world) = sidecar(&["b", "c"]);
    lease_left_by_b(&world);
    {
        let mut w = world.borrow_mut();
        w.redis.get_mut("b:6379").unwrap().up = false;
        w.redis.get_mut("c:6379").unwrap().up = false;
    }
    rt.run_for(Duration::from_secs(6)).await;
    assert_eq!(rt.role(), SidecarRole::Candidate);
    rt.cold_forced
        .store(true, std::sync::atomic::Ordering::Relaxed);
    rt.run_for(Duration::from_secs(1)).await;
    assert_eq!(rt.role(), SidecarRole::Leader);
    let ended = world
        .borrow()
        .events
        .iter()
        .find(|e| e.kind == EventKind::ColdStartEnded)
        .map(|e| e.note.clone())
        .unwrap();
    assert!(
        ended.contains("forced") && ended.contains("missing: b, c"),
        "{ended}"
    );
}

#[tokio::test(start_paused = true)]
async fn data_holding_a_checkpoint_makes_a_cold_start_even_without_a_lease() {
    // A cluster rebuilt around retained claims: no Lease, but this pod's data ran before.
    let (mut rt, world) = sidecar(&["b", "c"]);
    {
        let mut w = world.borrow_mut();
        w.redis.get_mut("a:6379").unwrap().checkpoint = Some("7:100:b".into());
        w.redis.get_mut("b:6379").unwrap().up = false;
        w.redis.get_mut("c:6379").unwrap().up = false;
    }
    rt.run_for(Duration::from_secs(5)).await;
    assert_eq!(rt.role(), SidecarRole::Candidate);
    assert!(world.borrow().lease.is_none(), "nobody created the Lease");
    // Control: the same pod without data of an earlier life leads at once.
    let (mut rt, world) = sidecar(&["b", "c"]);
    {
        let mut w = world.borrow_mut();
        w.redis.get_mut("b:6379").unwrap().up = false;
        w.redis.get_mut("c:6379").unwrap().up = false;
    }
    rt.run_for(Duration::from_secs(1)).await;
    assert_eq!(rt.role(), SidecarRole::Leader);
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_redis_restarted_steps_down_instead_of_promoting_it_again() {
    let (mut rt, world) = leading(&["b"]).await;
    world
        .borrow_mut()
        .redis
        .insert("b:6379".into(), FakeRedis::replica_of("a", 500));
    rt.run_for(Duration::from_millis(500)).await;
    assert_eq!(rt.role(), SidecarRole::Leader);
    // The container restarted between two probes: a new process, started as the manifests
    // start it (a fenced replica of itself), with whatever its disk held.
    world
        .borrow_mut()
        .redis
        .insert("a:6379".into(), FakeRedis::started("a"));
    world.borrow_mut().redis.get_mut("a:6379").unwrap().run_id = "a-2".into();
    rt.turn().await;
    assert_ne!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    let r = redis(&world, "a:6379");
    assert!(
        r.master.is_some() && r.fenced,
        "not made a master again: {r:?}"
    );
    assert_eq!(holder(&world), "", "the lease was released for the ranking");
    // b (more data) is the better copy; a backs off for it.
    rt.run_for(Duration::from_secs(2)).await;
    assert_ne!(holder(&world), "a");
}

/// With pod DNS names, a follower replicates from the holder's name, whatever address the
/// Lease's annotation carries (anyone who may write the Lease could set it). With a fixed
/// announce address the annotation is all there is (the test above follows `b:6379`).
#[tokio::test(start_paused = true)]
async fn with_pod_dns_names_it_follows_the_holders_name_not_the_annotation() {
    let mut cfg = config();
    cfg.announce = config::Announce::Headless {
        service: "redis-headless".into(),
        domain: "cluster.local".into(),
        port: 6379,
    };
    let (mut rt, world) = sidecar_with(&["b"], cfg, FakePeers::default());
    rt.turn().await;
    rt.turn().await;
    assert_eq!(rt.role(), SidecarRole::Leader, "{:?}", kinds(&world));
    let taken = taken_by(&world, "b", "attacker.example:6379");
    rt.feed(Input::Observed(Some(taken))).await;
    assert_eq!(rt.role(), SidecarRole::Replica);
    let r = redis(&world, "a:6379");
    assert_eq!(
        r.master,
        Some(("b.redis-headless.default.svc.cluster.local".into(), 6379)),
        "follows b's name"
    );
}
