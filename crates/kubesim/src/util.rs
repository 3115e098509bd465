//! Small helpers: timestamps in the API's layouts, UIDs, generateName suffixes.

use k8s_openapi::jiff::Timestamp;
use rand::Rng;

/// The wall clock as a jiff timestamp (k8s-openapi's jiff is built without `Timestamp::now`).
fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `metav1.Time`: RFC 3339, seconds precision, UTC `Z`.
pub fn now_time() -> String {
    now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    now().as_second()
}

/// A `metav1.Time` `secs` seconds from now.
pub fn time_in(secs: i64) -> String {
    Timestamp::from_second(now_unix().saturating_add(secs))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| now_time())
}

/// A fresh RFC 4122 UID.
pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The alphabet of `storage/names/generate.go` (no vowels, no confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` expansion: the prefix cut to 58 characters plus five random characters.
pub fn generate_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let cut: String = prefix.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| ALPHANUMS[rng.random_range(0..ALPHANUMS.len())] as char)
        .collect();
    format!("{cut}{suffix}")
}

/// A random opaque token for bearer authentication.
pub fn random_token(prefix: &str) -> String {
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHANUMS[rng.random_range(0..ALPHANUMS.len())] as char)
        .collect();
    format!("{prefix}{body}")
}
