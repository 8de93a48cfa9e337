//! Reading what a response means for authentication: HTTP statuses and the gRPC status of
//! trailers-only responses.

use http::{HeaderMap, HeaderName, Response, StatusCode};

/// The action that a response calls for from the retry layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// `401`, or gRPC status 16 (UNAUTHENTICATED): log in again and replay once.
    Unauthenticated,
    /// `403`, or gRPC status 7 (PERMISSION_DENIED): return as it is.
    Forbidden,
    /// `429`: wait, then retry.
    Throttled,
    /// Anything else: return as it is.
    Other,
}

/// Classifies a response. A gRPC status counts only when it is in the response headers,
/// which happens in a trailers-only response: the request failed before any message, so a
/// replay cannot repeat an effect.
pub(crate) fn verdict<B>(response: &Response<B>) -> Verdict {
    match response.status() {
        StatusCode::UNAUTHORIZED => Verdict::Unauthenticated,
        StatusCode::FORBIDDEN => Verdict::Forbidden,
        StatusCode::TOO_MANY_REQUESTS => Verdict::Throttled,
        StatusCode::OK => grpc_verdict(response.headers()),
        _ => Verdict::Other,
    }
}

/// The `grpc-status` header name, built once: a lookup by `&str` parses the name on every
/// call, and each response is classified up to three times (attach-token, auth-retry and
/// throttle).
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

fn grpc_verdict(headers: &HeaderMap) -> Verdict {
    match headers.get(&GRPC_STATUS).map(|value| value.as_bytes()) {
        Some(b"16") => Verdict::Unauthenticated,
        Some(b"7") => Verdict::Forbidden,
        _ => Verdict::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, grpc_status: Option<&str>) -> Response<()> {
        let mut builder = Response::builder().status(status);
        if let Some(grpc_status) = grpc_status {
            builder = builder.header("grpc-status", grpc_status);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http_statuses() {
        assert_eq!(verdict(&response(401, None)), Verdict::Unauthenticated);
        assert_eq!(verdict(&response(403, None)), Verdict::Forbidden);
        assert_eq!(verdict(&response(429, None)), Verdict::Throttled);
        assert_eq!(verdict(&response(500, None)), Verdict::Other);
        assert_eq!(verdict(&response(200, None)), Verdict::Other);
    }

    #[test]
    fn grpc_trailers_only_statuses() {
        assert_eq!(
            verdict(&response(200, Some("16"))),
            Verdict::Unauthenticated
        );
        assert_eq!(verdict(&response(200, Some("7"))), Verdict::Forbidden);
        assert_eq!(verdict(&response(200, Some("0"))), Verdict::Other);
        assert_eq!(verdict(&response(200, Some("14"))), Verdict::Other);
    }
}
