//! The error type of the layered service and of token sources.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// A boxed error, the usual currency of tower middleware.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The error returned by [`BearerAuth`](crate::BearerAuth), by the sub-layers and by
/// [`TokenSource`](crate::TokenSource)s.
///
/// Match on [`Error::kind`] or use the `is_*` methods to tell the cases apart. The message
/// names the value that failed and what to do next. It never contains a token or a password.
///
/// `Error` is cheap to clone because every caller that waited on one failed login receives
/// the same error.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    status: Option<StatusCode>,
    retry_in: Option<Duration>,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

/// The category of an [`Error`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `/login` responded with `401`: the username or password is wrong or was revoked.
    /// Retrying cannot help until the credentials change.
    InvalidCredentials,
    /// `/login` responded with a status other than `200` and `401`, for example `500` or a `429`
    /// that outlasted the retry limits. [`Error::status`] returns it.
    LoginStatus,
    /// `/login` did not respond within the login timeout.
    LoginTimeout,
    /// The login request could not be sent or its response could not be read, for example
    /// because the connection was refused or reset.
    LoginTransport,
    /// `/login` responded with `200` and a body that is not a valid login response: not JSON, too
    /// large, no `token`, or an unusable `expires_at`.
    InvalidLoginResponse,
    /// The configuration is invalid: a missing environment variable, a base URI that is not
    /// absolute, or plain `http` to a host that is not loopback.
    Config,
    /// The inner service failed. [`Error::source`](std::error::Error::source) returns its error.
    Inner,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                status: None,
                retry_in: None,
                source: None,
            }),
        }
    }

    /// Wraps an error of the inner service.
    pub(crate) fn inner(source: impl Into<BoxError>) -> Self {
        Error::new(ErrorKind::Inner, "the inner service failed").with_source(source)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(Arc::from(source.into()));
        self
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_retry_in(mut self, retry_in: Duration) -> Self {
        self.inner.retry_in = Some(retry_in);
        self
    }

    /// Creates an error for a custom [`TokenSource`](crate::TokenSource).
    ///
    /// The message must not contain a secret.
    pub fn from_source(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::new(kind, message)
    }

    /// Returns the category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Returns `true` when `/login` rejected the credentials.
    pub fn is_invalid_credentials(&self) -> bool {
        self.inner.kind == ErrorKind::InvalidCredentials
    }

    /// Returns `true` for every failure to obtain a token: rejected credentials, a failing
    /// login endpoint, a timeout, a transport error or an invalid login response.
    pub fn is_login(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::InvalidCredentials
                | ErrorKind::LoginStatus
                | ErrorKind::LoginTimeout
                | ErrorKind::LoginTransport
                | ErrorKind::InvalidLoginResponse
        )
    }

    /// Returns `true` when the login timed out.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::LoginTimeout
    }

    /// Returns `true` when the error came from the inner service, which
    /// [`source`](std::error::Error::source) then returns.
    pub fn is_inner(&self) -> bool {
        self.inner.kind == ErrorKind::Inner
    }

    /// Returns `true` when the configuration is invalid.
    pub fn is_config(&self) -> bool {
        self.inner.kind == ErrorKind::Config
    }

    /// Returns the HTTP status that `/login` responded with, if the error comes from one.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// Returns how long the token cache waits before it tries to log in again.
    ///
    /// Set on errors that callers receive while the cache cools down after a failed login.
    pub fn retry_in(&self) -> Option<Duration> {
        self.inner.retry_in
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Error");
        debug.field("kind", &self.inner.kind);
        debug.field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            debug.field("status", &status);
        }
        if let Some(retry_in) = self.inner.retry_in {
            debug.field("retry_in", &retry_in);
        }
        if let Some(source) = &self.inner.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(retry_in) = self.inner.retry_in {
            write!(
                f,
                " (next login attempt in {:.1} s)",
                retry_in.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_error_is_reachable_as_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = Error::inner(io);

        assert!(error.is_inner());
        let source = error.source().expect("source");
        let io = source.downcast_ref::<std::io::Error>().expect("io error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn retry_in_appears_in_display() {
        let error = Error::new(ErrorKind::LoginStatus, "login failed with status 500")
            .with_retry_in(Duration::from_millis(1500));

        assert_eq!(
            error.to_string(),
            "login failed with status 500 (next login attempt in 1.5 s)"
        );
    }
}
