//! A Redis Sentinel-compatible discovery endpoint for redis-k8s-election.
//!
//! Applications written for Sentinel (`SENTINEL get-master-addr-by-name`, the
//! `+switch-master` channel) find the group's leader here unchanged. Nothing is configured at
//! run time and nothing is elected here: every answer comes from the group's state as the
//! sidecar sees it (the Lease, the pods, their Redis), handed in as a [`view::GroupView`].
//!
//! * [`resp`]: requests in, replies out (RESP2 and RESP3), with bounds;
//! * [`command`]: the commands, pure;
//! * [`events`]: the pub/sub events a change of the group means, pure;
//! * [`server`]: the TCP server (connections, limits, pub/sub, the failover hook).

pub mod command;
pub mod events;
pub mod resp;
pub mod server;
pub mod view;
