//! The README's first command, as a new user runs it: `palisade demo` serves the demo site
//! through the edge, with metrics, and stops cleanly on Ctrl-C.
mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_site_through_the_edge() {
    let mut p = Proc::spawn(&["demo", "--port", "0", "--admin-port", "0"]);
    let line = p.wait_line("palisade edge ready");
    let addr = |key: &str| -> std::net::SocketAddr {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).unwrap().parse().unwrap()
    };
    let (http, admin) = (addr("http"), addr("admin"));
    let site = p.wait_line("Site through the edge");
    assert!(site.contains(&format!("http://127.0.0.1:{}/", http.port())), "{site}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let (s, h, body) = request_full(&client(), "GET", &format!("http://{http}/"), &[], Vec::new()).await;
        assert_eq!(s, 200);
        assert!(body.contains("Hello from the demo origin"), "{body}");
        assert_eq!(h.get("via").unwrap(), "1.1 demo-edge");
        seen.insert(origin_name(&h));
    }
    assert_eq!(seen.len(), 2, "both demo origins serve: {seen:?}");
    let (s, metrics) = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(s, 200);
    assert!(metrics.contains("palisade_requests_total{zone=\"demo\",status_class=\"2xx\""), "{metrics}");
    let config = p.wait_line("Config file:");
    let file = config.split_whitespace().find(|w| w.ends_with("palisade.toml")).unwrap().to_string();
    assert!(std::path::Path::new(&file).exists(), "{config}");
    p.signal("INT");
    assert!(p.wait_exit(Duration::from_secs(20)).success());
    // Its scratch directory (config, last-known-good) goes with it.
    assert!(!std::path::Path::new(&file).parent().unwrap().exists(), "{file} left behind");
}
