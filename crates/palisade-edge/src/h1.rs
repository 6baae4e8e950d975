//! HTTP/1.1 towards clients: one task per connection reads a request head, hands the request to
//! [`proxy::handle`], and writes the response, in order, for as long as the connection is kept
//! alive. The request body is read from the socket by whoever polls it (the code sending it to
//! the origin), in this same task. A connection that opens with the HTTP/2 preface is handed
//! back to the caller for HTTP/2.
//!
//! The bytes read here have already passed the connection guard ([`crate::guard`]), which
//! checked every head and every chunk on the raw stream and replaced a refused head with a
//! placeholder request; the parsing here is still complete and strict on its own.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::header::{CONNECTION, CONTENT_LENGTH, DATE};
use hyper::{Method, StatusCode, Uri, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};

use crate::body::{BoxError, ClientBody, EdgeBody};
use crate::codec::{self, BodyReader, Framing, Io, RawHeaders, RequestHead, Rewind, Special};
use crate::guard::GuardLimits;
use crate::pages::error_page;
use crate::proxy::{self, Answer, ConnCtx, Reply};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The connection, shared between this task's request loop and the request body it lent out.
struct Wire {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// The current request's body, while unread.
    body: Option<BodyReader>,
    /// Bytes of `100 Continue` still to send before the body is read (None: none owed).
    continue_owed: Option<usize>,
    /// The response went out before the body was read to its end: whoever still reads it (an
    /// HTTP/2 origin connection's task) gets an error, never a quietly shortened body.
    cut: bool,
}

type SharedWire = Arc<Mutex<Wire>>;

/// A request body read from the client connection as it is polled.
pub struct H1RequestBody {
    wire: SharedWire,
}

impl Body for H1RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut guard = crate::lock(&self.wire);
        let w = &mut *guard;
        // The client waits for our 100 Continue before it sends the body (RFC 9110 10.1.1).
        while let Some(sent) = w.continue_owed {
            let rest = CONTINUE.get(sent..).unwrap_or_default();
            if rest.is_empty() {
                w.continue_owed = None;
                break;
            }
            match Pin::new(&mut w.io).poll_write(cx, rest) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(Box::new(io::Error::from(io::ErrorKind::WriteZero)))))
                }
                Poll::Ready(Ok(n)) => w.continue_owed = Some(sent + n),
            }
        }
        if w.cut {
            return Poll::Ready(Some(Err(Box::new(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "request body cut off: the response was sent before it was read",
            )))));
        }
        let Some(reader) = w.body.as_mut() else { return Poll::Ready(None) };
        match reader.poll_next(cx, &mut w.io, &mut w.buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        crate::lock(&self.wire).body.as_ref().is_none_or(BodyReader::is_done)
    }

    fn size_hint(&self) -> SizeHint {
        match crate::lock(&self.wire).body.as_ref().and_then(BodyReader::remaining) {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Writes through the shared connection.
struct WireWriter<'a>(&'a SharedWire);

impl AsyncWrite for WireWriter<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut crate::lock(self.0).io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut crate::lock(self.0).io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        crate::lock(self.0).io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut crate::lock(self.0).io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut crate::lock(self.0).io).poll_shutdown(cx)
    }
}

/// How a connection's HTTP/1.1 session ended.
pub enum Ended {
    Closed,
    /// The client opened with the HTTP/2 preface: continue with HTTP/2 on this stream.
    H2(Rewind<Box<dyn Io>>),
}

enum HeadRead {
    Head(Parsed),
    Preface,
    Eof,
    Invalid,
}

/// Serves HTTP/1.1 requests on `io` until the connection closes, the client leaves or the node
/// shuts down (between requests).
pub async fn serve(
    io: Box<dyn Io>,
    ctx: Arc<ConnCtx>,
    shutdown: watch::Receiver<bool>,
    local_shutdown: Arc<Notify>,
    limits: &GuardLimits,
) -> Ended {
    let max_headers = limits.max_headers;
    let wire: SharedWire =
        Arc::new(Mutex::new(Wire { io, buf: BytesMut::new(), body: None, continue_owed: None, cut: false }));
    // Read after each response: a version compare, not the channel's lock shared by every worker.
    let draining = shutdown.clone();
    // Polled each time the connection waits for a request: this worker's own signal (see
    // `server::worker`), registered before the node-wide flag is read so that none is missed.
    // It is polled once, which hands it this task's waker (valid for the task's life); after
    // that it wakes this task when shutdown begins, and each wait asks the watch channel (a
    // version compare) instead of taking the signal's lock to re-check the waker.
    let shutdown_signal = async move {
        let notified = local_shutdown.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if *shutdown.borrow() {
            return;
        }
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if !std::mem::replace(&mut registered, true) && std::future::Future::poll(notified.as_mut(), cx).is_ready()
            {
                return Poll::Ready(());
            }
            if shutdown.has_changed().unwrap_or(true) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    };
    tokio::pin!(shutdown_signal);
    let mut first = true;
    // Whether the client may still be sending a body we did not read.
    let mut unread_body = false;
    loop {
        // The request is read and moved into the future that handles it inside this block:
        // nothing of it is kept beside that future in this one, which lives in the connection's
        // task memory for as long as the connection.
        let (version, keep_alive, head_request);
        let handling = {
            let read = tokio::select! {
                biased;
                r = std::future::poll_fn(|cx| poll_head(&wire, cx, first, max_headers)) => r,
                _ = &mut shutdown_signal => break,
            };
            let request = match read {
                Ok(HeadRead::Head(parsed)) => parsed,
                Ok(HeadRead::Preface) => {
                    return match Arc::try_unwrap(wire) {
                        Ok(w) => {
                            let w = w.into_inner().unwrap_or_else(|p| p.into_inner());
                            Ended::H2(Rewind::new(w.buf.freeze(), w.io))
                        }
                        Err(_) => Ended::Closed,
                    };
                }
                Ok(HeadRead::Invalid) => {
                    // The guard refuses malformed heads before they get here; this is the backstop.
                    let page =
                        error_page(StatusCode::BAD_REQUEST, &hyper::header::HeaderValue::from_static("-"), true, None);
                    let _ = write_response(&wire, page, false, Version::HTTP_11, false, false).await;
                    break;
                }
                Ok(HeadRead::Eof) | Err(_) => break,
            };
            first = false;
            let Parsed { version: v, keep_alive: k, framing, expect_continue, mut head } = request;
            version = v;
            keep_alive = k;
            head_request = *head.method() == Method::HEAD;
            if framing != Framing::Empty {
                let mut w = crate::lock(&wire);
                w.body = Some(BodyReader::new(framing, limits.max_header_bytes, codec::CLIENT_READ_SIZE));
                w.cut = false;
                w.continue_owed = expect_continue.then_some(0);
                head.set_body(ClientBody::H1(H1RequestBody { wire: wire.clone() }));
            }
            proxy::begin(&ctx, head)
        };
        // The same for the answer, which moves into the future that writes it.
        let written = {
            // A request answered in its first steps (a refusal) has no future to wait for.
            let answer = match handling {
                proxy::Begun::Page(page) => Answer::Page(page),
                proxy::Begun::Answered(reply) => Answer::Reply(*reply),
                proxy::Begun::Going(going) => proxy::forward(ctx.clone(), going).await,
            };
            let http10 = version == Version::HTTP_10;
            match answer {
                Answer::Page(page) => {
                    let settled = settle(&wire, &mut unread_body, &draining);
                    let keep_alive = keep_alive && settled && !page.close;
                    write_page(&wire, page, keep_alive, http10, head_request).await
                }
                Answer::Reply(reply) => {
                    if crate::pages::is_dropped(&reply.resp) {
                        // No answer: the connection is reset when the wire is dropped.
                        crate::lock(&wire).io.abort();
                        return Ended::Closed;
                    }
                    let closing = reply
                        .resp
                        .headers()
                        .get(CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let settled = settle(&wire, &mut unread_body, &draining);
                    let keep_alive = keep_alive && settled && !closing;
                    let splice = !ctx.edge.kill.off(crate::kill::Switch::Splice);
                    write_response(&wire, reply, keep_alive, version, head_request, splice).await
                }
            }
        };
        match written {
            Ok(Next::KeepAlive) => continue,
            Ok(Next::Tunnel(up, up_leftover)) => {
                tunnel(wire, up, up_leftover).await;
                return Ended::Closed;
            }
            Ok(Next::Close) | Err(_) => break,
        }
    }
    close(&wire, unread_body).await;
    Ended::Closed
}

/// Settles the request's side once its answer is known: the body it still owes, if any, is
/// cut off. True when the connection may carry another request as far as this side goes (the
/// body was read to its end, and the node is not draining); `unread_body`: the client may still
/// be sending a body that was not read.
fn settle(wire: &SharedWire, unread_body: &mut bool, draining: &watch::Receiver<bool>) -> bool {
    let body_read = {
        let mut w = crate::lock(wire);
        w.continue_owed = None;
        let done = w.body.take().is_none_or(|b| b.is_done());
        w.cut = !done;
        done
    };
    *unread_body = !body_read;
    body_read && !draining.has_changed().unwrap_or(true)
}

/// Writes the edge's own page ([`crate::pages::Page`]), head and body in one piece. Not an
/// `async fn`, as [`write_response`]: the future holds the bytes and the request's record,
/// which is dropped (and so counted) once they are out.
fn write_page(
    wire: &SharedWire,
    page: crate::pages::Page,
    keep_alive: bool,
    http10: bool,
    head_request: bool,
) -> impl std::future::Future<Output = Result<Next, codec::WriteError>> + Send + '_ {
    let mut head = codec::HeadBuf::take();
    let finish = page.write_h1(&mut head, keep_alive, http10, head_request);
    async move {
        codec::flush(&mut WireWriter(wire), &mut Vec::new(), &mut head).await?;
        drop(finish);
        Ok(if keep_alive { Next::KeepAlive } else { Next::Close })
    }
}

/// Closes the write side. With `linger` (a request body was left unread), reads and drops what the
/// client still sends for a moment, so that unread bytes do not turn the close into a reset that
/// destroys the response in flight (the "lingering close" of RFC 9112 9.6).
async fn close(wire: &SharedWire, linger: bool) {
    let mut w = WireWriter(wire);
    if w.shutdown().await.is_err() || !linger {
        return;
    }
    let linger = async {
        let mut drained = 0usize;
        let mut scratch = BytesMut::with_capacity(codec::CLIENT_READ_SIZE);
        while drained < 1024 * 1024 {
            scratch.clear();
            let n = std::future::poll_fn(|cx| {
                let mut g = crate::lock(wire);
                tokio_util::io::poll_read_buf(Pin::new(&mut g.io), cx, &mut scratch)
            })
            .await;
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), linger).await;
}

fn poll_head(wire: &SharedWire, cx: &mut Context<'_>, first: bool, max_headers: usize) -> Poll<io::Result<HeadRead>> {
    let mut guard = crate::lock(wire);
    let w = &mut *guard;
    // The head the guard parsed at the start of what it just handed over.
    let mut checked = None;
    loop {
        if first
            && !w.buf.is_empty()
            && H2_PREFACE.starts_with(w.buf.get(..H2_PREFACE.len().min(w.buf.len())).unwrap_or_default())
        {
            if w.buf.len() >= H2_PREFACE.len() {
                return Poll::Ready(Ok(HeadRead::Preface));
            }
        } else if !w.buf.is_empty() {
            match parse_request(&mut w.buf, max_headers, checked.take()) {
                Ok(Some(parsed)) => return Poll::Ready(Ok(HeadRead::Head(parsed))),
                Ok(None) => {}
                Err(()) => return Poll::Ready(Ok(HeadRead::Invalid)),
            }
        }
        // The guard hands over the buffer a head was read and checked in (no copy, and no read
        // buffer of this connection's own to go cold between requests).
        match w.io.poll_read_into(cx, &mut w.buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(HeadRead::Eof)),
            Poll::Ready(Ok(_)) => checked = w.io.take_checked(),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        }
    }
}

struct Parsed {
    version: Version,
    keep_alive: bool,
    framing: Framing,
    expect_continue: bool,
    /// The request line's parts, and the header lines as received (the header map is empty).
    head: Box<proxy::Head>,
}

/// Reads the request head at the start of `buf` and takes it out: as the guard parsed it
/// (`checked`, found in these bytes), else parsed here. Ok(None): incomplete; Err: not a request
/// this server can read (the guard refuses those before they get here).
fn parse_request(buf: &mut BytesMut, max_headers: usize, checked: Option<RequestHead>) -> Result<Option<Parsed>, ()> {
    let parsed = match checked.filter(|h| h.len <= buf.len()) {
        Some(h) => h,
        None => match codec::parse_request_head(buf, max_headers) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(None),
            Err(_) => return Err(()),
        },
    };
    let RequestHead { len, method, target: (path_start, path_len), http11, lines } = parsed;
    let version = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
    let head = buf.split_to(len).freeze();
    if path_start + path_len > head.len() {
        return Err(());
    }
    let uri = Uri::from_maybe_shared(head.slice(path_start..path_start + path_len)).map_err(|_| ())?;
    let lines = RawHeaders::new(head, lines);
    let keep_alive = codec::keep_alive(lines.special(Special::Connection), version == Version::HTTP_11);
    // The guard refused every ambiguous framing; what is left is one of these.
    let framing = if lines.special(Special::TransferEncoding).next().is_some() {
        Framing::Chunked
    } else if let Some(v) = lines.special(Special::ContentLength).next() {
        Framing::Length(codec::parse_content_length(v).ok_or(())?)
    } else {
        Framing::Empty
    };
    let expect_continue = version == Version::HTTP_11
        && lines.special(Special::Expect).next().is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let (mut parts, ()) = hyper::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    Ok(Some(Parsed { version, keep_alive, framing, expect_continue, head: proxy::Head::boxed(parts, lines) }))
}

enum Next {
    KeepAlive,
    Close,
    Tunnel(tokio::net::TcpStream, Bytes),
}

/// How a response head that was written frames what follows it.
struct Framed {
    framing: Framing,
    /// Whether the connection may carry another request after this response.
    keep_alive: bool,
    /// A 101: the connection becomes a tunnel.
    switching: bool,
}

/// Writes one response. `keep_alive`: whether the connection may carry another request.
///
/// Not an `async fn`: the head is written out before the returned future exists, so the future
/// holds the head's bytes and the body, not the whole reply (twice, as an `async fn` keeps its
/// arguments) in the connection's task memory.
fn write_response(
    wire: &SharedWire,
    reply: Reply,
    keep_alive: bool,
    request_version: Version,
    head_request: bool,
    splice: bool,
) -> impl std::future::Future<Output = Result<Next, codec::WriteError>> + Send + '_ {
    let mut head = codec::HeadBuf::take();
    let (Framed { framing, keep_alive, switching }, mut body) =
        write_head(&mut head, reply, keep_alive, request_version, head_request);
    // A small body in hand (a challenge page) goes out with its head in one piece, without the
    // frame-by-frame writer.
    let in_hand = match framing {
        Framing::Length(n) if head.len() as u64 + n <= codec::WHOLE as u64 => body.take_in_hand(n, &mut head),
        _ => false,
    };
    let mut slot = Some(body);
    async move {
        let out = &mut *head;
        if in_hand {
            codec::flush(&mut WireWriter(wire), &mut Vec::new(), out).await?;
            return Ok(if keep_alive { Next::KeepAlive } else { Next::Close });
        }
        if let (Framing::Length(_), true) = (framing, splice) {
            if write_spliced(wire, out, &mut slot).await? {
                return Ok(if keep_alive { Next::KeepAlive } else { Next::Close });
            }
        }
        let mut writer = WireWriter(wire);
        codec::write_message(&mut writer, out, &mut slot, framing).await?;
        if switching {
            if let Some((up, leftover)) = slot.as_mut().and_then(EdgeBody::take_tunnel) {
                return Ok(Next::Tunnel(up, leftover));
            }
            return Ok(Next::Close);
        }
        // A body shorter than its declared length leaves the client waiting: only closing can tell it.
        if framing != Framing::Empty && slot.is_some_and(|b| !b.is_end_stream()) {
            return Ok(Next::Close);
        }
        Ok(if keep_alive { Next::KeepAlive } else { Next::Close })
    }
}

/// Serializes a response head into `out`; returns its framing and the body.
fn write_head(
    out: &mut BytesMut,
    Reply { resp, origin_headers }: Reply,
    mut keep_alive: bool,
    request_version: Version,
    head_request: bool,
) -> (Framed, EdgeBody) {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = match parts.headers.get(CONTENT_LENGTH) {
        Some(v) => Some(v.as_bytes()),
        None => origin_headers.special(Special::ContentLength).next(),
    };
    let framing = if no_body {
        Framing::Empty
    } else if let Some(n) = declared.and_then(codec::parse_content_length) {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(codec::decimal(n, &mut [0; 20]));
        out.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else if request_version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::Close
    };
    // RFC 9110 6.6.1: a response the edge makes itself carries the date (an origin's has its own).
    if !parts.headers.contains_key(DATE) && origin_headers.get(DATE.as_str()).is_none() {
        out.extend_from_slice(b"date: ");
        date_now(out);
        out.extend_from_slice(b"\r\n");
    }
    // The origin's lines come stripped of `Connection` (proxy::strip_origin_lines).
    origin_headers.write(out);
    for (name, value) in &parts.headers {
        if name == CONNECTION && !switching {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !switching {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if request_version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    codec::recycle_map(parts.headers);
    (Framed { framing, keep_alive, switching }, body)
}

/// Writes the head in `out` and then the body with [`crate::splice`], when the body and the
/// connection allow it (a large origin body of known length, a plain TCP client). Ok(false):
/// they do not, and nothing was written or taken. Checked before a pipe is taken, so a small
/// response costs two comparisons and a lock it takes anyway.
async fn write_spliced(
    wire: &SharedWire,
    out: &mut BytesMut,
    slot: &mut Option<EdgeBody>,
) -> Result<bool, codec::WriteError> {
    if !slot.as_ref().is_some_and(EdgeBody::can_splice) || !crate::lock(wire).io.can_splice() {
        return Ok(false);
    }
    // Out of descriptors: the ordinary path still works.
    let Ok(mut pipe) = crate::splice::Pipe::take() else { return Ok(false) };
    // The head and what came with it, in one write.
    let mut queued = Vec::with_capacity(2);
    queued.push(out.split().freeze());
    queued.extend(slot.as_mut().and_then(EdgeBody::splice_start));
    codec::flush(&mut WireWriter(wire), &mut queued, out).await?;
    while let Some(body) = slot.as_mut() {
        if !body.is_end_stream() {
            std::future::poll_fn(|cx| body.poll_splice_into(cx, &mut pipe)).await.map_err(codec::WriteError::Body)?;
        }
        if body.is_end_stream() {
            // The body is all in hand: it records the request as complete before the last
            // bytes leave, as on the ordinary path.
            let _ = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
            *slot = None;
        }
        while pipe.held() > 0 {
            std::future::poll_fn(|cx| crate::lock(wire).io.poll_splice_from(cx, &mut pipe))
                .await
                .map_err(codec::WriteError::Io)?;
        }
    }
    Ok(true)
}

thread_local! {
    /// The current second's HTTP date, formatted once per second per thread, and the instant
    /// (on the poll's clock) until which it holds: a response reads no wall clock of its own.
    static DATE_CACHE: std::cell::RefCell<(Option<tokio::time::Instant>, String)> =
        const { std::cell::RefCell::new((None, String::new())) };
}

pub(crate) fn date_now(out: &mut BytesMut) {
    let now = crate::clock::now();
    DATE_CACHE.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => {
            if c.0.is_none_or(|until| now >= until) || c.1.is_empty() {
                let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let left = std::time::Duration::from_nanos(1_000_000_000 - u64::from(wall.subsec_nanos()));
                *c = (Some(now + left), crate::finish::http_date(wall.as_secs()));
            }
            out.extend_from_slice(c.1.as_bytes());
        }
        Err(_) => out.extend_from_slice(crate::finish::http_date(crate::clock::unix_now()).as_bytes()),
    });
}

/// After a 101: bytes flow both ways until either side closes. This task becomes the tunnel.
async fn tunnel(wire: SharedWire, mut up: tokio::net::TcpStream, up_leftover: Bytes) {
    let Ok(w) = Arc::try_unwrap(wire) else { return };
    let w = w.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut client = w.io;
    if !w.buf.is_empty() && up.write_all(&w.buf).await.is_err() {
        return;
    }
    if !up_leftover.is_empty() && client.write_all(&up_leftover).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::{error_page, H1};
    use hyper::header::HeaderValue;

    /// A response's status line, its header lines as a sorted set (name lowercased) and its body.
    fn read(bytes: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(len) = resp.parse(bytes).unwrap() else { panic!("incomplete") };
        let status = format!("{} {}", resp.code.unwrap(), resp.reason.unwrap());
        let mut lines: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8(h.value.to_vec()).unwrap()))
            .collect();
        lines.sort();
        (status, lines, bytes[len..].to_vec())
    }

    /// The fast path that writes the edge's own pages (`Page::write_h1`) says what the general
    /// path says for the same page as a response (`error_page`, then `write_head`): the same
    /// status, header lines and body, for every shape of page and connection.
    #[test]
    fn a_page_written_out_reads_as_its_reply_written_out() {
        let id = HeaderValue::from_static("0123456789abcdef");
        for (status, close, retry_after) in
            [(429, false, Some(3600)), (404, false, None), (400, true, None), (418, false, None), (503, false, Some(1))]
        {
            for (keep_alive, http10) in [(true, false), (false, false), (true, true), (false, true)] {
                let keep_alive = keep_alive && !close;
                let status = StatusCode::from_u16(status).unwrap();
                let mut fast = BytesMut::new();
                let h1 = H1 { keep_alive, http10, head_request: false };
                let sent = crate::pages::write_h1(&mut fast, status, id.as_bytes(), retry_after, h1);

                let mut slow = BytesMut::new();
                let version = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
                let reply = error_page(status, &id, close, retry_after);
                let (framed, mut body) = write_head(&mut slow, reply, keep_alive, version, false);
                let Framing::Length(n) = framed.framing else { panic!("a page has a length") };
                assert!(body.take_in_hand(n, &mut slow));

                let (mut fast, mut slow) = (read(&fast), read(&slow));
                // Both say the date; the second may turn between the two writes.
                for (_, lines, _) in [&mut fast, &mut slow] {
                    let dates = lines.iter().filter(|(k, _)| k == "date").count();
                    assert_eq!(dates, 1);
                    lines.retain(|(k, _)| k != "date");
                }
                assert_eq!(fast, slow, "{status} close={close} keep_alive={keep_alive} http10={http10}");
                assert_eq!(sent, n);
                assert!(fast.1.iter().any(|(k, v)| k == "x-request-id" && v == "0123456789abcdef"));
            }
        }
    }

    /// A HEAD request gets the head alone, with the length the page would have.
    #[test]
    fn a_page_to_a_head_request_has_no_body() {
        let id = HeaderValue::from_static("0123456789abcdef");
        let mut out = BytesMut::new();
        let h1 = H1 { keep_alive: true, http10: false, head_request: true };
        assert_eq!(crate::pages::write_h1(&mut out, StatusCode::TOO_MANY_REQUESTS, id.as_bytes(), Some(5), h1), 0);
        let (status, lines, body) = read(&out);
        assert_eq!(status, "429 Too Many Requests");
        assert!(body.is_empty());
        let length: usize = lines.iter().find(|(k, _)| k == "content-length").unwrap().1.parse().unwrap();
        let mut get = BytesMut::new();
        let get_h1 = H1 { head_request: false, ..h1 };
        crate::pages::write_h1(&mut get, StatusCode::TOO_MANY_REQUESTS, id.as_bytes(), Some(5), get_h1);
        assert_eq!(read(&get).2.len(), length);
        assert!(lines.iter().any(|(k, v)| k == "retry-after" && v == "5"));
    }
}
