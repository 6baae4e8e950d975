//! End-to-end: the edge's own HTTP/1.1 codec. Origins that frame answers every way HTTP/1.1
//! allows (and some ways it does not), and clients that speak 1.0, pipeline, or keep alive.
//!
//! The origin here is a scripted TCP server in the test process: the demo origin (hyper) never
//! sends close-delimited bodies, 1xx interim answers or broken framing, and real origins do.
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted origin answers for a path, and whether it closes the connection after.
fn script(path: &str) -> (Vec<u8>, bool) {
    match path {
        "/close" => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close".to_vec(), true),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/early-hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                .to_vec(),
            false,
        ),
        "/huge-head" => {
            let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..2000 {
                v.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
            }
            v.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            (v, true)
        }
        "/bad-length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello".to_vec(), true),
        "/conflicting-lengths" => {
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), true)
        }
        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec(), true),
        "/no-content" => (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false),
        // Hop-by-hop headers, headers the edge sets itself, and ordinary ones in mixed case.
        "/hop-headers" => (
            b"HTTP/1.1 200 OK\r\nX-Custom: One\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Authenticate: Basic\r\nTE: trailers\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\n\
              Proxy-Connection: keep-alive\r\nVia: 1.1 cache-a\r\nX-Request-Id: origin-id\r\n\
              x-custom: Two\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            false,
        ),
        // A Connection header naming another header, which must go too.
        "/hop-named" => (
            b"HTTP/1.1 200 OK\r\nConnection: X-Private, keep-alive\r\nX-Private: secret\r\nX-Kept: yes\r\n\
              Content-Length: 2\r\n\r\nok"
                .to_vec(),
            false,
        ),
        // A 304's Content-Length describes the representation, not this message: not passed on.
        "/not-modified" => {
            (b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n".to_vec(), false)
        }
        // Keep-alive by default, but the origin closes anyway after answering.
        "/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), true),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndefault".to_vec(), false),
    }
}

struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn scripted_origin() -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_script(s));
        }
    });
    Scripted { addr, connections }
}

async fn serve_script(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Requests here have no body: a head ends the request.
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        if path == "/huge" {
            // Larger than the socket buffers on both sides: the edge is mid-body for a while.
            static HUGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let body = HUGE.get_or_init(|| big_body(HUGE_LEN));
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {HUGE_LEN}\r\n\r\n");
            if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
                return;
            }
            continue;
        }
        if let Some(kind) = path.strip_prefix("/big") {
            // A large body of known length: whole, cut short by a close, or stalled.
            let body = big_body(BIG);
            let sent = if kind.is_empty() { BIG } else { BIG / 3 };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
            if s.write_all(head.as_bytes()).await.is_err() || s.write_all(&body[..sent]).await.is_err() {
                return;
            }
            match kind {
                "" => continue,
                "-stall" => tokio::time::sleep(Duration::from_secs(10)).await,
                _ => {}
            }
            return;
        }
        let (answer, close) = script(&path);
        if s.write_all(&answer).await.is_err() || close {
            return;
        }
    }
}

/// Size of the scripted origin's large bodies: well past the size from which they are spliced.
const BIG: usize = 300_000;

const HUGE_LEN: usize = 32 * 1024 * 1024;

fn big_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Reads one response from a kept-alive connection, up to the body text it ends with.
async fn read_until(s: &mut TcpStream, end: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while !got.ends_with(end) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

fn edge_for(o: &Scripted) -> EdgeProc {
    edge(&zone_config(&["site.test"], &[o.addr], ""))
}

/// The header lines of a raw response, in order, as sent.
fn head_lines(out: &str) -> Vec<&str> {
    out.split("\r\n\r\n").next().unwrap().split("\r\n").skip(1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_headers_pass_as_sent_without_hop_by_hop_ones() {
    let o = scripted_origin().await;
    // Over h2 the request's :authority (127.0.0.1) names the site.
    let e = edge(&zone_config(&["site.test", "127.0.0.1"], &[o.addr], ""));
    let addr = e.http();

    // HTTP/1.1: the origin's own headers keep their order and spelling; hop-by-hop ones and
    // those the edge sets itself are gone; Via is joined, the request ID is the edge's.
    let out =
        raw(addr, b"GET /hop-headers HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n", Duration::from_secs(5))
            .await;
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("\r\n\r\nok"), "{out}");
    let lines = head_lines(&out);
    let custom: Vec<_> = lines.iter().filter(|l| l.to_ascii_lowercase().starts_with("x-custom:")).collect();
    assert_eq!(custom, [&"X-Custom: One", &"x-custom: Two"], "{out}");
    for gone in ["keep-alive:", "proxy-authenticate:", "te:", "trailer:", "upgrade:", "proxy-connection:"] {
        assert!(!lines.iter().any(|l| l.to_ascii_lowercase().starts_with(gone)), "{gone} was passed on: {out}");
    }
    assert!(!out.contains("origin-id"), "{out}");
    assert_eq!(lines.iter().filter(|l| l.to_ascii_lowercase().starts_with("connection:")).count(), 1, "{out}");
    assert!(lines.contains(&"connection: close"), "{out}");
    assert!(lines.contains(&"via: 1.1 cache-a, 1.1 palisade"), "{out}");
    assert_eq!(lines.iter().filter(|l| l.to_ascii_lowercase().starts_with("content-length:")).count(), 1, "{out}");
    let rid = lines.iter().find_map(|l| l.strip_prefix("x-request-id: ")).unwrap();
    assert_eq!(rid.len(), 16, "{out}");

    // A header named in Connection is removed; the others stay.
    let (s, h, body) = get_host(addr, "site.test", "/hop-named").await;
    assert_eq!((s, body.as_str()), (200, "ok"));
    assert!(h.get("x-private").is_none() && h.get("connection").is_none(), "{h:?}");
    assert_eq!(h.get("x-kept").unwrap(), "yes");

    // A 304 loses its Content-Length, keeps its validator, and the connection goes on.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /not-modified HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
    let first = read_until(&mut s, "\r\n\r\n").await;
    assert!(first.starts_with("HTTP/1.1 304") && first.contains("ETag: \"v1\""), "{first}");
    assert!(!first.to_ascii_lowercase().contains("content-length"), "{first}");
    s.write_all(b"GET /hop-named HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
    assert!(read_until(&mut s, "ok").await.starts_with("HTTP/1.1 200"));

    // HTTP/2 clients get the same headers, from one map.
    let c: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let (s, h, body) = request_full(&c, "GET", &format!("http://{addr}/hop-headers"), &[], Vec::new()).await;
    assert_eq!((s, body.as_str()), (200, "ok"));
    let custom: Vec<_> = h.get_all("x-custom").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(custom, ["One", "Two"]);
    // Via names the protocol the response came in on (HTTP/1.1 from this origin).
    assert_eq!(h.get("via").unwrap(), "1.1 cache-a, 1.1 palisade");
    assert_eq!(h.get("x-request-id").unwrap().len(), 16);
    for gone in ["keep-alive", "proxy-authenticate", "te", "trailer", "upgrade", "proxy-connection", "connection"] {
        assert!(h.get(gone).is_none(), "{gone} was passed on over h2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_framings_are_decoded_and_reframed_for_the_client() {
    let o = scripted_origin().await;
    let e = edge_for(&o);
    let addr = e.http();

    // A close-delimited body reaches an HTTP/1.1 client chunked, whole.
    let (s, h, body) = get_host(addr, "site.test", "/close").await;
    assert_eq!((s, body.as_str()), (200, "until the close"));
    assert_eq!(h.get("transfer-encoding").map(|v| v.to_str().unwrap()), Some("chunked"));
    // Chunk extensions and trailers are decoded; the data arrives intact.
    let (s, _, body) = get_host(addr, "site.test", "/chunked").await;
    assert_eq!((s, body.as_str()), (200, "Wikipedia"));
    // A 103 before the final answer is skipped; the final answer is what the client gets.
    let (s, _, body) = get_host(addr, "site.test", "/early-hints").await;
    assert_eq!((s, body.as_str()), (200, "final"));
    let (s, _, body) = get_host(addr, "site.test", "/no-content").await;
    assert_eq!((s, body.as_str()), (204, ""));

    // Broken answers are 502s with the edge's page, never passed on.
    for path in ["/huge-head", "/bad-length", "/conflicting-lengths"] {
        let (s, h, body) = get_host(addr, "site.test", path).await;
        assert_eq!(s, 502, "{path}: {body}");
        assert!(body.contains("Request ID"), "{path}: {body}");
        // A response the edge makes itself is dated (RFC 9110 6.6.1).
        let date = h.get("date").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{path}: date {date:?}");
    }

    // An origin that dies mid-body: the client sees the head and a cut connection, never a
    // complete-looking short answer.
    let out = raw(addr, b"GET /short HTTP/1.1\r\nHost: site.test\r\n\r\n", Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("Content-Length: 100"), "the origin's spelling is kept: {out}");
    assert!(out.ends_with("only this"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_origin_closed_is_not_used_again() {
    let o = scripted_origin().await;
    let e = edge_for(&o);
    // The origin closes after every answer without saying so; each request must still succeed
    // (the edge notices the close while the connection sits in its pool).
    for i in 0..5 {
        let (s, _, body) = get_host(e.http(), "site.test", "/then-close").await;
        assert_eq!((s, body.as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(o.connections.load(Ordering::SeqCst), 5);
    // A well-behaved keep-alive origin gets one connection for many requests (one client
    // connection, so one worker and its pool).
    let before = o.connections.load(Ordering::SeqCst);
    let mut s = TcpStream::connect(e.http()).await.unwrap();
    for i in 0..5 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
        let got = read_until(&mut s, "default").await;
        assert!(got.starts_with("HTTP/1.1 200"), "request {i}: {got}");
    }
    assert_eq!(o.connections.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pipeline_and_speak_http_1_0() {
    let o = scripted_origin().await;
    let e = edge_for(&o);
    let addr = e.http();

    // Three pipelined requests on one connection: three answers, in order.
    let pipelined = b"GET /chunked HTTP/1.1\r\nHost: site.test\r\n\r\nGET / HTTP/1.1\r\nHost: site.test\r\n\r\nGET /early-hints HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";
    let out = raw(addr, pipelined, Duration::from_secs(5)).await;
    assert_eq!(statuses(&out), [200, 200, 200], "{out}");
    let (wiki, default, fin) = (out.find("Wiki").unwrap(), out.find("default").unwrap(), out.find("final").unwrap());
    assert!(wiki < default && default < fin, "{out}");

    // HTTP/1.0 without keep-alive: the answer is length-delimited or close-delimited, and the
    // connection closes after it.
    let out = raw(addr, b"GET /close HTTP/1.0\r\nHost: site.test\r\n\r\n", Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!out.contains("chunked"), "a 1.0 client cannot read chunked: {out}");
    assert!(out.contains("connection: close") && out.ends_with("until the close"), "{out}");

    // HTTP/1.0 with keep-alive: kept open, and told so.
    let mut s = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.0\r\nHost: site.test\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        let got = read_until(&mut s, "default").await;
        assert!(got.contains("connection: keep-alive"), "{got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_answers_before_reading_the_upload_is_heard() {
    // The demo origin answers /status/413 without reading the body, as an origin refusing an
    // upload does. The client must get that 413, not a 502 for the upload the origin cut short.
    let o = origin("o");
    let e = edge(&zone_config(&["site.test"], &[o.addr], "max_body_bytes = 104857600"));
    let len = 16 * 1024 * 1024;
    let mut s = TcpStream::connect(e.http()).await.unwrap();
    s.write_all(format!("POST /status/413 HTTP/1.1\r\nHost: site.test\r\nContent-Length: {len}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let upload = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..len / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("no answer: {other:?} {}", String::from_utf8_lossy(&got)),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // The rest of the upload is not read: the connection closes after the answer.
    assert!(text.contains("connection: close"), "{text}");
    upload.abort();
    // The edge took the origin's word; it did not count a failed origin.
    assert_eq!(
        e.metric(&format!("palisade_origin_connect_failures_total{{zone=\"site\",origin=\"{}\"}}", o.addr)).await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_move_in_the_kernel_and_arrive_whole_or_visibly_cut() {
    let o = scripted_origin().await;
    let e =
        edge(&zone_config(&["site.test"], &[o.addr], "[zones.timeouts]\nresponse_header_ms = 1000\ntotal_ms = 1500"));
    let addr = e.http();
    let want = String::from_utf8(big_body(BIG)).unwrap();

    // Large bodies and small ones, alternating on one kept-alive connection: every byte in
    // order, nothing of one response left over in the next.
    let mut s = TcpStream::connect(addr).await.unwrap();
    for i in 0..3 {
        let (status, body) = get_on(&mut s, "site.test", "/big").await;
        assert_eq!(status, 200, "request {i}");
        assert!(body == want, "request {i}: {} bytes, differing from byte {:?}", body.len(), {
            body.bytes().zip(want.bytes()).position(|(a, b)| a != b)
        });
        assert_eq!(get_on(&mut s, "site.test", "/").await, (200, "default".to_string()), "request {i}");
    }
    // The origin connection went back to the pool after each spliced body: one served all.
    assert_eq!(o.connections.load(Ordering::SeqCst), 1);
    // Pipelined behind each other: two spliced answers and a small one, whole and in order.
    let pipelined = b"GET /big HTTP/1.1\r\nHost: site.test\r\n\r\nGET /big HTTP/1.1\r\nHost: site.test\r\n\r\nGET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";
    let out = raw(addr, pipelined, Duration::from_secs(10)).await;
    let answers: Vec<&str> = out.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 3, "{} bytes", out.len());
    for (i, want_body) in [want.as_str(), want.as_str(), "default"].iter().enumerate() {
        let body = answers[i].split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        assert!(body == *want_body, "answer {i}: {} bytes", body.len());
    }
    // And the bodies went through the kernel, not through the edge's memory (all but what
    // came in with each head).
    let spliced = e.metric("palisade_spliced_bytes_total").await.unwrap();
    assert!(spliced >= 3.0 * (BIG - 16 * 1024) as f64, "spliced {spliced}");

    // An origin that dies mid-body: the client sees the head, part of the body and a closed
    // connection, never a complete-looking answer.
    let t = Instant::now();
    let out = raw(addr, b"GET /big-short HTTP/1.1\r\nHost: site.test\r\n\r\n", Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(4), "the connection was not closed");
    assert!(out.starts_with("HTTP/1.1 200") && out.contains(&format!("Content-Length: {BIG}")), "{}", &out[..200]);
    let body_len = out.len() - out.find("\r\n\r\n").unwrap() - 4;
    assert_eq!(body_len, BIG / 3);

    // An origin that stalls mid-body is cut at the zone's total time.
    let t = Instant::now();
    let out = raw(addr, b"GET /big-stall HTTP/1.1\r\nHost: site.test\r\n\r\n", Duration::from_secs(8)).await;
    assert!(t.elapsed() < Duration::from_secs(4), "cut after {:?}", t.elapsed());
    let body_len = out.len() - out.find("\r\n\r\n").unwrap() - 4;
    assert_eq!(body_len, BIG / 3);
    assert!(
        e.metric(&format!("palisade_origin_timeouts_total{{zone=\"site\",origin=\"{}\"}}", o.addr)).await >= Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_leaving_in_the_middle_of_spliced_bodies_leak_nothing() {
    let o = scripted_origin().await;
    let e = edge_for(&o);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", e.proc.pid())).unwrap().count();
    // Warm up: one whole large body, so that lazily opened descriptors exist before counting.
    let mut s = TcpStream::connect(e.http()).await.unwrap();
    assert_eq!(get_on(&mut s, "site.test", "/big").await.0, 200);
    drop(s);
    let before = fds();
    // 100 clients each read the start of a body larger than the socket buffers and leave, 20
    // at a time: the edge is cut off with bytes in its pipes.
    for _ in 0..5 {
        let mut batch = Vec::new();
        for _ in 0..20 {
            let addr = e.http();
            batch.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"GET /huge HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                while got < 40_000 {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    got += n;
                }
            }));
        }
        for t in batch {
            t.await.unwrap();
        }
    }
    // Every pipe that held bytes and every origin connection cut mid-body is closed; what may
    // remain is a bounded set of spare pipes (16 per worker, two descriptors each).
    eventually("descriptors are released", Duration::from_secs(10), || async { fds() <= before + 2 * 16 * 2 }).await;
    // And the edge still serves large bodies whole.
    let mut s = TcpStream::connect(e.http()).await.unwrap();
    let (status, body) = get_on(&mut s, "site.test", "/big").await;
    assert_eq!((status, body.len()), (200, BIG));
}
