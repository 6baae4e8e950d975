//! Firewall rules per request: 100 typical rules, none matching (so every one is evaluated),
//! against a browser-like request. Target (issue 3): under 5 microseconds per request.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_config::rules::{parse, Expr, RequestData};

fn rules() -> Vec<Expr> {
    (0..100)
        .map(|i| {
            let src = match i % 10 {
                0 => format!(r#"http.request.uri.path wildcard "/admin{i}/*""#),
                1 => format!(r#"http.request.headers["x-api-key"] eq "key-{i}""#),
                2 => format!(r#"http.request.method in {{ "PUT" "DELETE" }} and http.request.uri.path contains "/private{i}""#),
                3 => format!(r#"ip.src in {{ 10.{i}.0.0/16 192.0.{i}.0/24 }}"#),
                4 => format!(r#"http.user_agent contains "scanner-{i}""#),
                5 => format!(r#"http.request.uri.query contains "union select {i}""#),
                6 => format!(r#"http.request.uri.path matches "^/wp-{i}[a-z]+\\.php$""#),
                7 => format!(r#"not ssl and http.host eq "legacy{i}.example""#),
                8 => format!(r#"bot.score lt {} and http.request.uri.path wildcard "/checkout*""#, i % 30),
                _ => format!(r#"http.request.headers["referer"] contains "spam{i}.example" or http.request.version eq "HTTP/1.0""#),
            };
            parse(&src).unwrap_or_else(|e| panic!("{src}: {e}"))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    let mut req = RequestData::get(
        "shop.example",
        "/products/shoes/running?size=42&color=blue",
        std::net::IpAddr::from([203, 0, 113, 9]),
    )
    .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36")
    .header("accept", "text/html,application/xhtml+xml")
    .header("accept-language", "en-US,en;q=0.9")
    .header("referer", "https://shop.example/products")
    .header("cookie", "session=abc123");
    req.ssl = true;
    req.bot_score = Some(80);
    assert!(!rules.iter().any(|r| r.eval(&req)), "the bench request must match no rule");
    c.bench_function("100 firewall rules, none matching", |b| {
        b.iter(|| black_box(&rules).iter().filter(|r| r.eval(black_box(&req))).count())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
