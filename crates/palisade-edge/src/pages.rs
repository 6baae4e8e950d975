//! Local responses: error pages with the request ID and nothing internal (no origin addresses,
//! no node names, no error chains).

use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::body::EdgeBody;

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

/// An HTML error page. `close` adds `Connection: close` (after a framing error, the rest of the
/// connection cannot be trusted). Refusals under a flood are many: the header map comes from
/// the worker's spares, and the request ID's value is shared, not copied.
pub fn error_page(status: StatusCode, request_id_value: &HeaderValue, close: bool) -> Response<EdgeBody> {
    let request_id = request_id_value.to_str().unwrap_or("-");
    let (title, text) = reason(status);
    let code = status.as_str();
    // Put together piece by piece (no formatting machinery): refusals under a flood are many.
    const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>";
    const STYLE: &str = "</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}\
code{background:#f3f3f3;padding:.1rem .3rem}</style></head>\n<body><h1>";
    const TAIL: &str = "</code></p><hr><p><small>palisade</small></p></body></html>\n";
    let mut html = String::with_capacity(HEAD.len() + STYLE.len() + TAIL.len() + 2 * title.len() + text.len() + 64);
    for part in [
        HEAD,
        code,
        " ",
        title,
        STYLE,
        code,
        " ",
        title,
        "</h1><p>",
        text,
        "</p><p>Request ID: <code>",
        request_id,
        TAIL,
    ] {
        html.push_str(part);
    }
    let mut resp = Response::new(EdgeBody::full(html));
    *resp.status_mut() = status;
    *resp.headers_mut() = crate::codec::spare_map();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(hyper::header::HeaderName::from_static("x-request-id"), request_id_value.clone());
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
