//! [`BearerAuthLayer`]: the three sub-layers composed around one token cache.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Uri};
use http_body::Body;
use tower::retry::budget::TpsBudget;
use tower_layer::Layer;
use tower_service::Service;

use crate::attach::{AttachToken, AttachTokenLayer};
use crate::auth_retry::{AuthRetry, AuthRetryLayer};
use crate::body::{DEFAULT_MAX_REPLAY_BODY, ReplayBody};
use crate::cache::{CacheConfig, TokenCache};
use crate::error::{BoxError, Error};
use crate::origin::Origin;
use crate::source::TokenSource;
use crate::throttle::{Throttle, ThrottleConfig, ThrottleLayer};

/// Layer that keeps requests authenticated: it logs in, caches the token, refreshes it,
/// replays once after a `401` and waits after a `429`.
///
/// The services it builds nest three sub-layers, outermost first:
///
/// 1. [`Throttle`]: a `429` waits for `Retry-After` plus jitter, or backs off
///    exponentially, then goes through the layers below again. It sits outside so that
///    the replay after a `401` is throttled too, and a `401` after a throttled retry still
///    gets its one replay.
/// 2. [`AuthRetry`]: a `401` drops the token that failed and sends the request once more.
/// 3. [`AttachToken`]: waits for the cache and sets the `Authorization` header. It sits
///    innermost so that every replay fetches the token anew.
///
/// Each request body is wrapped in a [`ReplayBody`], which records up to
/// `max_replay_body` bytes (64 KiB by default) as they are sent so that a replay carries
/// the same bytes. Transport errors and `5xx` responses are never retried, so the layer
/// never duplicates a `POST` that reached the server.
///
/// Every service built by one layer, and every clone of those services, shares one
/// [`TokenCache`] and one retry budget.
///
/// # Defaults
///
/// | setting | default |
/// |---|---|
/// | [`refresh_before`](Self::refresh_before) | 60 s |
/// | [`login_timeout`](Self::login_timeout) | 30 s |
/// | [`min_login_interval`](Self::min_login_interval) | 1 s |
/// | [`login_failure_backoff`](Self::login_failure_backoff) | 1 s doubling up to 60 s |
/// | [`max_token_lifetime`](Self::max_token_lifetime) | 12 h |
/// | [`throttle`](Self::throttle) | 3 attempts, at most 30 s wait, 500 ms base delay, 500 ms `Retry-After` jitter |
/// | [`retry_budget`](Self::retry_budget) | `TpsBudget::new(10 s, 10, 0.2)` |
/// | [`max_replay_body`](Self::max_replay_body) | 64 KiB |
/// | [`api_origin`](Self::api_origin) | the source's origin |
/// | [`allow_insecure_http`](Self::allow_insecure_http) | `false` |
///
/// Builder methods start a new, empty cache, so call [`cache`](Self::cache) after the last
/// of them.
///
/// # Example
///
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use resq_auth::{BearerAuthLayer, Credentials, LoginSource};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let base: http::Uri = "https://api.resq.software".parse()?;
/// let login_client = Client::builder(TokioExecutor::new()).build_http();
/// let source = LoginSource::new(login_client, base, Credentials::from_env()?);
///
/// let mut client = ServiceBuilder::new()
///     .layer(BearerAuthLayer::new(source))
///     .service(Client::builder(TokioExecutor::new()).build_http());
///
/// let request = http::Request::get("https://api.resq.software/evidence")
///     .body(Full::<Bytes>::default())?;
/// let response = client.ready().await?.call(request).await?;
/// println!("{}", response.status());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BearerAuthLayer {
    source: Arc<dyn TokenSource>,
    cache_config: CacheConfig,
    cache: TokenCache,
    throttle: ThrottleConfig,
    budget: Arc<TpsBudget>,
    max_replay_body: usize,
    origin: Option<Origin>,
    allow_http: bool,
}

impl BearerAuthLayer {
    /// Creates the layer with default settings, taking tokens from `source`.
    pub fn new(source: impl TokenSource) -> Self {
        let source: Arc<dyn TokenSource> = Arc::new(source);
        let cache_config = CacheConfig::default();
        BearerAuthLayer {
            cache: TokenCache::with_config(source.clone(), cache_config.clone()),
            origin: source.origin(),
            source,
            cache_config,
            throttle: ThrottleConfig::default(),
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            max_replay_body: DEFAULT_MAX_REPLAY_BODY,
            allow_http: false,
        }
    }

    /// Returns the token cache that every service of this layer shares, to read its
    /// [`stats`](TokenCache::stats) or [`clear`](TokenCache::clear) it.
    ///
    /// A builder method called after this starts a new cache, which the returned one does
    /// not follow, so call this after the last builder method.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Sets the refresh margin: a token is refreshed once strictly fewer than this remain.
    /// Default 60 s.
    pub fn refresh_before(self, margin: Duration) -> Self {
        self.configure(|config| config.refresh_before = margin)
    }

    /// Sets how long a login may take, `429` waits at `/login` included. Default 30 s.
    pub fn login_timeout(self, timeout: Duration) -> Self {
        self.configure(|config| config.login_timeout = timeout)
    }

    /// Sets the shortest time between the start of a login and the last successful one.
    /// Default 1 s.
    pub fn min_login_interval(self, interval: Duration) -> Self {
        self.configure(|config| config.min_login_interval = interval)
    }

    /// Sets the cooldown after a failed login, doubled per consecutive failure up to `max`,
    /// then shortened at random by up to 20%. Default 1 s up to 60 s.
    pub fn login_failure_backoff(self, initial: Duration, max: Duration) -> Self {
        self.configure(|config| {
            config.failure_backoff = initial;
            config.max_failure_backoff = max.max(initial);
        })
    }

    /// Sets the longest time a token is kept, whatever its `expires_at`. Default 12 hours.
    pub fn max_token_lifetime(self, lifetime: Duration) -> Self {
        self.configure(|config| config.max_token_lifetime = lifetime)
    }

    /// Sets how requests are retried after a `429`.
    pub fn throttle(mut self, config: ThrottleConfig) -> Self {
        self.throttle = config;
        self
    }

    /// Sets the retry budget for `429` retries, shared by every service of this layer.
    /// Default: tower's [`TpsBudget`] with a 10 s window, 10 retries per second and 20% of
    /// requests.
    pub fn retry_budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the most body bytes recorded for a replay. Default 64 KiB. A larger request is
    /// sent once, and its `401` or `429` goes back to the caller.
    pub fn max_replay_body(mut self, bytes: usize) -> Self {
        self.max_replay_body = bytes;
        self
    }

    /// Sets the API origin the token is attached to, in place of the source's.
    ///
    /// # Errors
    ///
    /// Returns a [`Config`](crate::ErrorKind::Config) error when `uri` has no scheme or host.
    pub fn api_origin(mut self, uri: &Uri) -> Result<Self, Error> {
        self.origin = Some(Origin::from_uri(uri)?);
        Ok(self)
    }

    /// Allows attaching the token to plain `http` requests for a host that is not loopback.
    /// Default `false`, in which case such requests fail with a
    /// [`Config`](crate::ErrorKind::Config) error.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    fn configure(mut self, change: impl FnOnce(&mut CacheConfig)) -> Self {
        change(&mut self.cache_config);
        self.cache_config = self.cache_config.clone().clamped();
        self.cache = TokenCache::with_config(self.source.clone(), self.cache_config.clone());
        self
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> BearerAuth<S> {
        let attach =
            AttachTokenLayer::with_origin(self.cache.clone(), self.origin.clone(), self.allow_http);
        let throttle = ThrottleLayer::with_budget(self.throttle.clone(), self.budget.clone())
            .counting_in(self.cache.clone())
            .for_origin(self.origin.clone());
        let stack =
            throttle.layer(AuthRetryLayer::new(self.cache.clone()).layer(attach.layer(inner)));
        BearerAuth {
            inner: stack,
            max_replay_body: self.max_replay_body,
        }
    }
}

/// The service built by [`BearerAuthLayer`].
///
/// It accepts `Request<B>` for any body `B` and passes `Request<ReplayBody<B>>` to the inner
/// service, which for hyper-util's client means building it with that body type (type
/// inference does this when the client is built in place). It returns the inner service's
/// `Response<ResB>` as `Response<ResponseBody<ResB>>`, for hyper-util's client
/// `Response<ResponseBody<hyper::body::Incoming>>`.
///
/// [`ResponseBody`]: crate::ResponseBody
#[derive(Debug, Clone)]
pub struct BearerAuth<S> {
    inner: Throttle<AuthRetry<AttachToken<S>>>,
    max_replay_body: usize,
}

/// Response futures of the services in this crate.
pub mod future {
    pub use crate::attach::ResponseFuture as AttachTokenFuture;

    /// Response future of [`BearerAuth`](crate::BearerAuth).
    pub type ResponseFuture<S, B> = tower::retry::future::ResponseFuture<
        crate::throttle::ThrottlePolicy,
        crate::auth_retry::AuthRetry<crate::attach::AttachToken<S>>,
        http::Request<crate::body::ReplayBody<B>>,
    >;
}

impl<S, B> Service<Request<B>> for BearerAuth<S>
where
    B: Body,
    B::Error: Into<BoxError>,
    Throttle<AuthRetry<AttachToken<S>>>: Service<Request<ReplayBody<B>>, Error = Error>,
    AttachToken<S>: Service<Request<ReplayBody<B>>, Error = Error>,
    AuthRetry<AttachToken<S>>: Service<Request<ReplayBody<B>>, Error = Error>,
{
    type Response =
        <Throttle<AuthRetry<AttachToken<S>>> as Service<Request<ReplayBody<B>>>>::Response;
    type Error = Error;
    type Future = <Throttle<AuthRetry<AttachToken<S>>> as Service<Request<ReplayBody<B>>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let max_len = self.max_replay_body;
        self.inner
            .call(request.map(|body| ReplayBody::new(body, max_len)))
    }
}
