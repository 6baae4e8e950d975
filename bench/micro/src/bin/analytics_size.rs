//! What the control plane's analytics store costs for a fleet: `cargo run --release -p
//! palisade-microbench --bin analytics-size [NODES] [CITIES]` (default 50 nodes in 50 cities,
//! one zone). It ingests an hour of 10 s intervals from every node, each with a full set of
//! heavy hitters (20 distinct keys per kind: the worst case, whatever the request rate), then
//! downsamples it as a day later (with the upkeep every minute, as the control plane runs it),
//! and prints the rows, the bytes and the time per report; the
//! day and the month are those figures times 24 and times 720.

use std::time::Instant;

use palisade_config::analytics::{Report, Top, ZoneReport, COUNTS, TOP_K};
use palisade_control::analytics::Analytics;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().unwrap_or(50));
    let nodes = args.next().unwrap_or(50);
    let cities = args.next().unwrap_or(nodes).max(1);
    let dir = std::env::temp_dir().join(format!("palisade-analytics-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Analytics::open(&dir.join("analytics.db")).unwrap();
    let start = 1_800_000_000u64;
    let intervals = 360; // an hour of 10 s intervals
    let t = Instant::now();
    for k in 0..intervals {
        for n in 0..nodes {
            // 10k requests/s over the fleet: 10 s x 10_000 / nodes per report.
            let requests = 100_000 / nodes;
            let mut counts = vec![requests / 10; COUNTS];
            counts[0] = requests;
            let key = |kind: &str, j: usize| format!("{kind}-{n}-{k}-{j}");
            let top = Top {
                ips: (0..TOP_K).map(|j| (key("203.0.113", j), 100)).collect(),
                paths: (0..TOP_K).map(|j| (key("/path", j), 100)).collect(),
                fingerprints: (0..TOP_K).map(|j| (key("t13d", j), 100)).collect(),
            };
            let zones = [("shop".to_string(), ZoneReport { counts, top, mitigations: 0 })].into();
            let report = Report { start: start + k * 10, seconds: 10, zones };
            store.ingest(&format!("city-{}", n % cities), &report).unwrap();
        }
        // The control plane's upkeep, every minute: finished minutes keep their heaviest.
        if k % 6 == 5 {
            store.maintain(start + k * 10 + 10).unwrap();
        }
    }
    let per_report = t.elapsed().as_secs_f64() * 1e6 / (intervals * nodes) as f64;
    let (series, top, bytes) = store.size().unwrap();
    println!("{nodes} nodes in {cities} cities, one zone, one hour at 10 s:");
    println!(
        "  {series} series rows, {top} heavy-hitter rows, {:.1} MiB; {per_report:.0} us per report ingested",
        bytes as f64 / 1048576.0
    );
    println!("  a day at 10 s: about {:.0} MiB", bytes as f64 * 24.0 / 1048576.0);
    let t = Instant::now();
    store.maintain(start + 3600 + 86_400 + 120).unwrap();
    let maintain_ms = t.elapsed().as_secs_f64() * 1e3;
    let (series, top, conn) = store.size().unwrap();
    println!("downsampled (a day later): {series} series rows, {top} heavy-hitter rows, {:.2} MiB of live pages; {maintain_ms:.0} ms to downsample the hour", conn as f64 / 1048576.0);
    println!("  30 days at 1 min: about {:.0} MiB", conn as f64 * 720.0 / 1048576.0);
    let _ = std::fs::remove_dir_all(&dir);
}
