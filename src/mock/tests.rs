//! Tests that drive the mock server with a real HTTP client over loopback.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::state::expires_at_unix;
use super::{MockServer, ScriptedResponse};

/// A response read to the end.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("response body is not JSON")
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    server: &MockServer,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(server.uri(path));
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    let request = request
        .body(Full::new(body.into()))
        .expect("test request is invalid");
    let response = client()
        .request(request)
        .await
        .expect("request to the mock server failed");
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("reading the response body failed")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get_with_token(server: &MockServer, path: &str, token: &str) -> Reply {
    let authorization = format!("Bearer {token}");
    send(server, Method::GET, path, Some(&authorization), "").await
}

async fn post_login(server: &MockServer, body: impl Into<Bytes>) -> Reply {
    let request = Request::post(server.uri("/login"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body.into()))
        .expect("test login request is invalid");
    let response = client()
        .request(request)
        .await
        .expect("login request to the mock server failed");
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("reading the login response body failed")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn login_body(username: &str, password: &str) -> String {
    json!({ "username": username, "password": password }).to_string()
}

/// Logs in with the server's credentials and returns the token.
async fn login(server: &MockServer) -> String {
    let credentials = server.credentials();
    let body = login_body(credentials.username(), credentials.expose_password());
    let reply = post_login(server, body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "login failed: {:?}",
        reply.body
    );
    reply.json()["token"]
        .as_str()
        .expect("login response has no string token")
        .to_owned()
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock is before 1970");
    i64::try_from(since_epoch.as_secs()).expect("Unix time exceeds i64")
}

#[tokio::test]
async fn login_issues_token() {
    let server = MockServer::start().await.expect("server did not start");
    let before = unix_now();
    let reply = post_login(&server, login_body("operator", "resq-mock-password")).await;
    let after = unix_now();

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[CONTENT_TYPE], "application/json");
    let body = reply.json();
    let token = body["token"].as_str().expect("token is not a string");
    assert!(token.starts_with("mock-1-"), "unexpected token format");
    let expires_at = body["expires_at"]
        .as_i64()
        .expect("expires_at is not an integer");
    assert!(expires_at >= before + 3600);
    assert!(expires_at <= after + 3600);

    assert_eq!(server.login_attempts(), 1);
    assert_eq!(server.logins(), 1);
    assert_eq!(server.issued_tokens(), vec![token.to_owned()]);
}

#[tokio::test]
async fn login_rejects_wrong_credentials() {
    let server = MockServer::start().await.expect("server did not start");

    let wrong_password = post_login(&server, login_body("operator", "wrong")).await;
    assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong_password.json(),
        json!({ "error": "Invalid credentials" })
    );

    let wrong_username = post_login(&server, login_body("admin", "resq-mock-password")).await;
    assert_eq!(wrong_username.status, StatusCode::UNAUTHORIZED);

    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 0);
    assert!(server.issued_tokens().is_empty());
}

#[tokio::test]
async fn login_rejects_malformed_body() {
    let server = MockServer::start().await.expect("server did not start");
    let cases = [
        "not json",
        r#"{"username": "operator"}"#,
        r#"{"username": "operator", "password": 12345}"#,
        "",
    ];
    for body in cases {
        let reply = post_login(&server, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "body {body:?}");
        let message = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains("username"), "message {message:?}");
        assert!(!message.contains("12345"), "message echoes a value");
    }
    assert_eq!(server.login_attempts(), cases.len());
    assert_eq!(server.logins(), 0);
}

#[tokio::test]
async fn login_ignores_unknown_fields() {
    let server = MockServer::start().await.expect("server did not start");
    let body = r#"{"username": "operator", "password": "resq-mock-password", "otp": null}"#;
    let reply = post_login(&server, body).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn builder_sets_credentials() {
    let server = MockServer::builder()
        .credentials("dispatcher", "s3cret")
        .start()
        .await
        .expect("server did not start");
    assert_eq!(server.credentials().username(), "dispatcher");

    let default_credentials =
        post_login(&server, login_body("operator", "resq-mock-password")).await;
    assert_eq!(default_credentials.status, StatusCode::UNAUTHORIZED);

    let configured = post_login(&server, login_body("dispatcher", "s3cret")).await;
    assert_eq!(configured.status, StatusCode::OK);
}

#[tokio::test]
async fn protected_accepts_valid_token() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;

    let evidence = get_with_token(&server, "/evidence?page=2", &token).await;
    assert_eq!(evidence.status, StatusCode::OK);
    assert_eq!(
        evidence.json(),
        json!({ "method": "GET", "path": "/evidence", "body_len": 0 })
    );

    let authorization = format!("Bearer {token}");
    let approve = send(
        &server,
        Method::POST,
        "/admin/missions/approve",
        Some(&authorization),
        r#"{"mission": 7}"#,
    )
    .await;
    assert_eq!(approve.status, StatusCode::OK);
    assert_eq!(
        approve.json(),
        json!({ "method": "POST", "path": "/admin/missions/approve", "body_len": 14 })
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(requests[0].path, "/evidence");
    assert_eq!(requests[0].query.as_deref(), Some("page=2"));
    assert_eq!(requests[0].token.as_deref(), Some(token.as_str()));
    assert_eq!(requests[0].status, StatusCode::OK);
    assert_eq!(requests[1].method, Method::POST);
    assert_eq!(requests[1].body, Bytes::from_static(br#"{"mission": 7}"#));
    assert_eq!(server.requests_with_token(&token), 2);
}

#[tokio::test]
async fn protected_rejects_missing_or_bad_token() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;
    let lowercase_scheme = format!("bearer {token}");
    let cases: [(Option<&str>, Option<&str>); 5] = [
        (None, None),
        (Some("Basic b3BlcmF0b3I6eA=="), None),
        (Some("Bearer"), None),
        (Some("Bearer mock-1-unknown"), Some("mock-1-unknown")),
        (Some("Bearer  "), None),
    ];
    for (authorization, recorded_token) in cases {
        let reply = send(&server, Method::GET, "/evidence", authorization, "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(reply.headers[WWW_AUTHENTICATE], "Bearer");
        assert_eq!(reply.json(), json!({ "error": "Invalid or expired token" }));
        let last = server.requests().pop().expect("request was not recorded");
        assert_eq!(last.token.as_deref(), recorded_token);
        assert_eq!(last.status, StatusCode::UNAUTHORIZED);
    }

    let reply = send(
        &server,
        Method::GET,
        "/evidence",
        Some(&lowercase_scheme),
        "",
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "scheme must be case-insensitive"
    );
}

#[tokio::test]
async fn revoke_rejects_old_tokens() {
    let server = MockServer::start().await.expect("server did not start");
    let first = login(&server).await;
    assert_eq!(
        get_with_token(&server, "/evidence", &first).await.status,
        StatusCode::OK
    );

    server.revoke_all_tokens();
    let revoked = get_with_token(&server, "/evidence", &first).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);

    let second = login(&server).await;
    assert_ne!(first, second);
    assert_eq!(
        get_with_token(&server, "/evidence", &second).await.status,
        StatusCode::OK
    );

    assert_eq!(server.issued_tokens(), vec![first.clone(), second.clone()]);
    assert_eq!(server.requests_with_token(&first), 2);
    assert_eq!(server.requests_with_token(&second), 1);
}

#[tokio::test]
async fn fail_next_logins_then_succeeds() {
    let server = MockServer::start().await.expect("server did not start");
    server.fail_next_logins(2, StatusCode::SERVICE_UNAVAILABLE);
    let credentials = login_body("operator", "resq-mock-password");

    for _ in 0..2 {
        let reply = post_login(&server, credentials.clone()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.headers[CONTENT_TYPE], "application/json");
        assert_eq!(reply.json(), json!({ "error": "Service Unavailable" }));
    }
    let reply = post_login(&server, credentials).await;
    assert_eq!(reply.status, StatusCode::OK);

    assert_eq!(server.login_attempts(), 3);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn login_scripts_run_in_order() {
    let server = MockServer::start().await.expect("server did not start");
    server.script_next_login(
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header(RETRY_AFTER, "3"),
    );
    server.fail_next_logins(1, StatusCode::INTERNAL_SERVER_ERROR);
    server.script_next_login(
        ScriptedResponse::new(StatusCode::OK)
            .header("content-type", "application/json")
            .body(r#"{"token": "scripted", "expires_at": 1}"#),
    );
    let credentials = login_body("operator", "resq-mock-password");

    let throttled = post_login(&server, credentials.clone()).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers[RETRY_AFTER], "3");
    assert!(throttled.body.is_empty());

    let failed = post_login(&server, credentials.clone()).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);

    let scripted = post_login(&server, "not even json").await;
    assert_eq!(scripted.status, StatusCode::OK);
    assert_eq!(
        scripted.body,
        Bytes::from_static(br#"{"token": "scripted", "expires_at": 1}"#)
    );

    let real = post_login(&server, credentials).await;
    assert_eq!(real.status, StatusCode::OK);
    assert_ne!(real.json()["token"], "scripted");

    assert_eq!(server.login_attempts(), 4);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn respond_next_overrides_requests() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;
    server.respond_next(
        2,
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS)
            .header(RETRY_AFTER, "1")
            .body("slow down"),
    );

    let with_token = get_with_token(&server, "/evidence", &token).await;
    assert_eq!(with_token.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(with_token.headers[RETRY_AFTER], "1");
    assert_eq!(with_token.body, Bytes::from_static(b"slow down"));

    let without_token = send(&server, Method::DELETE, "/missions/9", None, "").await;
    assert_eq!(without_token.status, StatusCode::TOO_MANY_REQUESTS);

    let normal = get_with_token(&server, "/evidence", &token).await;
    assert_eq!(normal.status, StatusCode::OK);

    let statuses: Vec<StatusCode> = server
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(
        statuses,
        [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::OK
        ]
    );
    assert_eq!(server.login_attempts(), 1);
}

#[tokio::test]
async fn respond_next_zero_count_is_ignored() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;
    server.respond_next(0, ScriptedResponse::new(StatusCode::IM_A_TEAPOT));
    assert_eq!(
        get_with_token(&server, "/evidence", &token).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn clear_scripts_restores_normal_handling() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;
    server.respond_next(5, ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS));
    server.fail_next_logins(5, StatusCode::SERVICE_UNAVAILABLE);

    server.clear_scripts();

    assert_eq!(
        get_with_token(&server, "/evidence", &token).await.status,
        StatusCode::OK
    );
    let body = login_body("operator", "resq-mock-password");
    assert_eq!(post_login(&server, body).await.status, StatusCode::OK);
    assert_eq!(server.logins(), 2);
}

#[tokio::test]
async fn deny_path_forbids_valid_token() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;
    server.deny_path("/admin/missions/approve");

    let authorization = format!("Bearer {token}");
    let denied = send(
        &server,
        Method::POST,
        "/admin/missions/approve",
        Some(&authorization),
        "{}",
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        denied.json(),
        json!({ "error": "Forbidden: token lacks the scope for /admin/missions/approve" })
    );

    let other_path = get_with_token(&server, "/evidence", &token).await;
    assert_eq!(other_path.status, StatusCode::OK);

    let no_token = send(&server, Method::POST, "/admin/missions/approve", None, "{}").await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);

    server.allow_path("admin/missions/approve");
    let allowed = send(
        &server,
        Method::POST,
        "/admin/missions/approve",
        Some(&authorization),
        "{}",
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK);
}

#[test]
fn expires_at_rounds_lifetime_up() {
    assert_eq!(expires_at_unix(1_000, Duration::from_secs(3600)), 4_600);
    assert_eq!(expires_at_unix(1_000, Duration::from_millis(1_500)), 1_002);
    assert_eq!(expires_at_unix(1_000, Duration::from_nanos(1)), 1_001);
    assert_eq!(expires_at_unix(1_000, Duration::ZERO), 1_000);
    assert_eq!(expires_at_unix(1_000, Duration::MAX), i64::MAX);
}

#[tokio::test]
async fn token_lifetime_sets_expires_at() {
    let server = MockServer::builder()
        .token_lifetime(Duration::from_secs(60))
        .start()
        .await
        .expect("server did not start");
    let credentials = login_body("operator", "resq-mock-password");

    let before = unix_now();
    let first = post_login(&server, credentials.clone()).await.json();
    server.set_token_lifetime(Duration::from_millis(1_500));
    let second = post_login(&server, credentials).await.json();
    let after = unix_now();

    let first_expires_at = first["expires_at"]
        .as_i64()
        .expect("expires_at is not an integer");
    assert!((before + 60..=after + 60).contains(&first_expires_at));
    let second_expires_at = second["expires_at"]
        .as_i64()
        .expect("expires_at is not an integer");
    assert!((before + 2..=after + 2).contains(&second_expires_at));
}

#[tokio::test]
async fn zero_lifetime_token_is_rejected() {
    let server = MockServer::start().await.expect("server did not start");
    server.set_token_lifetime(Duration::ZERO);
    let token = login(&server).await;
    let reply = get_with_token(&server, "/evidence", &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn token_expires_on_tokio_clock() {
    let server = MockServer::builder()
        .token_lifetime(Duration::from_secs(10))
        .start()
        .await
        .expect("server did not start");
    let token = login(&server).await;

    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        get_with_token(&server, "/evidence", &token).await.status,
        StatusCode::OK
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    let expired = get_with_token(&server, "/evidence", &token).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(start_paused = true)]
async fn login_delay_waits_on_tokio_clock() {
    let server = MockServer::start().await.expect("server did not start");
    server.set_login_delay(Duration::from_secs(5));

    let started = tokio::time::Instant::now();
    let token = login(&server).await;
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(token.starts_with("mock-1-"));
    assert_eq!(server.login_attempts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_under_concurrency() {
    const CLIENTS: usize = 24;
    let server = MockServer::start().await.expect("server did not start");

    let mut logins = JoinSet::new();
    for _ in 0..CLIENTS {
        let server = server.clone();
        logins.spawn(async move { login(&server).await });
    }
    let tokens: Vec<String> = logins.join_all().await;
    let unique: HashSet<&String> = tokens.iter().collect();
    assert_eq!(unique.len(), CLIENTS);
    assert_eq!(server.login_attempts(), CLIENTS);
    assert_eq!(server.logins(), CLIENTS);
    assert_eq!(server.issued_tokens().len(), CLIENTS);

    let mut requests = JoinSet::new();
    for (index, token) in tokens.iter().enumerate() {
        for _ in 0..=index % 3 {
            let server = server.clone();
            let token = token.clone();
            requests
                .spawn(async move { get_with_token(&server, "/evidence", &token).await.status });
        }
    }
    let statuses = requests.join_all().await;
    assert!(statuses.iter().all(|status| *status == StatusCode::OK));

    let expected_requests: usize = (0..CLIENTS).map(|index| index % 3 + 1).sum();
    assert_eq!(server.requests().len(), expected_requests);
    for (index, token) in tokens.iter().enumerate() {
        assert_eq!(server.requests_with_token(token), index % 3 + 1);
    }
}

#[tokio::test]
async fn oversized_body_is_rejected_and_recorded() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;
    let authorization = format!("Bearer {token}");
    let body = vec![b'x'; super::routes::MAX_BODY_BYTES + 1];

    let reply = send(
        &server,
        Method::POST,
        "/evidence",
        Some(&authorization),
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let recorded = server.requests();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].body.is_empty());
    assert_eq!(recorded[0].status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn uri_joins_paths() {
    let server = MockServer::start().await.expect("server did not start");
    let port = server.local_addr().port();

    assert_eq!(
        server.base_uri().to_string(),
        format!("http://127.0.0.1:{port}/")
    );
    assert_eq!(
        server.uri("/evidence").to_string(),
        format!("http://127.0.0.1:{port}/evidence")
    );
    assert_eq!(
        server.uri("evidence?page=2").to_string(),
        format!("http://127.0.0.1:{port}/evidence?page=2")
    );
}

#[tokio::test]
async fn debug_output_hides_secrets() {
    let server = MockServer::start().await.expect("server did not start");
    let token = login(&server).await;
    get_with_token(&server, "/evidence", &token).await;

    let server_debug = format!("{server:?}");
    assert!(!server_debug.contains("resq-mock-password"));
    assert!(!server_debug.contains(&token));
    assert!(server_debug.contains("operator"));

    let request_debug = format!("{:?}", server.requests()[0]);
    assert!(!request_debug.contains(&token));
    assert!(request_debug.contains("[redacted]"));

    let script = ScriptedResponse::new(StatusCode::OK).body(format!(r#"{{"token": "{token}"}}"#));
    assert!(!format!("{script:?}").contains(&token));
}

#[tokio::test]
async fn dropping_last_clone_stops_server() {
    let server = MockServer::start().await.expect("server did not start");
    let addr = server.local_addr();
    let clone = server.clone();
    drop(server);
    login(&clone).await;

    drop(clone);
    // The serve task drops the listener soon after the shutdown signal, so retry for a
    // bounded time of 100 × 10 ms.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the server still accepts connections after the last drop"
    );
}
