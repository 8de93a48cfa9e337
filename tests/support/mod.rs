//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::MockServer;
use resq_auth::{Error, ErrorKind, LoginSource, ReplayBody, Token, TokenFuture, TokenSource};

/// A token source for tests on the paused clock: counts fetches, waits a set delay on the
/// Tokio clock, then returns `token-N` for the N-th fetch or the next scripted failure.
#[derive(Debug, Clone)]
pub struct ScriptedSource {
    script: Arc<Mutex<Script>>,
}

#[derive(Debug)]
struct Script {
    fetches: usize,
    lifetime: Option<Duration>,
    delay: Duration,
    outcomes: VecDeque<Option<ErrorKind>>,
    panic_next: bool,
}

impl ScriptedSource {
    pub fn new(lifetime: Duration) -> Self {
        ScriptedSource {
            script: Arc::new(Mutex::new(Script {
                fetches: 0,
                lifetime: Some(lifetime),
                delay: Duration::ZERO,
                outcomes: VecDeque::new(),
                panic_next: false,
            })),
        }
    }

    pub fn without_expiry() -> Self {
        let source = ScriptedSource::new(Duration::ZERO);
        source.script.lock().unwrap().lifetime = None;
        source
    }

    pub fn set_delay(&self, delay: Duration) {
        self.script.lock().unwrap().delay = delay;
    }

    /// Makes the next fetches fail with `kind`, in order, then succeed again.
    pub fn fail_next(&self, kinds: &[ErrorKind]) {
        let mut script = self.script.lock().unwrap();
        script.outcomes.extend(kinds.iter().copied().map(Some));
    }

    pub fn panic_next(&self) {
        self.script.lock().unwrap().panic_next = true;
    }

    pub fn fetches(&self) -> usize {
        self.script.lock().unwrap().fetches
    }
}

impl TokenSource for ScriptedSource {
    fn fetch(&self) -> TokenFuture<'_> {
        let (number, delay, failure, lifetime, panic) = {
            let mut script = self.script.lock().unwrap();
            script.fetches += 1;
            let panic = std::mem::take(&mut script.panic_next);
            let failure = script.outcomes.pop_front().flatten();
            (
                script.fetches,
                script.delay,
                failure,
                script.lifetime,
                panic,
            )
        };
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            assert!(!panic, "scripted panic in the token source");
            if let Some(kind) = failure {
                return Err(Error::from_source(
                    kind,
                    format!("scripted failure of fetch {number}"),
                ));
            }
            let token = Token::new(format!("token-{number}"));
            Ok(match lifetime {
                Some(lifetime) => token.with_lifetime(lifetime),
                None => token,
            })
        })
    }
}

/// Returns a service that responds 200 with the request's Authorization value as the body, for
/// tests on the paused clock where a socket would let the clock jump.
pub fn echo_authorization() -> impl tower::Service<
    Request<ReplayBody<Full<Bytes>>>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|request: Request<ReplayBody<Full<Bytes>>>| async move {
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(authorization))
    })
}

pub type HttpClient<B> = Client<HttpConnector, B>;

pub fn http_client<B>() -> HttpClient<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// Creates a login source for `server` with its valid credentials.
pub fn login_source(server: &MockServer) -> LoginSource<HttpClient<Full<Bytes>>> {
    LoginSource::new(http_client(), server.base_uri(), server.credentials())
}

pub fn get(server: &MockServer, path: &str) -> Request<Full<Bytes>> {
    Request::get(server.uri(path))
        .body(Full::default())
        .unwrap()
}

pub fn post(server: &MockServer, path: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::post(server.uri(path))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// Reads a response body to bytes.
pub async fn body_bytes<B>(response: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

pub fn status_of<B>(result: &Result<Response<B>, Error>) -> StatusCode {
    match result {
        Ok(response) => response.status(),
        Err(error) => panic!("request failed: {error}"),
    }
}

/// A streaming body fed through a channel: it has no known length, so hyper sends it with
/// chunked transfer encoding, and each chunk arrives only when the test sends it.
#[derive(Debug)]
pub struct ChannelBody {
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// Returns a body that yields `chunks` one at a time from a spawned task.
    pub fn streaming(chunks: Vec<&'static [u8]>) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for chunk in chunks {
                tokio::task::yield_now().await;
                if sender.send(Bytes::from_static(chunk)).await.is_err() {
                    return;
                }
            }
        });
        ChannelBody { receiver }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(http_body::Frame::data(data))))
    }
}

/// Polls `future` in a busy loop, waking it after every poll, so that Tokio's paused clock
/// does not auto-advance while the future waits on sockets: the runtime never goes idle,
/// and the clock moves only through `tokio::time::advance`.
///
/// # Panics
///
/// Panics when the future is still pending after 10 s of real time.
pub async fn without_auto_advance<F: Future>(future: F) -> F::Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(output);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "future still pending after 10 s of real time"
        );
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// Waits until `condition` returns true, without letting the paused clock auto-advance.
///
/// # Panics
///
/// Panics when the condition is still false after 10 s of real time.
pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    without_auto_advance(std::future::poll_fn(|_| {
        if condition() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }))
    .await;
}
