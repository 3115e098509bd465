//! The kubelet's decisions, pure: which program an image stands for, where a volume's mount
//! path lives on this machine, the command line and environment of a container, the restart
//! back-off, probe thresholds, and the pod status the API shows.

use crate::podspec::{self, EnvError, PodFacts};
use k8s_openapi::api::core::v1::Container;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What a container image stands for on this machine: the image's entrypoint, and local
/// programs for the names a command line may start with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRule {
    /// Repository, normalised (`docker.io/library/redis`), matched without tag or digest.
    pub repository: String,
    /// The image's `ENTRYPOINT` (+ `CMD` when the container gives neither command nor args).
    pub entrypoint: Vec<String>,
    /// Program names in the image (`/redis-k8s-election`) and the local file each runs.
    pub programs: BTreeMap<String, PathBuf>,
}

/// `redis:7.2` → `docker.io/library/redis`, `ghcr.io/a/b:1@sha256:…` → `ghcr.io/a/b`: the
/// repository as container runtimes normalise it.
pub fn normalize_image(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or_default();
    // A tag is after the last ':' that follows the last '/' (a registry may carry a port).
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match no_digest[last_slash..].rfind(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    };
    let first = repo.split('/').next().unwrap_or_default();
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_registry, repo.contains('/')) {
        (true, _) => repo.to_string(),
        (false, true) => format!("docker.io/{repo}"),
        (false, false) => format!("docker.io/library/{repo}"),
    }
}

/// The rule for `image`, if kubesim knows how to run it.
pub fn find_image<'a>(rules: &'a [ImageRule], image: &str) -> Option<&'a ImageRule> {
    let repo = normalize_image(image);
    rules
        .iter()
        .find(|r| normalize_image(&r.repository) == repo)
}

/// Where each of a container's mount paths lives on this machine. Processes share the host's
/// file system, so the kubelet rewrites any argument or environment value that names a path
/// under a mount path to the pod's directory for that volume.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountMap(pub Vec<(String, PathBuf)>);

impl MountMap {
    /// `s` with a leading mount path replaced by its directory (the longest match wins), or
    /// `s` unchanged.
    pub fn map(&self, s: &str) -> String {
        let mut best: Option<&(String, PathBuf)> = None;
        for m in &self.0 {
            let mp = m.0.trim_end_matches('/');
            let hit = s == mp || s.strip_prefix(mp).is_some_and(|rest| rest.starts_with('/'));
            if hit && best.is_none_or(|b| b.0.len() < m.0.len()) {
                best = Some(m);
            }
        }
        match best {
            Some((mp, dir)) => format!("{}{}", dir.display(), &s[mp.trim_end_matches('/').len()..]),
            None => s.to_string(),
        }
    }
}

/// A container's process, fully resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    /// The program (a local path, or a name found on `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The whole environment, in order.
    pub env: Vec<(String, String)>,
    /// The container's name: what its commands (hooks, exec probes) run as.
    pub container: String,
}

/// Why a container cannot start: shown as its waiting reason and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The environment cannot be built (`CreateContainerConfigError`).
    #[error(transparent)]
    Env(#[from] EnvError),
    /// No local program stands for the image (`ErrImagePull`).
    #[error("kubesim has no local program for image {0:?}")]
    UnknownImage(String),
    /// Neither command, args nor an image entrypoint.
    #[error("no command specified")]
    NoCommand,
}

impl PlanError {
    /// The container's waiting reason, as the real kubelet names it.
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::Env(_) => "CreateContainerConfigError",
            PlanError::UnknownImage(_) => "ErrImagePull",
            PlanError::NoCommand => "RunContainerError",
        }
    }
}

/// The process for `container`: `base_env` (what the kubelet adds: `KUBERNETES_SERVICE_*`,
/// `HOSTNAME`, `PATH`, …) then the container's own variables (which win), the command line
/// with `$(VAR)` expanded, and every path under a mount path mapped to this machine.
pub fn launch_plan(
    container: &Container,
    facts: &PodFacts,
    lookup: impl Fn(&'static str, &str, &str) -> Option<String>,
    images: &[ImageRule],
    mounts: &MountMap,
    base_env: &[(String, String)],
) -> Result<LaunchPlan, PlanError> {
    let image = container.image.clone().unwrap_or_default();
    let rule = find_image(images, &image).ok_or_else(|| PlanError::UnknownImage(image.clone()))?;
    let own = podspec::container_env(container, facts, lookup)?;
    let mut env: Vec<(String, String)> = base_env.to_vec();
    for (k, v) in own {
        env.retain(|(n, _)| *n != k);
        env.push((k, v));
    }
    let line = podspec::command_line(container, &env, &rule.entrypoint);
    let (first, rest) = line.split_first().ok_or(PlanError::NoCommand)?;
    let program = match rule.programs.get(first) {
        Some(p) => p.display().to_string(),
        None => mounts.map(first),
    };
    Ok(LaunchPlan {
        container: container.name.clone(),
        program,
        args: rest.iter().map(|a| mounts.map(a)).collect(),
        env: env
            .into_iter()
            .map(|(k, v)| {
                let v = mounts.map(&v);
                (k, v)
            })
            .collect(),
    })
}

/// How long to wait before starting a container that has failed `failures` times in a row:
/// the first restart is immediate, then `initial` doubling up to `max` (the kubelet's
/// CrashLoopBackOff: 10 s doubling to 5 min).
pub fn backoff_delay(failures: u32, initial: Duration, max: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let doublings = (failures - 2).min(16);
    (initial * 2u32.pow(doublings)).min(max)
}

/// A probe's thresholds and its run of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeCounter {
    /// `successThreshold` (default 1).
    pub success_threshold: u32,
    /// `failureThreshold` (default 3).
    pub failure_threshold: u32,
    successes: u32,
    failures: u32,
    /// The probe's verdict so far (`None` until a threshold is first reached).
    pub passing: Option<bool>,
}

impl ProbeCounter {
    /// A counter with the given thresholds (0 means the Kubernetes default).
    pub fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        Self {
            success_threshold: if success_threshold == 0 {
                1
            } else {
                success_threshold
            },
            failure_threshold: if failure_threshold == 0 {
                3
            } else {
                failure_threshold
            },
            successes: 0,
            failures: 0,
            passing: None,
        }
    }

    /// Records one result; returns the verdict when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= self.success_threshold {
            Some(true)
        } else if self.failures >= self.failure_threshold {
            Some(false)
        } else {
            None
        };
        match verdict {
            Some(v) if self.passing != Some(v) => {
                self.passing = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

/// A container's state, as `containerStatuses[].state` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running: `reason` (`ContainerCreating`, `CrashLoopBackOff`, …) and a message.
    Waiting {
        /// Reason.
        reason: String,
        /// Message.
        message: String,
    },
    /// Running since `started_at` (RFC 3339).
    Running {
        /// Start time.
        started_at: String,
    },
    /// Exited.
    Terminated {
        /// Exit code (128 + signal when killed by one).
        exit_code: i32,
        /// `Completed` for 0, `Error` otherwise.
        reason: String,
        /// Start time.
        started_at: String,
        /// End time.
        finished_at: String,
    },
}

impl ContainerState {
    fn to_json(&self) -> Value {
        match self {
            ContainerState::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if !message.is_empty() {
                    w["message"] = json!(message);
                }
                json!({"waiting": w})
            }
            ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            ContainerState::Terminated {
                exit_code,
                reason,
                started_at,
                finished_at,
            } => json!({"terminated": {"exitCode": exit_code, "reason": reason,
                "startedAt": started_at, "finishedAt": finished_at}}),
        }
    }
}

/// What the kubelet knows about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image as written in the spec.
    pub image: String,
    /// Current state.
    pub state: ContainerState,
    /// The state before the last restart.
    pub last_state: Option<ContainerState>,
    /// Restarts so far.
    pub restart_count: u32,
    /// Passing its readiness probe (or running, without one).
    pub ready: bool,
    /// Has started at least once.
    pub started_once: bool,
    /// Process ID while running.
    pub pid: Option<u32>,
}

impl ContainerView {
    /// A container not yet started.
    pub fn creating(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            started_once: false,
            pid: None,
        }
    }
}

/// The pod's `status` from its containers. Condition transition times are kept from
/// `previous` when a condition did not change, as the real kubelet keeps them.
pub fn pod_status(
    previous: Option<&Value>,
    pod_ip: &str,
    host_ip: &str,
    start_time: &str,
    containers: &[ContainerView],
    now: &str,
) -> Value {
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let all_started = containers.iter().all(|c| c.started_once);
    let phase = if all_started { "Running" } else { "Pending" };
    let condition = |kind: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == kind && c["status"] == status)
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if !ok && (kind == "Ready" || kind == "ContainersReady") {
            let unready: Vec<&str> = containers
                .iter()
                .filter(|c| !c.ready)
                .map(|c| c.name.as_str())
                .collect();
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            ));
        }
        c
    };
    json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", true),
            condition("Initialized", true),
            condition("Ready", all_ready),
            condition("ContainersReady", all_ready),
            condition("PodScheduled", true),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "qosClass": "Burstable",
        "containerStatuses": containers.iter().map(|c| {
            let mut s = json!({
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": c.ready,
                "started": matches!(c.state, ContainerState::Running { .. }),
                "restartCount": c.restart_count,
                "state": c.state.to_json(),
                "lastState": c.last_state.as_ref().map_or(json!({}), ContainerState::to_json),
            });
            if let Some(pid) = c.pid {
                s["containerID"] = json!(format!("kubesim://{pid}"));
            }
            s
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_normalise_as_runtimes_do() {
        assert_eq!(normalize_image("redis"), "docker.io/library/redis");
        assert_eq!(normalize_image("redis:7.2"), "docker.io/library/redis");
        assert_eq!(
            normalize_image("docker.io/library/redis:7.2"),
            "docker.io/library/redis"
        );
        assert_eq!(
            normalize_image("bitnami/redis:7"),
            "docker.io/bitnami/redis"
        );
        assert_eq!(
            normalize_image("ghcr.io/a/b:0.1.0@sha256:ab"),
            "ghcr.io/a/b"
        );
        assert_eq!(normalize_image("localhost:5000/b"), "localhost:5000/b");
        assert_eq!(normalize_image("reg:5000/b:1"), "reg:5000/b");
    }

    #[test]
    fn mount_paths_map_by_whole_path_components_longest_first() {
        let m = MountMap(vec![
            ("/data".into(), "/s/p/data".into()),
            ("/etc/redis-auth/".into(), "/s/p/auth".into()),
            ("/etc/redis-auth/sub".into(), "/s/p/sub".into()),
        ]);
        assert_eq!(m.map("/data"), "/s/p/data");
        assert_eq!(m.map("/data/x.rdb"), "/s/p/data/x.rdb");
        assert_eq!(m.map("/database"), "/database");
        assert_eq!(m.map("/etc/redis-auth/password"), "/s/p/auth/password");
        assert_eq!(m.map("/etc/redis-auth/sub/f"), "/s/p/sub/f");
        assert_eq!(m.map("127.0.0.5:6379"), "127.0.0.5:6379");
    }

    fn rules() -> Vec<ImageRule> {
        vec![
            ImageRule {
                repository: "redis".into(),
                entrypoint: vec!["redis-server".into()],
                programs: BTreeMap::new(),
            },
            ImageRule {
                repository: "ghcr.io/x/sidecar".into(),
                entrypoint: vec!["/sidecar".into()],
                programs: [("/sidecar".to_string(), PathBuf::from("/build/sidecar"))].into(),
            },
        ]
    }

    #[test]
    fn a_plan_expands_maps_and_resolves_the_program() {
        let c: Container = serde_json::from_value(json!({
            "name": "sidecar", "image": "ghcr.io/x/sidecar:1", "args": ["run", "--addr", "$(POD_IP):9121"],
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "PW", "value": "/etc/auth/password"},
                {"name": "PATH", "value": "/bin"},
            ]})).unwrap();
        let facts = PodFacts {
            pod_ip: "127.0.0.9".into(),
            ..Default::default()
        };
        let mounts = MountMap(vec![("/etc/auth".into(), "/pods/a/auth".into())]);
        let base = vec![
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("HOSTNAME".to_string(), "p".to_string()),
        ];
        let plan = launch_plan(&c, &facts, |_, _, _| None, &rules(), &mounts, &base).unwrap();
        assert_eq!(plan.program, "/build/sidecar");
        assert_eq!(plan.args, ["run", "--addr", "127.0.0.9:9121"]);
        assert!(
            plan.env
                .contains(&("PW".into(), "/pods/a/auth/password".into()))
        );
        assert!(
            plan.env.contains(&("PATH".into(), "/bin".into())),
            "the container's own PATH wins"
        );
        assert_eq!(plan.env.iter().filter(|(k, _)| k == "PATH").count(), 1);

        let unknown: Container =
            serde_json::from_value(json!({"name": "x", "image": "nginx"})).unwrap();
        let e =
            launch_plan(&unknown, &facts, |_, _, _| None, &rules(), &mounts, &base).unwrap_err();
        assert_eq!(e.reason(), "ErrImagePull");
        let missing: Container = serde_json::from_value(json!({"name": "x", "image": "redis",
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}))
        .unwrap();
        let e =
            launch_plan(&missing, &facts, |_, _, _| None, &rules(), &mounts, &base).unwrap_err();
        assert_eq!(e.reason(), "CreateContainerConfigError");
        let plain: Container =
            serde_json::from_value(json!({"name": "r", "image": "redis:7.2"})).unwrap();
        assert_eq!(
            launch_plan(&plain, &facts, |_, _, _| None, &rules(), &mounts, &base)
                .unwrap()
                .program,
            "redis-server"
        );
    }

    #[test]
    fn backoff_is_immediate_then_doubles_to_the_cap() {
        let d = |n| backoff_delay(n, Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(d(1), Duration::ZERO);
        assert_eq!(d(2), Duration::from_secs(10));
        assert_eq!(d(3), Duration::from_secs(20));
        assert_eq!(d(7), Duration::from_secs(300));
        assert_eq!(d(1000), Duration::from_secs(300));
    }

    #[test]
    fn probe_verdicts_change_only_at_the_thresholds() {
        let mut p = ProbeCounter::new(0, 2);
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(false), Some(false));
        assert_eq!(p.record(false), None);
        assert_eq!(p.record(true), Some(true));
        assert_eq!(p.record(true), None);
        assert_eq!(p.record(false), None);
        assert_eq!(
            p.record(true),
            None,
            "one failure below the threshold changes nothing"
        );
        let mut q = ProbeCounter::new(2, 1);
        assert_eq!(q.record(true), None);
        assert_eq!(q.record(true), Some(true));
    }

    #[test]
    fn status_is_ready_only_when_every_container_is() {
        let mut a = ContainerView::creating("redis", "redis:7.2");
        let b = ContainerView::creating("sidecar", "s");
        let s = pod_status(
            None,
            "127.0.0.5",
            "127.0.0.1",
            "2026-11-24T10:00:00Z",
            &[a.clone(), b.clone()],
            "2026-11-24T10:00:01Z",
        );
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["conditions"][2]["status"], "False");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        a.started_once = true;
        a.ready = true;
        a.state = ContainerState::Running {
            started_at: "2026-11-24T10:00:01Z".into(),
        };
        let mut b2 = b.clone();
        b2.started_once = true;
        b2.ready = true;
        let s2 = pod_status(
            Some(&s),
            "127.0.0.5",
            "127.0.0.1",
            "2026-11-24T10:00:00Z",
            &[a, b2],
            "2026-11-24T10:00:02Z",
        );
        assert_eq!(s2["phase"], "Running");
        assert_eq!(s2["conditions"][2]["status"], "True");
        assert_eq!(
            s2["conditions"][2]["lastTransitionTime"],
            "2026-11-24T10:00:02Z"
        );
        assert_eq!(
            s2["conditions"][0]["lastTransitionTime"], "2026-11-24T10:00:01Z",
            "unchanged conditions keep their time"
        );
        let _: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(s2).unwrap();
    }
}
