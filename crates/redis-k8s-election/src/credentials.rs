//! The group's credentials, made at random: the shipped manifests hold none (issue 17: the
//! Secret they once shipped worked as it was, so a group deployed unchanged was open to
//! anyone who had read the example). `local` and the tests make them with this; users with
//! `deploy/kubernetes/make-secret.sh`, which writes the same keys.

use serde_json::{Value, json};

/// The Secret's name in the shipped manifests.
pub const AUTH_SECRET: &str = "redis-auth";

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The `redis-auth` Secret with fresh random values for every key the manifests read:
/// `password` (clients, the sidecar), `auth.conf` (Redis' `requirepass` and `masterauth`,
/// the same password), `admin-token` (state-changing requests) and `peer-key` (failsafe).
pub fn generated_auth_secret() -> Value {
    auth_secret(&random_hex(24), &random_hex(24), &random_hex(32))
}

/// The `redis-auth` Secret holding the given values.
pub fn auth_secret(password: &str, admin_token: &str, peer_key: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AUTH_SECRET},
        "type": "Opaque",
        "stringData": {
            "password": password,
            "auth.conf": format!("requirepass {password}\nmasterauth {password}\n"),
            "admin-token": admin_token,
            "peer-key": peer_key,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::config::credential_weakness;

    #[test]
    fn generated_credentials_are_accepted_and_differ_each_time() {
        let a = generated_auth_secret();
        let b = generated_auth_secret();
        for key in ["password", "admin-token", "peer-key"] {
            let v = a["stringData"][key].as_str().unwrap();
            assert_eq!(credential_weakness(v), None, "{key}");
            assert_ne!(v, b["stringData"][key].as_str().unwrap(), "{key}");
        }
        let pw = a["stringData"]["password"].as_str().unwrap();
        assert_eq!(
            a["stringData"]["auth.conf"],
            format!("requirepass {pw}\nmasterauth {pw}\n")
        );
    }

    #[test]
    fn an_existing_secret_is_kept() {
        let mine = auth_secret("a", "b", "c");
        let out = with_auth_secret(vec![mine.clone()]);
        assert_eq!(out, vec![mine]);
        assert_eq!(with_auth_secret(Vec::new()).len(), 1);
    }
}
