//! An axum service that calls the ResQ API on behalf of its own callers.
//!
//! The router state contains a hyper-util client wrapped in `BearerAuthLayer`, so every handler
//! shares one ResQ login. The example starts the mock ResQ API and the gateway on loopback,
//! calls the gateway with a plain client, revokes the ResQ token halfway, and prints what
//! happened.
//!
//! Run it with `cargo run --example axum_gateway`.

use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuth, BearerAuthLayer, BoxError, LoginSource, ReplayBody};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

/// The layered client as the router state stores it.
type ResqClient = BearerAuth<Client<HttpConnector, ReplayBody<Full<Bytes>>>>;

#[derive(Clone)]
struct Gateway {
    resq: ResqClient,
    /// The ResQ API base URI without the trailing slash, such as `https://api.resq.software`.
    resq_base: String,
}

impl Gateway {
    /// Sends the request to the ResQ API and returns its response as it is. A failure before
    /// any response, such as a failed login, becomes `502 Bad Gateway`.
    async fn forward(&self, method: Method, path: &str, body: Bytes) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.resq_base))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body));
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
            }
        };
        match self.resq.clone().oneshot(request).await {
            Ok(response) => response.map(Body::new),
            Err(error) => {
                eprintln!("gateway: ResQ API request failed: {error}");
                (StatusCode::BAD_GATEWAY, error.to_string()).into_response()
            }
        }
    }
}

async fn approve_mission(State(gateway): State<Gateway>, body: Bytes) -> Response {
    gateway
        .forward(Method::POST, "/admin/missions/approve", body)
        .await
}

async fn list_evidence(State(gateway): State<Gateway>) -> Response {
    gateway
        .forward(Method::GET, "/evidence", Bytes::new())
        .await
}

fn router(resq: ResqClient, resq_base: &Uri) -> Router {
    let gateway = Gateway {
        resq,
        resq_base: resq_base.to_string().trim_end_matches('/').to_owned(),
    };
    Router::new()
        .route("/missions/approve", post(approve_mission))
        .route("/evidence", get(list_evidence))
        .with_state(gateway)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let resq = MockServer::start().await?;
    println!("mock ResQ API: http://{}", resq.local_addr());

    let login_client = Client::builder(TokioExecutor::new()).build_http();
    let source = LoginSource::new(login_client, resq.base_uri(), resq.credentials());
    let layer = BearerAuthLayer::new(source);
    let client = layer.layer(Client::builder(TokioExecutor::new()).build_http());

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let gateway = listener.local_addr()?;
    let app = router(client, &resq.base_uri());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("gateway failed: {error}");
        }
    });
    println!("gateway:       http://{gateway}");

    let approval: &'static [u8] = br#"{"mission":"m-17","approve":true}"#;
    call(gateway, Method::POST, "/missions/approve", approval).await?;
    call(gateway, Method::GET, "/evidence", b"").await?;
    println!("ResQ logins so far: {}", resq.logins());

    resq.revoke_all_tokens();
    println!("the ResQ API revoked every token");
    call(gateway, Method::POST, "/missions/approve", approval).await?;
    println!(
        "ResQ logins so far: {}, replays after 401: {}",
        resq.logins(),
        layer.cache().stats().replays
    );
    Ok(())
}

/// Calls the gateway the way one of its own clients would, with no ResQ token.
async fn call(
    gateway: SocketAddr,
    method: Method,
    path: &str,
    body: &'static [u8],
) -> Result<(), BoxError> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder()
        .method(method.clone())
        .uri(format!("http://{gateway}{path}"))
        .body(Full::new(Bytes::from_static(body)))?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "{method} {path} -> {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
