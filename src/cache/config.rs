//! Tunables of the token cache.

use std::time::Duration;

/// The maximum duration of any setting: about 100 years. Longer values are clamped to
/// it, so no instant computed from a setting can overflow.
pub(crate) const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Settings of a [`TokenCache`](crate::TokenCache), set through the builder methods of
/// [`BearerAuthLayer`](crate::BearerAuthLayer).
#[derive(Debug, Clone)]
pub(crate) struct CacheConfig {
    pub(crate) refresh_before: Duration,
    pub(crate) login_timeout: Duration,
    pub(crate) min_login_interval: Duration,
    pub(crate) failure_backoff: Duration,
    pub(crate) max_failure_backoff: Duration,
    pub(crate) max_token_lifetime: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            refresh_before: Duration::from_secs(60),
            login_timeout: Duration::from_secs(30),
            min_login_interval: Duration::from_secs(1),
            failure_backoff: Duration::from_secs(1),
            max_failure_backoff: Duration::from_secs(60),
            max_token_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

impl CacheConfig {
    /// Clamps every setting to [`LONGEST`].
    pub(crate) fn clamped(mut self) -> Self {
        for setting in [
            &mut self.refresh_before,
            &mut self.login_timeout,
            &mut self.min_login_interval,
            &mut self.failure_backoff,
            &mut self.max_failure_backoff,
            &mut self.max_token_lifetime,
        ] {
            *setting = (*setting).min(LONGEST);
        }
        self
    }

    /// Returns the cooldown after `failures` consecutive failed logins: the initial backoff
    /// doubled per failure, capped, then shortened by up to 20% at random so that many
    /// processes that failed together do not retry together.
    pub(crate) fn cooldown(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        let full = self
            .failure_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_failure_backoff);
        full.mul_f64(1.0 - fastrand::f64() * 0.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_doubles_and_caps() {
        let config = CacheConfig::default();
        for (failures, full) in [(1, 1), (2, 2), (3, 4), (7, 60), (u32::MAX, 60)] {
            let cooldown = config.cooldown(failures);
            let full = Duration::from_secs(full);
            assert!(cooldown <= full, "{failures}: {cooldown:?} > {full:?}");
            assert!(cooldown >= full.mul_f64(0.8), "{failures}: {cooldown:?}");
        }
    }
}
