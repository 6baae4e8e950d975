//! Origin protection and automatic DDoS mitigation on a real node, with clients bound to their
//! own addresses in 127.0.0.0/8: the fair queue in front of a zone's origins serves a quiet
//! client ahead of a flood, and a concentrated surge (one address, or many addresses sending
//! the same request) gets a mitigation within two seconds that ends when the surge does.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request on a kept-alive connection; the status, or None when the connection failed.
async fn ask(s: &mut tokio::net::TcpStream, host: &str, path: &str, ua: &str) -> Option<u16> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: {ua}\r\naccept: */*\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            return text.get(9..12).and_then(|c| c.parse().ok());
        }
    }
}

/// A closed-loop flood: `conns` connections from each of `ips`, each sending `path` as fast as
/// answers come, until `stop`. Counts answers by class into (2xx, 429, 503, other, and
/// connections that ended without an answer).
fn flood(
    edge: SocketAddr,
    ips: Vec<String>,
    conns: usize,
    host: &'static str,
    path: &'static str,
    ua: &'static str,
    stop: Arc<AtomicBool>,
) -> (Arc<[AtomicU64; 5]>, Vec<tokio::task::JoinHandle<()>>) {
    let counts: Arc<[AtomicU64; 5]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for ip in ips {
        for _ in 0..conns {
            let (ip, stop, counts) = (ip.clone(), stop.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = connect_from(&ip, edge).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let Some(status) = ask(&mut s, host, path, ua).await else {
                            counts[4].fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        let i = match status {
                            200..=299 => 0,
                            429 => 1,
                            503 => 2,
                            _ => 3,
                        };
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    (counts, tasks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_queue_serves_a_quiet_client_ahead_of_a_flood() {
    let origin = origin("queue-origin");
    let config = format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{}\" }}]\n\
         [zones.concurrency]\nmax_in_flight = 2\nmax_queue = 8\nqueue_timeout_ms = 10000\n\
         [zones.ddos]\nenabled = false\n",
        listen_section(false),
        origin.addr
    );
    let e = edge(&config);
    let stop = Arc::new(AtomicBool::new(false));
    // One address floods a slow page with 20 connections: 2 at the origin, 8 waiting, the rest
    // refused at once with 503.
    let (counts, tasks) =
        flood(e.http(), vec!["127.0.0.2".into()], 20, "site.example", "/slow?ms=300", "flood/1.0", stop.clone());
    eventually("the queue is full", Duration::from_secs(10), || async {
        e.metric("palisade_queue_waiting{zone=\"site\"}").await == Some(8.0)
    })
    .await;
    assert!(e.metric("palisade_origin_in_flight{zone=\"site\"}").await == Some(2.0));

    // A quiet client asks while the queue is full: it takes the place of a flood request and is
    // served next, within about one slow answer (a first-come queue would have refused it, or
    // kept it behind 8 x 300 ms / 2 = 1.2 s of flood).
    let mut quiet = connect_from("127.0.0.3", e.http()).await.unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(ask(&mut quiet, "site.example", "/", "browser/1.0").await, Some(200));
        assert!(t.elapsed() < Duration::from_millis(900), "the quiet client waited {:?}", t.elapsed());
    }
    assert!(e.metric("palisade_queue_pushed_out_total{zone=\"site\"}").await.unwrap_or(0.0) >= 3.0);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let refused = counts[2].load(Ordering::Relaxed);
    assert!(refused > 0, "the flood was never refused early");
    assert!(e.metric("palisade_queue_full_total{zone=\"site\"}").await.unwrap_or(0.0) > 0.0);
    // Every slot came back.
    eventually("the slots are released", Duration::from_secs(5), || async {
        e.metric("palisade_origin_in_flight{zone=\"site\"}").await == Some(0.0)
            && e.metric("palisade_queue_waiting{zone=\"site\"}").await == Some(0.0)
    })
    .await;
}

async fn mitigations(e: &EdgeProc) -> Vec<serde_json::Value> {
    let (status, body) = e.admin_json("GET", "/ddos", "").await;
    assert_eq!(status, 200);
    body["result"]["zones"][0]["mitigations"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concentrated_surge_is_mitigated_within_two_seconds_and_released_after_it() {
    let origin = origin("ddos-origin");
    let config = format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{}\" }}]\n\
         [zones.ddos]\nmin_rps = 100\nlearn_s = 1\nhold_s = 2\n",
        listen_section(false),
        origin.addr
    );
    let e = edge(&config);
    // A legitimate client, all along, from its own address.
    let legit_stop = Arc::new(AtomicBool::new(false));
    let legit_fail = Arc::new(AtomicU64::new(0));
    let legit_ok = Arc::new(AtomicU64::new(0));
    let legit = {
        let (stop, fail, ok, addr) = (legit_stop.clone(), legit_fail.clone(), legit_ok.clone(), e.http());
        tokio::spawn(async move {
            let mut s = connect_from("127.0.0.5", addr).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                match ask(&mut s, "site.example", "/", "Mozilla/5.0 browser").await {
                    Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => fail.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    eventually("the detector has learned", Duration::from_secs(10), || async {
        let (_, body) = e.admin_json("GET", "/ddos", "").await;
        body["result"]["zones"][0]["learning"] == false
    })
    .await;

    for (phase, ips) in [
        ("one address", vec!["127.0.0.7".to_string()]),
        ("many addresses, one fingerprint", (10..60).map(|i| format!("127.0.1.{i}")).collect()),
    ] {
        let conns = if ips.len() == 1 { 32 } else { 1 };
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let (counts, tasks) = flood(e.http(), ips, conns, "site.example", "/bytes/16", "attack-tool/2.1", stop.clone());
        eventually(&format!("{phase}: a mitigation"), Duration::from_secs(2), || async {
            counts[1].load(Ordering::Relaxed) > 0
        })
        .await;
        let took = started.elapsed();
        let active = mitigations(&e).await;
        assert!(!active.is_empty(), "{phase}: /ddos lists no mitigation");
        let sample = active.iter().find_map(|m| m["sample"].as_str()).unwrap_or_default().to_string();
        assert!(sample.contains("attack-tool/2.1") && sample.contains("/bytes/16"), "{phase}: {sample}");
        println!("{phase}: mitigated in {took:?}: {active:?}");
        // While it lasts, the flood is refused and the legitimate client is served.
        let before = counts[1].load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let refused = counts[1].load(Ordering::Relaxed) - before;
        assert!(refused > 100, "{phase}: only {refused} refused");
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // It ends hold_s after the surge does, and the same request is served again.
        eventually(&format!("{phase}: the mitigation ends"), Duration::from_secs(6), || async {
            mitigations(&e).await.is_empty()
        })
        .await;
        let mut s = connect_from("127.0.0.7", e.http()).await.unwrap();
        assert_eq!(ask(&mut s, "site.example", "/bytes/16", "attack-tool/2.1").await, Some(200), "{phase}");
    }
    assert!(e.metric("palisade_ddos_mitigations_total{zone=\"site\"}").await.unwrap_or(0.0) >= 2.0);
    assert!(e.metric("palisade_ddos_refused_total{zone=\"site\"}").await.unwrap_or(0.0) > 200.0);

    // The kill switch: the module is off on the next request, so a surge goes unmitigated.
    let (status, _) = e.admin_json("POST", "/killswitches/ddos/off", "").await;
    assert_eq!(status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let (counts, tasks) = flood(
        e.http(),
        vec!["127.0.0.8".to_string()],
        32,
        "site.example",
        "/bytes/16",
        "attack-tool/2.1",
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    assert_eq!(counts[1].load(Ordering::Relaxed), 0, "a switched-off module refused requests");
    assert!(counts[0].load(Ordering::Relaxed) > 300);

    legit_stop.store(true, Ordering::Relaxed);
    legit.await.unwrap();
    assert_eq!(legit_fail.load(Ordering::Relaxed), 0, "the legitimate client had failures");
    assert!(legit_ok.load(Ordering::Relaxed) > 50);
}

/// Whether a connection from `src` is closed by the node (a reset or an end) before it sends
/// anything, within a second, without a byte.
async fn closed_unasked(src: &str, edge: SocketAddr) -> bool {
    let Ok(mut s) = connect_from(src, edge).await else { return true };
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(1), s.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// An HTTP/2 (prior knowledge) connection from `src`.
async fn h2_from(
    src: &str,
    edge: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let s = connect_from(src, edge).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// One HTTP/2 request; its status, or None when its stream (or the connection) failed.
async fn h2_ask(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> Option<u16> {
    let req = hyper::Request::get("http://site.example/")
        .header("user-agent", "Mozilla/5.0 browser")
        .body(http_body_util::Empty::new())
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req)).await.ok()?.ok()?;
    Some(resp.status().as_u16())
}

/// `action = "drop"`: a flood's requests get no answer (the connection is reset), and once its
/// source is mitigated, its new connections are reset as soon as they are accepted, before a
/// byte is read. Those attempts keep the mitigation alive while the flood goes on; the kill
/// switch lets the source in on its next connection; other clients never notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_mitigation_resets_the_flood_and_its_new_connections_at_accept() {
    let origin = origin("ddos-drop-origin");
    let config = format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{}\" }}]\n\
         [zones.ddos]\nmin_rps = 100\nlearn_s = 1\nhold_s = 2\naction = \"drop\"\n",
        listen_section(false),
        origin.addr
    );
    let e = edge(&config);
    let legit_stop = Arc::new(AtomicBool::new(false));
    let legit_fail = Arc::new(AtomicU64::new(0));
    let legit = {
        let (stop, fail, addr) = (legit_stop.clone(), legit_fail.clone(), e.http());
        tokio::spawn(async move {
            let mut s = connect_from("127.0.0.5", addr).await.unwrap();
            let mut ok = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match ask(&mut s, "site.example", "/", "Mozilla/5.0 browser").await {
                    Some(200) => ok += 1,
                    _ => {
                        fail.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ok
        })
    };
    eventually("the detector has learned", Duration::from_secs(10), || async {
        let (_, body) = e.admin_json("GET", "/ddos", "").await;
        body["result"]["zones"][0]["learning"] == false
    })
    .await;

    // An HTTP/2 connection the source opened before its flood: a dropped request's stream is reset.
    let mut h2 = h2_from("127.0.0.7", e.http()).await;
    assert_eq!(h2_ask(&mut h2).await, Some(200));

    let stop = Arc::new(AtomicBool::new(false));
    let (counts, tasks) =
        flood(e.http(), vec!["127.0.0.7".into()], 32, "site.example", "/bytes/16", "attack-tool/2.1", stop.clone());
    eventually("the flood is dropped", Duration::from_secs(2), || async {
        e.metric("palisade_connections_rejected_total{reason=\"ddos_drop\"}").await.unwrap_or(0.0) > 0.0
    })
    .await;
    let active = mitigations(&e).await;
    assert!(
        active.iter().any(|m| m["kind"] == "source" && m["target"] == "127.0.0.7" && m["action"] == "drop"),
        "{active:?}"
    );
    let (_, body) = e.admin_json("GET", "/ddos", "").await;
    assert_eq!(body["result"]["dropped_at_accept"]["sources"], 1, "{body}");
    // The same request from another address is dropped too (its fingerprint is mitigated), at
    // the request: the connection is accepted, and reset after the request, with no answer.
    assert!(active.iter().any(|m| m["kind"] == "fingerprint" && m["action"] == "drop"), "{active:?}");
    let mut s = connect_from("127.0.0.9", e.http()).await.unwrap();
    assert_eq!(ask(&mut s, "site.example", "/bytes/16", "attack-tool/2.1").await, None);
    let mut s = connect_from("127.0.0.9", e.http()).await.unwrap();
    assert_eq!(ask(&mut s, "site.example", "/bytes/16", "Mozilla/5.0 browser").await, Some(200));
    assert_eq!(h2_ask(&mut h2).await, None, "an HTTP/2 request from the mitigated source was answered");
    // A new connection from the source is reset unasked; the flood gets no answers at all now.
    assert!(closed_unasked("127.0.0.7", e.http()).await, "a mitigated source's connection was kept");
    let answered = counts.iter().take(4).map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
    let unanswered = counts[4].load(Ordering::Relaxed);
    // Past hold_s, the attempts alone keep the mitigation in force.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered_since = counts.iter().take(4).map(|c| c.load(Ordering::Relaxed)).sum::<u64>() - answered;
    assert!(answered_since <= 1, "{answered_since} flood requests were answered under the mitigation");
    assert!(counts[4].load(Ordering::Relaxed) - unanswered > 200, "the flood stopped trying?");
    // (The fingerprint's mitigation sees no more of the flood's requests, and ends.)
    assert!(mitigations(&e).await.iter().any(|m| m["target"] == "127.0.0.7"), "the mitigation ended mid-flood");

    // The kill switch: the source's next connection is served, though the mitigation stands.
    let (status, _) = e.admin_json("POST", "/killswitches/ddos/off", "").await;
    assert_eq!(status, 200);
    let mut s = connect_from("127.0.0.7", e.http()).await.unwrap();
    assert_eq!(ask(&mut s, "site.example", "/", "Mozilla/5.0 browser").await, Some(200));
    let (status, _) = e.admin_json("POST", "/killswitches/ddos/release", "").await;
    assert_eq!(status, 200);
    assert!(closed_unasked("127.0.0.7", e.http()).await, "released, the switch lets the mitigation work again");

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    eventually("the mitigation ends", Duration::from_secs(8), || async { mitigations(&e).await.is_empty() }).await;
    let (_, body) = e.admin_json("GET", "/ddos", "").await;
    assert_eq!(body["result"]["dropped_at_accept"]["sources"], 0, "{body}");
    let mut s = connect_from("127.0.0.7", e.http()).await.unwrap();
    assert_eq!(ask(&mut s, "site.example", "/bytes/16", "attack-tool/2.1").await, Some(200));
    assert!(e.metric("palisade_ddos_refused_total{zone=\"site\"}").await.unwrap_or(0.0) > 200.0);

    legit_stop.store(true, Ordering::Relaxed);
    let ok = legit.await.unwrap();
    assert_eq!(legit_fail.load(Ordering::Relaxed), 0, "the legitimate client had failures");
    assert!(ok > 50);
}

/// Every security module beside the others, each with its action in force, and each kill switch
/// in turn: a switch turns its own module off on the next request and changes nothing else, and
/// released, everything is as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kill_switch_turns_off_its_module_and_nothing_else() {
    const FAULT: &str = "x-fault-matrix-91c2";
    let origin = origin("matrix-origin");
    let dir = temp_dir("matrix");
    let list = dir.join("deny.txt");
    std::fs::write(&list, "127.0.0.66/32\n").unwrap();
    let hash = palisade_config::content_hash(b"127.0.0.66/32\n");
    let config = format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{}\" }}]\n\
         ip_deny = \"deny\"\nfault = {{ header = \"{FAULT}\" }}\n\
         [zones.modules.fault]\nfailure_policy = \"fail_closed\"\n\
         [[zones.rules]]\nname = \"trusted\"\nexpression = 'http.request.headers[\"x-trusted\"] eq \"yes\"'\naction = \"allow\"\n\
         [[zones.rules]]\nname = \"blocked-page\"\nexpression = 'http.request.uri.path eq \"/bytes/3\"'\naction = \"block\"\n\
         [[zones.rules]]\nname = \"watch\"\nexpression = 'http.request.uri.path eq \"/bytes/4\"'\naction = \"log\"\n\
         [[zones.rules]]\nname = \"gate\"\nexpression = 'http.request.uri.path eq \"/bytes/5\"'\naction = \"challenge\"\n\
         [[zones.rate_limits]]\nname = \"hot\"\nexpression = 'http.request.headers[\"x-rl\"] eq \"hot\"'\n\
         characteristics = [\"header:x-rl\"]\nperiod_s = 3600\nrequests = 1\n\
         [[zones.rate_limits]]\nname = \"warm\"\nexpression = 'http.request.headers[\"x-rl\"] eq \"warm\"'\n\
         characteristics = [\"header:x-rl\"]\nperiod_s = 3600\nrequests = 1\naction = \"challenge\"\n\
         \n[[artifacts]]\nname = \"deny\"\nkind = \"ip_list\"\nsha256 = \"{hash}\"\nfile = \"{}\"\n",
        listen_section(false),
        origin.addr,
        list.display()
    );
    let path = dir.join("palisade.toml");
    std::fs::write(&path, config).unwrap();
    let e = edge_with(dir.clone(), path, &[]);
    let addr = e.http();
    // (module whose action it shows, source address, path, extra header)
    type Probe = (&'static str, &'static str, &'static str, Option<(&'static str, &'static str)>);
    let probes: [Probe; 9] = [
        ("none", "127.0.0.2", "/", None),
        ("ip_lists", "127.0.0.66", "/", None),
        ("firewall", "127.0.0.2", "/bytes/3", None),
        ("none", "127.0.0.2", "/bytes/3", Some(("x-trusted", "yes"))),
        ("none", "127.0.0.2", "/bytes/4", None),
        ("firewall", "127.0.0.2", "/bytes/5", None),
        ("rate_limits", "127.0.0.2", "/", Some(("x-rl", "hot"))),
        ("rate_limits", "127.0.0.2", "/", Some(("x-rl", "warm"))),
        ("fault", "127.0.0.2", "/", Some((FAULT, "error"))),
    ];
    let run = || async {
        let mut out = Vec::new();
        for (_, src, path, header) in probes {
            let mut s = connect_from(src, addr).await.unwrap();
            let extra = header.map(|(k, v)| format!("{k}: {v}\r\n")).unwrap_or_default();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: site.example\r\n{extra}connection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let text = read_all(&mut s, Duration::from_secs(5)).await;
            let status = text.get(9..12).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
            // A challenge page is told apart from a block.
            let challenged = text.to_ascii_lowercase().contains("palisade-mitigated: challenge");
            out.push(if challenged { 1403 } else { status });
        }
        out
    };
    // The rate limits' one request for each key is spent first.
    run().await;
    let baseline = run().await;
    assert_eq!(baseline, vec![200, 403, 403, 200, 200, 1403, 429, 1403, 503], "every module acts (1403: challenged)");
    // The answer to a challenge meets the early drop too: a denied address gets the plain 403.
    let mut s = connect_from("127.0.0.66", addr).await.unwrap();
    s.write_all(b"GET /.palisade/challenge?t=x HTTP/1.1\r\nhost: site.example\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 403") && !text.to_ascii_lowercase().contains("palisade-mitigated"), "{text}");
    for switch in ["ip_lists", "firewall", "rate_limits", "fault", "ddos"] {
        let (s, _) = e.admin_json("POST", &format!("/killswitches/{switch}/off"), "").await;
        assert_eq!(s, 200, "{switch}");
        let off = run().await;
        for (i, (module, _, path, _)) in probes.iter().enumerate() {
            let expected = if *module == switch { 200 } else { baseline[i] };
            assert_eq!(off[i], expected, "{switch} off: probe {i} ({module} {path})");
        }
        e.admin_json("POST", &format!("/killswitches/{switch}/release"), "").await;
        assert_eq!(run().await, baseline, "{switch} released");
    }
    let m = e.metrics().await;
    assert!(m.contains("palisade_rule_matches_total{zone=\"site\",rule=\"watch\"}"), "the log rule counted");
}

/// Accepting stays fair: many connections from one address (under its own limit) cannot take
/// the node's last places. The last tenth of `max_connections` goes only to addresses holding
/// fewer than the average, so a newcomer still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_connection_places_are_kept_for_quiet_addresses() {
    let origin = origin("accept-origin");
    let e = edge(&format!(
        "[limits]\nmax_connections = 20\nmax_connections_per_ip = 20\n{}",
        zone_config(&["site.example"], &[origin.addr], "")
    ));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.8", e.http()).await.unwrap();
        match ask(&mut s, "site.example", "/", "hog/1.0").await {
            Some(200) => held.push(s),
            _ => refused += 1,
        }
    }
    // 18 of 20 places: at 18 the address holds the average (18 / 1 address) and is refused.
    assert_eq!((held.len(), refused), (18, 2));
    let mut newcomer = connect_from("127.0.0.9", e.http()).await.unwrap();
    assert_eq!(ask(&mut newcomer, "site.example", "/", "browser/1.0").await, Some(200));
    assert_eq!(e.metric("palisade_connections_rejected_total{reason=\"fair_share\"}").await, Some(2.0));
    drop(held);
}

/// A rate limit counted per HTTP fingerprint: one tool's requests share a budget whatever their
/// address (and whatever the digits in their path), another tool has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_can_count_per_http_fingerprint() {
    let origin = origin("fp-origin");
    let e = edge(&zone_config(
        &["site.example"],
        &[origin.addr],
        "[[zones.rate_limits]]\nname = \"per-tool\"\ncharacteristics = [\"http.fingerprint\"]\nperiod_s = 60\nrequests = 2\n",
    ));
    let mut statuses = Vec::new();
    for (src, path, ua) in [
        ("127.0.0.21", "/bytes/16", "tool-a/1.0"),
        ("127.0.0.22", "/bytes/17", "tool-a/1.0"),
        ("127.0.0.23", "/bytes/18", "tool-a/1.0"),
        ("127.0.0.23", "/bytes/18", "tool-b/1.0"),
    ] {
        let mut s = connect_from(src, e.http()).await.unwrap();
        statuses.push(ask(&mut s, "site.example", path, ua).await);
    }
    assert_eq!(statuses, [Some(200), Some(200), Some(429), Some(200)]);
}
