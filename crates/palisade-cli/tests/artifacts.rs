//! Artifacts end to end: IP lists, feature files and certificate bundles stored on a real control
//! plane, pinned by hash in config versions, fetched by hash by real edge nodes, and the incident
//! replays about them: an oversized or duplicated artifact stopped at the canary, and a flapping
//! generator that never moves the fleet off good versions.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fleet::*;
use common::*;
use palisade_config::artifact::limits;
use palisade_config::content_hash;
use serde_json::{json, Value};

/// `POST /v1/artifacts/{kind}/{name}?{query}` with the raw bytes.
async fn push_artifact(a: SocketAddr, kind: &str, name: &str, bytes: &[u8], query: &str) -> (u16, Value) {
    let auth = format!("Bearer {ALICE}");
    let url = format!("http://{a}/v1/artifacts/{kind}/{name}?message=test+push{query}");
    let (s, _, body) = request_full(&client(), "POST", &url, &[("authorization", auth.as_str())], bytes.to_vec()).await;
    (s, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// `[[artifacts]]` entries, appended after the zones.
fn pins(entries: &[(&str, &str, &[u8])]) -> String {
    entries
        .iter()
        .map(|(name, kind, bytes)| {
            format!("\n[[artifacts]]\nname = \"{name}\"\nkind = \"{kind}\"\nsha256 = \"{}\"\n", content_hash(bytes))
        })
        .collect()
}

/// A feature file of `n` features.
fn model(version: &str, n: usize) -> Vec<u8> {
    let features: Vec<String> =
        (0..n).map(|i| format!(r#"{{"name": "f{i}", "extractor": "header_present:x-{i}", "weight": 0.25}}"#)).collect();
    format!(r#"{{"model_version": "{version}", "bias": 0.5, "features": [{}]}}"#, features.join(",\n")).into_bytes()
}

async fn rolled_out(a: SocketAddr, pushed: &Value) -> Value {
    let id = pushed["rollout"]["id"].as_u64().unwrap_or_else(|| panic!("no rollout started: {pushed}"));
    rollout_outcome(a, id).await
}

/// A managed node fetches an IP list by hash and refuses its addresses with 403; a new version of
/// the list reaches it through a config version that re-pins the hash; the `ip_lists` kill
/// switch turns the list off; a bad list is refused at push with its line numbers; a stand-alone
/// node reads the list from `file` and checks it against the pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_lists_are_fetched_by_hash_re_pinned_and_enforced() {
    let origin = origin("artifact-origin");
    let dir = temp_dir("artifacts");
    let c = control(&dir);
    let a = c.addr;
    let boot = zone_config(&["site.example"], &[origin.addr], "");
    let fleet = fleet_of(a, &[("berlin", BERLIN)], &boot).await;
    let berlin = &fleet[0].1;

    // The first version of the list: stored, but no config uses it yet.
    let list1 = b"# partners we do not serve\n192.0.2.0/24\n".to_vec();
    let (s, v) = push_artifact(a, "ip_list", "deny", &list1, "").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["version"]["hash"], content_hash(&list1));
    assert!(v["config_note"].as_str().unwrap().contains("no config version yet"), "{v}");

    // A config that uses it, rolled out: the node fetches the list by hash.
    let config = format!(
        "{}{}",
        zone_config(&["site.example"], &[origin.addr], "ip_deny = \"deny\""),
        pins(&[("deny", "ip_list", &list1)])
    );
    let (s, v) = push(a, ALICE, &config, "deny partners", None).await;
    assert_eq!(s, 201, "{v}");
    let v1 = v["version"]["number"].as_u64().unwrap();
    let out = rollout_outcome(a, start_rollout_baking(a, v1, 200).await).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    assert_eq!(get_host(berlin.http(), "site.example", "/").await.0, 200);
    let stored = berlin.dir.join("state").join("artifacts").join(content_hash(&list1));
    assert_eq!(std::fs::read(&stored).unwrap(), list1, "kept on the node's disk for last-known-good");

    // A new version of the list, with loopback on it, rolled out in one push: the config is
    // re-pinned (the operator's comment kept) and the node refuses us.
    let list2 = b"192.0.2.0/24\n127.0.0.0/8\n".to_vec();
    let (s, v) = push_artifact(a, "ip_list", "deny", &list2, "&rollout=true&bake_ms=200").await;
    assert_eq!(s, 201, "{v}");
    let v2 = v["config"]["number"].as_u64().unwrap();
    assert_eq!(v["config"]["parent"].as_u64(), Some(v1));
    let out = rolled_out(a, &v).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    let (s, _, page) = get_host(berlin.http(), "site.example", "/").await;
    assert_eq!(s, 403, "{page}");
    assert!(page.contains("Access denied"), "{page}");
    assert!(berlin.metrics().await.contains("palisade_module_answers_total{zone=\"site\",module=\"ip_lists\"} 1"));
    let (_, shown) = api(a, "GET", &format!("/v1/versions/{v2}"), Some(ALICE), None).await;
    let text = shown["content"].as_str().unwrap();
    assert!(text.contains(&content_hash(&list2)) && text.contains("[listen]"), "{text}");
    let (_, d) = api(a, "GET", &format!("/v1/diff/{v1}/{v2}"), Some(ALICE), None).await;
    assert_eq!(d["changes"].as_array().unwrap().len(), 1, "{d}");
    // Two versions of the list: which entries came and went.
    let (_, lists) = api(a, "GET", "/v1/versions?kind=ip_list&name=deny", Some(ALICE), None).await;
    let (l2, l1) = (lists["versions"][0]["number"].as_u64().unwrap(), lists["versions"][1]["number"].as_u64().unwrap());
    let (_, d) = api(a, "GET", &format!("/v1/diff/{l1}/{l2}"), Some(ALICE), None).await;
    assert_eq!(d["changes"], json!([{ "path": "line 2", "change": "added", "new": "127.0.0.0/8" }]), "{d}");
    assert_eq!(api(a, "GET", &format!("/v1/diff/{l1}/{v2}"), Some(ALICE), None).await.0, 400);
    assert!(!stored.exists() || std::fs::read(&stored).is_ok(), "the previous list may stay for previous-known-good");

    // Nodes and operators read an artifact by hash; a hash nobody stored is 404.
    let path = format!("/v1/artifacts/{}/content", content_hash(&list2));
    let (s, _, body) = api_full(a, "GET", &path, Some(BERLIN), None).await;
    assert_eq!((s, body.as_bytes()), (200, list2.as_slice()));
    let (s, _) = api(a, "GET", &format!("/v1/artifacts/{}/content", "0".repeat(64)), Some(ALICE), None).await;
    assert_eq!(s, 404);

    // The kill switch turns the list off on the next request, and back on when released.
    let (s, v) = api(
        a,
        "POST",
        "/v1/killswitches",
        Some(ALICE),
        Some(json!({ "name": "ip_lists", "reason": "false positives" })),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    eventually("the list is off", Duration::from_secs(5), || async {
        get_host(berlin.http(), "site.example", "/").await.0 == 200
    })
    .await;
    api(a, "DELETE", "/v1/killswitches/ip_lists", Some(ALICE), None).await;
    eventually("the list is back", Duration::from_secs(5), || async {
        get_host(berlin.http(), "site.example", "/").await.0 == 403
    })
    .await;

    // A bad list is refused at push, every problem with its line; nothing is stored.
    let (s, v) = push_artifact(a, "ip_list", "deny", b"10.0.0.0/8\n10.0.0.0/8\n10.1.2.3/8\n", "").await;
    assert_eq!(s, 422, "{v}");
    let problems = v["problems"].to_string();
    assert!(problems.contains("duplicates line 1") && problems.contains("host bits set"), "{problems}");
    let (_, list) = api(a, "GET", "/v1/versions?kind=ip_list&name=deny", Some(ALICE), None).await;
    assert_eq!(list["versions"].as_array().unwrap().len(), 2, "{list}");
    // The same through the CLI.
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "300.1.1.1\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["artifact", "push", "ip_list", "deny", bad.to_str().unwrap(), "-m", "typo"])
        .args(["--control", &format!("http://{a}"), "--token", ALICE])
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("line 1: `300.1.1.1` is not an IP address"), "{stderr}");

    // A stand-alone node reads the list from `file`, checked against the pin.
    let list_file = dir.join("deny.txt");
    std::fs::write(&list_file, &list2).unwrap();
    let standalone = format!(
        "{}\n[[artifacts]]\nname = \"deny\"\nkind = \"ip_list\"\nsha256 = \"{}\"\nfile = \"{}\"\n",
        zone_config(&["site.example"], &[origin.addr], "ip_deny = \"deny\""),
        content_hash(&list2),
        list_file.display()
    );
    let solo = edge(&standalone);
    assert_eq!(get_host(solo.http(), "site.example", "/").await.0, 403);
    // The file edited without the pin: refused at reload, naming both hashes.
    let list3 = b"192.0.2.0/24\n".to_vec();
    std::fs::write(&list_file, &list3).unwrap();
    solo.write_config(&standalone.replace(&content_hash(&list2), &content_hash(b"something else")));
    let (s, v) = solo.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains(&format!("has sha256 {}", content_hash(&list3))), "{v}");
    assert_eq!(get_host(solo.http(), "site.example", "/").await.0, 403, "still serving the running list");
    // The pin moved with it: applied.
    solo.write_config(&standalone.replace(&content_hash(&list2), &content_hash(&list3)));
    let (s, v) = solo.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(get_host(solo.http(), "site.example", "/").await.0, 200);
}

/// A zone's certificate from a `cert_bundle` artifact, fetched by hash and served by SNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_bundle_is_served_from_an_artifact() {
    let origin = origin("bundle-origin");
    let dir = temp_dir("bundle");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["site.example".into()]).unwrap().self_signed(&key).unwrap();
    let bundle = format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes();
    let bundle_file = dir.join("site.pem");
    std::fs::write(&bundle_file, &bundle).unwrap();
    let config = format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{}\" }}]\ntls = {{ bundle = \"site-cert\" }}\n\n[[artifacts]]\nname = \"site-cert\"\nkind = \"cert_bundle\"\nsha256 = \"{}\"\nfile = \"{}\"\n",
        listen_section(true),
        origin.addr,
        content_hash(&bundle),
        bundle_file.display()
    );
    let e = edge(&config);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(e.https.unwrap()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("site.example").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nhost: site.example\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));

    // A bundle whose key belongs to another certificate is refused at load, with the reason.
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&bundle_file, format!("{}{}", cert.pem(), other.serialize_pem())).unwrap();
    let swapped = config.replace(&content_hash(&bundle), &content_hash(&std::fs::read(&bundle_file).unwrap()));
    e.write_config(&swapped);
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("do not match"), "{v}");
}

/// Three nodes under steady traffic, all running a config whose zone scores every request with
/// the feature file `first`.
struct ModelFleet {
    a: SocketAddr,
    /// The config version every node runs at the start.
    v1: u64,
    fleet: Fleet,
}

impl ModelFleet {
    async fn start(tag: &str, first: &[u8]) -> Self {
        let fleet = Fleet::start(tag).await;
        let a = fleet.a;
        assert_eq!(push_artifact(a, "feature_file", "bot-model", first, "").await.0, 201);
        // The zone scores every request with the model, as the outage's proxies did.
        let zone = fleet.doc(
            "[zones.bot]\nmodel = \"bot-model\"\n[[zones.rules]]\nname = \"gate\"\n\
             expression = 'http.request.uri.path eq \"/challenge-me\"'\naction = \"challenge\"\n",
        );
        let config = format!("{zone}{}", pins(&[("bot-model", "feature_file", first)]));
        let v1 = push(a, ALICE, &config, "bot model", None).await.1["version"]["number"].as_u64().unwrap();
        let out = rollout_outcome(a, start_rollout_baking(a, v1, 300).await).await;
        assert_eq!(out["rollout"]["state"], "done", "{out}");
        let berlin = &fleet.nodes[0].1;
        eventually("berlin scores requests with the model", Duration::from_secs(10), || async move {
            berlin.metrics().await.contains("palisade_bot_scores_total{zone=")
        })
        .await;
        Self { a, v1, fleet }
    }

    async fn no_failed_requests(&mut self) {
        self.fleet.no_failed_requests().await;
    }
}

/// Incident replay 1: artifacts twice the allowed size, and with duplicated entries. The control
/// plane refuses them at push. Pushed past that check (`unchecked`, as when the control plane is
/// older than the nodes' decoders), each is refused by the canary, the rollout halts and rolls
/// back, and no node fails a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_an_oversized_or_duplicated_artifact_is_stopped_at_the_canary() {
    let mut f = ModelFleet::start("replay1", &model("m1", 60)).await;
    let (a, v1) = (f.a, f.v1);

    let twice_the_features = model("m2", 2 * limits::MAX_FEATURES);
    let mut duplicated = model("m3", 60);
    // The outage's cause: the same rows twice.
    let text = String::from_utf8(duplicated.clone()).unwrap();
    let (head, rest) = text.split_once('[').unwrap();
    let rows = rest.trim_end().trim_end_matches('}').trim_end().trim_end_matches(']');
    duplicated = format!("{head}[{rows},\n{rows}]}}").into_bytes();
    let mut twice_the_bytes = model("m4", 60);
    twice_the_bytes.extend(std::iter::repeat_n(b' ', 2 * limits::MAX_FEATURE_FILE_BYTES));

    for (what, bytes, reason) in [
        ("twice the features", &twice_the_features, "400 features; the limit is 200".to_string()),
        ("duplicated rows", &duplicated, "`f0` duplicates features[0]".to_string()),
        (
            "twice the bytes",
            &twice_the_bytes,
            format!("over the feature_file limit of {} bytes", limits::MAX_FEATURE_FILE_BYTES),
        ),
    ] {
        // The first line: the control plane's own check.
        let (s, v) = push_artifact(a, "feature_file", "bot-model", bytes, "&rollout=true").await;
        assert!(s == 422 || s == 413, "{what}: {s} {v}");
        // Past it: the canary refuses, the rollout rolls back at once.
        let (s, v) =
            push_artifact(a, "feature_file", "bot-model", bytes, "&unchecked=true&rollout=true&bake_ms=300").await;
        assert_eq!(s, 201, "{what}: {v}");
        let out = rolled_out(a, &v).await;
        assert_eq!(out["rollout"]["state"], "rolled_back", "{what}: {out}");
        let why = out["rollout"]["reason"].as_str().unwrap();
        assert!(why.contains("berlin refused") && why.contains("bot-model"), "{what}: {why}");
        let refused = nodes(a).await.into_iter().find(|n| n["name"] == "berlin").unwrap();
        assert!(refused["nack_detail"].as_str().unwrap().contains(&reason), "{what}: {refused}");
        eventually("every node back on v1", Duration::from_secs(10), || async move {
            nodes(a).await.iter().all(|n| n["applied"].as_u64() == Some(v1) && n["assigned"].as_u64() == Some(v1))
        })
        .await;
    }

    f.no_failed_requests().await;
    // The source's record: refused at push, rolled back, three times over.
    let (_, sources) = api(a, "GET", "/v1/artifacts/sources", Some(ALICE), None).await;
    let src = &sources["sources"][0];
    assert_eq!((src["kind"].as_str(), src["author"].as_str()), (Some("feature_file"), Some("alice")), "{sources}");
    assert!(src["recent"].as_array().unwrap().iter().any(|o| o["detail"].as_str().unwrap().starts_with("rolled back")));
}

/// Incident replay 3: a generator that makes a bad feature file every other cycle. Bad files are
/// refused at push or, pushed unchecked, at the canary; good ones roll out. No node ever runs a
/// bad file, no request fails, and the control plane reports the source as flapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_a_flapping_generator_never_moves_the_fleet_off_good_versions() {
    let mut f = ModelFleet::start("replay3", &model("gen-0", 40)).await;
    let (a, v1) = (f.a, f.v1);

    // Every config version a node reports running, seen by a watcher throughout.
    let good: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::from([v1])));
    let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), done.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for n in nodes(a).await {
                    if let Some(v) = n["applied"].as_u64() {
                        seen.lock().unwrap().insert(v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    for cycle in 1..=6 {
        if cycle % 2 == 1 {
            let (s, v) = push_artifact(
                a,
                "feature_file",
                "bot-model",
                &model(&format!("gen-{cycle}"), 40 + cycle),
                "&rollout=true&bake_ms=200",
            )
            .await;
            assert_eq!(s, 201, "cycle {cycle}: {v}");
            good.lock().unwrap().insert(v["config"]["number"].as_u64().unwrap());
            assert_eq!(rolled_out(a, &v).await["rollout"]["state"], "done", "cycle {cycle}");
        } else if cycle % 4 == 2 {
            // Refused at push.
            let bad = model(&format!("gen-{cycle}"), 2 * limits::MAX_FEATURES);
            assert_eq!(
                push_artifact(a, "feature_file", "bot-model", &bad, "&rollout=true").await.0,
                422,
                "cycle {cycle}"
            );
        } else {
            // Past the push check: refused by the canary.
            let bad = model(&format!("gen-{cycle}"), 2 * limits::MAX_FEATURES);
            let (s, v) =
                push_artifact(a, "feature_file", "bot-model", &bad, "&unchecked=true&rollout=true&bake_ms=200").await;
            assert_eq!(s, 201, "cycle {cycle}: {v}");
            assert_eq!(rolled_out(a, &v).await["rollout"]["state"], "rolled_back", "cycle {cycle}");
        }
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    f.no_failed_requests().await;
    let seen = seen.lock().unwrap().clone();
    let good = good.lock().unwrap().clone();
    assert!(seen.is_subset(&good), "a node ran a version outside the good ones: seen {seen:?}, good {good:?}");

    let (_, sources) = api(a, "GET", "/v1/artifacts/sources", Some(ALICE), None).await;
    assert_eq!(sources["sources"][0]["state"], "flapping", "{sources}");
    let out = std::process::Command::new(bin())
        .args(["artifact", "sources", "--control", &format!("http://{a}"), "--token", ALICE])
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bot-model") && stdout.contains("flapping") && stdout.contains("-+-+-+"), "{stdout}");
    let (_, audit) = api(a, "GET", "/v1/audit", Some(ALICE), None).await;
    assert!(audit["records"].as_array().unwrap().iter().any(|r| r["result"] == "flapping"), "{audit}");
}

/// A feature file that moves far from the one the fleet runs (here, 60 features to 100, within
/// every limit) is held until an operator approves it: the outage's file doubled in size. The
/// hold is audited; the approved push rolls out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_change_of_the_model_waits_for_an_approval() {
    let mut f = ModelFleet::start("approval", &model("m1", 60)).await;
    let a = f.a;
    // A small change passes the gate.
    let (s, v) = push_artifact(a, "feature_file", "bot-model", &model("m2", 70), "&rollout=true&bake_ms=300").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(rolled_out(a, &v).await["rollout"]["state"], "done");

    let bigger = model("m3", 120);
    let (s, v) = push_artifact(a, "feature_file", "bot-model", &bigger, "&rollout=true&bake_ms=300").await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "needs approval");
    let why = v["detail"].as_str().unwrap();
    assert!(why.contains("features 70 -> 120") && why.contains("approved=true"), "{why}");
    let (_, audit) = api(a, "GET", "/v1/audit", Some(ALICE), None).await;
    assert!(audit.to_string().contains("held for approval"), "{audit}");

    let (s, v) =
        push_artifact(a, "feature_file", "bot-model", &bigger, "&rollout=true&bake_ms=300&approved=true").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(rolled_out(a, &v).await["rollout"]["state"], "done");
    assert!(v["version"]["message"].as_str().unwrap().contains("(approved: features 70 -> 120"), "{v}");
    f.no_failed_requests().await;
}

/// One GET to `node` for site.example with these header lines; (status, head and body).
async fn get_with(node: SocketAddr, path: &str, lines: &[(&str, &str)]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(node).await.unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: site.example\r\n");
    for (k, v) in lines {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes()).await.unwrap();
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    (text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0), text)
}

/// The control plane generates the bot model from what the nodes learn: requests of clients
/// that passed a challenge (people) and of automation signatures (scripts), header by header.
/// The generated file replaces the learned features of the one the fleet runs and goes through
/// the same checks and staged rollout as a person's push, under the `generator` source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_generates_the_model_from_labelled_traffic() {
    let base = br#"{"model_version": "m1", "bias": -3.0, "features": [
        {"name": "lang", "extractor": "accept_language", "weight": 2.0},
        {"name": "fetch", "extractor": "sec_fetch", "weight": 2.0},
        {"name": "browser", "extractor": "ua_browser", "weight": 1.5},
        {"name": "sparse", "extractor": "few_headers", "weight": -2.0},
        {"name": "learned-x-old1", "extractor": "header_present:x-old1", "weight": 1.0},
        {"name": "learned-x-old2", "extractor": "header_present:x-old2", "weight": -1.0}]}"#;
    let mut f = ModelFleet::start("generate", base).await;
    let a = f.a;
    let (s, v) = api(a, "POST", "/v1/bot/generate/bot-model", Some(ALICE), None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not enough labelled traffic"), "{v}");

    // A person: passes berlin's challenge, then browses with the clearance.
    let berlin = f.fleet.nodes[0].1.http();
    const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0";
    let (s, page) = get_with(berlin, "/challenge-me", &[("user-agent", UA)]).await;
    assert_eq!(s, 403);
    let start = page.find("data-t=\"").unwrap() + 8;
    let token = page[start..].split('"').next().unwrap().to_string();
    let difficulty: u32 = page.split("data-d=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    let nonce = (0u64..).find(|n| palisade_edge::challenge::work(&token, &n.to_string()) >= difficulty).unwrap();
    let (s, answer) =
        get_with(berlin, &format!("/.palisade/challenge?t={token}&n={nonce}&r=/"), &[("user-agent", UA)]).await;
    assert_eq!(s, 303, "{answer}");
    let cookie = answer.lines().find_map(|l| l.strip_prefix("set-cookie: ")).unwrap().split(';').next().unwrap();
    for _ in 0..60 {
        let (s, _) = get_with(berlin, "/", &[("user-agent", UA), ("cookie", cookie), ("x-person", "1")]).await;
        assert_eq!(s, 200);
    }
    // A script.
    for _ in 0..60 {
        assert_eq!(get_with(berlin, "/", &[("user-agent", "curl/8.5.0"), ("x-script", "1")]).await.0, 200);
    }
    eventually("the control plane has berlin's counts", Duration::from_secs(10), || async move {
        let (_, v) = api(a, "GET", "/v1/bot/learning", Some(ALICE), None).await;
        v["learning"]["human"].as_u64() >= Some(60) && v["learning"]["bot"].as_u64() >= Some(60)
    })
    .await;

    let (s, v) = api(a, "POST", "/v1/bot/generate/bot-model?rollout=true&bake_ms=300", Some(ALICE), None).await;
    assert_eq!(s, 201, "{v}");
    let message = v["version"]["message"].as_str().unwrap();
    assert!(message.starts_with("gen-") && message.contains("generated from 1 node(s)"), "{message}");
    assert_eq!(rolled_out(a, &v).await["rollout"]["state"], "done");
    // The file the fleet runs now: people's header up, scripts' down, the old learned ones gone,
    // the base's own features kept.
    let hash = v["version"]["hash"].as_str().unwrap();
    let (_, _, text) = api_full(a, "GET", &format!("/v1/artifacts/{hash}/content"), Some(ALICE), None).await;
    let file: Value = serde_json::from_str(&text).unwrap();
    let weight = |x: &str| {
        file["features"].as_array().unwrap().iter().find(|f| f["extractor"] == x).map(|f| f["weight"].as_f64().unwrap())
    };
    assert!(weight("header_present:x-person").unwrap() > 2.0, "{file}");
    assert!(weight("header_present:x-script").unwrap() < -2.0, "{file}");
    assert_eq!(weight("header_present:x-old1"), None, "{file}");
    assert_eq!(weight("accept_language"), Some(2.0), "{file}");
    let (_, sources) = api(a, "GET", "/v1/artifacts/sources", Some(ALICE), None).await;
    assert!(sources["sources"].as_array().unwrap().iter().any(|s| s["author"] == "generator"), "{sources}");
    f.no_failed_requests().await;
}
