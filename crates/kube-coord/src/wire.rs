//! What each sidecar publishes on its own pod for its peers and the operator's commands, typed
//! once for the writer and the readers.

use serde::{Deserialize, Serialize};

/// A sidecar's role in the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarRole {
    /// Just started: has not seen the Lease yet (its Redis stays fenced).
    Undecided,
    /// Holds the Lease.
    Leader,
    /// Follows the holder of a valid Lease.
    Replica,
    /// No valid leader is known: it may run for the Lease.
    Candidate,
}

impl SidecarRole {
    /// The name on the wire, in metrics and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            SidecarRole::Undecided => "undecided",
            SidecarRole::Leader => "leader",
            SidecarRole::Replica => "replica",
            SidecarRole::Candidate => "candidate",
        }
    }
}

impl std::fmt::Display for SidecarRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The priority a peer has when its pod does not publish one (an older or starting sidecar),
/// the same as the sidecar's `--priority` default.
pub const DEFAULT_PRIORITY: u32 = 100;

/// The pod annotation [`crate::POD_STATUS_ANNOTATION`]: a short summary peers rank by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSummary {
    /// The sidecar's role.
    pub role: SidecarRole,
    /// The current leader's epoch, when known.
    pub epoch: Option<u32>,
    /// Its leadership priority (0: never leads).
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Its Redis is fenced.
    pub fenced: bool,
    /// Its `/readyz` answers 200.
    pub ready: bool,
}

fn default_priority() -> u32 {
    DEFAULT_PRIORITY
}
