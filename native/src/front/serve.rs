//! Connections and calls: HTTP/2 (h2c or TLS) per connection, the native methods answered through the call
//! table, everything else forwarded upstream.
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::budget::{Budget, Held};
use super::calls::{Admission, Calls, Reply};
use super::grpc::{self, ReplyBody};
use super::proxy::Upstream;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a plaintext connection may stay silent before its first byte (HTTP/2's preface) before it is closed.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a finished connection waits for the client to close its side (`lingering_close`).
const LINGER: Duration = Duration::from_secs(2);

pub struct Limits {
    pub max_message_bytes: usize,
    pub max_streams: u32,
    pub max_age: Option<Duration>,
    pub max_age_grace: Duration,
}

pub struct Server {
    pub methods: HashMap<String, usize>,
    pub names: Vec<String>, // each method's last path segment, for messages
    pub max_admitted: usize,
    pub limits: Limits,
    pub calls: Calls,
    pub reading: Arc<Budget>, // request bytes of messages not yet whole, native or forwarded
    pub upstream: Upstream,   // the address and token; each connection forwards over its own `fresh` one
    pub tls: Option<RwLock<Arc<ServerConfig>>>,
    pub stopping: watch::Sender<bool>,
    pub connections: AtomicUsize,
}

/// Accept connections until the front stops.
pub async fn accept(server: Arc<Server>, listener: TcpListener) {
    let mut stopping = server.stopping.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(Live::new(&server), stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await, // e.g. out of file descriptors
        }
    }
}

/// Counts a connection as live until it is dropped (even by a panic or the runtime's shutdown).
struct Live(Arc<Server>);

impl Live {
    fn new(server: &Arc<Server>) -> Self {
        server.connections.fetch_add(1, Ordering::SeqCst);
        Live(server.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(live: Live, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the socket, so that it outlives hyper's and the close can linger (`lingering_close`).
    let Ok((stream, kept)) = stream.into_std().and_then(|s| {
        let kept = s.try_clone()?;
        Ok((TcpStream::from_std(s)?, kept))
    }) else {
        return;
    };
    speak(&live, stream).await;
    lingering_close(kept).await;
}

/// After the last answer, the client's last frames (window updates, pings, its GOAWAY) may still be on the way:
/// a socket closed with bytes unread sends RST, and an RST makes the client's kernel drop answers the client has
/// not read yet (calls answered during a drain came back UNAVAILABLE "Connection reset by peer"). So: FIN, then
/// read and discard until the client closes too, for at most LINGER.
async fn lingering_close(kept: std::net::TcpStream) {
    let Ok(kept) = TcpStream::from_std(kept) else {
        return;
    };
    let _ = socket2::SockRef::from(&kept).shutdown(std::net::Shutdown::Write);
    let mut unread = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = kept.readable().await.and_then(|_| match kept.try_read(&mut unread) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(1),
            read => read,
        }) {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn speak(live: &Live, stream: TcpStream) {
    let Some(tls) = &live.0.tls else {
        // A connection that never says anything costs a task and a descriptor until its max age: closed, as one
        // that never finishes its TLS handshake is.
        let mut first = [0u8; 1];
        if matches!(tokio::time::timeout(PREFACE_TIMEOUT, stream.peek(&mut first)).await, Ok(Ok(n)) if n > 0) {
            serve(live.0.clone(), stream).await;
        }
        return;
    };
    let config = tls.read().unwrap_or_else(|p| p.into_inner()).clone();
    // A failed handshake (plaintext client, no client certificate under mTLS, ...) closes this connection only.
    if let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(stream)).await
    {
        serve(live.0.clone(), stream).await;
    }
}

/// One HTTP/2 connection, until it ends, reaches its max age (GOAWAY, then closed after the grace), or the front
/// stops (GOAWAY; the front closes it when its grace ends).
async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(server: Arc<Server>, stream: S) {
    let service = {
        let server = server.clone();
        let upstream = Arc::new(server.upstream.fresh()); // this connection's own (proxy.rs)
        service_fn(move |request| {
            let (server, upstream) = (server.clone(), upstream.clone());
            async move { Ok::<_, Infallible>(handle(server, &upstream, request).await) }
        })
    };
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.limits.max_streams)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(1 << 22)
        // Bytes queued for a caller beyond its window: grpc's 64 KiB, so a caller that stops reading holds little
        .max_send_buf_size(64 << 10)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut stopping = server.stopping.subscribe();
    let aged = async {
        match server.limits.max_age {
            Some(age) => tokio::time::sleep(jittered(age)).await,
            None => std::future::pending().await,
        }
    };
    let grace = tokio::select! {
        _ = connection.as_mut() => return,
        _ = aged => server.limits.max_age_grace,
        _ = stopping.wait_for(|stop| *stop) => Duration::MAX, // stop() ends it
    };
    drop(stopping);
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(grace, connection).await;
}

/// `age` +- 10%, so that connections made together do not all go away together.
fn jittered(age: Duration) -> Duration {
    let random = RandomState::new().build_hasher().finish();
    let factor = 0.9 + 0.2 * (random % 10_001) as f64 / 10_000.0;
    age.mul_f64(factor)
}

async fn handle(server: Arc<Server>, upstream: &Upstream, request: Request<Incoming>) -> Response<ReplyBody> {
    let Some(method) = native_method(&server, &request) else {
        return upstream.forward(request, Bytes::new(), &server.reading).await;
    };
    let deadline = grpc::timeout(request.headers()).and_then(|t| Instant::now().checked_add(t));
    let (parts, mut body) = request.into_parts();
    let read = read_one_message(&mut body, server.limits.max_message_bytes, &server.reading);
    let read = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), read)
            .await
            .unwrap_or(Read::Expired),
        None => read.await,
    };
    match read {
        Read::One(message) => answer_natively(&server, method, message, deadline).await,
        Read::Expired => grpc::status(grpc::DEADLINE_EXCEEDED, "Deadline Exceeded"), // never admitted: not counted
        Read::NoRoom => {
            server.calls.count(method, "RESOURCE_EXHAUSTED");
            no_room(&server.names[method])
        }
        Read::TooLarge(length) => grpc::status(
            grpc::RESOURCE_EXHAUSTED,
            &format!(
                "Received message larger than max ({length} vs. {})",
                server.limits.max_message_bytes
            ),
        ),
        Read::Other(head) => {
            upstream
                .forward(Request::from_parts(parts, body), head, &server.reading)
                .await
        }
        Read::Broken => grpc::status(grpc::CANCELLED, "the request stream broke"),
    }
}

fn native_method(server: &Server, request: &Request<Incoming>) -> Option<usize> {
    let grpc_content = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    if request.method() != Method::POST || !grpc_content {
        return None;
    }
    server.methods.get(request.uri().path()).copied()
}

enum Read {
    One(Bytes),      // exactly one uncompressed message: answered natively
    TooLarge(usize), // its declared length is over the limit
    Other(Bytes),    // anything else, with the bytes read so far: forwarded
    NoRoom,          // the request bytes being read would pass `Server::reading`
    Expired,         // the deadline passed before the message was whole
    Broken,
}

/// A call refused because the request bytes being read at once are at their bound (`Server::reading`).
pub fn no_room(name: &str) -> Response<ReplyBody> {
    let message = format!("{name}: the server is reading its limit of request bytes at once; retry later");
    grpc::status(grpc::RESOURCE_EXHAUSTED, &message)
}

/// Read the body as long as it can be exactly one uncompressed message, never more than the limit (+ a chunk), and
/// only while the request bytes read at once stay within `budget`.
async fn read_one_message(body: &mut Incoming, max_message_bytes: usize, budget: &Arc<Budget>) -> Read {
    let mut read = BytesMut::new();
    let mut held = Held::new(budget);
    let mut frame_end: Option<usize> = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Read::Broken };
        let Ok(data) = frame.into_data() else { break }; // request trailers: the body ended
        read.extend_from_slice(&data);
        if frame_end.is_none() && read.len() >= 5 {
            if read[0] != 0 {
                return Read::Other(read.freeze()); // compressed (or unknown flag): the upstream decides
            }
            let length = u32::from_be_bytes([read[1], read[2], read[3], read[4]]) as usize;
            if length > max_message_bytes {
                return Read::TooLarge(length);
            }
            frame_end = Some(5 + length);
        }
        if !held.set(read.len()) {
            return Read::NoRoom;
        }
        if frame_end.is_some_and(|end| read.len() > end) {
            return Read::Other(read.freeze()); // more than one message
        }
    }
    match frame_end {
        Some(end) if read.len() == end => Read::One(read.freeze().split_off(5)),
        _ => Read::Other(read.freeze()),
    }
}

/// Releases a call's place if its caller leaves while it is still queued (see Calls::abandon).
struct Abandon<'a>(&'a Calls, u64);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        self.0.abandon(self.1);
    }
}

async fn answer_natively(
    server: &Server,
    method: usize,
    message: Bytes,
    deadline: Option<Instant>,
) -> Response<ReplyBody> {
    let (id, reply) = match server.calls.admit(method, message, deadline) {
        Admission::Admitted(id, reply) => (id, reply),
        Admission::Full => {
            let limit = server.max_admitted;
            let name = &server.names[method];
            let message = format!("{name}: the server is at its limit of {limit} calls at once; retry later");
            return grpc::status(grpc::RESOURCE_EXHAUSTED, &message);
        }
    };
    let _abandon = Abandon(&server.calls, id);
    let replied = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), reply).await.ok(),
        None => Some(reply.await),
    };
    match replied {
        Some(Ok(Reply::Message(message))) => grpc::message(&message),
        Some(Ok(Reply::Status(code, message))) => grpc::status(code, &message),
        Some(Err(_)) => grpc::status(grpc::UNAVAILABLE, "the server stopped before answering"),
        None => {
            if server.calls.abandon(id) {
                server.calls.count(method, "DEADLINE_EXCEEDED"); // a call Python computes is counted by Python
            }
            grpc::status(grpc::DEADLINE_EXCEEDED, "Deadline Exceeded")
        }
    }
}
