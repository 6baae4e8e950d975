//! Per-request and per-reload costs: the request-head guard, the HTTP/1.1 codec, origin picks,
//! config loading.
//! `cargo bench -p palisade-microbench`
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use palisade_config::{Balance, PassiveHealth};
use palisade_edge::guard::{ConnShared, GuardLimits, Guarded};
use palisade_edge::pool::{stable_hash, OriginState, Pool};
use tokio::io::AsyncReadExt;

const HEAD: &[u8] =
    b"GET /assets/app.js?v=3 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\
Accept: */*\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, br\r\nCookie: session=abc123; theme=dark\r\n\
Referer: https://shop.example/\r\nSec-Fetch-Mode: no-cors\r\n\r\n";

fn guard(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let limits = GuardLimits {
        max_header_bytes: 16 * 1024,
        max_headers: 100,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(30),
        send_timeout: Duration::from_secs(60),
    };
    let pipeline: Vec<u8> = HEAD.repeat(100);
    let mut g = c.benchmark_group("guard");
    g.throughput(Throughput::Elements(100));
    g.bench_function("100 browser-like GET heads", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut io = Guarded::new(&pipeline[..], Arc::new(ConnShared::default()), limits);
                let mut out = Vec::with_capacity(pipeline.len());
                io.read_to_end(&mut out).await.unwrap();
                black_box(out.len())
            })
        })
    });
    g.finish();
}

/// What nginx answers for a static 1 KiB file, head and body.
const ORIGIN_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.26.3\r\nDate: Fri, 27 Nov 2026 01:00:00 GMT\r\n\
Content-Type: application/octet-stream\r\nContent-Length: 1024\r\nLast-Modified: Fri, 27 Nov 2026 00:00:00 GMT\r\n\
Connection: keep-alive\r\nETag: \"6746a3c0-400\"\r\nAccept-Ranges: bytes\r\n\r\n";

fn h1_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("h1 codec");
    let mut wire = ORIGIN_RESPONSE.to_vec();
    wire.extend_from_slice(&[b'x'; 1024]);
    g.bench_function("origin response head -> Response (9 headers)", |b| {
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(&wire[..]);
            let head = palisade_edge::upstream::parse_response_head(&mut buf, &hyper::Method::GET);
            black_box((head.is_ok(), buf.len()))
        })
    });
    let mut buf = bytes::BytesMut::from(&wire[..]);
    let Ok(Some(palisade_edge::upstream::Head::Final(_, lines, ..))) =
        palisade_edge::upstream::parse_response_head(&mut buf, &hyper::Method::GET)
    else {
        panic!("the sample response parses")
    };
    g.bench_function("origin header lines -> wire (9 headers)", |b| {
        let mut out = bytes::BytesMut::with_capacity(1024);
        b.iter(|| {
            out.clear();
            black_box(&lines).write(&mut out);
            black_box(out.len())
        })
    });
    g.bench_function("origin header lines -> header map (9 headers, HTTP/2 clients)", |b| {
        b.iter(|| {
            let mut map = hyper::HeaderMap::new();
            black_box(&lines).append_to(&mut map);
            black_box(map.len())
        })
    });
    g.finish();
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool pick, 8 origins");
    for balance in [Balance::RoundRobin, Balance::LeastConnections, Balance::ConsistentHash, Balance::PowerOfTwoChoices]
    {
        let origins = (0..8)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                (Arc::new(OriginState::new(addr, Arc::default(), 1)), 1 + i % 3)
            })
            .collect();
        let pool = Pool::new(origins, balance, PassiveHealth::default());
        let key = stable_hash(b"session=abc123");
        g.bench_with_input(BenchmarkId::from_parameter(format!("{balance:?}")), &pool, |b, p| {
            b.iter(|| black_box(p.pick(black_box(key), 0)))
        });
    }
    g.finish();
}

fn config(c: &mut Criterion) {
    let mut doc = String::from("[listen]\nhttp = \"127.0.0.1:8080\"\n");
    for z in 0..100 {
        doc.push_str(&format!(
            "[[zones]]\nname = \"zone{z}\"\nhostnames = [\"z{z}.example\", \"*.z{z}.example\"]\n\
             origins = [{{ address = \"10.0.{z}.1:80\" }}, {{ address = \"10.0.{z}.2:80\", weight = 2 }}]\n\
             [zones.health_check]\npath = \"/health\"\n"
        ));
    }
    let mut g = c.benchmark_group("config");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("load: 100 zones", |b| {
        b.iter(|| black_box(palisade_config::load(doc.as_bytes()).unwrap().zones.len()))
    });
    g.finish();
}

criterion_group!(benches, guard, h1_codec, pick, config);
criterion_main!(benches);
