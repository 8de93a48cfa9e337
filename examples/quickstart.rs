//! A tour of resq-auth: login, authenticated requests, a background refresh, recovery from
//! a revoked token, a throttled request and a forbidden one.
//!
//! With no environment it runs against a mock ResQ API that it starts on 127.0.0.1. With
//! `RESQ_BASE_URL` set, it sends `GET /evidence` to that API instead, logging in with
//! `RESQ_USERNAME` and `RESQ_PASSWORD`, or using `RESQ_TOKEN` as a service token.
//!
//! ```text
//! cargo run --example quickstart
//! RESQ_BASE_URL=https://api.resq.software RESQ_USERNAME=... RESQ_PASSWORD=... \
//!     cargo run --example quickstart
//! ```
//!
//! `RUST_LOG` sets the log filter: `info` by default for the tour, `error` against a real
//! API.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::{MockServer, ScriptedResponse};
use resq_auth::{
    BearerAuth, BearerAuthLayer, BoxError, Credentials, LoginSource, ReplayBody, StaticToken,
    TOKEN_VAR,
};
use tower::{Layer, Service, ServiceExt};
use tracing_subscriber::EnvFilter;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Authenticated<C> = BearerAuth<Client<C, ReplayBody<Full<Bytes>>>>;

#[tokio::main]
async fn main() -> ExitCode {
    let base = std::env::var("RESQ_BASE_URL").ok();
    // Against a real API only errors are logged by default, so a failure prints one line.
    let default_filter = if base.is_some() { "error" } else { "info" };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();

    let outcome = match base {
        Some(base) => run_against(&base).await,
        None => run_tour().await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its sources into one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Builds a client for `http` and `https` with the operating system's CA certificates.
fn https_client<B>() -> Result<Client<Connector, B>, BoxError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let connector = HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Builds a plain HTTP client.
fn http_client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and prints its status.
async fn send<C>(
    service: &mut Authenticated<C>,
    method: Method,
    uri: Uri,
    body: &'static [u8],
) -> Result<StatusCode, BoxError>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let request = Request::builder()
        .method(method.clone())
        .uri(uri.clone())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))?;
    let started = Instant::now();
    let response = service.ready().await?.call(request).await?;
    println!(
        "  {method} {} -> {} ({:.0} ms)",
        uri.path(),
        response.status(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(response.status())
}

async fn run_tour() -> Result<(), BoxError> {
    println!("Starting a mock ResQ API on 127.0.0.1 with tokens that live 4 s.");
    let server = MockServer::builder()
        .token_lifetime(Duration::from_secs(4))
        .start()
        .await?;
    // The mock speaks plain HTTP on loopback, so the tour needs no TLS.
    let source = LoginSource::new(http_client(), server.base_uri(), server.credentials());
    let layer = BearerAuthLayer::new(source).refresh_before(Duration::from_secs(2));
    let cache = layer.cache().clone();
    let mut service = layer.layer(http_client());
    let evidence = server.uri("/evidence");

    println!("\n1. The first request logs in; the next two reuse the cached token.");
    for _ in 0..3 {
        send(&mut service, Method::GET, evidence.clone(), b"").await?;
    }
    println!("  logins so far: {}", server.logins());

    println!("\n2. With under 2 s of the token left, requests go on while a refresh runs.");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    send(&mut service, Method::GET, evidence.clone(), b"").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "  background refreshes: {}, logins: {}",
        cache.stats().refreshes,
        server.logins()
    );

    println!("\n3. The server revokes every token; the layer logs in again and replays once.");
    server.revoke_all_tokens();
    send(&mut service, Method::GET, evidence.clone(), b"").await?;
    println!(
        "  replays: {}, logins: {} (logins are spaced at least 1 s apart)",
        cache.stats().replays,
        server.logins()
    );

    println!("\n4. The server throttles with 429 and Retry-After: 1; the layer waits and retries.");
    server.respond_next(
        1,
        ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "1"),
    );
    send(&mut service, Method::GET, evidence.clone(), b"").await?;
    println!("  throttle retries: {}", cache.stats().throttle_retries);

    println!("\n5. A route the token has no scope for answers 403, returned as it is.");
    server.deny_path("/admin/missions/approve");
    let approve = server.uri("/admin/missions/approve");
    send(
        &mut service,
        Method::POST,
        approve,
        br#"{"mission":"m-17"}"#,
    )
    .await?;

    let stats = cache.stats();
    println!("\nSummary (tokens live 4 s, so refreshes can also run between the steps)");
    println!("  logins:            {}", stats.logins);
    println!("  failed logins:     {}", stats.login_failures);
    println!("  refreshes:         {}", stats.refreshes);
    println!("  401 replays:       {}", stats.replays);
    println!("  429 retries:       {}", stats.throttle_retries);
    println!("  requests at the API: {}", server.requests().len());
    Ok(())
}

async fn run_against(base: &str) -> Result<(), BoxError> {
    let base: Uri = base
        .parse()
        .map_err(|error| format!("RESQ_BASE_URL `{base}` is not a valid URI: {error}"))?;
    let layer = if std::env::var_os(TOKEN_VAR).is_some() {
        BearerAuthLayer::new(StaticToken::from_env()?.with_origin(base.clone())?)
    } else {
        let credentials = Credentials::from_env()?;
        BearerAuthLayer::new(LoginSource::new(https_client()?, base.clone(), credentials))
    };
    let mut service = layer.layer(https_client()?);
    let evidence = join(&base, "/evidence")?;
    println!("Sending GET {evidence} three times.");
    for _ in 0..3 {
        let status = send(&mut service, Method::GET, evidence.clone(), b"").await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(format!(
                "the API rejected the token with {status}; check {TOKEN_VAR}, or \
                 RESQ_USERNAME and RESQ_PASSWORD"
            )
            .into());
        }
    }
    let stats = layer.cache().stats();
    println!("logins: {}, 401 replays: {}", stats.logins, stats.replays);
    Ok(())
}

fn join(base: &Uri, path: &str) -> Result<Uri, BoxError> {
    let prefix = base.path().trim_end_matches('/');
    let text = format!(
        "{}://{}{prefix}{path}",
        base.scheme_str().unwrap_or("https"),
        base.authority().map_or("", |authority| authority.as_str())
    );
    Ok(text.parse()?)
}
