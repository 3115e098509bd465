//! What the kubelet makes of a pod's container spec before it starts a process: the
//! environment (`value`, `fieldRef`, `secretKeyRef`, `configMapKeyRef`) and the command line,
//! with Kubernetes' `$(VAR)` expansion. Pure: the kubelet supplies the pod's facts and a
//! lookup for Secrets and ConfigMaps.

use k8s_openapi::api::core::v1::Container;
use std::collections::BTreeMap;

/// The facts about a pod that `fieldRef` can name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// `status.podIP`.
    pub pod_ip: String,
}

/// Why a container cannot be started (the kubelet reports it as the container's waiting
/// reason, `CreateContainerConfigError`, as the real one does).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A `fieldRef` path the kubelet does not know.
    #[error("env {var}: unsupported fieldRef fieldPath {path:?}")]
    FieldPath {
        /// The variable.
        var: String,
        /// The path.
        path: String,
    },
    /// A referenced Secret or ConfigMap key is missing and not optional.
    #[error("env {var}: {kind} {name:?} has no key {key:?}")]
    MissingKey {
        /// The variable.
        var: String,
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Key.
        key: String,
    },
    /// A `valueFrom` source the kubelet does not support.
    #[error("env {var}: unsupported valueFrom (only fieldRef, secretKeyRef, configMapKeyRef)")]
    Unsupported {
        /// The variable.
        var: String,
    },
}

/// Kubernetes' `$(VAR)` expansion (k8s.io/kubernetes third_party/forked/golang/expansion):
/// `$(NAME)` becomes the value when `lookup` knows NAME and stays as written otherwise; `$$`
/// is an escaped `$`; a `$` before anything else, or an unclosed `$(`, stays as written.
/// Written here because no Rust crate implements these exact rules.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field(facts: &PodFacts, var: &str, path: &str) -> Result<String, EnvError> {
    let bad = || EnvError::FieldPath {
        var: var.into(),
        path: path.into(),
    };
    let keyed = |prefix: &str, map: &BTreeMap<String, String>| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.get(key).cloned().unwrap_or_default())
    };
    Ok(match path {
        "metadata.name" => facts.name.clone(),
        "metadata.namespace" => facts.namespace.clone(),
        "metadata.uid" => facts.uid.clone(),
        "spec.nodeName" => facts.node_name.clone(),
        "spec.serviceAccountName" => facts.service_account.clone(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.clone(),
        p if p.starts_with("metadata.labels[") => {
            keyed("metadata.labels", &facts.labels).ok_or_else(bad)?
        }
        p if p.starts_with("metadata.annotations[") => {
            keyed("metadata.annotations", &facts.annotations).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    })
}

/// A container's environment in order. Each `value` is expanded against the variables
/// defined before it (as the kubelet does); `lookup(kind, name, key)` reads Secrets
/// (`"secret"`) and ConfigMaps (`"configmap"`).
pub fn container_env(
    container: &Container,
    facts: &PodFacts,
    lookup: impl Fn(&'static str, &str, &str) -> Option<String>,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(field(facts, &e.name, &f.field_path)?)
                } else if let Some(s) = &from.secret_key_ref {
                    keyed_value(&lookup, "secret", &e.name, &s.name, &s.key, s.optional)?
                } else if let Some(c) = &from.config_map_key_ref {
                    keyed_value(&lookup, "configmap", &e.name, &c.name, &c.key, c.optional)?
                } else {
                    return Err(EnvError::Unsupported {
                        var: e.name.clone(),
                    });
                }
            }
            (Some(v), None) => Some(expand(v, |n| {
                out.iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            })),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            out.retain(|(k, _)| *k != e.name);
            out.push((e.name.clone(), v));
        }
    }
    Ok(out)
}

fn keyed_value(
    lookup: &impl Fn(&'static str, &str, &str) -> Option<String>,
    kind: &'static str,
    var: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, EnvError> {
    match lookup(kind, name, key) {
        Some(v) => Ok(Some(v)),
        None if optional == Some(true) => Ok(None),
        None => Err(EnvError::MissingKey {
            var: var.into(),
            kind,
            name: name.into(),
            key: key.into(),
        }),
    }
}

/// The container's command line: `command` (or the image's entrypoint, `default_entrypoint`)
/// then `args`, each expanded against the container's environment.
pub fn command_line(
    container: &Container,
    env: &[(String, String)],
    default_entrypoint: &[String],
) -> Vec<String> {
    let lookup = |n: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let command: Vec<String> = match &container.command {
        Some(c) if !c.is_empty() => c.clone(),
        _ => default_entrypoint.to_vec(),
    };
    command
        .iter()
        .chain(container.args.iter().flatten())
        .map(|a| expand(a, lookup))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |n| m.get(n).cloned()
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let v = vars(&[("IP", "10.0.0.5"), ("P", "6379")]);
        assert_eq!(expand("$(IP):$(P)", &v), "10.0.0.5:6379");
        assert_eq!(expand("$(MISSING)-x", &v), "$(MISSING)-x");
        assert_eq!(expand("$$(IP)", &v), "$(IP)");
        assert_eq!(expand("$$", &v), "$");
        assert_eq!(expand("a$b", &v), "a$b");
        assert_eq!(expand("tail$", &v), "tail$");
        assert_eq!(expand("$(IP", &v), "$(IP");
        assert_eq!(expand("$()", &v), "$()");
        assert_eq!(expand("$($$)", &v), "$($$)", "a reference named $$");
        assert_eq!(
            expand("${IP}", &v),
            "${IP}",
            "shell syntax is not Kubernetes'"
        );
        assert_eq!(expand("für $(IP) ✓", &v), "für 10.0.0.5 ✓");
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn facts() -> PodFacts {
        PodFacts {
            name: "redis-1".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            labels: [("app".to_string(), "redis".to_string())].into(),
            pod_ip: "127.0.1.2".into(),
            service_account: "redis".into(),
            ..PodFacts::default()
        }
    }

    #[test]
    fn env_resolves_field_refs_keys_and_earlier_variables() {
        let c = container(json!({"name": "s", "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "REDIS_ADDR", "value": "$(POD_IP):6379"},
            {"name": "LATER", "value": "$(DEFINED_AFTER)"},
            {"name": "DEFINED_AFTER", "value": "x"},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "none", "optional": true}}},
        ], "command": ["redis-server"], "args": ["--bind", "$(POD_IP)", "--port", "$(NOPE)"]}));
        let lookup = |kind: &str, name: &str, key: &str| {
            (kind == "secret" && name == "auth" && key == "password").then(|| "pw".to_string())
        };
        let env = container_env(&c, &facts(), lookup).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_IP"), Some("127.0.1.2"));
        assert_eq!(get("POD_NAME"), Some("redis-1"));
        assert_eq!(get("APP"), Some("redis"));
        assert_eq!(get("REDIS_ADDR"), Some("127.0.1.2:6379"));
        assert_eq!(
            get("LATER"),
            Some("$(DEFINED_AFTER)"),
            "only earlier variables"
        );
        assert_eq!(get("PW"), Some("pw"));
        assert_eq!(get("OPT"), None, "an optional missing key sets nothing");
        assert_eq!(
            command_line(&c, &env, &[]),
            ["redis-server", "--bind", "127.0.1.2", "--port", "$(NOPE)"]
        );
    }

    #[test]
    fn bad_references_are_clear_errors() {
        let c = container(json!({"name": "s", "env": [
            {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}));
        assert_eq!(
            container_env(&c, &facts(), |_, _, _| None)
                .unwrap_err()
                .to_string(),
            "env X: unsupported fieldRef fieldPath \"spec.bogus\""
        );
        let c = container(json!({"name": "s", "env": [
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "auth", "key": "password"}}}]}));
        assert!(matches!(
            container_env(&c, &facts(), |_, _, _| None),
            Err(EnvError::MissingKey { kind: "secret", .. })
        ));
    }

    proptest::proptest! {
        /// With nothing to substitute, only an escaped `$$` changes a string (and only
        /// shortens it; `$($$)` names a variable called `$$` and stays as written).
        #[test]
        fn unknown_references_leave_text_as_written(s in "[a-z$()]{0,24}") {
            let expanded = expand(&s, |_| None);
            if s.contains("$$") {
                proptest::prop_assert!(expanded.len() <= s.len());
            } else {
                proptest::prop_assert_eq!(expanded, s);
            }
        }
    }

    #[test]
    fn without_a_command_the_image_entrypoint_runs_with_the_args() {
        let c = container(json!({"name": "s", "args": ["sidecar"]}));
        assert_eq!(
            command_line(&c, &[], &["/redis-k8s-election".to_string()]),
            ["/redis-k8s-election", "sidecar"]
        );
    }
}
