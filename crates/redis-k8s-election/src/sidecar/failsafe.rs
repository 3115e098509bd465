//! The failsafe protocol's messages on the wire (DESIGN 3a): signing and checking them, the
//! replay guard, and the rounds a leader runs over a [`FailsafeTransport`].
//!
//! The decisions (when to send a round, what a member answers, what a round's outcome does)
//! are the pure elector's; this module only moves them between sidecars and proves who
//! said what. Every message carries an HMAC-SHA256 over all its fields with the group's peer
//! key (a file from the Secret), so that only a sidecar holding the key can ask for a
//! promise or give one. A question also carries a random nonce and its wall-clock send
//! time: a member refuses a question it has seen (replay) or that is older than the window
//! (stale); an answer must echo the nonce of the question it answers, so an old answer
//! cannot be replayed to a later round. Wall clocks bound only this window, never safety.

use election::failsafe::{AskKind, Member, Reply, RoundOutcome};
use futures::future::BoxFuture;
use ring::hmac;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The path of the failsafe endpoint on every sidecar's HTTP API.
pub const ASK_PATH: &str = "/failsafe/v1/ask";

/// Shortest accepted peer key, in bytes: an HMAC key shorter than this is guessable.
pub const MIN_KEY_LEN: usize = 16;

/// The group's shared secret. Its `Debug` never shows it, and nothing logs it.
pub struct PeerKey(hmac::Key);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(<redacted>)")
    }
}

/// Why the peer key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key is too short.
    #[error("{path}: the key has {len} bytes, at least {MIN_KEY_LEN} are needed")]
    Short {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
    },
    /// The key is a placeholder from an example (`super::config::credential_weakness`).
    #[error("{path} {why}")]
    Weak {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

impl PeerKey {
    /// The key in `path` (surrounding whitespace trimmed, as a Secret's file often ends in a
    /// newline).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let raw = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let key = raw.trim_ascii();
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::Short {
                path: path.display().to_string(),
                len: key.len(),
            });
        }
        // A key in text, as Secrets hold it, is held to the other credentials' rule (a
        // binary key cannot be an example's placeholder).
        if let Ok(text) = std::str::from_utf8(key)
            && let Some(why) = super::config::credential_weakness(text)
        {
            return Err(KeyError::Weak {
                path: path.display().to_string(),
                why,
            });
        }
        Ok(Self::from_bytes(key))
    }

    /// A key from its bytes (tests).
    pub fn from_bytes(key: &[u8]) -> Self {
        PeerKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    fn sign(&self, text: &str) -> String {
        hex(hmac::sign(&self.0, text.as_bytes()).as_ref())
    }

    fn verify(&self, text: &str, mac: &str) -> bool {
        unhex(mac).is_some_and(|m| hmac::verify(&self.0, text.as_bytes(), &m).is_ok())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A failsafe question from one sidecar to another.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AskMessage {
    /// The group: `namespace/lease`.
    pub group: String,
    /// The asking pod.
    pub from: String,
    /// The pod asked.
    pub to: String,
    /// The leader the question names (empty for a probe).
    pub holder: String,
    /// Its epoch.
    pub epoch: u32,
    /// `round`, `release` or `probe`.
    pub kind: String,
    /// 16 random bytes, hex: the answer must echo it; a member accepts it once.
    pub nonce: String,
    /// When it was sent, wall clock (for the staleness window only).
    pub sent_unix_ms: u64,
    /// HMAC-SHA256 of the fields above, hex.
    pub mac: String,
}

impl AskMessage {
    fn text(&self) -> String {
        format!(
            "ask\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.group,
            self.from,
            self.to,
            self.holder,
            self.epoch,
            self.kind,
            self.nonce,
            self.sent_unix_ms
        )
    }

    /// A signed question with a fresh nonce.
    pub fn signed(
        key: &PeerKey,
        group: &str,
        from: &str,
        to: &str,
        holder: &str,
        epoch: u32,
        kind: AskKind,
    ) -> Self {
        let nonce: [u8; 16] = rand::random();
        let mut m = AskMessage {
            group: group.into(),
            from: from.into(),
            to: to.into(),
            holder: holder.into(),
            epoch,
            kind: kind.as_str().into(),
            nonce: hex(&nonce),
            sent_unix_ms: unix_ms(),
            mac: String::new(),
        };
        m.mac = key.sign(&m.text());
        m
    }
}

/// A member's signed answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplyMessage {
    /// The group.
    pub group: String,
    /// The answering pod.
    pub from: String,
    /// The pod that asked.
    pub to: String,
    /// The question's nonce.
    pub nonce: String,
    /// See [`Reply::confirmed`].
    pub confirmed: bool,
    /// See [`Reply::promise`].
    pub promise: bool,
    /// See [`Reply::leads`].
    pub leads: bool,
    /// Why it refused.
    pub reason: String,
    /// HMAC-SHA256 of the fields above, hex.
    pub mac: String,
}

impl ReplyMessage {
    fn text(&self) -> String {
        format!(
            "reply\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.group,
            self.from,
            self.to,
            self.nonce,
            self.confirmed,
            self.promise,
            self.leads,
            self.reason
        )
    }

    /// The signed answer to `ask` from `me`.
    pub fn signed(key: &PeerKey, ask: &AskMessage, me: &str, reply: &Reply) -> Self {
        let mut m = ReplyMessage {
            group: ask.group.clone(),
            from: me.into(),
            to: ask.from.clone(),
            nonce: ask.nonce.clone(),
            confirmed: reply.confirmed,
            promise: reply.promise,
            leads: reply.leads,
            reason: reply.reason.clone(),
            mac: String::new(),
        };
        m.mac = key.sign(&m.text());
        m
    }

    /// The answer, if this message is `member`'s valid answer to `ask`.
    pub fn check(&self, key: &PeerKey, ask: &AskMessage, member: &str) -> Option<Reply> {
        let genuine = self.group == ask.group
            && self.from == member
            && self.to == ask.from
            && self.nonce == ask.nonce
            && key.verify(&self.text(), &self.mac);
        genuine.then(|| Reply {
            confirmed: self.confirmed,
            reason: self.reason.clone(),
            promise: self.promise,
            leads: self.leads,
        })
    }
}

/// Why a question was refused without reaching the elector. None of these changes anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No valid signature with the group's key.
    #[error("the message is not signed with the group's peer key")]
    BadSignature,
    /// For another group or another pod.
    #[error("the message is for another group or another pod")]
    Misaddressed,
    /// Sent too long ago (or in the future) for the window.
    #[error("the message is stale")]
    Stale,
    /// Seen before.
    #[error("the message was seen before (a replay)")]
    Replayed,
    /// An unknown kind.
    #[error("the message asks for something unknown")]
    Unknown,
}

impl Rejection {
    /// A short code for metrics and HTTP answers.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::BadSignature => "bad_signature",
            Rejection::Misaddressed => "misaddressed",
            Rejection::Stale => "stale",
            Rejection::Replayed => "replayed",
            Rejection::Unknown => "unknown_kind",
        }
    }
}

/// Remembers the nonces of accepted questions for the staleness window, so that each is
/// accepted once. Bounded: past `capacity` live entries, new questions are refused as
/// replays until old ones age out (a flood of validly signed questions needs the key).
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    seen: Mutex<HashMap<String, u64>>,
}

impl ReplayGuard {
    /// A guard accepting questions sent within `window` of the local wall clock.
    pub fn new(window: Duration) -> Self {
        Self {
            window_ms: window.as_millis() as u64,
            capacity: 100_000,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `ask` addressed to `me` in `group` at wall-clock `now_ms`: signature first (so
    /// unsigned noise never fills the nonce table), then address, freshness and replay.
    pub fn check(
        &self,
        key: &PeerKey,
        group: &str,
        me: &str,
        ask: &AskMessage,
        now_ms: u64,
    ) -> Result<AskKind, Rejection> {
        if !key.verify(&ask.text(), &ask.mac) {
            return Err(Rejection::BadSignature);
        }
        if ask.group != group || ask.to != me {
            return Err(Rejection::Misaddressed);
        }
        let kind = AskKind::parse(&ask.kind).ok_or(Rejection::Unknown)?;
        if ask.sent_unix_ms.abs_diff(now_ms) > self.window_ms {
            return Err(Rejection::Stale);
        }
        let mut seen = self.seen.lock().expect("replay guard lock");
        seen.retain(|_, expiry| *expiry > now_ms);
        if seen.contains_key(&ask.nonce) || seen.len() >= self.capacity {
            return Err(Rejection::Replayed);
        }
        seen.insert(ask.nonce.clone(), ask.sent_unix_ms + 2 * self.window_ms);
        Ok(kind)
    }
}

/// The path failsafe messages take to a member's sidecar.
pub trait FailsafeTransport: Clone + Send + Sync + 'static {
    /// Sends `ask` to `member`; its answer, or `None` when none came (unreachable, an error
    /// status, a body that does not parse). The caller bounds the wait.
    fn ask(&self, member: Member, ask: AskMessage) -> BoxFuture<'static, Option<ReplyMessage>>;
}

/// Failsafe messages over HTTP to the members' sidecars.
#[derive(Clone)]
pub struct HttpPeers {
    client: reqwest::Client,
    tls: Option<crate::api_tls::ApiTls>,
}

impl HttpPeers {
    /// A client whose requests give up after `timeout`; over HTTPS when `tls` is given
    /// (`--http-tls`: the members' APIs serve HTTPS only).
    pub fn new(
        timeout: Duration,
        tls: Option<crate::api_tls::ApiTls>,
    ) -> Result<Self, crate::api_tls::ApiTlsError> {
        let client = crate::api_tls::builder(tls.as_ref())?
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| crate::api_tls::ApiTlsError::Verifier(e.to_string()))?;
        Ok(Self { client, tls })
    }
}

impl FailsafeTransport for HttpPeers {
    fn ask(&self, member: Member, ask: AskMessage) -> BoxFuture<'static, Option<ReplyMessage>> {
        let client = self.client.clone();
        let url = crate::api_tls::url(self.tls.as_ref(), &member.http, ASK_PATH);
        Box::pin(async move {
            let resp = client.post(url).json(&ask).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            // An answer is a few hundred bytes; refuse to buffer more than this.
            let body = resp.bytes().await.ok()?;
            if body.len() > 16 * 1024 {
                return None;
            }
            serde_json::from_slice(&body).ok()
        })
    }
}

/// A checked question for the control loop, with where its answer goes.
pub struct AskRequest {
    /// The leader it names.
    pub holder: String,
    /// Its epoch.
    pub epoch: u32,
    /// What it asks.
    pub kind: AskKind,
    /// The elector's answer.
    pub reply: tokio::sync::oneshot::Sender<Reply>,
}

/// A round's outcome, from the task that ran it to the control loop: the round's number,
/// when it was sent (local monotonic time), and what the members said.
pub type RoundDone = (u64, election::Mono, RoundOutcome);

/// What a round needs beyond the transport.
#[derive(Clone)]
pub struct RoundContext {
    /// The key.
    pub key: Arc<PeerKey>,
    /// `namespace/lease`.
    pub group: String,
    /// This pod.
    pub me: String,
    /// How long to wait for the answers.
    pub wait: Duration,
}

/// Asks every member at once and sorts the answers: every member confirmed; one refused
/// (a valid refusal, which ends leadership); or some said nothing valid.
pub async fn run_round<T: FailsafeTransport>(
    transport: T,
    ctx: RoundContext,
    members: Vec<Member>,
    holder: String,
    epoch: u32,
    kind: AskKind,
) -> RoundOutcome {
    let asks = members.into_iter().map(|m| {
        let ask = AskMessage::signed(&ctx.key, &ctx.group, &ctx.me, &m.name, &holder, epoch, kind);
        let t = transport.clone();
        let key = ctx.key.clone();
        let wait = ctx.wait;
        async move {
            let name = m.name.clone();
            let answer = tokio::time::timeout(wait, t.ask(m, ask.clone()))
                .await
                .ok()
                .flatten()
                .and_then(|r| r.check(&key, &ask, &name));
            (name, answer)
        }
    });
    let answers = futures::future::join_all(asks).await;
    election::failsafe::round_outcome(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PeerKey {
        PeerKey::from_bytes(b"0123456789abcdef0123")
    }

    fn ask() -> AskMessage {
        AskMessage::signed(
            &key(),
            "ns/redis",
            "redis-0",
            "redis-1",
            "redis-0",
            4,
            AskKind::Round,
        )
    }

    #[test]
    fn a_signed_question_passes_once() {
        let g = ReplayGuard::new(Duration::from_secs(10));
        let a = ask();
        let now = a.sent_unix_ms;
        assert_eq!(
            g.check(&key(), "ns/redis", "redis-1", &a, now),
            Ok(AskKind::Round)
        );
        assert_eq!(
            g.check(&key(), "ns/redis", "redis-1", &a, now + 1),
            Err(Rejection::Replayed)
        );
    }

    #[test]
    fn forged_misaddressed_stale_and_unknown_questions_are_refused() {
        let g = ReplayGuard::new(Duration::from_secs(10));
        let a = ask();
        let now = a.sent_unix_ms;
        let other = PeerKey::from_bytes(b"another key, same length");
        assert_eq!(
            g.check(&other, "ns/redis", "redis-1", &a, now),
            Err(Rejection::BadSignature)
        );
        // Any field changed after signing breaks the signature.
        for tamper in [
            |m: &mut AskMessage| m.epoch += 1,
            |m: &mut AskMessage| m.holder = "redis-9".into(),
            |m: &mut AskMessage| m.kind = "release".into(),
            |m: &mut AskMessage| m.sent_unix_ms += 1,
            |m: &mut AskMessage| m.mac = "zz".into(),
            |m: &mut AskMessage| m.mac.clear(),
        ] {
            let mut m = a.clone();
            tamper(&mut m);
            assert_eq!(
                g.check(&key(), "ns/redis", "redis-1", &m, now),
                Err(Rejection::BadSignature),
                "{m:?}"
            );
        }
        assert_eq!(
            g.check(&key(), "ns/redis", "redis-2", &a, now),
            Err(Rejection::Misaddressed)
        );
        assert_eq!(
            g.check(&key(), "other/redis", "redis-1", &a, now),
            Err(Rejection::Misaddressed)
        );
        assert_eq!(
            g.check(&key(), "ns/redis", "redis-1", &a, now + 10_001),
            Err(Rejection::Stale)
        );
        let mut u = AskMessage::signed(&key(), "ns/redis", "a", "redis-1", "a", 1, AskKind::Probe);
        u.kind = "obey".into();
        u.mac = key().sign(&u.text());
        assert_eq!(
            g.check(&key(), "ns/redis", "redis-1", &u, now),
            Err(Rejection::Unknown)
        );
        // None of these used up the genuine question's nonce.
        assert!(g.check(&key(), "ns/redis", "redis-1", &a, now).is_ok());
    }

    #[test]
    fn an_answer_counts_only_for_its_question_and_member() {
        let a = ask();
        let yes = Reply {
            confirmed: true,
            promise: true,
            ..Reply::default()
        };
        let r = ReplyMessage::signed(&key(), &a, "redis-1", &yes);
        assert_eq!(r.check(&key(), &a, "redis-1"), Some(yes.clone()));
        assert_eq!(r.check(&key(), &a, "redis-2"), None, "another member");
        assert_eq!(
            r.check(&key(), &ask(), "redis-1"),
            None,
            "replayed to a later round"
        );
        let mut forged = r.clone();
        forged.confirmed = false;
        assert_eq!(forged.check(&key(), &a, "redis-1"), None);
        let other = PeerKey::from_bytes(b"another key, same length");
        assert_eq!(
            ReplyMessage::signed(&other, &a, "redis-1", &yes).check(&key(), &a, "redis-1"),
            None
        );
    }

    #[test]
    fn the_key_is_never_shown() {
        assert_eq!(format!("{:?}", key()), "PeerKey(<redacted>)");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "short\n").unwrap();
        let e = PeerKey::from_file(&p).unwrap_err().to_string();
        assert!(!e.contains("short"), "{e}");
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        assert!(PeerKey::from_file(&p).is_ok());
    }
}
