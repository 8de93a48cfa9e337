//! `POST {base}/login` with a username and password.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;
use zeroize::Zeroizing;

use super::login_response::{error_text, parse_grant};
use super::{TokenFuture, TokenSource};
use crate::credentials::Credentials;
use crate::error::{BoxError, Error, ErrorKind};
use crate::origin::Origin;
use crate::throttle::{Decision, ThrottleConfig, decide, retry_after};
use crate::token::Token;

/// The default maximum size of a `/login` response body: 64 KiB.
const DEFAULT_MAX_RESPONSE_BODY: usize = 64 * 1024;

/// A [`TokenSource`] that logs in with a username and password.
///
/// It sends `POST {base}/login` with `{"username": ..., "password": ...}` through `client`,
/// any HTTP service such as hyper-util's legacy `Client` with a `Full<Bytes>` body, and
/// expects `200` with `{"token": ..., "expires_at": <Unix seconds>}`.
///
/// - `401` gives an [`InvalidCredentials`](ErrorKind::InvalidCredentials) error, never
///   retried.
/// - `429` is retried after the wait that [`ThrottleConfig`] computes from `Retry-After`.
///   When attempts run out or the wait is too long, it gives a
///   [`LoginStatus`](ErrorKind::LoginStatus) error.
/// - Any other status gives a [`LoginStatus`](ErrorKind::LoginStatus) error.
/// - A `200` body that is not a valid login response, or one larger than 64 KiB, gives an
///   [`InvalidLoginResponse`](ErrorKind::InvalidLoginResponse) error that names the field.
///   The rules for unusual `expires_at` values: a missing or `null` value means no known
///   expiry; a value above 10^11 is read as milliseconds; a value at or before the current
///   time, or one that is not a number, is an error.
///
/// Credentials go only over `https`, or over plain `http` to a loopback host; use
/// [`allow_insecure_http`](LoginSource::allow_insecure_http) for anything else.
///
/// ```
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use resq_auth::{Credentials, LoginSource};
///
/// let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let source = LoginSource::new(
///     client,
///     "https://api.resq.software".parse()?,
///     Credentials::new("operator", "correct horse battery staple"),
/// );
/// # let _ = source;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LoginSource<C> {
    client: C,
    target: Result<(Uri, Origin), Error>,
    credentials: Arc<RwLock<Credentials>>,
    allow_http: bool,
    max_response_body: usize,
    throttle: ThrottleConfig,
}

#[derive(Serialize)]
struct LoginBody<'a> {
    username: &'a str,
    password: &'a str,
}

impl<C> LoginSource<C> {
    /// Creates the source. `base_uri` is the API root, such as `https://api.resq.software`;
    /// the login goes to `{base_uri}/login`.
    ///
    /// An invalid `base_uri` is reported as a [`Config`](ErrorKind::Config) error by the
    /// first login.
    pub fn new(client: C, base_uri: Uri, credentials: Credentials) -> Self {
        LoginSource {
            client,
            target: login_target(&base_uri),
            credentials: Arc::new(RwLock::new(credentials)),
            allow_http: false,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            throttle: ThrottleConfig::default(),
        }
    }

    /// Allows sending credentials over plain `http` to hosts that are not loopback.
    /// Default `false`.
    #[must_use]
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Sets the largest login response body accepted, in bytes. Default 64 KiB.
    #[must_use]
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// Sets how a `429` from `/login` is retried. Default [`ThrottleConfig::default`].
    #[must_use]
    pub fn throttle(mut self, config: ThrottleConfig) -> Self {
        self.throttle = config;
        self
    }

    /// Returns a handle that replaces the credentials of this source, and of the layer it
    /// is moved into, for every later login.
    pub fn credentials_handle(&self) -> CredentialsHandle {
        CredentialsHandle {
            credentials: Arc::clone(&self.credentials),
        }
    }

    fn credentials(&self) -> Credentials {
        match self.credentials.read() {
            Ok(credentials) => credentials.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A handle that replaces the credentials of a running [`LoginSource`], for rotation or
/// after a suspected exposure.
///
/// Logins that start afterwards use the new credentials. To stop using the current token
/// too, call [`TokenCache::clear`](crate::TokenCache::clear) after
/// [`replace`](CredentialsHandle::replace).
///
/// ```no_run
/// # use resq_auth::{BearerAuthLayer, Credentials, LoginSource};
/// # async fn rotate<C>(source: LoginSource<C>) where LoginSource<C>: resq_auth::TokenSource {
/// let handle = source.credentials_handle();
/// let layer = BearerAuthLayer::new(source);
/// // ... later, after the password was rotated on the server:
/// handle.replace(Credentials::new("operator", "new password"));
/// layer.cache().clear().await;
/// # }
/// ```
#[derive(Clone)]
pub struct CredentialsHandle {
    credentials: Arc<RwLock<Credentials>>,
}

impl CredentialsHandle {
    /// Replaces the credentials for every later login.
    pub fn replace(&self, credentials: Credentials) {
        let username = credentials.username().to_owned();
        match self.credentials.write() {
            Ok(mut current) => *current = credentials,
            Err(poisoned) => *poisoned.into_inner() = credentials,
        }
        tracing::info!(username = %username, "login credentials replaced");
    }
}

impl fmt::Debug for CredentialsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let username = match self.credentials.read() {
            Ok(credentials) => credentials.username().to_owned(),
            Err(poisoned) => poisoned.into_inner().username().to_owned(),
        };
        f.debug_struct("CredentialsHandle")
            .field("username", &username)
            .finish_non_exhaustive()
    }
}

/// Builds `{base}/login`, keeping any path prefix of the base.
fn login_target(base: &Uri) -> Result<(Uri, Origin), Error> {
    let origin = Origin::from_uri(base)?;
    let prefix = base.path().trim_end_matches('/');
    let uri = Uri::builder()
        .scheme(base.scheme_str().unwrap_or("https"))
        .authority(base.authority().map_or("", |authority| authority.as_str()))
        .path_and_query(format!("{prefix}/login"))
        .build()
        .map_err(|error| {
            Error::config(format!("cannot build the login URI from `{base}`: {error}"))
        })?;
    Ok((uri, origin))
}

impl<C, B> LoginSource<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn login(&self) -> Result<Token, Error> {
        let (uri, origin) = self.target.clone()?;
        origin.check_transport(self.allow_http)?;
        let credentials = self.credentials();
        let body = login_body(&credentials)?;
        let mut retries = 0;
        loop {
            let (response, received_at, now) = self.send(&uri, body.clone()).await?;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                let mut rng = fastrand::Rng::new();
                let decision = decide(response.headers(), retries, &self.throttle, now, &mut rng);
                if let Decision::Wait(wait) = decision {
                    if retries + 1 < self.throttle.max_attempts {
                        retries += 1;
                        tracing::debug!(
                            delay_seconds = wait.as_secs_f64(),
                            attempt = retries + 1,
                            "login throttled (429): waiting before trying again"
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            return self
                .read_response(&uri, &credentials, response, received_at, now)
                .await;
        }
    }

    async fn send(
        &self,
        uri: &Uri,
        body: Bytes,
    ) -> Result<(Response<B>, Instant, SystemTime), Error> {
        let request = Request::post(uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|error| transport_error(uri, error))?;
        let response = self
            .client
            .clone()
            .oneshot(request)
            .await
            .map_err(|error| transport_error(uri, error))?;
        Ok((response, Instant::now(), SystemTime::now()))
    }

    async fn read_response(
        &self,
        uri: &Uri,
        credentials: &Credentials,
        response: Response<B>,
        received_at: Instant,
        now: SystemTime,
    ) -> Result<Token, Error> {
        let status = response.status();
        let requested_wait = retry_after(response.headers(), now);
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let body = self.read_body(uri, status, response.into_body()).await?;
        match status {
            StatusCode::OK => {
                let grant = parse_grant(&body, now).map_err(|invalid| {
                    Error::new(
                        ErrorKind::InvalidLoginResponse,
                        format!(
                            "login response from {uri} is invalid: {} (content type {content_type})",
                            invalid.0
                        ),
                    )
                })?;
                Ok(Token::received(grant.token, grant.lifetime, received_at))
            }
            StatusCode::UNAUTHORIZED => {
                let reason = error_text(&body, credentials.expose_password())
                    .unwrap_or_else(|| "no reason given".to_owned());
                Err(Error::new(
                    ErrorKind::InvalidCredentials,
                    format!(
                        "login as `{}` was rejected by {uri} with 401 ({reason}); check the \
                         username and password (RESQ_USERNAME and RESQ_PASSWORD when read from \
                         the environment), or ask an administrator whether they were rotated",
                        credentials.username()
                    ),
                )
                .with_status(status))
            }
            _ => {
                let reason = error_text(&body, credentials.expose_password())
                    .map(|text| format!(" ({text})"))
                    .unwrap_or_default();
                let error = Error::new(
                    ErrorKind::LoginStatus,
                    format!(
                        "login at {uri} failed with status {status}{reason}; the token cache \
                         tries again after a cooldown"
                    ),
                )
                .with_status(status);
                // A `Retry-After` here requests a longer cooldown from the token cache.
                Err(match requested_wait {
                    Some(wait) if status == StatusCode::TOO_MANY_REQUESTS && !wait.is_zero() => {
                        error.with_retry_in(wait)
                    }
                    _ => error,
                })
            }
        }
    }

    async fn read_body(&self, uri: &Uri, status: StatusCode, body: B) -> Result<Bytes, Error> {
        let limit = self.max_response_body;
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Error::new(
                ErrorKind::InvalidLoginResponse,
                format!(
                    "login response from {uri} (status {status}) is larger than {limit} bytes; \
                     check that the base URI points at the ResQ API, or raise \
                     max_response_body"
                ),
            )),
            Err(error) => Err(Error::new(
                ErrorKind::LoginTransport,
                format!("reading the login response from {uri} failed: {error}"),
            )
            .with_source(error)),
        }
    }
}

/// Serializes the login body into memory that is zeroized when the last copy is dropped.
fn login_body(credentials: &Credentials) -> Result<Bytes, Error> {
    let body = LoginBody {
        username: credentials.username(),
        password: credentials.expose_password(),
    };
    let mut buffer = Zeroizing::new(Vec::with_capacity(
        64 + 6 * (body.username.len() + body.password.len()),
    ));
    serde_json::to_writer(&mut *buffer, &body)
        .map_err(|error| Error::config(format!("cannot encode the login body: {error}")))?;
    Ok(Bytes::from_owner(buffer))
}

fn transport_error(uri: &Uri, error: impl Into<BoxError>) -> Error {
    let error = error.into();
    Error::new(
        ErrorKind::LoginTransport,
        format!("login request to {uri} failed: {error}; check that the API is reachable"),
    )
    .with_source(error)
}

impl<C, B> TokenSource for LoginSource<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn fetch(&self) -> TokenFuture<'_> {
        Box::pin(self.login())
    }

    fn origin(&self) -> Option<Origin> {
        self.target.as_ref().ok().map(|(_, origin)| origin.clone())
    }
}

impl<C> fmt::Debug for LoginSource<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("LoginSource");
        match &self.target {
            Ok((uri, _)) => debug.field("login_uri", &format_args!("{uri}")),
            Err(error) => debug.field("login_uri", &format_args!("invalid: {error}")),
        };
        debug
            .field("credentials", &self.credentials())
            .field("allow_insecure_http", &self.allow_http)
            .field("max_response_body", &self.max_response_body)
            .finish_non_exhaustive()
    }
}
