//! Pure decisions of redis-k8s-election, free of I/O and of any async runtime.
//!
//! * [`timing`]: the lease duration / renew deadline / retry period rules and the failover
//!   budget they imply.
//! * [`checkpoint`]: where a Redis' data stands in the group's history (cold starts).
//! * [`rank`]: which candidate should lead (invariant 3 of the design).
//! * [`candidacy`]: whether a candidate runs now or backs off for a better peer, and how
//!   long at most.
//! * [`handover`]: which replica a planned move hands the lease to.
//! * [`failsafe`]: the failsafe protocol's messages and the joining-pod rule (DESIGN 3a).
//! * [`elector`]: the lease elector with client-go semantics, as a state machine advanced by
//!   [`elector::Elector::step`], which returns the actions for the caller to carry out.
//!
//! Time is a monotonic reading passed in by the caller ([`Mono`]), so tests drive it with a
//! scripted clock and the property tests run clocks at different rates.

pub mod candidacy;
pub mod checkpoint;
pub mod elector;
pub mod failsafe;
pub mod handover;
pub mod rank;
pub mod timing;

/// A reading of the caller's local monotonic clock, as the time since an arbitrary origin.
/// Expiry is always judged on this clock, never by comparing the lease's `renewTime` with the
/// wall clock (DESIGN section 3).
pub type Mono = std::time::Duration;
