//! Token sources: the [`TokenSource`] trait and its two implementations.

mod login;
mod login_response;
#[cfg(test)]
mod login_response_proptests;
mod static_token;

use std::future::Future;
use std::pin::Pin;

pub use login::{CredentialsHandle, LoginSource};
pub use static_token::{StaticToken, TOKEN_VAR};

use crate::error::Error;
use crate::origin::Origin;
use crate::token::Token;

/// The future returned by [`TokenSource::fetch`].
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, Error>> + Send + 'a>>;

/// A way to obtain a bearer token.
///
/// The token cache calls [`fetch`](TokenSource::fetch) at most once at a time, inside a task
/// of its own with a timeout, and shares the result with every caller that waits for it.
/// Implementations therefore need no caching of their own. The one exception is
/// [`TokenCache::clear`](crate::TokenCache::clear), which may start a fetch while an
/// earlier one still runs, so a source must tolerate two concurrent calls.
///
/// ```
/// use std::time::Duration;
/// use resq_auth::{Error, Token, TokenFuture, TokenSource};
///
/// #[derive(Debug)]
/// struct Vault;
///
/// impl TokenSource for Vault {
///     fn fetch(&self) -> TokenFuture<'_> {
///         Box::pin(async {
///             // Read the token from a secret store here.
///             Ok(Token::new("service-token").with_lifetime(Duration::from_secs(3600)))
///         })
///     }
/// }
/// ```
pub trait TokenSource: Send + Sync + std::fmt::Debug + 'static {
    /// Obtains a new token.
    ///
    /// # Errors
    ///
    /// Returns an [`Error`] whose [`kind`](Error::kind) states why no token was obtained.
    /// The message must not contain a secret.
    fn fetch(&self) -> TokenFuture<'_>;

    /// Returns the API origin (scheme, host and port) that tokens of this source are for.
    ///
    /// The layer attaches the token only to requests for this origin. `None`, the default,
    /// means that the source does not know its origin, so the layer attaches the token to
    /// every request unless an origin is set on the layer. Even then, a plain `http`
    /// request for a host that is not loopback fails with a
    /// [`Config`](crate::ErrorKind::Config) error unless the layer allows insecure http.
    fn origin(&self) -> Option<Origin> {
        None
    }

    /// Returns `true`, the default, when a new fetch can return a different token.
    ///
    /// A source that returns the same token every time, such as [`StaticToken`], returns
    /// `false`. The layer then returns a `401` at once, because fetching the same token and
    /// replaying the request cannot help.
    fn renews(&self) -> bool {
        true
    }
}
