//! The fault matrix for `POST /login`: every way the login endpoint can fail, the error
//! kind or documented rule it gives, and the first call after the server heals.
//!
//! Each layer logs in again at once after a failure (no failure backoff and no spacing
//! between logins), so no test waits for a cooldown. Tests of lifetimes and the login
//! timeout run on Tokio's paused clock and drive their sockets with
//! `support::without_auto_advance`, so the clock moves only where a test advances it.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::Full;
use resq_auth::mock::{MockServer, ScriptedResponse};
use resq_auth::{
    BearerAuth, BearerAuthLayer, Credentials, Error, ErrorKind, LoginSource, ReplayBody,
    ThrottleConfig, TokenCache,
};
use support::{HttpClient, http_client, wait_until, without_auto_advance};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt};

type Authed = BearerAuth<HttpClient<ReplayBody<Full<Bytes>>>>;

const PASSWORD: &str = "pw-faults-3c9e1a77";
const LOGIN_BODY_LIMIT: usize = 64 * 1024;

async fn start_server() -> MockServer {
    MockServer::builder()
        .credentials("operator", PASSWORD)
        .start()
        .await
        .unwrap()
}

/// Builds the layer for a login at `base`: no failure backoff, no spacing between logins,
/// and a `429` at `/login` retried after exactly its `Retry-After`.
fn layer_for(base: Uri) -> BearerAuthLayer {
    let no_jitter = ThrottleConfig::default().retry_after_jitter(Duration::ZERO);
    let source = LoginSource::new(http_client(), base, Credentials::new("operator", PASSWORD))
        .throttle(no_jitter);
    BearerAuthLayer::new(source)
        .login_failure_backoff(Duration::ZERO, Duration::ZERO)
        .min_login_interval(Duration::ZERO)
}

fn service_for(server: &MockServer) -> Authed {
    layer_for(server.base_uri()).layer(http_client())
}

/// Sends `GET {base}/evidence` and returns the status.
async fn call(service: &Authed, base: SocketAddr) -> Result<StatusCode, Error> {
    let request = http::Request::get(format!("http://{base}/evidence"))
        .body(Full::default())
        .unwrap();
    let response = service.clone().oneshot(request).await?;
    Ok(response.status())
}

fn login_uri(address: SocketAddr) -> String {
    format!("http://{address}/login")
}

fn json_login(status: StatusCode, body: impl Into<Bytes>) -> ScriptedResponse {
    ScriptedResponse::new(status)
        .header("content-type", "application/json")
        .body(body)
}

/// Asserts that the message of `error` contains neither the password nor `token`.
fn assert_no_secret(error: &Error, token: Option<&str>) {
    for output in [error.to_string(), format!("{error:?}")] {
        assert!(!output.contains(PASSWORD), "password in {output}");
        if let Some(token) = token {
            assert!(!output.contains(token), "token in {output}");
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Reads one HTTP/1.1 request, head and `content-length` body, and returns it.
async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut request = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the client closed the connection mid-request");
        request.extend_from_slice(&chunk[..read]);
        let Some(head_end) = request.windows(4).position(|window| window == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let body_len = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse::<usize>().unwrap());
        if request.len() >= head_end + 4 + body_len {
            return request;
        }
    }
}

/// Forwards every connection accepted on `listener` to `target`, byte for byte.
async fn forward(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

#[tokio::test]
async fn refused_connection_is_transport_error() {
    let server = start_server().await;
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let service = layer_for(format!("http://{address}").parse().unwrap()).layer(http_client());

    let error = call(&service, address).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::LoginTransport);
    assert_eq!(error.status(), None);
    let message = error.to_string();
    let expected = format!("login request to {} failed: ", login_uri(address));
    assert!(message.starts_with(&expected), "{message}");
    assert!(
        message.ends_with("; check that the API is reachable"),
        "{message}"
    );
    assert_no_secret(&error, None);
    assert_eq!(server.login_attempts(), 0);

    // The server heals: the port accepts connections and forwards them to the mock.
    let listener = TcpListener::bind(address).await.unwrap();
    tokio::spawn(forward(listener, server.local_addr()));
    assert_eq!(call(&service, address).await.unwrap(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 1);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn reset_mid_body_is_transport_error() {
    let server = start_server().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mock = server.local_addr();
    // The first connection gets a 200 head that announces 100 body bytes, then 10 of them
    // and a reset. Every later connection is forwarded to the mock.
    let front = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        assert!(request.starts_with(b"POST /login HTTP/1.1\r\n"));
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
        let partial = br#"{"token":""#;
        assert_eq!(partial.len(), 10);
        stream
            .write_all(&[head.as_bytes(), partial].concat())
            .await
            .unwrap();
        stream.set_zero_linger().unwrap();
        drop(stream);
        forward(listener, mock).await;
    });
    let service = layer_for(format!("http://{address}").parse().unwrap()).layer(http_client());

    let error = call(&service, address).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::LoginTransport);
    assert_eq!(error.status(), None);
    let message = error.to_string();
    let expected = format!(
        "reading the login response from {} failed: ",
        login_uri(address)
    );
    assert!(message.starts_with(&expected), "{message}");
    assert_no_secret(&error, None);
    assert_eq!(server.login_attempts(), 0);

    assert_eq!(call(&service, address).await.unwrap(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 1);
    assert_eq!(server.logins(), 1);
    assert!(!front.is_finished());
}

#[tokio::test(start_paused = true)]
async fn slow_login_times_out() {
    let server = start_server().await;
    server.set_login_delay(Duration::from_secs(60));
    let service = layer_for(server.base_uri())
        .login_timeout(Duration::from_secs(5))
        .layer(http_client());
    let started = Instant::now();
    let pending = {
        let service = service.clone();
        let address = server.local_addr();
        tokio::spawn(async move { call(&service, address).await })
    };

    // Until the login reaches the mock, the sockets are driven with the clock held still.
    wait_until(|| server.login_attempts() == 1).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    // Now the runtime idles and the paused clock jumps to the next timer. The mock's 60 s
    // delay runs on the same clock, so the 5 s login timeout fires first.
    let error = pending.await.unwrap().unwrap_err();

    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(error.kind(), ErrorKind::LoginTimeout);
    assert_eq!(error.status(), None);
    assert_eq!(
        error.to_string(),
        format!(
            "login did not complete within 5.0 s; check that http://{} is reachable, or \
             raise login_timeout",
            server.local_addr()
        )
    );
    assert_no_secret(&error, None);
    assert_eq!(server.logins(), 0);

    server.set_login_delay(Duration::ZERO);
    let status = without_auto_advance(call(&service, server.local_addr())).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}

/// Checks a login that failed with `status` and the mock's JSON error body, then the
/// recovery.
async fn check_failed_status(status: StatusCode) {
    let server = start_server().await;
    server.fail_next_logins(1, status);
    let service = service_for(&server);

    let error = call(&service, server.local_addr()).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::LoginStatus);
    assert_eq!(error.status(), Some(status));
    let reason = status.canonical_reason().unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "login at {} failed with status {status} ({reason}); the token cache tries \
             again after a cooldown",
            login_uri(server.local_addr())
        )
    );
    assert_no_secret(&error, None);
    assert_eq!(server.login_attempts(), 1);

    assert_eq!(
        call(&service, server.local_addr()).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn status_500_is_login_status() {
    check_failed_status(StatusCode::INTERNAL_SERVER_ERROR).await;
}

#[tokio::test]
async fn status_502_is_login_status() {
    check_failed_status(StatusCode::BAD_GATEWAY).await;
}

#[tokio::test]
async fn status_429_beyond_attempts_is_login_status() {
    let server = start_server().await;
    for _ in 0..3 {
        server.script_next_login(
            json_login(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":"Too Many Requests"}"#,
            )
            .header("retry-after", "0"),
        );
    }
    let service = service_for(&server);

    let error = call(&service, server.local_addr()).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::LoginStatus);
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(
        error.to_string(),
        format!(
            "login at {} failed with status 429 Too Many Requests (Too Many Requests); the \
             token cache tries again after a cooldown",
            login_uri(server.local_addr())
        )
    );
    assert_no_secret(&error, None);
    // Three attempts in all: the default limit of ThrottleConfig.
    assert_eq!(server.login_attempts(), 3);

    assert_eq!(
        call(&service, server.local_addr()).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(server.login_attempts(), 4);
    assert_eq!(server.logins(), 1);
}

/// Checks a `200` login response that is rejected: the kind, no status, the exact reason
/// after the URI, no secret, then the recovery.
async fn check_invalid_body(response: ScriptedResponse, reason: &str, token: Option<&str>) {
    let server = start_server().await;
    server.script_next_login(response);
    let service = service_for(&server);

    let error = call(&service, server.local_addr()).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidLoginResponse);
    assert_eq!(error.status(), None);
    assert_eq!(
        error.to_string(),
        format!(
            "login response from {} is invalid: {reason}",
            login_uri(server.local_addr())
        )
    );
    assert_no_secret(&error, token);
    assert_eq!(server.login_attempts(), 1);

    assert_eq!(
        call(&service, server.local_addr()).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn non_json_body_is_invalid() {
    let response = ScriptedResponse::new(StatusCode::OK)
        .header("content-type", "text/html")
        .body("<html>maintenance</html>");
    check_invalid_body(
        response,
        "the body is not valid JSON (expected value at line 1 column 1) (content type \
         text/html)",
        None,
    )
    .await;
}

#[tokio::test]
async fn missing_token_is_invalid() {
    let body = format!(r#"{{"expires_at":{}}}"#, unix_seconds() + 3600);
    check_invalid_body(
        json_login(StatusCode::OK, body),
        "field `token` is missing (content type application/json)",
        None,
    )
    .await;
}

#[tokio::test]
async fn non_number_expiry_is_invalid() {
    check_invalid_body(
        json_login(
            StatusCode::OK,
            r#"{"token":"tok-7d2e90b1","expires_at":"tomorrow"}"#,
        ),
        r#"field `expires_at` is "tomorrow", expected Unix seconds as a number (content type application/json)"#,
        Some("tok-7d2e90b1"),
    )
    .await;
}

#[tokio::test]
async fn past_expiry_is_invalid() {
    let server = start_server().await;
    server.script_next_login(json_login(
        StatusCode::OK,
        r#"{"token":"tok-5a1c33f0","expires_at":1000}"#,
    ));
    let service = service_for(&server);

    let error = call(&service, server.local_addr()).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidLoginResponse);
    assert_eq!(error.status(), None);
    // The seconds before the clock depend on the current time, so only the frame is fixed.
    let message = error.to_string();
    let prefix = format!(
        "login response from {} is invalid: field `expires_at` is 1000, which is ",
        login_uri(server.local_addr())
    );
    assert!(message.starts_with(&prefix), "{message}");
    let suffix = "; check the clocks of this host and of the server (content type \
                  application/json)";
    assert!(message.ends_with(suffix), "{message}");
    assert_no_secret(&error, Some("tok-5a1c33f0"));
    assert_eq!(server.login_attempts(), 1);

    assert_eq!(
        call(&service, server.local_addr()).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn oversized_body_is_invalid() {
    let server = start_server().await;
    let mut body = br#"{"token":"tok-9e60a2d4"}"#.to_vec();
    body.resize(LOGIN_BODY_LIMIT + 1, b' ');
    server.script_next_login(json_login(StatusCode::OK, body));
    let service = service_for(&server);

    let error = call(&service, server.local_addr()).await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidLoginResponse);
    assert_eq!(error.status(), None);
    assert_eq!(
        error.to_string(),
        format!(
            "login response from {} (status 200 OK) is larger than 65536 bytes; check that \
             the base URI points at the ResQ API, or raise max_response_body",
            login_uri(server.local_addr())
        )
    );
    assert_no_secret(&error, Some("tok-9e60a2d4"));
    assert_eq!(server.login_attempts(), 1);

    assert_eq!(
        call(&service, server.local_addr()).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn empty_body_is_invalid() {
    check_invalid_body(
        ScriptedResponse::new(StatusCode::OK),
        "the body is empty (content type none)",
        None,
    )
    .await;
}

/// Checks that a scripted `200` login response is accepted: the first request carries its
/// token, the mock rejects that token with `401`, and the replay logs in with the mock's
/// own response.
async fn check_accepted(response: ScriptedResponse, token: &str) {
    let server = start_server().await;
    server.script_next_login(response);
    let service = service_for(&server);

    let status = call(&service, server.local_addr()).await.unwrap();

    assert_eq!(status, StatusCode::OK);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].token.as_deref(), Some(token));
    assert_eq!(requests[0].status, StatusCode::UNAUTHORIZED);
    assert_eq!(requests[1].token, Some(server.issued_tokens()[0].clone()));
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn body_at_limit_is_accepted() {
    let mut body = br#"{"token":"tok-at-limit-0e4b"}"#.to_vec();
    body.resize(LOGIN_BODY_LIMIT, b' ');
    check_accepted(json_login(StatusCode::OK, body), "tok-at-limit-0e4b").await;
}

#[tokio::test]
async fn wrong_content_type_is_parsed() {
    let response = ScriptedResponse::new(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(r#"{"token":"tok-plain-93f1"}"#);
    check_accepted(response, "tok-plain-93f1").await;
}

/// Logs in with a scripted `200` whose token the mock does not know, and scripts `200` for
/// the first request so that the token stays cached. The layer has no refresh margin,
/// so only expiry ends the token. Returns the service and its cache.
async fn cache_scripted_token(
    server: &MockServer,
    body: String,
    max_lifetime: Duration,
) -> (Authed, TokenCache) {
    server.script_next_login(json_login(StatusCode::OK, body));
    server.respond_next(1, ScriptedResponse::new(StatusCode::OK));
    let layer = layer_for(server.base_uri())
        .refresh_before(Duration::ZERO)
        .max_token_lifetime(max_lifetime);
    let cache = layer.cache().clone();
    let service = layer.layer(http_client());
    let status = without_auto_advance(call(&service, server.local_addr())).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    (service, cache)
}

#[tokio::test(start_paused = true)]
async fn missing_expiry_keeps_max_lifetime() {
    let server = start_server().await;
    let max_lifetime = Duration::from_secs(600);
    let body = r#"{"token":"tok-c81d5e2a"}"#.to_owned();
    let (service, cache) = cache_scripted_token(&server, body, max_lifetime).await;

    assert_eq!(server.requests()[0].token.as_deref(), Some("tok-c81d5e2a"));
    assert_eq!(cache.generation().await, Some(1));
    advance(max_lifetime - Duration::from_millis(1)).await;
    assert_eq!(cache.generation().await, Some(1));
    advance(Duration::from_millis(1)).await;
    assert_eq!(cache.generation().await, None);

    let status = without_auto_advance(call(&service, server.local_addr())).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}

#[tokio::test(start_paused = true)]
async fn millisecond_expiry_is_converted() {
    let server = start_server().await;
    let expires_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 600_000;
    let body = format!(r#"{{"token":"tok-0b7f4d19","expires_at":{expires_at_ms}}}"#);
    let (service, cache) =
        cache_scripted_token(&server, body, Duration::from_secs(12 * 3600)).await;

    assert_eq!(server.requests()[0].token.as_deref(), Some("tok-0b7f4d19"));
    // Read as seconds, the value would lie tens of thousands of years ahead and be capped
    // at the 12 h maximum lifetime. Read as milliseconds, it lies just under 600 s ahead.
    assert_eq!(cache.generation().await, Some(1));
    advance(Duration::from_secs(599)).await;
    assert_eq!(cache.generation().await, Some(1));
    advance(Duration::from_secs(1)).await;
    assert_eq!(cache.generation().await, None);

    let status = without_auto_advance(call(&service, server.local_addr())).await;
    assert_eq!(status.unwrap(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
}
