//! Replacing the credentials of a running stack and forcing a new login, as an operator
//! does after a rotation or a suspected exposure.

mod support;

use std::time::Duration;

use http::StatusCode;
use resq_auth::BearerAuthLayer;
use resq_auth::mock::MockServer;
use support::{get, http_client, login_source};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

#[tokio::test]
async fn rotation_forces_login_with_new_credentials() {
    let server = MockServer::builder()
        .credentials("operator", "old-password")
        .start()
        .await
        .unwrap();
    let source = login_source(&server);
    let handle = source.credentials_handle();
    let layer = BearerAuthLayer::new(source).min_login_interval(Duration::ZERO);
    let mut service = layer.layer(http_client());
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);

    server.set_credentials("operator", "new-password");
    server.revoke_all_tokens();
    handle.replace(resq_auth::Credentials::new("operator", "new-password"));
    layer.cache().clear().await;
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await;

    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 2);
    let tokens = server.issued_tokens();
    assert_eq!(
        server.requests()[1].token.as_deref(),
        Some(tokens[1].as_str())
    );
    assert!(!format!("{handle:?}").contains("new-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_does_not_fail_requests_in_flight() {
    let server = MockServer::start().await.unwrap();
    let layer = BearerAuthLayer::new(login_source(&server)).min_login_interval(Duration::ZERO);
    let mut service = layer.layer(http_client());
    let primer = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"))
        .await;
    assert_eq!(primer.unwrap().status(), StatusCode::OK);

    // Twenty requests leave with the current token, then the token is revoked and
    // cleared while they are on their way.
    let mut futures = Vec::new();
    for _ in 0..20 {
        let future = service
            .ready()
            .await
            .unwrap()
            .call(get(&server, "/evidence"));
        futures.push(future);
    }
    server.revoke_all_tokens();
    layer.cache().clear().await;
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
async fn clear_ends_login_cooldown() {
    let server = MockServer::builder()
        .credentials("operator", "old-password")
        .start()
        .await
        .unwrap();
    let source = login_source(&server);
    server.set_credentials("operator", "rotated-password");
    let handle = source.credentials_handle();
    let layer = BearerAuthLayer::new(source);
    let service = layer.layer(http_client());
    let error = service
        .clone()
        .oneshot(get(&server, "/evidence"))
        .await
        .unwrap_err();
    assert!(error.is_invalid_credentials());

    handle.replace(resq_auth::Credentials::new("operator", "rotated-password"));
    layer.cache().clear().await;
    let response = service.oneshot(get(&server, "/evidence")).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(layer.cache().stats().login_failures, 1);
}
