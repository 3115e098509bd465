//! Parsing of `INFO` replies into what the sidecar decides on. Pure, so that any reply, well
//! formed or not, gives a value or a clear error and never a panic.

use std::collections::HashMap;

/// The replication role Redis reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// `role:master`.
    Master,
    /// `role:slave`, with where it replicates from.
    Replica {
        /// `master_host`.
        master_host: String,
        /// `master_port`.
        master_port: u16,
        /// `master_link_status:up`.
        link_up: bool,
        /// `master_sync_in_progress:1`.
        syncing: bool,
    },
}

/// One replica as its master lists it (`slaveN:ip=…,port=…,state=…,offset=…,lag=…`).
///
/// The `offset` is the last one the replica acknowledged (`REPLCONF ACK`, sent once a second
/// and at once after loading a full sync), not what the master sent: it is how the master,
/// and so the sidecar, can tell a replica that receives the stream from one that Redis lists
/// `online` but does not stream to yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaEntry {
    /// The address the replica announced (`replica-announce-ip`, else its source address).
    pub ip: String,
    /// The port it announced (`replica-announce-port`, else its listening port).
    pub port: u16,
    /// `online`, `wait_bgsave`, `send_bulk`.
    pub state: String,
    /// The last offset it acknowledged.
    pub acked_offset: u64,
    /// Seconds since its last acknowledgement.
    pub lag_seconds: u64,
}

/// What one probe learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Master or replica.
    pub role: Role,
    /// `master_repl_offset` (the replication stream position this node has).
    pub offset: u64,
    /// `loading:1`: the dataset is being loaded; the node cannot serve.
    pub loading: bool,
    /// Keys across all databases (`# Keyspace`).
    pub keys: u64,
    /// `connected_slaves`.
    pub connected_replicas: u32,
    /// `config_file` (empty when started without one).
    pub config_file: String,
    /// `redis_version`.
    pub version: String,
    /// `run_id`: new with every start of the process (empty when not reported).
    pub run_id: String,
    /// A master's replicas, as it lists them.
    pub replicas: Vec<ReplicaEntry>,
    /// `min_slaves_good_slaves`: replicas that acknowledged within `min-replicas-max-lag`,
    /// present while `min-replicas-to-write` is in force (the RPO mode and the fence).
    pub good_replicas: Option<u32>,
}

impl ReplicaEntry {
    /// Parses the value of a `slaveN` field; `None` when it lacks a field or one is
    /// malformed (an odd entry is skipped, never fatal: the probe's other fields still count).
    fn parse(value: &str) -> Option<Self> {
        let mut ip = None;
        let (mut port, mut state, mut offset, mut lag) = (None, None, None, None);
        for part in value.split(',') {
            let (k, v) = part.split_once('=')?;
            match k {
                "ip" => ip = Some(v.to_string()),
                "port" => port = v.parse().ok(),
                "state" => state = Some(v.to_string()),
                "offset" => offset = v.parse().ok(),
                "lag" => lag = v.parse().ok(),
                _ => {}
            }
        }
        Some(Self {
            ip: ip?,
            port: port?,
            state: state?,
            acked_offset: offset?,
            lag_seconds: lag?,
        })
    }
}

impl NodeInfo {
    /// A master's entry for the replica that announced `host:port`.
    pub fn replica_at(&self, host: &str, port: u16) -> Option<&ReplicaEntry> {
        self.replicas
            .iter()
            .find(|r| r.port == port && r.ip.eq_ignore_ascii_case(host))
    }

    /// A node holds data when it has keys or has seen any replication stream.
    pub fn has_data(&self) -> bool {
        self.keys > 0 || self.offset > 0
    }
}

/// Why an INFO reply could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InfoError {
    /// A field the sidecar needs is missing.
    #[error("INFO reply lacks `{0}`")]
    Missing(&'static str),
    /// A field has a value of the wrong shape.
    #[error("INFO field `{field}` has an unexpected value {value:?}")]
    Bad {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

fn fields(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect()
}

fn num<T: std::str::FromStr>(f: &HashMap<&str, &str>, key: &'static str) -> Result<T, InfoError> {
    let v = f.get(key).ok_or(InfoError::Missing(key))?;
    v.parse().map_err(|_| InfoError::Bad {
        field: key,
        value: v.to_string(),
    })
}

/// Parses the text of `INFO server replication persistence keyspace`.
pub fn parse(text: &str) -> Result<NodeInfo, InfoError> {
    let f = fields(text);
    let role = match f.get("role").copied() {
        Some("master") => Role::Master,
        Some("slave") => Role::Replica {
            master_host: f
                .get("master_host")
                .ok_or(InfoError::Missing("master_host"))?
                .to_string(),
            master_port: num(&f, "master_port")?,
            link_up: f.get("master_link_status") == Some(&"up"),
            syncing: f.get("master_sync_in_progress") == Some(&"1"),
        },
        Some(other) => {
            return Err(InfoError::Bad {
                field: "role",
                value: other.to_string(),
            });
        }
        None => return Err(InfoError::Missing("role")),
    };
    let mut keys = 0u64;
    for (k, v) in &f {
        if k.starts_with("db") && k[2..].chars().all(|c| c.is_ascii_digit()) {
            let n = v
                .split(',')
                .find_map(|p| p.strip_prefix("keys="))
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or(InfoError::Bad {
                    field: "keyspace",
                    value: v.to_string(),
                })?;
            keys += n;
        }
    }
    Ok(NodeInfo {
        role,
        offset: num(&f, "master_repl_offset")?,
        loading: f.get("loading") == Some(&"1"),
        keys,
        connected_replicas: num(&f, "connected_slaves")?,
        config_file: f
            .get("config_file")
            .copied()
            .unwrap_or_default()
            .to_string(),
        version: f
            .get("redis_version")
            .copied()
            .unwrap_or_default()
            .to_string(),
        run_id: f.get("run_id").copied().unwrap_or_default().to_string(),
        replicas: replica_entries(&f),
        good_replicas: f.get("min_slaves_good_slaves").and_then(|v| v.parse().ok()),
    })
}

/// The `slaveN` fields in index order.
fn replica_entries(f: &HashMap<&str, &str>) -> Vec<ReplicaEntry> {
    let mut numbered: Vec<(u32, ReplicaEntry)> = f
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix("slave")?.parse::<u32>().ok()?;
            Some((n, ReplicaEntry::parse(v)?))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    numbered.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REPLICA: &str = "# Server\r\nredis_version:7.0.15\r\nconfig_file:\r\n# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:42\r\nconnected_slaves:0\r\nmaster_repl_offset:42\r\n# Persistence\r\nloading:0\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n";

    #[test]
    fn replica() {
        let i = parse(REPLICA).unwrap();
        assert_eq!(
            i.role,
            Role::Replica {
                master_host: "10.0.0.1".into(),
                master_port: 6379,
                link_up: true,
                syncing: false
            }
        );
        assert_eq!((i.offset, i.keys, i.loading), (42, 4, false));
        assert!(i.has_data());
    }

    #[test]
    fn master_with_replicas() {
        let i = parse(
            "role:master\r\nconnected_slaves:2\r\nslave1:ip=10.0.0.3,port=6379,state=online,offset=0,lag=1\r\nslave0:ip=10.0.0.2,port=6390,state=online,offset=120,lag=0\r\nslave2:ip=bad\r\nmin_slaves_good_slaves:1\r\nmaster_repl_offset:130\r\n",
        )
        .unwrap();
        assert_eq!(
            i.replicas,
            vec![
                ReplicaEntry {
                    ip: "10.0.0.2".into(),
                    port: 6390,
                    state: "online".into(),
                    acked_offset: 120,
                    lag_seconds: 0
                },
                ReplicaEntry {
                    ip: "10.0.0.3".into(),
                    port: 6379,
                    state: "online".into(),
                    acked_offset: 0,
                    lag_seconds: 1
                }
            ],
            "in index order; the malformed entry skipped"
        );
        assert_eq!(i.good_replicas, Some(1));
        assert_eq!(parse(REPLICA).unwrap().good_replicas, None);
    }

    #[test]
    fn empty_master() {
        let i =
            parse("role:master\nconnected_slaves:0\nmaster_repl_offset:0\nloading:0\n").unwrap();
        assert_eq!(i.role, Role::Master);
        assert!(!i.has_data());
    }

    #[test]
    fn bad_replies() {
        assert_eq!(parse(""), Err(InfoError::Missing("role")));
        assert!(matches!(parse("role:sentinel"), Err(InfoError::Bad { .. })));
        assert!(matches!(
            parse("role:master\nconnected_slaves:x\nmaster_repl_offset:0"),
            Err(InfoError::Bad { .. })
        ));
        assert!(matches!(
            parse("role:slave\nmaster_port:1"),
            Err(InfoError::Missing("master_host"))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_info_like_text(lines in proptest::collection::vec("(role|db0|slave0|master_port|master_repl_offset|connected_slaves|min_slaves_good_slaves|loading):[a-z0-9=,]{0,12}", 0..8)) {
            let _ = parse(&lines.join("\r\n"));
        }
    }
}
