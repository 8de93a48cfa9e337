//! A scriptable imitation of the ResQ API on loopback, for tests and examples.
//!
//! [`MockServer`] listens on `127.0.0.1` on a port the operating system picks, and serves
//! two kinds of route:
//!
//! - `POST /login` takes the JSON body `{"username": "...", "password": "..."}`. With the
//!   valid credentials it responds `200` with `{"token": "...", "expires_at": <Unix
//!   seconds>}`. With wrong ones it responds `401` with `{"error": "Invalid credentials"}`,
//!   and with a body that is not such a JSON object it responds `400`.
//! - Every other path is protected, whatever the method. A request with a valid
//!   `Authorization: Bearer <token>` header gets `200` with `{"method": "...", "path":
//!   "...", "body_len": N}`. A missing, unknown, revoked or expired token gets `401` with
//!   `WWW-Authenticate: Bearer` and `{"error": "Invalid or expired token"}`. A valid
//!   token on a path denied with [`MockServer::deny_path`] gets `403`. `GET /evidence` and
//!   `POST /admin/missions/approve` are typical paths.
//!
//! Other methods on `/login` get `405 Method Not Allowed` and are not recorded. Request
//! bodies above 16 MiB get `413`. The server speaks HTTP/1.1 only.
//!
//! The server records every protected request and counts logins, and its methods script
//! failures: failed or hand-written login responses, revoked tokens, short token
//! lifetimes, slow logins, forbidden paths and canned responses such as `429` with
//! `Retry-After`.
//!
//! # Defaults
//!
//! | setting | default | changed with |
//! | --- | --- | --- |
//! | username | `operator` | [`MockServerBuilder::credentials`] |
//! | password | `resq-mock-password` | [`MockServerBuilder::credentials`] |
//! | token lifetime | 3600 s | [`MockServerBuilder::token_lifetime`], [`MockServer::set_token_lifetime`] |
//! | login delay | none | [`MockServer::set_login_delay`] |
//!
//! # Example
//!
//! ```
//! use resq_auth::mock::MockServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = MockServer::start().await?;
//! let credentials = server.credentials();
//! assert_eq!(credentials.username(), "operator");
//! assert_eq!(server.uri("/evidence").path(), "/evidence");
//! assert_eq!(server.logins(), 0);
//! # Ok(())
//! # }
//! ```

mod routes;
mod scripted;
mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use http::Uri;
use http::uri::{Authority, Scheme};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use scripted::ScriptedResponse;
pub use state::RecordedRequest;

use crate::Credentials;
use state::Shared;

/// The default username of a [`MockServer`].
pub const DEFAULT_USERNAME: &str = "operator";
/// The default password of a [`MockServer`].
pub const DEFAULT_PASSWORD: &str = "resq-mock-password";
/// The default lifetime of the tokens a [`MockServer`] issues: one hour.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A running mock ResQ API. See the [module documentation](self) for the routes.
///
/// Clones share the server and its state. The server stops accepting connections when
/// the last clone is dropped, and each open connection closes after its current request.
/// The server runs as a task on the Tokio runtime that called [`start`](Self::start), so
/// it also stops when that runtime shuts down.
///
/// Every scripting method takes `&self`, takes effect at once and may be called from any
/// thread. The `Debug` output shows the address, the username
/// and the counters, never the password or a token.
///
/// ```
/// use http::StatusCode;
/// use resq_auth::mock::{MockServer, ScriptedResponse};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = MockServer::start().await?;
/// // The first login fails with 503, and the first protected request is throttled.
/// server.fail_next_logins(1, StatusCode::SERVICE_UNAVAILABLE);
/// server.respond_next(
///     1,
///     ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "1"),
/// );
/// assert_eq!(server.login_attempts(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MockServer {
    inner: Arc<Inner>,
}

struct Inner {
    local_addr: SocketAddr,
    authority: Authority,
    base_uri: Uri,
    shared: Arc<Shared>,
    // Dropping the sender completes the receiver, which starts the graceful shutdown.
    _shutdown: oneshot::Sender<()>,
}

/// Configures a [`MockServer`] before it starts. [`MockServer::builder`] creates one.
///
/// ```
/// use std::time::Duration;
/// use resq_auth::mock::MockServer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = MockServer::builder()
///     .credentials("dispatcher", "test-password")
///     .token_lifetime(Duration::from_secs(60))
///     .start()
///     .await?;
/// assert_eq!(server.credentials().username(), "dispatcher");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct MockServerBuilder {
    credentials: Credentials,
    token_lifetime: Duration,
}

impl MockServerBuilder {
    /// Sets the username and password that `POST /login` accepts.
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Credentials::new(username, password);
        self
    }

    /// Sets the lifetime of the tokens the server issues. The default is one hour.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Binds `127.0.0.1` on a free port and starts serving in a spawned Tokio task.
    ///
    /// # Errors
    ///
    /// Returns the I/O error, with the address in the message, when the listener cannot
    /// be bound or its address cannot be read.
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime.
    pub async fn start(self) -> io::Result<MockServer> {
        let bind_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = TcpListener::bind(bind_addr).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("failed to bind the mock ResQ API to {bind_addr}: {error}"),
            )
        })?;
        let local_addr = listener.local_addr().map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("failed to read the address of the mock ResQ API listener: {error}"),
            )
        })?;
        let authority = Authority::try_from(local_addr.to_string()).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("listener address {local_addr} is not a valid URI authority: {error}"),
            )
        })?;
        let base_uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("failed to build the base URI for {local_addr}: {error}"),
                )
            })?;

        let shared = Arc::new(Shared::new(self.credentials, self.token_lifetime));
        let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
        let serve = axum::serve(listener, routes::router(Arc::clone(&shared)))
            .with_graceful_shutdown(async move {
                // Completes with an error once every MockServer clone is dropped.
                let _ = shutdown_receiver.await;
            });
        tokio::spawn(async move {
            tracing::debug!(%local_addr, "mock ResQ API started");
            match serve.await {
                Ok(()) => tracing::debug!(%local_addr, "mock ResQ API stopped"),
                Err(error) => tracing::error!(%local_addr, %error, "mock ResQ API failed"),
            }
        });

        Ok(MockServer {
            inner: Arc::new(Inner {
                local_addr,
                authority,
                base_uri,
                shared,
                _shutdown: shutdown_sender,
            }),
        })
    }
}

impl MockServer {
    /// Starts a server with the default credentials and token lifetime.
    ///
    /// # Errors
    ///
    /// Returns the I/O error when the listener cannot be bound.
    ///
    /// # Panics
    ///
    /// Panics if called outside a Tokio runtime.
    pub async fn start() -> io::Result<MockServer> {
        MockServer::builder().start().await
    }

    /// Creates a builder with the default settings.
    pub fn builder() -> MockServerBuilder {
        MockServerBuilder {
            credentials: Credentials::new(DEFAULT_USERNAME, DEFAULT_PASSWORD),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }

    /// Returns the socket address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Returns the base URI, `http://127.0.0.1:PORT/`.
    ///
    /// Its path is `/`, which the `http` crate prints as a trailing slash. Use
    /// [`uri`](Self::uri) to build the URI of a path.
    pub fn base_uri(&self) -> Uri {
        self.inner.base_uri.clone()
    }

    /// Returns the URI of `path_and_query` on this server, for example
    /// `uri("/evidence?page=2")`. A missing leading `/` is added.
    ///
    /// # Panics
    ///
    /// Panics if `path_and_query` is not a valid URI path and query, for example
    /// because it contains a space.
    pub fn uri(&self, path_and_query: &str) -> Uri {
        let path_and_query = with_leading_slash(path_and_query);
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.inner.authority.clone())
            .path_and_query(path_and_query.as_str())
            .build()
            .unwrap_or_else(|error| {
                panic!("MockServer::uri: invalid path and query {path_and_query:?}: {error}")
            })
    }

    /// Returns the credentials that `POST /login` accepts.
    pub fn credentials(&self) -> Credentials {
        self.inner.shared.lock().credentials.clone()
    }

    /// Replaces the credentials that `POST /login` accepts, as an operator does when
    /// rotating them. Tokens issued so far stay valid until revoked.
    pub fn set_credentials(&self, username: &str, password: &str) {
        self.inner.shared.lock().credentials = Credentials::new(username, password);
    }

    /// Revokes every token issued so far, so that protected requests carrying one get
    /// `401`. Tokens issued afterwards are valid.
    pub fn revoke_all_tokens(&self) {
        self.inner.shared.lock().revoke_all_tokens();
    }

    /// Makes the next `count` logins respond with `status` and the JSON body
    /// `{"error": "<canonical reason>"}`, whatever their body.
    ///
    /// Failures and [`script_next_login`](Self::script_next_login) responses share one
    /// first-in, first-out queue.
    pub fn fail_next_logins(&self, count: usize, status: StatusCode) {
        let response = routes::failed_login_script(status);
        self.inner.shared.lock().login_scripts.push(response, count);
    }

    /// Makes the next login not yet scripted respond with exactly `response`, whatever
    /// its body.
    ///
    /// Each call queues one response, and logins take them in the order they were queued.
    /// A scripted `200` issues no token and does not count in [`logins`](Self::logins).
    pub fn script_next_login(&self, response: ScriptedResponse) {
        self.inner.shared.lock().login_scripts.push(response, 1);
    }

    /// Makes every login received from now on wait `delay` on the Tokio clock before it
    /// responds. A zero delay, the default, responds at once.
    ///
    /// The login counts in [`login_attempts`](Self::login_attempts) when it arrives, and
    /// its token is issued after the delay.
    pub fn set_login_delay(&self, delay: Duration) {
        self.inner.shared.lock().login_delay = delay;
    }

    /// Sets the lifetime of the tokens issued from now on.
    ///
    /// The login response carries `expires_at` = the current Unix time in whole seconds
    /// plus the lifetime rounded up to whole seconds. The server rejects the token once the
    /// lifetime has passed on the Tokio clock ([`tokio::time::Instant`]), so tests with
    /// paused time can expire it with `tokio::time::advance` (Tokio's `test-util` feature). A zero lifetime issues
    /// tokens that are rejected at once.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.inner.shared.lock().token_lifetime = lifetime;
    }

    /// Makes the next `count` protected requests receive `response`, whatever their
    /// token or path. They are still recorded in [`requests`](Self::requests).
    ///
    /// Calls queue up first-in, first-out: after `count` requests the next queued
    /// response applies, then the normal handling.
    pub fn respond_next(&self, count: usize, response: ScriptedResponse) {
        self.inner
            .shared
            .lock()
            .request_scripts
            .push(response, count);
    }

    /// Drops every queued script of [`respond_next`](Self::respond_next),
    /// [`fail_next_logins`](Self::fail_next_logins) and
    /// [`script_next_login`](Self::script_next_login), so that every request gets the
    /// normal handling again.
    pub fn clear_scripts(&self) {
        let mut state = self.inner.shared.lock();
        state.request_scripts.clear();
        state.login_scripts.clear();
    }

    /// Makes requests to `path` with a valid token receive `403` with
    /// `{"error": "Forbidden: token lacks the scope for <path>"}`.
    ///
    /// `path` is compared with the request path exactly, without the query. A missing
    /// leading `/` is added. An invalid token still gets `401`.
    pub fn deny_path(&self, path: &str) {
        let path = with_leading_slash(path);
        self.inner.shared.lock().denied_paths.insert(path);
    }

    /// Undoes [`deny_path`](Self::deny_path) for `path`.
    pub fn allow_path(&self, path: &str) {
        let path = with_leading_slash(path);
        self.inner.shared.lock().denied_paths.remove(&path);
    }

    /// Returns the number of `POST /login` requests received, whatever their outcome.
    pub fn login_attempts(&self) -> usize {
        self.inner.shared.lock().login_attempts
    }

    /// Returns the number of logins that issued a token.
    pub fn logins(&self) -> usize {
        self.inner.shared.lock().issued_tokens.len()
    }

    /// Returns every token issued, in issue order, including revoked and expired ones.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner.shared.lock().issued_tokens.clone()
    }

    /// Returns every protected request received, in the order the server responded to them,
    /// with the full body.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.shared.lock().requests.clone()
    }

    /// Returns the number of protected requests that carried `token`.
    pub fn requests_with_token(&self, token: &str) -> usize {
        let state = self.inner.shared.lock();
        state
            .requests
            .iter()
            .filter(|request| request.token.as_deref() == Some(token))
            .count()
    }
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (login_attempts, logins, requests) = {
            let state = self.inner.shared.lock();
            (
                state.login_attempts,
                state.issued_tokens.len(),
                state.requests.len(),
            )
        };
        f.debug_struct("MockServer")
            .field("local_addr", &self.inner.local_addr)
            .field("username", &self.inner.shared.lock().credentials.username())
            .field("login_attempts", &login_attempts)
            .field("logins", &logins)
            .field("requests", &requests)
            .finish_non_exhaustive()
    }
}

fn with_leading_slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}
