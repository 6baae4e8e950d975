//! Local responses: error pages with the request ID and nothing internal (no origin addresses,
//! no node names, no error chains).

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::{Response, StatusCode};

use crate::body::EdgeBody;
use crate::codec::{RawHeaders, Special};
use crate::finish::Finish;
use crate::proxy::Reply;

fn reason(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("Bad request", "The request could not be understood."),
        403 => ("Access denied", "This site does not accept requests from your network address."),
        404 => ("Site not found", "No site on this network is configured for this hostname."),
        405 => ("Method not allowed", "This method is not supported here."),
        408 => ("Request timeout", "The request took too long to arrive."),
        413 => ("Request body too large", "The request body is larger than this site accepts."),
        429 => ("Too many requests", "This site limits how often it can be asked. Please wait and try again."),
        421 => (
            "Misdirected request",
            "This connection cannot serve the requested hostname. Please retry on a new connection.",
        ),
        431 => ("Request headers too large", "The request headers are larger than this site accepts."),
        508 => (
            "Loop detected",
            "This request has passed through this network too many times; the site's origin may point back at it.",
        ),
        501 => ("Not implemented", "The request uses a feature this server does not support."),
        502 => ("Bad gateway", "The origin server could not be reached or sent an invalid response."),
        503 => ("Service unavailable", "The site is temporarily unable to serve this request."),
        504 => ("Gateway timeout", "The origin server did not answer in time."),
        _ => ("Error", "The request could not be completed."),
    }
}

// The page, put together from pieces (no formatting machinery).
const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>";
const STYLE: &str = "</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}\
code{background:#f3f3f3;padding:.1rem .3rem}</style></head>\n<body><h1>";
const TAIL: &str = "</code></p><hr><p><small>palisade</small></p></body></html>\n";

/// The statuses with a page of their own (the rest share "Error").
const KNOWN: [u16; 14] = [400, 403, 404, 405, 408, 413, 421, 429, 431, 501, 502, 503, 504, 508];

/// A status's page up to the request ID.
fn prefix(status: StatusCode) -> String {
    let (title, text) = reason(status);
    let code = status.as_str();
    let mut html = String::with_capacity(HEAD.len() + STYLE.len() + 2 * title.len() + text.len() + 48);
    for part in [HEAD, code, " ", title, STYLE, code, " ", title, "</h1><p>", text, "</p><p>Request ID: <code>"] {
        html.push_str(part);
    }
    html
}

/// A status's HTTP/1.1 head up to the request ID: its status line and the lines every page has.
fn h1_start(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("Unknown");
    let lines = ["\r\ncontent-type: ", CONTENT_TYPE, "\r\ncache-control: ", CACHE_CONTROL, "\r\nx-request-id: "];
    ["HTTP/1.1 ", status.as_str(), " ", reason].into_iter().chain(lines).collect()
}

/// The known statuses' page prefixes and HTTP/1.1 head starts, built once and kept for the life
/// of the process (a few KiB): under a flood, a refusal is these texts as they are and a few
/// small pieces.
static KNOWN_PAGES: std::sync::LazyLock<Vec<(&'static str, &'static str)>> = std::sync::LazyLock::new(|| {
    let leak = |s: String| &*Box::leak(s.into_boxed_str());
    let statuses = KNOWN.iter().map(|c| StatusCode::from_u16(*c).unwrap_or(StatusCode::BAD_REQUEST));
    statuses.map(|s| (leak(prefix(s)), leak(h1_start(s)))).collect()
});

/// The status of a request dropped without an answer (a `drop` DDoS mitigation), as nginx's
/// `return 444`: it is never sent; the HTTP/1.1 connection is reset, an HTTP/2 stream is.
/// Access logs and status counts show it.
pub const DROPPED: u16 = 444;

/// Marks [`dropped`]'s reply: an origin may answer 444 too, and that answer is relayed.
#[derive(Debug, Clone, Copy)]
struct Dropped;

/// A dropped request's stand-in reply ([`DROPPED`]).
pub fn dropped() -> Reply {
    let mut resp = Response::new(EdgeBody::empty());
    *resp.status_mut() = StatusCode::from_u16(DROPPED).unwrap_or(StatusCode::BAD_REQUEST);
    resp.extensions_mut().insert(Dropped);
    resp.into()
}

/// Whether `resp` is [`dropped`]'s: nothing is to be written.
pub fn is_dropped<B>(resp: &Response<B>) -> bool {
    resp.extensions().get::<Dropped>().is_some()
}

/// The header lines every page carries besides `x-request-id` (and `retry-after`), as
/// [`error_page`] sets them and as [`Page::write_h1`] writes them.
const CONTENT_TYPE: &str = "text/html; charset=utf-8";
const CACHE_CONTROL: &str = "no-store";

/// A page the edge answers with itself (an error, a refusal), held as what varies in it, with
/// the request's record. HTTP/1.1 writes it out in one piece ([`Page::write_h1`]): no response,
/// header map or body is made for it, which was two fifths of the CPU a flood's refusal cost
/// (callgrind, `bench/refusal.sh`). Anything else takes it as a [`Reply`] ([`Page::into_reply`]).
pub struct Page {
    status: StatusCode,
    /// Close the connection after it (after a framing error, the rest of the connection
    /// cannot be trusted).
    pub close: bool,
    /// Seconds, for `Retry-After`.
    retry_after: Option<u64>,
    request_id: HeaderValue,
    finish: Box<Finish>,
}

impl Page {
    pub fn new(
        status: StatusCode,
        request_id: HeaderValue,
        close: bool,
        retry_after: Option<u64>,
        mut finish: Box<Finish>,
    ) -> Self {
        finish.status = status.as_u16();
        Self { status, close, retry_after, request_id, finish }
    }

    /// The page as a response ([`error_page`]), carrying the request's record.
    pub fn into_reply(self) -> Reply {
        let mut reply = error_page(self.status, &self.request_id, self.close, self.retry_after);
        reply.resp.body_mut().set_finish(self.finish);
        reply
    }

    /// Writes the whole HTTP/1.1 response to `out`, the same head lines and body as
    /// [`Self::into_reply`]'s. `keep_alive`: the connection stays open after it (`Connection:
    /// close` otherwise; `Connection: keep-alive` to an HTTP/1.0 client); `head_request`: the
    /// head only (with the length the body would have). The page counts as sent and complete;
    /// its record is returned, to be dropped (and so counted) once the bytes are out.
    pub fn write_h1(self, out: &mut BytesMut, keep_alive: bool, http10: bool, head_request: bool) -> Box<Finish> {
        let Page { status, retry_after, request_id, mut finish, .. } = self;
        let h1 = H1 { keep_alive, http10, head_request };
        finish.bytes_sent += write_h1(out, status, request_id.as_bytes(), retry_after, h1);
        finish.completed = true;
        finish
    }
}

/// How an HTTP/1.1 page is written: see [`Page::write_h1`].
#[derive(Debug, Clone, Copy)]
pub struct H1 {
    pub keep_alive: bool,
    pub http10: bool,
    pub head_request: bool,
}

/// [`Page::write_h1`]'s bytes; returns the body's length (0 for a HEAD request).
pub fn write_h1(out: &mut BytesMut, status: StatusCode, id: &[u8], retry_after: Option<u64>, h1: H1) -> u64 {
    let built;
    let (prefix, start) = match known(status) {
        Some(k) => k,
        None => {
            built = (prefix(status), h1_start(status));
            (&*built.0, &*built.1)
        }
    };
    let len = prefix.len() + id.len() + TAIL.len();
    out.reserve(start.len() + 128 + if h1.head_request { 0 } else { len });
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(crate::codec::decimal(len as u64, &mut [0; 20]));
    out.extend_from_slice(b"\r\ndate: ");
    crate::h1::date_now(out);
    if let Some(seconds) = retry_after {
        out.extend_from_slice(b"\r\nretry-after: ");
        out.extend_from_slice(crate::codec::decimal(seconds, &mut [0; 20]));
    }
    out.extend_from_slice(match (h1.keep_alive, h1.http10) {
        (false, _) => b"\r\nconnection: close\r\n\r\n".as_slice(),
        (true, true) => b"\r\nconnection: keep-alive\r\n\r\n",
        (true, false) => b"\r\n\r\n",
    });
    if h1.head_request {
        return 0;
    }
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(TAIL.as_bytes());
    len as u64
}

/// A known status's page text and HTTP/1.1 head, each up to the request ID, built once.
fn known(status: StatusCode) -> Option<(&'static str, &'static str)> {
    KNOWN.iter().position(|c| *c == status.as_u16()).and_then(|i| KNOWN_PAGES.get(i)).copied()
}

/// An HTML error page. `close` adds `Connection: close` (after a framing error, the rest of the
/// connection cannot be trusted); `retry_after` (seconds) adds `Retry-After`. Refusals under a
/// flood are many: the page's text up to the request ID is built once per status, and its
/// header lines are one block of bytes written out as they are, with no header map (which cost
/// a fifth of a refusal's own work: callgrind, `bench/refusal.sh`).
pub fn error_page(status: StatusCode, request_id_value: &HeaderValue, close: bool, retry_after: Option<u64>) -> Reply {
    let request_id = request_id_value.to_str().unwrap_or("-");
    let head = match known(status) {
        Some((p, _)) => Bytes::from_static(p.as_bytes()),
        None => Bytes::from(prefix(status)),
    };
    let mut rest = String::with_capacity(request_id.len() + TAIL.len());
    rest.push_str(request_id);
    rest.push_str(TAIL);
    let mut resp = Response::new(EdgeBody::pieces(head, Bytes::from(rest)));
    *resp.status_mut() = status;
    if close {
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let mut digits = [0; 20];
    let mut lines: [(Special, &[u8], &[u8]); 4] = [
        (Special::Other, b"content-type", CONTENT_TYPE.as_bytes()),
        (Special::Other, b"cache-control", CACHE_CONTROL.as_bytes()),
        (Special::XRequestId, b"x-request-id", request_id.as_bytes()),
        (Special::Other, b"retry-after", b""),
    ];
    let mut count = 3;
    if let (Some(seconds), Some(line)) = (retry_after, lines.get_mut(3)) {
        line.2 = crate::codec::decimal(seconds, &mut digits);
        count = 4;
    }
    let origin_headers = RawHeaders::of(lines.get(..count).unwrap_or_default()).unwrap_or_default();
    Reply { resp, origin_headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn page(status: u16) -> String {
        let id = HeaderValue::from_static("0123456789abcdef");
        let resp = error_page(StatusCode::from_u16(status).unwrap(), &id, false, None).into_response();
        assert_eq!(resp.headers()["x-request-id"], "0123456789abcdef");
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert!(!resp.headers().contains_key("retry-after") && !resp.headers().contains_key("connection"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn pages_built_once_and_on_demand_read_the_same() {
        let known = page(429).await;
        assert!(known.starts_with("<!doctype html>"), "{known}");
        assert!(known.contains("<title>429 Too many requests</title>"), "{known}");
        assert!(known.contains("Request ID: <code>0123456789abcdef</code>"), "{known}");
        assert!(known.ends_with("</html>\n"));
        assert_eq!(known, format!("{}0123456789abcdef{TAIL}", prefix(StatusCode::TOO_MANY_REQUESTS)));
        let other = page(418).await;
        assert!(other.contains("<title>418 Error</title>") && other.contains("0123456789abcdef"), "{other}");
    }
}
