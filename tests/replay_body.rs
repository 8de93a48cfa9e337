//! Replays carry the same bytes for every kind of body; bodies that cannot be replayed, and
//! requests that failed in transit, are sent exactly once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Empty, Full};
use resq_auth::mock::{MockServer, ScriptedResponse};
use resq_auth::{BearerAuthLayer, StaticToken};
use support::{ChannelBody, http_client, login_source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

fn unauthorized_once(server: &MockServer) {
    server.respond_next(1, ScriptedResponse::new(StatusCode::UNAUTHORIZED));
}

fn layer(server: &MockServer) -> BearerAuthLayer {
    BearerAuthLayer::new(login_source(server)).min_login_interval(Duration::ZERO)
}

#[tokio::test]
async fn streamed_post_is_replayed_with_same_bytes() {
    let server = MockServer::start().await.unwrap();
    unauthorized_once(&server);
    let service = layer(&server).layer(http_client());
    let body = ChannelBody::streaming(vec![b"{\"batch\":[", b"1,2,3", b"]}"]);
    let request = Request::post(server.uri("/telemetry/batches"))
        .body(body)
        .unwrap();
    assert!(!request.headers().contains_key("content-length"));

    let response = service.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, Bytes::from_static(b"{\"batch\":[1,2,3]}"));
    assert_eq!(requests[1].body, Bytes::from_static(b"{\"batch\":[1,2,3]}"));
    assert_eq!(server.logins(), 2);
}

#[tokio::test]
async fn body_over_cap_is_sent_once() {
    let server = MockServer::start().await.unwrap();
    unauthorized_once(&server);
    let layer = layer(&server).max_replay_body(16);
    let service = layer.layer(http_client());
    let body = ChannelBody::streaming(vec![b"0123456789", b"0123456789", b"0123456789"]);
    let request = Request::post(server.uri("/ipfs/upload"))
        .body(body)
        .unwrap();

    let response = service.clone().oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].body.len(), 30);
    assert_eq!(layer.cache().stats().replays, 0);
    // The rejected token was still dropped, so the next request logs in again.
    let request = Request::get(server.uri("/evidence"))
        .body(ChannelBody::streaming(vec![]))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.logins(), 2);
}

#[tokio::test]
async fn full_body_over_cap_is_sent_once() {
    let server = MockServer::start().await.unwrap();
    unauthorized_once(&server);
    let service = layer(&server).max_replay_body(4).layer(http_client());
    let request = Request::post(server.uri("/admin/missions/approve"))
        .body(Full::new(Bytes::from_static(b"too large")))
        .unwrap();

    let response = service.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn string_and_empty_bodies_are_replayed() {
    let server = MockServer::start().await.unwrap();
    unauthorized_once(&server);
    let service = layer(&server).layer(http_client());
    let request = Request::post(server.uri("/admin/missions/approve"))
        .body(String::from("approve m-17"))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    unauthorized_once(&server);
    let service = layer(&server).layer(http_client());
    let request = Request::delete(server.uri("/evidence/42"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let bodies: Vec<_> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        [
            Bytes::from_static(b"approve m-17"),
            Bytes::from_static(b"approve m-17"),
            Bytes::new(),
            Bytes::new(),
        ]
    );
}

#[tokio::test]
async fn server_error_is_not_retried() {
    let server = MockServer::start().await.unwrap();
    server.respond_next(1, ScriptedResponse::new(StatusCode::BAD_GATEWAY));
    let layer = layer(&server);
    let service = layer.layer(http_client());
    let request = Request::post(server.uri("/admin/missions/approve"))
        .body(Full::new(Bytes::from_static(b"{\"mission\":\"m-17\"}")))
        .unwrap();

    let response = service.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(layer.cache().stats().replays, 0);
    assert_eq!(layer.cache().stats().throttle_retries, 0);
}

/// Starts a server that reads one whole request per connection, then resets the connection
/// without a response. Returns its address and the number of connections it accepted.
async fn resetting_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut received = Vec::new();
            let mut buffer = [0; 1024];
            while !received.ends_with(b"\"m-17\"}") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => received.extend_from_slice(&buffer[..read]),
                }
            }
            stream.set_zero_linger().unwrap();
            let _ = stream.flush().await;
            drop(stream);
        }
    });
    (address, accepted)
}

#[tokio::test]
async fn connection_reset_post_is_not_resent() {
    let (address, accepted) = resetting_server().await;
    let origin: http::Uri = format!("http://{address}").parse().unwrap();
    let source = StaticToken::new("svc-token").with_origin(origin).unwrap();
    let layer = BearerAuthLayer::new(source);
    let service = layer.layer(http_client());
    let request = Request::post(format!("http://{address}/admin/missions/approve"))
        .body(Full::new(Bytes::from_static(b"{\"mission\":\"m-17\"}")))
        .unwrap();

    let error = service.oneshot(request).await.unwrap_err();

    assert!(error.is_inner(), "{error:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(layer.cache().stats().replays, 0);
    assert_eq!(layer.cache().stats().throttle_retries, 0);
}
