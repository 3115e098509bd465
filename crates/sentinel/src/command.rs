//! The Sentinel commands, answered from a [`GroupView`]: pure (no I/O), so every reply is
//! tested without a socket. Field names, flags and error texts are Sentinel 7.0's
//! (`src/sentinel.c`, `src/server.c`), since clients parse them.

use crate::resp::Reply;
use crate::view::{Addr, GroupView, ReplicaView};
use std::collections::BTreeSet;

/// The Redis version the endpoint reports (`INFO`, `HELLO`): the Sentinel release whose
/// protocol it follows.
pub const REDIS_VERSION: &str = "7.0.15";

/// Where the admin token comes from: asked on each `AUTH admin`, so that a token rotated in
/// its Secret takes effect without a restart (as the sidecar's `POST /switchover` reads its
/// file on each request). `None` from it refuses every `AUTH admin`.
#[derive(Clone)]
pub struct TokenSource(std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl TokenSource {
    /// A token read by `read` each time it is needed.
    pub fn new(read: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        TokenSource(std::sync::Arc::new(read))
    }

    /// A token that never changes.
    pub fn fixed(token: impl Into<String>) -> Self {
        let token = token.into();
        Self::new(move || Some(token.clone()))
    }

    /// The token now.
    pub fn current(&self) -> Option<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str("TokenSource(..)")
    }
}

/// How the endpoint is set up.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The master set's name (`mymaster`).
    pub master_name: String,
    /// Sentinel's `requirepass`: required of every client when set.
    pub password: Option<String>,
    /// The group's admin token: `AUTH admin <token>` allows `SENTINEL FAILOVER`.
    pub admin_token: Option<TokenSource>,
    /// This endpoint's ID (40 hex digits).
    pub my_id: String,
    /// The port it listens on (`INFO`'s `tcp_port`).
    pub port: u16,
    /// Reported as `down-after-milliseconds` (the sidecar's lease duration).
    pub down_after_ms: u64,
    /// Most connections served at once.
    pub max_clients: usize,
}

/// One connection's state.
#[derive(Debug, Clone)]
pub struct Session {
    /// `CLIENT ID`.
    pub id: u64,
    /// 2 or 3 (`HELLO`).
    pub proto: u8,
    /// Authenticated (with the Sentinel password, or as admin).
    pub authed: bool,
    /// Authenticated as `admin` (may run `SENTINEL FAILOVER`).
    pub admin: bool,
    /// `CLIENT SETNAME`.
    pub name: Option<String>,
    /// Subscribed channels.
    pub channels: BTreeSet<String>,
    /// Subscribed patterns.
    pub patterns: BTreeSet<String>,
}

impl Session {
    /// A new connection: RESP2, not authenticated.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            proto: 2,
            authed: false,
            admin: false,
            name: None,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
        }
    }

    /// In pub/sub mode (at least one subscription).
    pub fn subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }

    fn subscriptions(&self) -> i64 {
        (self.channels.len() + self.patterns.len()) as i64
    }
}

/// What the server does after sending the replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Close the connection (`QUIT`).
    Close,
    /// Ask for a planned failover, then reply `+OK` or the refusal.
    Failover,
}

/// The replies to one command and what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Replies, in order (several for a multi-channel `SUBSCRIBE`).
    pub replies: Vec<Reply>,
    /// What follows.
    pub next: Next,
}

impl Outcome {
    fn one(r: Reply) -> Self {
        Self {
            replies: vec![r],
            next: Next::Continue,
        }
    }
}

/// Process facts for `INFO`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// Connections now.
    pub connected_clients: usize,
    /// Seconds since the endpoint started.
    pub uptime_secs: u64,
    /// Commands processed.
    pub commands: u64,
}

fn lower(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_lowercase()
}

fn text(a: &[u8]) -> String {
    String::from_utf8_lossy(a).into_owned()
}

fn arity(name: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn no_such_master() -> Reply {
    Reply::err("ERR No such master with that name")
}

/// Sentinel's reply to the commands that change its configuration: here the group's
/// manifests configure it.
fn configured_elsewhere(sub: &str) -> Reply {
    Reply::err(format!(
        "ERR SENTINEL {} is not supported: this endpoint is redis-k8s-election's, configured by the group's manifests (master name, addresses, password), not at run time",
        sub.to_ascii_uppercase()
    ))
}

fn unknown_command(args: &[Vec<u8>]) -> Reply {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        text(&args[0]).chars().take(128).collect::<String>()
    );
    for a in args.iter().skip(1) {
        if msg.len() >= 128 + 60 {
            break;
        }
        msg.push_str(&format!(
            "'{}' ",
            text(a).chars().take(128).collect::<String>()
        ));
    }
    Reply::err(msg)
}

const SUBSCRIBED_OK: [&str; 8] = [
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
    "ssubscribe",
];

/// Answers one command.
pub fn handle(
    s: &mut Session,
    args: &[Vec<u8>],
    view: &GroupView,
    cfg: &EndpointConfig,
    facts: Facts,
) -> Outcome {
    let Some(first) = args.first() else {
        return Outcome {
            replies: Vec::new(),
            next: Next::Continue,
        };
    };
    let cmd = lower(first);
    if cfg.password.is_some() && !s.authed && !matches!(cmd.as_str(), "auth" | "hello" | "quit") {
        return Outcome::one(Reply::err("NOAUTH Authentication required."));
    }
    if s.subscribed() && s.proto == 2 && !SUBSCRIBED_OK.contains(&cmd.as_str()) {
        return Outcome::one(Reply::err(format!(
            "ERR Can't execute '{cmd}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        )));
    }
    let rest = &args[1..];
    match cmd.as_str() {
        "ping" => Outcome::one(ping(s, rest)),
        "quit" => Outcome {
            replies: vec![Reply::ok()],
            next: Next::Close,
        },
        "reset" => {
            s.channels.clear();
            s.patterns.clear();
            s.proto = 2;
            s.name = None;
            s.authed = false;
            s.admin = false;
            Outcome::one(Reply::Simple("RESET".into()))
        }
        "auth" => Outcome::one(auth(s, rest, cfg)),
        "hello" => Outcome::one(hello(s, rest, cfg)),
        "client" => Outcome::one(client(s, rest)),
        "info" => Outcome::one(info(rest, view, cfg, facts)),
        "role" => Outcome::one(Reply::Array(vec![
            Reply::bulk("sentinel"),
            Reply::Array(vec![Reply::bulk(cfg.master_name.clone())]),
        ])),
        "command" => Outcome::one(command(rest)),
        "sentinel" => sentinel(s, rest, view, cfg),
        "subscribe" | "psubscribe" => subscribe(s, &cmd, rest),
        "unsubscribe" | "punsubscribe" => unsubscribe(s, &cmd, rest),
        _ => Outcome::one(unknown_command(args)),
    }
}

fn ping(s: &Session, rest: &[Vec<u8>]) -> Reply {
    if rest.len() > 1 {
        return arity("ping");
    }
    if s.subscribed() && s.proto == 2 {
        let msg = rest.first().map(|m| text(m)).unwrap_or_default();
        return Reply::Array(vec![Reply::bulk("pong"), Reply::bulk(msg)]);
    }
    match rest.first() {
        Some(m) => Reply::bulk(text(m)),
        None => Reply::Simple("PONG".into()),
    }
}

/// Constant-time comparison: a wrong password takes as long as a right one.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Checks `user`/`pass`: `Ok(admin)` or the error reply.
fn check_credentials(user: &str, pass: &str, cfg: &EndpointConfig) -> Result<bool, Reply> {
    let wrong = || Reply::err("WRONGPASS invalid username-password pair or user is disabled.");
    match user {
        "admin" => match cfg.admin_token.as_ref().and_then(TokenSource::current) {
            Some(t) if same(&t, pass) => Ok(true),
            _ => Err(wrong()),
        },
        "default" => match &cfg.password {
            Some(p) if same(p, pass) => Ok(false),
            Some(_) => Err(wrong()),
            None => Err(Reply::err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            )),
        },
        _ => Err(wrong()),
    }
}

fn auth(s: &mut Session, rest: &[Vec<u8>], cfg: &EndpointConfig) -> Reply {
    let (user, pass) = match rest {
        [p] => ("default".to_string(), text(p)),
        [u, p] => (text(u), text(p)),
        _ => return arity("auth"),
    };
    match check_credentials(&user, &pass, cfg) {
        Ok(admin) => {
            s.authed = true;
            s.admin = admin;
            Reply::ok()
        }
        Err(e) => e,
    }
}

fn hello(s: &mut Session, rest: &[Vec<u8>], cfg: &EndpointConfig) -> Reply {
    let mut proto = s.proto;
    let mut i = 0;
    if let Some(v) = rest.first() {
        match text(v).parse::<i64>() {
            Ok(2) => proto = 2,
            Ok(3) => proto = 3,
            Ok(_) => return Reply::err("NOPROTO unsupported protocol version"),
            Err(_) => {
                return Reply::err("ERR Protocol version is not an integer or out of range");
            }
        }
        i = 1;
    }
    let mut name = None;
    let mut creds = None;
    while i < rest.len() {
        let opt = lower(&rest[i]);
        match opt.as_str() {
            "auth" if i + 2 < rest.len() => {
                creds = Some((text(&rest[i + 1]), text(&rest[i + 2])));
                i += 3;
            }
            "setname" if i + 1 < rest.len() => {
                name = Some(text(&rest[i + 1]));
                i += 2;
            }
            _ => {
                return Reply::err(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    text(&rest[i])
                ));
            }
        }
    }
    if let Some((user, pass)) = creds {
        match check_credentials(&user, &pass, cfg) {
            Ok(admin) => {
                s.authed = true;
                s.admin = admin;
            }
            Err(e) => return e,
        }
    }
    if cfg.password.is_some() && !s.authed {
        return Reply::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(n) = name {
        if let Err(e) = valid_name(&n) {
            return e;
        }
        s.name = (!n.is_empty()).then_some(n);
    }
    s.proto = proto;
    Reply::map([
        ("server", Reply::bulk("redis")),
        ("version", Reply::bulk(REDIS_VERSION)),
        ("proto", Reply::Int(i64::from(proto))),
        ("id", Reply::Int(s.id as i64)),
        ("mode", Reply::bulk("sentinel")),
        ("modules", Reply::Array(Vec::new())),
    ])
}

/// A name Redis accepts for a client (and this endpoint for its master set): printable
/// ASCII without spaces.
pub fn is_valid_name(n: &str) -> bool {
    n.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

fn valid_name(n: &str) -> Result<(), Reply> {
    if !is_valid_name(n) {
        return Err(Reply::err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn client(s: &mut Session, rest: &[Vec<u8>]) -> Reply {
    let Some(sub) = rest.first().map(|a| lower(a)) else {
        return arity("client");
    };
    match (sub.as_str(), rest.len()) {
        ("setname", 2) => {
            let n = text(&rest[1]);
            if let Err(e) = valid_name(&n) {
                return e;
            }
            s.name = (!n.is_empty()).then_some(n);
            Reply::ok()
        }
        ("getname", 1) => s.name.clone().map_or(Reply::NullBulk, Reply::Bulk),
        ("id", 1) => Reply::Int(s.id as i64),
        ("setinfo", 3) => match lower(&rest[1]).as_str() {
            "lib-name" | "lib-ver" => Reply::ok(),
            other => Reply::err(format!("ERR Unrecognized option '{other}'")),
        },
        ("setname" | "getname" | "id" | "setinfo", _) => arity(&format!("client|{sub}")),
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            text(&rest[0])
        )),
    }
}

fn info(rest: &[Vec<u8>], view: &GroupView, cfg: &EndpointConfig, facts: Facts) -> Reply {
    let wanted: Vec<String> = rest.iter().map(|a| lower(a)).collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let mut out = String::new();
    if want("server") {
        out.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:sentinel\r\nos:Linux\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:redis-k8s-election\r\n\r\n",
            std::process::id(),
            cfg.my_id,
            cfg.port,
            facts.uptime_secs,
            facts.uptime_secs / 86_400,
        ));
    }
    if want("clients") {
        out.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            facts.connected_clients, cfg.max_clients
        ));
    }
    if want("stats") {
        out.push_str(&format!(
            "# Stats\r\ntotal_commands_processed:{}\r\n\r\n",
            facts.commands
        ));
    }
    if want("sentinel") {
        let status = if view.master_down { "odown" } else { "ok" };
        let address = view
            .master
            .as_ref()
            .map(Addr::to_string)
            .unwrap_or_default();
        out.push_str(&format!(
            "# Sentinel\r\nsentinel_masters:1\r\nsentinel_tilt:0\r\nsentinel_tilt_since_seconds:-1\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nsentinel_simulate_failure_flags:0\r\nmaster0:name={},status={status},address={address},slaves={},sentinels={}\r\n",
            cfg.master_name,
            view.replicas.len(),
            view.sentinels.len() + 1
        ));
    }
    Reply::Verbatim(out.trim_end_matches("\r\n").to_string() + "\r\n")
}

/// The commands this endpoint knows, as `COMMAND` lists them (name, arity, flags, first
/// key, last key, step).
const COMMANDS: [(&str, i64, &str); 13] = [
    ("auth", -2, "noscript"),
    ("client", -2, "noscript"),
    ("command", -1, "loading"),
    ("hello", -1, "noscript"),
    ("info", -1, "loading"),
    ("ping", -1, "fast"),
    ("psubscribe", -2, "pubsub"),
    ("punsubscribe", -1, "pubsub"),
    ("quit", -1, "fast"),
    ("role", 1, "fast"),
    ("sentinel", -2, "admin"),
    ("subscribe", -2, "pubsub"),
    ("unsubscribe", -1, "pubsub"),
];

fn command(rest: &[Vec<u8>]) -> Reply {
    let entry = |(name, arity, flag): (&str, i64, &str)| {
        Reply::Array(vec![
            Reply::bulk(name),
            Reply::Int(arity),
            Reply::Array(vec![Reply::Simple(flag.into())]),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Int(0),
        ])
    };
    match rest.first().map(|a| lower(a)).as_deref() {
        None => Reply::Array(COMMANDS.iter().copied().map(entry).collect()),
        Some("count") => Reply::Int(COMMANDS.len() as i64),
        Some("docs") => Reply::Map(Vec::new()),
        Some("info") => Reply::Array(
            rest[1..]
                .iter()
                .map(|n| {
                    COMMANDS
                        .iter()
                        .copied()
                        .find(|c| c.0 == lower(n))
                        .map_or(Reply::NullArray, entry)
                })
                .collect(),
        ),
        Some(_) => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            text(&rest[0])
        )),
    }
}

/// The fields every instance entry starts with, as Sentinel's
/// `addReplySentinelRedisInstance` writes them: who it is, its flags, and the link's timers
/// (0: nothing pings here).
fn instance_fields(
    name: String,
    host: String,
    port: u16,
    runid: String,
    flags: String,
) -> Vec<(&'static str, String)> {
    vec![
        ("name", name),
        ("ip", host),
        ("port", port.to_string()),
        ("runid", runid),
        ("flags", flags),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", "0".into()),
        ("last-ping-reply", "0".into()),
    ]
}

fn master_entry(view: &GroupView, cfg: &EndpointConfig) -> Reply {
    let (ip, port) = view
        .master
        .as_ref()
        .map_or((String::new(), 0), |a| (a.host.clone(), a.port));
    let flags = if view.master_down {
        "master,s_down,o_down"
    } else {
        "master"
    };
    let members = view.sentinels.len() + 1;
    let mut fields = instance_fields(
        cfg.master_name.clone(),
        ip,
        port,
        view.master_run_id.clone(),
        flags.into(),
    );
    if view.master_down {
        fields.push(("s-down-time", "0".into()));
        fields.push(("o-down-time", "0".into()));
    }
    fields.extend([
        ("down-after-milliseconds", cfg.down_after_ms.to_string()),
        ("info-refresh", "0".into()),
        ("role-reported", "master".into()),
        ("role-reported-time", "0".into()),
        ("config-epoch", view.epoch.to_string()),
        ("num-slaves", view.replicas.len().to_string()),
        ("num-other-sentinels", view.sentinels.len().to_string()),
        ("quorum", (members / 2 + 1).to_string()),
        ("failover-timeout", "180000".into()),
        ("parallel-syncs", "1".into()),
    ]);
    Reply::string_map(fields)
}

fn replica_entry(r: &ReplicaView, view: &GroupView, cfg: &EndpointConfig) -> Reply {
    let mut flags = vec!["slave"];
    if !r.up {
        flags.extend(["s_down", "disconnected"]);
    }
    let (mhost, mport) = view
        .master
        .as_ref()
        .map_or((String::from("?"), 0), |a| (a.host.clone(), a.port));
    let mut fields = instance_fields(
        r.addr.to_string(),
        r.addr.host.clone(),
        r.addr.port,
        r.run_id.clone(),
        flags.join(","),
    );
    fields.extend([
        ("down-after-milliseconds", cfg.down_after_ms.to_string()),
        ("info-refresh", "0".into()),
        ("role-reported", "slave".into()),
        ("role-reported-time", "0".into()),
        (
            "master-link-down-time",
            if r.link_up { "0" } else { "-1000" }.into(),
        ),
        (
            "master-link-status",
            if r.link_up { "ok" } else { "err" }.into(),
        ),
        ("master-host", mhost),
        ("master-port", mport.to_string()),
        ("slave-priority", r.priority.to_string()),
        ("slave-repl-offset", r.offset.to_string()),
        ("replica-announced", "1".into()),
    ]);
    Reply::string_map(fields)
}

fn sentinel_entries(view: &GroupView, cfg: &EndpointConfig) -> Reply {
    Reply::Array(
        view.sentinels
            .iter()
            .map(|p| {
                let mut fields = instance_fields(
                    p.id.clone(),
                    p.addr.host.clone(),
                    p.addr.port,
                    p.id.clone(),
                    "sentinel".into(),
                );
                fields.extend([
                    ("down-after-milliseconds", cfg.down_after_ms.to_string()),
                    ("last-hello-message", "0".into()),
                    ("voted-leader", "?".into()),
                    ("voted-leader-epoch", "0".into()),
                ]);
                Reply::string_map(fields)
            })
            .collect(),
    )
}

const HELP: [&str; 12] = [
    "SENTINEL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CKQUORUM <master-name>",
    "FAILOVER <master-name>",
    "    Hand the group over to its best caught-up replica (needs AUTH admin <token>).",
    "GET-MASTER-ADDR-BY-NAME <master-name>",
    "IS-MASTER-DOWN-BY-ADDR <ip> <port> <current-epoch> <runid>",
    "MASTER <master-name>",
    "MASTERS",
    "MYID",
    "REPLICAS <master-name>",
    "SENTINELS <master-name>",
    "SLAVES <master-name>",
];

fn sentinel(s: &mut Session, rest: &[Vec<u8>], view: &GroupView, cfg: &EndpointConfig) -> Outcome {
    let Some(sub) = rest.first().map(|a| lower(a)) else {
        return Outcome::one(arity("sentinel"));
    };
    let args = &rest[1..];
    let named = |n: usize| -> Result<(), Reply> {
        if args.len() != n {
            return Err(arity(&format!("sentinel|{sub}")));
        }
        if text(&args[0]) != cfg.master_name {
            return Err(no_such_master());
        }
        Ok(())
    };
    let reply = match sub.as_str() {
        "get-master-addr-by-name" => match named(1) {
            Err(Reply::Error(e)) if e.starts_with("ERR No such") => Reply::NullArray,
            Err(e) => e,
            Ok(()) => match &view.master {
                Some(a) => Reply::Array(vec![
                    Reply::bulk(a.host.clone()),
                    Reply::bulk(a.port.to_string()),
                ]),
                None => Reply::NullArray,
            },
        },
        "masters" if args.is_empty() => Reply::Array(vec![master_entry(view, cfg)]),
        "master" => named(1).map_or_else(|e| e, |()| master_entry(view, cfg)),
        "replicas" | "slaves" => named(1).map_or_else(
            |e| e,
            |()| {
                Reply::Array(
                    view.replicas
                        .iter()
                        .map(|r| replica_entry(r, view, cfg))
                        .collect(),
                )
            },
        ),
        "sentinels" => named(1).map_or_else(|e| e, |()| sentinel_entries(view, cfg)),
        "myid" if args.is_empty() => Reply::bulk(cfg.my_id.clone()),
        "ckquorum" => named(1).map_or_else(
            |e| e,
            |()| {
                Reply::Simple(format!(
                    "OK {} usable Sentinels. Quorum and failover authorization can be reached",
                    view.sentinels.len() + 1
                ))
            },
        ),
        "is-master-down-by-addr" if args.len() == 4 => {
            let port = text(&args[1]).parse::<u16>();
            let epoch = text(&args[2]).parse::<u64>();
            match (port, epoch) {
                (Ok(port), Ok(_)) => {
                    let asked = Addr::new(text(&args[0]), port);
                    // Down when it is not the group's master (any more), or the master has
                    // no leader behind it. This endpoint never votes: leaders come from the
                    // Lease.
                    let down = view.master.as_ref() != Some(&asked) || view.master_down;
                    Reply::Array(vec![
                        Reply::Int(i64::from(down)),
                        Reply::bulk("*"),
                        Reply::Int(0),
                    ])
                }
                _ => Reply::err("ERR value is not an integer or out of range"),
            }
        }
        "failover" => match named(1) {
            Err(e) => e,
            Ok(()) if !s.admin => Reply::err(
                "NOPERM this user has no permissions to run the 'sentinel|failover' command",
            ),
            Ok(()) => {
                return Outcome {
                    replies: Vec::new(),
                    next: Next::Failover,
                };
            }
        },
        "help" if args.is_empty() => {
            Reply::Array(HELP.iter().map(|l| Reply::Simple((*l).into())).collect())
        }
        "monitor" | "remove" | "set" | "reset" | "config" | "flushconfig" | "simulate-failure"
        | "debug" | "info-cache" | "pending-scripts" => configured_elsewhere(&sub),
        "masters" | "myid" | "is-master-down-by-addr" | "help" => arity(&format!("sentinel|{sub}")),
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try SENTINEL HELP.",
            text(&rest[0])
        )),
    };
    Outcome::one(reply)
}

fn subscribe(s: &mut Session, cmd: &str, rest: &[Vec<u8>]) -> Outcome {
    if rest.is_empty() {
        return Outcome::one(arity(cmd));
    }
    let mut replies = Vec::new();
    for ch in rest {
        let ch = text(ch);
        if cmd == "subscribe" {
            s.channels.insert(ch.clone());
        } else {
            s.patterns.insert(ch.clone());
        }
        replies.push(Reply::Push(vec![
            Reply::bulk(cmd),
            Reply::bulk(ch),
            Reply::Int(s.subscriptions()),
        ]));
    }
    Outcome {
        replies,
        next: Next::Continue,
    }
}

fn unsubscribe(s: &mut Session, cmd: &str, rest: &[Vec<u8>]) -> Outcome {
    let patterns = cmd == "punsubscribe";
    let names: Vec<String> = if rest.is_empty() {
        let set = if patterns { &s.patterns } else { &s.channels };
        set.iter().cloned().collect()
    } else {
        rest.iter().map(|a| text(a)).collect()
    };
    if names.is_empty() {
        return Outcome::one(Reply::Push(vec![
            Reply::bulk(cmd),
            Reply::NullBulk,
            Reply::Int(s.subscriptions()),
        ]));
    }
    let mut replies = Vec::new();
    for n in names {
        if patterns {
            s.patterns.remove(&n);
        } else {
            s.channels.remove(&n);
        }
        replies.push(Reply::Push(vec![
            Reply::bulk(cmd),
            Reply::bulk(n),
            Reply::Int(s.subscriptions()),
        ]));
    }
    Outcome {
        replies,
        next: Next::Continue,
    }
}

/// Whether `pattern` (Redis glob: `*`, `?`, `[...]` with ranges and `^`, `\` escapes)
/// matches `name`. Iterative (one backtracking point), so no pattern a client sends can
/// recurse deeply or take exponential time.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < name.len() {
        if pi < pattern.len() {
            if pattern[pi] == b'*' {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            if let Some(used) = one_char(&pattern[pi..], name[ni]) {
                pi += used;
                ni += 1;
                continue;
            }
        }
        match star {
            Some((sp, sn)) => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            None => return false,
        }
    }
    pattern[pi..].iter().all(|b| *b == b'*')
}

/// Matches one character `c` against the start of `p` (not `*`): the pattern bytes used.
fn one_char(p: &[u8], c: u8) -> Option<usize> {
    match p[0] {
        b'?' => Some(1),
        b'\\' if p.len() > 1 => (p[1] == c).then_some(2),
        b'[' => {
            let end = p.iter().skip(1).position(|b| *b == b']')? + 1;
            let set = &p[1..end];
            let (negate, set) = match set.split_first() {
                Some((b'^', s)) => (true, s),
                _ => (false, set),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    let (lo, hi) = (set[i].min(set[i + 2]), set[i].max(set[i + 2]));
                    hit |= (lo..=hi).contains(&c);
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            (hit != negate).then_some(end + 1)
        }
        other => (other == c).then_some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::PeerSentinel;

    fn cfg(password: Option<&str>) -> EndpointConfig {
        EndpointConfig {
            master_name: "mymaster".into(),
            password: password.map(str::to_string),
            admin_token: Some(TokenSource::fixed("admin-secret")),
            my_id: "ab".repeat(20),
            port: 26379,
            down_after_ms: 10_000,
            max_clients: 100,
        }
    }

    fn view() -> GroupView {
        GroupView {
            master: Some(Addr::new("10.0.0.1", 6379)),
            master_run_id: "r1".into(),
            master_down: false,
            epoch: 4,
            replicas: vec![ReplicaView {
                addr: Addr::new("10.0.0.2", 6379),
                run_id: "r2".into(),
                up: true,
                link_up: true,
                offset: 99,
                priority: 100,
            }],
            sentinels: vec![PeerSentinel {
                id: "cd".repeat(20),
                addr: Addr::new("10.0.0.2", 26379),
            }],
        }
    }

    fn run(s: &mut Session, c: &EndpointConfig, line: &str) -> Outcome {
        let args: Vec<Vec<u8>> = line.split(' ').map(|a| a.as_bytes().to_vec()).collect();
        handle(s, &args, &view(), c, Facts::default())
    }

    fn one(s: &mut Session, c: &EndpointConfig, line: &str) -> Reply {
        let mut o = run(s, c, line);
        assert_eq!(o.replies.len(), 1, "{line}: {o:?}");
        o.replies.remove(0)
    }

    fn field<'a>(entry: &'a Reply, key: &str) -> &'a str {
        let Reply::Map(pairs) = entry else {
            panic!("{entry:?}")
        };
        pairs
            .iter()
            .find_map(|(k, v)| match (k, v) {
                (Reply::Bulk(k), Reply::Bulk(v)) if k == key => Some(v.as_str()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {key} in {entry:?}"))
    }

    #[test]
    fn discovery_answers_from_the_view() {
        let c = cfg(None);
        let mut s = Session::new(1);
        assert_eq!(
            one(&mut s, &c, "SENTINEL get-master-addr-by-name mymaster"),
            Reply::Array(vec![Reply::bulk("10.0.0.1"), Reply::bulk("6379")])
        );
        assert_eq!(
            one(&mut s, &c, "SENTINEL get-master-addr-by-name other"),
            Reply::NullArray
        );
        let m = one(&mut s, &c, "sentinel master mymaster");
        for (k, v) in [
            ("name", "mymaster"),
            ("ip", "10.0.0.1"),
            ("port", "6379"),
            ("runid", "r1"),
            ("flags", "master"),
            ("config-epoch", "4"),
            ("num-slaves", "1"),
            ("num-other-sentinels", "1"),
            ("quorum", "2"),
        ] {
            assert_eq!(field(&m, k), v, "{k}");
        }
        let Reply::Array(rs) = one(&mut s, &c, "SENTINEL replicas mymaster") else {
            panic!()
        };
        for (k, v) in [
            ("ip", "10.0.0.2"),
            ("flags", "slave"),
            ("master-link-status", "ok"),
            ("slave-repl-offset", "99"),
            ("slave-priority", "100"),
            ("replica-announced", "1"),
            ("master-host", "10.0.0.1"),
        ] {
            assert_eq!(field(&rs[0], k), v, "{k}");
        }
        assert_eq!(
            one(&mut s, &c, "SENTINEL slaves mymaster"),
            one(&mut s, &c, "SENTINEL replicas mymaster")
        );
        let Reply::Array(ss) = one(&mut s, &c, "SENTINEL sentinels mymaster") else {
            panic!()
        };
        assert_eq!(field(&ss[0], "runid"), "cd".repeat(20));
        assert_eq!(field(&ss[0], "port"), "26379");
        assert_eq!(
            one(&mut s, &c, "SENTINEL myid"),
            Reply::bulk("ab".repeat(20))
        );
        assert_eq!(
            one(
                &mut s,
                &c,
                "SENTINEL is-master-down-by-addr 10.0.0.1 6379 0 *"
            ),
            Reply::Array(vec![Reply::Int(0), Reply::bulk("*"), Reply::Int(0)])
        );
        assert_eq!(
            one(
                &mut s,
                &c,
                "SENTINEL is-master-down-by-addr 10.0.0.9 6379 0 *"
            ),
            Reply::Array(vec![Reply::Int(1), Reply::bulk("*"), Reply::Int(0)]),
            "not the master (any more): down"
        );
        assert_eq!(
            one(&mut s, &c, "role"),
            Reply::Array(vec![
                Reply::bulk("sentinel"),
                Reply::Array(vec![Reply::bulk("mymaster")])
            ])
        );
        let Reply::Verbatim(info) = one(&mut s, &c, "INFO") else {
            panic!()
        };
        assert!(info.contains("redis_mode:sentinel\r\n"), "{info}");
        assert!(info.contains(&format!("run_id:{}\r\n", "ab".repeat(20))));
        assert!(
            info.contains(
                "master0:name=mymaster,status=ok,address=10.0.0.1:6379,slaves=1,sentinels=2"
            ),
            "{info}"
        );
        let Reply::Verbatim(only) = one(&mut s, &c, "info sentinel") else {
            panic!()
        };
        assert!(only.starts_with("# Sentinel") && !only.contains("# Server"));
    }

    #[test]
    fn while_no_leader_the_master_is_down() {
        let c = cfg(None);
        let mut s = Session::new(1);
        let mut v = view();
        v.master_down = true;
        let args: Vec<Vec<u8>> = ["sentinel", "master", "mymaster"]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect();
        let m = handle(&mut s, &args, &v, &c, Facts::default())
            .replies
            .remove(0);
        assert_eq!(field(&m, "flags"), "master,s_down,o_down");
    }

    #[test]
    fn errors_read_as_sentinels() {
        let c = cfg(None);
        let mut s = Session::new(1);
        let e = |r: Reply| match r {
            Reply::Error(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            e(one(&mut s, &c, "SENTINEL master nope")),
            "ERR No such master with that name"
        );
        assert_eq!(
            e(one(&mut s, &c, "SENTINEL foo")),
            "ERR unknown subcommand 'foo'. Try SENTINEL HELP."
        );
        assert_eq!(
            e(one(&mut s, &c, "SENTINEL")),
            "ERR wrong number of arguments for 'sentinel' command"
        );
        assert_eq!(
            e(one(&mut s, &c, "get x")),
            "ERR unknown command 'get', with args beginning with: 'x' "
        );
        assert!(e(one(&mut s, &c, "SENTINEL monitor m 1.2.3.4 6379 2")).contains("manifests"));
        assert!(e(one(&mut s, &c, "SENTINEL set mymaster quorum 1")).contains("manifests"));
        assert_eq!(
            e(one(&mut s, &c, "SENTINEL failover mymaster")),
            "NOPERM this user has no permissions to run the 'sentinel|failover' command"
        );
        assert_eq!(
            e(one(&mut s, &c, "AUTH x")),
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
        );
        // As admin, FAILOVER goes to the hand-over.
        assert_eq!(one(&mut s, &c, "AUTH admin admin-secret"), Reply::ok());
        assert_eq!(
            run(&mut s, &c, "SENTINEL failover mymaster").next,
            Next::Failover
        );
    }

    /// The admin token is asked for on each `AUTH admin`: a rotated token works at once and
    /// the old one no longer does, without a restart.
    #[test]
    fn a_rotated_admin_token_takes_effect_at_once() {
        let token = std::sync::Arc::new(std::sync::Mutex::new(Some("first-token".to_string())));
        let mut c = cfg(None);
        c.admin_token = Some(TokenSource::new({
            let token = token.clone();
            move || token.lock().unwrap().clone()
        }));
        let wrong = Reply::err("WRONGPASS invalid username-password pair or user is disabled.");
        let mut s = Session::new(7);
        assert_eq!(one(&mut s, &c, "AUTH admin first-token"), Reply::ok());
        *token.lock().unwrap() = Some("second-token".into());
        let mut s = Session::new(8);
        assert_eq!(one(&mut s, &c, "AUTH admin first-token"), wrong);
        assert_eq!(one(&mut s, &c, "AUTH admin second-token"), Reply::ok());
        // No token (a file gone or rejected): no admin at all.
        *token.lock().unwrap() = None;
        assert_eq!(one(&mut s, &c, "AUTH admin second-token"), wrong);
        assert_eq!(format!("{:?}", c.admin_token), "Some(TokenSource(..))");
    }

    #[test]
    fn a_password_guards_everything_but_auth() {
        let c = cfg(Some("pw"));
        let mut s = Session::new(7);
        let noauth = Reply::err("NOAUTH Authentication required.");
        assert_eq!(one(&mut s, &c, "SENTINEL masters"), noauth);
        assert_eq!(one(&mut s, &c, "PING"), noauth);
        assert!(matches!(one(&mut s, &c, "HELLO 3"), Reply::Error(e) if e.starts_with("NOAUTH")));
        assert_eq!(
            one(&mut s, &c, "AUTH wrong"),
            Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
        );
        assert_eq!(
            one(&mut s, &c, "AUTH admin pw"),
            Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
        );
        let hello = one(&mut s, &c, "HELLO 3 AUTH default pw SETNAME app");
        let Reply::Map(pairs) = &hello else { panic!() };
        assert!(pairs.contains(&(Reply::bulk("proto"), Reply::Int(3))));
        assert!(pairs.contains(&(Reply::bulk("mode"), Reply::bulk("sentinel"))));
        assert!(pairs.contains(&(Reply::bulk("id"), Reply::Int(7))));
        assert_eq!(s.proto, 3);
        assert_eq!(one(&mut s, &c, "CLIENT GETNAME"), Reply::bulk("app"));
        assert_eq!(one(&mut s, &c, "PING"), Reply::Simple("PONG".into()));
        // Authenticated with the password, not as admin: no failover.
        assert!(
            matches!(one(&mut s, &c, "SENTINEL failover mymaster"), Reply::Error(e) if e.starts_with("NOPERM"))
        );
    }

    #[test]
    fn pubsub_mode_limits_commands_in_resp2() {
        let c = cfg(None);
        let mut s = Session::new(1);
        let o = run(&mut s, &c, "SUBSCRIBE +switch-master +sdown");
        assert_eq!(o.replies.len(), 2);
        assert_eq!(
            o.replies[1],
            Reply::Push(vec![
                Reply::bulk("subscribe"),
                Reply::bulk("+sdown"),
                Reply::Int(2)
            ])
        );
        assert!(
            matches!(one(&mut s, &c, "SENTINEL masters"), Reply::Error(e) if e.contains("only (P|S)SUBSCRIBE"))
        );
        assert_eq!(
            one(&mut s, &c, "PING"),
            Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")])
        );
        assert_eq!(run(&mut s, &c, "UNSUBSCRIBE").replies.len(), 2);
        assert!(!s.subscribed());
        // RESP3 clients may run commands while subscribed.
        let mut s3 = Session::new(2);
        one(&mut s3, &c, "HELLO 3");
        run(&mut s3, &c, "PSUBSCRIBE *");
        assert!(matches!(
            one(&mut s3, &c, "SENTINEL masters"),
            Reply::Array(_)
        ));
    }

    #[test]
    fn globs_match_as_redis_does() {
        for (p, n, m) in [
            ("*", "+switch-master", true),
            ("+switch-*", "+switch-master", true),
            ("+s?own", "+sdown", true),
            ("[+-]sdown", "-sdown", true),
            ("[^+]sdown", "+sdown", false),
            ("[a-z]*", "+sdown", false),
            ("\\*", "*", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), m, "{p} {n}");
        }
        // Many stars against a long name: linear-ish, no recursion.
        let p = "*a".repeat(10_000);
        assert!(!glob_match(p.as_bytes(), "b".repeat(5_000).as_bytes()));
    }
}
