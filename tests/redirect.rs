//! tower-http's `FollowRedirectLayer` above the layer: each hop of a redirect passes
//! through the layer again, which attaches the token only when the hop's URI has the API
//! origin.
//!
//! Follow-redirect keeps the caller's request headers for the next hop, and the caller's
//! request never contains the token, because the layer below adds it to each hop on its own.
//! It also needs a request body type that implements `Default`, which `Full<Bytes>` does:
//! a body known to be empty is recreated with `Default`, and any other body only through a
//! policy's `clone_body`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::{MockServer, ScriptedResponse};
use resq_auth::{BearerAuthLayer, ReplayBody};
use support::{body_bytes, login_source};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::policy::{PolicyExt, Standard, clone_body_fn};
use tower_http::follow_redirect::{FollowRedirectLayer, RequestUri};

/// hyper-util's client with `enforce_http(false)`, so that a redirect to an `https` URI on
/// a loopback port is sent there in plain text and the test server there records it.
fn client() -> Client<HttpConnector, ReplayBody<Full<Bytes>>> {
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    Client::builder(TokioExecutor::new()).build(connector)
}

fn layer(api: &MockServer) -> BearerAuthLayer {
    BearerAuthLayer::new(login_source(api)).min_login_interval(Duration::ZERO)
}

/// Makes the next request to `api` receive `status` with `Location: location`.
fn redirect_next(api: &MockServer, status: StatusCode, location: &str) {
    api.respond_next(
        1,
        ScriptedResponse::new(status).header("location", location),
    );
}

fn get(api: &MockServer, path: &str) -> Request<Full<Bytes>> {
    Request::get(api.uri(path)).body(Full::default()).unwrap()
}

/// Returns the path and token of every request a server recorded.
fn paths_and_tokens(server: &MockServer) -> Vec<(String, Option<String>)> {
    server
        .requests()
        .into_iter()
        .map(|request| (request.path, request.token))
        .collect()
}

fn path_and_token(path: &str, token: Option<&str>) -> (String, Option<String>) {
    (path.to_owned(), token.map(str::to_owned))
}

#[tokio::test]
async fn same_origin_redirect_carries_token() {
    let api = MockServer::start().await.unwrap();
    let port = api.local_addr().port();
    // Each Location, and the path it resolves to against `/evidence`.
    let cases = [
        ("/evidence/moved".to_owned(), "/evidence/moved"),
        ("moved".to_owned(), "/moved"),
        (format!("http://127.0.0.1:{port}/a"), "/a"),
        (format!("//127.0.0.1:{port}/b"), "/b"),
        (format!("HTTP://127.0.0.1:{port}/c"), "/c"),
        (format!("http://127.0.0.1.:{port}/d"), "/d"),
    ];
    let layer = layer(&api);
    let mut client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(layer.clone())
        .service(client());

    for (location, _) in &cases {
        redirect_next(&api, StatusCode::FOUND, location);
        let response = client
            .ready()
            .await
            .unwrap()
            .call(get(&api, "/evidence"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "Location: {location}");
        let target = response.extensions().get::<RequestUri>().unwrap().0.clone();
        assert_eq!(target.port_u16(), Some(port), "Location: {location}");
    }

    assert_eq!(api.logins(), 1);
    let token = api.issued_tokens().remove(0);
    let expected: Vec<_> = cases
        .iter()
        .flat_map(|(_, path)| {
            [
                path_and_token("/evidence", Some(&token)),
                path_and_token(path, Some(&token)),
            ]
        })
        .collect();
    assert_eq!(paths_and_tokens(&api), expected);
    assert_eq!(layer.cache().stats().replays, 0);
}

#[tokio::test]
async fn cross_origin_redirect_carries_no_token() {
    let api = MockServer::start().await.unwrap();
    let other = MockServer::start().await.unwrap();
    let api_port = api.local_addr().port();
    let other_port = other.local_addr().port();
    // Each Location names another origin: another port, another host name for the same
    // loopback address and port, another scheme on the same host and port, and a
    // scheme-relative reference to another port. Next to it is the URI it resolves to.
    let cases = [
        (
            format!("http://127.0.0.1:{other_port}/inbox"),
            format!("http://127.0.0.1:{other_port}/inbox"),
        ),
        (
            format!("http://localhost:{api_port}/inbox"),
            format!("http://localhost:{api_port}/inbox"),
        ),
        (
            format!("https://127.0.0.1:{api_port}/inbox"),
            format!("https://127.0.0.1:{api_port}/inbox"),
        ),
        (
            format!("//127.0.0.1:{other_port}/inbox"),
            format!("http://127.0.0.1:{other_port}/inbox"),
        ),
    ];
    let layer = layer(&api);
    let mut client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(layer.clone())
        .service(client());

    for (location, resolved) in &cases {
        redirect_next(&api, StatusCode::FOUND, location);

        let response = client
            .ready()
            .await
            .unwrap()
            .call(get(&api, "/evidence"))
            .await
            .unwrap();

        // The target rejects the request that came without a token. That 401 carries no
        // token generation, so the layer neither logs in again nor replays.
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "Location: {location}"
        );
        let target = &response.extensions().get::<RequestUri>().unwrap().0;
        assert_eq!(target.to_string(), *resolved, "Location: {location}");
    }

    assert_eq!(api.login_attempts(), 1);
    let token = api.issued_tokens().remove(0);
    let with_token = path_and_token("/evidence", Some(&token));
    let inbox = path_and_token("/inbox", None);
    assert_eq!(
        paths_and_tokens(&api),
        [
            with_token.clone(),
            with_token.clone(),
            inbox.clone(),
            with_token.clone(),
            inbox.clone(),
            with_token,
        ]
    );
    assert_eq!(paths_and_tokens(&other), [inbox.clone(), inbox]);
    assert_eq!(layer.cache().stats().replays, 0);
}

#[tokio::test]
async fn redirect_back_to_api_origin_carries_token() {
    let api = MockServer::start().await.unwrap();
    let other = MockServer::start().await.unwrap();
    let back = api.uri("/evidence/final").to_string();
    other.respond_next(
        1,
        ScriptedResponse::new(StatusCode::FOUND).header("location", back.as_str()),
    );
    redirect_next(&api, StatusCode::FOUND, &other.uri("/hop").to_string());
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(layer(&api))
        .service(client());

    let response = client.oneshot(get(&api, "/evidence")).await.unwrap();

    // Each hop is judged by its own URI, so the hop back to the API origin gets the token
    // again. A caller that must not follow such chains uses a policy such as
    // tower-http's `SameOrigin`.
    assert_eq!(response.status(), StatusCode::OK);
    let token = api.issued_tokens().remove(0);
    assert_eq!(
        paths_and_tokens(&api),
        [
            path_and_token("/evidence", Some(&token)),
            path_and_token("/evidence/final", Some(&token)),
        ]
    );
    assert_eq!(paths_and_tokens(&other), [path_and_token("/hop", None)]);
}

#[tokio::test]
async fn temporary_redirect_resends_post_body() {
    let api = MockServer::start().await.unwrap();
    let body: &'static [u8] = br#"{"mission":"m-17","approve":true}"#;
    redirect_next(
        &api,
        StatusCode::TEMPORARY_REDIRECT,
        "/admin/missions/approve/v2",
    );
    // The standard policy only recreates empty bodies, so a 307 for a POST with a body is
    // followed only when the policy can clone the body.
    let policy = Standard::default().and::<_, Full<Bytes>, resq_auth::Error>(clone_body_fn(
        |body: &Full<Bytes>| Some(body.clone()),
    ));
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::with_policy(policy))
        .layer(layer(&api))
        .service(client());
    let request = Request::post(api.uri("/admin/missions/approve"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();

    let response = client.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let expected = format!(
        r#"{{"body_len":{},"method":"POST","path":"/admin/missions/approve/v2"}}"#,
        body.len()
    );
    assert_eq!(body_bytes(response).await, Bytes::from(expected));
    let token = api.issued_tokens().remove(0);
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.token.as_deref(), Some(token.as_str()));
        assert_eq!(request.body, Bytes::from_static(body));
    }
    assert_eq!(requests[1].path, "/admin/missions/approve/v2");
}

#[tokio::test]
async fn redirect_then_401_replays_final_hop() {
    let api = MockServer::start().await.unwrap();
    redirect_next(&api, StatusCode::FOUND, "/evidence/moved");
    api.respond_next(1, ScriptedResponse::new(StatusCode::UNAUTHORIZED));
    let layer = layer(&api);
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(layer.clone())
        .service(client());

    let response = client.oneshot(get(&api, "/evidence")).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let tokens = api.issued_tokens();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        paths_and_tokens(&api),
        [
            path_and_token("/evidence", Some(&tokens[0])),
            path_and_token("/evidence/moved", Some(&tokens[0])),
            path_and_token("/evidence/moved", Some(&tokens[1])),
        ]
    );
    assert_eq!(layer.cache().stats().replays, 1);
}
