//! The CDN cache end to end: a real origin that counts its requests per path (the body's `n=K`)
//! and can be stopped, a real edge, requests over real sockets.

mod common;

use std::time::Duration;

use common::*;

const HOST: &str = "site.test";

/// A `/cache/` URL on the demo origin whose response carries these headers.
fn page(path: &str, headers: &[&str], extra: &str) -> String {
    let mut q: Vec<String> = headers.iter().map(|h| format!("h={}", enc(h))).collect();
    if !extra.is_empty() {
        q.push(extra.to_string());
    }
    format!("/cache/{path}?{}", q.join("&"))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn fetch(e: &EdgeProc, path: &str, headers: &[(&str, &str)]) -> (u16, hyper::HeaderMap, String) {
    let mut h = vec![("host", HOST)];
    h.extend_from_slice(headers);
    request_full(&client(), "GET", &format!("http://{}{path}", e.http()), &h, Vec::new()).await
}

/// The origin's request count for the path, as the body reports it.
fn n(body: &str) -> u64 {
    body.split_whitespace().find_map(|w| w.strip_prefix("n=")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn status_of(h: &hyper::HeaderMap) -> String {
    h.get("cache-status").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn cache_edge(origin: &OriginProc, extra_zone: &str) -> EdgeProc {
    edge(&zone_config(&[HOST], &[origin.addr], extra_zone))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_what_the_origin_marks_cacheable_and_nothing_else() {
    let o = origin("o1");
    let e = cache_edge(&o, "");
    let fresh = page("fresh", &["cache-control: public, max-age=60", "etag: \"v1\""], "");
    let (s, h, b) = fetch(&e, &fresh, &[]).await;
    assert_eq!((s, n(&b)), (200, 1));
    assert_eq!(status_of(&h), "palisade; fwd=uri-miss; stored");
    let (s, h, b) = fetch(&e, &fresh, &[]).await;
    assert_eq!((s, n(&b)), (200, 1), "served from the cache");
    assert_eq!(status_of(&h), "palisade; hit");
    assert!(h.get("age").is_some(), "a hit carries Age");
    assert_eq!(h.get("etag").unwrap(), "\"v1\"");
    assert_eq!(h.get("x-origin-name").unwrap(), "o1", "the origin's headers are stored");
    assert!(h.get("via").is_some() && h.get("x-request-id").is_some());

    // Each of these reaches the origin every time.
    for (name, headers) in [
        ("plain", vec![]),
        ("no-store", vec!["cache-control: no-store, max-age=60"]),
        ("private", vec!["cache-control: private, max-age=60"]),
        ("cookie", vec!["cache-control: max-age=60", "set-cookie: session=secret"]),
        ("vary-star", vec!["cache-control: max-age=60", "vary: *"]),
    ] {
        let url = page(name, &headers, "");
        for i in 1..=3 {
            let (s, h, b) = fetch(&e, &url, &[]).await;
            assert_eq!((s, n(&b)), (200, i), "{name}: request {i} reaches the origin");
            assert_eq!(status_of(&h), "palisade; fwd=uri-miss", "{name}");
        }
    }
    // An error status is not stored; nor is a POST answered from the cache.
    let err = page("err", &["cache-control: max-age=60"], "status=503");
    assert_eq!(n(&fetch(&e, &err, &[]).await.2), 1);
    assert_eq!(n(&fetch(&e, &err, &[]).await.2), 2);
    let (s, b) = request("POST", &format!("http://{}{fresh}", e.http()), &[("host", HOST)], b"x".to_vec()).await;
    assert_eq!((s, n(&b)), (200, 2), "POST goes to the origin");
    // A request with credentials is not answered from the shared cache.
    let (_, _, b) = fetch(&e, &fresh, &[("authorization", "Bearer x")]).await;
    assert_eq!(n(&b), 3);

    let m = e.metrics().await;
    assert!(m.contains("palisade_cache_requests_total{zone=\"site\",status=\"hit\"} 1"), "{m}");
    assert!(m.contains("palisade_cache_stored_total{zone=\"site\"} 1"), "{m}");
    assert!(e.metric("palisade_cache_objects").await.unwrap() >= 1.0);
    assert!(e.metric("palisade_cache_memory_bytes").await.unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_responses_are_stored_without_the_cookie_when_configured() {
    let o = origin("o1");
    let e = cache_edge(&o, "[zones.cache]\nset_cookie = true\n");
    let url = page("c", &["cache-control: max-age=60", "set-cookie: session=secret"], "");
    let (_, h, b) = fetch(&e, &url, &[]).await;
    assert_eq!(n(&b), 1);
    assert!(h.get("set-cookie").is_some(), "the client that caused the fetch gets its cookie");
    let (_, h, b) = fetch(&e, &url, &[]).await;
    assert_eq!((n(&b), status_of(&h).as_str()), (1, "palisade; hit"));
    assert!(h.get("set-cookie").is_none(), "a cookie is never shared from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_conditionals_ranges_and_head() {
    let o = origin("o1");
    let e = cache_edge(&o, "");
    // Vary: the names are learnt first, then each variant is stored on its own.
    let url = page("vary", &["cache-control: max-age=60", "vary: Accept-Language"], "");
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(n(&fetch(&e, &url, &en).await.2), 1);
    assert_eq!(n(&fetch(&e, &url, &en).await.2), 2);
    assert_eq!(n(&fetch(&e, &url, &en).await.2), 2);
    assert_eq!(n(&fetch(&e, &url, &fr).await.2), 3);
    assert_eq!(n(&fetch(&e, &url, &fr).await.2), 3);
    let (_, h, b) = fetch(&e, &url, &en).await;
    assert_eq!((n(&b), status_of(&h).as_str()), (2, "palisade; hit"));

    let url = page(
        "cond",
        &["cache-control: max-age=60", "etag: \"v7\"", "last-modified: Wed, 21 Oct 2015 07:28:00 GMT"],
        "bytes=1000",
    );
    assert_eq!(fetch(&e, &url, &[]).await.0, 200);
    // Conditionals are answered by the cache itself.
    let (s, h, b) = fetch(&e, &url, &[("if-none-match", "\"v7\"")]).await;
    assert_eq!((s, b.as_str()), (304, ""));
    assert_eq!(h.get("etag").unwrap(), "\"v7\"");
    assert_eq!(fetch(&e, &url, &[("if-none-match", "\"other\"")]).await.0, 200);
    assert_eq!(fetch(&e, &url, &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")]).await.0, 304);
    assert_eq!(fetch(&e, &url, &[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]).await.0, 200);
    // Ranges from the stored body.
    let (s, h, b) = fetch(&e, &url, &[("range", "bytes=0-3")]).await;
    assert_eq!((s, b.as_str()), (206, "n=1 "));
    assert_eq!(h.get("content-range").unwrap(), "bytes 0-3/1000");
    let (s, _, b) = fetch(&e, &url, &[("range", "bytes=-10")]).await;
    assert_eq!((s, b.len()), (206, 10));
    let (s, h, _) = fetch(&e, &url, &[("range", "bytes=5000-")]).await;
    assert_eq!(s, 416);
    assert_eq!(h.get("content-range").unwrap(), "bytes */1000");
    // If-Range with another validator: the whole object.
    let (s, _, b) = fetch(&e, &url, &[("range", "bytes=0-3"), ("if-range", "\"v6\"")]).await;
    assert_eq!((s, b.len()), (200, 1000));
    // HEAD from the cache: the stored headers and the length, no body.
    let (s, h, b) =
        request_full(&client(), "HEAD", &format!("http://{}{url}", e.http()), &[("host", HOST)], Vec::new()).await;
    assert_eq!((s, b.as_str(), status_of(&h).as_str()), (200, "", "palisade; hit"));
    assert_eq!(h.get("content-length").unwrap(), "1000");
    // Still one origin request for all of it.
    let (_, _, b) = fetch(&e, &url, &[]).await;
    assert_eq!(n(&b), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_objects_are_revalidated_with_their_validators() {
    let o = origin("o1");
    let e = cache_edge(&o, "");
    // Fresh for 0 s with an ETag: stored, and revalidated on every use.
    let url = page("reval", &["cache-control: max-age=0", "etag: \"r1\""], "");
    let (_, h, b) = fetch(&e, &url, &[]).await;
    assert_eq!((n(&b), status_of(&h).as_str()), (1, "palisade; fwd=uri-miss; stored"));
    let (s, h, b) = fetch(&e, &url, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(status_of(&h), "palisade; fwd=stale; fwd-status=304");
    assert_eq!(n(&b), 1, "the stored body, confirmed by a 304");
    // The 304 counted at the origin: the third request's revalidation is the origin's third.
    let (_, _, b) = fetch(&e, &url, &[]).await;
    assert_eq!(n(&b), 1);
    let direct = get(&format!("http://{}{url}", o.addr)).await.1;
    assert_eq!(n(&direct), 4);
    assert!(e.metrics().await.contains("palisade_cache_requests_total{zone=\"site\",status=\"revalidated\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thundering_herd_makes_one_origin_request() {
    let o = origin("o1");
    let e = cache_edge(&o, "");
    let url = page("herd", &["cache-control: max-age=60"], "ms=300");
    let c = client();
    let mut tasks = Vec::new();
    // 200: under the node's default of 256 connections per client address.
    for _ in 0..200 {
        let (c, url, addr) = (c.clone(), url.clone(), e.http());
        tasks.push(tokio::spawn(async move {
            request_full(&c, "GET", &format!("http://{addr}{url}"), &[("host", HOST)], Vec::new()).await
        }));
    }
    for t in tasks {
        let (s, _, b) = t.await.unwrap();
        assert_eq!((s, n(&b)), (200, 1), "every request got the one origin response");
    }
    let coalesced = e.metric("palisade_cache_coalesced_total{zone=\"site\"}").await.unwrap();
    assert!(coalesced >= 150.0, "{coalesced} requests waited for the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let o = origin("o1");
    let e = cache_edge(&o, "");
    let url = page("swr", &["cache-control: max-age=1, stale-while-revalidate=60"], "ms=200");
    assert_eq!(n(&fetch(&e, &url, &[]).await.2), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await; // past max-age: nothing to poll for
    let t = std::time::Instant::now();
    let (s, h, b) = fetch(&e, &url, &[]).await;
    assert_eq!((s, n(&b)), (200, 1));
    assert_eq!(status_of(&h), "palisade; hit; detail=stale-while-revalidate");
    assert!(t.elapsed() < Duration::from_millis(190), "not waiting for the 200 ms origin: {:?}", t.elapsed());
    // The background revalidation stores the new response.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, h, b) = fetch(&e, &url, &[]).await;
        if n(&b) == 2 {
            // Served from the cache (max-age=1 with whole-second ages: fresh or stale again).
            assert!(status_of(&h).starts_with("palisade; hit"), "{h:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_site_stays_up_with_its_origin_stopped() {
    let o = origin("o1");
    let e = cache_edge(&o, "[zones.retries]\nattempts = 0\n");
    let home = page("home", &["cache-control: max-age=1"], "");
    // This page breaks after its first answer: 503 from then on.
    let failing = page("failing", &["cache-control: max-age=1"], "fail_after=1");
    let strict = page("strict", &["cache-control: max-age=1, must-revalidate"], "");
    for u in [&home, &failing, &strict] {
        assert_eq!(fetch(&e, u, &[]).await.0, 200);
    }
    // Let them go stale: nothing to poll for.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // A 5xx from the origin: the stale copy answers.
    let (s, h, b) = fetch(&e, &failing, &[]).await;
    assert_eq!((s, n(&b)), (200, 1), "the stored copy, not the origin's 503");
    assert_eq!(status_of(&h), "palisade; fwd=stale; detail=stale-if-error");
    assert_eq!(get(&format!("http://{}{failing}", o.addr)).await.0, 503, "the origin is broken");
    drop(o);
    let (s, h, b) = fetch(&e, &home, &[]).await;
    assert_eq!((s, n(&b)), (200, 1), "served stale with the origin down");
    assert_eq!(status_of(&h), "palisade; fwd=stale; detail=stale-if-error");
    // must-revalidate forbids it; an uncached page has nothing to fall back on.
    assert_eq!(fetch(&e, &strict, &[]).await.0, 502);
    assert_eq!(fetch(&e, &page("never", &[], ""), &[]).await.0, 502);
    assert!(e.metrics().await.contains("palisade_cache_requests_total{zone=\"site\",status=\"stale\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_prefix_host_tag_and_everything() {
    let o = origin("o1");
    let e = cache_edge(&o, "");
    let a = page("p/a", &["cache-control: max-age=600", "cache-tag: red,blue"], "");
    let b = page("p/b", &["cache-control: max-age=600", "cache-tag: blue"], "");
    let c = page("q/c", &["cache-control: max-age=600"], "");
    let count = |url: String| {
        let e = &e;
        async move { n(&fetch(e, &url, &[]).await.2) }
    };
    for u in [&a, &b, &c] {
        assert_eq!(count(u.clone()).await, 1);
        assert_eq!(count(u.clone()).await, 1);
    }
    let purge = |body: String| {
        let e = &e;
        async move { e.admin_json("POST", "/cache/purge", &body).await }
    };
    // By URL: only that object.
    let (s, v) = purge(format!(r#"{{"files": ["http://{HOST}{a}"]}}"#)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((count(a.clone()).await, count(b.clone()).await), (2, 1));
    // By tag.
    assert_eq!(purge(r#"{"tags": ["blue"]}"#.into()).await.0, 200);
    assert_eq!((count(a.clone()).await, count(b.clone()).await, count(c.clone()).await), (3, 2, 1));
    // By prefix.
    assert_eq!(purge(format!(r#"{{"prefixes": ["{HOST}/cache/q/"]}}"#)).await.0, 200);
    assert_eq!((count(a.clone()).await, count(c.clone()).await), (3, 2));
    // By host, then everything.
    assert_eq!(purge(format!(r#"{{"hosts": ["{HOST}"]}}"#)).await.0, 200);
    assert_eq!((count(a.clone()).await, count(b.clone()).await, count(c.clone()).await), (4, 3, 3));
    assert_eq!(purge(r#"{"purge_everything": true}"#.into()).await.0, 200);
    assert_eq!((count(a.clone()).await, count(c.clone()).await), (5, 4));
    // Bad requests are refused with the reason.
    let (s, v) = purge(r#"{}"#.into()).await;
    assert_eq!(s, 400);
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("nothing to purge"), "{v}");
    assert_eq!(purge(r#"{"urls": ["x"]}"#.into()).await.0, 400);
    assert!(e.metric("palisade_cache_purges_total").await.unwrap() >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_rules_bypass_override_ttls_and_shape_the_key() {
    let o = origin("o1");
    let rules = r#"
[[zones.cache.rules]]
name = "no-admin"
expression = 'http.request.uri.path wildcard "/cache/admin/*"'
action = "bypass"

[[zones.cache.rules]]
name = "static"
expression = 'http.request.uri.path wildcard "/cache/static/*"'
edge_ttl_s = 600
browser_ttl_s = 30
key = { query = ["v"] }
"#;
    let e = cache_edge(&o, rules);
    // Bypass: even a cacheable response goes to the origin each time.
    let admin = page("admin/x", &["cache-control: max-age=60"], "");
    assert_eq!(n(&fetch(&e, &admin, &[]).await.2), 1);
    assert_eq!(n(&fetch(&e, &admin, &[]).await.2), 2);
    // The edge TTL stores what the origin did not mark; the browser gets its own TTL.
    let s1 = "/cache/static/app.js?v=1&utm=a";
    let (_, h, b) = fetch(&e, s1, &[]).await;
    assert_eq!(n(&b), 1);
    assert_eq!(h.get("cache-control").unwrap(), "max-age=30");
    // Only `v` is in the key: another utm is the same object, another v is not.
    let (_, h, b) = fetch(&e, "/cache/static/app.js?utm=b&v=1", &[]).await;
    assert_eq!((n(&b), status_of(&h).as_str()), (1, "palisade; hit"));
    assert_eq!(h.get("cache-control").unwrap(), "max-age=30");
    assert_eq!(n(&fetch(&e, "/cache/static/app.js?v=2", &[]).await.2), 2);
    // A no-store response is never stored, whatever the rule says.
    let ns = "/cache/static/ns?h=cache-control%3A%20no-store";
    assert_eq!(n(&fetch(&e, ns, &[]).await.2), 1);
    assert_eq!(n(&fetch(&e, ns, &[]).await.2), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_and_size_limits() {
    let o = origin("o1");
    let config = format!("[cache]\nmax_object_bytes = 65536\n{}", zone_config(&[HOST], &[o.addr], ""));
    let e = edge(&config);
    let url = page("k", &["cache-control: max-age=600"], "");
    assert_eq!(n(&fetch(&e, &url, &[]).await.2), 1);
    assert_eq!(n(&fetch(&e, &url, &[]).await.2), 1);
    let (s, _) = e.admin_json("POST", "/killswitches/cache/off", "").await;
    assert_eq!(s, 200);
    assert_eq!(n(&fetch(&e, &url, &[]).await.2), 2, "switched off: to the origin");
    assert_eq!(n(&fetch(&e, &url, &[]).await.2), 3);
    assert_eq!(e.admin_json("POST", "/killswitches/cache/release", "").await.0, 200);
    assert_eq!(n(&fetch(&e, &url, &[]).await.2), 1, "released: the stored copy again");

    // Over max_object_bytes: passed through, whether its length is declared or streamed.
    for (name, extra) in [("big", "bytes=100000"), ("big-chunked", "bytes=100000&chunked=1")] {
        let u = page(name, &["cache-control: max-age=600"], extra);
        for i in 1..=2 {
            let (s, _, b) = fetch(&e, &u, &[]).await;
            assert_eq!((s, b.len(), n(&b)), (200, 100000, i), "{name}");
        }
    }
    // A streamed body under the limit is stored.
    let u = page("small-chunked", &["cache-control: max-age=600"], "bytes=40000&chunked=1");
    assert_eq!(n(&fetch(&e, &u, &[]).await.2), 1);
    let (_, h, b) = fetch(&e, &u, &[]).await;
    assert_eq!((b.len(), n(&b), status_of(&h).as_str()), (40000, 1, "palisade; hit"));
}

/// A purge made on the control plane reaches every node on its own long poll, within a second,
/// and removes exactly what it names there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_the_control_plane_reaches_every_node() {
    use common::fleet::*;
    let o = origin("o1");
    let dir = temp_dir("purge");
    let c = control(&dir);
    let a = c.addr;
    let boot = zone_config(&[HOST], &[o.addr], "");
    let fleet: Vec<EdgeProc> =
        [("berlin", BERLIN), ("paris", PARIS)].into_iter().map(|(n, t)| fleet_node(a, n, t, &boot)).collect();
    eventually("two nodes register", Duration::from_secs(10), || async move { nodes(a).await.len() == 2 }).await;
    let red = page("red", &["cache-control: max-age=600", "cache-tag: red"], "");
    let blue = page("blue", &["cache-control: max-age=600", "cache-tag: blue"], "");
    // Each node fetches each page once, then serves it from its cache.
    for (i, e) in fleet.iter().enumerate() {
        for url in [&red, &blue] {
            assert_eq!(n(&fetch(e, url, &[]).await.2), i as u64 + 1);
            assert_eq!(n(&fetch(e, url, &[]).await.2), i as u64 + 1);
        }
    }
    let cli = |args: &[&str]| operator_cli(a, args);
    let purged = std::time::Instant::now();
    let out = cli(&["purge", "--tag", "red"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("purge 1 recorded: tag red"), "{out:?}");
    for e in &fleet {
        eventually("the purge reached the node", Duration::from_secs(1), || async {
            e.metric("palisade_cache_purges_total").await == Some(1.0)
        })
        .await;
    }
    assert!(purged.elapsed() < Duration::from_secs(1), "took {:?}", purged.elapsed());
    // Red is fetched again on both nodes; blue is still cached.
    assert_eq!(n(&fetch(&fleet[0], &red, &[]).await.2), 3);
    assert_eq!(n(&fetch(&fleet[1], &red, &[]).await.2), 4);
    assert_eq!(n(&fetch(&fleet[0], &blue, &[]).await.2), 1);
    assert_eq!(n(&fetch(&fleet[1], &blue, &[]).await.2), 2);
    // Bad requests are refused before anything is recorded; operators only.
    let out = cli(&["purge"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nothing to purge"), "{out:?}");
    let (s, _) =
        api(a, "POST", "/v1/cache/purge", Some(BERLIN), Some(serde_json::json!({"purge_everything": true}))).await;
    assert_eq!(s, 403);
    // Recorded and audited, with each node's acknowledgement.
    let (_, feed) = api(a, "GET", "/v1/cache/purges", Some(ALICE), None).await;
    assert_eq!((feed["latest"].as_u64(), feed["purges"][0]["request"]["tags"][0].as_str()), (Some(1), Some("red")));
    eventually("both nodes acknowledged", Duration::from_secs(2), || async {
        let (_, audit) = api(a, "GET", "/v1/audit", Some(ALICE), None).await;
        let acks =
            audit["records"].as_array().map_or(0, |r| r.iter().filter(|x| x["action"] == "cache purge ack").count());
        acks == 2
    })
    .await;
}

/// Waits until the node's disk tier has written `n` objects.
async fn disk_writes_reach(e: &EdgeProc, n: u64) {
    eventually("written to disk", Duration::from_secs(5), || async {
        let (_, v) = e.admin_json("GET", "/cache", "").await;
        v["result"]["disk"]["writes"].as_u64() == Some(n)
    })
    .await
}

/// The disk tier: objects too large for memory stream to disk; everything stored is found again
/// after a restart; a damaged file is dropped and never served; a purge stays done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_tier_survives_a_restart_and_never_serves_a_damaged_file() {
    let o = origin("o1");
    let store = temp_dir("cache-disk");
    let disk_dir = store.join("cache");
    let config = format!(
        "[cache]\nmax_object_bytes = 65536\ndisk_path = \"{}\"\n{}",
        disk_dir.display(),
        zone_config(&[HOST], &[o.addr], "")
    );
    let small = page("small", &["cache-control: max-age=600", "cache-tag: small"], "bytes=2000");
    let big = page("big", &["cache-control: max-age=600"], "bytes=300000&chunked=1");
    let e = edge(&config);
    assert_eq!(n(&fetch(&e, &small, &[]).await.2), 1);
    let (s, _, b) = fetch(&e, &big, &[]).await;
    assert_eq!((s, b.len(), n(&b)), (200, 300000, 1));
    disk_writes_reach(&e, 2).await;
    // The large one is served from disk, whole and in ranges, and is not held in memory.
    let (_, h, b) = fetch(&e, &big, &[]).await;
    assert_eq!((b.len(), n(&b), status_of(&h).as_str()), (300000, 1, "palisade; hit"));
    let (s, h, b) = fetch(&e, &big, &[("range", "bytes=299990-")]).await;
    assert_eq!((s, b.as_str()), (206, "xxxxxxxxxx"));
    assert_eq!(h.get("content-range").unwrap(), "bytes 299990-299999/300000");
    let memory = e.metric("palisade_cache_memory_bytes").await.unwrap();
    assert!(memory < 32768.0, "{memory} bytes in memory for a 300 kB object on disk");
    drop(e);

    // A restart: both are found on disk.
    let e = edge(&config);
    let (_, h, b) = fetch(&e, &small, &[]).await;
    assert_eq!((n(&b), status_of(&h).as_str()), (1, "palisade; hit"));
    assert_eq!(n(&fetch(&e, &big, &[]).await.2), 1);
    drop(e);

    // Damage both files while the node is down: one byte each, in the body.
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&disk_dir)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    assert_eq!(files.len(), 2);
    for f in &files {
        let mut raw = std::fs::read(f).unwrap();
        raw[100] ^= 0x20;
        std::fs::write(f, raw).unwrap();
    }
    let e = edge(&config);
    // The small one is checked whole before use: the origin answers instead.
    let (s, _, b) = fetch(&e, &small, &[]).await;
    assert_eq!((s, n(&b)), (200, 2), "a damaged copy is never served");
    // The large one streams: its first block fails its check, so the response stops short.
    let raw_answer = raw(
        e.http(),
        format!("GET {big} HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(raw_answer.starts_with("HTTP/1.1 200"), "{}", &raw_answer[..raw_answer.len().min(200)]);
    assert!(!raw_answer.contains("n=1"), "no byte of the damaged block was sent");
    assert!(raw_answer.len() < 300000);
    assert_eq!(n(&fetch(&e, &big, &[]).await.2), 2, "dropped: fetched again");
    assert!(e.metric("palisade_cache_disk_corrupt_total").await.unwrap() >= 2.0);

    // A purge reaches the disk, and stays done across a restart.
    disk_writes_reach(&e, 2).await;
    assert_eq!(e.admin_json("POST", "/cache/purge", r#"{"tags": ["small"]}"#).await.0, 200);
    drop(e);
    let e = edge(&config);
    assert_eq!(n(&fetch(&e, &small, &[]).await.2), 3);
    assert_eq!(n(&fetch(&e, &big, &[]).await.2), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_another_fetch_is_bounded_by_the_lock_timeout() {
    let o = origin("o1");
    let e = cache_edge(&o, "[zones.cache]\nlock_timeout_ms = 200\n");
    // The origin takes 1.5 s; the four that wait give up after 0.2 s and fetch for themselves.
    let url = page("slow", &["cache-control: max-age=60"], "ms=1500");
    let started = std::time::Instant::now();
    let c = client();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (c, url, addr) = (c.clone(), url.clone(), e.http());
            tokio::spawn(async move {
                request_full(&c, "GET", &format!("http://{addr}{url}"), &[("host", HOST)], Vec::new()).await
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        let (s, _, b) = t.await.unwrap();
        assert_eq!(s, 200);
        counts.push(n(&b));
    }
    counts.sort();
    assert_eq!(counts, [1, 2, 3, 4, 5], "each went to the origin itself after the lock timeout");
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_can_hold_headers_and_cookies_and_leave_out_the_host() {
    let o = origin("o1");
    let rules = r#"
[[zones.cache.rules]]
name = "shaped"
key = { host = false, headers = ["x-device"], cookies = ["lang"] }
"#;
    let e = edge(&zone_config(&[HOST, "www.site.test"], &[o.addr], rules));
    let url = page("k", &["cache-control: max-age=60"], "");
    let get_as = |host: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let (addr, url) = (e.http(), url.clone());
        async move {
            let mut h = vec![("host", host)];
            h.extend(headers);
            n(&request_full(&client(), "GET", &format!("http://{addr}{url}"), &h, Vec::new()).await.2)
        }
    };
    assert_eq!(get_as(HOST, vec![("x-device", "phone"), ("cookie", "a=1; lang=en")]).await, 1);
    // Another host, other cookies: the same object (the host is not in the key).
    assert_eq!(get_as("www.site.test", vec![("x-device", "phone"), ("cookie", "lang=en; b=2")]).await, 1);
    // Another device, another language: other objects.
    assert_eq!(get_as(HOST, vec![("x-device", "desktop"), ("cookie", "lang=en")]).await, 2);
    assert_eq!(get_as(HOST, vec![("x-device", "phone"), ("cookie", "lang=fr")]).await, 3);
    assert_eq!(get_as(HOST, vec![("x-device", "phone"), ("cookie", "lang=fr")]).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_its_bound() {
    let o = origin("o1");
    // 4 MiB of memory; 600 objects of 20 kB would need 12 MB.
    let config = format!("[cache]\nmemory_bytes = 4194304\n{}", zone_config(&[HOST], &[o.addr], ""));
    let e = edge(&config);
    for i in 0..600 {
        let url = page(&format!("m{i}"), &["cache-control: max-age=600"], "bytes=20000");
        assert_eq!(fetch(&e, &url, &[]).await.0, 200);
    }
    // Evicted objects are freed in batches (the store's epoch-based reclamation, which runs as
    // more are retired): a little over the bound for a moment, never growing with the traffic.
    let mut memory = e.metric("palisade_cache_memory_bytes").await.unwrap();
    for i in 600..800 {
        if memory <= 4_194_304.0 * 1.25 {
            break;
        }
        let url = page(&format!("m{i}"), &["cache-control: max-age=600"], "bytes=20000");
        assert_eq!(fetch(&e, &url, &[]).await.0, 200);
        memory = e.metric("palisade_cache_memory_bytes").await.unwrap();
    }
    assert!(memory <= 4_194_304.0 * 1.25, "{memory} bytes held");
    let evicted = e.metric("palisade_cache_evictions_total").await.unwrap();
    assert!(evicted >= 300.0, "{evicted} evicted");
    let kept = e.metric("palisade_cache_objects").await.unwrap();
    assert!(kept >= 100.0, "{kept} objects kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_only_when_a_zone_asks_for_it() {
    let o = origin("o1");
    let url = page("h", &["last-modified: Wed, 21 Oct 2015 07:28:00 GMT"], "");
    let off = cache_edge(&o, "");
    assert_eq!(n(&fetch(&off, &url, &[]).await.2), 1);
    assert_eq!(n(&fetch(&off, &url, &[]).await.2), 2, "off by default: not stored");
    let on = cache_edge(&o, "[zones.cache]\nheuristic_percent = 10\n");
    assert_eq!(n(&fetch(&on, &url, &[]).await.2), 3);
    let (_, h, b) = fetch(&on, &url, &[]).await;
    assert_eq!((n(&b), status_of(&h).as_str()), (3, "palisade; hit"), "10 % of ten years, capped at a day");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_tier_stays_within_its_cap() {
    let o = origin("o1");
    let store = temp_dir("cache-disk-cap");
    // 1 MiB on disk; twelve objects of 200 kB would need 2.4 MB.
    let config = format!(
        "[cache]\nmax_object_bytes = 65536\ndisk_path = \"{}\"\ndisk_bytes = 1048576\n{}",
        store.join("cache").display(),
        zone_config(&[HOST], &[o.addr], "")
    );
    let e = edge(&config);
    for i in 0..12 {
        let url = page(&format!("d{i}"), &["cache-control: max-age=600"], "bytes=200000");
        assert_eq!(fetch(&e, &url, &[]).await.2.len(), 200000);
        // One at a time: each write lands before the next object comes.
        disk_writes_reach(&e, i + 1).await;
    }
    let bytes = e.metric("palisade_cache_disk_bytes").await.unwrap();
    assert!(bytes <= 1_048_576.0, "{bytes} bytes on disk");
    assert!(e.metric("palisade_cache_disk_evictions_total").await.unwrap() >= 6.0);
    // The newest is still there and served from disk.
    let last = page("d11", &["cache-control: max-age=600"], "bytes=200000");
    let (_, h, b) = fetch(&e, &last, &[]).await;
    assert_eq!((n(&b), status_of(&h).as_str()), (1, "palisade; hit"));
}
