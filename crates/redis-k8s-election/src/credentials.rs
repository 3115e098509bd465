//! The group's credentials, made at random: the shipped manifests hold none (issue 17: the
//! Secret they once shipped worked as it was, so a group deployed unchanged was open to
//! anyone who had read the example). `local` and the tests make them with this; users with
//! `deploy/kubernetes/make-secret.sh`, which writes the same keys.

use serde_json::{Value, json};

/// The Secret's name in the shipped manifests.
pub const AUTH_SECRET: &str = "redis-auth";

/// What applications may do, as Redis' `default` user (so a client that sends only a
/// password, as Sentinel-era clients do, is this user): every data command on every key and
/// channel, not the administrative and dangerous ones (`CONFIG`, `FLUSHALL`, `DEBUG`,
/// `REPLICAOF`, `SHUTDOWN`, `KEYS`, …), but `INFO` and `ROLE`, which clients read to check a
/// master (ioredis' ready check, redis-py's Sentinel pools).
pub const APPLICATION_RULES: &str = "~* &* +@all -@admin -@dangerous +info +role";

/// What replicas may do on their master: sync (`PSYNC`) and acknowledge (`REPLCONF`), and
/// nothing else. Redis' docs add `+ping`, but a replica's handshake PING comes before its
/// AUTH, so it is never checked against this user (the minimality test shows nothing breaks
/// without it).
pub const REPLICATION_RULES: &str = "resetchannels -@all +psync +replconf";

/// What the sidecar may do: exactly the commands it sends (`redis-node`), on the one key it
/// writes (the checkpoint). A test removes each in turn and shows what breaks.
pub const SIDECAR_RULES: &str = "resetchannels -@all +info +config|get +config|set +client|kill +client|pause +client|unpause +replicaof %RW~redis-k8s-election:* +get +set";

/// What operators may do (`redis-cli --user admin`): everything.
pub const ADMIN_RULES: &str = "~* &* +@all";

/// The ACL users, their rules and the Secret key holding each password.
pub const USERS: [(&str, &str, &str); 4] = [
    ("default", APPLICATION_RULES, "password"),
    ("replication", REPLICATION_RULES, "replication-password"),
    ("sidecar", SIDECAR_RULES, "sidecar-password"),
    ("admin", ADMIN_RULES, "admin-password"),
];

/// Every key of the Secret that holds a credential (all but `auth.conf`, which repeats the
/// passwords): what `make-secret.sh` and [`generated_auth_secret`] fill with random values.
pub const CREDENTIAL_KEYS: [&str; 6] = [
    "password",
    "replication-password",
    "sidecar-password",
    "admin-password",
    "admin-token",
    "peer-key",
];

/// Redis' `auth.conf`: the users, each with its password and rules, and the replication
/// user as `masteruser`. `passwords` in the order of [`USERS`].
pub fn auth_conf(passwords: [&str; 4]) -> String {
    let mut out = String::new();
    for ((user, rules, _), pw) in USERS.iter().zip(passwords) {
        out.push_str(&format!("user {user} reset on >{pw} {rules}\n"));
    }
    out.push_str(&format!(
        "masteruser replication\nmasterauth {}\n",
        passwords[1]
    ));
    out
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The `redis-auth` Secret with fresh random values for every key the manifests read: a
/// password per ACL user ([`USERS`]), `auth.conf` (what Redis reads), `admin-token`
/// (state-changing requests to the sidecars) and `peer-key` (failsafe).
pub fn generated_auth_secret() -> Value {
    let passwords = [0; 4].map(|_| random_hex(24));
    auth_secret(
        passwords.each_ref().map(String::as_str),
        &random_hex(24),
        &random_hex(32),
    )
}

/// The `redis-auth` Secret holding the given values (`passwords` in the order of [`USERS`]).
pub fn auth_secret(passwords: [&str; 4], admin_token: &str, peer_key: &str) -> Value {
    let mut data = serde_json::Map::new();
    for ((_, _, key), pw) in USERS.iter().zip(passwords) {
        data.insert(key.to_string(), json!(pw));
    }
    data.insert("auth.conf".into(), json!(auth_conf(passwords)));
    data.insert("admin-token".into(), json!(admin_token));
    data.insert("peer-key".into(), json!(peer_key));
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AUTH_SECRET},
        "type": "Opaque",
        "stringData": data,
    })
}

/// `objects` with a generated `redis-auth` Secret added when none is among them.
pub fn with_auth_secret(mut objects: Vec<Value>) -> Vec<Value> {
    let has = objects
        .iter()
        .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == AUTH_SECRET);
    if !has {
        objects.insert(0, generated_auth_secret());
    }
    objects
}

/// The Secret the `components/tls` component mounts, in cert-manager's layout.
pub const TLS_SECRET: &str = "redis-tls";

/// The names the group's certificate must carry in namespace `ns`: every pod's DNS name
/// (what the sidecars check their Redis and its peers against), the Services (what clients
/// connect to) and loopback; `extra` adds more (local's listen address).
pub fn tls_names(ns: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec![format!("*.redis-headless.{ns}.svc.cluster.local")];
    for svc in ["redis-headless", "redis", "redis-leader", "redis-sentinel"] {
        names.push(format!("{svc}.{ns}.svc.cluster.local"));
        names.push(format!("{svc}.{ns}.svc"));
        names.push(svc.to_string());
    }
    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    names.extend(extra.iter().cloned());
    names.dedup();
    names
}

/// The `redis-tls` Secret (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`, as
/// cert-manager writes it) with a certificate for `names` signed by `ca`.
pub fn tls_secret(
    ca: &kubesim::tls::Ca,
    names: &[String],
) -> Result<Value, kubesim::tls::TlsError> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (cert, key) = ca.issue(&names)?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": TLS_SECRET},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key, "ca.crt": ca.pem()},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::config::credential_weakness;

    #[test]
    fn generated_credentials_are_accepted_and_differ_each_time() {
        let a = generated_auth_secret();
        let b = generated_auth_secret();
        for key in CREDENTIAL_KEYS {
            let v = a["stringData"][key].as_str().unwrap();
            assert_eq!(credential_weakness(v), None, "{key}");
            assert_ne!(v, b["stringData"][key].as_str().unwrap(), "{key}");
        }
        let pw = |k: &str| a["stringData"][k].as_str().unwrap().to_string();
        let conf = a["stringData"]["auth.conf"].as_str().unwrap();
        assert!(conf.contains(&format!("user default reset on >{} ", pw("password"))));
        assert!(conf.contains(&format!(
            "masteruser replication\nmasterauth {}\n",
            pw("replication-password")
        )));
    }

    #[test]
    fn an_existing_secret_is_kept() {
        let mine = auth_secret(["a", "b", "c", "d"], "e", "f");
        let out = with_auth_secret(vec![mine.clone()]);
        assert_eq!(out, vec![mine]);
        assert_eq!(with_auth_secret(Vec::new()).len(), 1);
    }
}
