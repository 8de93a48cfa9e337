//! Two layered clients behind `tower::steer::Steer`: ingestion paths use a static service
//! token and admin paths an operator login, against the mock ResQ API on loopback.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuth, BearerAuthLayer, ReplayBody, StaticToken};
use support::{HttpClient, http_client, login_source, post};
use tower::steer::Steer;
use tower::{Layer, Service, ServiceExt};

type Authed = BearerAuth<HttpClient<ReplayBody<Full<Bytes>>>>;
type ApiRequest = Request<Full<Bytes>>;
type Routes = Steer<Authed, fn(&ApiRequest, &[Authed]) -> usize, ApiRequest>;

fn pick_client(request: &ApiRequest, _: &[Authed]) -> usize {
    let path = request.uri().path();
    if path.starts_with("/telemetry/") || path.starts_with("/ipfs/") {
        0
    } else {
        1
    }
}

/// Returns the steer, the service token and the admin layer. The service token comes from
/// one login made up front, because the mock accepts only tokens it issued.
async fn routes(api: &MockServer) -> (Routes, String, BearerAuthLayer) {
    let service_token = {
        let layer = BearerAuthLayer::new(login_source(api));
        let response = layer
            .layer(http_client())
            .oneshot(post(api, "/admin/issue-service-token", b""))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        api.issued_tokens().remove(0)
    };
    let ingest = BearerAuthLayer::new(
        StaticToken::new(service_token.clone())
            .with_origin(api.base_uri())
            .unwrap(),
    )
    .min_login_interval(Duration::ZERO);
    let admin = BearerAuthLayer::new(login_source(api)).min_login_interval(Duration::ZERO);
    let clients = [ingest.layer(http_client()), admin.layer(http_client())];
    let routes = Steer::new(clients, pick_client as fn(&ApiRequest, &[Authed]) -> usize);
    (routes, service_token, admin)
}

async fn send(routes: &mut Routes, request: ApiRequest) -> StatusCode {
    let response = routes.ready().await.unwrap().call(request).await.unwrap();
    response.status()
}

#[tokio::test]
async fn paths_pick_their_token() {
    let api = MockServer::start().await.unwrap();
    let (mut routes, service_token, admin) = routes(&api).await;
    let before = api.requests().len();

    let telemetry = send(&mut routes, post(&api, "/telemetry/batches", b"[1,2]")).await;
    let upload = send(&mut routes, post(&api, "/ipfs/upload", b"\x89PNG")).await;
    let approve = send(&mut routes, post(&api, "/admin/missions/approve", b"{}")).await;

    assert_eq!(telemetry, StatusCode::OK);
    assert_eq!(upload, StatusCode::OK);
    assert_eq!(approve, StatusCode::OK);
    assert_eq!(api.login_attempts(), 2);
    let login_token = api.issued_tokens().remove(1);
    let seen: Vec<_> = api.requests()[before..]
        .iter()
        .map(|request| (request.path.clone(), request.token.clone().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("/telemetry/batches".to_owned(), service_token.clone()),
            ("/ipfs/upload".to_owned(), service_token),
            ("/admin/missions/approve".to_owned(), login_token),
        ]
    );
    assert_eq!(admin.cache().stats().logins, 1);
}

#[tokio::test]
async fn revoked_service_token_is_not_renewed() {
    let api = MockServer::start().await.unwrap();
    let (mut routes, service_token, admin) = routes(&api).await;
    assert_eq!(
        send(&mut routes, post(&api, "/admin/missions/approve", b"{}")).await,
        StatusCode::OK
    );
    api.revoke_all_tokens();

    let approve = send(&mut routes, post(&api, "/admin/missions/approve", b"{}")).await;
    let telemetry = send(&mut routes, post(&api, "/telemetry/batches", b"[1,2]")).await;

    // The admin client logs in again and replays. The static token cannot be renewed, so
    // its 401 goes to the caller at once, without a replay.
    assert_eq!(approve, StatusCode::OK);
    assert_eq!(telemetry, StatusCode::UNAUTHORIZED);
    assert_eq!(api.login_attempts(), 3);
    assert_eq!(admin.cache().stats().replays, 1);
    let telemetry_tokens: Vec<_> = api
        .requests()
        .iter()
        .filter(|request| request.path == "/telemetry/batches")
        .map(|request| (request.status, request.token.clone().unwrap()))
        .collect();
    assert_eq!(
        telemetry_tokens,
        [(StatusCode::UNAUTHORIZED, service_token)]
    );
}
