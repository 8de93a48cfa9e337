//! A tonic gRPC client that stays logged in to the ResQ API.
//!
//! The example starts two servers on loopback: the mock ResQ API, which serves
//! `POST /login`, and a tonic server with the gRPC health service, whose interceptor accepts
//! only bearer tokens that the mock issued and that were not revoked. The client is a tonic
//! `Channel` wrapped in `BearerAuthLayer`: it logs in once, reuses the token, and after the
//! server revokes it handles the resulting UNAUTHENTICATED with one new login and one replay.
//!
//! Run it with `cargo run --example tonic_client`.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuthLayer, BoxError, LoginSource, ReplayBody};
use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::ServiceBuilder;

const SERVICE: &str = "resq.missions.v1.Missions";

type GrpcBody = tonic::body::Body;

/// Converts the request body for the `Channel`. The layer hands its inner service
/// `Request<ReplayBody<B>>`, and a tonic `Channel` accepts only `Request<tonic::body::Body>`.
fn into_grpc_body(request: Request<ReplayBody<GrpcBody>>) -> Request<GrpcBody> {
    request.map(GrpcBody::new)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let api = MockServer::start().await?;
    let revoked = Arc::new(Mutex::new(HashSet::new()));
    let (grpc_addr, _reporter) = start_grpc_server(api.clone(), revoked.clone()).await?;
    println!("mock ResQ API:  http://{}", api.local_addr());
    println!("gRPC server:    http://{grpc_addr}");

    let login_client = Client::builder(TokioExecutor::new()).build_http();
    let source = LoginSource::new(login_client, api.base_uri(), api.credentials());
    let layer = BearerAuthLayer::new(source);
    let channel = Endpoint::from_shared(format!("http://{grpc_addr}"))?
        .connect()
        .await?;
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .map_request(into_grpc_body)
        .service(channel);
    let mut health = HealthClient::new(service);

    for call in 1..=2 {
        let status = check(&mut health).await?;
        println!("call {call}: {status}; logins so far: {}", api.logins());
    }

    let token = api.issued_tokens().remove(0);
    revoked
        .lock()
        .expect("revoked-token set lock")
        .insert(token);
    println!("the gRPC server revoked the token");

    let status = check(&mut health).await?;
    let stats = layer.cache().stats();
    println!(
        "call 3: {status}; logins so far: {}, replays after UNAUTHENTICATED: {}",
        api.logins(),
        stats.replays
    );
    Ok(())
}

async fn check<S>(health: &mut HealthClient<S>) -> Result<&'static str, Status>
where
    S: tonic::client::GrpcService<GrpcBody>,
    S::Error: Into<BoxError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let request = HealthCheckRequest {
        service: SERVICE.to_owned(),
    };
    let response = health.check(request).await?;
    Ok(response.into_inner().status().as_str_name())
}

/// Starts the health service behind a token check on a free loopback port. The returned
/// reporter keeps the service statuses alive.
async fn start_grpc_server(
    issuer: MockServer,
    revoked: Arc<Mutex<HashSet<String>>>,
) -> Result<(SocketAddr, HealthReporter), BoxError> {
    let reporter = HealthReporter::new();
    reporter
        .set_service_status(SERVICE, ServingStatus::Serving)
        .await;
    let service = HealthService::from_health_reporter(reporter.clone());
    let interceptor = move |request: tonic::Request<()>| {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_owned);
        let revoked = revoked.lock().expect("revoked-token set lock");
        match token {
            Some(token) if issuer.issued_tokens().contains(&token) && !revoked.contains(&token) => {
                Ok(request)
            }
            _ => Err(Status::unauthenticated("invalid or expired token")),
        }
    };

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let server =
        Server::builder().add_service(HealthServer::with_interceptor(service, interceptor));
    tokio::spawn(async move {
        if let Err(error) = server
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
        {
            eprintln!("gRPC server failed: {error}");
        }
    });
    Ok((addr, reporter))
}
