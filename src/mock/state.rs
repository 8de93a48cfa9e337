//! The state that the mock server's handlers and the [`MockServer`](super::MockServer)
//! handles share: credentials, scripts, issued tokens, counters and recorded requests.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::time::Instant;

use super::scripted::ScriptQueue;
use crate::Credentials;

/// One request to a protected path, and the status the mock server responded with.
///
/// [`MockServer::requests`](super::MockServer::requests) returns these in arrival order.
/// The `Debug` output shows whether a token was present but never the token itself, and
/// shows the body length instead of the body.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The request method.
    pub method: Method,
    /// The request path, without the query.
    pub path: String,
    /// The query string without the leading `?`, if the request URI has one.
    pub query: Option<String>,
    /// The bearer token from the `Authorization` header, or `None` when the header is
    /// missing or does not have the form `Bearer <token>`.
    pub token: Option<String>,
    /// The whole request body. It is empty when the body could not be read, for example
    /// because it exceeds the 16 MiB limit.
    pub body: Bytes,
    /// The status code the mock server responded with.
    pub status: StatusCode,
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.token.as_ref().map(|_| "[redacted]");
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("token", &token)
            .field("body_len", &self.body.len())
            .field("status", &self.status)
            .finish()
    }
}

/// The state of a mock server behind one lock, shared by its clones and handlers.
pub(super) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub(super) fn new(credentials: Credentials, token_lifetime: Duration) -> Self {
        Shared {
            state: Mutex::new(State {
                credentials,
                token_lifetime,
                login_delay: Duration::ZERO,
                login_scripts: ScriptQueue::default(),
                request_scripts: ScriptQueue::default(),
                denied_paths: HashSet::new(),
                tokens: HashMap::new(),
                issued_tokens: Vec::new(),
                login_attempts: 0,
                requests: Vec::new(),
            }),
        }
    }

    /// Locks the mutable state. A poisoned lock is used as it is, so that a test thread
    /// that panicked while holding it does not make every later call panic too.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The mutable state. Callers hold the lock only for short, synchronous updates and
/// never across an `.await`.
pub(super) struct State {
    pub(super) credentials: Credentials,
    pub(super) token_lifetime: Duration,
    pub(super) login_delay: Duration,
    pub(super) login_scripts: ScriptQueue,
    pub(super) request_scripts: ScriptQueue,
    pub(super) denied_paths: HashSet<String>,
    tokens: HashMap<String, TokenRecord>,
    pub(super) issued_tokens: Vec<String>,
    pub(super) login_attempts: usize,
    pub(super) requests: Vec<RecordedRequest>,
}

/// The server-side view of one issued token.
struct TokenRecord {
    /// The instant from which the token is rejected, or `None` when the lifetime is too
    /// large to add to the current instant.
    expires: Option<Instant>,
    revoked: bool,
}

/// A token issued by a successful login, and the `expires_at` value sent with it.
pub(super) struct IssuedToken {
    pub(super) token: String,
    pub(super) expires_at: i64,
}

impl State {
    /// Issues a new token with the current token lifetime.
    pub(super) fn issue_token(&mut self) -> IssuedToken {
        let lifetime = self.token_lifetime;
        let sequence = self.issued_tokens.len() + 1;
        let token = format!("mock-{sequence}-{:032x}", fastrand::u128(..));

        self.tokens.insert(
            token.clone(),
            TokenRecord {
                expires: Instant::now().checked_add(lifetime),
                revoked: false,
            },
        );
        self.issued_tokens.push(token.clone());

        IssuedToken {
            token,
            expires_at: expires_at_unix(unix_now(), lifetime),
        }
    }

    /// Returns whether `token` was issued by this server, is not revoked and has not
    /// expired on the Tokio clock.
    pub(super) fn is_valid_token(&self, token: &str) -> bool {
        let now = Instant::now();
        self.tokens.get(token).is_some_and(|record| {
            !record.revoked && record.expires.is_none_or(|expires| now < expires)
        })
    }

    pub(super) fn revoke_all_tokens(&mut self) {
        for record in self.tokens.values_mut() {
            record.revoked = true;
        }
    }
}

/// Returns the current Unix time in whole seconds, rounded down. A system clock set
/// before 1970 counts as 0.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_secs())
}

/// Computes `expires_at`: `now_unix` plus `lifetime` rounded up to whole seconds,
/// capped at `i64::MAX` so that clients that parse it as a signed integer accept it.
pub(super) fn expires_at_unix(now_unix: u64, lifetime: Duration) -> i64 {
    let lifetime_secs = lifetime
        .as_secs()
        .saturating_add(u64::from(lifetime.subsec_nanos() > 0));
    let expires_at = now_unix.saturating_add(lifetime_secs);
    i64::try_from(expires_at).unwrap_or(i64::MAX)
}
