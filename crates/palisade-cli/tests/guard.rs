//! End-to-end: the connection guard. Ambiguous framing, oversized heads, slow clients and
//! connection floods, over real sockets.
mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

const LIMITS: &str = "[limits]\nheader_timeout_ms = 600\nidle_timeout_ms = 800\nbody_timeout_ms = 600\nmax_headers = 20\nmax_header_bytes = 2048\nmax_connections_per_ip = 5\n";

fn guarded_edge(o: &OriginProc) -> EdgeProc {
    edge(&format!("{LIMITS}{}", zone_config(&["site.test"], &[o.addr], "")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_with_400_and_never_reaches_the_origin() {
    let o = origin("o");
    let e = guarded_edge(&o);
    let cases: &[(&str, &[u8], u16)] = &[
        ("CL+TE", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE+CL", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
        ("dup CL same", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        ("dup CL differ", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", 400),
        ("CL list", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1, 1\r\n\r\nx", 400),
        ("CL sign", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: +1\r\n\r\nx", 400),
        ("TE twice", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE gzip,chunked", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
        ("TE unknown", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("TE in 1.0", b"POST /echo HTTP/1.0\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("space before colon", b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-A : 1\r\n\r\n", 400),
        ("obs-fold", b"GET /echo HTTP/1.1\r\nHost: site.test\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
        ("no host", b"GET /echo HTTP/1.1\r\n\r\n", 400),
        ("two hosts", b"GET /echo HTTP/1.1\r\nHost: site.test\r\nHost: other.test\r\n\r\n", 400),
        ("CONNECT", b"CONNECT site.test:443 HTTP/1.1\r\nHost: site.test\r\n\r\n", 405),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
        ("chunk size overflow", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n", 400),
        ("chunk missing CRLF", b"POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n", 400),
    ];
    let before = origin_stats(o.addr).await;
    for (name, bytes, want) in cases {
        let out = raw(e.http(), bytes, Duration::from_secs(3)).await;
        assert_eq!(statuses(&out), [*want], "{name}: {out}");
        assert!(out.contains("Request ID"), "{name}: error page without a request id");
    }
    let after = origin_stats(o.addr).await;
    // Head rejections never reach the origin; a body error may have opened the request already,
    // but the origin never sees a complete smuggled request.
    let reached = after["requests"].as_u64().unwrap() - before["requests"].as_u64().unwrap() - 1;
    assert!(reached <= 3, "{reached} refused requests reached the origin");
    let m = e.metrics().await;
    assert!(m.contains("palisade_guard_rejections_total{reason=\"content_length_and_transfer_encoding\"} 2"), "{m}");
    assert!(m.contains("palisade_guard_rejections_total{reason=\"duplicate_content_length\"} 2"), "{m}");
    assert!(m.contains("palisade_guard_rejections_total{reason=\"bad_chunk\"} 3"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggled_request_after_a_good_one_is_refused_and_good_pipelines_work() {
    let o = origin("o");
    let e = guarded_edge(&o);
    // Classic CL.TE smuggling attempt: the first request is fine, the second is ambiguous.
    let out = raw(
        e.http(),
        b"GET /echo HTTP/1.1\r\nHost: site.test\r\n\r\nPOST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(statuses(&out), [200, 400], "{out}");
    // A valid pipeline: fixed-length body, chunked body with extension and trailer, then a GET.
    let out = raw(
        e.http(),
        b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\n\r\nabc\
          POST /echo HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nxyz\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /echo HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(statuses(&out), [200, 200, 200], "{out}");
    assert!(out.contains("\"body_bytes\":3") && out.contains("\"method\":\"GET\""), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    let o = origin("o");
    let e = guarded_edge(&o);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: site.test\r\n");
    for i in 0..25 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(statuses(&raw(e.http(), many.as_bytes(), Duration::from_secs(3)).await), [431]);
    let big = format!("GET / HTTP/1.1\r\nHost: site.test\r\nX-Big: {}\r\n\r\n", "a".repeat(3000));
    assert_eq!(statuses(&raw(e.http(), big.as_bytes(), Duration::from_secs(3)).await), [431]);
    // An endless header line is cut at the limit, not buffered forever.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Endless: ").await.unwrap();
    let _ = s.write_all(&vec![b'a'; 64 * 1024]).await;
    let out = read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!(statuses(&out), [431], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_header_body_and_idle_timers() {
    let o = origin("o");
    let e = guarded_edge(&o);
    // Slowloris: a head that trickles in never completes within header_timeout_ms (600 ms).
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    let t = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n").await.unwrap();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
    }
    let _ = read_all(&mut s, Duration::from_secs(2)).await;
    assert!(closed || t.elapsed() < Duration::from_secs(4), "trickling head kept the connection open");
    assert!(t.elapsed() >= Duration::from_millis(550), "closed too early: {:?}", t.elapsed());

    // Connect and say nothing: closed after the header timeout.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    let t = Instant::now();
    let out = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(out.is_empty());
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(550) && took < Duration::from_secs(3), "silent connection lived {took:?}");

    // Keep-alive idle: after a response, an idle connection is closed after idle_timeout_ms.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    s.write_all(b"GET /1k HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
    let t = Instant::now();
    let out = read_all(&mut s, Duration::from_secs(5)).await;
    assert_eq!(statuses(&out), [200]);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(750) && took < Duration::from_secs(3), "idle connection lived {took:?}");

    // A body that stalls is cut off by body_timeout_ms.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: 100\r\n\r\nonly-part").await.unwrap();
    let t = Instant::now();
    let _ = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(3), "stalled body held the connection {:?}", t.elapsed());

    // A slow origin is not a slow client: a request in flight is not cut by the idle timer.
    let (s, _, b) = get_host(e.http(), "site.test", "/slow?ms=1500").await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_ip_cannot_take_the_connections_others_need() {
    let o = origin("o");
    let e = guarded_edge(&o);
    // 127.0.0.2 opens its 5 allowed connections and holds them (a slowloris from one address).
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = connect_from("127.0.0.2", e.http()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // Wait until the node counts them.
    eventually("5 active connections", Duration::from_secs(5), || async {
        e.metric("palisade_connections_active").await == Some(5.0)
    })
    .await;
    // A sixth from the same address is closed at once...
    let mut extra = connect_from("127.0.0.2", e.http()).await.unwrap();
    extra.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n").await.ok();
    let out = read_all(&mut extra, Duration::from_secs(2)).await;
    assert!(out.is_empty(), "{out}");
    // ...while another client is served normally.
    let mut other = connect_from("127.0.0.3", e.http()).await.unwrap();
    other.write_all(b"GET /1k HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let out = read_all(&mut other, Duration::from_secs(3)).await;
    assert_eq!(statuses(&out), [200], "{out}");
    assert!(e.metric("palisade_connections_rejected_total{reason=\"max_connections_per_ip\"}").await >= Some(1.0));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_wide_connection_limit_holds() {
    let o = origin("o");
    let e = edge(&format!(
        "[limits]\nmax_connections = 3\nmax_connections_per_ip = 3\n{}",
        zone_config(&["site.test"], &[o.addr], "")
    ));
    let mut held = Vec::new();
    for src in ["127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        held.push(connect_from(src, e.http()).await.unwrap());
    }
    eventually("3 active connections", Duration::from_secs(5), || async {
        e.metric("palisade_connections_active").await == Some(3.0)
    })
    .await;
    let mut extra = connect_from("127.0.0.7", e.http()).await.unwrap();
    extra.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n").await.ok();
    assert!(read_all(&mut extra, Duration::from_secs(2)).await.is_empty());
    assert_eq!(e.metric("palisade_connections_rejected_total{reason=\"max_connections\"}").await, Some(1.0));
    held.clear();
    eventually("slots freed", Duration::from_secs(5), || async {
        e.metric("palisade_connections_active").await == Some(0.0)
    })
    .await;
    let mut again = connect_from("127.0.0.7", e.http()).await.unwrap();
    again.write_all(b"GET /1k HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n").await.unwrap();
    assert_eq!(statuses(&read_all(&mut again, Duration::from_secs(3)).await), [200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_by_the_send_timeout() {
    let o = origin("o");
    let e = edge(&format!("[limits]\nsend_timeout_ms = 500\n{}", zone_config(&["site.test"], &[o.addr], "")));
    // Ask for 64 MiB and read none of it: socket buffers fill, then writes stall.
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    s.write_all(b"GET /bytes/67108864 HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
    eventually("the request is in flight", Duration::from_secs(5), || async {
        e.metric("palisade_connections_active").await == Some(1.0)
    })
    .await;
    let t = Instant::now();
    eventually("the stalled connection is closed", Duration::from_secs(10), || async {
        e.metric("palisade_connections_active").await == Some(0.0)
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    // The body was being spliced (moved in the kernel): the send timeout holds there too.
    assert!(e.metric("palisade_spliced_bytes_total").await > Some(0.0));
    drop(s);
}
