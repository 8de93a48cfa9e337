//! Settings at the top of their range, such as `max_token_lifetime(Duration::MAX)`, must
//! not overflow an instant: the login succeeds once and the token is reused.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use resq_auth::BearerAuthLayer;
use support::{ScriptedSource, echo_authorization};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn max_token_lifetime_duration_max() {
    let source = ScriptedSource::without_expiry();
    let layer = BearerAuthLayer::new(source.clone()).max_token_lifetime(Duration::MAX);
    let service = layer.layer(echo_authorization());

    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let request = Request::get("/evidence")
            .body(Full::<Bytes>::default())
            .unwrap();
        outcomes.push(
            service
                .clone()
                .oneshot(request)
                .await
                .map(|response| response.into_body().into_inner())
                .map_err(|error| error.to_string()),
        );
    }
    for outcome in &outcomes {
        assert_eq!(outcome.as_deref(), Ok("Bearer token-1"));
    }
    assert_eq!(source.fetches(), 1);
}
