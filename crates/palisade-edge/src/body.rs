//! Body types of the request path. Bodies stream both ways frame by frame; nothing here buffers a
//! whole body.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::finish::Finish;
use crate::upstream::UpstreamBody;

/// Error type of the bodies we produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the client sends it: read from an HTTP/1.1 connection in the handler's own
/// task, or an HTTP/2 stream (hyper).
pub enum ClientBody {
    Empty,
    H1(crate::h1::H1RequestBody),
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// The downstream request body on its way to the origin, with the zone's size limit applied as it
/// streams (a `Content-Length` over the limit is refused before any byte is read).
pub struct RequestBody {
    inner: Option<ClientBody>,
    remaining: u64,
    /// Set when the limit was hit, so the handler answers 413 rather than 502.
    pub(crate) too_large: Option<Arc<AtomicBool>>,
}

impl RequestBody {
    pub fn new(inner: ClientBody, limit: u64) -> Self {
        Self { inner: Some(inner), remaining: limit, too_large: Some(Arc::default()) }
    }

    pub fn empty() -> Self {
        Self { inner: None, remaining: 0, too_large: None }
    }
}

#[derive(Debug)]
struct TooLarge;
impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds the zone's max_body_bytes")
    }
}
impl std::error::Error for TooLarge {}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        if let Some(t) = &self.too_large {
                            t.store(true, Ordering::Relaxed);
                        }
                        self.inner = None;
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

enum Source {
    /// A body in hand, in up to two pieces (an error page: its text made once, and the part
    /// with the request ID), taken in order.
    Full(Option<Bytes>, Option<Bytes>),
    /// Boxed: an origin's body is 144 bytes, and every response moves through a few functions
    /// by value; a local page (a flood's refusals) need not carry that much.
    Upstream(Box<UpstreamBody>),
    /// Pieces from another task (a cache body read from disk), `remaining` bytes still to come.
    Channel(tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>, u64),
}

/// Every response body the edge sends: a local page or the origin's streamed body. It counts the
/// bytes it sends, enforces the pool's total deadline, and on drop hands the request's record to
/// [`Finish`] (metrics, access log, in-flight counters), so every exit path is accounted once.
pub struct EdgeBody {
    source: Source,
    /// The total deadline; the timer is only created if the body ever has to wait.
    deadline_at: Option<tokio::time::Instant>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Boxed: the record travels with every response, and a small box comes back warm from the
    /// allocator's per-thread cache, where 232 bytes moved with the body would land in cold
    /// per-connection memory.
    finish: Option<Box<Finish>>,
    /// Stores the body in the cache as it streams ([`crate::cache::Recorder`]).
    recorder: Option<Box<crate::cache::Recorder>>,
}

impl EdgeBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::pieces(bytes.into(), Bytes::new())
    }

    /// A body in hand in two pieces, sent in order (`first` can be static text, never copied
    /// to be made a body).
    pub fn pieces(first: Bytes, second: Bytes) -> Self {
        let piece = |b: Bytes| (!b.is_empty()).then_some(b);
        Self {
            source: Source::Full(piece(first), piece(second)),
            deadline_at: None,
            deadline: None,
            finish: None,
            recorder: None,
        }
    }

    pub fn empty() -> Self {
        Self { source: Source::Full(None, None), deadline_at: None, deadline: None, finish: None, recorder: None }
    }

    /// A body of `len` bytes whose pieces arrive on `rx`; fewer is an error.
    pub fn channel(rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>, len: u64) -> Self {
        Self { source: Source::Channel(rx, len), deadline_at: None, deadline: None, finish: None, recorder: None }
    }

    pub fn upstream(body: UpstreamBody, deadline_at: Option<tokio::time::Instant>) -> Self {
        Self { source: Source::Upstream(Box::new(body)), deadline_at, deadline: None, finish: None, recorder: None }
    }

    /// Stores this body in the cache as it streams to the client (never spliced then).
    pub fn record(&mut self, r: Box<crate::cache::Recorder>) {
        self.recorder = Some(r);
    }

    pub fn set_finish(&mut self, f: Box<Finish>) {
        self.finish = Some(f);
    }

    pub fn finish_mut(&mut self) -> Option<&mut Finish> {
        self.finish.as_deref_mut()
    }

    /// Appends the whole body to `out` when it is in hand and `len` bytes long (a local page),
    /// counted as sent and complete as if its frames had been taken; false (nothing taken)
    /// for any other body.
    pub fn take_in_hand(&mut self, len: u64, out: &mut bytes::BytesMut) -> bool {
        let Source::Full(a, b) = &mut self.source else { return false };
        let pieces = [a.as_ref(), b.as_ref()];
        let total: u64 = pieces.iter().map(|p| p.map_or(0, |p| p.len() as u64)).sum();
        if total != len || self.recorder.is_some() {
            return false;
        }
        for piece in pieces.into_iter().flatten() {
            out.extend_from_slice(piece);
        }
        (*a, *b) = (None, None);
        if let Some(f) = self.finish.as_mut() {
            f.bytes_sent += total;
            f.completed = true;
        }
        true
    }

    /// The origin side of an upgraded connection (after a 101 from the origin).
    pub fn take_tunnel(&mut self) -> Option<(tokio::net::TcpStream, Bytes)> {
        match &mut self.source {
            Source::Upstream(b) => b.take_tunnel(),
            Source::Full(..) | Source::Channel(..) => None,
        }
    }
}

impl EdgeBody {
    /// While the origin keeps us waiting: Ready(error) once the exchange's total time is up.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        if self.deadline.is_none() {
            self.deadline = self.deadline_at.map(|at| Box::pin(tokio::time::sleep_until(at)));
        }
        if let Some(d) = self.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                if let Some(f) = self.finish.as_mut() {
                    f.total_timeout = true;
                }
                return Poll::Ready(Box::new(TotalTimeout));
            }
        }
        Poll::Pending
    }

    /// Whether the rest of this body can be spliced to the client ([`crate::splice`]).
    pub fn can_splice(&self) -> bool {
        self.recorder.is_none()
            && matches!(&self.source, Source::Upstream(b) if matches!(&**b, UpstreamBody::H1(body) if body.can_splice()))
    }

    /// Starts splicing a body that [`Self::can_splice`]: what was already read past the head
    /// (counted as sent).
    pub fn splice_start(&mut self) -> Option<Bytes> {
        let Source::Upstream(b) = &mut self.source else { return None };
        let UpstreamBody::H1(body) = &mut **b else { return None };
        let buffered = body.splice_start();
        if let (Some(b), Some(f)) = (&buffered, self.finish.as_mut()) {
            f.bytes_sent += b.len() as u64;
        }
        buffered
    }

    /// Moves what the origin has sent of a body being spliced into `pipe` (empty), within the
    /// exchange's total time. Counted as sent, as frames are when they are taken.
    pub fn poll_splice_into(
        &mut self,
        cx: &mut Context<'_>,
        pipe: &mut crate::splice::Pipe,
    ) -> Poll<Result<usize, BoxError>> {
        let Some(UpstreamBody::H1(body)) = (match &mut self.source {
            Source::Upstream(b) => Some(&mut **b),
            Source::Full(..) | Source::Channel(..) => None,
        }) else {
            return Poll::Ready(Err("not a spliceable body".into()));
        };
        match body.poll_splice_into(cx, pipe) {
            Poll::Ready(Ok(n)) => {
                if let Some(f) = self.finish.as_mut() {
                    f.bytes_sent += n as u64;
                    f.spliced_bytes += n as u64;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(Box::new(e))),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }
}

#[derive(Debug)]
struct TotalTimeout;
impl std::fmt::Display for TotalTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("origin exchange exceeded timeouts.total_ms")
    }
}
impl std::error::Error for TotalTimeout {}

impl Body for EdgeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Full(a, b) => Poll::Ready(a.take().or_else(|| b.take()).map(|b| Ok(Frame::data(b)))),
            Source::Channel(rx, remaining) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    *remaining = remaining.saturating_sub(b.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if *remaining > 0 => Poll::Ready(Some(Err("cached body ended short".into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Source::Upstream(body) => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => match this.poll_deadline(cx) {
                    Poll::Ready(e) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => Poll::Pending,
                },
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(f)) = (frame.data_ref(), this.finish.as_mut()) {
                    f.bytes_sent += d.len() as u64;
                }
                if let (Some(d), Some(r)) = (frame.data_ref(), this.recorder.as_mut()) {
                    r.push(d);
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = this.finish.as_mut() {
                    f.completed = true;
                }
                if let Some(mut r) = this.recorder.take() {
                    r.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.recorder = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(a, b) => a.is_none() && b.is_none(),
            Source::Channel(_, remaining) => *remaining == 0,
            Source::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(a, b) => {
                SizeHint::with_exact([a, b].iter().map(|b| b.as_ref().map_or(0, |b| b.len() as u64)).sum())
            }
            Source::Channel(_, remaining) => SizeHint::with_exact(*remaining),
            Source::Upstream(b) => b.size_hint(),
        }
    }
}

use std::future::Future;
