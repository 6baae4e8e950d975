//! The security module pipeline on a real node: a module that errors or panics is contained at
//! its boundary (the connection and the process carry on), its failure policy decides the
//! request, its circuit breaker switches it off and back on, and its kill switches (the zone's
//! config, the node's admin API) turn it off on the next request.

mod common;

use std::time::Duration;

use common::*;

const FAULT: &str = "x-fault-drill-7f3a";

fn config(origin: std::net::SocketAddr, closed_extra: &str) -> String {
    format!(
        "{}\n[[zones]]\nname = \"open\"\nhostnames = [\"open.example\"]\norigins = [{{ address = \"{origin}\" }}]\n\
         fault = {{ header = \"{FAULT}\" }}\n\
         [zones.modules.fault]\nbreaker_threshold = 3\nbreaker_window_ms = 60000\nbreaker_cooldown_ms = 1000\n\
         \n[[zones]]\nname = \"closed\"\nhostnames = [\"closed.example\"]\norigins = [{{ address = \"{origin}\" }}]\n\
         fault = {{ header = \"{FAULT}\" }}\n\
         [zones.modules.fault]\nfailure_policy = \"fail_closed\"\nbreaker_threshold = 1000\n{closed_extra}",
        listen_section(false)
    )
}

async fn faulty(e: &EdgeProc, host: &str, what: &str) -> u16 {
    request_full(&client(), "GET", &format!("http://{}/", e.http()), &[("host", host), (FAULT, what)], Vec::new())
        .await
        .0
}

async fn metric(e: &EdgeProc, name: &str, zone: &str) -> f64 {
    e.metric(&format!("{name}{{zone=\"{zone}\",module=\"fault\"}}")).await.unwrap_or(-1.0)
}

#[tokio::test]
async fn failing_modules_are_contained_follow_their_policy_and_can_be_switched_off() {
    let origin = origin("modules-origin");
    let e = edge(&config(origin.addr, ""));

    // fail_open: a panic and an error inside the module; the request still reaches the origin,
    // and the same keep-alive connection serves the next request (its task survived).
    let mut conn = tokio::net::TcpStream::connect(e.http()).await.unwrap();
    for what in ["panic", "error"] {
        let (s, _) = get_on_with(&mut conn, "open.example", &[(FAULT, what)]).await;
        assert_eq!(s, 200, "{what}");
    }
    assert_eq!(get_on(&mut conn, "open.example", "/").await.0, 200);
    assert_eq!(metric(&e, "palisade_module_panics_total", "open").await, 1.0);
    assert_eq!(metric(&e, "palisade_module_errors_total", "open").await, 1.0);
    assert_eq!(metric(&e, "palisade_module_skipped_total", "open").await, 2.0);

    // The third failure within the window opens the breaker: the module is not called while it
    // is open (no more panics counted), and requests are served.
    assert_eq!(faulty(&e, "open.example", "error").await, 200);
    assert_eq!(metric(&e, "palisade_module_breaker_trips_total", "open").await, 1.0);
    assert_eq!(metric(&e, "palisade_module_breaker_open", "open").await, 1.0);
    for _ in 0..5 {
        assert_eq!(faulty(&e, "open.example", "panic").await, 200);
    }
    assert_eq!(metric(&e, "palisade_module_panics_total", "open").await, 1.0, "not called while open");
    // After the cool-down it is tried again; one failure right away opens it again.
    eventually("the breaker closes after its cool-down", Duration::from_secs(5), || async {
        faulty(&e, "open.example", "panic").await == 200
            && metric(&e, "palisade_module_panics_total", "open").await == 2.0
    })
    .await;
    assert_eq!(metric(&e, "palisade_module_breaker_trips_total", "open").await, 2.0);

    // fail_closed: a failure refuses the request with 503 and a page that says so; a request
    // the module passes is served.
    let (s, _, page) = request_full(
        &client(),
        "GET",
        &format!("http://{}/", e.http()),
        &[("host", "closed.example"), (FAULT, "error")],
        Vec::new(),
    )
    .await;
    assert_eq!(s, 503);
    assert!(page.contains("Service unavailable"), "{page}");
    assert_eq!(faulty(&e, "closed.example", "panic").await, 503);
    assert_eq!(get_host(e.http(), "closed.example", "/").await.0, 200);
    assert_eq!(metric(&e, "palisade_module_refused_total", "closed").await, 2.0);

    // The node's own kill switch (admin API) turns the module off on the next request, in every
    // zone; nothing else changes. Released, it is back.
    let (s, v) = e.admin_json("POST", "/killswitches/fault/off", "").await;
    assert_eq!(s, 200, "{v}");
    let calls = metric(&e, "palisade_module_calls_total", "closed").await;
    assert_eq!(faulty(&e, "closed.example", "error").await, 200);
    assert_eq!(metric(&e, "palisade_module_calls_total", "closed").await, calls, "not called while off");
    assert_eq!(get_host(e.http(), "open.example", "/").await.0, 200);
    let (_, modules) = e.admin_json("GET", "/modules", "").await;
    assert_eq!(modules["result"]["switched_off"]["node"], serde_json::json!(["fault"]), "{modules}");
    assert_eq!(e.admin_json("POST", "/killswitches/warp_drive/off", "").await.0, 404);
    e.admin_json("POST", "/killswitches/fault/release", "").await;
    assert_eq!(faulty(&e, "closed.example", "error").await, 503);

    // The zone's own switch: `enabled = false` in config turns it off in that zone only.
    e.write_config(&config(origin.addr, "enabled = false\n"));
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(faulty(&e, "closed.example", "error").await, 200);
    assert_eq!(faulty(&e, "open.example", "panic").await, 200);

    // An unknown module in config is refused with its path and the known names.
    e.write_config(
        &config(origin.addr, "")
            .replace("[zones.modules.fault]\nfailure_policy", "[zones.modules.faults]\nfailure_policy"),
    );
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("zones[1].modules.faults: no module named `faults`"), "{v}");
    let (_, health) = e.admin_json("GET", "/healthz", "").await;
    assert_eq!(health["result"]["status"], "ok");
}

/// A GET on a kept-alive connection with extra headers: (status, body).
async fn get_on_with(s: &mut tokio::net::TcpStream, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    s.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\n{extra}\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: ").or_else(|| l.strip_prefix("Content-Length: ")))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (status, body.to_string());
            }
        }
    }
}

/// The rollout gates read module failures: a version whose module errors on every request (the
/// requests themselves still succeed, fail_open) is rolled back on the module error rate, and a
/// version whose module panics is rolled back on the panic. No request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_errors_and_panics_on_a_new_version_roll_it_back() {
    use common::fleet::*;
    let mut fleet = Fleet::start("module-gates").await;
    let a = fleet.a;

    for (fault, why) in [
        ("fault = { error_percent = 100 }", "module error regression"),
        ("fault = { panic_percent = 10 }", "panic(s) caught in modules"),
    ] {
        let doc = fleet.doc(fault);
        let (s, v) = push(a, ALICE, &doc, fault, None).await;
        assert_eq!(s, 201, "{v}");
        let n = v["version"]["number"].as_u64().unwrap();
        let out = rollout_outcome(a, start_rollout_baking(a, n, 3000).await).await;
        assert_eq!(out["rollout"]["state"], "rolled_back", "{fault}: {out}");
        let reason = out["rollout"]["reason"].as_str().unwrap();
        assert!(reason.starts_with("stage 1") && reason.contains(why), "{fault}: {reason}");
    }
    fleet.no_failed_requests().await;
}

/// Firewall rules in order on a real node: the first allow or block decides, log counts and goes
/// on; a `$list` is an ip_list artifact; a bad expression is refused with its column; the
/// firewall's kill switch turns every rule off on the next request.
#[tokio::test]
async fn firewall_rules_allow_block_and_log_in_order() {
    let origin = origin("rules-origin");
    let dir = temp_dir("rules");
    let list = dir.join("partners.txt");
    std::fs::write(&list, "127.0.0.0/8\n").unwrap();
    let hash = palisade_config::content_hash(b"127.0.0.0/8\n");
    let config = |admin_rule: &str| {
        format!(
            "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{}\" }}]\n\
             [[zones.rules]]\nname = \"trusted\"\nexpression = 'http.request.headers[\"x-trusted\"] eq \"yes\"'\naction = \"allow\"\n\
             [[zones.rules]]\nname = \"admin\"\nexpression = '{admin_rule}'\naction = \"block\"\n\
             [[zones.rules]]\nname = \"curl\"\nexpression = 'http.user_agent contains \"curl\"'\naction = \"log\"\n\
             [[zones.rules]]\nname = \"partners-write\"\nexpression = 'ip.src in $partners and http.request.method in {{ \"DELETE\" }}'\naction = \"block\"\n\
             \n[[artifacts]]\nname = \"partners\"\nkind = \"ip_list\"\nsha256 = \"{hash}\"\nfile = \"{}\"\n",
            listen_section(false),
            origin.addr,
            list.display()
        )
    };
    let path = dir.join("palisade.toml");
    std::fs::write(&path, config(r#"http.request.uri.path wildcard "/admin*" and not ssl"#)).unwrap();
    let e = edge_with(dir.clone(), path, &[]);
    let url = |p: &str| format!("http://{}{p}", e.http());
    let send = |method: &'static str, p: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let u = url(p);
        async move {
            let mut h = vec![("host", "site.example")];
            h.extend(headers);
            request_full(&client(), method, &u, &h, Vec::new()).await.0
        }
    };
    assert_eq!(send("GET", "/admin/users", vec![]).await, 403);
    // Let through, the request reaches the origin (which has no such page: 404).
    assert_eq!(send("GET", "/admin/users", vec![("x-trusted", "yes")]).await, 404, "allow comes first");
    assert_eq!(send("GET", "/", vec![("user-agent", "curl/8.5")]).await, 200, "log goes on");
    assert_eq!(send("DELETE", "/thing", vec![]).await, 403, "the $partners list holds loopback");
    assert_eq!(send("GET", "/thing", vec![]).await, 404);
    let m = e.metrics().await;
    for (rule, n) in [("trusted", 1), ("admin", 1), ("curl", 1), ("partners-write", 1)] {
        let line = format!("palisade_rule_matches_total{{zone=\"site\",rule=\"{rule}\"}} {n}");
        assert!(m.contains(&line), "{line} in\n{m}");
    }

    // The firewall's kill switch (this node's admin API): no rule blocks; released, they do.
    e.admin_json("POST", "/killswitches/firewall/off", "").await;
    assert_eq!(send("GET", "/admin/users", vec![]).await, 404);
    e.admin_json("POST", "/killswitches/firewall/release", "").await;
    assert_eq!(send("GET", "/admin/users", vec![]).await, 403);

    // A bad expression is refused with its rule and column; the running rules stay.
    e.write_config(&config(r#"http.request.uri.path wildcard "/admin*" and not sssl"#));
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("zones[0].rules[1].expression: column 50: unknown field `sssl`"), "{v}");
    assert_eq!(send("GET", "/admin/users", vec![]).await, 403);
    e.write_config(&config(r#"ip.src in $nobody"#));
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("no artifact named `nobody`"), "{v}");
}

/// Rate limits on a real node: a burst gets exactly the configured count through and the rest
/// 429 with Retry-After; counters are per characteristic; other paths are not counted; the
/// kill switch lets everything through; a bad characteristic is refused with its path.
#[tokio::test]
async fn rate_limits_pass_exactly_the_limit_and_answer_429_with_retry_after() {
    let origin = origin("limits-origin");
    let config = |characteristic: &str| {
        format!(
            "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{}\" }}]\n\
             [[zones.rate_limits]]\nname = \"login\"\nexpression = 'http.request.uri.path eq \"/login\"'\n\
             characteristics = [\"{characteristic}\"]\nperiod_s = 60\nrequests = 5\n\
             [[zones.rate_limits]]\nname = \"api\"\nexpression = 'http.request.uri.path wildcard \"/api/*\"'\n\
             characteristics = [\"header:x-api-key\"]\nperiod_s = 60\nrequests = 3\nmitigation_timeout_s = 120\n",
            listen_section(false),
            origin.addr
        )
    };
    let e = edge(&config("ip.src"));
    let send = |path: &'static str, key: &'static str| {
        let url = format!("http://{}{path}", e.http());
        async move {
            let (s, h, _) =
                request_full(&client(), "GET", &url, &[("host", "site.example"), ("x-api-key", key)], Vec::new()).await;
            (s, h.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()))
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(send("/login", "a").await);
    }
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(statuses.len() - limited.len(), 5, "exactly the limit passes: {statuses:?}");
    assert!(limited.iter().all(|(_, retry)| retry.is_some_and(|r| (1..=60).contains(&r))), "{statuses:?}");
    assert_ne!(send("/", "a").await.0, 429, "other paths are not counted");

    // Per API key: key a is held down for the mitigation timeout, key b is not affected.
    for _ in 0..3 {
        assert_ne!(send("/api/x", "a").await.0, 429);
    }
    assert_eq!(send("/api/x", "a").await, (429, Some(120)));
    // The page of a refusal: its own header lines and its text, its request ID in both.
    let url = format!("http://{}/api/x", e.http());
    let (s, h, body) =
        request_full(&client(), "GET", &url, &[("host", "site.example"), ("x-api-key", "a")], Vec::new()).await;
    let id = h["x-request-id"].to_str().unwrap();
    assert_eq!((s, id.len()), (429, 16), "{h:?}");
    assert!(body.contains(&format!("Request ID: <code>{id}</code>")) && body.ends_with("</html>\n"), "{body}");
    assert_eq!(h["content-length"].to_str().unwrap(), body.len().to_string());
    assert_eq!(
        (h["content-type"].to_str().unwrap(), h["cache-control"].to_str().unwrap()),
        ("text/html; charset=utf-8", "no-store")
    );
    assert_ne!(send("/api/x", "b").await.0, 429);
    let m = e.metrics().await;
    assert!(m.contains("palisade_rate_limit_limited_total{zone=\"site\",limit=\"login\"} 7"), "{m}");
    assert!(m.contains("palisade_rate_limit_keys{zone=\"site\",limit=\"api\"} 2"), "{m}");

    // The kill switch: nothing is limited; released, the limits hold again.
    e.admin_json("POST", "/killswitches/rate_limits/off", "").await;
    assert_ne!(send("/login", "a").await.0, 429);
    e.admin_json("POST", "/killswitches/rate_limits/release", "").await;
    assert_eq!(send("/login", "a").await.0, 429);

    e.write_config(&config("cookies:session"));
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("zones[0].rate_limits[0].characteristics[0]"), "{v}");
}
