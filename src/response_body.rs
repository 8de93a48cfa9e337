//! The response body of [`AttachToken`](crate::AttachToken), which watches gRPC trailers.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::cache::TokenCache;

pin_project! {
    /// A response body that passes every frame through unchanged.
    ///
    /// For a gRPC response to a request that carried a token from the cache, it also reads
    /// the trailers: `grpc-status: 16` (UNAUTHENTICATED) after streamed messages drops the
    /// token, so the next call logs in again. That request is not replayed, because the
    /// server may already have acted on it. `grpc-status: 7` (PERMISSION_DENIED) is logged
    /// as a warning.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        watch: Option<TrailerWatch>,
    }
}

/// The token to drop if the trailers report UNAUTHENTICATED.
#[derive(Debug)]
struct TrailerWatch {
    cache: TokenCache,
    generation: u64,
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        ResponseBody { inner, watch: None }
    }

    pub(crate) fn watching(inner: B, cache: TokenCache, generation: u64) -> Self {
        ResponseBody {
            inner,
            watch: Some(TrailerWatch { cache, generation }),
        }
    }

    /// Returns the wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Returns a reference to the wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl TrailerWatch {
    fn inspect(&self, trailers: &HeaderMap) {
        match trailers.get("grpc-status").map(|value| value.as_bytes()) {
            Some(b"16") => {
                tracing::debug!(
                    generation = self.generation,
                    "gRPC UNAUTHENTICATED in trailers: dropping the token; the call is not \
                     replayed because messages were already exchanged"
                );
                self.cache.invalidate_soon(self.generation);
            }
            Some(b"7") => {
                tracing::warn!("gRPC PERMISSION_DENIED: the token lacks the scope; not retried");
            }
            _ => {}
        }
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let (Some(watch), Some(Ok(frame))) = (this.watch.as_ref(), frame.as_ref()) {
            if let Some(trailers) = frame.trailers_ref() {
                watch.inspect(trailers);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("watches_trailers", &self.watch.is_some())
            .finish()
    }
}

/// Returns `true` for `application/grpc` and its `+proto`-style variants.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}
