//! Counters of the token cache and the retry layers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters of a [`TokenCache`](crate::TokenCache) and of the layers that
/// share it. Every counter only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthStats {
    /// Logins that returned a token.
    pub logins: u64,
    /// Logins that failed, including timeouts and rejected credentials.
    pub login_failures: u64,
    /// Background refreshes started while the cached token was still valid.
    pub refreshes: u64,
    /// Requests sent a second time after a `401`.
    pub replays: u64,
    /// Requests sent again after a `429`.
    pub throttle_retries: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    logins: AtomicU64,
    login_failures: AtomicU64,
    refreshes: AtomicU64,
    replays: AtomicU64,
    throttle_retries: AtomicU64,
}

impl Counters {
    pub(crate) fn login_succeeded(&self) {
        self.logins.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn login_failed(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refresh_started(&self) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn replayed(&self) {
        self.replays.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttle_retried(&self) {
        self.throttle_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> AuthStats {
        AuthStats {
            logins: self.logins.load(Ordering::Relaxed),
            login_failures: self.login_failures.load(Ordering::Relaxed),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            replays: self.replays.load(Ordering::Relaxed),
            throttle_retries: self.throttle_retries.load(Ordering::Relaxed),
        }
    }
}
