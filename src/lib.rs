//! resq-auth (crate docs are written with the public API).
#![cfg_attr(docsrs, feature(doc_cfg))]

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
pub use source::{LoginSource, StaticToken, TOKEN_VAR, TokenFuture, TokenSource};
pub use throttle::{Throttle, ThrottleConfig, ThrottleLayer, ThrottlePolicy};
pub use token::Token;

#[cfg(feature = "mock")]
pub mod mock;
