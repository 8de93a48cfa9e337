//! The attach-token sub-layer: sets `Authorization: Bearer <token>` on requests for the API
//! origin.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::AUTHORIZATION;
use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::cache::{Authorization, TokenCache};
use crate::error::{BoxError, Error};
use crate::origin::{Origin, is_loopback_host};
use crate::response::{Verdict, verdict};
use crate::response_body::{ResponseBody, is_grpc};

/// The generation of the token that the attach-token layer set on a request, stored in the
/// extensions of its response when that response is a `401` or a gRPC UNAUTHENTICATED, so
/// that the auth-retry layer can invalidate exactly that token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenGeneration(pub(crate) u64);

/// Layer that applies [`AttachToken`].
///
/// Usually part of [`BearerAuthLayer`](crate::BearerAuthLayer); use it alone to attach the
/// token without any retries.
#[derive(Debug, Clone)]
#[must_use]
pub struct AttachTokenLayer {
    cache: TokenCache,
    origin: Option<Origin>,
    transport_error: Option<Error>,
    allow_http: bool,
}

impl AttachTokenLayer {
    /// Creates the layer. The token goes only to requests for the source's origin, if it
    /// has one, and is refused for plain `http` to a host that is not loopback.
    pub fn new(cache: TokenCache) -> Self {
        let origin = cache.source().origin();
        AttachTokenLayer::with_origin(cache, origin, false)
    }

    pub(crate) fn with_origin(cache: TokenCache, origin: Option<Origin>, allow_http: bool) -> Self {
        let transport_error = origin
            .as_ref()
            .and_then(|origin| origin.check_transport(allow_http).err());
        AttachTokenLayer {
            cache,
            origin,
            transport_error,
            allow_http,
        }
    }
}

impl<S> Layer<S> for AttachTokenLayer {
    type Service = AttachToken<S>;

    fn layer(&self, inner: S) -> AttachToken<S> {
        AttachToken {
            inner,
            layer: Arc::new(self.clone()),
        }
    }
}

/// Middleware that sets a sensitive `Authorization: Bearer <token>` header from a
/// [`TokenCache`].
///
/// A request that already has an `Authorization` header, or whose URI names another
/// origin than the API's, passes through untouched. With a valid token cached, the request
/// goes to the inner service at once and without a heap allocation; otherwise it waits for
/// the cache.
#[derive(Debug, Clone)]
pub struct AttachToken<S> {
    inner: S,
    // Behind an `Arc` because tower's `Retry` clones its inner service for every request,
    // and cloning the origin would allocate its strings.
    layer: Arc<AttachTokenLayer>,
}

impl<S> AttachToken<S> {
    /// Without an API origin, checks each request instead: plain `http` only to a loopback
    /// host, unless allowed. With an origin, the layer checked it once.
    fn check_request_transport(&self, uri: &Uri) -> Result<(), Error> {
        let plain_http = uri
            .scheme_str()
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http"));
        if self.layer.origin.is_some() || self.layer.allow_http || !plain_http {
            return Ok(());
        }
        match uri.host() {
            Some(host) if !is_loopback_host(host) => Err(Error::config(format!(
                "refusing to send the ResQ token over plain http to {host}; use https, set \
                 the API origin, or call allow_insecure_http(true) if this network is trusted"
            ))),
            _ => Ok(()),
        }
    }

    fn applies_to(&self, uri: &Uri) -> bool {
        self.layer
            .origin
            .as_ref()
            .is_none_or(|origin| origin.matches(uri))
    }
}

impl<S, B, ResBody> Service<Request<B>> for AttachToken<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::inner)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if request.headers().contains_key(AUTHORIZATION) || !self.applies_to(request.uri()) {
            return ResponseFuture::calling(self.inner.call(request), None);
        }
        if let Some(error) = &self.layer.transport_error {
            return ResponseFuture::failed(error.clone());
        }
        if let Err(error) = self.check_request_transport(request.uri()) {
            return ResponseFuture::failed(error);
        }
        if let Some(authorization) = self.layer.cache.cached() {
            let generation = authorization.generation;
            set_authorization(&mut request, authorization);
            let future = self.inner.call(request);
            return ResponseFuture::calling(future, Some((self.layer.cache.clone(), generation)));
        }
        // Keep the instance that was polled ready for this request.
        let clone = self.inner.clone();
        let ready = mem::replace(&mut self.inner, clone);
        let cache = self.layer.cache.clone();
        ResponseFuture {
            state: State::Token {
                token: Box::pin(async move { cache.authorization().await }),
            },
            pending: Some(Box::new((ready, request, self.layer.cache.clone()))),
        }
    }
}

fn set_authorization<B>(request: &mut Request<B>, authorization: Authorization) {
    request
        .headers_mut()
        .insert(AUTHORIZATION, authorization.header);
}

type TokenFuture = Pin<Box<dyn Future<Output = Result<Authorization, Error>> + Send>>;

pin_project! {
    /// Response future of [`AttachToken`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        // Boxed because only requests that wait for the cache need it. Inline, it would
        // make every response future larger by a whole request.
        pending: Option<Box<(S, Request<B>, TokenCache)>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Token { token: TokenFuture },
        Calling {
            #[pin]
            future: F,
            token: Option<(TokenCache, u64)>,
        },
        Failed { error: Option<Error> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn calling(future: S::Future, token: Option<(TokenCache, u64)>) -> Self {
        ResponseFuture {
            state: State::Calling { future, token },
            pending: None,
        }
    }

    fn failed(error: Error) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
            pending: None,
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Token { token } => {
                    let authorization = ready!(token.as_mut().poll(cx))?;
                    let Some(pending) = this.pending.take() else {
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    let (mut service, mut request, cache) = *pending;
                    let generation = authorization.generation;
                    set_authorization(&mut request, authorization);
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        token: Some((cache, generation)),
                    });
                }
                StateProj::Calling { future, token } => {
                    let response = ready!(future.poll(cx)).map_err(Error::inner)?;
                    return Poll::Ready(Ok(wrap_response(response, token.take())));
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(polled_after_completion)));
                }
            }
        }
    }
}

/// Wraps the response body, watching the trailers of a gRPC response that carried a token.
///
/// The token generation goes into the extensions only of an unauthenticated response,
/// because the auth-retry policy reads it only there and inserting an extension allocates.
fn wrap_response<B>(
    response: Response<B>,
    token: Option<(TokenCache, u64)>,
) -> Response<ResponseBody<B>> {
    let Some((cache, generation)) = token else {
        return response.map(ResponseBody::new);
    };
    let grpc = is_grpc(response.headers());
    let mut response = response.map(|body| {
        if grpc {
            ResponseBody::watching(body, cache, generation)
        } else {
            ResponseBody::new(body)
        }
    });
    if verdict(&response) == Verdict::Unauthenticated {
        response
            .extensions_mut()
            .insert(TokenGeneration(generation));
    }
    response
}

fn polled_after_completion() -> Error {
    Error::config("attach-token response future polled after it completed")
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
