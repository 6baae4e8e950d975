//! Any text into the firewall rule parser: it returns an expression or an error with a column
//! inside the input (or just past it), never panics; what it accepts evaluates without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_config::rules::{parse, RequestData};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text) {
        Ok(e) => {
            let req = RequestData::get("a.example", "/a?b=c", std::net::IpAddr::from([127, 0, 0, 1])).header("x", "y");
            let _ = e.eval(&req);
        }
        Err(err) => assert!(err.column >= 1 && err.column <= text.len() + 1, "{err}"),
    }
});
