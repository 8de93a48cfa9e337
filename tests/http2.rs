//! The layer over HTTP/2 with prior knowledge (h2c): hyper-util's client with
//! `http2_only`, a hyper server on loopback, and the HPACK encoding of the `Authorization`
//! field as the client wrote it on the wire.

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use resq_auth::mock::MockServer;
use resq_auth::{BearerAuthLayer, ReplayBody};
use support::{body_bytes, login_source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceBuilder, ServiceExt};

type H2Client = Client<HttpConnector, ReplayBody<Full<Bytes>>>;

/// One request as the HTTP/2 server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    version: Version,
    path: String,
    authorization: Option<String>,
}

/// A hyper server on loopback that records each request and responds with the next
/// scripted status, or `200` once the script is empty.
#[derive(Clone)]
struct H2Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<VecDeque<StatusCode>>>,
}

impl H2Server {
    async fn start() -> H2Server {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let server = H2Server {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            statuses: Arc::default(),
        };
        let handler = server.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler.respond(&request)) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // A connection error ends only that connection, and the test
                    // asserts on what arrived.
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_owned());
        self.received.lock().unwrap().push(Received {
            version: request.version(),
            path: request.uri().path().to_owned(),
            authorization,
        });
        let status = self
            .statuses
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(StatusCode::OK);
        let mut response = Response::new(Full::new(Bytes::from_static(b"h2 ok")));
        *response.status_mut() = status;
        response
    }

    fn respond_next(&self, status: StatusCode) {
        self.statuses.lock().unwrap().push_back(status);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn h2_client() -> H2Client {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// The `Authorization` value of every request that reaches the hyper-util client, as the
/// layer set it.
type Seen = Arc<Mutex<Vec<Option<HeaderValue>>>>;

/// Builds the layered HTTP/2 client for `api`, with a recording step between the layer and
/// hyper-util's client.
fn authed_client(
    mock: &MockServer,
    api: SocketAddr,
) -> (
    impl Service<
        Request<Full<Bytes>>,
        Response = Response<impl http_body::Body<Error: std::fmt::Debug>>,
        Error = resq_auth::Error,
    > + Clone,
    Seen,
    BearerAuthLayer,
) {
    let api_uri: Uri = format!("http://{api}").parse().unwrap();
    let layer = BearerAuthLayer::new(login_source(mock))
        .min_login_interval(Duration::ZERO)
        .api_origin(&api_uri)
        .unwrap();
    let seen = Seen::default();
    let record = {
        let seen = seen.clone();
        move |request: Request<ReplayBody<Full<Bytes>>>| {
            let authorization = request.headers().get(AUTHORIZATION).cloned();
            seen.lock().unwrap().push(authorization);
            request
        }
    };
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .map_request(record)
        .service(h2_client());
    (service, seen, layer)
}

fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap()
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[tokio::test]
async fn authorization_is_sensitive_over_h2() {
    let mock = MockServer::start().await.unwrap();
    let server = H2Server::start().await;
    let (service, seen, _layer) = authed_client(&mock, server.addr);

    let response = service
        .oneshot(get(server.addr, "/evidence"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(body_bytes(response).await, Bytes::from_static(b"h2 ok"));
    let token = mock.issued_tokens().remove(0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let value = seen[0].as_ref().unwrap();
    assert!(value.is_sensitive());
    assert_eq!(value.to_str().unwrap(), format!("Bearer {token}"));
    assert_eq!(
        server.received(),
        [Received {
            version: Version::HTTP_2,
            path: "/evidence".to_owned(),
            authorization: bearer(&token),
        }]
    );
}

#[tokio::test]
async fn replay_over_h2_is_sensitive() {
    let mock = MockServer::start().await.unwrap();
    let server = H2Server::start().await;
    server.respond_next(StatusCode::UNAUTHORIZED);
    let (service, seen, layer) = authed_client(&mock, server.addr);

    let response = service
        .oneshot(get(server.addr, "/evidence"))
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(mock.logins(), 2);
    assert_eq!(layer.cache().stats().replays, 1);
    let tokens = mock.issued_tokens();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (value, token) in seen.iter().zip(&tokens) {
        let value = value.as_ref().unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), format!("Bearer {token}"));
    }
    let received: Vec<_> = server
        .received()
        .into_iter()
        .map(|request| (request.version, request.authorization))
        .collect();
    assert_eq!(
        received,
        [
            (Version::HTTP_2, bearer(&tokens[0])),
            (Version::HTTP_2, bearer(&tokens[1])),
        ]
    );
}

#[tokio::test]
async fn layer_token_is_never_indexed_on_wire() {
    let mock = MockServer::start().await.unwrap();
    let server = H2Server::start().await;
    let proxy = CapturingProxy::start(server.addr).await;
    let (mut service, _seen, _layer) = authed_client(&mock, proxy.addr);

    // Two requests share one HTTP/2 connection and so one HPACK table: a token that had
    // been indexed by the first would be sent as a table reference by the second.
    for path in ["/evidence", "/evidence/2"] {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(get(proxy.addr, path))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // A caller's own header is left alone by the layer and is not marked sensitive, so h2
    // sends it without indexing but not as never-indexed. This shows that the parser
    // distinguishes the two.
    let mut own = get(proxy.addr, "/evidence/3");
    own.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer caller-token"),
    );
    let response = service.ready().await.unwrap().call(own).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let blocks = header_blocks(&proxy.captured());
    assert_eq!(blocks.len(), 3);
    let representations: Vec<Vec<Representation>> = blocks
        .iter()
        .map(|block| authorization_fields(block))
        .collect();
    assert_eq!(
        representations,
        [
            vec![Representation::NeverIndexed],
            vec![Representation::NeverIndexed],
            vec![Representation::WithoutIndexing],
        ]
    );
    let token = mock.issued_tokens().remove(0);
    let authorizations: Vec<_> = server
        .received()
        .into_iter()
        .map(|request| request.authorization)
        .collect();
    assert_eq!(
        authorizations,
        [
            bearer(&token),
            bearer(&token),
            Some("Bearer caller-token".to_owned())
        ]
    );
}

/// A TCP proxy on loopback that forwards every connection to `upstream` and keeps a copy
/// of the bytes that clients sent.
struct CapturingProxy {
    addr: SocketAddr,
    captured: Arc<Mutex<Vec<u8>>>,
}

impl CapturingProxy {
    async fn start(upstream: SocketAddr) -> CapturingProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let captured = Arc::new(Mutex::new(Vec::new()));
        let capture = captured.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = TcpStream::connect(upstream).await.unwrap();
                tokio::spawn(forward(client, server, capture.clone()));
            }
        });
        CapturingProxy { addr, captured }
    }

    fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }
}

async fn forward(client: TcpStream, server: TcpStream, capture: Arc<Mutex<Vec<u8>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = match client_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        // Captured before forwarding, so the bytes are in the capture by the time the
        // server can respond to them.
        capture.lock().unwrap().extend_from_slice(&buffer[..read]);
        if server_write.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Splits a client's HTTP/2 byte stream into frames (RFC 9113 section 4.1) and returns the
/// header block of each HEADERS frame, joined with its CONTINUATION frames.
fn header_blocks(stream: &[u8]) -> Vec<Vec<u8>> {
    assert!(stream.starts_with(PREFACE), "no HTTP/2 connection preface");
    let mut rest = &stream[PREFACE.len()..];
    let mut blocks = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let payload = &rest[9..9 + length];
        rest = &rest[9 + length..];
        let fragment = match kind {
            FRAME_HEADERS => {
                assert!(open.is_none(), "HEADERS inside an open header block");
                headers_fragment(payload, flags)
            }
            FRAME_CONTINUATION => payload,
            _ => continue,
        };
        let mut block = open.take().unwrap_or_default();
        block.extend_from_slice(fragment);
        if flags & FLAG_END_HEADERS != 0 {
            blocks.push(block);
        } else {
            open = Some(block);
        }
    }
    assert!(rest.is_empty(), "capture ends inside a frame");
    blocks
}

/// Strips the padding and priority fields of a HEADERS frame payload.
fn headers_fragment(payload: &[u8], flags: u8) -> &[u8] {
    let mut fragment = payload;
    let mut padding = 0;
    if flags & FLAG_PADDED != 0 {
        padding = usize::from(fragment[0]);
        fragment = &fragment[1..];
    }
    if flags & FLAG_PRIORITY != 0 {
        fragment = &fragment[5..];
    }
    &fragment[..fragment.len() - padding]
}

/// How HPACK represents one header field (RFC 7541 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Representation {
    /// A reference to a whole entry of the static or dynamic table.
    Indexed,
    /// A literal that the decoder adds to its dynamic table.
    IncrementalIndexing,
    /// A literal that is not added to the table this time.
    WithoutIndexing,
    /// A literal that no encoder on the path may ever add to a table.
    NeverIndexed,
}

/// The index of `authorization` in the HPACK static table (RFC 7541 appendix A).
const STATIC_AUTHORIZATION: usize = 23;

/// Returns the representation of every `authorization` field in an HPACK header block.
///
/// A field counts as `authorization` when its name is static index 23 or the plain literal
/// `authorization`. A dynamic table entry can only hold the name if a field with it was
/// sent with incremental indexing before, and such a field is listed here, so references
/// to the dynamic table are not resolved.
fn authorization_fields(block: &[u8]) -> Vec<Representation> {
    let mut fields = Vec::new();
    let mut rest = block;
    while let Some(&first) = rest.first() {
        let (representation, prefix_bits) = match first {
            0x80.. => (Representation::Indexed, 7),
            0x40..=0x7f => (Representation::IncrementalIndexing, 6),
            0x20..=0x3f => {
                // A dynamic table size update carries no field.
                decode_integer(&mut rest, 5);
                continue;
            }
            0x10..=0x1f => (Representation::NeverIndexed, 4),
            _ => (Representation::WithoutIndexing, 4),
        };
        let index = decode_integer(&mut rest, prefix_bits);
        let is_authorization = match representation {
            Representation::Indexed => index == STATIC_AUTHORIZATION,
            _ if index == 0 => {
                let (huffman, name) = decode_string(&mut rest);
                !huffman && name.eq_ignore_ascii_case(b"authorization")
            }
            _ => index == STATIC_AUTHORIZATION,
        };
        if representation != Representation::Indexed {
            decode_string(&mut rest);
        }
        if is_authorization {
            fields.push(representation);
        }
    }
    fields
}

/// Decodes an HPACK integer with an N-bit prefix (RFC 7541 section 5.1).
fn decode_integer(rest: &mut &[u8], prefix_bits: u32) -> usize {
    let max_prefix = (1usize << prefix_bits) - 1;
    let mut value = usize::from(rest[0]) & max_prefix;
    *rest = &rest[1..];
    if value < max_prefix {
        return value;
    }
    let mut shift = 0;
    loop {
        let byte = rest[0];
        *rest = &rest[1..];
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return value;
        }
    }
}

/// Decodes an HPACK string literal (RFC 7541 section 5.2) and returns whether it is
/// Huffman-coded, with its raw octets.
fn decode_string<'a>(rest: &mut &'a [u8]) -> (bool, &'a [u8]) {
    let huffman = rest[0] & 0x80 != 0;
    let length = decode_integer(rest, 7);
    let (octets, after) = rest.split_at(length);
    *rest = after;
    (huffman, octets)
}
