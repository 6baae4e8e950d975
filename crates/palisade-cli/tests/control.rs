//! The control plane's store and operator API, end to end: a real `palisade control` process, its
//! SQLite file on disk, HTTP on loopback, and the `palisade config` verbs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fleet::*;
use common::*;
use serde_json::{json, Value};

/// A push that reports failure instead of panicking (the server may be dead).
async fn try_post(a: SocketAddr, body: &Value) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let req = hyper::Request::post(format!("http://{a}/v1/versions"))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(body).ok()?)))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req)).await.ok()?.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[tokio::test]
async fn versions_are_validated_stored_diffed_and_audited() {
    let dir = temp_dir("control-api");
    let c = control(&dir);
    let a = c.addr;
    let v1_doc = doc("10.0.0.1:80", "v1");

    // Tokens: none, unknown -> 401; health needs none.
    assert_eq!(api(a, "GET", "/v1/versions", None, None).await.0, 401);
    assert_eq!(api(a, "GET", "/v1/versions", Some("0123456789abcdef0123456789abcdef"), None).await.0, 401);
    assert_eq!(get(&format!("http://{a}/healthz")).await.0, 200);
    let (s, openapi) = get(&format!("http://{a}/openapi.json")).await;
    let openapi: Value = serde_json::from_str(&openapi).unwrap();
    assert_eq!((s, openapi["openapi"].as_str()), (200, Some("3.1.0")));
    assert!(openapi["paths"]["/v1/rollouts"]["post"]["summary"].is_string(), "{openapi}");

    // First version; the author is the token's name.
    let (s, v) = push(a, ALICE, &v1_doc, "first", Some(Value::Null)).await;
    assert_eq!(s, 201, "{v}");
    let v1 = v["version"]["number"].as_u64().unwrap();
    assert_eq!(v["version"]["author"], "alice");
    assert_eq!(v["version"]["parent"], Value::Null);
    assert_eq!(v["version"]["hash"], palisade_config::content_hash(v1_doc.as_bytes()));

    // The same content again stores nothing.
    let (s, v) = push(a, BOB, &v1_doc, "again", None).await;
    assert_eq!((s, v["created"].as_bool(), v["version"]["number"].as_u64()), (200, Some(false), Some(v1)));

    // Invalid: every problem with its path; too large: 413; nothing stored.
    let (s, v) = push(a, BOB, &doc("nowhere", "bad"), "broken", None).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["problems"][0]["path"], "zones[0].origins[0].address");
    let huge = format!("{}{}", doc("10.0.0.1:80", "huge"), "#".repeat(palisade_config::limits::MAX_DOCUMENT_BYTES));
    assert_eq!(push(a, BOB, &huge, "huge", None).await.0, 413);
    let (s, v) = api(a, "POST", "/v1/versions", Some(BOB), Some(json!({ "content": v1_doc }))).await;
    assert_eq!(s, 400, "a push without a message: {v}");
    assert!(v["error"].as_str().unwrap().contains("message"), "{v}");
    let long = "m".repeat(palisade_control::api::MAX_MESSAGE_BYTES + 1);
    let (s, v) = push(a, BOB, &v1_doc, &long, None).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("at most 4096"), "{v}");

    // Optimistic concurrency: a change based on a stale head is refused with the head.
    let v2_doc = doc("10.0.0.2:80", "v2");
    let (s, v) = push(a, BOB, &v2_doc, "stale", Some(json!(v1 + 100))).await;
    assert_eq!((s, v["head"].as_u64()), (409, Some(v1)), "{v}");
    let (s, v) = push(a, BOB, &v2_doc, "move shop to .2", Some(json!(v1))).await;
    assert_eq!(s, 201, "{v}");
    let v2 = v["version"]["number"].as_u64().unwrap();
    assert!(v2 > v1);
    assert_eq!(v["version"]["parent"].as_u64(), Some(v1));

    // Listing, exact content with its hash, structured diff.
    let (_, list) = api(a, "GET", "/v1/versions", Some(ALICE), None).await;
    let numbers: Vec<u64> =
        list["versions"].as_array().unwrap().iter().map(|v| v["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![v2, v1]);
    let (s, h, body) = api_full(a, "GET", &format!("/v1/versions/{v1}/content"), Some(ALICE), None).await;
    assert_eq!((s, body.as_str()), (200, v1_doc.as_str()));
    assert_eq!(h["x-palisade-hash"].to_str().unwrap(), palisade_config::content_hash(v1_doc.as_bytes()));
    let (s, d) = api(a, "GET", &format!("/v1/diff/{v1}/{v2}"), Some(ALICE), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        d["changes"],
        json!([{ "path": "zones[\"shop\"].origins[0].address", "change": "changed", "old": "\"10.0.0.1:80\"", "new": "\"10.0.0.2:80\"" }])
    );
    assert_eq!(api(a, "GET", "/v1/versions/999999", Some(ALICE), None).await.0, 404);

    // The audit log has every action, by whom and how it ended.
    let (_, audit) = api(a, "GET", "/v1/audit", Some(ALICE), None).await;
    let seen: Vec<(String, String)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["actor"].as_str().unwrap().to_string(), r["result"].as_str().unwrap().to_string()))
        .collect();
    let want = [
        ("bob", "created"),
        ("bob", "conflict"),
        ("bob", "rejected"),
        ("bob", "rejected"),
        ("bob", "unchanged"),
        ("alice", "created"),
    ];
    assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())).to_vec());

    // The same through the CLI.
    let token_file = dir.join("alice.token");
    std::fs::write(&token_file, ALICE).unwrap();
    let v3_path = dir.join("v3.toml");
    std::fs::write(&v3_path, doc("10.0.0.3:80", "v3")).unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .args(["--token-file", token_file.to_str().unwrap()])
            .env("PALISADE_CONTROL", format!("http://{a}"))
            .env("PALISADE_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = cli(&["config", "push", v3_path.to_str().unwrap(), "-m", "shop to .3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("parent {v2}")),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["config", "versions"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().nth(1).unwrap().contains("shop to .3") && stdout.contains("alice"), "{stdout}");
    let out = cli(&["config", "diff", &v2.to_string(), &(v2 + 1).to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "~ zones[\"shop\"].origins[0].address: \"10.0.0.2:80\" -> \"10.0.0.3:80\"");
    std::fs::write(&v3_path, doc("nowhere", "bad")).unwrap();
    let out = cli(&["config", "push", v3_path.to_str().unwrap(), "-m", "bad"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("zones[0].origins[0].address"), "{stderr}");
    drop(c.proc);
}

/// Pushes run concurrently while the control plane is killed with SIGKILL; after a restart every
/// acknowledged version is there, intact, with its audit record, and numbering moves on.
#[tokio::test]
async fn acknowledged_versions_survive_kill_9() {
    let dir = temp_dir("control-crash");
    let mut c = control(&dir);
    let a = c.addr;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, String)>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..1000 {
                let content = doc("10.0.0.1:80", &format!("writer {w} push {i}"));
                let body = json!({ "content": content, "message": format!("w{w} #{i}") });
                // A killed server fails the request: this writer stops there.
                let Some((201, text)) = try_post(a, &body).await else { return };
                let v: Value = serde_json::from_str(&text).unwrap();
                acked.lock().unwrap().push((v["version"]["number"].as_u64().unwrap(), content));
            }
        }));
    }
    // Kill while writes are in flight, once a fair number are acknowledged.
    eventually("40 acknowledged pushes", Duration::from_secs(30), || {
        let n = acked.lock().unwrap().len();
        async move { n >= 40 }
    })
    .await;
    c.proc.child.kill().unwrap();
    c.proc.wait_exit(Duration::from_secs(5));
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 40);

    let c = control(&dir);
    let a = c.addr;
    for (n, content) in &acked {
        let (s, v) = api(a, "GET", &format!("/v1/versions/{n}"), Some(BOB), None).await;
        assert_eq!(s, 200, "acknowledged version {n} lost: {v}");
        assert_eq!(v["content"].as_str(), Some(content.as_str()), "version {n}");
        assert_eq!(v["version"]["hash"], palisade_config::content_hash(content.as_bytes()));
    }
    let (_, audit) = api(a, "GET", "/v1/audit?limit=1000", Some(BOB), None).await;
    let targets: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|r| r["target"].as_str()).collect();
    for (n, _) in &acked {
        assert!(targets.contains(&format!("config v{n}").as_str()), "no audit record for version {n}");
    }
    let max = acked.iter().map(|(n, _)| *n).max().unwrap();
    let (s, v) = push(a, BOB, &doc("10.0.0.9:80", "after the crash"), "after restart", None).await;
    assert_eq!(s, 201, "{v}");
    assert!(v["version"]["number"].as_u64().unwrap() > max);
}

/// A node registers, runs what it is assigned, refuses what it cannot run with its reasons (and
/// keeps serving the version before), and serves on when the control plane is killed.
#[tokio::test]
async fn a_node_runs_assigned_versions_refuses_bad_ones_and_outlives_the_control_plane() {
    let origin = origin("fleet-origin");
    let dir = temp_dir("fleet");
    let mut c = control(&dir);
    let a = c.addr;
    let token_file = dir.join("berlin.token");
    std::fs::write(&token_file, BERLIN).unwrap();
    let edge_dir = temp_dir("fleet-edge");
    let boot = edge_dir.join("palisade.toml");
    std::fs::write(&boot, zone_config(&["site.example"], &[origin.addr], "")).unwrap();
    let control_url = format!("http://{a}");
    let e = edge_with(
        edge_dir,
        boot,
        &[
            "--control",
            &control_url,
            "--node-token-file",
            token_file.to_str().unwrap(),
            "--city",
            "berlin",
            "--report-interval-ms",
            "200",
        ],
    );

    eventually("the node registers", Duration::from_secs(10), || async move {
        nodes(a).await.first().is_some_and(|n| n["name"] == "berlin" && n["city"] == "berlin")
    })
    .await;
    // Node tokens cannot act as operators; assignments need a node and a version that exist.
    assert_eq!(api(a, "GET", "/v1/nodes", Some(BERLIN), None).await.0, 403);
    assert_eq!(api(a, "PUT", "/v1/nodes/nowhere/assignment", Some(ALICE), Some(json!({ "version": 1 }))).await.0, 404);
    assert_eq!(api(a, "PUT", "/v1/nodes/berlin/assignment", Some(ALICE), Some(json!({ "version": 99 }))).await.0, 404);
    assert_eq!(get_host(e.http(), "new.example", "/").await.0, 404);

    // A good version: the node fetches, applies and acknowledges it.
    let v1_doc = zone_config(&["site.example", "new.example"], &[origin.addr], "");
    let (s, v) = push(a, ALICE, &v1_doc, "add new.example", None).await;
    assert_eq!(s, 201, "{v}");
    let n1 = v["version"]["number"].as_u64().unwrap();
    let (s, v) = api(a, "PUT", "/v1/nodes/berlin/assignment", Some(ALICE), Some(json!({ "version": n1 }))).await;
    assert_eq!(s, 200, "{v}");
    eventually("the node runs v1", Duration::from_secs(10), || async move {
        nodes(a).await.first().is_some_and(|n| n["applied"].as_u64() == Some(n1))
    })
    .await;
    assert_eq!(get_host(e.http(), "new.example", "/").await.0, 200);

    // Valid as a document, but not for this node (listeners change only on restart): NACK with
    // the reason, and the node keeps serving v1.
    let v2_doc = v1_doc.replace("http = \"127.0.0.1:0\"", "http = \"127.0.0.1:1\"");
    let (s, v) = push(a, ALICE, &v2_doc, "move the listener", None).await;
    assert_eq!(s, 201, "{v}");
    let n2 = v["version"]["number"].as_u64().unwrap();
    api(a, "PUT", "/v1/nodes/berlin/assignment", Some(ALICE), Some(json!({ "version": n2 }))).await;
    eventually("the node refuses v2", Duration::from_secs(10), || async move {
        nodes(a).await.first().is_some_and(|n| n["nack_version"].as_u64() == Some(n2))
    })
    .await;
    let node = nodes(a).await.remove(0);
    assert!(node["nack_detail"].as_str().unwrap().contains("listen.http"), "{node}");
    assert_eq!(node["applied"].as_u64(), Some(n1));
    assert_eq!(get_host(e.http(), "new.example", "/").await.0, 200);
    let (_, audit) = api(a, "GET", "/v1/audit", Some(ALICE), None).await;
    let results: Vec<(String, String)> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == "berlin")
        .map(|r| (r["action"].as_str().unwrap().to_string(), r["target"].as_str().unwrap().to_string()))
        .collect();
    assert!(results.contains(&("ack".into(), format!("config v{n1}"))), "{results:?}");
    assert!(results.contains(&("nack".into(), format!("config v{n2}"))), "{results:?}");

    // A local change (the boot file edited, SIGHUP) shows as drift: the node runs something
    // other than the version it answered for.
    eventually("no drift while it runs what it answered for", Duration::from_secs(10), || async move {
        nodes(a).await[0]["drift"] == false
    })
    .await;
    e.write_config(&zone_config(&["site.example", "new.example", "local.example"], &[origin.addr], ""));
    e.proc.signal("HUP");
    eventually("the control plane sees the drift", Duration::from_secs(10), || async move {
        nodes(a).await[0]["drift"] == true
    })
    .await;
    let out = std::process::Command::new(bin())
        .args(["nodes", "--control", &control_url, "--token", ALICE])
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("DRIFT"), "{out:?}");

    // The control plane dies: every request still succeeds.
    c.proc.child.kill().unwrap();
    c.proc.wait_exit(Duration::from_secs(5));
    for _ in 0..20 {
        assert_eq!(get_host(e.http(), "new.example", "/").await.0, 200);
        assert_eq!(get_host(e.http(), "site.example", "/").await.0, 200);
    }
}

/// Three nodes under steady traffic. A version the canary refuses is rolled back at once; a good
/// version passes every stage; a version that makes a node fail requests is rolled back at the
/// canary after its bake. Failed requests stay on the canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_rollouts_pass_good_versions_and_roll_back_bad_ones_at_the_canary() {
    let mut fleet = Fleet::start("rollout").await;
    let (a, origin_addr) = (fleet.a, fleet.origin);

    // 1. The fleet's first rollout, of a version the canary refuses (listeners change only on
    // restart): rolled back at once, the canary back on its boot config.
    let good = zone_config(&["site.example", "www.site.example"], &[origin_addr], "");
    let refused = good.replace("http = \"127.0.0.1:0\"", "http = \"127.0.0.1:1\"");
    let v0 = push(a, ALICE, &refused, "new listener", None).await.1["version"]["number"].as_u64().unwrap();
    let r0 = start_rollout(a, v0).await;
    let out = rollout_outcome(a, r0).await;
    assert_eq!(out["rollout"]["state"], "rolled_back", "{out}");
    let reason = out["rollout"]["reason"].as_str().unwrap();
    assert!(reason.contains("berlin refused") && reason.contains("listen.http"), "{reason}");
    eventually("the canary answers from its boot config", Duration::from_secs(10), || async move {
        let (_, audit) = api(a, "GET", "/v1/audit", Some(ALICE), None).await;
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["actor"] == "berlin" && r["target"] == "boot config" && r["result"] == "applied")
    })
    .await;

    // 2. A good version goes through every stage to every node.
    let v1 = push(a, ALICE, &good, "add www", None).await.1["version"]["number"].as_u64().unwrap();
    let r1 = start_rollout(a, v1).await;
    let out = rollout_outcome(a, r1).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    let messages: Vec<&str> =
        out["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.starts_with("stage 1 passed")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("stage 1 (1): assigned to berlin")), "{messages:?}");
    assert!(nodes(a).await.iter().all(|n| n["applied"].as_u64() == Some(v1)));
    let out = std::process::Command::new(bin())
        .args(["nodes", "--control", &format!("http://{a}"), "--token", ALICE])
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 4, "{listing}");
    let berlin = listing.lines().find(|l| l.starts_with("berlin")).unwrap();
    assert!(berlin.contains(&format!("v{v1}")) && berlin.contains(&format!("v{v0}: ")), "{listing}");

    // 3. Valid, but every request on it fails (the origin is gone): rolled back at the canary.
    let dead = zone_config(&["site.example", "www.site.example"], &["127.0.0.1:1".parse().unwrap()], "");
    let v2 = push(a, ALICE, &dead, "move to the new origin", None).await.1["version"]["number"].as_u64().unwrap();
    // A 60 s bake: the regression must roll it back long before the bake ends (fail fast).
    let pushed = std::time::Instant::now();
    let r2 = start_rollout_baking(a, v2, 60_000).await;
    let out = rollout_outcome(a, r2).await;
    assert_eq!(out["rollout"]["state"], "rolled_back", "{out}");
    assert!(out["rollout"]["reason"].as_str().unwrap().contains("5xx regression during the bake"), "{out}");
    assert!(pushed.elapsed() < Duration::from_secs(15), "rolled back after {:?}", pushed.elapsed());
    let assigned: Vec<&str> = out["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("assigned to"))
        .collect();
    assert_eq!(assigned, vec!["stage 1 (1): assigned to berlin"], "only the canary got it");
    eventually("the canary runs v1 again", Duration::from_secs(10), || async move {
        nodes(a).await.iter().all(|n| n["applied"].as_u64() == Some(v1) && n["assigned"].as_u64() == Some(v1))
    })
    .await;

    let mut failures = std::collections::HashMap::new();
    for (name, ok, failed) in fleet.stop_traffic().await {
        assert!(ok > 50, "{name} served only {ok}");
        failures.insert(name, failed);
    }
    assert!(failures["berlin"] > 0, "the bad version never reached the canary? {failures:?}");
    assert_eq!((failures["paris"], failures["tokyo"]), (0, 0), "failures outside the canary: {failures:?}");
    for (_, e) in &fleet.nodes {
        assert_eq!(get_host(e.http(), "www.site.example", "/").await.0, 200);
    }
}

/// Incident replay: the control plane is killed (SIGKILL) in the middle of a rollout. Nodes keep
/// serving; the restarted control plane carries the rollout on from its recorded state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_carries_on_after_the_control_plane_is_killed_mid_way() {
    let origin = origin("resume-origin");
    let dir = temp_dir("resume");
    let mut c = control(&dir);
    let a = c.addr;
    let boot = zone_config(&["site.example"], &[origin.addr], "");
    let fleet = fleet_of(a, &[("berlin", BERLIN), ("paris", PARIS)], &boot).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = steady_traffic(&fleet, &stop);

    let good = zone_config(&["site.example", "www.site.example"], &[origin.addr], "");
    let v1 = push(a, ALICE, &good, "add www", None).await.1["version"]["number"].as_u64().unwrap();
    let body = json!({ "version": v1, "stages": ["1", "100%"], "bake_ms": 2000 });
    let (s, v) = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["rollout"]["id"].as_u64().unwrap();
    eventually("the canary bakes", Duration::from_secs(10), || async move {
        let (_, v) = api(a, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
        v["events"].as_array().unwrap().iter().any(|e| e["message"].as_str().unwrap().contains("baking"))
    })
    .await;
    c.proc.child.kill().unwrap();
    c.proc.wait_exit(Duration::from_secs(5));
    // Nodes serve on while it is down.
    for (_, e) in &fleet {
        assert_eq!(get_host(e.http(), "site.example", "/").await.0, 200);
    }

    let c = control_at(&dir, &a.to_string());
    let out = rollout_outcome(c.addr, id).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    eventually("every node runs v1", Duration::from_secs(10), || async move {
        nodes(a).await.iter().all(|n| n["applied"].as_u64() == Some(v1))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in traffic {
        let (name, ok, failed) = t.await.unwrap();
        assert_eq!(failed, 0, "{name} failed {failed} requests ({ok} ok)");
    }
}

/// `--http`/`--admin` on a node win over `[listen]` in every document it loads, so one fleet-wide
/// document serves nodes on different addresses and a document's listeners never trip a reload.
#[tokio::test]
async fn node_local_listeners_win_over_the_document() {
    let origin = origin("local-listeners");
    let dir = temp_dir("local-listeners");
    let doc = |port: u16| {
        zone_config(&["site.example"], &[origin.addr], "")
            .replace("http = \"127.0.0.1:0\"", &format!("http = \"127.0.0.1:{port}\""))
    };
    let config = dir.join("palisade.toml");
    std::fs::write(&config, doc(1)).unwrap();
    let e = edge_with(dir, config.clone(), &["--http", "127.0.0.1:0"]);
    assert_ne!(e.http().port(), 1, "the document's listener was used");
    assert_eq!(get_host(e.http(), "site.example", "/").await.0, 200);
    std::fs::write(&config, doc(2).replace("site.example\"]", "site.example\", \"www.site.example\"]")).unwrap();
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 200, "a document's listeners must not refuse the reload: {v}");
    assert_eq!(get_host(e.http(), "www.site.example", "/").await.0, 200);
}

/// Incident replay 4: a kill switch reaches every node within a second on its own path, turns
/// only its module off, and changes nothing else; releasing it turns the module back on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switches_reach_every_node_within_a_second_and_change_nothing_else() {
    let origin = origin("kill-origin");
    let dir = temp_dir("kill");
    let c = control(&dir);
    let a = c.addr;
    let boot = zone_config(&["site.example"], &[origin.addr], "");
    let mut fleet: Vec<EdgeProc> = [("berlin", BERLIN), ("paris", PARIS)]
        .into_iter()
        .map(|(name, token)| fleet_node(a, name, token, &boot))
        .collect();
    // Tokyo's zone has a dead origin next to the live one and no passive ejection: only retries
    // keep its requests whole.
    let dead: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let retrying =
        zone_config(&["site.example"], &[origin.addr, dead], "[zones.passive_health]\nconsecutive_failures = 0");
    fleet.push(fleet_node(a, "tokyo", TOKYO, &retrying));
    eventually("three nodes register", Duration::from_secs(10), || async move { nodes(a).await.len() == 3 }).await;
    let tokyo = fleet[2].http();
    let statuses = || async move {
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(get_host(tokyo, "site.example", "/").await.0);
        }
        out
    };
    assert!(statuses().await.iter().all(|s| *s == 200), "retries hide the dead origin");
    const SERIES: &str = "palisade_kill_switch{name=\"retries\"}";
    for e in &fleet {
        assert_eq!(e.metric(SERIES).await, Some(0.0));
    }
    let cli = |args: &[&str]| operator_cli(a, args);

    let flipped = std::time::Instant::now();
    let out = cli(&["killswitch", "off", "retries", "-m", "retry storm"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("retries switched off"), "{out:?}");
    for e in &fleet {
        eventually("the switch is off on the node", Duration::from_secs(1), || async {
            e.metric(SERIES).await == Some(1.0)
        })
        .await;
    }
    assert!(flipped.elapsed() < Duration::from_secs(1), "took {:?}", flipped.elapsed());
    // Nothing else changed: no config version moved, and the site serves where no retry is needed.
    for n in nodes(a).await {
        assert_eq!((n["assigned"].as_u64(), n["applied"].as_u64()), (None, None), "{n}");
    }
    for e in &fleet {
        if e.http() != tokyo {
            assert_eq!(get_host(e.http(), "site.example", "/").await.0, 200);
        }
        assert_eq!(e.metric("palisade_kill_switch{name=\"access_log\"}").await, Some(0.0));
    }
    // The switch does what it says: with retries off, the dead origin's share fails.
    let off = statuses().await;
    assert!(off.contains(&502) && off.contains(&200), "{off:?}");
    let listing = String::from_utf8_lossy(&cli(&["killswitch", "list"]).stdout).to_string();
    assert!(listing.contains("retries      OFF") && listing.contains("retry storm"), "{listing}");
    let (s, v) =
        api(a, "POST", "/v1/killswitches", Some(ALICE), Some(json!({ "name": "warp_drive", "reason": "x" }))).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(
        api(a, "POST", "/v1/killswitches", Some(BERLIN), Some(json!({ "name": "retries", "reason": "x" }))).await.0,
        403
    );

    assert!(cli(&["killswitch", "release", "retries"]).status.success());
    for e in &fleet {
        eventually("the switch is released on the node", Duration::from_secs(1), || async {
            e.metric(SERIES).await == Some(0.0)
        })
        .await;
    }
    assert!(statuses().await.iter().all(|s| *s == 200), "retries are back");
    let (_, audit) = api(a, "GET", "/v1/audit", Some(ALICE), None).await;
    let acks = audit["records"].as_array().unwrap().iter().filter(|r| r["action"] == "killswitch ack").count();
    assert_eq!(acks, 6, "three nodes acknowledged two generations: {audit}");

    // Every switch there is, each on and off in turn: every node has it within a second, no
    // config version moves, and the site serves throughout. (What each switch turns off is
    // tested with its module: retries above, ip_lists with artifacts, fault with the modules.)
    for (name, _) in palisade_config::limits::KILL_SWITCHES {
        let series = format!("palisade_kill_switch{{name=\"{name}\"}}");
        for (verb, want) in [("off", 1.0), ("release", 0.0)] {
            let out = if verb == "off" {
                cli(&["killswitch", "off", name, "-m", "drill"])
            } else {
                cli(&["killswitch", "release", name])
            };
            assert!(out.status.success(), "{name} {verb}: {out:?}");
            let flipped = std::time::Instant::now();
            for e in &fleet {
                eventually("the switch reaches the node", Duration::from_secs(1), || async {
                    e.metric(&series).await == Some(want)
                })
                .await;
            }
            assert!(flipped.elapsed() < Duration::from_secs(1), "{name} {verb} took {:?}", flipped.elapsed());
            for n in nodes(a).await {
                assert_eq!((n["assigned"].as_u64(), n["applied"].as_u64()), (None, None), "{name} {verb}: {n}");
            }
            // (Tokyo's dead origin fails its share with retries off, as above.)
            for e in fleet.iter().filter(|e| e.http() != tokyo) {
                assert_eq!(get_host(e.http(), "site.example", "/").await.0, 200, "{name} {verb}");
            }
        }
    }
}

/// The crash-loop guard: a node that dies twice within a minute of activating a version boots
/// from the previous known-good on the next start, refuses that version, and says why. A node
/// under a control plane restarts into what the fleet gave it, not its bootstrap file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_crashes_after_an_activation_quarantine_the_version() {
    let origin = origin("crash-origin");
    let dir = temp_dir("crash");
    let c = control(&dir);
    let a = c.addr;
    let node_dir = temp_dir("crash-node");
    let token_file = node_dir.join("node.token");
    std::fs::write(&token_file, BERLIN).unwrap();
    let config = node_dir.join("palisade.toml");
    std::fs::write(&config, zone_config(&["site.example"], &[origin.addr], "")).unwrap();
    let url = format!("http://{a}");
    let args = ["--control", &url, "--node-token-file", token_file.to_str().unwrap(), "--city", "berlin"];
    let start = || edge_with(node_dir.clone(), config.clone(), &args);
    let mut e = start();
    eventually("the node registers", Duration::from_secs(10), || async move { nodes(a).await.len() == 1 }).await;

    let assign = |hosts: &'static [&'static str], message: &'static str| {
        let origin = origin.addr;
        async move {
            let (_, v) = push(a, ALICE, &zone_config(hosts, &[origin], ""), message, None).await;
            let n = v["version"]["number"].as_u64().unwrap();
            api(a, "PUT", "/v1/nodes/berlin/assignment", Some(ALICE), Some(json!({ "version": n }))).await;
            eventually("the node runs it", Duration::from_secs(10), || async move {
                nodes(a).await[0]["applied"].as_u64() == Some(n)
            })
            .await;
            n
        }
    };
    let _v1 = assign(&["site.example", "www.site.example"], "v1").await;
    let v2 = assign(&["site.example", "www.site.example", "new.site.example"], "v2").await;

    // Crash (SIGKILL) right after activating v2, twice; the first restart comes back on v2.
    e.proc.child.kill().unwrap();
    e.proc.wait_exit(Duration::from_secs(5));
    e = start();
    assert_eq!(get_host(e.http(), "new.site.example", "/").await.0, 200, "restarted into the fleet's v2");
    e.proc.child.kill().unwrap();
    e.proc.wait_exit(Duration::from_secs(5));

    // Third start: v2 is quarantined; the node serves v1 and refuses v2 with the reason.
    let e = start();
    assert_eq!(get_host(e.http(), "www.site.example", "/").await.0, 200);
    assert_eq!(get_host(e.http(), "new.site.example", "/").await.0, 404);
    eventually("the node refuses v2", Duration::from_secs(10), || async move {
        let n = nodes(a).await.remove(0);
        n["nack_version"].as_u64() == Some(v2) && n["nack_detail"].as_str().unwrap_or("").contains("quarantined")
    })
    .await;
}

/// The latency gate: a version whose origin answers slowly (300 ms, every request succeeds) is
/// rolled back at the canary on its p99, long before a 60 s bake ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p99_latency_regression_rolls_back() {
    let fast = origin("fast-origin");
    let slow_proc = Proc::spawn(&["origin", "--listen", "127.0.0.1:0", "--name", "slow", "--delay-ms", "300"]);
    let slow = field(&slow_proc.wait_line("palisade origin ready"), "http").unwrap();
    let dir = temp_dir("latency");
    let c = control(&dir);
    let a = c.addr;
    let boot = zone_config(&["site.example"], &[fast.addr], "");
    let fleet = fleet_of(a, &[("berlin", BERLIN), ("paris", PARIS)], &boot).await;
    // Sixteen visitors per node, so that a slow node still gives the gate its samples quickly.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut traffic = Vec::new();
    for _ in 0..16 {
        traffic.extend(steady_traffic(&fleet, &stop));
    }
    let v1 = push(a, ALICE, &zone_config(&["site.example", "www.site.example"], &[fast.addr], ""), "v1", None).await.1
        ["version"]["number"]
        .as_u64()
        .unwrap();
    assert_eq!(rollout_outcome(a, start_rollout(a, v1).await).await["rollout"]["state"], "done");

    let v2 =
        push(a, ALICE, &zone_config(&["site.example", "www.site.example"], &[slow], ""), "v2: the new origin", None)
            .await
            .1["version"]["number"]
            .as_u64()
            .unwrap();
    let pushed = std::time::Instant::now();
    let out = rollout_outcome(a, start_rollout_baking(a, v2, 60_000).await).await;
    assert_eq!(out["rollout"]["state"], "rolled_back", "{out}");
    let reason = out["rollout"]["reason"].as_str().unwrap();
    assert!(reason.contains("p99 latency regression during the bake"), "{reason}");
    assert!(pushed.elapsed() < Duration::from_secs(15), "took {:?}", pushed.elapsed());
    eventually("every node back on v1", Duration::from_secs(10), || async move {
        nodes(a).await.iter().all(|n| n["applied"].as_u64() == Some(v1))
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in traffic {
        let (name, _, failed) = t.await.unwrap();
        assert_eq!(failed, 0, "{name}: slow is not failed");
    }
}

/// No traffic is no evidence: a stage with none holds and asks its nodes for synthetic requests,
/// which then pass a good version and fail a bad one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_traffic_a_stage_holds_and_probes() {
    let origin = origin("probe-origin");
    let dir = temp_dir("probe");
    let c = control(&dir);
    let a = c.addr;
    let boot = zone_config(&["site.example"], &[origin.addr], "");
    let _fleet = fleet_of(a, &[("berlin", BERLIN), ("paris", PARIS)], &boot).await;

    let good = zone_config(&["site.example", "www.site.example"], &[origin.addr], "");
    let v1 = push(a, ALICE, &good, "v1", None).await.1["version"]["number"].as_u64().unwrap();
    let body = json!({ "version": v1, "stages": ["1", "100%"], "bake_ms": 500 });
    let id = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await.1["rollout"]["id"].as_u64().unwrap();
    let out = rollout_outcome(a, id).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    let messages: Vec<&str> =
        out["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.contains("synthetic requests")), "{messages:?}");
    let zero = format!("new v{v1}: 0 req");
    assert!(messages.iter().any(|m| m.starts_with("stage 1 passed: new v") && !m.contains(&zero)), "{messages:?}");
    let served = origin_stats(origin.addr).await["requests"].as_u64().unwrap();
    assert!(served >= 20, "the probes reached the origin: {served}");

    // The emergency lane: fewer stages by default, still staged and gated, and recorded as such.
    let v1b = push(a, ALICE, &zone_config(&["site.example", "api.site.example"], &[origin.addr], ""), "urgent", None)
        .await
        .1["version"]["number"]
        .as_u64()
        .unwrap();
    let body = json!({ "version": v1b, "emergency": true, "bake_ms": 300 });
    let (s, v) = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await;
    assert_eq!((s, v["rollout"]["stages"].clone()), (201, json!(["1", "50%", "100%"])), "{v}");
    let out = rollout_outcome(a, v["rollout"]["id"].as_u64().unwrap()).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    assert!(out["events"][0]["message"].as_str().unwrap().contains("(emergency lane)"), "{out}");

    // `palisade rollout rollback` while one runs: aborted, rolled back.
    let body = json!({ "version": v1, "bake_ms": 60_000 });
    let running = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await.1["rollout"]["id"].as_u64().unwrap();
    let out = std::process::Command::new(bin())
        .args(["rollout", "rollback", "--control", &format!("http://{a}"), "--token", ALICE])
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = rollout_outcome(a, running).await;
    assert_eq!(
        (out["rollout"]["state"].as_str(), out["rollout"]["reason"].as_str()),
        (Some("rolled_back"), Some("aborted by alice"))
    );

    let dead = zone_config(&["site.example", "www.site.example"], &["127.0.0.1:1".parse().unwrap()], "");
    let v2 = push(a, ALICE, &dead, "v2", None).await.1["version"]["number"].as_u64().unwrap();
    let body = json!({ "version": v2, "stages": ["1", "100%"], "bake_ms": 500 });
    let id = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await.1["rollout"]["id"].as_u64().unwrap();
    let out = rollout_outcome(a, id).await;
    assert_eq!(out["rollout"]["state"], "rolled_back", "{out}");
    assert!(out["rollout"]["reason"].as_str().unwrap().contains("5xx regression"), "{out}");
}

/// The node channel over TLS: the control plane serves HTTPS with its certificate, nodes and the
/// CLI trust it through `--control-ca`, and an https:// URL without a CA is refused, not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_operators_reach_the_control_plane_over_tls() {
    let origin = origin("tls-origin");
    let dir = temp_dir("control-tls");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("control.crt"), dir.join("control.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let c =
        control_with(&dir, "127.0.0.1:0", &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let url = format!("https://localhost:{}", c.addr.port());

    let node_dir = temp_dir("tls-node");
    let token_file = node_dir.join("node.token");
    std::fs::write(&token_file, BERLIN).unwrap();
    let config = node_dir.join("palisade.toml");
    std::fs::write(&config, zone_config(&["site.example"], &[origin.addr], "")).unwrap();
    let args =
        ["--control", &url, "--node-token-file", token_file.to_str().unwrap(), "--control-ca", cert.to_str().unwrap()];
    let e = edge_with(node_dir, config, &args);

    let cli = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .args(["--control", &url, "--token", ALICE])
            .env("PALISADE_LOG", "warn")
            .output()
            .unwrap()
    };
    // Without the CA: refused, and says what is missing.
    let out = cli(&["nodes"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--control-ca"), "{out:?}");
    let ca = cert.to_str().unwrap();
    let registered = || async {
        let out = cli(&["nodes", "--control-ca", ca]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("berlin")
    };
    eventually("the node registers over TLS", Duration::from_secs(10), registered).await;

    let doc = dir.join("v1.toml");
    std::fs::write(&doc, zone_config(&["site.example", "www.site.example"], &[origin.addr], "")).unwrap();
    assert!(cli(&["config", "push", doc.to_str().unwrap(), "-m", "over tls", "--control-ca", ca]).status.success());
    assert!(cli(&["rollout", "start", "1", "--stages", "100%", "--bake-ms", "200", "--control-ca", ca])
        .status
        .success());
    eventually("the node runs v1", Duration::from_secs(20), || async {
        get_host(e.http(), "www.site.example", "/").await.0 == 200
    })
    .await;
}

/// A paused rollout moves no node and no stage until it is resumed; then it finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_rollout_holds_until_resumed() {
    let origin = origin("pause-origin");
    let dir = temp_dir("pause");
    let c = control(&dir);
    let a = c.addr;
    let boot = zone_config(&["site.example"], &[origin.addr], "");
    let _fleet = fleet_of(a, &[("berlin", BERLIN), ("paris", PARIS)], &boot).await;
    let doc = zone_config(&["site.example", "www.site.example"], &[origin.addr], "");
    let v1 = push(a, ALICE, &doc, "add www", None).await.1["version"]["number"].as_u64().unwrap();
    let body = json!({ "version": v1, "stages": ["1", "100%"], "bake_ms": 600 });
    let (s, v) = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["rollout"]["id"].as_u64().unwrap();
    eventually("the canary bakes", Duration::from_secs(10), || async move {
        let (_, r) = api(a, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
        r["events"].as_array().unwrap().iter().any(|e| e["message"].as_str().unwrap().contains("baking"))
    })
    .await;
    let cli = |verb: &str| {
        std::process::Command::new(bin())
            .args(["rollout", verb, &id.to_string(), "--control", &format!("http://{a}"), "--token", ALICE])
            .env("PALISADE_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = cli("pause");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("rollout {id} paused")), "{out:?}");
    assert!(!cli("pause").status.success(), "a paused rollout cannot be paused again");
    // Nothing moves while paused, well past the bake: an absence, so it is waited out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, r) = api(a, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
    assert_eq!((r["rollout"]["state"].as_str(), r["rollout"]["stage"].as_u64()), (Some("paused"), Some(0)), "{r}");
    let paris = nodes(a).await.into_iter().find(|n| n["name"] == "paris").unwrap();
    assert_eq!(paris["assigned"], Value::Null, "{paris}");
    let (s, v) = api(a, "POST", "/v1/rollouts", Some(ALICE), Some(json!({ "version": v1 }))).await;
    assert_eq!(s, 409, "one rollout at a time, paused ones included: {v}");

    let out = cli("resume");
    assert!(out.status.success(), "{out:?}");
    let out = rollout_outcome(a, id).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    let messages: Vec<&str> =
        out["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(messages.contains(&"paused by alice") && messages.contains(&"resumed by alice"), "{messages:?}");
    assert!(nodes(a).await.iter().all(|n| n["applied"].as_u64() == Some(v1)));
}
