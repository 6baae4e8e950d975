//! Traffic analytics on a node's request path: the one thing counted per request is a heavy
//! hitter sketch (client address, path, fingerprint); everything else is read from counters the
//! node keeps anyway. Measured for a repeat client (the sketch's common case) and for a flood of
//! new addresses and paths (the worst case: a full sketch decrementing).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_edge::analytics::TopTalkers;

fn bench(c: &mut Criterion) {
    let top = TopTalkers::default();
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    c.bench_function("analytics: heavy hitters, a repeat client", |b| {
        b.iter(|| {
            top.observe(
                black_box(ip),
                black_box("/products/42"),
                Some(black_box("t13d1516h2_8daaf6152771_02713d6af862")),
            )
        })
    });
    let paths: Vec<String> = (0..100_000).map(|i| format!("/random/{i}")).collect();
    let ips: Vec<IpAddr> = (0..100_000u32).map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes())).collect();
    let mut i = 0usize;
    c.bench_function("analytics: heavy hitters, every request new", |b| {
        b.iter(|| {
            i = (i + 1) % paths.len();
            top.observe(black_box(ips[i]), black_box(&paths[i]), None)
        })
    });
    black_box(top.take());
}

criterion_group!(benches, bench);
criterion_main!(benches);
