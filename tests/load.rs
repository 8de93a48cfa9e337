//! Many concurrent callers against the mock ResQ API on loopback, through hyper-util's
//! client: 10,000 requests on an empty cache share one login, and 1,000 requests that get
//! `401` for the same token share one new login.
//!
//! The attach-token layer consults the token cache before it calls the inner service. So
//! the inner service bounds the open sockets without bounding the callers that reach the
//! cache: it holds one of `MAX_CONNECTIONS` semaphore permits while its request is in
//! flight. HTTP/1 needs one connection per request in flight, so 10,000 requests in flight
//! would take 20,000 file descriptors: one client and one server socket each.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuth, BearerAuthLayer, LoginSource, ReplayBody};
use support::{get, http_client};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

const MAX_CONNECTIONS: usize = 256;
/// The bound on every wait in this file.
const WAIT: Duration = Duration::from_secs(30);

type ClientError = hyper_util::client::legacy::Error;
type Inner = BoxCloneSyncService<Request<ReplayBody<Full<Bytes>>>, Response<Incoming>, ClientError>;
type LoginClient = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, ClientError>;

/// Builds the inner service: hyper-util's client, with at most `MAX_CONNECTIONS` requests
/// in flight and as many idle connections kept.
fn bounded_client() -> Inner {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_CONNECTIONS)
        .build_http();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    BoxCloneSyncService::new(tower::service_fn(move |request| {
        let client: Client<_, ReplayBody<Full<Bytes>>> = client.clone();
        let permits = permits.clone();
        async move {
            let _permit = permits.acquire_owned().await.unwrap();
            client.request(request).await
        }
    }))
}

/// Builds a login source whose client holds every login until `gate` gets permits.
fn gated_login_source(server: &MockServer, gate: Arc<Semaphore>) -> LoginSource<LoginClient> {
    let client = http_client::<Full<Bytes>>();
    let gated = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let client = client.clone();
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire_owned().await.unwrap();
            client.request(request).await
        }
    });
    LoginSource::new(
        BoxCloneSyncService::new(gated),
        server.base_uri(),
        server.credentials(),
    )
}

/// Spawns `future` into `calls`. The task counts itself in `polled` on its first poll and
/// notifies `all_polled` when the count reaches `total`.
fn spawn_counted<F>(
    calls: &mut JoinSet<F::Output>,
    future: F,
    polled: &Arc<AtomicUsize>,
    all_polled: &Arc<Notify>,
    total: usize,
) where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let polled = polled.clone();
    let all_polled = all_polled.clone();
    calls.spawn(async move {
        if polled.fetch_add(1, Ordering::SeqCst) + 1 == total {
            all_polled.notify_one();
        }
        future.await
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_share_one_login() {
    const CALLERS: usize = 10_000;
    let server = MockServer::start().await.unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let layer = BearerAuthLayer::new(gated_login_source(&server, gate.clone()));
    let mut service: BearerAuth<Inner> = layer.layer(bounded_client());

    let polled = Arc::new(AtomicUsize::new(0));
    let all_polled = Arc::new(Notify::new());
    let mut calls = JoinSet::new();
    for _ in 0..CALLERS {
        let future = service
            .ready()
            .await
            .unwrap()
            .call(get(&server, "/evidence"));
        spawn_counted(&mut calls, future, &polled, &all_polled, CALLERS);
    }
    // Every caller has reached the token cache while the login is held at the gate.
    timeout(WAIT, all_polled.notified()).await.unwrap();
    assert_eq!(server.login_attempts(), 0);
    // Enough permits for any number of logins, so that a second one would be counted.
    gate.add_permits(CALLERS);

    let mut statuses = Vec::with_capacity(CALLERS);
    while let Some(result) = timeout(WAIT, calls.join_next()).await.unwrap() {
        statuses.push(result.unwrap().unwrap().status());
    }

    assert_eq!(statuses.len(), CALLERS);
    assert!(statuses.iter().all(|status| *status == StatusCode::OK));
    assert_eq!(server.login_attempts(), 1);
    assert_eq!(server.logins(), 1);
    assert_eq!(layer.cache().stats().logins, 1);
    let token = &server.issued_tokens()[0];
    assert_eq!(server.requests_with_token(token), CALLERS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_401s_share_one_login() {
    const CALLERS: usize = 1_000;
    let server = MockServer::start().await.unwrap();
    let layer =
        BearerAuthLayer::new(support::login_source(&server)).min_login_interval(Duration::ZERO);
    let mut service: BearerAuth<Inner> = layer.layer(bounded_client());
    let primer = service
        .ready()
        .await
        .unwrap()
        .call(get(&server, "/evidence"));
    let primer = timeout(WAIT, primer).await.unwrap().unwrap();
    assert_eq!(primer.status(), StatusCode::OK);

    server.revoke_all_tokens();
    // `call` attaches the cached token at once, so every request carries the revoked one
    // before any of them is polled.
    let mut futures = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        futures.push(
            service
                .ready()
                .await
                .unwrap()
                .call(get(&server, "/evidence")),
        );
    }
    let mut calls = JoinSet::new();
    for future in futures {
        calls.spawn(future);
    }
    let mut statuses = Vec::with_capacity(CALLERS);
    while let Some(result) = timeout(WAIT, calls.join_next()).await.unwrap() {
        statuses.push(result.unwrap().unwrap().status());
    }

    assert_eq!(statuses.len(), CALLERS);
    assert!(statuses.iter().all(|status| *status == StatusCode::OK));
    assert_eq!(server.login_attempts(), 2);
    assert_eq!(server.logins(), 2);
    let tokens = server.issued_tokens();
    assert_eq!(server.requests_with_token(&tokens[0]), 1 + CALLERS);
    assert_eq!(server.requests_with_token(&tokens[1]), CALLERS);
    assert_eq!(layer.cache().stats().replays, CALLERS as u64);
}
