//! The Redis ACL users the shipped Secret defines (issue 17: applications, replication and
//! the sidecar shared `default` with `+@all`), checked on real `redis-server` processes:
//! * the sidecar's user is sufficient for everything the sidecar does to a Redis, and every
//!   permission it holds is needed (each removed in turn breaks a named operation), proven as
//!   the RBAC Role is;
//! * the replication user is sufficient and minimal for a replica to sync;
//! * the application user reads and writes but cannot run what took the group over
//!   (`FLUSHALL`, `CONFIG`, `REPLICAOF`, `DEBUG`, `SHUTDOWN`, …).

use redis_k8s_election::credentials::{REPLICATION_RULES, SIDECAR_RULES, USERS, auth_conf};
use redis_node::{NodeConfig, RedisNode};
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::RedisServer;

const APP: &str = "application-password-0123456789";
const REPL: &str = "replication-password-0123456789";
const SIDECAR: &str = "sidecar-password-0123456789abc";
const ADMIN: &str = "admin-password-0123456789abcde";

/// `auth.conf` with `user`'s rules replaced by `rules`.
fn conf_with(user: &str, rules: &str) -> String {
    auth_conf([APP, REPL, SIDECAR, ADMIN])
        .lines()
        .map(|l| {
            if l.starts_with(&format!("user {user} ")) {
                let pw = USERS
                    .iter()
                    .zip([APP, REPL, SIDECAR, ADMIN])
                    .find(|((u, _, _), _)| *u == user)
                    .map(|(_, p)| p)
                    .unwrap();
                format!("user {user} reset on >{pw} {rules}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// A Redis started from `conf` (written into `dir` under `name`), fenced and a replica of
/// itself as the shipped manifests start it.
fn redis(dir: &Path, name: &str, conf: &str) -> RedisServer {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf).unwrap();
    RedisServer::start_with_conf(&path, &["--min-replicas-to-write", "2147483647"])
}

fn node(r: &RedisServer, user: &str, password: &str) -> RedisNode {
    let (host, port) = r.host_port();
    let mut cfg = NodeConfig::new(host, port);
    cfg.username = Some(user.into());
    cfg.password = Some(password.into());
    cfg.replication_username = Some("replication".into());
    cfg.replication_password = Some(REPL.into());
    cfg.timeout = Duration::from_secs(2);
    RedisNode::new(cfg).unwrap()
}

/// Everything the sidecar does to a Redis (`redis-node`, as the control loop and the
/// hand-over call it): on `a`, probe, fence, unfence with a checkpoint, write a checkpoint,
/// pause and unpause writes, drop clients, promote; on `b`, follow `a`
/// until the link is up. The first operation refused, by name.
async fn sidecar_workload(
    a: &RedisNode,
    b: &RedisNode,
    a_host: &str,
    a_port: u16,
) -> Result<(), String> {
    let step = |name: &'static str| move |e: redis_node::NodeError| format!("{name}: {e}");
    a.probe().await.map_err(step("probe"))?;
    a.fence().await.map_err(step("fence"))?;
    a.promote().await.map_err(step("promote"))?;
    a.unfence(Some("epoch-1")).await.map_err(step("unfence"))?;
    a.write_checkpoint("epoch-1")
        .await
        .map_err(step("write checkpoint"))?;
    let p = a.probe().await.map_err(step("probe"))?;
    if p.checkpoint.as_deref() != Some("epoch-1") {
        return Err(format!("read checkpoint: {:?}", p.checkpoint));
    }
    a.pause_writes(Duration::from_secs(1))
        .await
        .map_err(step("pause writes"))?;
    a.unpause().await.map_err(step("unpause"))?;
    a.drop_clients().await.map_err(step("drop clients"))?;
    b.fence().await.map_err(step("fence the replica"))?;
    b.follow(a_host, a_port).await.map_err(step("follow"))?;
    replica_links(b).await?;
    master_sees_acks(a).await
}

/// Waits (10 s at most) until the master lists its replica with an acknowledged offset at
/// its own: the acknowledgements (`REPLCONF ACK`) are what the fence and the RPO mode count.
async fn master_sees_acks(a: &RedisNode) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = a
            .probe()
            .await
            .map_err(|e| format!("probe the master: {e}"))?;
        if p.info
            .replicas
            .iter()
            .any(|r| r.acked_offset > 0 && r.acked_offset >= p.info.offset)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the master never saw its replica acknowledge: {:?}",
                p.info.replicas
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (10 s at most) for `b`'s link to its master to come up.
async fn replica_links(b: &RedisNode) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match b.probe().await {
            Ok(p)
                if matches!(
                    p.info.role,
                    redis_node::info::Role::Replica { link_up: true, .. }
                ) =>
            {
                return Ok(());
            }
            Ok(_) if Instant::now() > deadline => {
                return Err("replication link never came up".into());
            }
            Err(e) => return Err(format!("probe the replica: {e}")),
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs the workload against two fresh Redis whose `user` has `rules`.
async fn workload_with(user: &str, rules: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let conf = conf_with(user, rules);
    let ra = redis(dir.path(), "a", &conf);
    let rb = redis(dir.path(), "b", &conf);
    let a = node(&ra, "sidecar", SIDECAR);
    let b = node(&rb, "sidecar", SIDECAR);
    let (host, port) = ra.host_port();
    sidecar_workload(&a, &b, &host, port).await
}

/// The permissions of a rule string (what can be taken away; `resetchannels` and `-@all`
/// only take away).
fn grants(rules: &str) -> Vec<&str> {
    rules
        .split_whitespace()
        .filter(|t| t.starts_with('+') || t.starts_with('~') || t.starts_with('%'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_user_is_sufficient_and_every_permission_is_needed() {
    each_permission_is_needed("sidecar", SIDECAR_RULES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_user_is_sufficient_and_every_permission_is_needed() {
    each_permission_is_needed("replication", REPLICATION_RULES).await;
}

/// The control (`rules` do everything), then each grant removed in turn must break the
/// workload; every grant that breaks nothing is reported together.
async fn each_permission_is_needed(user: &str, rules: &str) {
    workload_with(user, rules)
        .await
        .unwrap_or_else(|e| panic!("the shipped {user} rules: {e}"));
    let mut too_many = Vec::new();
    for grant in grants(rules) {
        let without: Vec<&str> = rules.split_whitespace().filter(|t| *t != grant).collect();
        match workload_with(user, &without.join(" ")).await {
            Ok(()) => too_many.push(grant),
            Err(why) => eprintln!("{user} without {grant}: {why}"),
        }
    }
    assert!(
        too_many.is_empty(),
        "{user}: nothing breaks without {too_many:?}"
    );
}

#[test]
fn the_application_user_works_with_data_but_cannot_take_the_group_over() {
    let dir = tempfile::tempdir().unwrap();
    let r = redis(dir.path(), "a", &auth_conf([APP, REPL, SIDECAR, ADMIN]));
    let (host, port) = r.host_port();
    // `redis-cli` with `auth` (`--user U --pass P`, or `-a P` alone) and `args`: its answer.
    let run = |auth: &[&str], args: &[&str]| -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-h", &host, "-p", &port.to_string(), "--no-auth-warning"])
            .args(auth)
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let cli = |user: &str, pw: &str, args: &[&str]| run(&["--user", user, "--pass", pw], args);
    // A password alone (as Sentinel-era clients send it) is the application user.
    let app = |args: &[&str]| run(&["-a", APP], args);
    // Data commands and what clients read to check a master work (the Redis is fenced as
    // shipped, so a write is refused for that reason, not for a permission).
    assert_eq!(app(&["PING"]), "PONG");
    assert!(app(&["SET", "k", "v"]).contains("NOREPLICAS") || app(&["SET", "k", "v"]) == "OK");
    assert_eq!(
        cli(
            "admin",
            ADMIN,
            &["CONFIG", "SET", "min-replicas-to-write", "0"]
        ),
        "OK"
    );
    assert_eq!(cli("admin", ADMIN, &["REPLICAOF", "NO", "ONE"]), "OK");
    assert_eq!(app(&["SET", "k", "v"]), "OK");
    assert_eq!(app(&["GET", "k"]), "v");
    assert!(app(&["INFO", "replication"]).contains("role:master"));
    assert!(app(&["ROLE"]).contains("master"));
    for refused in [
        vec!["FLUSHALL"],
        vec!["FLUSHDB"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["CONFIG", "SET", "min-replicas-to-write", "0"],
        vec!["REPLICAOF", "NO", "ONE"],
        vec!["DEBUG", "SLEEP", "0"],
        vec!["SHUTDOWN", "NOSAVE"],
        vec!["ACL", "LIST"],
        vec!["CLIENT", "KILL", "TYPE", "normal"],
        vec!["MONITOR"],
        vec!["KEYS", "*"],
    ] {
        let answer = app(&refused);
        // DEBUG is also off for everyone (`enable-debug-command no`), which Redis checks first.
        assert!(
            answer.contains("NOPERM") || (refused[0] == "DEBUG" && answer.contains("not allowed")),
            "{refused:?}: {answer}"
        );
    }
    // The control: the admin user can.
    assert!(cli("admin", ADMIN, &["ACL", "LIST"]).contains("user sidecar"));
    assert_eq!(cli("admin", ADMIN, &["GET", "k"]), "v");
    // The sidecar's user cannot read or write application data.
    assert!(cli("sidecar", SIDECAR, &["GET", "k"]).contains("NOPERM"));
    assert!(cli("sidecar", SIDECAR, &["FLUSHALL"]).contains("NOPERM"));
}
