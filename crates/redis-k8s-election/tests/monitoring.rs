//! The monitoring pack (`deploy/monitoring/`): the alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`, Debian's `prometheus` package), the Prometheus
//! Operator's copy carries the same rules, the rules and the dashboard use only metrics the
//! sidecar exports, and a real Prometheus scraping a group fires the alert for a dead leader
//! Redis and resolves it.

use harness::Group;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring")
}

fn yaml(path: &Path) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool on PATH (Debian's prometheus package; .ci/run installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "alerts.rules.yml"], &pack());
    assert!(ok, "{out}");
    assert!(out.contains("9 rules found"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yml"], &pack());
    assert!(ok, "{out}");
    // The control: the same tests against a rule file with one threshold changed fail.
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(pack().join("alerts.rules.yml")).unwrap();
    let broken = rules.replace(
        "sum by (namespace) (redis_election_redis_writable_master) > 1",
        "sum by (namespace) (redis_election_redis_writable_master) > 2",
    );
    assert_ne!(broken, rules);
    std::fs::write(dir.path().join("alerts.rules.yml"), broken).unwrap();
    std::fs::copy(
        pack().join("alerts.test.yml"),
        dir.path().join("alerts.test.yml"),
    )
    .unwrap();
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yml"], dir.path());
    assert!(!ok && out.contains("RedisElectionSplitBrain"), "{out}");
}

#[test]
fn the_operators_rule_carries_the_same_alerts() {
    let rules = yaml(&pack().join("alerts.rules.yml"));
    let operator = yaml(&pack().join("prometheusrule.yaml"));
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["spec"]["groups"], rules["groups"]);
    let k = yaml(&pack().join("kustomization.yaml"));
    assert_eq!(
        k["resources"],
        serde_json::json!(["podmonitor.yaml", "prometheusrule.yaml"])
    );
}

/// Every `redis_election_…` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("redis_election_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_rules_and_the_dashboard_use_only_metrics_the_sidecar_exports() {
    use redis_k8s_election::sidecar::metrics::{Answered, Kind, Metrics, Outcome};
    // A label set of each family, or the families print nothing.
    let m = Metrics::new();
    m.set_role(redis_k8s_election::wire::SidecarRole::Leader);
    m.api_errors
        .get_or_create(&Kind {
            kind: "timeout".into(),
        })
        .inc();
    m.redis_errors
        .get_or_create(&Kind {
            kind: "probe".into(),
        })
        .inc();
    m.failsafe_rounds
        .get_or_create(&Outcome {
            outcome: "confirmed".into(),
        })
        .inc();
    m.failsafe_messages
        .get_or_create(&Answered {
            kind: "round".into(),
            result: "confirmed".into(),
        })
        .inc();
    let exported = m.encode();
    // Families by their `# TYPE` lines, with the sample suffixes of their types.
    let mut samples = std::collections::BTreeSet::new();
    for line in exported.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                samples.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    samples.insert(format!("{name}{s}"));
                }
            }
            _ => {
                samples.insert(name.to_string());
            }
        }
    }
    let dashboard = std::fs::read_to_string(pack().join("grafana-dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(d["panels"].as_array().unwrap().len() >= 10);
    for (what, text) in [
        (
            "alerts.rules.yml",
            std::fs::read_to_string(pack().join("alerts.rules.yml")).unwrap(),
        ),
        ("grafana-dashboard.json", dashboard),
    ] {
        let used = metric_names(&text);
        assert!(!used.is_empty());
        for name in used {
            assert!(
                samples.contains(&name),
                "{what} uses {name}, which the sidecar does not export ({samples:?})"
            );
        }
    }
}

/// A Prometheus process, ended on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus scraping `targets` (pod name, sidecar address) every second and
/// evaluating the shipped rules every second, their `for` shortened to 2 s (the durations are
/// what `promtool test rules` checks; here the expressions meet real metrics).
fn start_prometheus(targets: &[(String, String)]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(pack().join("alerts.rules.yml")).unwrap();
    let mut fast = String::new();
    for line in rules.lines() {
        if line.trim_start().starts_with("for: ") {
            fast.push_str(&line.replace(line.trim_start(), "for: 2s"));
        } else {
            fast.push_str(line);
        }
        fast.push('\n');
    }
    std::fs::write(dir.path().join("rules.yml"), fast).unwrap();
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n  - job_name: redis-election\n    scrape_timeout: 900ms\n    static_configs:\n",
    );
    for (pod, addr) in targets {
        config.push_str(&format!(
            "      - targets: ['{addr}']\n        labels: {{namespace: default, pod: {pod}}}\n"
        ));
    }
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let listen = testkit::free_loopback_addr();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus on PATH (Debian's prometheus package; .ci/run installs it)");
    Prometheus {
        child,
        url: format!("http://{listen}"),
        _dir: dir,
    }
}

/// The alerts firing for `name`, as Prometheus lists them (labels), or `None` while it does
/// not answer.
async fn firing(p: &Prometheus, name: &str) -> Option<Vec<Value>> {
    let v: Value = reqwest::get(format!("{}/api/v1/alerts", p.url))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect(),
    )
}

/// A real Prometheus scrapes a group's sidecars with the shipped rules: nothing fires while
/// the group is healthy (the control); the leader's Redis stopped fires RedisElectionRedisDown
/// for that pod; resumed, the alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_and_resolves_the_alert_for_a_dead_leader_redis() {
    let g = Group::start(3).await;
    let leader = g.converged(Duration::from_secs(30)).await;
    let targets: Vec<(String, String)> = (0..3)
        .map(|i| (harness::name(i), g.sidecar_http[i].unwrap().to_string()))
        .collect();
    let p = start_prometheus(&targets);
    // Healthy: every target scraped at least five times (over four seconds of samples, each
    // evaluated by the rules: twice their shortened `for`), and nothing firing.
    let scalar = |q: &'static str| {
        let url = format!("{}/api/v1/query", p.url);
        async move {
            let v: Value = reqwest::Client::new()
                .get(url)
                .query(&[("query", q)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let targets = scalar("count(up == 1)").await;
        let scrapes = scalar("min(count_over_time(up[1m]))").await;
        if targets == Some(3.0) && scrapes.is_some_and(|n| n >= 5.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the three sidecars five times: {targets:?} {scrapes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for alert in [
        "RedisElectionRedisDown",
        "RedisElectionNoLeader",
        "RedisElectionSplitBrain",
    ] {
        assert_eq!(
            firing(&p, alert).await,
            Some(vec![]),
            "{alert} fired on a healthy group"
        );
    }
    // The leader's Redis stops answering.
    g.redis[leader].as_ref().unwrap().signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let f = firing(&p, "RedisElectionRedisDown")
            .await
            .unwrap_or_default();
        if f.iter().any(|l| l["pod"] == harness::name(leader).as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RedisElectionRedisDown never fired: {f:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    g.redis[leader].as_ref().unwrap().signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while firing(&p, "RedisElectionRedisDown").await != Some(vec![]) {
        assert!(
            Instant::now() < deadline,
            "RedisElectionRedisDown never resolved"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
