//! redis-k8s-election: Kubernetes-native leader/follower replication for Redis.
//!
//! The library behind the binary, so that tests, benches and other programs use the same
//! types the commands do:
//! * [`sidecar`]: the control loop beside each Redis (observe → decide → act around the pure
//!   `election` crate), its HTTP API, metrics and Events;
//! * [`ctl`]: the operator's commands (`status`, `switchover`, `pause`, `resume`, `history`);
//! * [`local`]: a whole group on one machine under kubesim;
//! * [`apiserver`]: kubesim's API server as a process;
//! * [`cli`]: the command line and what runs each subcommand;
//! * [`api_tls`]: HTTPS to the sidecars' APIs, for the sidecars and the operator commands;
//! * [`wire`]: the contracts other programs read (`/status`, the switchover reply), typed
//!   once for the producer and every reader.
//!
//! `main.rs` only parses the command line, sets up logging and maps errors to exit codes.

pub mod api_tls;
pub mod apiserver;
pub mod cli;
pub mod credentials;
pub mod ctl;
pub mod local;
pub mod sidecar;
pub mod signals;
pub mod wire;
