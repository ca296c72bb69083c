//! Everything the front does not answer itself goes to the internal grpc.aio server, over HTTP/2 cleartext on
//! loopback, with the upstream token added; bodies stream both ways, headers and trailers pass unchanged.
use std::error::Error;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::budget::{Budget, Framing, Held};
use super::grpc::{self, ReplyBody};
use super::serve::no_room;

pub const TOKEN_HEADER: &str = "x-dwcp-front";
const UPSTREAM_STREAM_WINDOW: u32 = 64 << 10;
const UPSTREAM_CONNECTION_WINDOW: u32 = 4 << 20;

pub struct Upstream {
    address: String,
    token: HeaderValue,
    connection: Mutex<Option<SendRequest<Forwarded>>>,
}

impl Upstream {
    pub fn new(port: u16, token: &str) -> Result<Self, String> {
        let token = HeaderValue::from_str(token).map_err(|_| "upstream_token is not a valid header value")?;
        Ok(Upstream {
            address: format!("127.0.0.1:{port}"),
            token,
            connection: Mutex::new(None),
        })
    }

    /// A new upstream with the same address and token and a connection of its own: each client connection
    /// forwards over its own upstream connection, so a client that stops reading fills only its own flow-control
    /// windows, never those of calls from anyone else.
    pub fn fresh(&self) -> Upstream {
        Upstream {
            address: self.address.clone(),
            token: self.token.clone(),
            connection: Mutex::new(None),
        }
    }

    /// Forward a call whose first `head` bytes of body were already read; its body's bytes of a message not yet
    /// whole are held from `budget` (the upstream buffers them), and the call is refused when there is no room.
    pub async fn forward(&self, request: Request<Incoming>, head: Bytes, budget: &Arc<Budget>) -> Response<ReplyBody> {
        let (mut parts, rest) = request.into_parts();
        parts.headers.insert(TOKEN_HEADER, self.token.clone()); // replaces any the caller sent
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = match Uri::builder()
            .scheme("http")
            .authority(self.address.as_str())
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(_) => return grpc::status(grpc::UNAVAILABLE, "the front cannot forward this path"),
        };
        let name = parts.uri.path().rsplit('/').next().unwrap_or_default().to_owned();
        let refused = Arc::new(AtomicBool::new(false));
        let body = Forwarded {
            head: Some(head).filter(|h| !h.is_empty()),
            rest,
            framing: Framing::default(),
            held: Held::new(budget),
            refused: refused.clone(),
        };
        let mut request = Request::from_parts(parts, body);
        // A connection the upstream closed (or sent GOAWAY on) gives the request back unsent: one retry, anew.
        for fresh in [false, true] {
            let mut sender = match self.connect(fresh).await {
                Ok(sender) => sender,
                Err(why) => return self.unavailable(&why),
            };
            match sender.try_send_request(request).await {
                Ok(reply) => return reply.map(Either::Right),
                Err(_) if refused.load(Ordering::SeqCst) => return no_room(&name),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if !fresh => request = unsent,
                    _ => return self.unavailable(&failed.into_error().to_string()),
                },
            }
        }
        unreachable!("the second attempt returns")
    }

    fn unavailable(&self, why: &str) -> Response<ReplyBody> {
        grpc::status(
            grpc::UNAVAILABLE,
            &format!("upstream server {} unreachable: {why}", self.address),
        )
    }

    /// This upstream's HTTP/2 connection, (re)made when there is none, it closed, or `fresh`. Its stream window is
    /// HTTP/2's 64 KiB start, as a grpc client's: a caller that stops reading soon stops the upstream's writes too,
    /// which then cuts it (services/distribution.py) instead of the front buffering the rest.
    async fn connect(&self, fresh: bool) -> Result<SendRequest<Forwarded>, String> {
        let mut connection = self.connection.lock().await;
        if let Some(sender) = connection.as_ref().filter(|s| !fresh && !s.is_closed()) {
            return Ok(sender.clone());
        }
        let stream = TcpStream::connect(&self.address).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, driver) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(UPSTREAM_STREAM_WINDOW)
            .initial_connection_window_size(UPSTREAM_CONNECTION_WINDOW)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(driver);
        *connection = Some(sender.clone());
        Ok(sender)
    }
}

/// A request body of which the front already read `head`: that first, then the rest as it comes, each data frame
/// held from the budget while its message is not whole (a body past the budget ends in an error: the upstream
/// stream is reset, `refused` tells why).
pub struct Forwarded {
    head: Option<Bytes>,
    rest: Incoming,
    framing: Framing,
    held: Held,
    refused: Arc<AtomicBool>,
}

impl Body for Forwarded {
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match self.head.take() {
            Some(head) => Frame::data(head),
            None => match Pin::new(&mut self.rest).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                other => return other.map_err(Into::into),
            },
        };
        if let Some(data) = frame.data_ref() {
            let partial = self.framing.feed(data);
            if !self.held.set(partial) {
                self.refused.store(true, Ordering::SeqCst);
                return Poll::Ready(Some(Err("the request bytes being read are at their bound".into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}
