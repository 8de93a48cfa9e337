//! Secrets never reach logs or error messages.
//!
//! A full scenario runs against the mock ResQ API on loopback under a TRACE subscriber that
//! formats every event and span into a buffer. The scenario has a login, a background
//! refresh, a `401` replay, a `429` retry, a `403`, a credential rotation and failed
//! logins. The buffer must then contain the expected events and no token or password. A second test provokes every
//! error kind and checks its `Display` and `Debug` output and its sources.
//!
//! Both tests run on Tokio's paused clock in a current-thread runtime, so that every
//! spawned task (login tasks, the mock, hyper's connections) logs on the test's thread
//! into its subscriber. Sockets are driven with `support::without_auto_advance`, so the
//! clock moves only where a test advances it.
//!
//! Every test in this file sets its own capturing subscriber before it logs anything.
//! While only one scoped subscriber exists, tracing-core 0.1.36 caches a callsite's
//! interest from the default subscriber of the thread that first reaches it, so a test
//! thread without a subscriber would switch those callsites off for the other tests.

mod support;

use std::collections::HashSet;
use std::error::Error as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use resq_auth::mock::{MockServer, ScriptedResponse};
use resq_auth::{
    BearerAuth, BearerAuthLayer, Credentials, Error, ErrorKind, LoginSource, ReplayBody,
    StaticToken, ThrottleConfig,
};
use support::{HttpClient, get, http_client, login_source, post, wait_until, without_auto_advance};
use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt};
use tracing_subscriber::fmt::format::FmtSpan;

type Authed = BearerAuth<HttpClient<ReplayBody<Full<Bytes>>>>;

const PASSWORD: &str = "pw-scenario-7f3a9c41";
const NEW_PASSWORD: &str = "pw-rotated-2b6d0e95";
const WRONG_PASSWORD: &str = "pw-wrong-5e82d1b6";
const STATIC_TOKEN: &str = "static-token-c4e7a02f";
const SCRIPTED_TOKENS: [&str; 2] = ["scripted-token-91d3 b2c8e7f0", "scripted-token-6a0f48e5"];

/// A shared buffer that the fmt subscriber writes formatted lines into.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Builds a subscriber that formats every event and span, at every level, into `capture`.
fn capturing_subscriber(capture: &Capture) -> impl tracing::Subscriber + Send + Sync {
    let capture = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(FmtSpan::FULL)
        .with_writer(move || capture.clone())
        .finish()
}

/// Sends `request` and returns the response status, driving the sockets without letting
/// the paused clock move.
async fn send(service: &Authed, request: Request<Full<Bytes>>) -> Result<StatusCode, Error> {
    let response = without_auto_advance(service.clone().oneshot(request)).await?;
    Ok(response.status())
}

fn json_response(status: StatusCode, body: String) -> ScriptedResponse {
    ScriptedResponse::new(status)
        .header("content-type", "application/json")
        .body(body)
}

/// Returns a loopback URI on a port where nothing listens: the listener that held the port
/// is dropped before the function returns.
fn closed_port_uri(path: &str) -> Uri {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}{path}").parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn scenario_logs_no_secret() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capturing_subscriber(&capture));
    let server = MockServer::builder()
        .credentials("operator", PASSWORD)
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    server.deny_path("/admin/missions/approve");
    let source = login_source(&server);
    let handle = source.credentials_handle();
    let layer = BearerAuthLayer::new(source)
        .refresh_before(Duration::from_secs(2))
        .min_login_interval(Duration::ZERO)
        .throttle(ThrottleConfig::default().retry_after_jitter(Duration::ZERO));
    let cache = layer.cache().clone();
    let service: Authed = layer.layer(http_client());

    // Login.
    let status = send(&service, get(&server, "/evidence")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache.stats().logins, 1);

    // Background refresh. The mock's `expires_at` is whole Unix seconds, so a 3 s token
    // arrives with 2 to 3 s left, and its refresh is due within about 1 s.
    advance(Duration::from_millis(1500)).await;
    let status = send(&service, get(&server, "/evidence")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    wait_until(|| cache.stats().logins == 2).await;
    assert_eq!(cache.stats().refreshes, 1);
    let status = send(&service, get(&server, "/evidence")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let last = server.requests().pop().unwrap();
    assert_eq!(last.token, Some(server.issued_tokens()[1].clone()));

    // A revoked token: 401, one login, one replay.
    server.revoke_all_tokens();
    let status = send(&service, get(&server, "/evidence")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache.stats().replays, 1);
    assert_eq!(cache.stats().logins, 3);

    // A 429 with `Retry-After: 0`, retried at once.
    server.respond_next(
        1,
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "0"),
    );
    let status = send(&service, get(&server, "/evidence")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache.stats().throttle_retries, 1);

    // A 403, returned as it is.
    let request = post(&server, "/admin/missions/approve", br#"{"mission":"m-17"}"#);
    let status = send(&service, request).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Rotation: new credentials and a cleared cache.
    server.set_credentials("operator", NEW_PASSWORD);
    handle.replace(Credentials::new("operator", NEW_PASSWORD));
    cache.clear().await;
    let status = send(&service, get(&server, "/evidence")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cache.stats().logins, 4);

    // Failed logins: the mock rejects a wrong password, then a scripted 401 echoes it.
    let wrong = LoginSource::new(
        http_client(),
        server.base_uri(),
        Credentials::new("operator", WRONG_PASSWORD),
    );
    let wrong_service: Authed = BearerAuthLayer::new(wrong)
        .login_failure_backoff(Duration::ZERO, Duration::ZERO)
        .layer(http_client());
    let error = send(&wrong_service, get(&server, "/evidence"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidCredentials);
    server.script_next_login(json_response(
        StatusCode::UNAUTHORIZED,
        format!(r#"{{"error":"password {WRONG_PASSWORD} is not valid"}}"#),
    ));
    let error = send(&wrong_service, get(&server, "/evidence"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidCredentials);
    let message = error.to_string();
    assert!(
        message.contains("(password [redacted] is not valid)"),
        "{message}"
    );

    let text = capture.text();
    assert!(!text.is_empty());
    let tokens = server.issued_tokens();
    assert_eq!(tokens.len(), 4);
    for token in &tokens {
        assert!(!text.contains(token.as_str()), "token {token} in the log");
        // Tokens read `mock-N-<32 hex digits>`, and the random part alone must not appear
        // either.
        let random = token.rsplit('-').next().unwrap();
        assert!(!text.contains(random), "token part {random} in the log");
    }
    for password in [PASSWORD, NEW_PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(password), "password {password} in the log");
    }
    // The fmt subscriber writes `<target>: <message>`, so ": " anchors each message.
    let expected_events = [
        (": mock ResQ API started", 1),
        (": login started", 6),
        (": logged in", 4),
        (": token expires soon; refreshing in the background", 1),
        (": 401: logging in again and replaying the request once", 1),
        (": 429: waiting before sending the request again", 1),
        (": request forbidden", 1),
        (": login credentials replaced", 1),
        (": token cache cleared", 1),
        (": mock login rejected invalid credentials", 1),
        (": mock login sent a scripted response", 1),
        (": login failed", 2),
    ];
    for (event, count) in expected_events {
        assert_eq!(text.matches(event).count(), count, "{event:?} in:\n{text}");
    }
}

/// Collects the `Display`, `Debug` and alternate `Debug` output of `error` and of every
/// error in its source chain.
fn outputs(error: &Error) -> Vec<String> {
    let mut outputs = vec![
        error.to_string(),
        format!("{error:?}"),
        format!("{error:#?}"),
    ];
    let mut source = error.source();
    while let Some(current) = source {
        outputs.push(current.to_string());
        outputs.push(format!("{current:?}"));
        source = current.source();
    }
    outputs
}

/// Sends `request` through a fresh service of `layer` and returns the error.
async fn request_error(layer: &BearerAuthLayer, request: Request<Full<Bytes>>) -> Error {
    let service: Authed = layer.layer(http_client());
    send(&service, request).await.unwrap_err()
}

fn no_backoff(source: LoginSource<HttpClient<Full<Bytes>>>) -> BearerAuthLayer {
    BearerAuthLayer::new(source)
        .login_failure_backoff(Duration::ZERO, Duration::ZERO)
        .min_login_interval(Duration::ZERO)
}

#[tokio::test(start_paused = true)]
async fn errors_show_no_secret() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capturing_subscriber(&capture));
    let server = MockServer::builder()
        .credentials("operator", PASSWORD)
        .start()
        .await
        .unwrap();
    let mut errors = Vec::new();

    // InvalidCredentials: the mock rejects a wrong password.
    let wrong = LoginSource::new(
        http_client(),
        server.base_uri(),
        Credentials::new("operator", WRONG_PASSWORD),
    );
    let layer = no_backoff(wrong);
    errors.push(request_error(&layer, get(&server, "/evidence")).await);

    // InvalidCredentials whose server text echoes the password that was sent.
    server.script_next_login(json_response(
        StatusCode::UNAUTHORIZED,
        format!(r#"{{"error":{{"message":"{PASSWORD} is expired"}}}}"#),
    ));
    let layer = no_backoff(login_source(&server));
    errors.push(request_error(&layer, get(&server, "/evidence")).await);

    // LoginStatus with an echoing body, then the copy that callers get during the cooldown.
    server.script_next_login(json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(r#"{{"error":"database rejected password={PASSWORD}"}}"#),
    ));
    let layer = BearerAuthLayer::new(login_source(&server));
    errors.push(request_error(&layer, get(&server, "/evidence")).await);
    let cooling = request_error(&layer, get(&server, "/evidence")).await;
    assert!(cooling.retry_in().is_some(), "{cooling:?}");
    errors.push(cooling);

    // InvalidLoginResponse: a token an Authorization header cannot carry, and a valid
    // token with an expiry in 1970.
    server.script_next_login(json_response(
        StatusCode::OK,
        format!(r#"{{"token":"{}"}}"#, SCRIPTED_TOKENS[0]),
    ));
    let layer = no_backoff(login_source(&server));
    errors.push(request_error(&layer, get(&server, "/evidence")).await);
    server.script_next_login(json_response(
        StatusCode::OK,
        format!(r#"{{"token":"{}","expires_at":1}}"#, SCRIPTED_TOKENS[1]),
    ));
    errors.push(request_error(&layer, get(&server, "/evidence")).await);

    // LoginTransport: nothing listens on the login port.
    let closed = closed_port_uri("/evidence");
    let base: Uri = format!("http://{}", closed.authority().unwrap())
        .parse()
        .unwrap();
    let refused = LoginSource::new(http_client(), base, Credentials::new("operator", PASSWORD));
    let request = Request::get(closed).body(Full::default()).unwrap();
    errors.push(request_error(&no_backoff(refused), request).await);

    // Config: a base URI without scheme and host. No request leaves the process.
    let relative = LoginSource::new(
        http_client(),
        "/resq".parse().unwrap(),
        Credentials::new("operator", PASSWORD),
    );
    errors.push(request_error(&no_backoff(relative), get(&server, "/evidence")).await);

    // Inner: the token is attached, then the inner client cannot connect.
    let closed = closed_port_uri("/evidence");
    let static_token = StaticToken::new(STATIC_TOKEN)
        .with_origin(closed.clone())
        .unwrap();
    let layer = BearerAuthLayer::new(static_token);
    let request = Request::get(closed).body(Full::default()).unwrap();
    errors.push(request_error(&layer, request).await);

    // LoginTimeout: the mock holds the login for 60 s on the paused clock. Once it has
    // arrived, the runtime may idle and the clock jumps to the 5 s login timeout.
    server.set_login_delay(Duration::from_secs(60));
    let service: Authed = no_backoff(login_source(&server))
        .login_timeout(Duration::from_secs(5))
        .layer(http_client());
    let started = Instant::now();
    let attempts = server.login_attempts();
    let pending = tokio::spawn(service.oneshot(get(&server, "/evidence")));
    wait_until(|| server.login_attempts() == attempts + 1).await;
    let Err(timeout) = pending.await.unwrap() else {
        panic!("login with a 60 s delay did not time out");
    };
    errors.push(timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(5));

    let kinds: Vec<ErrorKind> = errors.iter().map(Error::kind).collect();
    assert_eq!(
        kinds,
        [
            ErrorKind::InvalidCredentials,
            ErrorKind::InvalidCredentials,
            ErrorKind::LoginStatus,
            ErrorKind::LoginStatus,
            ErrorKind::InvalidLoginResponse,
            ErrorKind::InvalidLoginResponse,
            ErrorKind::LoginTransport,
            ErrorKind::Config,
            ErrorKind::Inner,
            ErrorKind::LoginTimeout,
        ]
    );
    let covered: HashSet<ErrorKind> = kinds.into_iter().collect();
    assert_eq!(covered.len(), 7);
    assert!(errors[1].to_string().contains("([redacted] is expired)"));
    assert!(
        errors[2]
            .to_string()
            .contains("(database rejected password=[redacted])")
    );

    let mut secrets = vec![PASSWORD, WRONG_PASSWORD, STATIC_TOKEN];
    secrets.extend(SCRIPTED_TOKENS);
    // The first scripted token contains a space, so each half is checked too.
    secrets.extend(SCRIPTED_TOKENS[0].split(' '));
    let issued = server.issued_tokens();
    secrets.extend(issued.iter().map(String::as_str));
    for error in &errors {
        for output in outputs(error) {
            for secret in &secrets {
                assert!(!output.contains(secret), "{secret:?} in {output}");
            }
        }
    }

    // The failed logins were logged with their messages, which must be redacted too.
    let text = capture.text();
    assert_eq!(text.matches(": login failed").count(), 8, "{text}");
    for secret in &secrets {
        assert!(!text.contains(secret), "{secret:?} in the log");
    }
}
