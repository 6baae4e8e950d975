//! HTTP/1.1 on the wire, shared by both sides of the proxy (clients and origins): heads parsed
//! into `http` types without copying header values, heads written, and bodies framed and
//! unframed (length, chunked, close-delimited) over any async byte stream.
//!
//! The request path runs HTTP/1.1 in the connection's own task: the body of a request is read
//! from the client socket by the code that writes it to the origin, and the origin's response
//! body is read by the code that writes it to the client. No channels and no second task sit in
//! between, which is where a general-purpose client/server pair spends most of its time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite};

/// How much is read from a client connection at a time outside the guard's own reads (request
/// bodies, connections read without the guard).
pub const CLIENT_READ_SIZE: usize = 16 * 1024;

/// What a client connection runs over (the guard around TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    /// Reads more bytes onto the end of `buf`; Ready(Ok(0)) at the end of the stream. The guard
    /// hands over the buffer it checked them in when `buf` is empty, instead of copying.
    fn poll_read_into(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(CLIENT_READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }

    /// The request head at the start of what the last [`Self::poll_read_into`] handed over
    /// into an empty buffer, as the guard parsed it ([`RequestHead`]), to be read without
    /// parsing it again. Taken once, right after that read.
    fn take_checked(&mut self) -> Option<RequestHead> {
        None
    }

    /// Makes the coming close a reset (`SO_LINGER` 0): a dropped connection ([`crate::pages::dropped`])
    /// ends at once on both sides, with no FIN exchange and no TIME_WAIT left here.
    fn abort(&self) {}

    /// Whether [`Self::poll_splice_from`] works here (a plain TCP socket underneath).
    fn can_splice(&self) -> bool {
        false
    }

    /// Writes bytes held in `pipe` to the connection inside the kernel ([`crate::splice`]).
    fn poll_splice_from(&mut self, _cx: &mut Context<'_>, _pipe: &mut crate::splice::Pipe) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::Unsupported, "this connection cannot splice")))
    }
}

/// Frames up to this size are copied behind the head (or the previous small frame); larger ones
/// are written from where they are, in the same vectored write. Copying a 1 KiB body behind the
/// head cost 2.5-3.5 % of requests/s at 1 KiB x 256 connections (bench/proxy.sh, A/B): the copy
/// lands in the connection's own, cache-cold head buffer, while the body sits in a warm shared
/// read buffer. Tiny frames (chunked drips) are still gathered.
const COALESCE: usize = 256;
/// A whole message (head and a body of known length) up to this size is gathered into one
/// piece and goes out in one plain write, a `send`, not a `writev` of pieces. A body already in
/// hand (an error page under a flood) skips the frame loop too (`h1::write_response`).
pub const WHOLE: usize = 1024;
/// Most bytes gathered before a write.
const GATHER: usize = 16 * 1024;

/// A worker's spare objects of one kind, most recently used last (a thread-local). Memory that
/// lives only while a message is handled is taken from here and given back, so that the few in
/// use stay warm in the cache and an idle connection holds none (as nginx frees a kept-alive
/// connection's buffers). The allocator's own per-thread cache keeps 7 chunks of a size: with
/// a hundred requests in flight per worker, most of these went through its slower bins.
pub struct Spares<T> {
    spare: std::cell::RefCell<Vec<T>>,
    /// Most spares kept.
    keep: usize,
}

impl<T> Spares<T> {
    pub const fn new(keep: usize) -> Self {
        Self { spare: std::cell::RefCell::new(Vec::new()), keep }
    }

    /// The most recently given back spare, or `make()`.
    pub fn take(&self, make: impl FnOnce() -> T) -> T {
        self.spare.try_borrow_mut().ok().and_then(|mut v| v.pop()).unwrap_or_else(make)
    }

    /// Keeps `item`, emptied by its giver, if room is left.
    pub fn put(&self, item: T) {
        if let Ok(mut v) = self.spare.try_borrow_mut() {
            if v.len() < self.keep {
                v.push(item);
            }
        }
    }
}

thread_local! {
    /// Spare header maps, for the few headers the edge adds to a proxied response.
    static MAPS: Spares<HeaderMap> = const { Spares::new(256) };
}

/// Most entries of a spare header map kept (a larger one is let go).
const SPARE_MAP: usize = 32;

/// An empty header map, with room from this worker's spares.
pub fn spare_map() -> HeaderMap {
    MAPS.try_with(|m| m.take(HeaderMap::new)).unwrap_or_default()
}

/// Gives `map` back to this worker's spares, emptied.
pub fn recycle_map(mut map: HeaderMap) {
    if map.capacity() > 0 && map.capacity() <= SPARE_MAP {
        map.clear();
        let _ = MAPS.try_with(|m| m.put(map));
    }
}

/// A worker's spare buffers (see [`Spares`]).
pub struct BufPool {
    spares: Spares<BytesMut>,
    /// Capacity of a new buffer (0: grown by its first use).
    size: usize,
}

impl BufPool {
    pub const fn new(size: usize, keep: usize) -> Self {
        Self { spares: Spares::new(keep), size }
    }

    pub fn take(&self) -> BytesMut {
        self.spares.take(|| BytesMut::with_capacity(self.size))
    }

    /// Keeps `buf` (emptied) for the next taker, if it owns its memory and room is left.
    pub fn put(&self, mut buf: BytesMut) {
        buf.clear();
        // Back to the front of its memory when nothing else holds a part of it; a buffer left
        // with no room is let go.
        if buf.capacity() == 0 || !buf.try_reclaim(self.size.max(1)) {
            return;
        }
        self.spares.put(buf);
    }
}

thread_local! {
    /// Buffers for message heads being written (requests to origins, responses to clients).
    static HEAD_BUFS: BufPool = const { BufPool::new(1024, 64) };
}

/// A buffer to put a message head together in, from this worker's pool, given back when
/// dropped (also when the future using it is).
pub struct HeadBuf(BytesMut);

impl HeadBuf {
    pub fn take() -> Self {
        Self(HEAD_BUFS.with(BufPool::take))
    }
}

impl std::ops::Deref for HeadBuf {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.0
    }
}

impl std::ops::DerefMut for HeadBuf {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.0
    }
}

impl Drop for HeadBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        HEAD_BUFS.with(|p| p.put(buf));
    }
}

/// Where one header's name and value lie in a head: name start, name length, value start, value
/// length.
type Span = [u32; 4];
/// Offset and length of `part` inside `base` (None if it is not a part of it).
pub fn span_of(base: &[u8], part: &[u8]) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    (start + part.len() <= base.len()).then_some((start, part.len()))
}

/// Where header `h` lies in `base`.
fn line_span(base: &[u8], h: &httparse::Header<'_>) -> Option<Span> {
    let (ns, nl) = span_of(base, h.name.as_bytes())?;
    let (vs, vl) = span_of(base, h.value)?;
    Some([u32::try_from(ns).ok()?, u32::try_from(nl).ok()?, u32::try_from(vs).ok()?, u32::try_from(vl).ok()?])
}

/// Where a span's name and value lie.
fn ranges(&[ns, nl, vs, vl]: &Span) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
    (ns..ns + nl, vs..vs + vl)
}

/// Appends the header at `span` of `head` to `map`, its value sliced out of `head` (no copy).
fn append_line(map: &mut HeaderMap, head: &Bytes, span: &Span) -> Option<()> {
    let (name, value) = ranges(span);
    let name = HeaderName::from_bytes(head.get(name)?).ok()?;
    if value.end > head.len() {
        return None;
    }
    let value = HeaderValue::from_maybe_shared(head.slice(value)).ok()?;
    map.append(name, value);
    Some(())
}

/// The headers the edge treats specially, told apart by name without hashing: a request's or
/// response's lines are classified once each, when the head is read ([`RawHeaders::lines`]),
/// and most names are ruled out by their length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Special {
    Connection,
    KeepAlive,
    TransferEncoding,
    Te,
    Trailer,
    Upgrade,
    ProxyConnection,
    ProxyAuthorization,
    ProxyAuthenticate,
    Host,
    ContentLength,
    Expect,
    Via,
    XRequestId,
    CdnLoop,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Forwarded,
    Other,
}

impl Special {
    pub fn of(name: &[u8]) -> Special {
        use Special::*;
        // Length, first and last letter pick the one candidate worth comparing.
        let (Some(first), Some(last)) = (name.first(), name.last()) else { return Other };
        let (candidate, kind): (&[u8], Special) =
            match (name.len(), first.to_ascii_lowercase(), last.to_ascii_lowercase()) {
                (2, b't', b'e') => (b"te", Te),
                (3, b'v', b'a') => (b"via", Via),
                (4, b'h', b't') => (b"host", Host),
                (6, b'e', b't') => (b"expect", Expect),
                (7, b'u', b'e') => (b"upgrade", Upgrade),
                (7, b't', b'r') => (b"trailer", Trailer),
                (8, b'c', b'p') => (b"cdn-loop", CdnLoop),
                (9, b'f', b'd') => (b"forwarded", Forwarded),
                (10, b'c', b'n') => (b"connection", Connection),
                (10, b'k', b'e') => (b"keep-alive", KeepAlive),
                (12, b'x', b'd') => (b"x-request-id", XRequestId),
                (14, b'c', b'h') => (b"content-length", ContentLength),
                (15, b'x', b'r') => (b"x-forwarded-for", XForwardedFor),
                (16, b'x', b't') => (b"x-forwarded-host", XForwardedHost),
                (16, b'p', b'n') => (b"proxy-connection", ProxyConnection),
                (17, b'x', b'o') => (b"x-forwarded-proto", XForwardedProto),
                (17, b't', b'g') => (b"transfer-encoding", TransferEncoding),
                (18, b'p', b'e') => (b"proxy-authenticate", ProxyAuthenticate),
                (19, b'p', b'n') => (b"proxy-authorization", ProxyAuthorization),
                _ => return Other,
            };
        if eq_lowercase(name, candidate) {
            kind
        } else {
            Other
        }
    }

    /// Concerns one connection only (RFC 9110 7.6.1): never forwarded.
    pub fn is_hop_by_hop(self) -> bool {
        use Special::*;
        matches!(
            self,
            Connection
                | KeepAlive
                | TransferEncoding
                | Te
                | Trailer
                | Upgrade
                | ProxyConnection
                | ProxyAuthorization
                | ProxyAuthenticate
        )
    }
}

/// The header lines of an HTTP/1.x head as they arrived: the frozen head and where each line's
/// name and value lie in it. An origin's response headers go to an HTTP/1.1 client from here,
/// as received (order and the case of names kept, as nginx and HAProxy forward them), with no
/// header map built for them: building one cost about 500 instructions a header, an eighth of
/// the edge's own work for a small response (callgrind), for headers that are only copied
/// through. Lines can be looked up (by a scan: a head has a handful) and dropped, not added:
/// what the edge adds goes in a header map beside them.
#[derive(Debug, Clone, Default)]
pub struct RawHeaders {
    head: Bytes,
    /// From this worker's [`SPANS`], given back when dropped.
    lines: Vec<Line>,
}

/// One header line of a head.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// Name start, name length, value start, value length; a dropped line has name length 0
    /// (a header name is never empty).
    at: Span,
    /// What the name is to the edge, worked out once when the head is read.
    kind: Special,
}

impl Line {
    /// What the line's name is to the edge.
    pub fn kind(&self) -> Special {
        self.kind
    }

    /// The line's name and value in `head`, the bytes it was found in; None for a dropped line.
    pub fn name_value<'a>(&self, head: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let (name, value) = ranges(&self.at);
        if name.is_empty() {
            return None;
        }
        Some((head.get(name)?, head.get(value)?))
    }
}

/// Most lines of a spare span vector kept (a larger one is let go).
const SPARE_SPANS: usize = 64;

thread_local! {
    /// Spare line vectors of [`RawHeaders`]: a request and a response head each have one.
    static SPANS: Spares<Vec<Line>> = const { Spares::new(256) };
}

impl Drop for RawHeaders {
    fn drop(&mut self) {
        if self.lines.capacity() > 0 && self.lines.capacity() <= SPARE_SPANS {
            let mut lines = std::mem::take(&mut self.lines);
            lines.clear();
            let _ = SPANS.try_with(|s| s.put(lines));
        }
    }
}

impl RawHeaders {
    /// The lines httparse found in `base`, the buffer whose first bytes become the head.
    pub fn lines(base: &[u8], headers: &[httparse::Header<'_>]) -> Option<Vec<Line>> {
        let mut lines = SPANS.try_with(|s| s.take(Vec::new)).unwrap_or_default();
        // One size for requests and responses alike, so that a spare fits either.
        lines.reserve(headers.len().max(16));
        for h in headers {
            lines.push(Line { at: line_span(base, h)?, kind: Special::of(h.name.as_bytes()) });
        }
        Some(lines)
    }

    /// `lines` (from [`Self::lines`]) in `head`, the frozen bytes they were found in.
    pub fn new(head: Bytes, lines: Vec<Line>) -> Self {
        Self { head, lines }
    }

    /// A line's name and value; None for a dropped line.
    fn name_value(&self, line: &Line) -> Option<(&[u8], &[u8])> {
        line.name_value(&self.head)
    }

    /// Every line not dropped, as (name as received, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.iter().filter_map(|l| self.name_value(l))
    }

    /// Every line not dropped, with what its name is to the edge.
    pub fn kinds(&self) -> impl Iterator<Item = (Special, &[u8], &[u8])> {
        self.lines.iter().filter_map(|l| self.name_value(l).map(|(n, v)| (l.kind, n, v)))
    }

    /// The values of the lines of `kind` (not [`Special::Other`]: those are looked up by name).
    pub fn special(&self, kind: Special) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().filter(move |l| l.kind == kind).filter_map(|l| self.name_value(l)).map(|(_, v)| v)
    }

    /// The values of the lines named `name` (lowercase, as `HeaderName::as_str` gives it). A
    /// special header is found faster by its kind ([`Self::special`]).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        // Lengths first: most lines are ruled out without looking at their bytes (a dropped
        // line's length is 0).
        self.lines
            .iter()
            .filter(move |l| l.at[1] as usize == name.len())
            .filter_map(|l| self.name_value(l))
            .filter(move |(n, _)| eq_lowercase(n, name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// The first value of the lines of `kind`, sliced out of the head (no copy).
    pub fn get_shared(&self, kind: Special) -> Option<Bytes> {
        let value = self.special(kind).next()?;
        span_of(&self.head, value).map(|(start, len)| self.head.slice(start..start + len))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The lines of `block` (`Name: value` lines, each ending in CRLF, no final blank line),
    /// in a head of their own; None if they do not parse or are more than 256.
    pub fn from_block(block: &[u8]) -> Option<Self> {
        let mut text = BytesMut::with_capacity(block.len() + 19);
        text.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        text.extend_from_slice(block);
        text.extend_from_slice(b"\r\n");
        let mut slots = vec![httparse::EMPTY_HEADER; 256];
        let mut parsed = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(len)) = parsed.parse(&text) else { return None };
        let lines = RawHeaders::lines(&text, parsed.headers)?;
        let head = text.freeze();
        Some(RawHeaders::new(head.slice(..len.min(head.len())), lines))
    }

    /// Lines the edge writes itself, `(kind, name, value)` in order (the kind [`Special::of`]
    /// the name, lowercase names, values a header value may hold), in a head of their own cut
    /// from this worker's arena: no parse and no header map. None if they would not fit a head
    /// (never for the edge's own few lines).
    pub fn of(pairs: &[(Special, &[u8], &[u8])]) -> Option<Self> {
        let len = pairs.iter().map(|(_, n, v)| n.len() + v.len() + 4).sum();
        let mut lines = SPANS.try_with(|s| s.take(Vec::new)).unwrap_or_default();
        lines.reserve(pairs.len().max(16));
        let mut at = 0usize;
        for (kind, name, value) in pairs {
            debug_assert_eq!(*kind, Special::of(name));
            let span = [at, name.len(), at + name.len() + 2, value.len()].map(u32::try_from);
            let [Ok(ns), Ok(nl), Ok(vs), Ok(vl)] = span else { return None };
            lines.push(Line { at: [ns, nl, vs, vl], kind: *kind });
            at += name.len() + value.len() + 4;
        }
        let head = arena_bytes(len, |out| {
            for (_, name, value) in pairs {
                write_line(out, name, value);
            }
        });
        Some(Self { head, lines })
    }

    /// Bytes of the head the lines are in.
    pub fn byte_len(&self) -> usize {
        self.head.len()
    }

    /// Drops the lines for which `keep` (given the line's kind, name and value) says false.
    pub fn retain(&mut self, mut keep: impl FnMut(Special, &[u8], &[u8]) -> bool) {
        for i in 0..self.lines.len() {
            let drop = self
                .lines
                .get(i)
                .and_then(|l| self.name_value(l).map(|(n, v)| (l.kind, n, v)))
                .is_some_and(|(k, n, v)| !keep(k, n, v));
            if let Some(line) = self.lines.get_mut(i).filter(|_| drop) {
                line.at[1] = 0;
            }
        }
    }

    /// Appends every line to `map`, values sliced out of the head (for HTTP/2, and for code that
    /// needs the map). httparse accepts only lines a map accepts; any other would be left out.
    pub fn append_to(&self, map: &mut HeaderMap) {
        map.reserve(self.lines.len());
        for line in self.lines.iter().filter(|l| self.name_value(l).is_some()) {
            let _ = append_line(map, &self.head, &line.at);
        }
    }

    /// Appends `Name: value\r\n` for every line not dropped.
    ///
    /// Lines that follow one another in the head, each as `name:` optional blanks, value and
    /// CRLF, are copied as one slice: an origin's kept lines usually go out in one or two copies
    /// instead of four per line.
    pub fn write(&self, out: &mut BytesMut) {
        let head = &self.head[..];
        let flush = |out: &mut BytesMut, run: &mut Option<std::ops::Range<usize>>| {
            if let Some(bytes) = run.take().and_then(|r| head.get(r)) {
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
        };
        let mut run: Option<std::ops::Range<usize>> = None;
        for line in &self.lines {
            let (name, value) = ranges(&line.at);
            if name.is_empty() {
                flush(out, &mut run);
                continue;
            }
            let plain = value.start > name.end
                && head.get(name.end) == Some(&b':')
                && head.get(name.end + 1..value.start).is_some_and(|b| b.iter().all(|c| matches!(c, b' ' | b'\t')));
            if !plain {
                flush(out, &mut run);
                if let (Some(n), Some(v)) = (head.get(name), head.get(value)) {
                    write_line(out, n, v);
                }
                continue;
            }
            match &mut run {
                Some(r) if name.start == r.end + 2 && head.get(r.end..name.start) == Some(b"\r\n") => r.end = value.end,
                _ => {
                    flush(out, &mut run);
                    run = Some(name.start..value.end);
                }
            }
        }
        flush(out, &mut run);
    }
}

/// Whether `name` is `lower` (lowercase) in any case: half the work of `eq_ignore_ascii_case`,
/// which lowers both sides.
pub fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).all(|(a, b)| a.to_ascii_lowercase() == *b)
}

/// The value of cookie `name` in one `Cookie` header value (`a=1; b=2`).
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
        (k == name.as_bytes()).then(|| v.get(1..).unwrap_or_default())
    })
}

thread_local! {
    /// Where this thread writes the small things it makes per request (request ID, Forwarded,
    /// an error page's header lines): one allocation serves many, and they clone without
    /// allocating. A block lives until the last thing cut from it is dropped, so only what lives
    /// no longer than a head is written goes here (never a body a client may be slow to read).
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

const ARENA_BLOCK: usize = 16 * 1024;

/// At most `len` bytes written by `write`, carved out of this thread's arena.
pub fn arena_bytes(len: usize, write: impl FnOnce(&mut BytesMut)) -> Bytes {
    ARENA.with(|arena| {
        let mut own;
        let mut borrowed = arena.try_borrow_mut().ok();
        let buf = match borrowed.as_deref_mut() {
            Some(b) => b,
            None => {
                own = BytesMut::new();
                &mut own
            }
        };
        if buf.capacity() < len {
            *buf = BytesMut::with_capacity(ARENA_BLOCK.max(len));
        }
        write(buf);
        buf.split().freeze()
    })
}

/// Appends `name: value` and CRLF.
pub fn write_line(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An HTTP/1.x request head, parsed once: the connection guard ([`crate::guard`]) checks it
/// and hands it to HTTP/1.1 ([`crate::h1`]) with the bytes it was found in, which reads the
/// request from it without parsing again. Positions are from the head's first byte.
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head, its blank line included.
    pub len: usize,
    pub method: hyper::Method,
    /// Where the request target is: start and length.
    pub target: (usize, usize),
    /// HTTP/1.1 (else HTTP/1.0).
    pub http11: bool,
    pub lines: Vec<Line>,
}

/// Parses the request head at the start of `buf`, with at most `max_headers` header lines.
/// Ok(None): incomplete. A method `http` cannot take is a token error.
pub fn parse_request_head(buf: &[u8], max_headers: usize) -> Result<Option<RequestHead>, httparse::Error> {
    let mut stack: [std::mem::MaybeUninit<httparse::Header<'_>>; STACK_HEADERS] =
        [const { std::mem::MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = header_slots(&mut stack, &mut heap, max_headers);
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let method = req.method.and_then(|m| hyper::Method::from_bytes(m.as_bytes()).ok());
    let target = req.path.and_then(|p| span_of(buf, p.as_bytes()));
    let (Some(method), Some(target), Some(version)) = (method, target, req.version) else {
        return Err(httparse::Error::Token);
    };
    let lines = RawHeaders::lines(buf, req.headers).ok_or(httparse::Error::HeaderName)?;
    Ok(Some(RequestHead { len, method, target, http11: version == 1, lines }))
}

/// Header slots kept on the stack for a parse; a configured limit above this uses the heap.
pub const STACK_HEADERS: usize = 128;

/// `n` uninitialised header slots for httparse: from `stack` when they fit (no allocation, no
/// stores per request), else from `heap`.
pub fn header_slots<'s, 'b>(
    stack: &'s mut [std::mem::MaybeUninit<httparse::Header<'b>>; STACK_HEADERS],
    heap: &'s mut Vec<std::mem::MaybeUninit<httparse::Header<'b>>>,
    n: usize,
) -> &'s mut [std::mem::MaybeUninit<httparse::Header<'b>>] {
    if n <= STACK_HEADERS {
        stack.get_mut(..n).unwrap_or_default()
    } else {
        heap.resize_with(n, std::mem::MaybeUninit::uninit);
        heap
    }
}

/// `n` in decimal, written into `buf` (no allocation): the digits' slice of it.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// A `Content-Length` value, strictly: digits only (no sign, no list such as `5, 5`, no spaces
/// inside), at most 19 of them, so that it fits a u64.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Whether a message lets its connection carry another (RFC 9112 9.3): HTTP/1.1 unless it says
/// `Connection: close`, HTTP/1.0 only if it says `Connection: keep-alive`.
/// `connection`: the values of its `Connection` headers.
pub fn keep_alive<'a>(connection: impl Iterator<Item = &'a [u8]>, http11: bool) -> bool {
    let mut keep = http11;
    for v in connection {
        for t in v.split(|b| *b == b',').map(|t| t.trim_ascii()) {
            if eq_lowercase(t, b"close") {
                return false;
            }
            if eq_lowercase(t, b"keep-alive") {
                keep = true;
            }
        }
    }
    keep
}

/// Appends `name: value\r\n`.
pub fn write_header(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    write_line(out, name.as_str().as_bytes(), value.as_bytes());
}

/// How a message body is delimited (RFC 9112 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// States of the chunked-encoding parser (RFC 9112 7.1). One table serves the connection guard,
/// which validates a client's chunks on the raw bytes, and the decoders below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Size {
        digits: u8,
        value: u64,
    },
    Ext {
        len: usize,
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    /// The terminating CRLF was seen.
    Done,
}

/// Longest chunk extension accepted.
pub const MAX_CHUNK_EXT: usize = 4096;

impl Chunk {
    pub const START: Chunk = Chunk::Size { digits: 0, value: 0 };

    /// The state after byte `b` (not for `Data`, whose bytes are counted, not stepped), or None
    /// when `b` is not valid here.
    pub fn step(self, b: u8) -> Option<Chunk> {
        match self {
            Chunk::Size { digits, value } => match hex_value(b) {
                Some(d) if digits < 15 => Some(Chunk::Size { digits: digits + 1, value: (value << 4) | u64::from(d) }),
                Some(_) => None,
                None if digits == 0 => None,
                None if b == b';' => Some(Chunk::Ext { len: 0, value }),
                None if b == b'\r' => Some(Chunk::SizeLf { value }),
                None => None,
            },
            Chunk::Ext { len, value } => match b {
                b'\r' => Some(Chunk::SizeLf { value }),
                b'\t' if len < MAX_CHUNK_EXT => Some(Chunk::Ext { len: len + 1, value }),
                _ if b < 0x20 || b == 0x7f || len >= MAX_CHUNK_EXT => None,
                _ => Some(Chunk::Ext { len: len + 1, value }),
            },
            Chunk::SizeLf { value } => match b {
                b'\n' if value == 0 => Some(Chunk::TrailerStart),
                b'\n' => Some(Chunk::Data(value)),
                _ => None,
            },
            Chunk::DataCr => (b == b'\r').then_some(Chunk::DataLf),
            Chunk::DataLf => (b == b'\n').then_some(Chunk::START),
            Chunk::TrailerStart => match b {
                b'\r' => Some(Chunk::FinalLf),
                b'\n' => None,
                _ => Some(Chunk::Trailer),
            },
            Chunk::Trailer => match b {
                b'\r' => Some(Chunk::TrailerLf),
                _ if b < 0x20 && b != b'\t' => None,
                _ => Some(Chunk::Trailer),
            },
            Chunk::TrailerLf => (b == b'\n').then_some(Chunk::TrailerStart),
            Chunk::FinalLf => (b == b'\n').then_some(Chunk::Done),
            Chunk::Data(_) | Chunk::Done => None,
        }
    }

    pub fn in_trailer(self) -> bool {
        matches!(self, Chunk::Trailer | Chunk::TrailerLf)
    }
}

pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("malformed chunked body")]
    BadChunk,
    #[error("chunk trailers exceed {0} bytes")]
    TrailersTooLarge(usize),
    #[error("connection closed in the middle of a body")]
    Truncated,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one framed body from a connection's read buffer and socket.
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    chunk: Chunk,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
    read_size: usize,
}

impl BodyReader {
    pub fn new(framing: Framing, max_trailer_bytes: usize, read_size: usize) -> Self {
        let framing = if framing == Framing::Length(0) { Framing::Empty } else { framing };
        Self { framing, chunk: Chunk::START, trailer_bytes: 0, max_trailer_bytes, read_size }
    }

    pub fn is_done(&self) -> bool {
        self.framing == Framing::Empty
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Bytes still expected, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Counts `n` bytes of a `Length` body that went past `buf` (spliced, [`crate::splice`]).
    pub fn consumed(&mut self, n: u64) {
        if let Framing::Length(left) = self.framing {
            let left = left.saturating_sub(n);
            self.framing = if left == 0 { Framing::Empty } else { Framing::Length(left) };
        }
    }

    /// Takes the next piece of body out of `buf`, if one is there: Ok(Some(bytes)) data,
    /// Ok(None) needs more input (or is done: see [`Self::is_done`]).
    pub fn take(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, BodyError> {
        match self.framing {
            Framing::Empty => Ok(None),
            Framing::Length(n) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                let left = n - take as u64;
                self.framing = if left == 0 { Framing::Empty } else { Framing::Length(left) };
                Ok(Some(buf.split_to(take).freeze()))
            }
            Framing::Close => Ok((!buf.is_empty()).then(|| buf.split().freeze())),
            Framing::Chunked => {
                let mut i = 0usize;
                let len = buf.len();
                while i < len {
                    if let Chunk::Data(n) = self.chunk {
                        let take = usize::try_from(n).unwrap_or(usize::MAX).min(len - i);
                        buf.advance(i);
                        let left = n - take as u64;
                        self.chunk = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                        return Ok(Some(buf.split_to(take).freeze()));
                    }
                    let Some(&b) = buf.get(i) else { break };
                    self.chunk = self.chunk.step(b).ok_or(BodyError::BadChunk)?;
                    i += 1;
                    if self.chunk.in_trailer() {
                        self.trailer_bytes += 1;
                        if self.trailer_bytes > self.max_trailer_bytes {
                            return Err(BodyError::TrailersTooLarge(self.max_trailer_bytes));
                        }
                    }
                    if self.chunk == Chunk::Done {
                        self.framing = Framing::Empty;
                        break;
                    }
                }
                buf.advance(i.min(len));
                Ok(None)
            }
        }
    }

    /// The next piece of the body: reads from `io` into `buf` when `buf` has nothing to give.
    /// Ready(None) at the end of the body.
    pub fn poll_next<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut R,
        buf: &mut BytesMut,
    ) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            match self.take(buf) {
                Err(e) => {
                    self.framing = Framing::Empty;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(data)) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                Ok(_) => {}
            }
            if self.is_done() {
                return Poll::Ready(None);
            }
            // Room for a full read; reclaims the buffer's own space once earlier pieces are gone.
            if buf.capacity() - buf.len() < self.read_size / 2 {
                buf.reserve(self.read_size);
            }
            match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.framing = Framing::Empty;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.framing = Framing::Empty;
                    return Poll::Ready(Some(Err(BodyError::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.framing = Framing::Empty;
                    return Poll::Ready(Some(Err(BodyError::Io(e))));
                }
            }
        }
    }
}

/// Why a message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The body's source failed (the client or origin on the other side, a limit, a timeout).
    #[error("body: {0}")]
    Body(crate::body::BoxError),
    #[error("{0}")]
    Io(io::Error),
}

/// Writes `head` (already serialized) and then `body` with `framing` (`Length`, `Chunked` or
/// `Close`; `Empty` writes the head only).
///
/// Output is gathered while the body has more ready and written with one vectored write when
/// it has to wait, when enough is gathered, or at the end: small frames are copied behind the
/// head (a small response leaves in one write), large ones are queued as they are (no copy).
/// Writing in large batches, as nginx does from its proxy buffers, costs the kernel less per
/// byte than writing each piece as it arrives. A body that ends is dropped before the last
/// write (its drop may record the request as done, which then happens before the peer sees the
/// end). Returns the body bytes written.
///
/// A plain future, not an `async fn`: the compiler lays out an `async fn` with five awaits of
/// two kinds in 552 bytes, mostly padding, and this future is moved (whole) into the request's
/// and the connection's futures once per message; this one is about 120 bytes.
pub fn write_message<'a, W, B>(
    w: &'a mut W,
    head: &'a mut BytesMut,
    slot: &'a mut Option<B>,
    framing: Framing,
) -> WriteMessage<'a, W, B>
where
    W: AsyncWrite + Unpin + ?Sized,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::body::BoxError>,
{
    let step = if slot.is_some() && framing != Framing::Empty { Step::Body } else { Step::Flush(After::End) };
    let whole = framing != Framing::Chunked
        && slot.as_ref().and_then(|b| b.size_hint().exact()).is_some_and(|n| head.len() as u64 + n <= WHOLE as u64);
    WriteMessage {
        whole,
        pending: head.len(),
        w,
        head,
        slot,
        chunked: framing == Framing::Chunked,
        written: 0,
        queued: Vec::new(),
        first: 0,
        step,
    }
}

/// The future of [`write_message`].
pub struct WriteMessage<'a, W: ?Sized, B> {
    w: &'a mut W,
    head: &'a mut BytesMut,
    slot: &'a mut Option<B>,
    chunked: bool,
    /// The whole message is small: gather all of it into one piece (see [`WHOLE`]).
    whole: bool,
    /// Body bytes taken so far.
    written: u64,
    /// Queued output, in order, before whatever is in `head`.
    queued: Vec<Bytes>,
    /// Bytes gathered since the last write.
    pending: usize,
    /// Queued pieces already written by the write in progress.
    first: usize,
    step: Step,
}

enum Step {
    /// Taking frames from the body.
    Body,
    /// Writing out what is gathered; then what comes next.
    Flush(After),
    /// Flushing the writer itself.
    FlushWriter,
    Done,
}

enum After {
    Body,
    /// The body failed: what arrived before the failure still goes out, then the error (the
    /// caller cuts the connection, so the receiver sees a short message, never a complete one).
    Fail(crate::body::BoxError),
    End,
}

impl<W: ?Sized, B> WriteMessage<'_, W, B> {
    /// Adds one data frame to the output: small ones copied behind the head, large ones queued.
    fn gather(&mut self, data: Bytes) {
        self.written += data.len() as u64;
        self.pending += data.len();
        if self.chunked {
            write_chunk_size(self.head, data.len());
        }
        if self.whole || data.len() <= COALESCE && self.head.len() + data.len() <= GATHER {
            self.head.extend_from_slice(&data);
        } else {
            if !self.head.is_empty() {
                self.queued.push(self.head.split().freeze());
            }
            self.queued.push(data);
        }
        if self.chunked {
            self.head.extend_from_slice(b"\r\n");
        }
    }
}

impl<W, B> Future for WriteMessage<'_, W, B>
where
    W: AsyncWrite + Unpin + ?Sized,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::body::BoxError>,
{
    type Output = Result<u64, WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.step {
                Step::Body => {
                    let Some(body) = this.slot.as_mut() else {
                        this.step = Step::Flush(After::End);
                        continue;
                    };
                    let frame = match Pin::new(body).poll_frame(cx) {
                        // The body has to wait: send what is gathered first.
                        Poll::Pending if this.pending > 0 => {
                            this.step = Step::Flush(After::Body);
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(None) => {
                            *this.slot = None;
                            if this.chunked {
                                this.head.extend_from_slice(b"0\r\n\r\n");
                            }
                            this.step = Step::Flush(After::End);
                            continue;
                        }
                        Poll::Ready(Some(Err(e))) => {
                            this.step = Step::Flush(After::Fail(e.into()));
                            continue;
                        }
                        Poll::Ready(Some(Ok(frame))) => frame,
                    };
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    this.gather(data);
                    if this.pending >= MAX_GATHERED || this.queued.len() >= MAX_QUEUED {
                        this.step = Step::Flush(After::Body);
                    }
                }
                Step::Flush(_) => {
                    match poll_write_out(cx, this.w, &mut this.queued, this.head, &mut this.first) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            this.step = Step::Done;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(())) => this.pending = 0,
                    }
                    match std::mem::replace(&mut this.step, Step::Done) {
                        Step::Flush(After::Body) => this.step = Step::Body,
                        Step::Flush(After::Fail(e)) => return Poll::Ready(Err(WriteError::Body(e))),
                        _ => this.step = Step::FlushWriter,
                    }
                }
                Step::FlushWriter => {
                    let r = ready!(Pin::new(&mut *this.w).poll_flush(cx));
                    this.step = Step::Done;
                    return Poll::Ready(r.map(|()| this.written).map_err(WriteError::Io));
                }
                Step::Done => return Poll::Ready(Ok(this.written)),
            }
        }
    }
}

/// Most body bytes gathered before a write.
const MAX_GATHERED: usize = 256 * 1024;
/// Most queued pieces before a write (one vectored write takes them all, with the head).
const MAX_QUEUED: usize = 14;

/// Writes `queued` then `tail`, all of it, with vectored writes; empties both.
pub async fn flush<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    queued: &mut Vec<Bytes>,
    tail: &mut BytesMut,
) -> Result<(), WriteError> {
    let mut first = 0usize;
    std::future::poll_fn(|cx| poll_write_out(cx, w, queued, tail, &mut first)).await
}

/// Polls the writing of `queued` then `tail` with vectored writes until all of it is out, then
/// empties both. `first`: the queued pieces already written, kept between polls.
fn poll_write_out<W: AsyncWrite + Unpin + ?Sized>(
    cx: &mut Context<'_>,
    w: &mut W,
    queued: &mut Vec<Bytes>,
    tail: &mut BytesMut,
    first: &mut usize,
) -> Poll<Result<(), WriteError>> {
    loop {
        while queued.get(*first).is_some_and(|b| b.is_empty()) {
            *first += 1;
        }
        let rest = queued.get(*first..).unwrap_or_default();
        if rest.is_empty() && tail.is_empty() {
            break;
        }
        // One piece goes out with a plain write: `send`, not `writev` (which costs the kernel an
        // iovec import and its file-position lock, a tenth of a small refusal's system time).
        let written = if rest.is_empty() {
            Pin::new(&mut *w).poll_write(cx, tail)
        } else {
            let mut slices = [io::IoSlice::new(&[]); MAX_QUEUED + 1];
            let mut k = 0;
            for b in rest.iter().take(MAX_QUEUED) {
                if let Some(s) = slices.get_mut(k) {
                    *s = io::IoSlice::new(b);
                    k += 1;
                }
            }
            // The tail goes out behind the queue, so only in a write that takes all of it.
            if rest.len() <= MAX_QUEUED && !tail.is_empty() {
                if let Some(s) = slices.get_mut(k) {
                    *s = io::IoSlice::new(tail);
                    k += 1;
                }
            }
            match slices.get(..k).unwrap_or_default() {
                [one] => Pin::new(&mut *w).poll_write(cx, one),
                all => Pin::new(&mut *w).poll_write_vectored(cx, all),
            }
        };
        let n = match written {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(WriteError::Io(e))),
            Poll::Ready(Ok(n)) => n,
        };
        if n == 0 {
            return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())));
        }
        let mut left = n;
        for b in queued.iter_mut().skip(*first) {
            let take = left.min(b.len());
            b.advance(take);
            left -= take;
            if left == 0 {
                break;
            }
        }
        tail.advance(left.min(tail.len()));
    }
    queued.clear();
    tail.clear();
    *first = 0;
    Poll::Ready(Ok(()))
}

fn write_chunk_size(out: &mut BytesMut, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        if let (Some(d), Some(h)) = (digits.get_mut(i), HEX.get(v & 0xf)) {
            *d = *h;
        }
        v >>= 4;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or(b"0"));
    out.extend_from_slice(b"\r\n");
}

/// Puts bytes back in front of a stream (what was read past a head, before handing the stream
/// to another protocol or a tunnel).
pub struct Rewind<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub fn new(prefix: Bytes, io: IO) -> Self {
        Self { prefix, io }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let part = self.prefix.split_to(n);
            buf.put_slice(&part);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
impl RawHeaders {
    /// The lines of `block`, a header block without its first line and final blank line.
    pub fn parse_for_test(block: &[u8]) -> Self {
        RawHeaders::from_block(block).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records how each write was asked for: `(vectored, pieces, bytes)`.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(bool, usize, Vec<u8>)>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.push((false, 1, buf.to_vec()));
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.writes.push((true, bufs.len(), all));
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn written(body_len: usize) -> Vec<(bool, usize, Vec<u8>)> {
        let mut w = Recorder::default();
        let mut head = BytesMut::from(&b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n"[..]);
        let body = vec![b'x'; body_len];
        let mut slot = Some(crate::body::EdgeBody::full(body));
        write_message(&mut w, &mut head, &mut slot, Framing::Length(body_len as u64)).await.unwrap();
        w.writes
    }

    #[tokio::test]
    async fn a_small_whole_message_is_one_plain_write_and_a_large_one_is_not_copied() {
        // An error page's size: head and body in one piece, one `send`.
        let small = written(600).await;
        assert_eq!(small.len(), 1, "{:?}", small.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>());
        assert!(!small[0].0 && small[0].2.ends_with(&[b'x'; 600]));
        // A body that does not fit in one small message goes out from where it is, beside the head.
        let large = written(4096).await;
        assert_eq!(large.len(), 1, "{:?}", large.iter().map(|w| (w.0, w.1, w.2.len())).collect::<Vec<_>>());
        assert!(large[0].0 && large[0].1 == 2 && large[0].2.len() > 4096);
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 1234, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn raw_headers_keep_order_and_spelling_and_drop_lines() {
        let mut raw = RawHeaders::parse_for_test(
            b"X-A: 1\r\nConnection: keep-alive\r\nx-a: 2\r\nVia:  1.0 b \r\nX-B:3\nX-C: 4\r\nX-E:\r\n",
        );
        assert_eq!(raw.get_all("x-a").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        assert_eq!(raw.get("via"), Some(&b"1.0 b"[..]));
        // Kinds are recorded once, when the head is read, whatever the case of the name.
        assert_eq!(raw.special(Special::Via).collect::<Vec<_>>(), [&b"1.0 b"[..]]);
        assert_eq!(
            raw.kinds().map(|(k, _, _)| k).collect::<Vec<_>>()[..3],
            [Special::Other, Special::Connection, Special::Other]
        );
        raw.retain(|kind, _, _| kind != Special::Connection);
        assert_eq!(raw.get("connection"), None);
        assert_eq!(raw.special(Special::Connection).next(), None);
        let mut out = BytesMut::new();
        raw.write(&mut out);
        // Runs of lines go out as received (blanks after the colon kept, trailing ones not), every
        // line ended by CRLF whatever ended it in the head.
        assert_eq!(&out[..], b"X-A: 1\r\nx-a: 2\r\nVia:  1.0 b\r\nX-B:3\r\nX-C: 4\r\nX-E:\r\n");
        assert_eq!(written_lines(&out), raw.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>());
        let mut map = HeaderMap::new();
        raw.append_to(&mut map);
        assert_eq!(map.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(map.len(), 6);
        raw.retain(|_, _, _| false);
        assert!(raw.is_empty());
    }

    /// The (name, value) lines of a header block written by [`RawHeaders::write`], parsed back.
    fn written_lines(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut text = b"HTTP/1.1 200 OK\r\n".to_vec();
        text.extend_from_slice(block);
        text.extend_from_slice(b"\r\n");
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut slots);
        assert!(parsed.parse(&text).unwrap().is_complete());
        parsed.headers.iter().map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec())).collect()
    }

    #[test]
    fn special_headers_are_told_apart_in_any_case() {
        use Special::*;
        let all = [
            ("connection", Connection),
            ("keep-alive", KeepAlive),
            ("transfer-encoding", TransferEncoding),
            ("te", Te),
            ("trailer", Trailer),
            ("upgrade", Upgrade),
            ("proxy-connection", ProxyConnection),
            ("proxy-authorization", ProxyAuthorization),
            ("proxy-authenticate", ProxyAuthenticate),
            ("host", Host),
            ("content-length", ContentLength),
            ("expect", Expect),
            ("via", Via),
            ("x-request-id", XRequestId),
            ("cdn-loop", CdnLoop),
            ("x-forwarded-for", XForwardedFor),
            ("x-forwarded-proto", XForwardedProto),
            ("x-forwarded-host", XForwardedHost),
            ("forwarded", Forwarded),
        ];
        for (name, kind) in all {
            assert_eq!(Special::of(name.as_bytes()), kind);
            assert_eq!(Special::of(name.to_ascii_uppercase().as_bytes()), kind);
        }
        for other in ["date", "user-agent", "accept", "x-forwarded", "tee", "", "content-type"] {
            assert_eq!(Special::of(other.as_bytes()), Other, "{other}");
        }
        let hop: Vec<_> = all.iter().filter(|(_, k)| k.is_hop_by_hop()).map(|(n, _)| *n).collect();
        assert_eq!(
            hop,
            [
                "connection",
                "keep-alive",
                "transfer-encoding",
                "te",
                "trailer",
                "upgrade",
                "proxy-connection",
                "proxy-authorization",
                "proxy-authenticate"
            ]
        );
    }

    #[test]
    fn line_vectors_and_header_maps_are_reused_by_the_worker() {
        let first = RawHeaders::parse_for_test(b"A: 1\r\nB: 2\r\n");
        let at = first.lines.as_ptr();
        drop(first);
        // The next head's lines go where the last one's were.
        let second = RawHeaders::parse_for_test(b"C: 3\r\n");
        assert_eq!(second.lines.as_ptr(), at);
        assert_eq!(second.iter().collect::<Vec<_>>(), [(&b"C"[..], &b"3"[..])]);

        let mut map = spare_map();
        map.insert("x-a", HeaderValue::from_static("1"));
        let room = map.capacity();
        recycle_map(map);
        let map = spare_map();
        assert!(map.is_empty());
        assert_eq!(map.capacity(), room);
        // Too big to keep: let go.
        let mut big = HeaderMap::with_capacity(SPARE_MAP * 4);
        big.insert("x-a", HeaderValue::from_static("1"));
        recycle_map(big);
        assert!(spare_map().capacity() <= SPARE_MAP);
    }

    #[test]
    fn buffer_pool_hands_back_warm_buffers_it_owns_and_bounds_its_spares() {
        let pool = BufPool::new(1024, 2);
        let mut a = pool.take();
        a.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let at = a.as_ptr();
        pool.put(a);
        // The same memory comes back, empty, from its front.
        let b = pool.take();
        assert_eq!((b.as_ptr(), b.len()), (at, 0));
        assert!(b.capacity() >= 1024);
        // A buffer whose memory is still held elsewhere with no room left is not kept.
        let mut shared = BytesMut::with_capacity(1024);
        shared.extend_from_slice(&[b'x'; 1024]);
        let held = shared.split().freeze();
        pool.put(shared);
        assert!(pool.spares.spare.borrow().is_empty());
        drop(held);
        // At most `keep` spares.
        for _ in 0..5 {
            pool.put(BytesMut::with_capacity(1024));
        }
        assert_eq!(pool.spares.spare.borrow().len(), 2);
    }

    fn decode_all(framing: Framing, input: &[u8]) -> Result<Vec<u8>, BodyError> {
        let mut r = BodyReader::new(framing, 1024, 4096);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(d) = r.take(&mut buf)? {
            out.extend_from_slice(&d);
        }
        assert!(r.is_done(), "body not complete");
        Ok(out)
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let body = decode_all(Framing::Chunked, b"4;x=1\r\nWiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n").unwrap();
        assert_eq!(body, b"Wikipedia");
    }

    #[test]
    fn bad_chunks_are_errors() {
        for bad in [&b"g\r\n"[..], b"4\r\nWikiX\r\n", b"4\n", b"fffffffffffffffff\r\n"] {
            let mut r = BodyReader::new(Framing::Chunked, 1024, 4096);
            let mut buf = BytesMut::from(bad);
            let mut err = false;
            for _ in 0..4 {
                match r.take(&mut buf) {
                    Err(_) => {
                        err = true;
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(_)) => {}
                }
            }
            assert!(err, "{bad:?} accepted");
        }
    }

    #[test]
    fn length_bodies_stop_at_the_length() {
        let mut r = BodyReader::new(Framing::Length(3), 0, 4096);
        let mut buf = BytesMut::from(&b"abcGET"[..]);
        assert_eq!(&r.take(&mut buf).unwrap().unwrap()[..], b"abc");
        assert!(r.is_done());
        assert_eq!(&buf[..], b"GET");
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut out = BytesMut::new();
        write_chunk_size(&mut out, 0x1a2f);
        assert_eq!(&out[..], b"1a2f\r\n");
        out.clear();
        write_chunk_size(&mut out, 0);
        assert_eq!(&out[..], b"0\r\n");
    }
}
