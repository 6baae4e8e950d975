//! Bot scoring per request: signal extraction (one pass over the header names, the user agent
//! read for signatures and browser engines, the client's behaviour window) and a model with a
//! feature per extractor, for a browser-like request of 12 headers. Target (issue 4): under 2 microseconds per request.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use palisade_config::artifact::{Feature, FeatureFile};
use palisade_edge::bot::{BotModule, Extractor, Model};
use palisade_edge::modules::{Headers, RequestView};

struct Lines(Vec<(&'static str, &'static str)>);

impl Headers for Lines {
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_bytes())
    }
    fn names(&self, f: &mut dyn FnMut(&[u8])) {
        for (k, _) in &self.0 {
            f(k.as_bytes());
        }
    }
}

fn bench(c: &mut Criterion) {
    let file = FeatureFile {
        model_version: "bench".into(),
        bias: -2.0,
        features: Extractor::ALL
            .iter()
            .enumerate()
            .map(|(i, (name, _))| Feature { name: format!("f{i}"), extractor: (*name).into(), weight: 0.5 })
            .collect(),
    };
    let module = BotModule::new(Some(Arc::new(Model::compile(&file).unwrap())), Vec::new());
    let headers = Lines(vec![
        ("host", "shop.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
        ),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("sec-ch-ua", "\"Chromium\";v=\"156\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-fetch-site", "none"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("upgrade-insecure-requests", "1"),
        ("cookie", "session=abc123"),
    ]);
    let (method, uri) = (hyper::Method::GET, hyper::Uri::from_static("/products/shoes?size=42"));
    c.bench_function("bot_score_browser_12_headers", |b| {
        b.iter(|| {
            let req = RequestView::plain(std::net::IpAddr::from([203, 0, 113, 9]), &method, &uri, &headers);
            black_box(module.judge(black_box(&req)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
