//! An axum gateway whose handlers call the ResQ API through a layered hyper-util client kept
//! in the router state. The tests run end to end: a real client calls the gateway on
//! loopback, and the gateway calls the mock ResQ API on loopback.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuth, BearerAuthLayer, Credentials, LoginSource, ReplayBody};
use support::{HttpClient, body_bytes, http_client, login_source};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::{Layer, ServiceExt};

/// The router state: the layered client and the base URI of the ResQ API.
#[derive(Clone)]
struct Gateway {
    api: BearerAuth<HttpClient<ReplayBody<Full<Bytes>>>>,
    api_base: String,
}

impl Gateway {
    /// Sends `method path` with `body` to the ResQ API and turns the upstream response into
    /// the gateway's response. A failure before any upstream response, such as a failed
    /// login, becomes `502 Bad Gateway` with the error message.
    async fn forward(&self, method: Method, path: &str, body: Bytes) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api_base))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .unwrap();
        match self.api.clone().oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
        }
    }
}

async fn approve_mission(State(gateway): State<Gateway>, body: Bytes) -> Response {
    gateway
        .forward(Method::POST, "/admin/missions/approve", body)
        .await
}

async fn list_evidence(State(gateway): State<Gateway>) -> Response {
    gateway
        .forward(Method::GET, "/evidence", Bytes::new())
        .await
}

/// Starts the gateway on a free loopback port in front of `api`, logging in with `source`.
async fn start_gateway(
    api: &MockServer,
    source: LoginSource<HttpClient<Full<Bytes>>>,
) -> (SocketAddr, BearerAuthLayer) {
    let layer = BearerAuthLayer::new(source).min_login_interval(Duration::ZERO);
    let api_base = api.base_uri().to_string();
    let gateway = Gateway {
        api: layer.layer(http_client()),
        api_base: api_base.trim_end_matches('/').to_owned(),
    };
    let router = Router::new()
        .route("/missions/approve", post(approve_mission))
        .route("/evidence", get(list_evidence))
        .with_state(gateway);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, layer)
}

/// Calls the gateway with a plain client and returns the status and body bytes.
async fn call(
    gateway: SocketAddr,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> (StatusCode, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let response = http_client().request(request).await.unwrap();
    let status = response.status();
    (status, body_bytes(response).await)
}

const APPROVAL: &[u8] = br#"{"mission":"m-17","approve":true}"#;

/// Returns the body the mock ResQ API sends for an accepted request.
fn accepted(method: &str, path: &str, body_len: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"body_len":{body_len},"method":"{method}","path":"{path}"}}"#
    ))
}

#[tokio::test]
async fn gateway_forwards_with_one_login() {
    let api = MockServer::start().await.unwrap();
    let (gateway, layer) = start_gateway(&api, login_source(&api)).await;

    let approved = call(gateway, Method::POST, "/missions/approve", APPROVAL).await;
    let evidence = call(gateway, Method::GET, "/evidence", b"").await;
    let again = call(gateway, Method::POST, "/missions/approve", APPROVAL).await;

    let approval_response = accepted("POST", "/admin/missions/approve", APPROVAL.len());
    assert_eq!(approved, (StatusCode::OK, approval_response.clone()));
    assert_eq!(evidence, (StatusCode::OK, accepted("GET", "/evidence", 0)));
    assert_eq!(again, (StatusCode::OK, approval_response));
    assert_eq!(api.login_attempts(), 1);
    let token = api.issued_tokens().remove(0);
    let requests = api.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.token.as_deref(), Some(token.as_str()));
    }
    assert_eq!(requests[0].body, Bytes::from_static(APPROVAL));
    assert_eq!(requests[1].body, Bytes::new());
    assert_eq!(requests[2].body, Bytes::from_static(APPROVAL));
    assert_eq!(layer.cache().stats().logins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gateway_calls_share_one_login() {
    let api = MockServer::start().await.unwrap();
    let (gateway, _layer) = start_gateway(&api, login_source(&api)).await;

    let mut calls = JoinSet::new();
    for _ in 0..20 {
        calls.spawn(call(gateway, Method::POST, "/missions/approve", APPROVAL));
    }
    while let Some(result) = calls.join_next().await {
        let (status, _) = result.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    assert_eq!(api.login_attempts(), 1);
    let token = api.issued_tokens().remove(0);
    assert_eq!(api.requests_with_token(&token), 20);
    assert_eq!(api.requests().len(), 20);
}

#[tokio::test]
async fn revoked_token_is_replaced_behind_gateway() {
    let api = MockServer::start().await.unwrap();
    let (gateway, layer) = start_gateway(&api, login_source(&api)).await;
    let (status, _) = call(gateway, Method::GET, "/evidence", b"").await;
    assert_eq!(status, StatusCode::OK);

    api.revoke_all_tokens();
    let approved = call(gateway, Method::POST, "/missions/approve", APPROVAL).await;

    let approval_response = accepted("POST", "/admin/missions/approve", APPROVAL.len());
    assert_eq!(approved, (StatusCode::OK, approval_response));
    assert_eq!(api.logins(), 2);
    let tokens = api.issued_tokens();
    let requests = api.requests();
    let seen: Vec<_> = requests
        .iter()
        .map(|request| (request.status, request.token.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (StatusCode::OK, Some(tokens[0].clone())),
            (StatusCode::UNAUTHORIZED, Some(tokens[0].clone())),
            (StatusCode::OK, Some(tokens[1].clone())),
        ]
    );
    assert_eq!(requests[1].body, Bytes::from_static(APPROVAL));
    assert_eq!(requests[2].body, Bytes::from_static(APPROVAL));
    assert_eq!(layer.cache().stats().replays, 1);
}

#[tokio::test]
async fn upstream_forbidden_passes_through() {
    let api = MockServer::start().await.unwrap();
    api.deny_path("/admin/missions/approve");
    let (gateway, layer) = start_gateway(&api, login_source(&api)).await;

    let denied = call(gateway, Method::POST, "/missions/approve", APPROVAL).await;

    let message = r#"{"error":"Forbidden: token lacks the scope for /admin/missions/approve"}"#;
    assert_eq!(denied, (StatusCode::FORBIDDEN, Bytes::from(message)));
    assert_eq!(api.login_attempts(), 1);
    assert_eq!(api.requests().len(), 1);
    assert_eq!(layer.cache().stats().replays, 0);
}

#[tokio::test]
async fn failed_login_becomes_bad_gateway() {
    let api = MockServer::start().await.unwrap();
    let source = LoginSource::new(
        http_client(),
        api.base_uri(),
        Credentials::new("operator", "wrong-password-5e2a"),
    );
    let (gateway, _layer) = start_gateway(&api, source).await;

    let (status, body) = call(gateway, Method::GET, "/evidence", b"").await;

    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let message = String::from_utf8(body.to_vec()).unwrap();
    assert!(message.contains("Invalid credentials"), "{message}");
    assert!(!message.contains("wrong-password-5e2a"), "{message}");
    assert_eq!(api.login_attempts(), 1);
    assert_eq!(api.requests().len(), 0);
}

#[tokio::test]
async fn caller_authorization_not_forwarded() {
    let api = MockServer::start().await.unwrap();
    let (gateway, _layer) = start_gateway(&api, login_source(&api)).await;
    let request = Request::get(format!("http://{gateway}/evidence"))
        .header(AUTHORIZATION, "Bearer gateway-user-token")
        .body(Full::<Bytes>::default())
        .unwrap();

    let response = http_client().request(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let token = api.issued_tokens().remove(0);
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].token.as_deref(), Some(token.as_str()));
}
