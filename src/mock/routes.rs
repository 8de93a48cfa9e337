//! The HTTP handlers of the mock server: `POST /login` and the fallback for every
//! protected path.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::LengthLimitError;
use serde::Deserialize;
use serde_json::json;

use super::state::{RecordedRequest, Shared};

/// The maximum request body size the mock server reads, in bytes (16 MiB).
pub(super) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/login", post(login))
        .fallback(protected)
        .with_state(shared)
}

/// The body of `POST /login`. Unknown fields are ignored.
#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

async fn login(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    // The attempt is counted and the script taken on arrival, so a script queued while
    // an earlier login waits out its delay applies to the next login, not that one.
    let (script, delay) = {
        let mut state = shared.lock();
        state.login_attempts += 1;
        (state.login_scripts.pop(), state.login_delay)
    };

    let body = read_body(request.into_body()).await;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(script) = script {
        tracing::debug!(status = %script.status(), "mock login sent a scripted response");
        return script.to_response();
    }
    let body = match body {
        Ok(body) => body,
        Err(response) => {
            tracing::debug!(status = %response.status(), "mock login failed to read the body");
            return response;
        }
    };

    let login: LoginRequest = match serde_json::from_slice(&body) {
        Ok(login) => login,
        // The serde_json message is not echoed because it can quote a field value,
        // which may be the password.
        Err(error) => {
            tracing::debug!(
                line = error.line(),
                column = error.column(),
                "mock login rejected a malformed body"
            );
            let message = format!(
                "invalid login request body at line {} column {}: expected a JSON object \
                 with string fields \"username\" and \"password\"",
                error.line(),
                error.column()
            );
            return error_response(StatusCode::BAD_REQUEST, &message);
        }
    };

    let credentials = shared.lock().credentials.clone();
    if login.username != credentials.username() || login.password != credentials.expose_password() {
        tracing::debug!(username = %login.username, "mock login rejected invalid credentials");
        return error_response(StatusCode::UNAUTHORIZED, "Invalid credentials");
    }

    let issued = shared.lock().issue_token();
    let body = json!({ "token": issued.token, "expires_at": issued.expires_at });
    (StatusCode::OK, Json(body)).into_response()
}

async fn protected(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let token = bearer_token(&parts.headers);
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let (body, body_error) = match read_body(body).await {
        Ok(body) => (body, None),
        Err(response) => (Bytes::new(), Some(response)),
    };

    // One lock for deciding and recording keeps the recorded order equal to the order
    // in which requests were decided.
    let mut state = shared.lock();
    let authorized = token
        .as_deref()
        .is_some_and(|token| state.is_valid_token(token));
    let response = if let Some(script) = state.request_scripts.pop() {
        script.to_response()
    } else if let Some(response) = body_error {
        response
    } else if !authorized {
        let mut response = error_response(StatusCode::UNAUTHORIZED, "Invalid or expired token");
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    } else if state.denied_paths.contains(&path) {
        let message = format!("Forbidden: token lacks the scope for {path}");
        error_response(StatusCode::FORBIDDEN, &message)
    } else {
        let body = json!({
            "method": parts.method.as_str(),
            "path": path,
            "body_len": body.len(),
        });
        (StatusCode::OK, Json(body)).into_response()
    };

    if !response.status().is_success() {
        tracing::debug!(
            method = %parts.method,
            path,
            status = %response.status(),
            "mock rejected a protected request"
        );
    }
    state.requests.push(RecordedRequest {
        method: parts.method,
        path,
        query,
        token,
        body,
        status: response.status(),
    });
    response
}

/// Reads the whole body, or returns the error response to send: `413` above
/// [`MAX_BODY_BYTES`], `400` when the body could not be read.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    to_bytes(body, MAX_BODY_BYTES).await.map_err(|error| {
        let too_large =
            std::error::Error::source(&error).is_some_and(|source| source.is::<LengthLimitError>());
        if too_large {
            let message =
                format!("request body exceeds the mock server limit of {MAX_BODY_BYTES} bytes");
            error_response(StatusCode::PAYLOAD_TOO_LARGE, &message)
        } else {
            let message = format!("failed to read the request body: {error}");
            error_response(StatusCode::BAD_REQUEST, &message)
        }
    })
}

/// Extracts the token from `Authorization: Bearer <token>`. The scheme name is matched
/// case-insensitively, as HTTP authentication scheme names are.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return None;
    }
    Some(token.to_owned())
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Builds the response to a login that [`MockServer::fail_next_logins`] scripted:
/// `{"error": "<canonical reason>"}` as JSON.
///
/// [`MockServer::fail_next_logins`]: super::MockServer::fail_next_logins
pub(super) fn failed_login_script(status: StatusCode) -> super::ScriptedResponse {
    let reason = status.canonical_reason().unwrap_or("Unknown Status");
    let body = json!({ "error": reason }).to_string();
    super::ScriptedResponse::new(status)
        .header(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(body)
}
