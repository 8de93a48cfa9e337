//! The layer in a tonic client stack: a real tonic server with the gRPC health service on
//! loopback, a real `Channel`, and logins against the mock ResQ API.
//!
//! The gRPC server accepts a token only if the mock issued it and the test has not revoked
//! it, so every count below comes from real requests on real connections.

mod support;

use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::Request;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuth, BearerAuthLayer, ReplayBody};
use support::login_source;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tower::ServiceBuilder;
use tower::util::MapRequest;

/// The service name the health service reports as serving.
const SERVICE: &str = "resq.missions.v1.Missions";

type GrpcBody = tonic::body::Body;

/// The body conversion between the layer and the `Channel`, which accepts only tonic's
/// body type. A function pointer keeps the client type nameable.
type IntoGrpcBody = fn(Request<ReplayBody<GrpcBody>>) -> Request<GrpcBody>;

type AuthedChannel = BearerAuth<MapRequest<Channel, IntoGrpcBody>>;

fn into_grpc_body(request: Request<ReplayBody<GrpcBody>>) -> Request<GrpcBody> {
    request.map(GrpcBody::new)
}

/// What the gRPC server has seen and what it is scripted to do.
#[derive(Default)]
struct ServerState {
    /// The `authorization` metadata of every call, in arrival order.
    authorizations: Vec<Option<String>>,
    revoked: HashSet<String>,
    /// Codes to reject the next calls with, before the token check.
    scripted: VecDeque<Code>,
    /// Open `Watch` streams and the token each was opened with.
    watches: Vec<(String, mpsc::Sender<Result<HealthCheckResponse, Status>>)>,
}

/// A tonic server on loopback whose interceptor checks bearer tokens against the tokens
/// that a [`MockServer`] issued.
#[derive(Clone)]
struct GrpcServer {
    addr: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl GrpcServer {
    async fn start(issuer: MockServer) -> GrpcServer {
        let (reporter, service) = serving_health().await;
        let state = Arc::new(Mutex::new(ServerState::default()));
        let health = RevocableHealth {
            real: service,
            state: state.clone(),
            _reporter: reporter,
        };
        let check_state = state.clone();
        let interceptor =
            move |request: tonic::Request<()>| check_token(&check_state, &issuer, request);

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router =
            Server::builder().add_service(HealthServer::with_interceptor(health, interceptor));
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        GrpcServer { addr, state }
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        self.state.lock().unwrap()
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.lock().authorizations.clone()
    }

    fn reject_next(&self, count: usize, code: Code) {
        self.lock()
            .scripted
            .extend(std::iter::repeat_n(code, count));
    }

    /// Rejects `token` from now on and ends the open `Watch` streams that carried it with
    /// UNAUTHENTICATED in their trailers.
    async fn revoke(&self, token: &str) {
        let senders: Vec<_> = {
            let mut state = self.lock();
            state.revoked.insert(token.to_owned());
            let watches = std::mem::take(&mut state.watches);
            let (ended, open) = watches.into_iter().partition(|(owner, _)| owner == token);
            state.watches = open;
            ended
        };
        for (_, sender) in senders {
            let status = Status::unauthenticated("the token was revoked");
            sender.send(Err(status)).await.unwrap();
        }
    }
}

/// Returns the reporter, which must stay alive for `Watch` to stream, and the real health
/// service with [`SERVICE`] serving.
async fn serving_health() -> (HealthReporter, HealthService) {
    let reporter = HealthReporter::new();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let service = HealthService::from_health_reporter(reporter.clone());
    (reporter, service)
}

/// Records the `authorization` metadata, applies the scripted rejections, then accepts only
/// `Bearer <token>` with a token that `issuer` issued and that was not
/// revoked.
fn check_token(
    state: &Mutex<ServerState>,
    issuer: &MockServer,
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_owned());
    let mut state = state.lock().unwrap();
    state.authorizations.push(authorization.clone());
    if let Some(code) = state.scripted.pop_front() {
        return Err(Status::new(code, "scripted rejection"));
    }
    let token = authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let valid = token.as_ref().is_some_and(|token| {
        issuer.issued_tokens().contains(token) && !state.revoked.contains(token)
    });
    match token {
        Some(token) if valid => {
            request.extensions_mut().insert(CallToken(token));
            Ok(request)
        }
        _ => Err(Status::unauthenticated("invalid or expired token")),
    }
}

/// The token of an accepted call, passed from the interceptor to the service.
#[derive(Clone)]
struct CallToken(String);

/// The real health service, except that a `Watch` stream ends with UNAUTHENTICATED once
/// its token is revoked.
struct RevocableHealth {
    real: HealthService,
    state: Arc<Mutex<ServerState>>,
    _reporter: HealthReporter,
}

#[tonic::async_trait]
impl Health for RevocableHealth {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        self.real.check(request).await
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let CallToken(token) = request.extensions().get::<CallToken>().unwrap().clone();
        let mut real = self.real.watch(request).await?.into_inner();
        let first = real.next().await.unwrap();
        let (sender, receiver) = mpsc::channel(4);
        sender.send(first).await.unwrap();
        self.state.lock().unwrap().watches.push((token, sender));
        Ok(tonic::Response::new(ReceiverStream::new(receiver)))
    }
}

/// Starts a mock ResQ API for logins and a gRPC server that accepts its tokens.
async fn servers() -> (MockServer, GrpcServer) {
    let mock = MockServer::start().await.unwrap();
    let grpc = GrpcServer::start(mock.clone()).await;
    (mock, grpc)
}

fn layer(mock: &MockServer) -> BearerAuthLayer {
    BearerAuthLayer::new(login_source(mock)).min_login_interval(Duration::ZERO)
}

async fn client(layer: &BearerAuthLayer, grpc: &GrpcServer) -> HealthClient<AuthedChannel> {
    let channel = Endpoint::from_shared(format!("http://{}", grpc.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .map_request(into_grpc_body as IntoGrpcBody)
        .service(channel);
    HealthClient::new(service)
}

fn health_request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: SERVICE.to_owned(),
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

async fn check(client: &mut HealthClient<AuthedChannel>) -> Result<WireStatus, Status> {
    let response = client.check(health_request()).await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn token_arrives_in_metadata() {
    let (mock, grpc) = servers().await;
    let layer = layer(&mock);
    let mut client = client(&layer, &grpc).await;

    let status = check(&mut client).await.unwrap();

    assert_eq!(status, WireStatus::Serving);
    assert_eq!(mock.logins(), 1);
    let tokens = mock.issued_tokens();
    assert_eq!(grpc.authorizations(), [bearer(&tokens[0])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_login() {
    let (mock, grpc) = servers().await;
    let layer = layer(&mock);
    let client = client(&layer, &grpc).await;

    let mut calls = JoinSet::new();
    for _ in 0..20 {
        let mut client = client.clone();
        calls.spawn(async move { check(&mut client).await });
    }
    while let Some(result) = calls.join_next().await {
        assert_eq!(result.unwrap().unwrap(), WireStatus::Serving);
    }

    assert_eq!(mock.login_attempts(), 1);
    let tokens = mock.issued_tokens();
    assert_eq!(grpc.authorizations(), vec![bearer(&tokens[0]); 20]);
}

#[tokio::test]
async fn unauthenticated_replays_once_with_new_token() {
    let (mock, grpc) = servers().await;
    let layer = layer(&mock);
    let mut client = client(&layer, &grpc).await;
    assert_eq!(check(&mut client).await.unwrap(), WireStatus::Serving);
    let first = mock.issued_tokens().remove(0);

    grpc.revoke(&first).await;
    let status = check(&mut client).await.unwrap();

    assert_eq!(status, WireStatus::Serving);
    assert_eq!(mock.logins(), 2);
    let tokens = mock.issued_tokens();
    assert_eq!(
        grpc.authorizations(),
        [bearer(&tokens[0]), bearer(&tokens[0]), bearer(&tokens[1])]
    );
    assert_eq!(layer.cache().stats().replays, 1);
}

// On a multi-thread runtime the trailers-only response can arrive before hyper has polled
// the unary request body to its end. The replay must not depend on which comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_replayed_on_multi_thread() {
    let (mock, grpc) = servers().await;
    let layer = layer(&mock);
    let mut client = client(&layer, &grpc).await;
    assert_eq!(check(&mut client).await.unwrap(), WireStatus::Serving);

    for round in 1..=100 {
        let current = mock.issued_tokens().pop().unwrap();
        grpc.revoke(&current).await;

        let status = check(&mut client).await;

        assert_eq!(status.unwrap(), WireStatus::Serving, "round {round}");
        assert_eq!(mock.logins(), round + 1, "round {round}");
    }
    assert_eq!(grpc.authorizations().len(), 1 + 2 * 100);
    assert_eq!(layer.cache().stats().replays, 100);
}

#[tokio::test]
async fn repeated_unauthenticated_returned_after_one_replay() {
    let (mock, grpc) = servers().await;
    let layer = layer(&mock);
    let mut client = client(&layer, &grpc).await;
    grpc.reject_next(10, Code::Unauthenticated);

    let status = check(&mut client).await.unwrap_err();

    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "scripted rejection");
    assert_eq!(mock.logins(), 2);
    let tokens = mock.issued_tokens();
    assert_eq!(
        grpc.authorizations(),
        [bearer(&tokens[0]), bearer(&tokens[1])]
    );
    assert_eq!(layer.cache().stats().replays, 1);
}

#[tokio::test]
async fn permission_denied_not_retried() {
    let (mock, grpc) = servers().await;
    let layer = layer(&mock);
    let mut client = client(&layer, &grpc).await;
    assert_eq!(check(&mut client).await.unwrap(), WireStatus::Serving);
    grpc.reject_next(1, Code::PermissionDenied);

    let status = check(&mut client).await.unwrap_err();

    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(mock.login_attempts(), 1);
    let token = mock.issued_tokens().remove(0);
    assert_eq!(grpc.authorizations(), [bearer(&token), bearer(&token)]);
    assert_eq!(layer.cache().stats().replays, 0);
}

#[tokio::test]
async fn unauthenticated_trailers_after_message_drop_token() {
    let (mock, grpc) = servers().await;
    let layer = layer(&mock);
    let mut client = client(&layer, &grpc).await;
    let mut stream = client.watch(health_request()).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), WireStatus::Serving);
    let token = mock.issued_tokens().remove(0);

    grpc.revoke(&token).await;
    let end = stream.message().await.unwrap_err();

    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(end.message(), "the token was revoked");
    assert_eq!(mock.logins(), 1);
    assert_eq!(grpc.authorizations(), [bearer(&token)]);

    // The token was dropped when the trailers arrived, so the next call logs in first and
    // goes out once, with the new token.
    assert_eq!(check(&mut client).await.unwrap(), WireStatus::Serving);
    assert_eq!(mock.logins(), 2);
    let tokens = mock.issued_tokens();
    assert_eq!(
        grpc.authorizations(),
        [bearer(&tokens[0]), bearer(&tokens[1])]
    );
    assert_eq!(layer.cache().stats().replays, 0);
}
