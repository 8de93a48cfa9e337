//! The bearer token and how long it lives.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

/// A bearer token and, when known, how long it stays valid.
///
/// The value lives in a [`SecretString`], is zeroized on drop and prints as `[redacted]`
/// in `Debug` output.
///
/// The lifetime counts on the monotonic clock from the moment the `Token` is created, so a
/// [`TokenSource`](crate::TokenSource) creates it as soon as the response arrives. A later
/// change of the wall clock does not move the expiry.
///
/// ```
/// use std::time::Duration;
/// use resq_auth::Token;
///
/// let token = Token::new("eyJhbGciOi...").with_lifetime(Duration::from_secs(900));
/// assert_eq!(token.lifetime(), Some(Duration::from_secs(900)));
/// assert!(!format!("{token:?}").contains("eyJ"));
/// ```
#[derive(Clone)]
pub struct Token {
    value: SecretString,
    lifetime: Option<Duration>,
    received_at: Instant,
}

impl Token {
    /// Creates a token with no known expiry.
    ///
    /// The token cache keeps such a token for at most its maximum token lifetime (12 hours
    /// by default) and drops it earlier when a request with it gets `401`.
    pub fn new(value: impl Into<String>) -> Self {
        Token {
            value: SecretString::from(value.into()),
            lifetime: None,
            received_at: Instant::now(),
        }
    }

    /// Creates a token that arrived at `received_at`.
    pub(crate) fn received(
        value: String,
        lifetime: Option<Duration>,
        received_at: Instant,
    ) -> Self {
        Token {
            value: SecretString::from(value),
            lifetime,
            received_at,
        }
    }

    /// Sets how long the token stays valid, counted from when it was created.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// Returns the secret value, which the caller must not log.
    pub fn secret(&self) -> &SecretString {
        &self.value
    }

    /// Returns the lifetime the token had when it was created, if known.
    pub fn lifetime(&self) -> Option<Duration> {
        self.lifetime
    }

    /// Returns the monotonic instant the token was created at.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    pub(crate) fn expose(&self) -> &str {
        self.value.expose_secret()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[redacted]")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}
