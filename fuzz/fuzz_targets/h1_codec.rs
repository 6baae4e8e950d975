//! Any bytes as an origin's HTTP/1.1 answer: response heads are parsed (1xx skipped), then the
//! body is decoded with the framing the head announced, read in fuzzer-chosen pieces. Nothing
//! may panic, every header line kept as received also goes into a header map (as HTTP/2
//! clients get them) and, written for an HTTP/1.1 client, parses back to the same lines; the
//! decoded body is never longer than the bytes that came in.
#![no_main]

use bytes::BytesMut;
use hyper::Method;
use libfuzzer_sys::fuzz_target;
use palisade_edge::codec::BodyReader;
use palisade_edge::upstream::{parse_response_head, Head};
use palisade_fuzz::{written_and_parsed_back, Trickle};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else { return };
    let method = if sel & 1 == 0 { Method::GET } else { Method::HEAD };
    let mut buf = BytesMut::from(input);
    let framing = loop {
        match parse_response_head(&mut buf, &method) {
            Ok(Some(Head::Informational)) => continue,
            Ok(Some(Head::Final(_, lines, framing, _))) => {
                let mut map = hyper::HeaderMap::new();
                lines.append_to(&mut map);
                assert_eq!(map.len(), lines.iter().count());
                let received: Vec<(Vec<u8>, Vec<u8>)> = lines.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
                assert_eq!(written_and_parsed_back(&lines), received);
                break framing;
            }
            Ok(None) | Err(_) => return,
        }
    };
    let rest = buf.split().to_vec();
    let total = rest.len();
    let mut io = Trickle::new(rest, usize::from(sel >> 1));
    let mut reader = BodyReader::new(framing, 1024, 4096);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let decoded = rt.block_on(async {
        let mut decoded = 0usize;
        while let Some(piece) = std::future::poll_fn(|cx| reader.poll_next(cx, &mut io, &mut buf)).await {
            match piece {
                Ok(b) => decoded += b.len(),
                Err(_) => break,
            }
        }
        decoded
    });
    assert!(decoded <= total);
});
