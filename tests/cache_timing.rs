//! Expiry, refresh and cooldown rules of the token cache, on Tokio's paused clock.
//!
//! The inner service runs in process, because a socket would let the paused clock jump
//! ahead while the test waits for it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use resq_auth::{BearerAuthLayer, ErrorKind};
use support::{ScriptedSource, echo_authorization};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt};

/// Sends one request and returns the Authorization value the inner service saw.
async fn authorization<S>(service: &mut S) -> Result<String, resq_auth::Error>
where
    S: Service<
            Request<Full<Bytes>>,
            Response = http::Response<resq_auth::ResponseBody<String>>,
            Error = resq_auth::Error,
        >,
{
    let request = Request::get("/evidence").body(Full::default()).unwrap();
    let response = service.ready().await?.call(request).await?;
    Ok(response.into_body().into_inner())
}

/// Lets spawned tasks, such as a background refresh that is due now, run to completion.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_starts_only_below_margin() {
    let source = ScriptedSource::new(Duration::from_secs(120));
    let mut service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");

    advance(Duration::from_secs(59)).await; // 61 s left
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    settle().await;
    assert_eq!(source.fetches(), 1, "refreshed with 61 s left");

    advance(Duration::from_secs(1)).await; // exactly 60 s left
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    settle().await;
    assert_eq!(source.fetches(), 1, "refreshed with exactly 60 s left");

    advance(Duration::from_secs(1)).await; // 59 s left
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    settle().await;
    assert_eq!(source.fetches(), 2, "no refresh with 59 s left");
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-2");
}

#[tokio::test(start_paused = true)]
async fn slow_refresh_does_not_delay_requests() {
    let source = ScriptedSource::new(Duration::from_secs(120));
    let layer = BearerAuthLayer::new(source.clone());
    let mut service = layer.layer(echo_authorization());
    authorization(&mut service).await.unwrap();
    source.set_delay(Duration::from_secs(2));

    advance(Duration::from_secs(61)).await;
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    }
    assert_eq!(Instant::now(), started, "requests waited for the refresh");
    assert_eq!(layer.cache().stats().refreshes, 1);

    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-2");
    assert_eq!(source.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn token_longer_than_margin_keeps_margin() {
    let source = ScriptedSource::new(Duration::from_secs(63));
    let mut service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());
    authorization(&mut service).await.unwrap();

    advance(Duration::from_secs(3)).await;
    authorization(&mut service).await.unwrap();
    settle().await;
    assert_eq!(source.fetches(), 1, "a 63 s token refreshed at 60 s left");

    advance(Duration::from_millis(1)).await;
    authorization(&mut service).await.unwrap();
    settle().await;
    assert_eq!(
        source.fetches(),
        2,
        "a 63 s token not refreshed below 60 s left"
    );
}

#[tokio::test(start_paused = true)]
async fn short_token_refreshes_at_half_life() {
    let source = ScriptedSource::new(Duration::from_secs(45));
    let mut service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());
    authorization(&mut service).await.unwrap();

    advance(Duration::from_millis(22_500)).await;
    authorization(&mut service).await.unwrap();
    settle().await;
    assert_eq!(
        source.fetches(),
        1,
        "a 45 s token refreshed before half its life"
    );

    advance(Duration::from_millis(1)).await;
    authorization(&mut service).await.unwrap();
    settle().await;
    assert_eq!(source.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn tiny_lifetime_logins_are_rate_limited() {
    let source = ScriptedSource::new(Duration::from_millis(100));
    let mut service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());
    let started = Instant::now();
    for _ in 0..1000 {
        authorization(&mut service).await.unwrap();
        advance(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    // One login per min_login_interval (1 s), plus the first.
    let limit = elapsed.as_secs() as usize + 1;
    assert!(
        source.fetches() <= limit,
        "{} logins in {elapsed:?}",
        source.fetches()
    );
    assert!(source.fetches() >= 5, "only {} logins", source.fetches());
}

#[tokio::test(start_paused = true)]
async fn expired_token_waits_for_login() {
    let source = ScriptedSource::new(Duration::from_secs(120));
    let mut service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());
    authorization(&mut service).await.unwrap();
    source.set_delay(Duration::from_secs(2));

    advance(Duration::from_secs(121)).await;
    let started = Instant::now();
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-2");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn failed_login_cools_down_then_succeeds() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    source.fail_next(&[ErrorKind::LoginStatus]);
    let mut service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());

    let error = authorization(&mut service).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LoginStatus);
    assert_eq!(error.retry_in(), None);

    let error = authorization(&mut service).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LoginStatus);
    let retry_in = error.retry_in().expect("cooldown error carries retry_in");
    assert!(retry_in <= Duration::from_secs(1), "{retry_in:?}");
    assert_eq!(source.fetches(), 1, "login retried during the cooldown");

    advance(Duration::from_secs(1)).await;
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-2");
    assert_eq!(source.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn cooldown_doubles_per_failure() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    source.fail_next(&[ErrorKind::LoginStatus; 4]);
    let layer = BearerAuthLayer::new(source.clone());
    let mut service = layer.layer(echo_authorization());

    let mut cooldowns = Vec::new();
    for _ in 0..4 {
        authorization(&mut service).await.unwrap_err();
        let error = authorization(&mut service).await.unwrap_err();
        let retry_in = error.retry_in().unwrap();
        cooldowns.push(retry_in);
        advance(retry_in).await;
    }
    for (failure, cooldown) in cooldowns.iter().enumerate() {
        let full = Duration::from_secs(1 << failure);
        assert!(*cooldown <= full, "failure {failure}: {cooldown:?}");
        assert!(
            *cooldown >= full.mul_f64(0.8),
            "failure {failure}: {cooldown:?}"
        );
    }
    assert_eq!(source.fetches(), 4);
    assert_eq!(layer.cache().stats().login_failures, 4);
}

#[tokio::test(start_paused = true)]
async fn failed_refresh_keeps_valid_token() {
    let source = ScriptedSource::new(Duration::from_secs(120));
    let layer = BearerAuthLayer::new(source.clone());
    let mut service = layer.layer(echo_authorization());
    authorization(&mut service).await.unwrap();
    source.fail_next(&[ErrorKind::LoginTransport]);

    advance(Duration::from_secs(61)).await;
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    settle().await;
    assert_eq!(source.fetches(), 2);
    for _ in 0..5 {
        assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    }
    settle().await;
    assert_eq!(source.fetches(), 2, "refresh retried during the cooldown");

    advance(Duration::from_secs(1)).await;
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    settle().await;
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-3");
}

#[tokio::test(start_paused = true)]
async fn dropped_request_does_not_cancel_login() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    source.set_delay(Duration::from_secs(2));
    let mut service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());

    let request = Request::get("/evidence").body(Full::default()).unwrap();
    let mut first = tokio_test::task::spawn(service.ready().await.unwrap().call(request));
    assert!(first.poll().is_pending());
    drop(first);

    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-1");
    assert_eq!(source.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn login_times_out() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    source.set_delay(Duration::from_secs(600));
    let mut service = BearerAuthLayer::new(source.clone())
        .login_timeout(Duration::from_secs(5))
        .layer(echo_authorization());

    let started = Instant::now();
    let error = authorization(&mut service).await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(
        error.to_string(),
        "login did not complete within 5.0 s; check that the token source is reachable, or \
         raise login_timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_source_gives_error() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    source.panic_next();
    let mut service = BearerAuthLayer::new(source.clone())
        .login_failure_backoff(Duration::ZERO, Duration::ZERO)
        .layer(echo_authorization());

    let error = authorization(&mut service).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::LoginTransport);
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-2");
}

#[tokio::test(start_paused = true)]
async fn token_without_expiry_lives_max_lifetime() {
    let source = ScriptedSource::without_expiry();
    let mut service = BearerAuthLayer::new(source.clone())
        .max_token_lifetime(Duration::from_secs(3600))
        .layer(echo_authorization());
    authorization(&mut service).await.unwrap();

    advance(Duration::from_secs(3540)).await;
    authorization(&mut service).await.unwrap();
    settle().await;
    assert_eq!(source.fetches(), 1);
    advance(Duration::from_secs(1)).await;
    authorization(&mut service).await.unwrap();
    settle().await;
    assert_eq!(source.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_login() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    source.set_delay(Duration::from_millis(500));
    let service = BearerAuthLayer::new(source.clone()).layer(echo_authorization());

    let calls = (0..100).map(|_| {
        let mut service = service.clone();
        tokio::spawn(async move { authorization(&mut service).await })
    });
    let calls: Vec<_> = calls.collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "Bearer token-1");
    }
    assert_eq!(source.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn login_before_clear_is_not_cached() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    source.set_delay(Duration::from_secs(2));
    let layer = BearerAuthLayer::new(source.clone());
    let service = layer.layer(echo_authorization());
    let mut waiting = service.clone();
    let first = tokio::spawn(async move { authorization(&mut waiting).await });
    settle().await;

    layer.cache().clear().await;
    assert_eq!(first.await.unwrap().unwrap(), "Bearer token-1");
    let mut service = service;
    assert_eq!(authorization(&mut service).await.unwrap(), "Bearer token-2");
    assert_eq!(source.fetches(), 2);
}
