//! Per-request overhead of the layers over an inner service that responds at once.
//!
//! Five variants run in one criterion group so that one run compares them: the bare
//! service, tower-http's `AddAuthorizationLayer::bearer` with a fixed token, the
//! attach-token sub-layer alone, and the full `BearerAuthLayer` without and with an API
//! origin. Every variant builds its request inside the timed loop, so the difference
//! between two medians is the cost of the layers. The token caches are filled before timing
//! starts.
//!
//! Run with `cargo bench --bench overhead`. With `OVERHEAD_COUNT=VARIANT:REQUESTS` set, the
//! binary skips criterion and sends that many requests through one variant, for counting
//! instructions with callgrind.

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::Full;
use resq_auth::{AttachTokenLayer, BearerAuthLayer, StaticToken, TokenCache};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_http::auth::AddAuthorizationLayer;

#[path = "support/cpu.rs"]
mod cpu;
use cpu::CpuTally;

const TOKEN: &str = "bench-token-0123456789abcdef";
const ORIGIN: &str = "http://127.0.0.1:8080";
const URI: &str = "http://127.0.0.1:8080/evidence";

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

/// Builds the request that every variant sends. The URI is parsed from a string, as a
/// client usually does.
fn request() -> Request<Full<Bytes>> {
    Request::get(URI)
        .body(Full::default())
        .expect("the benchmark request is valid")
}

/// Sends `iterations` requests one after the other and returns the time they took.
fn run<S>(runtime: &Runtime, service: &mut S, iterations: u64) -> Duration
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Debug,
{
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iterations {
            let request = request();
            let ready = service.ready().await.expect("the service is ready");
            let response = ready.call(request).await.expect("the request succeeds");
            black_box(response);
        }
        start.elapsed()
    })
}

/// Sends one request so that the token cache contains a valid token before timing starts.
fn warm<S>(runtime: &Runtime, service: &mut S)
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Debug,
{
    run(runtime, service, 1);
}

fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the runtime starts")
}

/// Returns a token source restricted to the API origin, as `LoginSource` always is.
fn source_with_origin() -> StaticToken {
    StaticToken::new(TOKEN)
        .with_origin(ORIGIN.parse().expect("the origin URI is valid"))
        .expect("the origin is valid")
}

/// Times `service` and prints the CPU time per request, which shared machines disturb less.
fn bench_service<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    service: &mut S,
) where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Debug,
{
    let mut tally = CpuTally::default();
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| tally.sample(iterations, || run(runtime, service, iterations)));
    });
    tally.report(&format!("overhead/{name}"));
}

fn overhead(c: &mut Criterion) {
    let runtime = current_thread_runtime();

    let mut bare = noop();
    let mut tower_http = AddAuthorizationLayer::bearer(TOKEN).layer(noop());
    let attach_cache = TokenCache::new(StaticToken::new(TOKEN));
    let mut attach = AttachTokenLayer::new(attach_cache.clone()).layer(noop());
    let layer = BearerAuthLayer::new(StaticToken::new(TOKEN));
    let mut full = layer.layer(noop());
    // `LoginSource` always has an API origin, so every request is also matched against it.
    let origin_layer = BearerAuthLayer::new(source_with_origin());
    let mut full_origin = origin_layer.layer(noop());
    warm(&runtime, &mut attach);
    warm(&runtime, &mut full);
    warm(&runtime, &mut full_origin);

    let mut group = c.benchmark_group("overhead");
    bench_service(&mut group, &runtime, "bare", &mut bare);
    bench_service(&mut group, &runtime, "tower_http_bearer", &mut tower_http);
    bench_service(&mut group, &runtime, "attach_token", &mut attach);
    bench_service(&mut group, &runtime, "bearer_auth_layer", &mut full);
    bench_service(
        &mut group,
        &runtime,
        "bearer_auth_layer_origin",
        &mut full_origin,
    );
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
    assert_eq!(
        origin_layer.cache().stats().logins,
        1,
        "the origin layer's cache logged in again"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = overhead
}
/// Sends `requests` requests through the variant named `variant`, after one that fills the
/// token cache. A run with `valgrind --tool=callgrind` counts their instructions.
fn count_instructions(variant: &str, requests: u64) {
    let runtime = current_thread_runtime();
    match variant {
        "bare" => run(&runtime, &mut noop(), requests + 1),
        "tower_http_bearer" => {
            let mut service = AddAuthorizationLayer::bearer(TOKEN).layer(noop());
            run(&runtime, &mut service, requests + 1)
        }
        "attach_token" => {
            let cache = TokenCache::new(StaticToken::new(TOKEN));
            let mut service = AttachTokenLayer::new(cache).layer(noop());
            run(&runtime, &mut service, requests + 1)
        }
        "bearer_auth_layer" => {
            let mut service = BearerAuthLayer::new(StaticToken::new(TOKEN)).layer(noop());
            run(&runtime, &mut service, requests + 1)
        }
        "bearer_auth_layer_origin" => {
            let mut service = BearerAuthLayer::new(source_with_origin()).layer(noop());
            run(&runtime, &mut service, requests + 1)
        }
        other => panic!(
            "unknown variant `{other}` in {COUNT_VAR}; use bare, tower_http_bearer, \
             attach_token, bearer_auth_layer or bearer_auth_layer_origin"
        ),
    };
}

/// The environment variable that switches the binary from criterion to
/// [`count_instructions`], set to `VARIANT:REQUESTS`, for example `bearer_auth_layer:11000`.
const COUNT_VAR: &str = "OVERHEAD_COUNT";

fn main() {
    if let Ok(spec) = std::env::var(COUNT_VAR) {
        let Some((variant, requests)) = spec.split_once(':') else {
            panic!("{COUNT_VAR}=`{spec}` is invalid; write VARIANT:REQUESTS");
        };
        let requests = requests
            .parse()
            .unwrap_or_else(|_| panic!("{COUNT_VAR}: `{requests}` is not a request count"));
        count_instructions(variant, requests);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
