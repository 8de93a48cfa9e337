//! The layer against the mock ResQ API over real loopback HTTP: login, caching, the 401
//! replay, 403 and failing logins.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use resq_auth::mock::{MockServer, ScriptedResponse};
use resq_auth::{
    BearerAuth, BearerAuthLayer, Credentials, ErrorKind, LoginSource, ReplayBody, StaticToken,
    Token,
};
use support::{HttpClient, get, http_client, login_source, post};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

type Authed = BearerAuth<HttpClient<ReplayBody<Full<Bytes>>>>;

/// Builds the layer for tests against a server on loopback: no spacing between logins,
/// so a test never waits on the real clock.
fn layer(source: LoginSource<HttpClient<Full<Bytes>>>) -> BearerAuthLayer {
    BearerAuthLayer::new(source).min_login_interval(Duration::ZERO)
}

fn authed(layer: &BearerAuthLayer) -> Authed {
    layer.layer(http_client())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_requests_share_one_login() {
    let server = MockServer::start().await.unwrap();
    let service = authed(&layer(login_source(&server)));

    let mut calls = JoinSet::new();
    for _ in 0..100 {
        let request = get(&server, "/evidence");
        calls.spawn(service.clone().oneshot(request));
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(result.unwrap().unwrap().status(), StatusCode::OK);
    }

    assert_eq!(server.login_attempts(), 1);
    let tokens = server.issued_tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(server.requests_with_token(&tokens[0]), 100);
    assert_eq!(server.requests().len(), 100);
}

#[tokio::test]
async fn revoked_token_recovers_with_one_login() {
    let server = MockServer::start().await.unwrap();
    let layer = layer(login_source(&server));
    let mut service = authed(&layer);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);

    server.revoke_all_tokens();
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await;

    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(server.logins(), 2);
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::UNAUTHORIZED, StatusCode::OK]
    );
    let tokens = server.issued_tokens();
    assert_eq!(
        server.requests()[2].token.as_deref(),
        Some(tokens[1].as_str())
    );
    assert_eq!(layer.cache().stats().replays, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_401s_for_one_token_cause_one_login() {
    let server = MockServer::start().await.unwrap();
    let layer = layer(login_source(&server));
    let mut service = authed(&layer);
    let primer = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await;
    assert_eq!(primer.unwrap().status(), StatusCode::OK);

    server.revoke_all_tokens();
    // Each call takes the cached token at once, so all twenty carry the old one. None is
    // spawned before all exist, so no 401 comes back while they are being created.
    let mut futures = Vec::new();
    for _ in 0..20 {
        let future = service
            .ready()
            .await
            .unwrap()
            .call(get(&server, "/evidence"));
        futures.push(future);
    }
    let mut calls = JoinSet::new();
    for future in futures {
        calls.spawn(future);
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(result.unwrap().unwrap().status(), StatusCode::OK);
    }

    assert_eq!(server.logins(), 2);
    let tokens = server.issued_tokens();
    assert_eq!(server.requests_with_token(&tokens[0]), 21);
    assert_eq!(server.requests_with_token(&tokens[1]), 20);
    assert_eq!(layer.cache().stats().replays, 20);
}

#[tokio::test]
async fn persistent_401_is_sent_twice_then_returned() {
    let server = MockServer::start().await.unwrap();
    server.respond_next(1000, ScriptedResponse::new(StatusCode::UNAUTHORIZED));
    let layer = layer(login_source(&server));
    let service = authed(&layer);

    let response = service.oneshot(get(&server, "/evidence")).await.unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.logins(), 2);
    assert_eq!(layer.cache().stats().replays, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_without_login_storm() {
    let server = MockServer::start().await.unwrap();
    let source = LoginSource::new(
        http_client(),
        server.base_uri(),
        Credentials::new("operator", "wrong-password-123"),
    );
    let service = authed(&layer(source));

    let mut calls = JoinSet::new();
    for _ in 0..50 {
        calls.spawn(service.clone().oneshot(get(&server, "/evidence")));
    }
    while let Some(result) = calls.join_next().await {
        let error = result.unwrap().unwrap_err();
        assert!(error.is_invalid_credentials(), "{error:?}");
    }
    for _ in 0..10 {
        let error = service
            .clone()
            .oneshot(get(&server, "/evidence"))
            .await
            .unwrap_err();
        assert!(error.is_invalid_credentials(), "{error:?}");
        assert!(error.retry_in().is_some());
    }

    assert_eq!(server.login_attempts(), 1);
    assert_eq!(server.requests().len(), 0);
    let error = service
        .oneshot(get(&server, "/evidence"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    let message = error.to_string();
    assert!(message.contains("`operator`"), "{message}");
    assert!(message.contains("Invalid credentials"), "{message}");
    assert!(!message.contains("wrong-password-123"), "{message}");
}

#[tokio::test]
async fn login_500_then_later_call_succeeds() {
    let server = MockServer::start().await.unwrap();
    server.fail_next_logins(1, StatusCode::INTERNAL_SERVER_ERROR);
    let layer = layer(login_source(&server)).login_failure_backoff(Duration::ZERO, Duration::ZERO);
    let mut service = authed(&layer);

    let error = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LoginStatus);
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));

    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
    assert_eq!(layer.cache().stats().login_failures, 1);
}

#[tokio::test]
async fn forbidden_is_sent_once_without_login() {
    let server = MockServer::start().await.unwrap();
    server.deny_path("/admin/missions/approve");
    let layer = layer(login_source(&server));
    let service = authed(&layer);

    let request = post(&server, "/admin/missions/approve", br#"{"mission":"m-17"}"#);
    let response = service.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.login_attempts(), 1);
    assert_eq!(layer.cache().stats().replays, 0);
}

#[tokio::test]
async fn replayed_post_carries_identical_body() {
    let server = MockServer::start().await.unwrap();
    let layer = layer(login_source(&server));
    let mut service = authed(&layer);
    let body: &'static [u8] = br#"{"mission":"m-17","approve":true,"note":"caf\u00e9 \n"}"#;
    server.respond_next(1, ScriptedResponse::new(StatusCode::UNAUTHORIZED));

    let request = post(&server, "/admin/missions/approve", body);
    let response = service.ready().await.unwrap().call(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, Bytes::from_static(body));
    assert_eq!(requests[1].body, Bytes::from_static(body));
    assert_eq!(requests[1].status, StatusCode::OK);
    let tokens = server.issued_tokens();
    assert_eq!(tokens.len(), 2);
    assert_eq!(requests[1].token.as_deref(), Some(tokens[1].as_str()));
}

#[tokio::test]
async fn existing_authorization_header_is_kept() {
    let server = MockServer::start().await.unwrap();
    let service = authed(&layer(login_source(&server)));
    let mut request = get(&server, "/evidence");
    request
        .headers_mut()
        .insert("authorization", "Bearer caller-token".parse().unwrap());

    let response = service.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.login_attempts(), 0);
    assert_eq!(server.requests()[0].token.as_deref(), Some("caller-token"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn other_origin_gets_no_token() {
    let api = MockServer::start().await.unwrap();
    let elsewhere = MockServer::start().await.unwrap();
    let mut service = authed(&layer(login_source(&api)));

    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&elsewhere, "/evidence"))
        .await;

    assert_eq!(response.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(elsewhere.requests()[0].token, None);
    assert_eq!(api.login_attempts(), 0);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&api, "/evidence"))
        .await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn plain_http_to_remote_host_is_rejected() {
    // The `.invalid` top-level domain never resolves, and the check runs before any send.
    let source = LoginSource::new(
        http_client(),
        "http://api.resq.invalid".parse().unwrap(),
        Credentials::new("operator", "secret-pw"),
    );
    let service = authed(&layer(source));
    let request = http::Request::get("http://api.resq.invalid/evidence")
        .body(Full::default())
        .unwrap();

    let error = service.oneshot(request).await.unwrap_err();

    assert!(error.is_config(), "{error:?}");
    assert_eq!(
        error.to_string(),
        "refusing to send ResQ credentials over plain http to http://api.resq.invalid:80; use \
         https, or call allow_insecure_http(true) if this network is trusted"
    );
}

#[tokio::test]
async fn static_token_is_attached() {
    let server = MockServer::start().await.unwrap();
    let source = StaticToken::new("svc-ingest-token")
        .with_origin(server.base_uri())
        .unwrap();
    let service = BearerAuthLayer::new(source).layer(http_client());

    let response = service
        .oneshot(get(&server, "/telemetry/batches"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.requests()[0].token.as_deref(),
        Some("svc-ingest-token")
    );
}

#[tokio::test]
async fn debug_output_shows_no_secret() {
    let server = MockServer::builder()
        .credentials("operator", "pw-4d1b9c")
        .start()
        .await
        .unwrap();
    let layer = layer(login_source(&server));
    let service = authed(&layer);
    let response = service
        .clone()
        .oneshot(get(&server, "/evidence"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = server.issued_tokens().remove(0);

    let credentials = Credentials::new("operator", "pw-4d1b9c");
    let outputs = [
        format!("{credentials:?}"),
        format!("{:?}", Token::new(token.clone())),
        format!("{:?}", StaticToken::new(token.clone())),
        format!("{:?}", login_source(&server)),
        format!("{layer:?}"),
        format!("{service:?}"),
        format!("{:?}", layer.cache()),
        format!("{server:?}"),
        format!("{:?}", server.requests()),
    ];
    for output in outputs {
        assert!(!output.contains("pw-4d1b9c"), "password in {output}");
        assert!(!output.contains(&token), "token in {output}");
    }
    assert!(format!("{credentials:?}").contains("[redacted]"));
}

#[tokio::test]
async fn password_in_base_uri_is_rejected() {
    let server = MockServer::start().await.unwrap();
    let port = server.base_uri().port_u16().unwrap();
    let base = format!("http://operator:hunter2@127.0.0.1:{port}")
        .parse()
        .unwrap();
    let source = LoginSource::new(http_client(), base, server.credentials());
    assert!(!format!("{source:?}").contains("hunter2"));
    let service = authed(&layer(source));

    let error = service
        .oneshot(get(&server, "/evidence"))
        .await
        .unwrap_err();

    assert!(error.is_config(), "{error:?}");
    assert!(!error.to_string().contains("hunter2"), "{error}");
    assert_eq!(server.login_attempts(), 0);
}
