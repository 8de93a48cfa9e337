//! Keeps HTTP clients authenticated against the ResQ Infrastructure and Coordination APIs.
//!
//! [`BearerAuthLayer`] is a Tower layer for any client stack that sends
//! `http::Request`s: hyper-util's client, a tonic channel, the outbound client of an axum
//! service or a custom [`Service`](tower_service::Service). It takes tokens from a
//! [`TokenSource`], usually [`LoginSource`] (username and password) or [`StaticToken`] (a
//! service token), keeps them in a [`TokenCache`] shared by every clone, and:
//!
//! - attaches `Authorization: Bearer <token>`, marked sensitive, to requests for the API
//!   origin only, leaving requests that already carry an `Authorization` header alone;
//! - refreshes the token in the background once fewer than 60 s remain, with at most one
//!   login in flight, so callers are not blocked while the current token is valid;
//! - after a `401` (or gRPC UNAUTHENTICATED in a trailers-only response) drops the token,
//!   logs in again and sends the request once more with the same body bytes;
//! - returns a `403` (or gRPC PERMISSION_DENIED) as it is, logged as a warning;
//! - after a `429` waits for `Retry-After` plus jitter, or backs off exponentially with
//!   full jitter, within a cap, an attempt limit and a shared retry budget;
//! - retries nothing else, so a `POST` that reached the server is never sent twice.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use resq_auth::{BearerAuthLayer, Credentials, LoginSource};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let base: http::Uri = "https://api.resq.software".parse()?;
//! let login = LoginSource::new(
//!     Client::builder(TokioExecutor::new()).build_http(),
//!     base,
//!     Credentials::from_env()?,
//! );
//! let layer = BearerAuthLayer::new(login);
//! let cache = layer.cache().clone();
//! let mut client = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(Client::builder(TokioExecutor::new()).build_http());
//!
//! let request = http::Request::post("https://api.resq.software/admin/missions/approve")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(br#"{"mission":"m-17"}"#)))?;
//! let response = client.ready().await?.call(request).await?;
//! println!("{} (logins so far: {})", response.status(), cache.stats().logins);
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! [`BearerAuthLayer`] nests [`ThrottleLayer`] outside [`AuthRetryLayer`] outside
//! [`AttachTokenLayer`]; each can also be used alone with a [`TokenCache`]. The retry layers
//! use tower's [`Retry`](tower::retry::Retry) with the policies [`ThrottlePolicy`] and
//! [`AuthRetryPolicy`]. Request bodies are wrapped in [`ReplayBody`], which records them as
//! they are sent so that a replay carries the same bytes. Responses come back in a
//! [`ResponseBody`] that passes frames through and watches gRPC trailers.
//!
//! # Errors
//!
//! Every failure is an [`Error`] with an [`ErrorKind`]: rejected credentials, a failing
//! login endpoint, an invalid login response, a configuration error, or the inner
//! service's own error, which [`source`](std::error::Error::source) returns.
//!
//! # Features
//!
//! - `mock`: [`mock::MockServer`], a scriptable ResQ API on loopback for tests.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod attach;
mod auth_retry;
mod body;
mod cache;
mod credentials;
mod error;
mod layer;
mod origin;
mod response;
mod response_body;
mod source;
mod throttle;
mod token;

pub use attach::{AttachToken, AttachTokenLayer};
pub use auth_retry::{AuthRetry, AuthRetryLayer, AuthRetryPolicy};
pub use body::{DEFAULT_MAX_REPLAY_BODY, ReplayBody, ReplayableBody};
pub use cache::{AuthStats, TokenCache};
pub use credentials::{Credentials, PASSWORD_VAR, USERNAME_VAR};
pub use error::{BoxError, Error, ErrorKind};
pub use layer::{BearerAuth, BearerAuthLayer, future};
pub use origin::Origin;
pub use response_body::ResponseBody;
pub use source::{
    CredentialsHandle, LoginSource, StaticToken, TOKEN_VAR, TokenFuture, TokenSource,
};
pub use throttle::{Throttle, ThrottleConfig, ThrottleLayer, ThrottlePolicy};
pub use token::Token;

#[cfg(feature = "mock")]
pub mod mock;

/// Compiles and runs the Rust examples in README.md as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
