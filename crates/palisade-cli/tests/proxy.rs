//! End-to-end: the request path through a real `palisade edge` to a real origin.
mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"].as_array().unwrap().iter().filter(|h| h[0] == name).map(|h| h[1].as_str().unwrap()).collect()
}

/// GETs `url` on `c` with `headers`; asserts a 200 and returns the response headers and the
/// demo origin's echo of the request it received.
async fn get_echo(c: &HttpClient, url: &str, headers: &[(&str, &str)]) -> (hyper::HeaderMap, serde_json::Value) {
    let (status, h, body) = request_full(c, "GET", url, headers, Vec::new()).await;
    assert_eq!(status, 200, "{body}");
    (h, serde_json::from_str(&body).unwrap())
}

/// Sends `request` (which must ask to close) on a new connection; asserts a 200 and returns the
/// demo origin's echo of the request it received.
async fn raw_echo(addr: std::net::SocketAddr, request: &[u8]) -> serde_json::Value {
    let out = raw(addr, request, Duration::from_secs(3)).await;
    assert_eq!(statuses(&out), [200], "{out}");
    serde_json::from_str(&out[out.find("\r\n\r\n").unwrap() + 4..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_forwarding_headers_and_strips_hop_by_hop() {
    let o = origin("o1");
    let e = edge(&zone_config(&["site.test"], &[o.addr], ""));
    let (h, echo) = get_echo(
        &client(),
        &format!("http://{}/echo?q=1", e.http()),
        &[
            ("host", "Site.Test"),
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "x-private, keep-alive"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
        ],
    )
    .await;
    assert_eq!(echo["uri"], "/echo?q=1");
    assert_eq!(header(&echo, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&echo, "x-forwarded-host"), ["Site.Test"]);
    assert_eq!(header(&echo, "forwarded"), ["for=127.0.0.1;host=Site.Test;proto=http"]);
    assert_eq!(header(&echo, "via"), ["1.1 palisade"]);
    assert_eq!(header(&echo, "host"), ["Site.Test"]);
    for gone in ["x-private", "keep-alive", "proxy-authorization", "te", "connection"] {
        assert!(header(&echo, gone).is_empty(), "{gone} reached the origin");
    }
    let rid = h.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(rid.len(), 16);
    assert_eq!(header(&echo, "x-request-id"), [rid]);
    assert_eq!(h.get("via").unwrap(), "1.1 palisade");

    // What earlier proxies wrote is carried on in the list headers; the edge's own values
    // replace what a client could forge.
    let (h, echo) = get_echo(
        &client(),
        &format!("http://{}/echo", e.http()),
        &[
            ("host", "site.test"),
            ("via", "1.0 corp-proxy"),
            ("forwarded", "for=198.51.100.1"),
            ("cdn-loop", "other-cdn"),
            ("x-request-id", "client-chosen"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
        ],
    )
    .await;
    assert_eq!(header(&echo, "via"), ["1.0 corp-proxy, 1.1 palisade"]);
    assert_eq!(header(&echo, "forwarded"), ["for=198.51.100.1, for=127.0.0.1;host=site.test;proto=http"]);
    assert_eq!(header(&echo, "cdn-loop"), ["other-cdn", "palisade"]);
    assert_eq!(header(&echo, "x-request-id"), [h.get("x-request-id").unwrap().to_str().unwrap()]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&echo, "x-forwarded-host"), ["site.test"]);
    assert_eq!(header(&echo, "host"), ["site.test"]);
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);

    // A request with none of those headers: its lines are forwarded as lines, hop-by-hop ones
    // dropped, the others whole and in order, repeated ones repeated.
    let echo = raw_echo(
        e.http(),
        b"GET /echo HTTP/1.1\r\nHOST: Site.Test\r\nConnection: keep-alive, close\r\nKeep-Alive: timeout=5\r\n\
          Accept: a/b\r\nX-MiXed:  v 1\r\nAccept: c/d\r\nCookie: k=v\r\n\r\n",
    )
    .await;
    assert_eq!(header(&echo, "host"), ["Site.Test"]);
    assert_eq!(header(&echo, "accept"), ["a/b", "c/d"]);
    assert_eq!(header(&echo, "x-mixed"), ["v 1"]);
    assert_eq!(header(&echo, "cookie"), ["k=v"]);
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "forwarded"), ["for=127.0.0.1;host=Site.Test;proto=http"]);
    for gone in ["keep-alive", "connection"] {
        assert!(header(&echo, gone).is_empty(), "{gone} reached the origin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_exact_and_wildcard_hosts_and_refuses_unknown_ones() {
    let a = origin("a");
    let b = origin("b");
    let cfg = format!(
        "{}\n[[zones]]\nname = \"a\"\nhostnames = [\"a.test\"]\norigins = [{{ address = \"{}\" }}]\n\
         [[zones]]\nname = \"b\"\nhostnames = [\"*.b.test\"]\norigins = [{{ address = \"{}\" }}]\n",
        listen_section(false),
        a.addr,
        b.addr
    );
    let e = edge(&cfg);
    let (s, h, _) = get_host(e.http(), "a.test", "/").await;
    assert_eq!((s, origin_name(&h).as_str()), (200, "a"));
    let (s, h, _) = get_host(e.http(), "www.b.test:8080", "/").await;
    assert_eq!((s, origin_name(&h).as_str()), (200, "b"));
    // One-label wildcard only, and the bare parent is not matched.
    for host in ["x.www.b.test", "b.test", "unknown.example"] {
        let (s, h, body) = get_host(e.http(), host, "/").await;
        assert_eq!(s, 404, "{host}");
        assert!(origin_name(&h).is_empty());
        assert!(body.contains("Site not found") && body.contains("Request ID"), "{body}");
        assert!(!body.contains("127.0.0.1"), "error page leaks an address: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_downstream_and_h2_to_the_origin() {
    let o = origin("o");
    // Over h2 the request's :authority names the site: route 127.0.0.1 to the zone.
    let e = edge(&zone_config(&["site.test", "127.0.0.1"], &[o.addr], "origin_protocol = \"h2\""));
    let c: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let url = format!("http://{}/echo", e.http());
    let (h, echo) = get_echo(&c, &url, &[]).await;
    assert_eq!(h.get("via").unwrap(), "2 palisade");
    assert_eq!(echo["version"], "HTTP/2.0", "origin_protocol = h2 must reach the origin over h2");
    // The forwarding headers reach an HTTP/2 origin as they reach an HTTP/1.1 one.
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "via"), ["2 palisade"]);
    assert_eq!(header(&echo, "cdn-loop"), ["palisade"]);
    assert_eq!(header(&echo, "x-request-id"), [h.get("x-request-id").unwrap().to_str().unwrap()]);
    let authority = e.http().to_string();
    assert_eq!(header(&echo, "x-forwarded-host"), [authority.as_str()]);
    assert_eq!(header(&echo, "forwarded"), [format!("for=127.0.0.1;host=\"{authority}\";proto=http").as_str()]);

    // An HTTP/1.1 client's header lines reach an HTTP/2 origin in its header map.
    let echo = raw_echo(
        e.http(),
        b"GET /echo HTTP/1.1\r\nHost: site.test\r\nKeep-Alive: timeout=5\r\nX-Custom: one\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(header(&echo, "x-custom"), ["one"]);
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert!(header(&echo, "keep-alive").is_empty() && header(&echo, "connection").is_empty(), "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_expect_continue_chunked_upload_and_streaming_download() {
    let o = origin("o");
    let e = edge(&zone_config(&["site.test"], &[o.addr], ""));
    // HEAD: headers of the GET, no body.
    let out = raw(
        e.http(),
        b"HEAD /bytes/5000 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("content-length: 5000"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "HEAD response carried a body: {out:?}");

    // Expect: 100-continue: the client sees 100 before sending the body.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"ping").await.unwrap();
    let rest = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(rest.contains("\"body_bytes\":4"), "{rest}");
    assert!(!rest.contains("100-continue"), "Expect must not be forwarded");

    // A chunked upload of 3 MiB streams through.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..48 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        s.write_all(&chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let out = read_all(&mut s, Duration::from_secs(10)).await;
    assert!(out.contains(&format!("\"body_bytes\":{}", 48 * 64 * 1024)), "{out}");

    // Streaming download: the first chunk arrives long before the last one is produced.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    let t = Instant::now();
    s.write_all(b"GET /drip?chunks=5&ms=300 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut first = Vec::new();
    while !String::from_utf8_lossy(&first).contains("chunk 0") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        first.extend_from_slice(&buf[..n]);
    }
    assert!(t.elapsed() < Duration::from_millis(900), "first chunk took {:?}: response was buffered", t.elapsed());
    let rest = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(rest.contains("chunk 4"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_both_ways() {
    let o = origin("o");
    let e = edge(&zone_config(&["site.test"], &[o.addr], ""));
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before 101");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_ascii_lowercase().as_str()),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"second message", &[0u8, 1, 2, 255]] {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_limit_gives_413_for_declared_and_streamed_bodies() {
    let o = origin("o");
    let e = edge(&zone_config(&["site.test"], &[o.addr], "max_body_bytes = 1000"));
    let (s, _) =
        request("POST", &format!("http://{}/echo", e.http()), &[("host", "site.test")], vec![b'a'; 1001]).await;
    assert_eq!(s, 413);
    let (s, body) =
        request("POST", &format!("http://{}/echo", e.http()), &[("host", "site.test")], vec![b'a'; 1000]).await;
    assert_eq!(s, 200, "{body}");
    // Chunked: no length up front; the limit applies as it streams.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'b'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let out = raw(e.http(), &req, Duration::from_secs(5)).await;
    assert_eq!(statuses(&out), [413], "{out}");
    assert_eq!(e.metric("palisade_request_body_too_large_total{zone=\"site\"}").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_closes_the_connection() {
    let o = origin("o");
    let e = edge(&zone_config(&["site.test"], &[o.addr], ""));
    // The origin answers 404 to this upgrade; a request pipelined behind it must not be served
    // unchecked, so the edge closes the connection after the 404.
    let out = raw(
        e.http(),
        b"GET /nope HTTP/1.1\r\nHost: site.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
          GET /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(statuses(&out), [404], "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_sees_the_host_the_request_was_routed_by() {
    let (a, b) = (origin("a"), origin("b"));
    let cfg = format!(
        "{}\n[[zones]]\nname = \"a\"\nhostnames = [\"a.test\"]\norigins = [{{ address = \"{}\" }}]\n\
         [[zones]]\nname = \"b\"\nhostnames = [\"b.test\"]\norigins = [{{ address = \"{}\" }}]\n",
        listen_section(false),
        a.addr,
        b.addr
    );
    let e = edge(&cfg);
    // Absolute-form target for a.test with a Host header naming b.test: routed to a, and a sees a.test.
    let echo =
        raw_echo(e.http(), b"GET http://a.test/echo HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(echo["origin"], "a");
    assert_eq!(header(&echo, "host"), ["a.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_pointing_back_at_the_edge_is_a_508_not_a_storm() {
    let o = origin("o");
    let e = edge(&zone_config(&["site.test"], &[o.addr], ""));
    // Misconfigure the zone so that its origin is the edge itself.
    let (status, v) = e.admin_json("POST", "/config", &zone_config(&["site.test"], &[e.http()], "")).await;
    assert_eq!(status, 200, "{v}");
    let (s, _, body) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(s, 508, "{body}");
    assert!(body.contains("Loop detected"));
    assert_eq!(e.metric("palisade_loops_total").await, Some(1.0));
    // Four passes in all: the client's, and three through the loop.
    let passes = e.metric("palisade_request_duration_seconds_count{zone=\"site\"}").await.unwrap();
    assert_eq!(passes, 4.0);
}
