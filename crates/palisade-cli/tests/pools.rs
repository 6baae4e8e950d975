//! End-to-end: origin pools. Balancing, active health checks, passive ejection, retries, timeouts
//! and the error pages a client sees when origins fail.
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

async fn spread(e: &EdgeProc, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let c = client();
    let mut m = HashMap::new();
    for _ in 0..n {
        let mut hs = vec![("host", "site.test")];
        hs.extend_from_slice(headers);
        let (s, h, b) = request_full(&c, "GET", &format!("http://{}/1k", e.http()), &hs, Vec::new()).await;
        assert_eq!(s, 200, "{b}");
        *m.entry(origin_name(&h)).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_and_the_other_balancers() {
    let (a, b, c) = (origin("a"), origin("b"), origin("c"));
    let zone = |extra: &str| {
        format!(
            "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.test\"]\n{extra}\norigins = [{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
            listen_section(false),
            a.addr,
            b.addr,
            c.addr
        )
    };
    let e = edge(&zone(""));
    // One kept-alive connection, so one edge worker: each worker runs its own balancer (as
    // nginx's workers do), and the weights hold exactly within each.
    let mut conn = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    let mut m: HashMap<String, usize> = HashMap::new();
    for _ in 0..50 {
        let (s, body) = get_on(&mut conn, "site.test", "/__origin/stats").await;
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        *m.entry(v["name"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!((m["a"], m["b"], m["c"]), (30, 10, 10), "{m:?}");

    // Consistent hashing by header: one user always lands on one origin; users spread out.
    let e = edge(&zone("balance = \"consistent_hash\"\nhash_key = \"header:x-user\""));
    let mut owners = HashMap::new();
    // 100 users: with 40 ring points per origin, an origin's share is rarely under 15 %, and
    // 0.85^100 makes "no user on it" a non-event (30 users left it at about 1 in 1000 runs).
    for user in 0..100 {
        let u = format!("user-{user}");
        let m = spread(&e, 3, &[("x-user", &u)]).await;
        assert_eq!(m.len(), 1, "{u} moved between origins: {m:?}");
        owners.insert(u, m.into_keys().next().unwrap());
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert_eq!(distinct.len(), 3, "100 users all hashed to {distinct:?}");

    // Least connections and power-of-two-choices serve from every origin.
    for balance in ["least_connections", "power_of_two_choices"] {
        let e = edge(&zone(&format!("balance = \"{balance}\"")));
        let m = spread(&e, 60, &[]).await;
        assert_eq!(m.len(), 3, "{balance}: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_steers_around_a_busy_origin() {
    let (a, b) = (origin("a"), origin("b"));
    let e = edge(&zone_config(&["site.test"], &[a.addr, b.addr], "balance = \"least_connections\""));
    let url = format!("http://{}/slow?ms=1500", e.http());
    let slow =
        tokio::spawn(async move { request_full(&client(), "GET", &url, &[("host", "site.test")], Vec::new()).await });
    let requests = |addr| async move { origin_stats(addr).await["requests"].as_u64().unwrap() };
    // The two stats calls count themselves: 3 means the slow request has reached an origin.
    eventually("slow request in flight", Duration::from_secs(5), || async {
        requests(a.addr).await + requests(b.addr).await >= 3
    })
    .await;
    // One request is in flight on the busy origin: every fast request goes to the other one.
    let m = spread(&e, 10, &[]).await;
    assert_eq!(m.len(), 1, "{m:?}");
    let (s, h, _) = slow.await.unwrap();
    assert_eq!(s, 200);
    assert!(!m.contains_key(&origin_name(&h)), "fast requests went to the busy origin: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_an_origin_out_and_bring_it_back() {
    let (a, b) = (origin("a"), origin("b"));
    let e = edge(&zone_config(
        &["site.test"],
        &[a.addr, b.addr],
        "[zones.health_check]\npath = \"/health\"\ninterval_ms = 100\ntimeout_ms = 500\nhealthy_threshold = 2\nunhealthy_threshold = 2",
    ));
    assert_eq!(spread(&e, 10, &[]).await.len(), 2);
    let (s, _) = request("POST", &format!("http://{}/__origin/health/fail", b.addr), &[], Vec::new()).await;
    assert_eq!(s, 200);
    let series = format!("palisade_origin_healthy{{zone=\"site\",origin=\"{}\"}}", b.addr);
    eventually("b marked unhealthy", Duration::from_secs(5), || async { e.metric(&series).await == Some(0.0) }).await;
    let m = spread(&e, 20, &[]).await;
    assert_eq!(m.get("a"), Some(&20), "{m:?}");
    request("POST", &format!("http://{}/__origin/health/ok", b.addr), &[], Vec::new()).await;
    eventually("b healthy again", Duration::from_secs(5), || async { e.metric(&series).await == Some(1.0) }).await;
    assert_eq!(spread(&e, 10, &[]).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_origin_is_retried_around_then_ejected() {
    let a = origin("a");
    let (_held, dead_addr) = dead_origin();
    let e = edge(&zone_config(
        &["site.test"],
        &[a.addr, dead_addr],
        "[zones.passive_health]\nconsecutive_failures = 3\nejection_ms = 60000\n[zones.retries]\nattempts = 1",
    ));
    // Idempotent requests without a body never fail: a connect failure is retried on `a`.
    let m = spread(&e, 20, &[]).await;
    assert_eq!(m.get("a"), Some(&20), "{m:?}");
    let retries = e.metric("palisade_upstream_retries_total{zone=\"site\"}").await.unwrap();
    assert!(retries >= 3.0, "retries: {retries}");
    let ejections = format!("palisade_origin_ejections_total{{zone=\"site\",origin=\"{dead_addr}\"}}");
    assert_eq!(e.metric(&ejections).await, Some(1.0));
    let healthy = format!("palisade_origin_healthy{{zone=\"site\",origin=\"{dead_addr}\"}}");
    assert_eq!(e.metric(&healthy).await, Some(0.0));
    // Ejected: no more connection attempts to the dead origin.
    let failures = format!("palisade_origin_connect_failures_total{{zone=\"site\",origin=\"{dead_addr}\"}}");
    let before = e.metric(&failures).await;
    spread(&e, 20, &[]).await;
    assert_eq!(e.metric(&failures).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_idempotent_requests_are_not_retried_and_errors_have_clean_pages() {
    let (_held, dead_addr) = dead_origin();
    let a = origin("a");
    let e =
        edge(&zone_config(&["site.test"], &[dead_addr, a.addr], "[zones.passive_health]\nconsecutive_failures = 0"));
    // POST with a body hits the dead origin on one of two round-robin picks (each worker keeps
    // its own cursor, as nginx's workers do) and is not replayed.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (s, body) =
            request("POST", &format!("http://{}/echo", e.http()), &[("host", "site.test")], b"data".to_vec()).await;
        if s == 502 {
            assert!(body.contains("502 Bad gateway") && body.contains("Request ID"), "{body}");
            assert!(!body.contains(&dead_addr.to_string()), "error page leaks the origin address");
        }
        statuses.push(s);
    }
    let answered = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 502), "{statuses:?}");
    assert!(answered > 0 && answered < 8, "both origins were picked: {statuses:?}");
    // The live origin saw exactly the answered POSTs (and this stats request, which counts
    // itself): none of the failed ones was replayed there.
    assert_eq!(origin_stats(a.addr).await["requests"].as_u64(), Some(answered + 1));

    // Every origin down: 502, quickly.
    let e = edge(&zone_config(&["site.test"], &[dead_addr], ""));
    let t = Instant::now();
    let (s, _, _) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(s, 502);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_and_total_timeouts() {
    let o = origin("o");
    let e = edge(&zone_config(
        &["site.test"],
        &[o.addr],
        "[zones.timeouts]\nresponse_header_ms = 300\ntotal_ms = 1000\n[zones.passive_health]\nconsecutive_failures = 0",
    ));
    let t = Instant::now();
    let (s, _, body) = get_host(e.http(), "site.test", "/slow?ms=3000").await;
    assert_eq!(s, 504, "{body}");
    assert!(body.contains("Gateway timeout"));
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    // Headers arrive in time, but the body would take 3 s: cut at total_ms.
    let t = Instant::now();
    let out =
        raw(e.http(), b"GET /drip?chunks=30&ms=100 HTTP/1.1\r\nHost: site.test\r\n\r\n", Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("chunk 3") && !out.contains("chunk 29"), "{out}");
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
    assert!(
        e.metric(&format!("palisade_origin_timeouts_total{{zone=\"site\",origin=\"{}\"}}", o.addr)).await >= Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_gives_504_and_idempotent_bodies_are_retried() {
    // An origin that never completes a handshake: a listener with a full backlog that never
    // accepts (the kernel drops further SYNs, so connects hang until our timeout).
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let black_hole = sock.listen(1).unwrap();
    let hole = black_hole.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(hole)).await
        {
            fillers.push(s);
        }
    }
    let e = edge(&zone_config(
        &["site.test"],
        &[hole],
        "[zones.timeouts]\nconnect_ms = 300\n[zones.passive_health]\nconsecutive_failures = 0",
    ));
    let t = Instant::now();
    let (s, _, body) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(s, 504, "{body}");
    assert!(t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // PUT carries a body but is idempotent: a connect failure (nothing sent) is retried elsewhere.
    let (_held, dead_addr) = dead_origin();
    let a = origin("a");
    let e =
        edge(&zone_config(&["site.test"], &[dead_addr, a.addr], "[zones.passive_health]\nconsecutive_failures = 0"));
    for _ in 0..4 {
        let (s, body) =
            request("PUT", &format!("http://{}/echo", e.http()), &[("host", "site.test")], b"payload".to_vec()).await;
        assert_eq!(s, 200, "{body}");
        assert!(body.contains("\"body_bytes\":7"), "{body}");
    }
    drop(fillers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_is_not_left_counted_against_its_origin() {
    let (a, b) = (origin("a"), origin("b"));
    let e = edge(&zone_config(&["site.test"], &[a.addr, b.addr], "balance = \"least_connections\""));
    // Start a slow request and hang up on it while the origin is still working.
    for _ in 0..1 {
        let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"GET /slow?ms=3000 HTTP/1.1\r\nHost: site.test\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    eventually("client connections closed", Duration::from_secs(5), || async {
        e.metric("palisade_connections_active").await == Some(0.0)
    })
    .await;
    // Nothing is in flight any more: least-connections spreads over both origins again.
    let m = spread(&e, 10, &[]).await;
    assert_eq!(m.len(), 2, "an origin still counts cancelled requests: {m:?}");
    // And the counts are back to zero, for the answered requests as for the cancelled one.
    for o in [a.addr, b.addr] {
        let name = format!("palisade_origin_requests_in_flight{{zone=\"site\",origin=\"{o}\"}}");
        eventually("origin requests in flight back to 0", Duration::from_secs(5), || async {
            e.metric(&name).await == Some(0.0)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_reused_then_closed_after_the_idle_timeout() {
    let o = origin("o");
    let e = edge(&format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.test\"]\norigins = [{{ address = \"{}\" }}]\n[zones.timeouts]\nidle_ms = 300\n",
        listen_section(false),
        o.addr
    ));
    // One client connection, so one edge worker and one pooled origin connection.
    let mut conn = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    for _ in 0..5 {
        assert_eq!(get_on(&mut conn, "site.test", "/1k").await.0, 200);
    }
    let first = origin_stats(o.addr).await["connections"].as_u64().unwrap();
    assert_eq!(first, 2, "5 requests should share one origin connection (+1 for the stats call)");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get_on(&mut conn, "site.test", "/1k").await.0, 200);
    let after = origin_stats(o.addr).await["connections"].as_u64().unwrap();
    assert_eq!(after, first + 2, "after idle_ms the pooled connection is not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_5xx_eject_an_origin() {
    let (a, b) = (origin("a"), origin("b"));
    let e = edge(&zone_config(
        &["site.test"],
        &[a.addr, b.addr],
        "balance = \"consistent_hash\"\nhash_key = \"path\"\n[zones.passive_health]\nconsecutive_failures = 3\nejection_ms = 60000",
    ));
    // One path hashes to one origin; make that origin answer 500 three times in a row.
    let (_, h, _) = get_host(e.http(), "site.test", "/status/500").await;
    let bad = origin_name(&h);
    for _ in 0..2 {
        let (s, h, _) = get_host(e.http(), "site.test", "/status/500").await;
        assert_eq!((s, origin_name(&h)), (500, bad.clone()));
    }
    let bad_addr = if bad == "a" { a.addr } else { b.addr };
    let series = format!("palisade_origin_ejections_total{{zone=\"site\",origin=\"{bad_addr}\"}}");
    assert_eq!(e.metric(&series).await, Some(1.0));
    // The same path now goes to the other origin.
    let (_, h, _) = get_host(e.http(), "site.test", "/status/500").await;
    assert_ne!(origin_name(&h), bad);
}
