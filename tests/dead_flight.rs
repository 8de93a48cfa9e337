//! A background refresh whose runtime shut down leaves a dead login flight behind. The
//! next caller on a live runtime must notice it and start a new refresh, instead of taking
//! the dead flight for a running one.
//!
//! Each runtime has its own paused clock, started from the real clock, so both runtimes
//! advance by the same amount to land inside the refresh margin of the same token.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use resq_auth::BearerAuthLayer;
use support::{ScriptedSource, echo_authorization};
use tower::{Layer, ServiceExt};

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

async fn token<S>(service: &S) -> String
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = http::Response<resq_auth::ResponseBody<String>>,
            Error = resq_auth::Error,
        > + Clone,
{
    let request = Request::get("/evidence").body(Full::default()).unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    response.into_body().into_inner()
}

/// Lets spawned tasks run.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn refresh_restarts_after_runtime_drop() {
    let source = ScriptedSource::new(Duration::from_secs(3600));
    let layer = BearerAuthLayer::new(source.clone())
        .min_login_interval(Duration::ZERO)
        .login_failure_backoff(Duration::ZERO, Duration::ZERO);
    let service = layer.layer(echo_authorization());

    // Runtime A logs in, then starts a refresh that is still running when A shuts down.
    let a = paused_runtime();
    a.block_on(async {
        assert_eq!(token(&service).await, "Bearer token-1");
        source.set_delay(Duration::from_secs(30));
        tokio::time::advance(Duration::from_secs(3541)).await;
        assert_eq!(token(&service).await, "Bearer token-1");
        settle().await;
    });
    assert_eq!(source.fetches(), 2, "refresh started on runtime A");
    drop(a);

    // Runtime B, inside the margin of the same token: a refresh is due again.
    source.set_delay(Duration::ZERO);
    let b = paused_runtime();
    b.block_on(async {
        tokio::time::advance(Duration::from_secs(3541)).await;
        assert_eq!(token(&service).await, "Bearer token-1");
        settle().await;
        assert_eq!(source.fetches(), 3, "the dead flight blocked the refresh");
        assert_eq!(token(&service).await, "Bearer token-3");
    });
}
