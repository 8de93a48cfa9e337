//! End-to-end throughput on loopback: hyper-util's legacy client sends `GET` requests to a
//! hyper server on 127.0.0.1 that this benchmark starts, bare and with `BearerAuthLayer`,
//! at 1 and at 64 requests in flight.
//!
//! Client and server share one multi-thread runtime, so on a small machine they compete for
//! the same cores. Each timed sample sends its requests from as many tasks as there are
//! requests in flight, on connections that the warm-up opened. Criterion reports the time
//! per request and, from it, requests per second.
//!
//! Run with `cargo bench --bench loopback`. With `LOOPBACK_COUNT=VARIANT:REQUESTS` set, the
//! binary skips criterion and sends that many requests one at a time, for counting
//! instructions with callgrind.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use resq_auth::{BearerAuth, BearerAuthLayer, ReplayBody, StaticToken};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceExt};

#[path = "support/cpu.rs"]
mod cpu;
use cpu::CpuTally;

const TOKEN: &str = "bench-token-0123456789abcdef";
const IN_FLIGHT: [usize; 2] = [1, 64];
const WARM_UP_REQUESTS_PER_TASK: u64 = 20;

/// Returns `200` with a two-byte body for every request.
async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Starts an HTTP/1.1 server on a free port of 127.0.0.1. It runs until the runtime shuts
/// down.
async fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port succeeds");
    let address = listener.local_addr().expect("the listener has an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer));
                // A client that closes its connection ends this task, which is not an error here.
                let _ = connection.await;
            });
        }
    });
    address
}

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

/// Sends `requests` requests from `in_flight` tasks, each with its own clone of `client`,
/// reads every response body to its end and returns the time it all took.
async fn drive<S, ResBody>(client: &S, uri: &Uri, requests: u64, in_flight: usize) -> Duration
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: std::fmt::Debug,
{
    let tasks_count = (in_flight as u64).min(requests).max(1);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for task in 0..tasks_count {
        // Spreads the remainder over the first tasks, so the shares differ by at most one.
        let share = requests / tasks_count + u64::from(task < requests % tasks_count);
        let mut client = client.clone();
        let uri = uri.clone();
        tasks.spawn(async move {
            for _ in 0..share {
                let request = Request::get(uri.clone())
                    .body(Full::default())
                    .expect("the benchmark request is valid");
                let ready = client.ready().await.expect("the client is ready");
                let response = ready.call(request).await.expect("the request succeeds");
                assert_eq!(response.status(), StatusCode::OK);
                let body = response.into_body().collect().await;
                body.expect("the response body arrives");
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("a request task panicked");
    }
    start.elapsed()
}

/// Opens the connections that the timed samples reuse, then times `client` at `in_flight`
/// and prints the CPU time per request of client and server together.
fn bench_client<S, ResBody>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    client: &S,
    uri: &Uri,
    in_flight: usize,
) where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: std::fmt::Debug,
{
    let warm_up = WARM_UP_REQUESTS_PER_TASK * in_flight as u64;
    runtime.block_on(drive(client, uri, warm_up, in_flight));
    let mut tally = CpuTally::default();
    group.bench_function(BenchmarkId::new(name, in_flight), |b| {
        b.iter_custom(|requests| {
            tally.sample(requests, || {
                runtime.block_on(drive(client, uri, requests, in_flight))
            })
        });
    });
    tally.report(&format!("loopback/{name}/{in_flight}"));
}

/// Returns the origin of the server at `address` and the URI that every request goes to.
fn server_uris(address: SocketAddr) -> (Uri, Uri) {
    let base = format!("http://{address}")
        .parse()
        .expect("the server URI is valid");
    let uri = format!("http://{address}/evidence")
        .parse()
        .expect("the request URI is valid");
    (base, uri)
}

/// hyper-util's client inside `BearerAuthLayer`, which hands it `ReplayBody` bodies.
type LayeredClient = BearerAuth<Client<HttpConnector, ReplayBody<Full<Bytes>>>>;

fn bare_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(connector())
}

/// Returns the layer, to read its cache's stats, and the client it wraps, with the token
/// restricted to the server's origin.
fn layered_client(base: Uri) -> (BearerAuthLayer, LayeredClient) {
    let source = StaticToken::new(TOKEN)
        .with_origin(base)
        .expect("the origin is valid");
    let layer = BearerAuthLayer::new(source);
    let client = layer.layer(Client::builder(TokioExecutor::new()).build(connector()));
    (layer, client)
}

fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");
    let address = runtime.block_on(start_server());
    let (base, uri) = server_uris(address);
    let bare = bare_client();
    let (layer, layered) = layered_client(base);

    // Bare and layered alternate, so that a slow spell of a shared machine is less likely
    // to hit only one of them.
    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Elements(1));
    for in_flight in IN_FLIGHT {
        bench_client(&mut group, &runtime, "bare", &bare, &uri, in_flight);
        bench_client(
            &mut group,
            &runtime,
            "bearer_auth_layer",
            &layered,
            &uri,
            in_flight,
        );
    }
    group.finish();

    // A second login would mean that some requests waited for the cache.
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
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12));
    targets = loopback
}
/// Sends `requests` requests one at a time through the variant named `variant`, after 20
/// that open the connection and fill the token cache, with client and server on one
/// current-thread runtime. A run with `valgrind --tool=callgrind` counts their instructions
/// in user space, client and server together.
fn count_instructions(variant: &str, requests: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");
    runtime.block_on(async {
        let (base, uri) = server_uris(start_server().await);
        match variant {
            "bare" => drive(&bare_client(), &uri, requests + 20, 1).await,
            "bearer_auth_layer" => drive(&layered_client(base).1, &uri, requests + 20, 1).await,
            other => {
                panic!("unknown variant `{other}` in {COUNT_VAR}; use bare or bearer_auth_layer")
            }
        };
    });
}

/// The environment variable that switches the binary from criterion to
/// [`count_instructions`], set to `VARIANT:REQUESTS`, for example `bearer_auth_layer:2000`.
const COUNT_VAR: &str = "LOOPBACK_COUNT";

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
