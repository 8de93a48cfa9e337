//! Scripted responses and the first-in, first-out queues that store them.

use std::collections::VecDeque;
use std::fmt;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// A response that the mock server sends as it is, in place of its normal handling.
///
/// Pass it to [`MockServer::script_next_login`](super::MockServer::script_next_login) or
/// [`MockServer::respond_next`](super::MockServer::respond_next). The server sends the
/// status, the headers and the body bytes unchanged, and adds only `content-length` and
/// `date`. The `Debug` output shows the header names and the body length, not the values,
/// because a scripted body or header may contain a token.
///
/// ```
/// use http::StatusCode;
/// use resq_auth::mock::ScriptedResponse;
///
/// let throttled = ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS)
///     .header("retry-after", "2")
///     .header("content-type", "application/json")
///     .body(r#"{"error": "Too Many Requests"}"#);
/// assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
/// ```
#[derive(Clone)]
pub struct ScriptedResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl ScriptedResponse {
    /// Creates a response with `status`, no headers and an empty body.
    pub fn new(status: StatusCode) -> Self {
        ScriptedResponse {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    /// Appends a header. Calling it twice with the same name sends both values.
    ///
    /// # Panics
    ///
    /// Panics if `name` is not a valid header name or `value` is not a valid header
    /// value, for example because it contains a line break.
    pub fn header<N, V>(mut self, name: N, value: V) -> Self
    where
        N: TryInto<HeaderName>,
        N::Error: fmt::Display,
        V: TryInto<HeaderValue>,
        V::Error: fmt::Display,
    {
        let name = name
            .try_into()
            .unwrap_or_else(|error| panic!("ScriptedResponse::header: invalid name: {error}"));
        let value = value.try_into().unwrap_or_else(|error| {
            panic!("ScriptedResponse::header: invalid value for {name}: {error}")
        });
        self.headers.append(name, value);
        self
    }

    /// Sets the body, which the server sends byte for byte.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Returns the status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Returns the headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub(super) fn to_response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

impl fmt::Debug for ScriptedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("ScriptedResponse")
            .field("status", &self.status)
            .field("header_names", &header_names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A first-in, first-out queue of scripted responses, each to be sent a given number of
/// times. Storing the count instead of copies keeps `respond_next(usize::MAX, ..)` cheap.
#[derive(Default)]
pub(super) struct ScriptQueue {
    entries: VecDeque<(ScriptedResponse, usize)>,
}

impl ScriptQueue {
    /// Appends `response` to be sent `count` times. A count of 0 adds nothing.
    pub(super) fn push(&mut self, response: ScriptedResponse, count: usize) {
        if count > 0 {
            self.entries.push_back((response, count));
        }
    }

    /// Removes every queued response.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Removes one use of the oldest response and returns it.
    pub(super) fn pop(&mut self) -> Option<ScriptedResponse> {
        let (response, remaining) = self.entries.front_mut()?;
        *remaining -= 1;
        if *remaining > 0 {
            return Some(response.clone());
        }
        self.entries.pop_front().map(|(response, _)| response)
    }
}
