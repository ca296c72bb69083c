//! gRPC over HTTP/2 details: deadlines, status replies, response bodies.
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::Either;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use percent_encoding::{percent_encode, AsciiSet, CONTROLS};

pub type ReplyBody = Either<Unary, Incoming>;

pub const OK: i32 = 0;
pub const CANCELLED: i32 = 1;
pub const DEADLINE_EXCEEDED: i32 = 4;
pub const RESOURCE_EXHAUSTED: i32 = 8;
pub const UNAVAILABLE: i32 = 14;

/// The `grpc-timeout` header ("1S", "250m", ...) as a duration; None when absent or malformed.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    if text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// Bytes outside 0x20-0x7E, and '%', are sent as %XX (the gRPC spec's grpc-message encoding).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%').add(0x7F);

fn status_headers(code: i32, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        let encoded = percent_encode(message.as_bytes(), GRPC_MESSAGE).to_string();
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", value);
        }
    }
    headers
}

fn response(body: Unary) -> Response<ReplyBody> {
    let mut reply = Response::new(Either::Left(body));
    reply
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    reply
}

/// A trailers-only error reply (HEADERS with END_STREAM).
pub fn status(code: i32, message: &str) -> Response<ReplyBody> {
    let mut reply = response(Unary {
        message: None,
        trailers: None,
    });
    reply.headers_mut().extend(status_headers(code, message));
    reply
}

/// Status OK with one message: one DATA frame, then the trailers.
pub fn message(message: &[u8]) -> Response<ReplyBody> {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    response(Unary {
        message: Some(framed.freeze()),
        trailers: Some(status_headers(OK, "")),
    })
}

/// The body of a native reply: at most one message, then the trailers.
pub struct Unary {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.message.as_ref().map_or(0, |m| m.len() as u64))
    }
}
