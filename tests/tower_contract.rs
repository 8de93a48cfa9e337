//! The Tower contract: readiness is forwarded, every replay waits for readiness again, and
//! the layer works under `ConcurrencyLimit` and `Buffer`. The inner service is tower-test's
//! mock, which controls readiness exactly.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use resq_auth::{BearerAuthLayer, ReplayBody, Token, TokenFuture, TokenSource};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::buffer::Buffer;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock;

type Inner = mock::Mock<Request<ReplayBody<Full<Bytes>>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<ReplayBody<Full<Bytes>>>, Response<Full<Bytes>>>;

/// A source that returns `svc-token` on every fetch but counts as renewable, so that a
/// `401` is replayed.
#[derive(Debug)]
struct RenewableToken;

impl TokenSource for RenewableToken {
    fn fetch(&self) -> TokenFuture<'_> {
        Box::pin(async { Ok(Token::new("svc-token")) })
    }
}

fn layer() -> BearerAuthLayer {
    BearerAuthLayer::new(RenewableToken).min_login_interval(Duration::ZERO)
}

fn request() -> Request<Full<Bytes>> {
    Request::post("/admin/missions/approve")
        .body(Full::new(Bytes::from_static(b"m-17")))
        .unwrap()
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = code;
    response
}

/// Reads the next request to its end, as a server would, responds with `code` and
/// returns its Authorization value.
async fn answer(handle: &mut Handle, code: StatusCode) -> String {
    let (request, responder) = handle.next_request().await.expect("a request");
    let (parts, body) = request.into_parts();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "m-17");
    responder.send_response(status(code));
    parts.headers["authorization"].to_str().unwrap().to_owned()
}

/// Lets spawned tasks such as a login run.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn poll_ready_is_forwarded() {
    let (inner, mut handle): (Inner, Handle) = mock::pair();
    handle.allow(0);
    let mut service = task::spawn(layer().layer(inner));

    assert_pending!(service.enter(|cx, mut service| service.poll_ready(cx)));
    handle.allow(1);
    assert_ready_ok!(service.enter(|cx, mut service| service.poll_ready(cx)));
}

#[tokio::test]
async fn replay_waits_for_readiness() {
    let (inner, mut handle): (Inner, Handle) = mock::pair();
    let service = layer().layer(inner);

    handle.allow(1);
    let call = tokio::spawn(service.oneshot(request()));
    assert_eq!(
        answer(&mut handle, StatusCode::UNAUTHORIZED).await,
        "Bearer svc-token"
    );

    // The replay needs readiness again, which the mock withholds.
    settle().await;
    assert_pending!(handle.poll_request());
    assert!(!call.is_finished());

    handle.allow(1);
    assert_eq!(
        answer(&mut handle, StatusCode::OK).await,
        "Bearer svc-token"
    );
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn replay_under_concurrency_limit_of_one() {
    let (inner, mut handle): (Inner, Handle) = mock::pair();
    let layer = layer();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(ConcurrencyLimitLayer::new(1))
        .service(inner);

    let first = tokio::spawn(service.clone().oneshot(request()));
    let second = tokio::spawn(service.oneshot(request()));
    handle.allow(10);
    assert_eq!(
        answer(&mut handle, StatusCode::UNAUTHORIZED).await,
        "Bearer svc-token"
    );
    for _ in 0..2 {
        answer(&mut handle, StatusCode::OK).await;
    }

    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
    // Three requests in all: the callers are done and no fourth request is queued.
    assert!(matches!(
        handle.poll_request(),
        std::task::Poll::Ready(None)
    ));
    assert_eq!(layer.cache().stats().replays, 1);
}

#[tokio::test]
async fn layer_outside_buffer() {
    let (inner, mut handle): (Inner, Handle) = mock::pair();
    let layer = layer();
    let buffered = Buffer::new(inner, 4);
    let service = layer.layer(buffered);

    handle.allow(10);
    let call = tokio::spawn(service.oneshot(request()));
    assert_eq!(
        answer(&mut handle, StatusCode::UNAUTHORIZED).await,
        "Bearer svc-token"
    );
    assert_eq!(
        answer(&mut handle, StatusCode::OK).await,
        "Bearer svc-token"
    );

    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(layer.cache().stats().replays, 1);
    assert_eq!(layer.cache().stats().logins, 2);
}

#[tokio::test]
async fn buffer_outside_layer() {
    let (inner, mut handle): (Inner, Handle) = mock::pair();
    let layer = layer();
    let service = Buffer::new(layer.layer(inner), 4);

    handle.allow(10);
    let first = tokio::spawn(service.clone().oneshot(request()));
    assert_eq!(
        answer(&mut handle, StatusCode::UNAUTHORIZED).await,
        "Bearer svc-token"
    );
    assert_eq!(
        answer(&mut handle, StatusCode::OK).await,
        "Bearer svc-token"
    );
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);

    let second = tokio::spawn(service.oneshot(request()));
    assert_eq!(
        answer(&mut handle, StatusCode::OK).await,
        "Bearer svc-token"
    );
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(layer.cache().stats().replays, 1);
}

#[test]
fn service_and_futures_are_send_and_clone() {
    fn assert_send_clone<T: Send + Clone>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let (inner, _handle): (Inner, Handle) = mock::pair();
    let mut service = layer().layer(inner);
    assert_send_clone(&service);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let future = service.call(request());
    assert_send(&future);
}
