//! Connections to origins: a pool per origin and per data-plane worker, so a worker only ever
//! touches its own slot (an uncontended lock) and a request never waits on another thread.
//!
//! HTTP/1.1 is spoken by [`crate::codec`] in the requesting task itself: the request is written
//! and the response read by the future that handles the request, and the response body is read
//! from the origin socket by whoever polls it (the client connection's task). A connection goes
//! back to the pool when its response body ends cleanly. One HTTP/2 connection per worker is
//! multiplexed (hyper).
//!
//! Connecting is a separate step from sending, so a connect failure is known before any byte of
//! the request (or its body) has been used, and a request on a pooled connection that turns out
//! to be closed before anything was answered comes back intact ([`Sent::NotSent`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::either::Either;

use crate::body::{BoxError, RequestBody};
use crate::codec::{self, BodyReader, BufPool, Framing, RawHeaders, Special};
use crate::proxy::Forwarding;

/// Read buffer of an origin connection. Measured with bench/proxy.sh at 100 KiB bodies: 32 KiB
/// cost 10-20 % of throughput against 64 KiB.
const READ_BUF: usize = 64 * 1024;

/// Most bytes taken from the origin socket per read while its response head is awaited.
const HEAD_READ: usize = 16 * 1024;

/// Most idle HTTP/1.1 connections kept per origin and worker.
const MAX_IDLE: usize = 512;

/// Largest response head accepted from an origin, and most header lines.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;

/// An HTTP/1.1 connection to an origin and what was read from it but not yet used.
pub struct H1Conn {
    io: TcpStream,
    buf: BytesMut,
    reused: bool,
}

#[derive(Default)]
struct Slot {
    idle: Vec<(Instant, H1Conn)>,
    h2: Option<http2::SendRequest<RequestBody>>,
}

/// One worker's pool, on cache lines of its own and with its own reference count: the lock
/// and the count change on every request, and a line shared with another worker's slot would
/// pass between the cores each time.
#[repr(align(128))]
#[derive(Default)]
struct SlotCell(Mutex<Slot>);

type Slots = Box<[Arc<SlotCell>]>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(std::io::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
}

/// The outcome of sending on a connection.
// Returned once per request, almost always as `Response`: boxing that would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Sent {
    /// The response, with the header lines of an HTTP/1.1 origin as received (its header map
    /// then empty); an HTTP/2 origin's headers are in the map, and the lines are empty.
    Response(Response<UpstreamBody>, RawHeaders),
    /// Nothing was sent or answered (a pooled connection closed under us): it can be sent again.
    NotSent(Box<Request<RequestBody>>, BoxError),
    Failed(BoxError),
}

/// How to reach one origin.
#[derive(Debug, Clone, Copy)]
pub struct ConnParams {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2: bool,
}

/// The connection pools of one origin, one slot per worker.
pub struct OriginConns {
    addr: SocketAddr,
    slots: Slots,
}

impl std::fmt::Debug for OriginConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginConns").field("addr", &self.addr).finish()
    }
}

/// A connection checked out for one request.
pub enum Conn {
    H1(H1Conn),
    H2(http2::SendRequest<RequestBody>),
}

/// Where a connection returns to: the pool slot of the worker that checked it out.
#[derive(Clone)]
struct Home(Arc<SlotCell>);

impl Home {
    fn check_in(&self, conn: H1Conn) {
        let mut slot = crate::lock(&self.0 .0);
        if slot.idle.len() < MAX_IDLE {
            slot.idle.push((crate::clock::now(), conn));
        }
    }
}

/// Whether an idle pooled connection is still usable: no bytes and no close arrived while it
/// sat in the pool. Costs a system call only when the socket was flagged readable.
fn still_open(conn: &H1Conn) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match conn.io.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(conn.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

impl OriginConns {
    pub fn new(addr: SocketAddr, workers: usize) -> Self {
        Self { addr, slots: (0..workers.max(1)).map(|_| Arc::default()).collect() }
    }

    /// This worker's slot (the first off the workers).
    fn slot(&self) -> Option<&Arc<SlotCell>> {
        self.slots.get(crate::server::worker_index()).or_else(|| self.slots.first())
    }

    /// A usable connection from this worker's pool. The caller connects ([`Self::connect`])
    /// only when there is none: a connecting future, built and moved into the caller's state on
    /// every request, would copy 1.2 KiB into cache-cold task memory for nothing.
    pub fn pooled(&self, p: ConnParams) -> Option<Conn> {
        let s = self.slot()?;
        let mut slot = crate::lock(&s.0);
        if p.h2 {
            if let Some(s) = slot.h2.as_ref().filter(|s| !s.is_closed()) {
                return Some(Conn::H2(s.clone()));
            }
            slot.h2 = None;
        } else {
            let now = crate::clock::now();
            // Newest first; closed or stale connections are dropped.
            while let Some((since, conn)) = slot.idle.pop() {
                if now.duration_since(since) <= p.idle_timeout && still_open(&conn) {
                    return Some(Conn::H1(conn));
                }
            }
        }
        None
    }

    /// A new connection (see [`Self::pooled`]).
    pub async fn connect(&self, p: ConnParams) -> Result<Conn, ConnectError> {
        let stream = match tokio::time::timeout(p.connect_timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        if p.h2 {
            // Boxed: once per connection, and this future's size is paid on every request.
            let handshake = Box::pin(
                http2::Builder::new(TokioExecutor::new()).timer(TokioTimer::new()).handshake(TokioIo::new(stream)),
            );
            let (sender, conn) = handshake.await.map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if let Some(s) = self.slot() {
                crate::lock(&s.0).h2 = Some(sender.clone());
            }
            Ok(Conn::H2(sender))
        } else {
            Ok(Conn::H1(H1Conn { io: stream, buf: BytesMut::new(), reused: false }))
        }
    }

    /// Sends `req`, with the edge's `forwarding` headers after its own (HTTP/1.1; an HTTP/2
    /// request carries them in its map), and reads the response head. An HTTP/1.1 connection
    /// goes back to the pool when the response body has been read to its end.
    ///
    /// Not an `async fn`: it picks the protocol's future and returns it, so the request is not
    /// moved through one more future on its way (each level copies its whole state into the
    /// connection's task memory, which is cache-cold at hundreds of connections).
    pub fn send<'a>(
        &self,
        conn: Conn,
        req: Box<Request<RequestBody>>,
        forwarding: &'a Forwarding,
    ) -> impl Future<Output = Sent> + Send + 'a {
        match conn {
            Conn::H1(c) => Either::Left(send_h1(self.slot().cloned().map(Home), c, req, forwarding)),
            Conn::H2(s) => Either::Right(send_h2(s, req)),
        }
    }
}

async fn send_h2(mut s: http2::SendRequest<RequestBody>, req: Box<Request<RequestBody>>) -> Sent {
    match s.try_send_request(*req).await {
        Ok(r) => Sent::Response(r.map(UpstreamBody::H2), RawHeaders::default()),
        Err(mut e) => match e.take_message() {
            Some(req) => Sent::NotSent(Box::new(req), Box::new(e.into_error())),
            None => Sent::Failed(Box::new(e.into_error())),
        },
    }
}

/// Why an origin's answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin closed the connection before answering")]
    Closed,
    #[error("origin response head is malformed")]
    BadHead,
    #[error("origin response head exceeds {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    #[error("origin response framing is invalid")]
    BadFraming,
}

/// Serializes an origin request head (request line, the client's headers with the forwarding
/// lines, framing) into `head`; returns how the body is framed.
fn write_request_head(
    head: &mut BytesMut,
    req: &Request<RequestBody>,
    body: &RequestBody,
    forwarding: &Forwarding,
) -> Framing {
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let replaces_host = forwarding.host();
    let (host_line, edge_lines) = forwarding.lines();
    head.extend_from_slice(host_line);
    forwarding.client.write(head);
    for (name, value) in req.headers() {
        if !(replaces_host && name == HOST) {
            codec::write_header(head, name, value);
        }
    }
    head.extend_from_slice(edge_lines);
    let declared = match req.headers().get(CONTENT_LENGTH) {
        Some(v) => codec::parse_content_length(v.as_bytes()),
        None => forwarding.client.special(Special::ContentLength).next().and_then(codec::parse_content_length),
    };
    let framing = match declared {
        Some(n) => Framing::Length(n),
        None if !body.is_end_stream() => {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        None => Framing::Empty,
    };
    head.extend_from_slice(b"\r\n");
    framing
}

/// Sends one request on an HTTP/1.1 connection and reads the response head.
///
/// Not an `async fn`: one of those keeps each argument twice for its whole life (as captured
/// and as a local), and this future is moved into the request's, which is moved into the
/// connection's task memory, once per request. The head is written before the future exists,
/// and the request travels boxed (it comes back whole in [`Sent::NotSent`]).
fn send_h1(
    home: Option<Home>,
    mut conn: H1Conn,
    mut req: Box<Request<RequestBody>>,
    forwarding: &Forwarding,
) -> impl Future<Output = Sent> + Send + 'static {
    let body = std::mem::replace(req.body_mut(), RequestBody::empty());
    let mut head = codec::HeadBuf::take();
    let framing = write_request_head(&mut head, &req, &body, forwarding);
    // Until a byte of the body was taken, a failure on a reused connection can be resent.
    let resendable = conn.reused && body.is_end_stream();
    // The body moves in once, in its slot (a captured `body` would keep a second place).
    let mut slot = Some(body);
    async move {
        let not_sent = |mut req: Box<Request<RequestBody>>, body, e: BoxError| {
            *req.body_mut() = body;
            Sent::NotSent(req, e)
        };

        // An origin may answer before it has read the whole body (a 413, a redirect, an auth
        // failure), and may stop reading or close. So while a body is being sent, the answer is
        // watched for: an early answer ends the upload and is passed on, and a failed write is
        // not the end of the story if an answer is already there.
        let mut answered_early = false;
        let written = if framing == Framing::Empty {
            codec::write_message(&mut conn.io, &mut head, &mut slot, framing).await
        } else {
            let (mut rd, mut wr) = conn.io.split();
            let write = codec::write_message(&mut wr, &mut head, &mut slot, framing);
            tokio::pin!(write);
            let buf = &mut conn.buf;
            borrow_read_buf(buf);
            let mut origin_closed = false;
            loop {
                tokio::select! {
                    biased;
                    w = &mut write => break w,
                    r = std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut rd), cx, &mut *buf)), if !origin_closed => {
                        match r {
                            Ok(n) if n > 0 => {
                                answered_early = true;
                                break Ok(0);
                            }
                            // Closed or failed: the write will tell; whatever was read stays in `buf`.
                            _ => origin_closed = true,
                        }
                    }
                }
            }
        };
        drop(head);
        // Still here only if it was never read to its end (an empty body is never touched).
        let body = slot.unwrap_or_else(RequestBody::empty);
        if let Err(e) = written {
            match e {
                codec::WriteError::Io(io) if resendable => return not_sent(req, body, Box::new(io)),
                codec::WriteError::Body(b) => return Sent::Failed(b),
                // The origin may have answered before it stopped reading: look for that answer.
                codec::WriteError::Io(io) => {
                    tracing::debug!(error = %io, "writing to the origin failed; reading any answer it sent");
                    answered_early = true;
                }
            }
        }
        // After an early answer the connection is mid-request: it cannot be used again.
        let reusable = !answered_early;

        loop {
            match parse_response_head(&mut conn.buf, req.method()) {
                Err(e) => return Sent::Failed(Box::new(e)),
                Ok(Some(Head::Informational)) => continue,
                Ok(Some(Head::Final(resp, headers, framing, keep_alive))) => {
                    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                    if switching {
                        let leftover = conn.buf.split().freeze();
                        return Sent::Response(resp.map(|()| UpstreamBody::Tunnel(Some((conn.io, leftover)))), headers);
                    }
                    let reader = BodyReader::new(framing, MAX_RESPONSE_HEAD, READ_BUF);
                    let mut conn = Some(conn);
                    let home = if keep_alive && reusable { home } else { None };
                    if reader.is_done() {
                        release(&mut conn, home.as_ref());
                    }
                    return Sent::Response(resp.map(|()| UpstreamBody::H1(H1Body { conn, reader, home })), headers);
                }
                Ok(None) => {}
            }
            if conn.buf.len() > MAX_RESPONSE_HEAD {
                return Sent::Failed(Box::new(OriginError::HeadTooLarge));
            }
            let nothing_yet = conn.buf.is_empty();
            // A head is read in small steps: what of a large body comes with it is copied, the rest
            // can be spliced (crate::splice). The read buffer is borrowed only while there is
            // something to read: hundreds of exchanges waiting for their origins hold none, and
            // the few buffers in use stay warm.
            let read = std::future::poll_fn(|cx| {
                borrow_read_buf(&mut conn.buf);
                let read =
                    tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut (&mut conn.buf).limit(HEAD_READ));
                if read.is_pending() && conn.buf.is_empty() {
                    put_read_buf(std::mem::take(&mut conn.buf));
                }
                read
            });
            match read.await {
                Ok(0) if resendable && nothing_yet => return not_sent(req, body, Box::new(OriginError::Closed)),
                Ok(0) => return Sent::Failed(Box::new(OriginError::Closed)),
                Ok(_) => {}
                Err(e) if resendable && nothing_yet => return not_sent(req, body, Box::new(e)),
                Err(e) => return Sent::Failed(Box::new(e)),
            }
        }
    }
}

/// A parsed origin response head.
pub enum Head {
    /// A 1xx other than 101 (skipped: 100 Continue, 103 Early Hints).
    Informational,
    /// The response with an empty header map, its header lines as received, framing, and
    /// whether the connection can carry another exchange.
    Final(Response<()>, RawHeaders, Framing, bool),
}

/// Parses a response head at the start of `buf` and removes it. Ok(None): incomplete.
pub fn parse_response_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, OriginError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Header slots on the stack, uninitialised: no 4 KiB of stores per response.
    let mut slots: [std::mem::MaybeUninit<httparse::Header<'_>>; MAX_RESPONSE_HEADERS] =
        [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(OriginError::BadHead),
    };
    let code = parsed.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        let _ = buf.split_to(len);
        return Ok(Some(Head::Informational));
    }
    let http11 = parsed.version == Some(1);
    let lines = RawHeaders::lines(buf, parsed.headers).ok_or(OriginError::BadHead)?;
    let headers = RawHeaders::new(buf.split_to(len).freeze(), lines);
    let status = StatusCode::from_u16(code).map_err(|_| OriginError::BadHead)?;
    let mut keep_alive = codec::keep_alive(headers.special(Special::Connection), http11);
    let no_body = *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body || status == StatusCode::SWITCHING_PROTOCOLS {
        Framing::Empty
    } else if let Some(te) = headers.special(Special::TransferEncoding).next() {
        // Chunked must be the final coding; anything else is delimited by the close.
        let last = te.rsplit(|b| *b == b',').next().unwrap_or(b"").trim_ascii();
        if headers.special(Special::TransferEncoding).count() == 1 && last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else {
        let mut lengths = headers.special(Special::ContentLength);
        match lengths.next() {
            None => {
                keep_alive = false;
                Framing::Close
            }
            Some(v) => {
                let n = codec::parse_content_length(v).ok_or(OriginError::BadFraming)?;
                if lengths.any(|other| other != v) {
                    return Err(OriginError::BadFraming);
                }
                Framing::Length(n)
            }
        }
    };
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
    Ok(Some(Head::Final(resp, headers, framing, keep_alive)))
}

/// Returns a connection whose exchange ended cleanly to its pool (only if nothing extra was read).
fn release(conn: &mut Option<H1Conn>, home: Option<&Home>) {
    let Some(mut c) = conn.take() else { return };
    if !c.buf.is_empty() {
        return;
    }
    put_read_buf(std::mem::take(&mut c.buf));
    if let Some(home) = home {
        c.reused = true;
        home.check_in(c);
    }
}

thread_local! {
    /// Read buffers of this worker's origin connections that are between exchanges. A
    /// connection borrows one for an exchange and gives it back when the response has been
    /// read: a handful of buffers, warm in the cache, serve every connection, instead of a cold
    /// 64 KiB per pooled connection (measured: receiving into per-connection buffers cost twice
    /// the kernel copy time at 256 connections x 100 KiB).
    static READ_BUFS: BufPool = const { BufPool::new(0, 32) };
}

/// Gives `buf` room to read into: a buffer from this worker's spares if it has none, its whole
/// memory back if it is empty and nothing else holds a part of it.
fn borrow_read_buf(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = READ_BUFS.with(BufPool::take);
    }
    if buf.is_empty() {
        let _ = buf.try_reclaim(READ_BUF);
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUF);
    }
}

fn put_read_buf(buf: BytesMut) {
    READ_BUFS.with(|p| p.put(buf));
}

/// An HTTP/1.1 response body read straight from the origin socket.
pub struct H1Body {
    conn: Option<H1Conn>,
    reader: BodyReader,
    home: Option<Home>,
}

impl H1Body {
    /// Whether the rest of this body can be spliced ([`crate::splice`]): a known length, with
    /// at least [`crate::splice::MIN_BYTES`] still on the socket.
    pub fn can_splice(&self) -> bool {
        let (Some(conn), Framing::Length(left)) = (self.conn.as_ref(), self.reader.framing()) else { return false };
        left.saturating_sub(conn.buf.len() as u64) >= crate::splice::MIN_BYTES
    }

    /// Starts splicing a body that [`Self::can_splice`]: takes out what was read past the head.
    pub fn splice_start(&mut self) -> Option<Bytes> {
        let conn = self.conn.as_mut()?;
        // More of the body is on the socket than in `buf`, so this takes all of `buf`.
        let buffered = self.reader.take(&mut conn.buf).ok().flatten();
        if conn.buf.is_empty() {
            // The read buffer is not needed while the kernel moves the rest.
            put_read_buf(std::mem::take(&mut conn.buf));
        }
        buffered
    }

    /// Moves what the origin has sent of the rest of the body into `pipe` (empty). The
    /// connection goes back to its pool once the last byte is in the pipe.
    pub fn poll_splice_into(
        &mut self,
        cx: &mut Context<'_>,
        pipe: &mut crate::splice::Pipe,
    ) -> Poll<Result<usize, codec::BodyError>> {
        let Some(conn) = self.conn.as_mut() else { return Poll::Ready(Err(codec::BodyError::Truncated)) };
        let left = self.reader.remaining().unwrap_or(0);
        match std::task::ready!(pipe.poll_fill(cx, &conn.io, left)) {
            Ok(0) => {
                self.conn = None;
                Poll::Ready(Err(codec::BodyError::Truncated))
            }
            Ok(n) => {
                self.reader.consumed(n as u64);
                if self.reader.is_done() {
                    release(&mut self.conn, self.home.as_ref());
                }
                Poll::Ready(Ok(n))
            }
            Err(e) => {
                self.conn = None;
                Poll::Ready(Err(codec::BodyError::Io(e)))
            }
        }
    }
}

/// A response body from an origin.
pub enum UpstreamBody {
    H1(H1Body),
    H2(Incoming),
    /// A 101 answer: the origin connection and what it sent past the head, for the tunnel.
    Tunnel(Option<(TcpStream, Bytes)>),
}

impl UpstreamBody {
    /// The origin side of an upgraded connection.
    pub fn take_tunnel(&mut self) -> Option<(TcpStream, Bytes)> {
        match self {
            UpstreamBody::Tunnel(t) => t.take(),
            _ => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            UpstreamBody::Tunnel(_) => Poll::Ready(None),
            UpstreamBody::H1(b) => {
                let Some(conn) = b.conn.as_mut() else { return Poll::Ready(None) };
                let polled = b.reader.poll_next(cx, &mut conn.io, &mut conn.buf);
                match polled {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(data))) => {
                        if b.reader.is_done() {
                            release(&mut b.conn, b.home.as_ref());
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        b.conn = None;
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Ready(None) => {
                        release(&mut b.conn, b.home.as_ref());
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H2(b) => b.is_end_stream(),
            UpstreamBody::Tunnel(_) => true,
            UpstreamBody::H1(b) => b.conn.is_none() || b.reader.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H2(b) => b.size_hint(),
            UpstreamBody::Tunnel(_) => SizeHint::with_exact(0),
            UpstreamBody::H1(b) => match b.reader.remaining() {
                Some(n) if b.conn.is_some() || n == 0 => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}
