//! A token with a zero refresh margin must not be attached at the exact instant it
//! expires: the lock-free cache read and the expiry check must agree.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use resq_auth::BearerAuthLayer;
use support::{ScriptedSource, echo_authorization};
use tokio::time::advance;
use tower::{Layer, ServiceExt};

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

#[tokio::test(start_paused = true)]
async fn zero_margin_expired_token() {
    let source = ScriptedSource::new(Duration::from_secs(10));
    let layer = BearerAuthLayer::new(source.clone())
        .refresh_before(Duration::ZERO)
        .min_login_interval(Duration::ZERO);
    let service = layer.layer(echo_authorization());
    assert_eq!(token(&service).await, "Bearer token-1");

    advance(Duration::from_secs(10)).await; // exactly at expiry: the token is no longer valid
    assert_eq!(
        layer.cache().generation().await,
        None,
        "the cache itself calls it expired"
    );
    assert_eq!(
        token(&service).await,
        "Bearer token-2",
        "expired token-1 was attached"
    );
}
