//! Authentication results and RBAC authorisation of service-account requests against the
//! Roles bound to them (`plugin/pkg/auth/authorizer/rbac`), with the real 403 message.

use crate::status::{ApiError, GroupResource};
use crate::store::Store;
use serde_json::Value;

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum User {
    /// An administrator token from `--token`: everything is allowed.
    Admin,
    /// A service account, by namespace and name.
    ServiceAccount {
        /// Namespace of the account.
        namespace: String,
        /// Name of the account.
        name: String,
    },
}

impl User {
    /// The user name the real server reports.
    pub fn name(&self) -> String {
        match self {
            User::Admin => "kubesim-admin".to_string(),
            User::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }
}

/// What a resource request asks to do (the authoriser's `Attributes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
    /// API group.
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, e.g. `status`, or empty.
    pub subresource: String,
    /// Namespace, or empty for cluster scope.
    pub namespace: String,
    /// Object name, or empty.
    pub name: String,
}

fn contains(list: Option<&Value>, want: &str) -> bool {
    list.and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(want)))
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let groups = rule.get("apiGroups");
    if !(contains(groups, "*") || contains(groups, &a.group)) {
        return false;
    }
    let verbs = rule.get("verbs");
    if !(contains(verbs, "*") || contains(verbs, a.verb)) {
        return false;
    }
    let resources = rule.get("resources");
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = contains(resources, "*")
        || contains(resources, &combined)
        || (!a.subresource.is_empty()
            && (contains(resources, &format!("{}/*", a.resource))
                || contains(resources, &format!("*/{}", a.subresource))));
    if !resource_ok {
        return false;
    }
    match rule.get("resourceNames").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => {
            !a.name.is_empty() && names.iter().any(|n| n.as_str() == Some(a.name.as_str()))
        }
        _ => true,
    }
}

fn subject_matches(subject: &Value, binding_ns: &str, sa_ns: &str, sa_name: &str) -> bool {
    let s = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or_default();
    match s("kind") {
        "ServiceAccount" => {
            let ns = if s("namespace").is_empty() {
                binding_ns
            } else {
                s("namespace")
            };
            s("name") == sa_name && ns == sa_ns
        }
        "User" => s("name") == format!("system:serviceaccount:{sa_ns}:{sa_name}"),
        "Group" => {
            let g = s("name");
            g == "system:serviceaccounts"
                || g == format!("system:serviceaccounts:{sa_ns}")
                || g == "system:authenticated"
        }
        _ => false,
    }
}

/// The rules a user holds in namespace `ns` (a `SelfSubjectRulesReview`'s `resourceRules`):
/// everything for an administrator, the rules of the Roles bound to a service account.
pub fn rules_in(store: &Store, user: &User, ns: &str) -> Vec<Value> {
    let (sa_ns, sa_name) = match user {
        User::Admin => {
            return vec![
                serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            ];
        }
        User::ServiceAccount { namespace, name } => (namespace.as_str(), name.as_str()),
    };
    let mut rules = Vec::new();
    for binding in store.list("rolebindings", Some(ns)) {
        let bound = binding
            .get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subs| subs.iter().any(|s| subject_matches(s, ns, sa_ns, sa_name)));
        if !bound || binding.pointer("/roleRef/kind").and_then(Value::as_str) != Some("Role") {
            continue;
        }
        let role_name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(role) = store.get("roles", ns, role_name) {
            rules.extend(
                role.get("rules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    rules
}

/// The verb names the authoriser knows, as the `'static` strings [`Attributes`] holds.
pub fn known_verb(verb: &str) -> Option<&'static str> {
    [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
    ]
    .into_iter()
    .find(|v| *v == verb)
}

/// Allows or refuses a resource request, with the real 403 Status on refusal.
pub fn authorize(store: &Store, user: &User, a: &Attributes) -> Result<(), ApiError> {
    let (sa_ns, sa_name) = match user {
        User::Admin => return Ok(()),
        User::ServiceAccount { namespace, name } => (namespace.as_str(), name.as_str()),
    };
    if !a.namespace.is_empty() {
        for binding in store.list("rolebindings", Some(&a.namespace)) {
            let bound = binding
                .get("subjects")
                .and_then(Value::as_array)
                .is_some_and(|subs| {
                    subs.iter()
                        .any(|s| subject_matches(s, &a.namespace, sa_ns, sa_name))
                });
            if !bound {
                continue;
            }
            // Only namespaced Roles are served; a binding to a ClusterRole grants nothing here,
            // as it would in a cluster where that ClusterRole does not exist.
            if binding.pointer("/roleRef/kind").and_then(Value::as_str) != Some("Role") {
                continue;
            }
            let role_name = binding
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(role) = store.get("roles", &a.namespace, role_name) else {
                continue;
            };
            let allowed = role
                .get("rules")
                .and_then(Value::as_array)
                .is_some_and(|rules| rules.iter().any(|r| rule_allows(r, a)));
            if allowed {
                return Ok(());
            }
        }
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let why = if a.namespace.is_empty() {
        format!(
            "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope",
            user.name(),
            a.verb,
            a.group
        )
    } else {
        format!(
            "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{}\"",
            user.name(),
            a.verb,
            a.group,
            a.namespace
        )
    };
    // GroupResource needs 'static strings; the set of served names is static, so leak-free
    // lookups are done by matching against the table.
    let gr = crate::resources::RESOURCES
        .iter()
        .find(|r| r.group == a.group && r.plural == a.resource)
        .map(|r| r.gr())
        .unwrap_or(GroupResource {
            group: "",
            resource: "unknown",
        });
    Err(ApiError::forbidden(gr, &a.name, &why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &'static str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb,
            group: "coordination.k8s.io".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn rules_match_verbs_resources_and_names() {
        let rule = json!({"apiGroups":["coordination.k8s.io"],"resources":["leases"],"verbs":["get","update"],"resourceNames":["l1"]});
        assert!(rule_allows(&rule, &attrs("get", "leases", "", "l1")));
        assert!(!rule_allows(&rule, &attrs("get", "leases", "", "l2")));
        assert!(!rule_allows(&rule, &attrs("list", "leases", "", "")));
        assert!(!rule_allows(&rule, &attrs("get", "leases", "status", "l1")));
        let star = json!({"apiGroups":["*"],"resources":["leases/*"],"verbs":["*"]});
        assert!(
            star.get("resources")
                .is_some_and(|_| rule_allows(&star, &attrs("patch", "leases", "status", "x")))
        );
    }
}
