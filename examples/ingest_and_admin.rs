//! One client for two kinds of ResQ route: ingestion with a static service token, and
//! admin routes with an operator login.
//!
//! Ingestion endpoints (telemetry batches, IPFS uploads) accept a service token that an
//! administrator issues ahead of time, so that field devices hold no operator password.
//! Admin routes such as `POST /admin/missions/approve` take the operator's JWT from
//! `POST /login`. The example builds one layered client for each and joins them with
//! `tower::steer::Steer`, which picks the client by request path.
//!
//! It runs against the mock ResQ API on loopback. The mock accepts only tokens it issued,
//! so the "administrator" obtains the service token from one login up front.
//!
//! Run it with `cargo run --example ingest_and_admin`.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuth, BearerAuthLayer, BoxError, LoginSource, ReplayBody, StaticToken};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tower::steer::Steer;
use tower::{Layer, Service, ServiceExt};

type Authed = BearerAuth<Client<HttpConnector, ReplayBody<Full<Bytes>>>>;
type ApiRequest = Request<Full<Bytes>>;
type Routes = Steer<Authed, fn(&ApiRequest, &[Authed]) -> usize, ApiRequest>;

/// Path prefixes that take the static service token. Every other path takes the operator
/// login.
const INGESTION_PREFIXES: [&str; 2] = ["/telemetry/", "/ipfs/"];

fn is_ingestion(path: &str) -> bool {
    INGESTION_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// The index of the ingestion client in the `Steer`.
const INGEST: usize = 0;
/// The index of the admin client in the `Steer`.
const ADMIN: usize = 1;

fn pick_client(request: &ApiRequest, _: &[Authed]) -> usize {
    if is_ingestion(request.uri().path()) {
        INGEST
    } else {
        ADMIN
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let api = MockServer::start().await?;
    println!("mock ResQ API: http://{}", api.local_addr());
    let service_token = issue_service_token(&api).await?;
    println!("an administrator issued a service token for ingestion");

    let ingest_source = StaticToken::new(service_token).with_origin(api.base_uri())?;
    let ingest_layer = BearerAuthLayer::new(ingest_source);
    let login_client = Client::builder(TokioExecutor::new()).build_http();
    let admin_source = LoginSource::new(login_client, api.base_uri(), api.credentials());
    let admin_layer = BearerAuthLayer::new(admin_source);

    let transport = Client::builder(TokioExecutor::new()).build_http();
    let clients: [Authed; 2] = [
        ingest_layer.layer(transport.clone()),
        admin_layer.layer(transport),
    ];
    let mut resq: Routes = Steer::new(clients, pick_client as fn(&ApiRequest, &[Authed]) -> usize);

    let telemetry = br#"{"drone":"d-4","readings":[{"t":0,"alt":120.5}]}"#;
    send(
        &mut resq,
        &api,
        "/telemetry/batches",
        "application/json",
        telemetry,
    )
    .await?;
    let image = b"\x89PNG\r\n\x1a\n evidence image bytes";
    send(
        &mut resq,
        &api,
        "/ipfs/upload",
        "application/octet-stream",
        image,
    )
    .await?;
    let approval = br#"{"mission":"m-17","approve":true}"#;
    send(
        &mut resq,
        &api,
        "/admin/missions/approve",
        "application/json",
        approval,
    )
    .await?;
    println!(
        "POST /login requests so far: {} (the administrator's and the admin client's)",
        api.login_attempts()
    );

    api.revoke_all_tokens();
    println!("the ResQ API revoked every token");
    // The admin client logs in again and replays. The client cannot renew the service
    // token, so ingestion requests get 401 until an administrator issues a new one.
    send(
        &mut resq,
        &api,
        "/admin/missions/approve",
        "application/json",
        approval,
    )
    .await?;
    send(
        &mut resq,
        &api,
        "/telemetry/batches",
        "application/json",
        telemetry,
    )
    .await?;
    println!(
        "admin client: {} logins, {} replays after 401",
        admin_layer.cache().stats().logins,
        admin_layer.cache().stats().replays
    );
    Ok(())
}

/// Sends one request through the steer and prints the route, the status and which token
/// the mock received.
async fn send(
    resq: &mut Routes,
    api: &MockServer,
    path: &str,
    content_type: &str,
    body: &'static [u8],
) -> Result<(), BoxError> {
    let request = Request::post(api.uri(path))
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from_static(body)))?;
    let response = resq.ready().await?.call(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    let token = api
        .requests()
        .last()
        .and_then(|request| request.token.clone());
    let issued = api.issued_tokens();
    let label = match token {
        Some(token) if Some(&token) == issued.first() => "the service token",
        Some(_) => "the operator's login token",
        None => "no token",
    };
    println!("POST {path} -> {status}, sent with {label}");
    Ok(())
}

#[derive(Deserialize)]
struct Grant {
    token: String,
}

/// Stands in for the administrator: logs in once and returns the token, which the
/// ingestion client then uses as its static service token.
async fn issue_service_token(api: &MockServer) -> Result<String, BoxError> {
    let credentials = api.credentials();
    let body = serde_json::json!({
        "username": credentials.username(),
        "password": credentials.password().expose_secret(),
    });
    let login: Uri = api.uri("/login");
    let request = Request::post(login)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await?;
    let bytes = response.into_body().collect().await?.to_bytes();
    let grant: Grant = serde_json::from_slice(&bytes)?;
    Ok(grant.token)
}
