//! The auth-retry sub-layer: after a `401`, drop the token that failed and send the request
//! once more with a new one.

use std::future::Future;
use std::pin::Pin;

use http::{Request, Response};
use tower::retry::{Policy, Retry};
use tower_layer::Layer;

use crate::attach::TokenGeneration;
use crate::body::{ReplayableBody, clone_request};
use crate::cache::TokenCache;
use crate::response::{Verdict, verdict};

/// Middleware that replays a request once after a `401`, built on tower's
/// [`Retry`](tower::retry::Retry).
pub type AuthRetry<S> = Retry<AuthRetryPolicy, S>;

/// Layer that applies [`AuthRetry`]. It must sit directly outside
/// [`AttachTokenLayer`](crate::AttachTokenLayer) with the same [`TokenCache`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AuthRetryLayer {
    cache: TokenCache,
}

impl AuthRetryLayer {
    /// Creates the layer.
    pub fn new(cache: TokenCache) -> Self {
        AuthRetryLayer { cache }
    }
}

impl<S> Layer<S> for AuthRetryLayer {
    type Service = AuthRetry<S>;

    fn layer(&self, inner: S) -> AuthRetry<S> {
        Retry::new(AuthRetryPolicy::new(self.cache.clone()), inner)
    }
}

/// The [`Policy`] of [`AuthRetry`].
///
/// - `401` (or gRPC status 16 in a trailers-only response) to a request that carried a
///   token from the cache: the token is dropped if its generation is still the cached one.
///   Then the request is sent once more, which waits for the new token. A second `401` goes
///   back to the caller. When the body cannot be sent again, the `401` goes back at once,
///   but the token is still dropped so that the next request logs in.
/// - `403` (or gRPC status 7): returned as it is and logged as a warning, with no new
///   login, because only more scope can help.
/// - Everything else, errors included, is returned as it is, so no request is duplicated.
#[derive(Debug, Clone)]
pub struct AuthRetryPolicy {
    cache: TokenCache,
    replayed: bool,
}

impl AuthRetryPolicy {
    /// Creates the policy for requests authorized from `cache`.
    pub fn new(cache: TokenCache) -> Self {
        AuthRetryPolicy {
            cache,
            replayed: false,
        }
    }
}

impl<B, ResBody, E> Policy<Request<B>, Response<ResBody>, E> for AuthRetryPolicy
where
    B: ReplayableBody,
{
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        match verdict(response) {
            Verdict::Unauthenticated => {}
            Verdict::Forbidden => {
                tracing::warn!(
                    status = response.status().as_u16(),
                    method = %request.method(),
                    path = request.uri().path(),
                    "request forbidden: the token lacks the scope for it; not retried"
                );
                return None;
            }
            Verdict::Throttled | Verdict::Other => return None,
        }
        let TokenGeneration(generation) = *response.extensions().get::<TokenGeneration>()?;
        if !self.cache.source().renews() {
            tracing::debug!("401 returned to the caller: the token source cannot renew it");
            return None;
        }
        if self.replayed || !request.body().can_replay() {
            self.cache.invalidate_soon(generation);
            tracing::debug!(
                generation,
                already_replayed = self.replayed,
                "401 returned to the caller without a replay"
            );
            return None;
        }
        self.replayed = true;
        self.cache.counters().replayed();
        tracing::debug!(
            generation,
            method = %request.method(),
            path = request.uri().path(),
            "401: logging in again and replaying the request once"
        );
        let cache = self.cache.clone();
        Some(Box::pin(async move {
            cache.invalidate(generation).await;
        }))
    }

    /// Copies every request, even after the replay: tower's `Retry` calls
    /// [`retry`](Policy::retry) only for a request it has a copy of, and `retry` must see
    /// every `401` to drop the token and every `403` to log it.
    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        clone_request(request)
    }
}
