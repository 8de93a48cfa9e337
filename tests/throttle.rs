//! The 429 rules: Retry-After in both forms, backoff, the wait cap, attempt limits and the
//! shared retry budget. Timing runs on Tokio's paused clock against an in-process service;
//! the 429 from `/login` runs against the mock API on loopback.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use resq_auth::mock::{MockServer, ScriptedResponse};
use resq_auth::{BearerAuthLayer, ReplayBody, StaticToken, ThrottleConfig};
use support::{get, http_client, login_source};
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower::{Layer, Service, ServiceExt};

/// An in-process API that responds `429` with `retry_after` to the first `throttled` calls
/// and `200` afterwards, recording the instant of every call.
#[derive(Clone)]
struct ThrottledApi {
    calls: Arc<Mutex<Vec<Instant>>>,
    throttled: usize,
    retry_after: Option<String>,
}

impl ThrottledApi {
    fn new(throttled: usize, retry_after: Option<&str>) -> Self {
        ThrottledApi {
            calls: Arc::default(),
            throttled,
            retry_after: retry_after.map(str::to_owned),
        }
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

impl Service<Request<ReplayBody<Full<Bytes>>>> for ThrottledApi {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<ReplayBody<Full<Bytes>>>) -> Self::Future {
        let mut calls = self.calls.lock().unwrap();
        calls.push(Instant::now());
        let mut response = Response::new(Full::default());
        if calls.len() <= self.throttled {
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            if let Some(value) = &self.retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", value.parse().unwrap());
            }
        }
        std::future::ready(Ok(response))
    }
}

/// Sends one request through the full layer and returns the final status and the gaps
/// between the calls the API received.
async fn send_through(api: &ThrottledApi, layer: &BearerAuthLayer) -> (StatusCode, Vec<Duration>) {
    let service = layer.layer(api.clone());
    let request = Request::get("/evidence").body(Full::default()).unwrap();
    let response = service.oneshot(request).await.unwrap();
    let calls = api.calls();
    let gaps = calls.windows(2).map(|pair| pair[1] - pair[0]).collect();
    (response.status(), gaps)
}

fn layer() -> BearerAuthLayer {
    BearerAuthLayer::new(StaticToken::new("svc-token"))
}

const JITTER: Duration = Duration::from_millis(500);

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_waits_then_succeeds() {
    let api = ThrottledApi::new(1, Some("1"));
    let layer = layer();
    let (status, gaps) = send_through(&api, &layer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gaps.len(), 1);
    assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[0] <= Duration::from_secs(1) + JITTER, "{gaps:?}");
    assert_eq!(layer.cache().stats().throttle_retries, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_date_waits_until_then() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    let api = ThrottledApi::new(1, Some(&date));
    let (status, gaps) = send_through(&api, &layer()).await;
    assert_eq!(status, StatusCode::OK);
    // An HTTP-date has whole seconds, so "2 s ahead" means more than 1 s and at most 2 s.
    assert!(gaps[0] > Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[0] <= Duration::from_secs(2) + JITTER, "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn past_date_or_zero_waits_jitter_only() {
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(30));
    for value in [past.as_str(), "0"] {
        let api = ThrottledApi::new(1, Some(value));
        let (status, gaps) = send_through(&api, &layer()).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert!(gaps[0] <= JITTER, "{value}: {gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn wait_above_cap_returns_429_at_once() {
    for value in ["3600", "123456789012345678901234567890"] {
        let api = ThrottledApi::new(1, Some(value));
        let started = Instant::now();
        let (status, _) = send_through(&api, &layer()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{value}");
        assert_eq!(api.calls().len(), 1, "{value}");
        assert_eq!(started.elapsed(), Duration::ZERO, "{value}");
    }
}

#[tokio::test(start_paused = true)]
async fn unusable_retry_after_backs_off() {
    for value in [Some("-5"), Some("abc"), None] {
        let api = ThrottledApi::new(2, value);
        let (status, gaps) = send_through(&api, &layer()).await;
        assert_eq!(status, StatusCode::OK, "{value:?}");
        assert_eq!(gaps.len(), 2, "{value:?}");
        // Full jitter below a ceiling of 500 ms, then 1 s.
        assert!(gaps[0] <= Duration::from_millis(500), "{value:?}: {gaps:?}");
        assert!(gaps[1] <= Duration::from_secs(1), "{value:?}: {gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded() {
    let api = ThrottledApi::new(usize::MAX, Some("0"));
    let layer = layer();
    let (status, _) = send_through(&api, &layer).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.calls().len(), 3);

    let api = ThrottledApi::new(usize::MAX, Some("0"));
    let layer = BearerAuthLayer::new(StaticToken::new("svc-token"))
        .throttle(ThrottleConfig::default().max_attempts(5));
    let (status, _) = send_through(&api, &layer).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.calls().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn budget_is_shared_across_clones() {
    // Ten retries in reserve and no deposits: of twenty throttled callers, ten retry.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.0));
    let layer = layer().retry_budget(budget);
    let api = ThrottledApi::new(20, Some("0"));
    let service = layer.layer(api.clone());

    let mut statuses = Vec::new();
    for _ in 0..20 {
        let request = Request::get("/evidence").body(Full::default()).unwrap();
        statuses.push(service.clone().oneshot(request).await.unwrap().status());
    }

    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(api.calls().len(), 30);
    assert_eq!(layer.cache().stats().throttle_retries, 10);
    assert_eq!(throttled, 10);
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_simultaneous_clients() {
    let api = ThrottledApi::new(100, Some("1"));
    let layer = layer().retry_budget(Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 0.0)));
    let service = layer.layer(api.clone());
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let request = Request::get("/evidence").body(Full::default()).unwrap();
        calls.spawn(service.clone().oneshot(request));
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(result.unwrap().unwrap().status(), StatusCode::OK);
    }

    let retries: Vec<f64> = api.calls()[100..]
        .iter()
        .map(|instant| (*instant - started).as_secs_f64() - 1.0)
        .collect();
    assert_eq!(retries.len(), 100);
    // Uniform on [0, 0.5] s: mean 0.25 s, standard deviation 0.144 s.
    let mean = retries.iter().sum::<f64>() / 100.0;
    let variance = retries.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 99.0;
    assert!((0.18..=0.32).contains(&mean), "mean {mean}");
    assert!(
        (0.10..=0.19).contains(&variance.sqrt()),
        "deviation {}",
        variance.sqrt()
    );
    let distinct = {
        let mut millis: Vec<u64> = retries.iter().map(|x| (x * 1000.0) as u64).collect();
        millis.sort_unstable();
        millis.dedup();
        millis.len()
    };
    assert!(distinct >= 60, "only {distinct} distinct retry instants");
}

#[tokio::test]
async fn login_429_then_success() {
    let server = MockServer::start().await.unwrap();
    server.script_next_login(
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "0"),
    );
    let no_jitter = ThrottleConfig::default().retry_after_jitter(Duration::ZERO);
    let layer = BearerAuthLayer::new(login_source(&server).throttle(no_jitter));
    let service = layer.layer(http_client());

    let response = service.oneshot(get(&server, "/evidence")).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 1);
    assert_eq!(layer.cache().stats().login_failures, 0);
}

#[tokio::test]
async fn login_429_beyond_cap_is_login_error() {
    let server = MockServer::start().await.unwrap();
    server.script_next_login(
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "3600"),
    );
    let service = BearerAuthLayer::new(login_source(&server)).layer(http_client());

    let error = service
        .oneshot(get(&server, "/evidence"))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), resq_auth::ErrorKind::LoginStatus);
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(server.login_attempts(), 1);
}

#[tokio::test]
async fn protected_429_then_success_on_loopback() {
    let server = MockServer::start().await.unwrap();
    server.respond_next(
        1,
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "0"),
    );
    let layer = BearerAuthLayer::new(login_source(&server))
        .throttle(ThrottleConfig::default().retry_after_jitter(Duration::ZERO));
    let service = layer.layer(http_client());

    let response = service.oneshot(get(&server, "/evidence")).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [StatusCode::TOO_MANY_REQUESTS, StatusCode::OK]);
    assert_eq!(server.logins(), 1);
}

#[tokio::test]
async fn login_retry_after_extends_cooldown() {
    let server = MockServer::start().await.unwrap();
    server.script_next_login(
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "120"),
    );
    let layer = BearerAuthLayer::new(login_source(&server))
        .login_failure_backoff(Duration::from_secs(1), Duration::from_secs(1));
    let service = layer.layer(http_client());

    let error = service
        .clone()
        .oneshot(get(&server, "/evidence"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(error.retry_in(), Some(Duration::from_secs(120)));

    let error = service
        .oneshot(get(&server, "/evidence"))
        .await
        .unwrap_err();
    let retry_in = error.retry_in().unwrap();
    assert!(retry_in > Duration::from_secs(100), "{retry_in:?}");
    assert!(retry_in <= Duration::from_secs(120), "{retry_in:?}");
    assert_eq!(server.login_attempts(), 1);
}

#[tokio::test]
async fn other_origin_429_is_not_retried() {
    let api = MockServer::start().await.unwrap();
    let elsewhere = MockServer::start().await.unwrap();
    elsewhere.respond_next(
        1,
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "0"),
    );
    let layer = BearerAuthLayer::new(login_source(&api));
    let service = layer.layer(http_client());

    let response = service.oneshot(get(&elsewhere, "/evidence")).await.unwrap();

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(elsewhere.requests().len(), 1);
    assert_eq!(layer.cache().stats().throttle_retries, 0);
}
