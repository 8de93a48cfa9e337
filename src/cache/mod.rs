//! The token cache: one token shared by every clone of the layered service, refreshed in
//! the background with at most one login in flight.

mod config;
mod entry;
mod login;
mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{RwLock, watch};
use tokio::time::Instant;

pub(crate) use config::CacheConfig;
pub(crate) use entry::Authorization;
pub use stats::AuthStats;
pub(crate) use stats::Counters;

use crate::error::Error;
use crate::source::TokenSource;
use entry::Entry;
use login::Flight;

/// The token cache behind [`BearerAuthLayer`](crate::BearerAuthLayer).
///
/// Every clone shares one token. The cache:
/// - logs in on first use, with at most one login in flight, which every concurrent caller
///   awaits;
/// - refreshes the token in the background once fewer than `refresh_before` (60 s by
///   default) of its lifetime remain, while callers go on with the current token;
/// - runs each login in a task of its own with a timeout, so dropping the request that
///   started it fails or stalls no other caller;
/// - keeps a still-valid token when a refresh fails;
/// - after a failed login, returns that error to callers for a cooldown that doubles with
///   each consecutive failure (1 s up to 60 s by default), so an outage or wrong
///   credentials cause no login storm;
/// - spaces logins at least `min_login_interval` (1 s by default) apart, which bounds the
///   login rate even for tokens that live only a few seconds or an API that rejects every
///   token.
///
/// # Expiry
///
/// The expiry counts on the monotonic clock from when the token arrived, so a change of the
/// wall clock afterwards changes nothing. A token that lives longer than `refresh_before`
/// is refreshed once strictly fewer than `refresh_before` remain: a 63 s token with the
/// default 60 s margin is refreshed after 3 s. A token whose whole lifetime is at most
/// `refresh_before` is refreshed after half its lifetime. A token with no known expiry, or
/// one that claims to live longer than `max_token_lifetime` (12 hours by default), is kept
/// for `max_token_lifetime`.
///
/// # Generations
///
/// Each token stored gets a new generation number. A `401` invalidates the token only if
/// the failed request carried the current generation, so twenty requests that fail
/// together with one token cause one login, not twenty.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

struct Shared {
    source: Arc<dyn TokenSource>,
    config: CacheConfig,
    state: RwLock<State>,
    counters: Counters,
}

#[derive(Default)]
struct State {
    entry: Option<Entry>,
    next_generation: u64,
    flight: Option<Flight>,
    failure: Option<Failure>,
    last_login: Option<Instant>,
    /// Incremented by [`TokenCache::clear`]; a login started before a clear does not store
    /// its token.
    epoch: u64,
}

/// The last failed login and when the next may start.
struct Failure {
    error: Error,
    retry_at: Instant,
    consecutive: u32,
}

/// The next step of a caller, decided from the state.
enum Plan {
    Ready(Authorization),
    Fail(Error),
    Wait(watch::Receiver<Option<Result<Authorization, Error>>>),
}

impl TokenCache {
    /// Creates an empty cache that obtains tokens from `source`, with default settings.
    pub fn new(source: impl TokenSource) -> Self {
        TokenCache::with_config(Arc::new(source), CacheConfig::default())
    }

    pub(crate) fn with_config(source: Arc<dyn TokenSource>, config: CacheConfig) -> Self {
        TokenCache {
            shared: Arc::new(Shared {
                source,
                config,
                state: RwLock::new(State::default()),
                counters: Counters::default(),
            }),
        }
    }

    pub(crate) fn source(&self) -> &Arc<dyn TokenSource> {
        &self.shared.source
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Returns the counters of this cache and of the layers that share it.
    pub fn stats(&self) -> AuthStats {
        self.shared.counters.snapshot()
    }

    /// Returns the generation of the cached token, or `None` when no valid token is cached.
    pub async fn generation(&self) -> Option<u64> {
        let state = self.shared.state.read().await;
        let entry = state.entry.as_ref()?;
        entry
            .is_valid(Instant::now())
            .then_some(entry.authorization.generation)
    }

    /// Drops the cached token and any login cooldown, so the next request logs in again at
    /// once.
    ///
    /// Use it after a suspected exposure of the token, or after replacing the credentials
    /// of a [`LoginSource`](crate::LoginSource) through its
    /// [`CredentialsHandle`](crate::CredentialsHandle). Requests already sent keep the
    /// token they carry; if the server rejects it, they are replayed with the new token.
    /// A login in flight still returns its token to the callers that wait for it, but the
    /// token is not cached, because it may come from the old credentials. A new login may
    /// therefore start while that one is still running.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped before it completes, nothing changes.
    pub async fn clear(&self) {
        let mut state = self.shared.state.write().await;
        state.epoch += 1;
        state.entry = None;
        state.failure = None;
        state.flight = None;
        state.last_login = None;
        tracing::info!("token cache cleared; the next request logs in again");
    }

    /// Returns the cached authorization without waiting, or `None` when a caller has to go
    /// through [`authorization`](Self::authorization): no valid token, a refresh due and not
    /// started yet, or the lock held by a writer. This path does not allocate.
    pub(crate) fn cached(&self) -> Option<Authorization> {
        let state = self.shared.state.try_read().ok()?;
        let entry = state.entry.as_ref()?;
        let now = Instant::now();
        let usable = entry.is_fresh(now)
            || (entry.is_valid(now) && (state.has_live_flight() || state.cooling_down(now)));
        usable.then(|| entry.authorization.clone())
    }

    /// Returns the authorization to attach, logging in or starting a background refresh as
    /// the state requires.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a login started here runs in a task of its own and completes for the
    /// other callers even if this future is dropped.
    pub(crate) async fn authorization(&self) -> Result<Authorization, Error> {
        if let Some(authorization) = self.cached() {
            return Ok(authorization);
        }
        let plan = {
            let mut state = self.shared.state.write().await;
            self.plan(&mut state, Instant::now())
        };
        match plan {
            Plan::Ready(authorization) => Ok(authorization),
            Plan::Fail(error) => Err(error),
            Plan::Wait(receiver) => login::wait(receiver).await,
        }
    }

    fn plan(&self, state: &mut State, now: Instant) -> Plan {
        state.forget_dead_flight(self.config(), now);
        if let Some(entry) = &state.entry {
            if entry.is_valid(now) {
                let authorization = entry.authorization.clone();
                let refresh_due = !entry.is_fresh(now);
                if refresh_due && state.flight.is_none() && !state.cooling_down(now) {
                    self.shared.counters.refresh_started();
                    tracing::debug!(
                        seconds_left = (entry.expires_at - now).as_secs_f64(),
                        "token expires soon; refreshing in the background"
                    );
                    // Without a runtime the current token is still good; the next caller retries.
                    let _ = self.start_login(state, now);
                }
                return Plan::Ready(authorization);
            }
            state.entry = None;
        }
        if let Some(flight) = &state.flight {
            return Plan::Wait(flight.subscribe());
        }
        if let Some(failure) = &state.failure {
            if now < failure.retry_at {
                return Plan::Fail(failure.error.clone().with_retry_in(failure.retry_at - now));
            }
        }
        match self.start_login(state, now) {
            Ok(receiver) => Plan::Wait(receiver),
            Err(error) => Plan::Fail(error),
        }
    }

    /// Drops the token of `generation` if it is still the cached one. Returns `true` when it
    /// was dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if the future is dropped before it completes, the token stays cached.
    pub(crate) async fn invalidate(&self, generation: u64) -> bool {
        let mut state = self.shared.state.write().await;
        Self::invalidate_locked(&mut state, generation)
    }

    /// Like [`invalidate`](Self::invalidate), for callers that cannot wait: done at once when
    /// the lock is free, otherwise in a spawned task.
    pub(crate) fn invalidate_soon(&self, generation: u64) {
        if let Ok(mut state) = self.shared.state.try_write() {
            Self::invalidate_locked(&mut state, generation);
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cache = self.clone();
            runtime.spawn(async move { cache.invalidate(generation).await });
        }
    }

    fn invalidate_locked(state: &mut State, generation: u64) -> bool {
        let current = state
            .entry
            .as_ref()
            .map(|entry| entry.authorization.generation);
        if current != Some(generation) {
            return false;
        }
        state.entry = None;
        true
    }
}

impl State {
    fn cooling_down(&self, now: Instant) -> bool {
        self.failure
            .as_ref()
            .is_some_and(|failure| now < failure.retry_at)
    }

    fn has_live_flight(&self) -> bool {
        self.flight.as_ref().is_some_and(|flight| !flight.is_dead())
    }

    /// Clears a flight whose task ended without reporting, which happens when its runtime
    /// shut down mid-login, and records it as a failed login so that the next one waits for
    /// a cooldown.
    fn forget_dead_flight(&mut self, config: &CacheConfig, now: Instant) {
        if !self.flight.as_ref().is_some_and(Flight::is_dead) {
            return;
        }
        self.flight = None;
        self.record_failure(login::task_ended(), config, now, Duration::ZERO);
    }

    /// Records a failed login and its cooldown: the configured backoff for this many
    /// consecutive failures, or `requested` when that is longer. Returns both.
    fn record_failure(
        &mut self,
        error: Error,
        config: &CacheConfig,
        now: Instant,
        requested: Duration,
    ) -> (u32, Duration) {
        let consecutive = self.failure.as_ref().map_or(0, |f| f.consecutive) + 1;
        let cooldown = config.cooldown(consecutive).max(requested);
        self.failure = Some(Failure {
            error,
            retry_at: now + cooldown,
            consecutive,
        });
        (consecutive, cooldown)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.shared.source)
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
