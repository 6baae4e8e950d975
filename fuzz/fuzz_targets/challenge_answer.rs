//! Any query string and cookie sent to the challenge's answer path: no panic; a clearance only
//! for an answer that did the work (random bytes never do), and a way back that stays on the
//! site; a random cookie is never a clearance.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_config::ChallengeSettings;
use palisade_edge::challenge::{answer, cleared, Answer, Keys};
use palisade_edge::modules::{Headers, RequestView};

struct Cookie<'a>(&'a [u8]);

impl Headers for Cookie<'_> {
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        (name == "cookie").then_some(self.0)
    }
    fn names(&self, _: &mut dyn FnMut(&[u8])) {}
}

fuzz_target!(|data: &[u8]| {
    static KEYS: OnceLock<Option<Keys>> = OnceLock::new();
    let Some(keys) = KEYS.get_or_init(|| Keys::random().ok()).as_ref() else { return };
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (query, cookie) = data.split_at(split);
    let Ok(query) = std::str::from_utf8(query) else { return };
    let Ok(uri) = format!("{}?{query}", palisade_edge::challenge::PATH).parse::<hyper::Uri>() else { return };
    let method = hyper::Method::GET;
    let headers = Cookie(cookie);
    let req = RequestView::plain(std::net::IpAddr::from([192, 0, 2, 1]), &method, &uri, &headers);
    assert!(!cleared(keys, "z", &req));
    let (resp, how) = answer(keys, "z", &ChallengeSettings::default(), &req, "id");
    assert!(matches!(how, Answer::Failed), "no token of this key in random bytes");
    assert_eq!(resp.status(), 403);
});
