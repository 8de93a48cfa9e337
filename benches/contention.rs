//! Cost per request when 1, 2, 8 or 64 tasks send through clones of one layered service at
//! once, all reading the same cached token.
//!
//! The inner service responds at once, so every task runs its share of requests without
//! waiting. What runs in parallel are the runtime's worker threads, one per core, so on a
//! 2-core machine at most two tasks touch the shared cache at the same moment, however many
//! tasks there are. Three variants: the bare service for the cost of the tasks themselves,
//! the attach-token sub-layer alone, and the full `BearerAuthLayer`. Criterion reports the
//! wall time per request, all tasks together, and each benchmark then prints the CPU time
//! per request.
//!
//! Run with `cargo bench --bench contention`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use resq_auth::{AttachTokenLayer, BearerAuthLayer, StaticToken, TokenCache};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

#[path = "support/cpu.rs"]
mod cpu;
use cpu::CpuTally;

const TOKEN: &str = "bench-token-0123456789abcdef";
const URI: &str = "http://127.0.0.1:8080/evidence";
const TASKS: [usize; 4] = [1, 2, 8, 64];

/// The result type of the no-op inner service.
type NoopResult = Result<Response<Full<Bytes>>, Infallible>;

/// An inner service that returns `200` with an empty body at once, without allocating.
fn noop<B>() -> impl Service<
    Request<B>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = Ready<NoopResult>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|_request: Request<B>| ready(Ok(Response::new(Full::default()))))
}

/// Sends `requests` requests from `tasks` tasks, each with its own clone of `service`, and
/// returns the time from the first spawn to the last task's end.
async fn drive<S>(service: &S, requests: u64, tasks: usize) -> Duration
where
    S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let tasks_count = (tasks as u64).min(requests).max(1);
    let start = Instant::now();
    let mut set = JoinSet::new();
    for task in 0..tasks_count {
        // Spreads the remainder over the first tasks, so the shares differ by at most one.
        let share = requests / tasks_count + u64::from(task < requests % tasks_count);
        let mut service = service.clone();
        set.spawn(async move {
            for _ in 0..share {
                let request = Request::get(URI)
                    .body(Full::default())
                    .expect("the benchmark request is valid");
                let ready = service.ready().await.expect("the service is ready");
                let response = ready.call(request).await.expect("the request succeeds");
                black_box(response);
            }
        });
    }
    while let Some(result) = set.join_next().await {
        result.expect("a request task panicked");
    }
    start.elapsed()
}

/// Times `service` at `tasks` tasks and prints the CPU time per request, all threads
/// together.
fn bench_service<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    service: &S,
    tasks: usize,
) where
    S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let mut tally = CpuTally::default();
    group.bench_function(BenchmarkId::new(name, tasks), |b| {
        b.iter_custom(|requests| {
            tally.sample(requests, || {
                runtime.block_on(drive(service, requests, tasks))
            })
        });
    });
    tally.report(&format!("contention/{name}/{tasks}"));
}

fn contention(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");

    let bare = noop();
    let attach_cache = TokenCache::new(StaticToken::new(TOKEN));
    let attach = AttachTokenLayer::new(attach_cache.clone()).layer(noop());
    let layer = BearerAuthLayer::new(StaticToken::new(TOKEN));
    let full = layer.layer(noop());
    // Fills both caches before timing starts.
    runtime.block_on(drive(&attach, 1, 1));
    runtime.block_on(drive(&full, 1, 1));

    let mut group = c.benchmark_group("contention");
    for tasks in TASKS {
        bench_service(&mut group, &runtime, "bare", &bare, tasks);
        bench_service(&mut group, &runtime, "attach_token", &attach, tasks);
        bench_service(&mut group, &runtime, "bearer_auth_layer", &full, tasks);
    }
    group.finish();

    // A second login would mean that some requests waited for the cache.
    assert_eq!(
        attach_cache.stats().logins,
        1,
        "the attach-token cache logged in again"
    );
    assert_eq!(
        layer.cache().stats().logins,
        1,
        "the layer's cache logged in again"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = contention
}
criterion_main!(benches);
