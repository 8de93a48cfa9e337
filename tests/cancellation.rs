//! Dropping request futures at random points, the one that started the login included,
//! never stalls the other callers, never starts a second login and leaves the token cache
//! consistent.
//!
//! Runs on Tokio's paused clock with an in-process token source and inner service, so
//! each login takes exactly the source's delay.

mod support;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use resq_auth::{BearerAuthLayer, Error, ResponseBody};
use support::{ScriptedSource, echo_authorization};
use tokio::time::{Instant, advance, timeout};
use tower::{Layer, Service, ServiceExt};

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<String>>, Error>>>>;

/// The point at which a request future of a round is dropped, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Polled until it completes.
    Keep,
    /// Dropped before its first poll.
    DropUnpolled,
    /// Dropped right after its first poll.
    DropAfterPoll,
    /// Dropped after the clock advanced by half the login delay.
    DropMidLogin,
}

fn random_fate(rng: &mut fastrand::Rng) -> Fate {
    match rng.u8(0..10) {
        0..=3 => Fate::Keep,
        4..=5 => Fate::DropUnpolled,
        6..=7 => Fate::DropAfterPoll,
        _ => Fate::DropMidLogin,
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::get("/evidence").body(Full::default()).unwrap()
}

/// Polls `future` once with the test task's waker.
async fn poll_once(
    future: &mut ResponseFuture,
) -> Poll<Result<Response<ResponseBody<String>>, Error>> {
    poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

#[tokio::test(start_paused = true)]
async fn dropped_requests_keep_one_login_per_round() {
    const ROUNDS: usize = 1_000;
    let source = ScriptedSource::new(Duration::from_secs(3600));
    let layer = BearerAuthLayer::new(source.clone());
    let cache = layer.cache().clone();
    let mut service = layer.layer(echo_authorization());
    let mut rng = fastrand::Rng::with_seed(0x7e57_ca9c);
    let mut rounds_with_starter_dropped = 0;
    let mut rounds_with_all_dropped = 0;
    let mut rounds_with_starter_dropped_and_survivors = 0;

    for round in 1..=ROUNDS {
        cache.clear().await;
        let started = Instant::now();
        let delay = Duration::from_millis(rng.choice([0, 1, 100]).unwrap());
        source.set_delay(delay);
        let expected = format!("Bearer token-{round}");
        let count = rng.usize(2..=8);
        let fates: Vec<Fate> = (0..count).map(|_| random_fate(&mut rng)).collect();
        let mut futures: Vec<Option<ResponseFuture>> = Vec::with_capacity(count);
        for _ in 0..count {
            let future = service.ready().await.unwrap().call(request());
            futures.push(Some(Box::pin(future)));
        }
        let mut order: Vec<usize> = (0..count).collect();
        rng.shuffle(&mut order);

        // Drop the futures that are never polled.
        for (index, fate) in fates.iter().enumerate() {
            if *fate == Fate::DropUnpolled {
                futures[index] = None;
            }
        }
        // The first future polled after a clear starts the login.
        let mut starter = None;
        let mut completed = Vec::new();
        for &index in &order {
            let Some(future) = futures[index].as_mut() else {
                continue;
            };
            starter.get_or_insert(index);
            if let Poll::Ready(result) = poll_once(future).await {
                completed.push(result);
                futures[index] = None;
            }
        }
        if starter.is_some_and(|index| fates[index] != Fate::Keep) {
            rounds_with_starter_dropped += 1;
        }
        for (index, fate) in fates.iter().enumerate() {
            if *fate == Fate::DropAfterPoll {
                futures[index] = None;
            }
        }
        // Let the login task start before the clock moves.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        advance(delay / 2).await;
        for (index, fate) in fates.iter().enumerate() {
            if *fate == Fate::DropMidLogin {
                futures[index] = None;
            }
        }
        if fates.iter().all(|fate| *fate != Fate::Keep) {
            rounds_with_all_dropped += 1;
        }

        let survivors = futures.iter().flatten().count();
        if survivors > 0 && starter.is_some_and(|index| fates[index] != Fate::Keep) {
            rounds_with_starter_dropped_and_survivors += 1;
        }
        for future in futures.into_iter().flatten() {
            let result = timeout(Duration::from_secs(5), future).await;
            let response = result.unwrap_or_else(|_| panic!("round {round}: request stalled"));
            completed.push(response);
        }
        if survivors > 0 {
            // Every survivor waited for the one login, which started at the first poll.
            // Tokio's timer rounds a deadline up to the next millisecond.
            let waited = started.elapsed();
            assert!(waited >= delay, "round {round}: {waited:?}");
            assert!(
                waited <= delay + Duration::from_millis(1),
                "round {round}: {waited:?}"
            );
        }
        for result in completed {
            let body = result.unwrap().into_body().into_inner();
            assert_eq!(body, expected, "round {round}");
        }
        let next = timeout(
            Duration::from_secs(5),
            service.ready().await.unwrap().call(request()),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: request after the drops stalled"))
        .unwrap();
        assert_eq!(next.into_body().into_inner(), expected, "round {round}");
        assert_eq!(source.fetches(), round, "round {round}: logins");
        assert_eq!(cache.stats().logins, round as u64, "round {round}");
        assert_eq!(
            cache.generation().await,
            Some(round as u64),
            "round {round}"
        );
    }

    // With this seed every case occurs many times, and these counts check that coverage.
    assert!(
        rounds_with_starter_dropped >= 300,
        "{rounds_with_starter_dropped}"
    );
    assert!(rounds_with_all_dropped >= 20, "{rounds_with_all_dropped}");
    assert!(
        rounds_with_starter_dropped_and_survivors >= 100,
        "{rounds_with_starter_dropped_and_survivors}"
    );
}
