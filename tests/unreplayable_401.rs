//! A 401 that cannot be replayed, because the body is over the replay limit or the request
//! was already replayed once, still drops the rejected token, so the next request logs in.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use resq_auth::BearerAuthLayer;
use resq_auth::mock::MockServer;
use support::{http_client, login_source};
use tower::{Layer, ServiceExt};

fn big_post(server: &MockServer) -> Request<Full<Bytes>> {
    Request::post(server.uri("/ipfs/upload"))
        .body(Full::new(Bytes::from(vec![b'x'; 100 * 1024])))
        .unwrap()
}

#[tokio::test]
async fn oversized_body_401_drops_token() {
    let server = MockServer::start().await.unwrap();
    let layer = BearerAuthLayer::new(login_source(&server)).min_login_interval(Duration::ZERO);
    let service = layer.layer(http_client());

    // Log in with a small request.
    let small = Request::get(server.uri("/evidence"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(
        service.clone().oneshot(small).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(server.logins(), 1);

    server.revoke_all_tokens();

    // Over the cap: the 401 comes back without a replay (expected).
    let first = service.clone().oneshot(big_post(&server)).await.unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);

    // The rejected token must have been dropped, so this upload logs in again and succeeds.
    let second = service.clone().oneshot(big_post(&server)).await.unwrap();
    assert_eq!(
        second.status(),
        StatusCode::OK,
        "the revoked token was kept: logins = {}",
        server.logins()
    );
    assert_eq!(server.logins(), 2);
}

/// Checks the same cause with lower impact. After the replay, `clone_request` returns `None`,
/// so tower's `Retry` never calls `retry` for the second 401 and the token stays cached.
#[tokio::test]
async fn second_401_drops_token() {
    let server = MockServer::start().await.unwrap();
    let layer = BearerAuthLayer::new(login_source(&server)).min_login_interval(Duration::ZERO);
    let service = layer.layer(http_client());
    let get = || {
        Request::get(server.uri("/evidence"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(
        service.clone().oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );

    server.respond_next(
        2,
        resq_auth::mock::ScriptedResponse::new(StatusCode::UNAUTHORIZED),
    );
    let response = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.logins(), 2, "one login for the replay");
    let generation = layer.cache().generation().await;
    assert_eq!(
        generation, None,
        "the token that the server rejected on the replay is still cached"
    );
}
