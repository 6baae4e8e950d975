//! The demo origin: a small, real HTTP/1.1 + HTTP/2 (prior knowledge) server that `palisade demo`
//! puts behind the edge, and that end-to-end tests and benches use as the website. It counts the
//! requests it serves and can be told to fail its health check.
//!
//! Endpoints:
//! - `/` a demo page; `/bytes/N` N bytes; `/status/N` an empty response with status N
//! - `/echo` JSON of the request as received (method, uri, version, headers in order, body size)
//! - `/slow?ms=N` answers after N ms; `/drip?chunks=N&ms=M` streams N chunks M ms apart
//! - `/ws` accepts a WebSocket upgrade and echoes the raw bytes of the tunnel
//! - `/health` 200, or 503 after `POST /__origin/health/fail` (until `/__origin/health/ok`)
//! - `/__origin/stats` JSON `{name, requests, connections}` (connections accepted so far)
//! - `/cache/ANY?h=NAME:VALUE&...` a cacheable page of your making: each `h` (percent-encoded)
//!   becomes a response header; `status=N`, `bytes=N` (body size), `ms=N` (delay), `chunked=1`,
//!   `fail_after=N` (503 from this path's request N+1 on: a site that breaks).
//!   The body starts with `n=K` (this path's request count), so a test can tell a cached copy
//!   from a fresh one; an `If-None-Match` equal to the `ETag` given gets 304.
//!
//! It must never depend on the edge: it stands for somebody else's website.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

pub struct Origin {
    pub name: String,
    requests: AtomicU64,
    /// Requests per `/cache/` path.
    cache_paths: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    connections: AtomicU64,
    failing_health: AtomicBool,
    /// Added before every answer (`palisade origin --delay-ms`): a slow website, for tests of
    /// latency gates.
    delay: std::sync::atomic::AtomicU64,
    /// At most this many requests are handled at once (`palisade origin --workers`), the rest
    /// wait: a site with a bounded capacity, as a thread-pool server is.
    workers: std::sync::OnceLock<tokio::sync::Semaphore>,
    page: Bytes,
    kib: Bytes,
    kib100: Bytes,
}

impl Origin {
    pub fn new(name: &str) -> Arc<Self> {
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Palisade demo site</title></head>\
<body style=\"font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto\"><h1>Hello from the demo origin</h1>\
<p>This page was served by origin <b>{name}</b> through a Palisade edge node.</p></body></html>\n"
        );
        Arc::new(Self {
            name: name.to_string(),
            requests: AtomicU64::new(0),
            cache_paths: Default::default(),
            connections: AtomicU64::new(0),
            failing_health: AtomicBool::new(false),
            delay: std::sync::atomic::AtomicU64::new(0),
            workers: std::sync::OnceLock::new(),
            page: Bytes::from(page),
            kib: Bytes::from(vec![b'x'; 1024]),
            kib100: Bytes::from(vec![b'x'; 100 * 1024]),
        })
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn query_u64(q: Option<&str>, key: &str) -> Option<u64> {
    q?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn handle(origin: Arc<Origin>, mut req: Request<Incoming>) -> Response<Body> {
    origin.requests.fetch_add(1, Ordering::Relaxed);
    let _worker = match origin.workers.get() {
        Some(w) => w.acquire().await.ok(),
        None => None,
    };
    let delay = origin.delay.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path().to_string();
    let mut resp = match path.as_str() {
        "/" | "/index.html" => {
            let mut r = Response::new(full(origin.page.clone()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r
        }
        "/1k" => Response::new(full(origin.kib.clone())),
        "/100k" => Response::new(full(origin.kib100.clone())),
        "/health" => {
            if origin.failing_health.load(Ordering::Relaxed) {
                let mut r = Response::new(full("failing"));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            } else {
                Response::new(full("ok"))
            }
        }
        "/__origin/health/fail" => {
            origin.failing_health.store(true, Ordering::Relaxed);
            Response::new(full("health now failing"))
        }
        "/__origin/health/ok" => {
            origin.failing_health.store(false, Ordering::Relaxed);
            Response::new(full("health now ok"))
        }
        "/__origin/stats" => {
            let v = serde_json::json!({
                "name": origin.name,
                "requests": origin.requests(),
                "connections": origin.connections.load(Ordering::Relaxed),
            });
            Response::new(full(v.to_string()))
        }
        "/echo" => {
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).to_string()))
                .collect();
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let version = format!("{:?}", req.version());
            let mut size = 0usize;
            let mut body_error = None;
            let body = req.body_mut();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => size += f.data_ref().map(|d| d.len()).unwrap_or(0),
                    Err(e) => {
                        body_error = Some(e.to_string());
                        break;
                    }
                }
            }
            let v = serde_json::json!({
                "origin": origin.name, "method": method, "uri": uri, "version": version,
                "headers": headers, "body_bytes": size, "body_error": body_error,
            });
            let mut r = Response::new(full(v.to_string()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        "/slow" => {
            let ms = query_u64(req.uri().query(), "ms").unwrap_or(1000).min(600_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slow response\n"))
        }
        "/drip" => {
            let chunks = query_u64(req.uri().query(), "chunks").unwrap_or(10).min(100_000);
            let ms = query_u64(req.uri().query(), "ms").unwrap_or(100).min(60_000);
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                for i in 0..chunks {
                    if tx.send(Bytes::from(format!("chunk {i}\n"))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            });
            Response::new(BodyExt::boxed(ChannelBody(rx)))
        }
        "/ws" => return websocket(req),
        p if p.starts_with("/cache/") => return cache_page(&origin, &req).await,
        p if p.starts_with("/bytes/") => {
            let n = p.trim_start_matches("/bytes/").parse::<usize>().unwrap_or(0).min(64 * 1024 * 1024);
            Response::new(full(vec![b'x'; n]))
        }
        p if p.starts_with("/status/") => {
            let code = p.trim_start_matches("/status/").parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok());
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = code.unwrap_or(StatusCode::BAD_REQUEST);
            r
        }
        _ => {
            let mut r = Response::new(full("not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&origin.name) {
        resp.headers_mut().insert("x-origin-name", v);
    }
    resp
}

/// `%XX` sequences and `+` decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn cache_page(origin: &Origin, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let n = {
        let mut paths = origin.cache_paths.lock().unwrap_or_else(|p| p.into_inner());
        let c = paths.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let query = req.uri().query().unwrap_or("");
    let mut headers = Vec::new();
    for kv in query.split('&') {
        if let Some(h) = kv.strip_prefix("h=") {
            if let Some((name, value)) = percent_decode(h).split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
    }
    let ms = query_u64(Some(query), "ms").unwrap_or(0).min(60_000);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let etag = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("etag")).map(|(_, v)| v.clone());
    let inm = req.headers().get("if-none-match").and_then(|v| v.to_str().ok());
    let not_modified = matches!((&etag, inm), (Some(e), Some(i)) if i.split(',').any(|t| t.trim() == e));
    let mut body = format!("n={n} path={path}\n").into_bytes();
    if let Some(size) = query_u64(Some(query), "bytes") {
        body.resize(size.min(64 * 1024 * 1024) as usize, b'x');
    }
    let chunked = query_u64(Some(query), "chunked") == Some(1);
    let mut r = if not_modified {
        Response::new(full(Bytes::new()))
    } else if chunked {
        // Streamed in 16 KiB pieces without a length.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let body = Bytes::from(body);
        tokio::spawn(async move {
            for piece in body.chunks(16 * 1024) {
                if tx.send(body.slice_ref(piece)).await.is_err() {
                    return;
                }
            }
        });
        Response::new(BodyExt::boxed(ChannelBody(rx)))
    } else {
        Response::new(full(body))
    };
    let broken = query_u64(Some(query), "fail_after").is_some_and(|after| n > after);
    *r.status_mut() = if broken {
        StatusCode::SERVICE_UNAVAILABLE
    } else if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        query_u64(Some(query), "status").and_then(|c| StatusCode::from_u16(c as u16).ok()).unwrap_or(StatusCode::OK)
    };
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (hyper::header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            r.headers_mut().append(n, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&origin.name) {
        r.headers_mut().insert("x-origin-name", v);
    }
    r
}

/// A body fed chunk by chunk from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec());
    let upgrade_ok = req.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (Some(key), true) = (key, upgrade_ok) else {
        let mut r = Response::new(full("expected a WebSocket upgrade\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let mut sha = sha1_smol::Sha1::new();
    sha.update(&key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64(&sha.digest().bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let io = TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Serves until the process ends. Returns the bound address through `ready`.
pub async fn serve(listener: TcpListener, origin: Arc<Origin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        origin.connections.fetch_add(1, Ordering::Relaxed);
        let origin = origin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let origin = origin.clone();
                async move { Ok::<_, Infallible>(handle(origin, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds and serves in a background task; returns the bound address.
impl Origin {
    /// Every answer waits this long first.
    pub fn set_delay(&self, ms: u64) {
        self.delay.store(ms, Ordering::Relaxed);
    }

    /// At most `n` requests are handled at once (set once; 0: no bound).
    pub fn set_workers(&self, n: usize) {
        if n > 0 {
            let _ = self.workers.set(tokio::sync::Semaphore::new(n));
        }
    }
}

pub async fn spawn(addr: SocketAddr, name: &str) -> std::io::Result<(SocketAddr, Arc<Origin>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let origin = Origin::new(name);
    tokio::spawn(serve(listener, origin.clone()));
    Ok((local, origin))
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc6455_example() {
        let mut sha = sha1_smol::Sha1::new();
        sha.update(b"dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        assert_eq!(super::base64(&sha.digest().bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
