//! Timing rules (DESIGN section 3) and the failover budget they imply.

use std::time::Duration;

/// client-go's `JitterFactor`: the renew deadline must exceed 1.2 retry periods.
pub const JITTER_FACTOR: f64 = 1.2;

/// The election timing, named as in client-go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `LD`: how long a lease stays valid in a follower's view after it last changed.
    pub lease_duration: Duration,
    /// `RD`: how long a leader keeps trying to renew before it fences itself.
    pub renew_deadline: Duration,
    /// `RP`: how often a leader renews and a candidate retries.
    pub retry_period: Duration,
    /// The longest a fence of the local Redis may take (writes refused, clients dropped).
    pub fence_time: Duration,
    /// The timeout of each Kubernetes request.
    pub request_timeout: Duration,
}

/// Why a timing configuration is rejected; each names the flag to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    /// A duration is zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    /// `LD > RD + fence time + request timeout` does not hold.
    #[error(
        "--lease-duration ({ld:?}) must exceed --renew-deadline ({rd:?}) + fence time ({fence:?}) + request timeout ({req:?}), so that a leader that cannot renew fences itself before anyone else may take over"
    )]
    LeaseTooShort {
        /// lease duration
        ld: Duration,
        /// renew deadline
        rd: Duration,
        /// fence time
        fence: Duration,
        /// request timeout
        req: Duration,
    },
    /// `RD > 1.2 × RP` does not hold.
    #[error(
        "--renew-deadline ({rd:?}) must exceed 1.2 × --retry-period ({rp:?}), so a leader gets more than one jittered renewal attempt before its deadline"
    )]
    DeadlineTooShort {
        /// renew deadline
        rd: Duration,
        /// retry period
        rp: Duration,
    },
}

impl Timing {
    /// The default timing: 10s / 6s / 1s, a 1s fence budget and 2s requests.
    pub fn defaults() -> Self {
        Self {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(6),
            retry_period: Duration::from_secs(1),
            fence_time: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        }
    }

    /// Checks the rules of DESIGN section 3.
    pub fn validate(&self) -> Result<(), TimingError> {
        for (d, flag) in [
            (self.lease_duration, "lease-duration"),
            (self.renew_deadline, "renew-deadline"),
            (self.retry_period, "retry-period"),
            (self.request_timeout, "request-timeout"),
        ] {
            if d.is_zero() {
                return Err(TimingError::Zero(flag));
            }
        }
        if self.lease_duration <= self.renew_deadline + self.fence_time + self.request_timeout {
            return Err(TimingError::LeaseTooShort {
                ld: self.lease_duration,
                rd: self.renew_deadline,
                fence: self.fence_time,
                req: self.request_timeout,
            });
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(TimingError::DeadlineTooShort {
                rd: self.renew_deadline,
                rp: self.retry_period,
            });
        }
        Ok(())
    }

    /// The clock-rate ratio between any two sidecars that the configuration tolerates: a
    /// leader fences at most `RD + fence + request timeout` after its last successful renewal
    /// began, on its clock; a follower waits `LD` on its own. Their ratio is the bound.
    pub fn tolerated_clock_rate(&self) -> f64 {
        self.lease_duration.as_secs_f64()
            / (self.renew_deadline + self.fence_time + self.request_timeout).as_secs_f64()
    }

    /// The failover budget this configuration implies, worst case.
    pub fn budget(&self) -> Budget {
        Budget {
            // The leader's sidecar sees the failed probe within one retry period, releases at
            // once (one request), and followers see the release on their watch.
            redis_crash: self.retry_period + self.request_timeout,
            // Nobody releases: followers wait out the lease from the last change they saw, then
            // need one retry period and one request to take it.
            pod_loss: self.lease_duration + self.retry_period + self.request_timeout,
        }
    }
}

/// Worst-case time from a failure until a new leader holds the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The leader's Redis dies, its sidecar lives (a release).
    pub redis_crash: Duration,
    /// The whole leader pod is gone (lease expiry).
    pub pod_loss: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ld: u64, rd: u64, rp: u64) -> Timing {
        Timing {
            lease_duration: Duration::from_millis(ld),
            renew_deadline: Duration::from_millis(rd),
            retry_period: Duration::from_millis(rp),
            fence_time: Duration::from_millis(500),
            request_timeout: Duration::from_millis(1000),
        }
    }

    #[test]
    fn defaults_are_valid() {
        Timing::defaults().validate().unwrap();
        assert!(Timing::defaults().tolerated_clock_rate() > 1.1);
    }

    #[test]
    fn rules() {
        assert!(t(10_000, 6_000, 1_000).validate().is_ok());
        assert!(matches!(
            t(7_000, 6_000, 1_000).validate(),
            Err(TimingError::LeaseTooShort { .. })
        ));
        assert!(matches!(
            t(10_000, 1_200, 1_000).validate(),
            Err(TimingError::DeadlineTooShort { .. })
        ));
        assert_eq!(
            t(0, 6_000, 1_000).validate(),
            Err(TimingError::Zero("lease-duration"))
        );
        let e = t(7_000, 6_000, 1_000).validate().unwrap_err().to_string();
        assert!(
            e.contains("--lease-duration") && e.contains("--renew-deadline"),
            "{e}"
        );
    }

    #[test]
    fn budget_grows_with_the_lease() {
        let b = t(10_000, 6_000, 1_000).budget();
        assert_eq!(b.pod_loss, Duration::from_millis(12_000));
        assert_eq!(b.redis_crash, Duration::from_millis(2_000));
    }
}
