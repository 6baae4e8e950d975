//! End-to-end: configuration as untrusted input over a node's life. Validation from the CLI,
//! reloads (good, bad, under load), last-known-good, graceful shutdown, metrics and access logs.
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn config_validate_prints_every_problem_with_its_path() {
    let dir = temp_dir("validate");
    let good = dir.join("good.toml");
    std::fs::write(&good, zone_config(&["site.test"], &["127.0.0.1:9000".parse().unwrap()], "")).unwrap();
    let out = Command::new(bin()).args(["config", "validate", good.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (version 0, 1 zone(s), sha256 "));

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[listen]\nhttp = \"127.0.0.1:80\"\n[[zones]]\nname = \"a\"\nhostnames = [\"a.test\"]\norigins = [{ address = \"127.0.0.1:1\" }]\n\
         [[zones]]\nname = \"b\"\nhostnames = [\"b.test\"]\norigins = [{ address = \"127.0.0.1:1\" }]\n\
         [[zones]]\nname = \"c\"\nhostnames = [\"c.test\", \"A.test\"]\norigins = [{ address = \"not-an-address\", weight = 500 }]\n",
    )
    .unwrap();
    let out = Command::new(bin()).args(["config", "validate", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "3 problem(s)",
        "zones[2].hostnames[1]: duplicate hostname `a.test` (also zones[0].hostnames[0])",
        "zones[2].origins[0].address: `not-an-address` is not an ip:port address",
        "zones[2].origins[0].weight: 500 is out of range; allowed 1..=100",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[listen]\nhttp = \"127.0.0.1:80\"\nhtps = \"127.0.0.1:443\"\n").unwrap();
    let out = Command::new(bin()).args(["config", "validate", typo.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3, column 1") && err.contains("unknown field `htps`"), "{err}");

    let huge = dir.join("huge.toml");
    std::fs::write(&huge, vec![b'#'; palisade_config_limit() + 1]).unwrap();
    let out = Command::new(bin()).args(["config", "validate", huge.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("the limit is {} bytes", palisade_config_limit())));
}

fn palisade_config_limit() -> usize {
    1024 * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reloads_are_refused_and_good_ones_apply_by_signal_and_api() {
    let (a, b) = (origin("a"), origin("b"));
    let cfg = |version: u32, origin: std::net::SocketAddr| {
        format!("version = {version}\n{}", zone_config(&["site.test"], &[origin], ""))
    };
    let e = edge(&cfg(1, a.addr));
    let (_, h, _) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(origin_name(&h), "a");

    // A broken file + SIGHUP: refused, the node keeps serving version 1.
    e.write_config(&format!("{}\n[[zones]]\nname = \"site\"\n", cfg(2, b.addr)));
    e.proc.signal("HUP");
    eventually("reload rejected", Duration::from_secs(5), || async {
        e.metric("palisade_config_reloads_total{result=\"rejected\"}").await == Some(1.0)
    })
    .await;
    assert_eq!(e.metric("palisade_config_version").await, Some(1.0));
    let (_, h, _) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(origin_name(&h), "a");

    // The admin API answers with every reason, in the envelope.
    let (status, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(status, 422);
    assert_eq!(v["success"], false);
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("zones[1]"), "{v}");

    // A good file + SIGHUP: applied.
    e.write_config(&cfg(2, b.addr));
    e.proc.signal("HUP");
    eventually("version 2 active", Duration::from_secs(5), || async {
        e.metric("palisade_config_version").await == Some(2.0)
    })
    .await;
    let (_, h, _) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(origin_name(&h), "b");

    // A document pushed over the admin API; then one that changes a listener (restart-only).
    let (status, v) = e.admin_json("POST", "/config", &cfg(3, a.addr)).await;
    assert_eq!((status, &v["result"]["version"]), (200, &serde_json::json!(3)), "{v}");
    let (_, h, _) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(origin_name(&h), "a");
    let moved = cfg(4, a.addr).replace("http = \"127.0.0.1:0\"", "http = \"127.0.0.1:1\"");
    let (status, v) = e.admin_json("POST", "/config", &moved).await;
    assert_eq!(status, 422);
    assert_eq!(v["errors"][0]["path"], "listen.http", "{v}");
    let (_, v) = e.admin_json("GET", "/config", "").await;
    assert_eq!(v["result"]["version"], 3);
    assert_eq!(v["result"]["source"], "admin API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_request() {
    let (a, b) = (origin("a"), origin("b"));
    let good = |v: u32, w: u32| {
        format!(
            "version = {v}\n{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.test\"]\norigins = [{{ address = \"{}\", weight = {w} }}, {{ address = \"{}\" }}]\n",
            listen_section(false),
            a.addr,
            b.addr
        )
    };
    let e = edge(&good(1, 1));
    let url = format!("http://{}/1k", e.http());
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(4);
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (url, ok, failed) = (url.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < stop {
                let req = hyper::Request::get(&url).header("host", "site.test").body(Default::default()).unwrap();
                match c.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        use http_body_util::BodyExt;
                        if r.into_body().collect().await.is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Ten reloads during the load: good ones with changing weights, and broken ones.
    for i in 0..10u32 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let doc = if i % 2 == 0 { good(i + 2, 1 + i) } else { format!("{}\nbroken = [", good(i + 2, 1)) };
        let (status, _) = e.admin_json("POST", "/config", &doc).await;
        assert_eq!(status, if i % 2 == 0 { 200 } else { 422 });
    }
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 500, "only {ok} requests completed");
    assert_eq!(failed, 0, "{failed} requests failed during reloads ({ok} ok)");
    assert_eq!(e.metric("palisade_config_reloads_total{result=\"ok\"}").await, Some(5.0));
    assert_eq!(e.metric("palisade_config_reloads_total{result=\"rejected\"}").await, Some(5.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let o = origin("o");
    let mut e = edge(&format!("[limits]\ndrain_timeout_ms = 5000\n{}", zone_config(&["site.test"], &[o.addr], "")));
    let url = format!("http://{}/slow?ms=1000", e.http());
    let inflight =
        tokio::spawn(async move { request_full(&client(), "GET", &url, &[("host", "site.test")], Vec::new()).await });
    // In flight once the origin has it (a connection alone may not have sent its request yet);
    // the stats call counts itself, so 2 means the slow request arrived.
    eventually("request in flight", Duration::from_secs(5), || async {
        origin_stats(o.addr).await["requests"].as_u64().unwrap() >= 2
    })
    .await;
    let t = Instant::now();
    e.proc.signal("TERM");
    let (s, _, body) = inflight.await.unwrap();
    assert_eq!(s, 200, "{body}");
    let status = e.proc.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(tokio::net::TcpStream::connect(e.http()).await.is_err(), "still accepting after shutdown");
}

/// A kept-alive connection waiting for its next request is closed as soon as shutdown begins,
/// not at the drain deadline: it was woken by its worker's signal, which it registered for on
/// its first wait and did not poll again on the later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_at_once_on_shutdown() {
    use tokio::io::AsyncReadExt;
    let o = origin("o");
    let mut e = edge(&format!("[limits]\ndrain_timeout_ms = 5000\n{}", zone_config(&["site.test"], &[o.addr], "")));
    let mut s = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(get_on(&mut s, "site.test", "/").await.0, 200);
    }
    let t = Instant::now();
    e.proc.signal("TERM");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "not closed: {closed:?}");
    let status = e.proc.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_past_the_drain_deadline() {
    let o = origin("o");
    let mut e = edge(&format!("[limits]\ndrain_timeout_ms = 500\n{}", zone_config(&["site.test"], &[o.addr], "")));
    let url = format!("http://{}/slow?ms=10000", e.http());
    let _inflight = tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            request_full(&client(), "GET", &url, &[("host", "site.test")], Vec::new()),
        )
        .await;
    });
    // In flight once the origin has it (a connection alone may not have sent its request yet);
    // the stats call counts itself, so 2 means the slow request arrived.
    eventually("request in flight", Duration::from_secs(5), || async {
        origin_stats(o.addr).await["requests"].as_u64().unwrap() >= 2
    })
    .await;
    let t = Instant::now();
    e.proc.signal("TERM");
    e.proc.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_from_last_known_good_and_refuses_a_damaged_copy() {
    let o = origin("o");
    let e = edge(&format!("version = 7\n{}", zone_config(&["site.test"], &[o.addr], "")));
    let lkg = e.dir.join("state").join("last-known-good.toml");
    assert!(lkg.exists());
    let (dir, config) = (e.dir.clone(), e.config.clone());
    drop(e);

    // The config file is now broken: the node boots from last-known-good and serves.
    std::fs::write(&config, "this is not toml [").unwrap();
    let e = edge_with(dir.clone(), config.clone(), &[]);
    let (s, _, _) = get_host(e.http(), "site.test", "/").await;
    assert_eq!(s, 200);
    assert_eq!(e.metric("palisade_config_version").await, Some(7.0));
    let (_, v) = e.admin_json("GET", "/config", "").await;
    assert_eq!(v["result"]["source"], "last-known-good");
    drop(e);

    // No config file at all, only a copy given with --lkg (a new node without a control plane).
    let copy = dir.join("given-lkg.toml");
    std::fs::copy(&lkg, &copy).unwrap();
    let proc = Proc::spawn(&["edge", "--lkg", copy.to_str().unwrap()]);
    proc.wait_line("palisade edge ready");
    drop(proc);

    // A damaged copy is refused, never half-used.
    let mut bytes = std::fs::read(&lkg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x20;
    std::fs::write(&lkg, bytes).unwrap();
    let out = Command::new(bin())
        .args(["edge", "--config", config.to_str().unwrap(), "--state-dir", dir.join("state").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch") && err.contains("no usable configuration"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_log_describe_the_traffic() {
    let o = origin("o");
    let dir = temp_dir("log");
    let log = dir.join("access.log");
    let cfg = format!(
        "version = 4\n[node]\nname = \"paris-1\"\ncity = \"paris\"\n[access_log]\ntarget = \"{}\"\n{}",
        log.display(),
        zone_config(&["site.test"], &[o.addr], "")
    );
    let path = dir.join("palisade.toml");
    std::fs::write(&path, &cfg).unwrap();
    let e = edge_with(dir, path, &[]);
    for _ in 0..3 {
        assert_eq!(get_host(e.http(), "site.test", "/1k").await.0, 200);
    }
    assert_eq!(get_host(e.http(), "site.test", "/status/503").await.0, 503);
    assert_eq!(get_host(e.http(), "nowhere.test", "/").await.0, 404);
    let m = e.metrics().await;
    for want in [
        format!("palisade_requests_total{{zone=\"site\",status_class=\"2xx\",origin=\"{}\"}} 3", o.addr),
        format!("palisade_requests_total{{zone=\"site\",status_class=\"5xx\",origin=\"{}\"}} 1", o.addr),
        "palisade_unknown_host_total 1".to_string(),
        "palisade_config_version 4".to_string(),
        "palisade_request_duration_seconds_count{zone=\"site\"} 4".to_string(),
        format!("palisade_origin_healthy{{zone=\"site\",origin=\"{}\"}} 1", o.addr),
    ] {
        assert!(m.contains(&want), "missing {want}\n{m}");
    }
    assert!(m.contains("palisade_config_info{hash=\""));
    let (_, v) = e.admin_json("GET", "/healthz", "").await;
    assert_eq!(v["result"]["status"], "ok");

    eventually("access log written", Duration::from_secs(5), || async {
        std::fs::read_to_string(&log).map(|s| s.lines().count() >= 5).unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in [
        "EdgeStartTimestamp",
        "RayID",
        "ZoneName",
        "ClientIP",
        "ClientRequestMethod",
        "ClientRequestHost",
        "ClientRequestPath",
        "EdgeResponseStatus",
        "EdgeResponseBytes",
        "EdgeTimeMs",
        "OriginIP",
        "OriginResponseTimeMs",
    ] {
        assert!(first.get(key).is_some(), "no {key} in {first}");
    }
    assert_eq!(first["ClientRequestPath"], "/1k");
    assert_eq!(first["EdgeResponseBytes"], 1024);
    assert_eq!(first["ZoneName"], "site");
    // Not cacheable (no Cache-Control from the origin): looked up, missed, not stored.
    assert_eq!(first["CacheCacheStatus"], "miss");
    assert!(first.get("JA4").is_none(), "no TLS, no fingerprint");
    assert!(text.contains("\"EdgeResponseStatus\":404"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_access_log_never_fails_requests() {
    let o = origin("o");
    // Every write to /dev/full fails with ENOSPC.
    let e = edge(&format!("[access_log]\ntarget = \"/dev/full\"\n{}", zone_config(&["site.test"], &[o.addr], "")));
    for _ in 0..50 {
        assert_eq!(get_host(e.http(), "site.test", "/1k").await.0, 200);
    }
    eventually("write errors counted", Duration::from_secs(5), || async {
        e.metric("palisade_access_log_write_errors_total").await >= Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_need_the_token_when_one_is_set() {
    let o = origin("o");
    let dir = temp_dir("token");
    let path = dir.join("palisade.toml");
    std::fs::write(&path, zone_config(&["site.test"], &[o.addr], "")).unwrap();
    let state = dir.join("state");
    let mut child = Command::new(bin())
        .args(["edge", "--config", path.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
        .env("PALISADE_ADMIN_TOKEN", "s3cret")
        .env("PALISADE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    let admin = line.split_whitespace().find_map(|w| w.strip_prefix("admin=")).unwrap().to_string();
    let (s, _) = request("POST", &format!("http://{admin}/reload"), &[], Vec::new()).await;
    assert_eq!(s, 403, "a change without the token");
    let (s, _) =
        request("POST", &format!("http://{admin}/reload"), &[("authorization", "Bearer wrong")], Vec::new()).await;
    assert_eq!(s, 403);
    let (s, body) =
        request("POST", &format!("http://{admin}/reload"), &[("authorization", "Bearer s3cret")], Vec::new()).await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(s, 200, "reading stays open");
    child.kill().unwrap();
    child.wait().unwrap();
}
