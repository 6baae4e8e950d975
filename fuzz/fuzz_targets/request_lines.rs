//! Any bytes as a client's HTTP/1.1 request head, after the edge's own parse: header lines that
//! `lines_forwardable` lets through as lines and `strip_request_lines` edits are written for the
//! origin. Nothing may panic; the written block parses back to exactly the lines kept, in order;
//! what was dropped is exactly the hop-by-hop lines, `Expect`, and `Host` when asked; and no line
//! the edge must replace or merge ever goes out as a line. Lines refused go to a header map whole.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use palisade_edge::codec::RawHeaders;
use palisade_edge::proxy::{lines_forwardable, strip_request_lines};
use palisade_fuzz::written_and_parsed_back;

/// Names no forwarded line may carry (an independent list, not the edge's classifier).
const NEVER_AS_LINES: [&str; 13] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "via",
    "x-request-id",
    "cdn-loop",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else { return };
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(len)) = req.parse(input) else { return };
    let Some(spans) = RawHeaders::lines(input, req.headers) else { return };
    let mut lines = RawHeaders::new(Bytes::copy_from_slice(&input[..len]), spans);
    let received: Vec<(Vec<u8>, Vec<u8>)> = lines.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
    if !lines_forwardable(&lines) {
        let mut map = hyper::HeaderMap::new();
        lines.append_to(&mut map);
        assert_eq!(map.len(), received.len());
        return;
    }
    let drop_host = sel & 1 == 1;
    strip_request_lines(&mut lines, drop_host);
    let is = |n: &[u8], name: &str| n.eq_ignore_ascii_case(name.as_bytes());
    let kept: Vec<(Vec<u8>, Vec<u8>)> = received
        .iter()
        .filter(|(n, _)| {
            !(is(n, "connection")
                || is(n, "keep-alive")
                || is(n, "transfer-encoding")
                || is(n, "expect")
                || (drop_host && is(n, "host")))
        })
        .cloned()
        .collect();
    for (n, _) in &kept {
        assert!(
            !NEVER_AS_LINES.iter().any(|never| is(n, never)),
            "{:?} went out as a line",
            String::from_utf8_lossy(n)
        );
    }
    assert_eq!(lines.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>(), kept);
    assert_eq!(written_and_parsed_back(&lines), kept);
});
