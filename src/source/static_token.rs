//! A fixed service token issued by an administrator.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::{TokenFuture, TokenSource};
use crate::credentials::read_env;
use crate::error::Error;
use crate::origin::Origin;
use crate::token::Token;

/// The environment variable that [`StaticToken::from_env`] reads.
pub const TOKEN_VAR: &str = "RESQ_TOKEN";

/// A [`TokenSource`] that returns the same token every time.
///
/// Use it for the static service tokens that an administrator issues for ingestion
/// endpoints such as telemetry batches and uploads. The token has no known expiry. A `401`
/// goes back to the caller at once, without a replay, because only a new token from the
/// administrator can help.
///
/// Without [`with_origin`](StaticToken::with_origin) (or
/// [`BearerAuthLayer::api_origin`](crate::BearerAuthLayer::api_origin)) the layer attaches
/// the token to every request that passes through it, except plain `http` to a host that
/// is not loopback, which fails with a [`Config`](crate::ErrorKind::Config) error.
///
/// ```
/// use resq_auth::StaticToken;
///
/// let source = StaticToken::new("svc-ingest-token")
///     .with_origin("https://api.resq.software".parse()?)?;
/// assert!(!format!("{source:?}").contains("svc-ingest"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct StaticToken {
    value: SecretString,
    origin: Option<Origin>,
}

impl StaticToken {
    /// Creates a source that always returns `token`.
    pub fn new(token: impl Into<String>) -> Self {
        StaticToken {
            value: SecretString::from(token.into()),
            origin: None,
        }
    }

    /// Reads the token from `RESQ_TOKEN`.
    ///
    /// # Errors
    ///
    /// Returns a [`Config`](crate::ErrorKind::Config) error that names the variable when it
    /// is unset, empty or not valid UTF-8.
    pub fn from_env() -> Result<Self, Error> {
        let value = read_env(TOKEN_VAR, "a ResQ service token")?;
        Ok(StaticToken {
            value,
            origin: None,
        })
    }

    /// Restricts the token to requests for the origin of `uri` (scheme, host and port).
    ///
    /// # Errors
    ///
    /// Returns a [`Config`](crate::ErrorKind::Config) error when `uri` has no scheme or host.
    pub fn with_origin(mut self, uri: http::Uri) -> Result<Self, Error> {
        self.origin = Some(Origin::from_uri(&uri)?);
        Ok(self)
    }
}

impl TokenSource for StaticToken {
    fn fetch(&self) -> TokenFuture<'_> {
        let token = Token::new(self.value.expose_secret());
        Box::pin(async move { Ok(token) })
    }

    fn origin(&self) -> Option<Origin> {
        self.origin.clone()
    }

    fn renews(&self) -> bool {
        false
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken")
            .field("value", &"[redacted]")
            .field("origin", &self.origin)
            .finish()
    }
}
