//! The StatefulSet controller's loop and the Events controllers write: the I/O around the pure
//! [`crate::statefulset`]. One reconcile pass ([`reconcile_statefulsets`]) runs under the store
//! lock after every change, as the real controller's informer-driven queue would.

use crate::api::{self, DeleteOptions, Part, WriteOptions};
use crate::resources::{self, meta_str};
use crate::statefulset::{self, ordinal_of};
use crate::store::{Store, next_change};
use crate::util;
use serde_json::{Value, json};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Records a core/v1 Event about `involved` from `component`, as client-go's recorder does:
/// a repeat of the same reason and message on the same object bumps `count` and
/// `lastTimestamp` instead of making a new Event.
pub fn record_event(
    store: &mut Store,
    involved: &Value,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = meta_str(involved, "namespace")
        .unwrap_or("default")
        .to_string();
    let name = meta_str(involved, "name").unwrap_or_default().to_string();
    let rt = resources::lookup("", "v1", "events").expect("events served");
    let now = util::now_time();
    let repeat = store.list("events", Some(&ns)).into_iter().find(|e| {
        e.pointer("/involvedObject/uid") == involved.pointer("/metadata/uid")
            && e["reason"] == reason
            && e["message"] == message
            && e.pointer("/source/component").and_then(Value::as_str) == Some(component)
    });
    if let Some(old) = repeat {
        let mut e = api::to_view(rt, &old);
        e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
        e["lastTimestamp"] = json!(now);
        let ev_name = meta_str(&e, "name").unwrap_or_default().to_string();
        let _ = api::update(
            store,
            rt,
            &ns,
            &ev_name,
            e,
            Part::Main,
            &WriteOptions::default(),
        );
        return;
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{}", util::new_uid().replace('-', "")[..16].to_string()), "namespace": ns},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": name,
            "namespace": ns,
            "uid": involved.pointer("/metadata/uid").cloned().unwrap_or(json!("")),
            "resourceVersion": involved.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!("")),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let _ = api::create(store, rt, &ns, event, &WriteOptions::default());
}

/// The object is being deleted (it has a `deletionTimestamp`).
pub fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn is_running_and_ready(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

fn owned_by(pod: &Value, set: &Value) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["controller"] == true && r["uid"] == set["metadata"]["uid"])
        })
}

/// One pass of the StatefulSet controller over every set: create missing pods (all at once
/// for `Parallel`, one at a time in ordinal order once the lower ones are Running and Ready for
/// `OrderedReady`), replace failed pods, delete pods above `replicas` (highest first), and
/// write the set's status. Template changes are not rolled out (pods keep the template they
/// were created with until deleted), which the closing notes record as a gap.
pub fn reconcile_statefulsets(store: &mut Store) {
    let pods_rt = resources::lookup("", "v1", "pods").expect("pods served");
    let sets_rt = resources::lookup("apps", "v1", "statefulsets").expect("statefulsets served");
    for set in store.list("statefulsets", None) {
        if is_terminating(&set) {
            continue;
        }
        let set = api::to_view(sets_rt, &set);
        let ns = meta_str(&set, "namespace").unwrap_or_default().to_string();
        let set_name = meta_str(&set, "name").unwrap_or_default().to_string();
        let parallel = set
            .pointer("/spec/podManagementPolicy")
            .and_then(Value::as_str)
            == Some("Parallel");
        let want = statefulset::replicas(&set);
        let pods: Vec<Value> = store
            .list("pods", Some(&ns))
            .into_iter()
            .map(|p| api::to_view(pods_rt, &p))
            .filter(|p| owned_by(p, &set))
            .collect();
        let by_ordinal = |i: usize| {
            pods.iter()
                .find(|p| ordinal_of(&set_name, meta_str(p, "name").unwrap_or_default()) == Some(i))
        };
        // Failed or finished pods are deleted so that they are made again.
        for p in &pods {
            let phase = p.pointer("/status/phase").and_then(Value::as_str);
            if matches!(phase, Some("Failed" | "Succeeded")) && !is_terminating(p) {
                delete_pod(store, &set, p);
            }
        }
        for i in 0..want {
            match by_ordinal(i) {
                Some(_) => {}
                None => {
                    let lower_ready = (0..i).all(|j| {
                        by_ordinal(j).is_some_and(|p| is_running_and_ready(p) && !is_terminating(p))
                    });
                    if !parallel && !lower_ready {
                        break;
                    }
                    ensure_claims(store, &set, i);
                    let pod = statefulset::pod_for(&set, i);
                    let name = meta_str(&pod, "name").unwrap_or_default().to_string();
                    match api::create(store, pods_rt, &ns, pod, &WriteOptions::default()) {
                        Ok(_) => record_event(
                            store,
                            &set,
                            "Normal",
                            "SuccessfulCreate",
                            &format!("create Pod {name} in StatefulSet {set_name} successful"),
                            "statefulset-controller",
                        ),
                        Err(e) => record_event(
                            store,
                            &set,
                            "Warning",
                            "FailedCreate",
                            &format!(
                                "create Pod {name} in StatefulSet {set_name} failed error: {e}"
                            ),
                            "statefulset-controller",
                        ),
                    }
                    if !parallel {
                        break;
                    }
                }
            }
        }
        let mut extra: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                ordinal_of(&set_name, meta_str(p, "name").unwrap_or_default())
                    .is_none_or(|o| o >= want)
            })
            .filter(|p| !is_terminating(p))
            .collect();
        extra.sort_by_key(|p| {
            std::cmp::Reverse(ordinal_of(
                &set_name,
                meta_str(p, "name").unwrap_or_default(),
            ))
        });
        let take = if parallel {
            extra.len()
        } else {
            extra.len().min(1)
        };
        for p in extra.into_iter().take(take) {
            delete_pod(store, &set, p);
        }
        release_scaled_claims(store, &set, want, &pods);
        write_status(store, sets_rt, &set, &pods);
    }
    collect_garbage(store);
}

/// Creates the claims pod `ordinal` mounts that do not exist yet (an existing claim, a
/// retained one from an earlier pod or set, is reused as it is: that is the point of it).
fn ensure_claims(store: &mut Store, set: &Value, ordinal: usize) {
    let rt = resources::lookup("", "v1", "persistentvolumeclaims").expect("claims served");
    let set_name = meta_str(set, "name").unwrap_or_default().to_string();
    for claim in statefulset::claims_for(set, ordinal) {
        let ns = meta_str(&claim, "namespace")
            .unwrap_or_default()
            .to_string();
        let name = meta_str(&claim, "name").unwrap_or_default().to_string();
        if store.get(rt.storage, &ns, &name).is_some() {
            continue;
        }
        match api::create(store, rt, &ns, claim, &WriteOptions::default()) {
            Ok(_) => record_event(
                store,
                set,
                "Normal",
                "SuccessfulCreate",
                &format!(
                    "create Claim {name} Pod {set_name}-{ordinal} in StatefulSet {set_name} success"
                ),
                "statefulset-controller",
            ),
            Err(e) => record_event(
                store,
                set,
                "Warning",
                "FailedCreate",
                &format!(
                    "create Claim {name} for Pod {set_name}-{ordinal} in StatefulSet {set_name} failed error: {e}"
                ),
                "statefulset-controller",
            ),
        }
    }
}

/// `whenScaled: Delete`: the claims of ordinals at or above `want` go once their pod is gone.
fn release_scaled_claims(store: &mut Store, set: &Value, want: usize, pods: &[Value]) {
    let (_, when_scaled) = statefulset::retention(set);
    if !when_scaled {
        return;
    }
    let rt = resources::lookup("", "v1", "persistentvolumeclaims").expect("claims served");
    let set_name = meta_str(set, "name").unwrap_or_default().to_string();
    let ns = meta_str(set, "namespace").unwrap_or_default().to_string();
    let running: Vec<usize> = pods
        .iter()
        .filter_map(|p| ordinal_of(&set_name, meta_str(p, "name").unwrap_or_default()))
        .collect();
    for t in statefulset::claim_templates(set) {
        let tname = t
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let prefix = format!("{tname}-{set_name}-");
        for claim in store.list(rt.storage, Some(&ns)) {
            let name = meta_str(&claim, "name").unwrap_or_default().to_string();
            let Some(ordinal) = name
                .strip_prefix(&prefix)
                .and_then(|n| ordinal_of(&set_name, &format!("{set_name}-{n}")))
            else {
                continue;
            };
            if ordinal >= want && !running.contains(&ordinal) {
                let _ = api::delete(store, rt, &ns, &name, &DeleteOptions::default());
            }
        }
    }
}

/// The garbage collector's background deletion, for what kubesim's controllers own: pods and
/// claims whose every owner (a StatefulSet, by uid) is gone are deleted, as after `kubectl
/// delete statefulset` (pods gracefully, through their kubelet).
fn collect_garbage(store: &mut Store) {
    let sets: Vec<String> = store
        .list("statefulsets", None)
        .iter()
        .filter_map(|s| meta_str(s, "uid").map(str::to_string))
        .collect();
    for plural in ["pods", "persistentvolumeclaims"] {
        let rt = resources::lookup("", "v1", plural).expect("served");
        for obj in store.list(rt.storage, None) {
            let owners: Vec<&Value> = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter(|r| r["kind"] == "StatefulSet").collect())
                .unwrap_or_default();
            let orphaned = !owners.is_empty()
                && owners
                    .iter()
                    .all(|r| !sets.iter().any(|u| r["uid"].as_str() == Some(u.as_str())));
            if !orphaned || is_terminating(&obj) {
                continue;
            }
            let ns = meta_str(&obj, "namespace").unwrap_or_default().to_string();
            let name = meta_str(&obj, "name").unwrap_or_default().to_string();
            let opts = DeleteOptions {
                uid: meta_str(&obj, "uid").map(str::to_string),
                ..Default::default()
            };
            let _ = api::delete(store, rt, &ns, &name, &opts);
        }
    }
}

fn delete_pod(store: &mut Store, set: &Value, pod: &Value) {
    let pods_rt = resources::lookup("", "v1", "pods").expect("pods served");
    let ns = meta_str(pod, "namespace").unwrap_or_default().to_string();
    let name = meta_str(pod, "name").unwrap_or_default().to_string();
    let opts = DeleteOptions {
        uid: meta_str(pod, "uid").map(str::to_string),
        ..Default::default()
    };
    if api::delete(store, pods_rt, &ns, &name, &opts).is_ok() {
        let set_name = meta_str(set, "name").unwrap_or_default();
        record_event(
            store,
            set,
            "Normal",
            "SuccessfulDelete",
            &format!("delete Pod {name} in StatefulSet {set_name} successful"),
            "statefulset-controller",
        );
    }
}

fn write_status(
    store: &mut Store,
    rt: &'static resources::ResourceType,
    set: &Value,
    pods: &[Value],
) {
    let live: Vec<&Value> = pods.iter().filter(|p| !is_terminating(p)).collect();
    let ready = live.iter().filter(|p| is_running_and_ready(p)).count();
    let mut status = set.get("status").cloned().unwrap_or_else(|| json!({}));
    let before = status.clone();
    status["observedGeneration"] = set
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    status["replicas"] = json!(live.len());
    status["readyReplicas"] = json!(ready);
    status["availableReplicas"] = json!(ready);
    status["currentReplicas"] = json!(live.len());
    status["updatedReplicas"] = json!(live.len());
    if status == before {
        return;
    }
    let mut updated = set.clone();
    updated["status"] = status;
    let ns = meta_str(set, "namespace").unwrap_or_default().to_string();
    let name = meta_str(set, "name").unwrap_or_default().to_string();
    let _ = api::update(
        store,
        rt,
        &ns,
        &name,
        updated,
        Part::Status,
        &WriteOptions::default(),
    );
}

/// `value` of a PodDisruptionBudget's `minAvailable`/`maxUnavailable` (a count, or a
/// percentage of `expected`, rounded up as the disruption controller rounds it).
fn scaled(value: &Value, expected: usize) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        Value::String(s) => {
            let pct: f64 = s.strip_suffix('%')?.trim().parse().ok()?;
            Some((pct * expected as f64 / 100.0).ceil() as usize)
        }
        _ => None,
    }
}

/// One pass of the disruption controller: each PodDisruptionBudget's status from the pods it
/// selects, as kube-controller-manager writes it (`expectedPods`, `currentHealthy`,
/// `desiredHealthy`, `disruptionsAllowed`, the `DisruptionAllowed` condition), so that
/// `kubectl get pdb` and a drain see the budget the pods leave. Expected pods are the
/// selected pods (not terminating); healthy ones are Running and Ready.
pub fn reconcile_disruption_budgets(store: &mut Store) {
    let pods_rt = resources::lookup("", "v1", "pods").expect("pods served");
    let pdb_rt = resources::lookup("policy", "v1", "poddisruptionbudgets").expect("budgets served");
    for pdb in store.list("poddisruptionbudgets", None) {
        let pdb = api::to_view(pdb_rt, &pdb);
        let ns = meta_str(&pdb, "namespace").unwrap_or_default().to_string();
        let selector = crate::selector::LabelSelector::from_object(pdb.pointer("/spec/selector"));
        let pods: Vec<Value> = store
            .list("pods", Some(&ns))
            .into_iter()
            .map(|p| api::to_view(pods_rt, &p))
            .filter(|p| !is_terminating(p))
            .filter(|p| selector.matches(p.pointer("/metadata/labels").and_then(Value::as_object)))
            .collect();
        let expected = pods.len();
        let healthy = pods.iter().filter(|p| is_running_and_ready(p)).count();
        let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
            scaled(min, expected).unwrap_or(expected)
        } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
            expected.saturating_sub(scaled(max, expected).unwrap_or(0))
        } else {
            expected
        };
        let allowed = healthy.saturating_sub(desired);
        let mut status = pdb.get("status").cloned().unwrap_or_else(|| json!({}));
        let before = status.clone();
        status["observedGeneration"] = pdb
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        status["expectedPods"] = json!(expected);
        status["currentHealthy"] = json!(healthy);
        status["desiredHealthy"] = json!(desired);
        status["disruptionsAllowed"] = json!(allowed);
        let (cond, reason) = if allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        let old = before
            .pointer("/conditions/0")
            .filter(|c| c["status"] == cond && c["reason"] == reason)
            .cloned();
        status["conditions"] = json!([old.unwrap_or_else(|| json!({
            "type": "DisruptionAllowed",
            "status": cond,
            "reason": reason,
            "message": "",
            "observedGeneration": status["observedGeneration"],
            "lastTransitionTime": util::now_time(),
        }))]);
        if status == before {
            continue;
        }
        let mut updated = pdb.clone();
        updated["status"] = status;
        let name = meta_str(&pdb, "name").unwrap_or_default().to_string();
        let _ = api::update(
            store,
            pdb_rt,
            &ns,
            &name,
            updated,
            Part::Status,
            &WriteOptions::default(),
        );
    }
}

/// The StatefulSet and disruption controllers, running: a pass after every committed change
/// to what they read (and every second, so nothing waits on a missed wake-up).
pub struct StatefulSetController {
    task: JoinHandle<()>,
}

impl StatefulSetController {
    /// Starts the loop over `store`.
    pub fn start(store: Arc<RwLock<Store>>) -> Self {
        let task = tokio::spawn(async move {
            let mut changes = store.read().expect("store lock").subscribe();
            loop {
                {
                    let mut store = store.write().expect("store lock");
                    reconcile_statefulsets(&mut store);
                    reconcile_disruption_budgets(&mut store);
                }
                // Only changes to what the controllers read wake them.
                next_change(
                    &mut changes,
                    &["pods", "statefulsets", "poddisruptionbudgets"],
                    Duration::from_secs(1),
                )
                .await;
            }
        });
        Self { task }
    }
}

impl Drop for StatefulSetController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_counts_and_percentages_as_the_disruption_controller_does() {
        assert_eq!(scaled(&json!(2), 3), Some(2));
        assert_eq!(scaled(&json!("50%"), 3), Some(2), "rounded up");
        assert_eq!(scaled(&json!("34%"), 3), Some(2));
        assert_eq!(scaled(&json!("0%"), 3), Some(0));
        assert_eq!(scaled(&json!("lots"), 3), None);
    }

    fn store_with_set(policy: &str, replicas: usize) -> Store {
        let mut store = Store::default();
        let ns = resources::lookup("", "v1", "namespaces").unwrap();
        api::create(
            &mut store,
            ns,
            "",
            json!({"metadata": {"name": "db"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let rt = resources::lookup("apps", "v1", "statefulsets").unwrap();
        let set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "redis"},
            "spec": {"replicas": replicas, "serviceName": "h", "podManagementPolicy": policy,
                "selector": {"matchLabels": {"app": "redis"}},
                "template": {"metadata": {"labels": {"app": "redis"}},
                    "spec": {"containers": [{"name": "redis", "image": "redis:7.2"}]}}}});
        api::create(&mut store, rt, "db", set, &WriteOptions::default()).unwrap();
        store
    }

    fn pod_names(store: &Store) -> Vec<String> {
        store
            .list("pods", Some("db"))
            .iter()
            .map(|p| meta_str(p, "name").unwrap().to_string())
            .collect()
    }

    fn make_ready(store: &mut Store, name: &str) {
        let rt = resources::lookup("", "v1", "pods").unwrap();
        let mut p = api::get(store, rt, "db", name).unwrap();
        p["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        api::update(
            store,
            rt,
            "db",
            name,
            p,
            Part::Status,
            &WriteOptions::default(),
        )
        .unwrap();
    }

    #[test]
    fn parallel_creates_all_pods_at_once_and_recreates_a_deleted_one() {
        let mut store = store_with_set("Parallel", 3);
        reconcile_statefulsets(&mut store);
        assert_eq!(pod_names(&store), ["redis-0", "redis-1", "redis-2"]);
        reconcile_statefulsets(&mut store);
        assert_eq!(pod_names(&store).len(), 3, "a second pass creates nothing");
        let rt = resources::lookup("", "v1", "pods").unwrap();
        let old_uid = store.get("pods", "db", "redis-1").unwrap()["metadata"]["uid"].clone();
        api::delete(&mut store, rt, "db", "redis-1", &DeleteOptions::default()).unwrap();
        reconcile_statefulsets(&mut store);
        assert_ne!(
            store.get("pods", "db", "redis-1").unwrap()["metadata"]["uid"],
            old_uid
        );
        let events: Vec<String> = store
            .list("events", Some("db"))
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect();
        assert!(
            events.contains(&"SuccessfulCreate".to_string()),
            "{events:?}"
        );
    }

    #[test]
    fn ordered_ready_waits_for_each_pod_and_scale_down_removes_the_highest() {
        let mut store = store_with_set("OrderedReady", 3);
        reconcile_statefulsets(&mut store);
        assert_eq!(pod_names(&store), ["redis-0"]);
        reconcile_statefulsets(&mut store);
        assert_eq!(
            pod_names(&store),
            ["redis-0"],
            "redis-1 waits for redis-0 to be ready"
        );
        make_ready(&mut store, "redis-0");
        reconcile_statefulsets(&mut store);
        assert_eq!(pod_names(&store), ["redis-0", "redis-1"]);
        make_ready(&mut store, "redis-1");
        reconcile_statefulsets(&mut store);
        make_ready(&mut store, "redis-2");
        reconcile_statefulsets(&mut store);
        let set = store.get("statefulsets", "db", "redis").unwrap();
        assert_eq!(set["status"]["readyReplicas"], 3);
        let rt = resources::lookup("apps", "v1", "statefulsets").unwrap();
        let mut s = api::to_view(rt, &set);
        s["spec"]["replicas"] = json!(1);
        api::update(
            &mut store,
            rt,
            "db",
            "redis",
            s,
            Part::Main,
            &WriteOptions::default(),
        )
        .unwrap();
        reconcile_statefulsets(&mut store);
        // Pods without a node are deleted at once; redis-2 went first.
        assert_eq!(pod_names(&store), ["redis-0", "redis-1"]);
        reconcile_statefulsets(&mut store);
        assert_eq!(pod_names(&store), ["redis-0"]);
    }

    fn claim_names(store: &Store) -> Vec<String> {
        store
            .list("persistentvolumeclaims", Some("db"))
            .iter()
            .map(|p| meta_str(p, "name").unwrap().to_string())
            .collect()
    }

    /// Changes the set `redis` as `edit` says, through the API.
    fn update_set(store: &mut Store, edit: impl FnOnce(&mut Value)) {
        let rt = resources::lookup("apps", "v1", "statefulsets").unwrap();
        let mut s = api::to_view(rt, &store.get("statefulsets", "db", "redis").unwrap());
        edit(&mut s["spec"]);
        api::update(
            store,
            rt,
            "db",
            "redis",
            s,
            Part::Main,
            &WriteOptions::default(),
        )
        .unwrap();
    }

    fn with_claims(store: &mut Store, policy: Value) {
        update_set(store, |spec| {
            spec["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
            spec["persistentVolumeClaimRetentionPolicy"] = policy;
        });
    }

    fn set_replicas(store: &mut Store, n: usize) {
        update_set(store, |spec| spec["replicas"] = json!(n));
    }

    #[test]
    fn claims_outlive_their_pods_and_go_as_the_retention_policy_says() {
        // Retain (the default): claims stay when pods go, and even with the set.
        let mut store = store_with_set("Parallel", 2);
        with_claims(
            &mut store,
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        reconcile_statefulsets(&mut store);
        assert_eq!(claim_names(&store), ["data-redis-0", "data-redis-1"]);
        let claim = store
            .get("persistentvolumeclaims", "db", "data-redis-0")
            .unwrap();
        assert_eq!(claim["status"]["phase"], "Bound");
        let pod = store.get("pods", "db", "redis-0").unwrap();
        assert_eq!(
            pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data-redis-0"
        );
        // A re-created pod mounts the same claim (not a new one).
        let uid = claim["metadata"]["uid"].clone();
        let pods = resources::lookup("", "v1", "pods").unwrap();
        api::delete(&mut store, pods, "db", "redis-0", &DeleteOptions::default()).unwrap();
        reconcile_statefulsets(&mut store);
        assert_eq!(
            store
                .get("persistentvolumeclaims", "db", "data-redis-0")
                .unwrap()["metadata"]["uid"],
            uid
        );
        let sets = resources::lookup("apps", "v1", "statefulsets").unwrap();
        api::delete(&mut store, sets, "db", "redis", &DeleteOptions::default()).unwrap();
        reconcile_statefulsets(&mut store);
        assert!(pod_names(&store).is_empty(), "the set's pods go with it");
        assert_eq!(claim_names(&store).len(), 2, "retained");

        // Delete: scaled-away claims go once their pod is gone; the rest with the set.
        let mut store = store_with_set("Parallel", 2);
        with_claims(
            &mut store,
            json!({"whenDeleted": "Delete", "whenScaled": "Delete"}),
        );
        reconcile_statefulsets(&mut store);
        set_replicas(&mut store, 1);
        reconcile_statefulsets(&mut store);
        reconcile_statefulsets(&mut store);
        assert_eq!(claim_names(&store), ["data-redis-0"]);
        api::delete(&mut store, sets, "db", "redis", &DeleteOptions::default()).unwrap();
        reconcile_statefulsets(&mut store);
        assert!(claim_names(&store).is_empty());
    }
}
