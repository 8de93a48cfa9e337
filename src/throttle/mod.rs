//! The throttle sub-layer: after a `429`, wait for the time the server requests, or back
//! off with jitter, then send the request again.

mod delay;
#[cfg(test)]
mod proptests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Response};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, Retry};
use tower_layer::Layer;

use crate::body::{ReplayableBody, clone_request};
use crate::cache::TokenCache;
use crate::origin::Origin;
use crate::response::{Verdict, verdict};
pub(crate) use delay::{Decision, decide, retry_after};

/// Middleware that retries a request after a `429`, built on tower's
/// [`Retry`](tower::retry::Retry).
pub type Throttle<S> = Retry<ThrottlePolicy, S>;

/// Settings of the wait after a `429`, for the throttle layer and
/// [`LoginSource`](crate::LoginSource).
///
/// ```
/// use std::time::Duration;
/// use resq_auth::ThrottleConfig;
///
/// let config = ThrottleConfig::default()
///     .max_attempts(5)
///     .max_wait(Duration::from_secs(10));
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ThrottleConfig {
    pub(crate) max_attempts: u32,
    pub(crate) max_wait: Duration,
    pub(crate) base_delay: Duration,
    pub(crate) retry_after_jitter: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_attempts: 3,
            max_wait: Duration::from_secs(30),
            base_delay: Duration::from_millis(500),
            retry_after_jitter: Duration::from_millis(500),
        }
    }
}

impl ThrottleConfig {
    /// Sets how many times a request is sent in all, the first time included. Default 3;
    /// 1 turns retries off.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the longest wait before a retry. A `Retry-After` above it returns the `429` to
    /// the caller at once. Default 30 s.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Sets the first backoff ceiling when the response has no usable `Retry-After`; it
    /// doubles with each retry. Default 500 ms.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// Sets the largest random delay added to a `Retry-After` wait. Default 500 ms.
    pub fn retry_after_jitter(mut self, jitter: Duration) -> Self {
        self.retry_after_jitter = jitter;
        self
    }
}

/// Layer that applies [`Throttle`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ThrottleLayer {
    policy: ThrottlePolicy,
}

impl ThrottleLayer {
    /// Creates the layer with its own retry budget: tower's [`TpsBudget`] that keeps retries
    /// under 20% of requests over 10 s, with a floor of 10 retries per second.
    pub fn new(config: ThrottleConfig) -> Self {
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
        ThrottleLayer::with_budget(config, budget)
    }

    /// Creates the layer with a retry budget that the caller may share with other layers.
    pub fn with_budget(config: ThrottleConfig, budget: Arc<TpsBudget>) -> Self {
        ThrottleLayer {
            policy: ThrottlePolicy {
                config: Arc::new(config),
                budget,
                counters: None,
                origin: None,
                retries: 0,
            },
        }
    }

    /// Restricts retries to requests for `origin`; other requests pass through untouched.
    pub(crate) fn for_origin(mut self, origin: Option<Origin>) -> Self {
        self.policy.origin = origin.map(Arc::new);
        self
    }

    /// Counts retries in the stats of `cache`.
    pub(crate) fn counting_in(mut self, cache: TokenCache) -> Self {
        self.policy.counters = Some(cache);
        self
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        Retry::new(self.policy.clone(), inner)
    }
}

/// The [`Policy`] of [`Throttle`].
///
/// A `429` is retried while all of these hold: attempts remain, the wait that
/// [`ThrottleConfig`] computes stays within `max_wait`, the body can be sent again, and the
/// shared retry budget has room. Otherwise the `429` goes back to the caller. Every other
/// response and every error is returned as it is.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    config: Arc<ThrottleConfig>,
    budget: Arc<TpsBudget>,
    counters: Option<TokenCache>,
    origin: Option<Arc<Origin>>,
    retries: u32,
}

impl ThrottlePolicy {
    fn attempts_left(&self) -> bool {
        self.retries + 1 < self.config.max_attempts
    }
}

impl<B, ResBody, E> Policy<Request<B>, Response<ResBody>, E> for ThrottlePolicy
where
    B: ReplayableBody,
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        if verdict(response) != Verdict::Throttled {
            self.budget.deposit();
            return None;
        }
        let mut rng = fastrand::Rng::new();
        let decision = decide(
            response.headers(),
            self.retries,
            &self.config,
            SystemTime::now(),
            &mut rng,
        );
        let wait = match decision {
            Decision::Wait(wait) => wait,
            Decision::GiveUp(asked) => {
                tracing::debug!(
                    retry_after_seconds = asked.as_secs_f64(),
                    max_wait_seconds = self.config.max_wait.as_secs_f64(),
                    "429 returned to the caller: Retry-After exceeds max_wait"
                );
                return None;
            }
        };
        if !self.attempts_left() || !request.body().can_replay() {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!("429 returned to the caller: retry budget exhausted");
            return None;
        }
        self.retries += 1;
        if let Some(cache) = &self.counters {
            cache.counters().throttle_retried();
        }
        tracing::debug!(
            delay_seconds = wait.as_secs_f64(),
            attempt = self.retries + 1,
            path = request.uri().path(),
            "429: waiting before sending the request again"
        );
        Some(tokio::time::sleep(wait))
    }

    /// Copies every request for the API origin, even on the last attempt: tower's `Retry`
    /// calls [`retry`](Policy::retry), which feeds the retry budget, only for a request it
    /// has a copy of. Requests for other origins are not copied, so they are never
    /// retried.
    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        if let Some(origin) = &self.origin {
            if !origin.matches(request.uri()) {
                return None;
            }
        }
        clone_request(request)
    }
}
