//! A cached token with its generation and the instants at which it needs refreshing and
//! expires.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::config::{CacheConfig, LONGEST};
use crate::error::{Error, ErrorKind};
use crate::token::Token;

/// The `Authorization` value to attach and the generation of the token inside it.
#[derive(Clone, Debug)]
pub(crate) struct Authorization {
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) authorization: Authorization,
    pub(crate) refresh_at: Instant,
    pub(crate) expires_at: Instant,
    pub(crate) lifetime: Duration,
}

impl Entry {
    /// Builds the entry for a new token.
    ///
    /// The lifetime is the token's own, or the maximum token lifetime when it is unknown or
    /// longer. A token that lives longer than `refresh_before` is refreshed once fewer than
    /// `refresh_before` remain. A shorter-lived token would be due for refresh at once, so
    /// its margin shrinks to half its lifetime.
    pub(crate) fn new(token: &Token, generation: u64, config: &CacheConfig) -> Result<Self, Error> {
        let lifetime = token
            .lifetime()
            .unwrap_or(config.max_token_lifetime)
            .min(config.max_token_lifetime);
        let margin = if lifetime > config.refresh_before {
            config.refresh_before
        } else {
            lifetime / 2
        };
        let received_at = token.received_at();
        let expires_at = received_at
            .checked_add(lifetime)
            .unwrap_or_else(|| received_at + LONGEST);
        Ok(Entry {
            authorization: Authorization {
                header: bearer_header(token)?,
                generation,
            },
            refresh_at: expires_at - margin,
            expires_at,
            lifetime,
        })
    }

    /// Returns `true` while the token may be sent.
    pub(crate) fn is_valid(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// Returns `true` while the token is valid and needs no refresh: exactly
    /// `refresh_before` left is not yet fewer than `refresh_before`.
    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now <= self.refresh_at && now < self.expires_at
    }
}

/// Builds `Bearer <token>` as a sensitive header value whose bytes are zeroized when the
/// last copy is dropped.
fn bearer_header(token: &Token) -> Result<HeaderValue, Error> {
    let secret = token.expose();
    let mut value = Zeroizing::new(Vec::with_capacity(7 + secret.len()));
    value.extend_from_slice(b"Bearer ");
    value.extend_from_slice(secret.as_bytes());
    let mut header = HeaderValue::from_maybe_shared(Bytes::from_owner(value)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidLoginResponse,
            "the token contains characters that an Authorization header cannot carry",
        )
    })?;
    header.set_sensitive(true);
    Ok(header)
}
