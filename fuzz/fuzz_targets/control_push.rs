//! Any bytes as a push to the control plane: the body decoder answers a request or a 400, never
//! panics, and keeps its limits; a config it would store diffs cleanly against itself and
//! against another document. The same bytes go through every other request body's decoder
//! (node hello, answer, report, analytics, assignment, rollout, kill switch) and the stage parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

const OTHER: &str = "[listen]\nhttp = \"127.0.0.1:8080\"\n[[zones]]\nname = \"a\"\nhostnames = [\"a.example\"]\norigins = [{ address = \"10.0.0.1:80\" }]\n";

fuzz_target!(|data: &[u8]| {
    use palisade_control::bodies::*;
    let _ = serde_json::from_slice::<Hello>(data);
    let _ = serde_json::from_slice::<Answer>(data);
    let _ = serde_json::from_slice::<Assign>(data);
    let _ = serde_json::from_slice::<Report>(data);
    let _ = serde_json::from_slice::<Engage>(data);
    let _ = serde_json::from_slice::<Ack>(data);
    if let Ok(report) = serde_json::from_slice::<palisade_config::analytics::Report>(data) {
        if report.check().is_ok() {
            for z in report.zones.values() {
                assert_eq!(z.counts.len(), palisade_config::analytics::COUNTS);
                let _ = palisade_config::analytics::latency_quantile(&z.counts, 0.99);
            }
        }
    }
    if let Ok(start) = serde_json::from_slice::<Start>(data) {
        for stage in start.stages.iter().flatten() {
            let _ = palisade_control::rollout::parse_stage(stage);
        }
    }
    match palisade_control::api::parse_push(data) {
        Ok(req) => {
            assert!(!req.message.trim().is_empty() && req.message.len() <= palisade_control::api::MAX_MESSAGE_BYTES);
            assert!(palisade_control::store::KINDS.contains(&req.kind.as_str()));
            if palisade_config::load(req.content.as_bytes()).is_ok() {
                assert!(palisade_control::diff::diff(&req.content, &req.content).unwrap().is_empty());
                let _ = palisade_control::diff::diff(&req.content, OTHER).unwrap();
                let _ = palisade_control::diff::diff(OTHER, &req.content).unwrap();
            }
        }
        Err((status, _)) => assert_eq!(status.as_u16(), 400),
    }
});
