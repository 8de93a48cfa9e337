//! Heap allocations per request once a token is cached, counted by a global allocator.
//!
//! The allocator counts per thread, and only while that thread has counting switched on,
//! so tests that run in parallel on other threads do not disturb a count. Each test sends
//! its requests on a current-thread runtime, which polls every future and spawned task on
//! the test's thread. The requests are built before counting starts, with room in the
//! header map for the `Authorization` header, and the inner service responds without
//! allocating, so a count is what the layers allocate.
//!
//! `GlobalAlloc` is an unsafe trait, so this file allows `unsafe_code` for the allocator
//! alone. The manifest denies that lint for the package, and `src/lib.rs` forbids it for the
//! library.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Ready, ready};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use resq_auth::{AttachTokenLayer, BearerAuthLayer, StaticToken, TokenCache};
use tower::{Layer, Service, ServiceExt};

/// The system allocator, counting the allocations and reallocations of each thread while
/// that thread's `COUNTING` flag is set.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

impl CountingAllocator {
    fn record(&self) {
        // `try_with`, unlike `with`, cannot panic, which an allocator must not do.
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
        }
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, so each upholds the
// `GlobalAlloc` contract exactly as `System` does. `record` neither allocates nor unwinds:
// both thread-locals are const-initialized `Cell`s without destructors.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.record();
        // SAFETY: the caller's arguments, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.record();
        // SAFETY: the caller's arguments, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.record();
        // SAFETY: the caller's arguments, forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's arguments, forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Switches counting on for this thread and returns the count so far.
fn start_counting() -> u64 {
    COUNTING.with(|counting| counting.set(true));
    ALLOCATIONS.with(Cell::get)
}

/// Switches counting off for this thread and returns the allocations since `start`.
fn stop_counting(start: u64) -> u64 {
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.with(Cell::get) - start
}

const TOKEN: &str = "allocation-test-token";
const API: &str = "http://127.0.0.1:8080";
const REQUESTS: u64 = 1000;

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

/// Builds a request whose header map already has room for the `Authorization` header, so
/// that inserting it does not allocate. The URI is parsed from a string, as clients do.
fn request() -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::default());
    *request.uri_mut() = format!("{API}/evidence")
        .parse::<Uri>()
        .expect("the test URI is valid");
    *request.headers_mut() = HeaderMap::with_capacity(4);
    request
}

/// Like [`request`], with a `Content-Type` header.
fn request_with_header() -> Request<Full<Bytes>> {
    let mut request = request();
    request
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    request
}

async fn send<S>(service: &mut S, request: Request<Full<Bytes>>)
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let ready = service.ready().await.expect("the service is ready");
    let response = ready.call(request).await.expect("the request succeeds");
    drop(response);
}

/// Sends `REQUESTS` requests from `build_request`, all built beforehand, and returns the
/// allocations made while sending them and dropping their responses.
fn allocations<S>(mut service: S, build_request: fn() -> Request<Full<Bytes>>) -> u64
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");
    runtime.block_on(async {
        // Fills the token cache, so that the counted requests find a valid token.
        for _ in 0..3 {
            send(&mut service, build_request()).await;
        }
        let requests: Vec<_> = (0..REQUESTS).map(|_| build_request()).collect();
        let start = start_counting();
        for request in requests {
            send(&mut service, request).await;
        }
        stop_counting(start)
    })
}

#[test]
fn attach_token_allocates_nothing() {
    let cache = TokenCache::new(StaticToken::new(TOKEN));
    let service = AttachTokenLayer::new(cache.clone()).layer(noop());
    assert_eq!(allocations(service, request), 0);
    assert_eq!(cache.stats().logins, 1, "a counted request logged in");
}

#[test]
fn attach_token_with_origin_allocates_nothing() {
    let source = StaticToken::new(TOKEN)
        .with_origin(API.parse().unwrap())
        .unwrap();
    let cache = TokenCache::new(source);
    let service = AttachTokenLayer::new(cache.clone()).layer(noop());
    assert_eq!(allocations(service, request), 0);
    assert_eq!(cache.stats().logins, 1, "a counted request logged in");
}

/// Allocations of the full stack per request, the same in debug and release builds:
///
/// 1. `ReplayBody::new` puts the body's recording in an `Arc<Mutex<_>>`, which the copies
///    sent by a replay share.
/// 2. The throttle layer copies the request before sending it, because tower's `Retry`
///    calls its policy's `clone_request` for every request up front, in case of a retry.
///    Cloning the header map allocates its index table, since the map has capacity even
///    though it is empty.
/// 3. The auth-retry layer copies the request the same way, with one more index table.
///
/// The URI clones do not allocate, because parsing a URI already shares its bytes. With
/// headers in the request, each copy also allocates the header entries, one more
/// allocation per copy (see `bearer_auth_layer_with_header_allocations`).
const FULL_STACK_ALLOCATIONS: u64 = 3;

#[test]
fn bearer_auth_layer_allocations() {
    let layer = BearerAuthLayer::new(StaticToken::new(TOKEN));
    let service = layer.layer(noop());
    assert_eq!(
        allocations(service, request),
        FULL_STACK_ALLOCATIONS * REQUESTS
    );
    assert_eq!(
        layer.cache().stats().logins,
        1,
        "a counted request logged in"
    );
}

#[test]
fn bearer_auth_layer_with_origin_allocations() {
    let source = StaticToken::new(TOKEN)
        .with_origin(API.parse().unwrap())
        .unwrap();
    let layer = BearerAuthLayer::new(source);
    let service = layer.layer(noop());
    assert_eq!(
        allocations(service, request),
        FULL_STACK_ALLOCATIONS * REQUESTS
    );
    assert_eq!(
        layer.cache().stats().logins,
        1,
        "a counted request logged in"
    );
}

#[test]
fn bearer_auth_layer_with_header_allocations() {
    let layer = BearerAuthLayer::new(StaticToken::new(TOKEN));
    let service = layer.layer(noop());
    // Each of the two request copies also allocates the header map's entries.
    assert_eq!(
        allocations(service, request_with_header),
        (FULL_STACK_ALLOCATIONS + 2) * REQUESTS
    );
    assert_eq!(
        layer.cache().stats().logins,
        1,
        "a counted request logged in"
    );
}
