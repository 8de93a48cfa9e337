//! Without an API origin (a `StaticToken` without `with_origin`, or a custom source), the
//! token is still never sent over plain http to a host that is not loopback.
//!
//! The inner service runs in process, so no traffic leaves this machine.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body_util::Full;
use resq_auth::{BearerAuthLayer, ReplayBody, StaticToken};
use tower::{Layer, ServiceExt};

type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// Returns an in-process service that records the Authorization value of each request.
fn recording(
    seen: Seen,
) -> impl tower::Service<
    Request<ReplayBody<Full<Bytes>>>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
        let seen = seen.clone();
        async move {
            let value = request
                .headers()
                .get(AUTHORIZATION)
                .map(|value| value.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(value);
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    })
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::<Bytes>::default()).unwrap()
}

#[tokio::test]
async fn remote_plain_http_is_rejected() {
    let seen = Seen::default();
    let layer = BearerAuthLayer::new(StaticToken::new("svc-secret-token"));
    let service = layer.layer(recording(seen.clone()));

    let error = service
        .oneshot(get("http://telemetry.example.net/ingest"))
        .await
        .unwrap_err();

    assert!(error.is_config(), "{error:?}");
    assert!(
        error.to_string().contains("telemetry.example.net"),
        "{error}"
    );
    assert!(!error.to_string().contains("svc-secret-token"), "{error}");
    assert!(seen.lock().unwrap().is_empty(), "the request was sent");
}

#[tokio::test]
async fn loopback_and_https_get_token() {
    let seen = Seen::default();
    let layer = BearerAuthLayer::new(StaticToken::new("svc-secret-token"));
    let service = layer.layer(recording(seen.clone()));

    for uri in [
        "http://127.0.0.1:8080/ingest",
        "https://telemetry.example.net/ingest",
    ] {
        service.clone().oneshot(get(uri)).await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    let expected = Some("Bearer svc-secret-token".to_owned());
    assert_eq!(seen, [expected.clone(), expected]);
}

#[tokio::test]
async fn allowed_plain_http_gets_token() {
    let seen = Seen::default();
    let layer =
        BearerAuthLayer::new(StaticToken::new("svc-secret-token")).allow_insecure_http(true);
    let service = layer.layer(recording(seen.clone()));

    service
        .oneshot(get("http://telemetry.example.net/ingest"))
        .await
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, [Some("Bearer svc-secret-token".to_owned())]);
}
