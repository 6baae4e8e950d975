use super::*;

const GOOD: &str = r#"
version = 3
[listen]
http = "127.0.0.1:8080"
admin = "127.0.0.1:9901"

[[zones]]
name = "shop"
hostnames = ["shop.example", "*.shop.example"]
origins = [{ address = "127.0.0.1:9000" }, { address = "127.0.0.1:9001", weight = 3 }]
balance = "consistent_hash"
hash_key = "cookie:session"
[zones.health_check]
path = "/health"
"#;

fn paths(e: &ConfigError) -> Vec<String> {
    e.problems().into_iter().map(|p| p.path).collect()
}

#[test]
fn good_document_loads_with_defaults_and_hash() {
    let v = load(GOOD.as_bytes()).unwrap();
    assert_eq!(v.doc.version, 3);
    assert_eq!(v.hash, content_hash(GOOD.as_bytes()));
    assert_eq!(v.zones[0].hash_key, HashKey::Cookie("session".into()));
    assert_eq!(v.zones[0].origin_addrs.len(), 2);
    assert_eq!(v.doc.limits, ConnectionLimits::default());
}

#[test]
fn unknown_field_is_a_syntax_error_with_position() {
    let bad = GOOD.replace("balance =", "balanse =");
    let e = load(bad.as_bytes()).unwrap_err();
    match &e {
        ConfigError::Syntax { line, message, .. } => {
            assert!(message.contains("balanse"), "{message}");
            assert_eq!(*line, 11);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let bad = r#"
[listen]
http = "127.0.0.1:8080"
admin = "127.0.0.1:8080"
[limits]
max_headers = 5000
[[zones]]
name = "a"
hostnames = ["a.example", "bad host"]
origins = [{ address = "nowhere" }, { address = "127.0.0.1:1", weight = 0 }]
[[zones]]
name = "a"
hostnames = ["A.example"]
origins = []
hash_key = "client_ip"
[zones.timeouts]
connect_ms = 0
"#;
    let e = load(bad.as_bytes()).unwrap_err();
    let p = paths(&e);
    for want in [
        "listen.admin",
        "limits.max_headers",
        "zones[0].hostnames[1]",
        "zones[0].origins[0].address",
        "zones[0].origins[1].weight",
        "zones[1].name",
        "zones[1].hostnames[0]",
        "zones[1].origins",
        "zones[1].hash_key",
        "zones[1].timeouts.connect_ms",
    ] {
        assert!(p.iter().any(|x| x == want), "missing {want} in {p:?}");
    }
    let text = e.to_string();
    assert!(text.contains("5000 is out of range; allowed 8..=1000"), "{text}");
    assert!(text.contains("duplicate hostname `a.example`"), "{text}");
}

#[test]
fn oversized_document_names_the_limit() {
    let big = format!("{GOOD}\n#{}", "x".repeat(limits::MAX_DOCUMENT_BYTES));
    let e = load(big.as_bytes()).unwrap_err();
    assert!(matches!(e, ConfigError::TooLarge { limit, .. } if limit == limits::MAX_DOCUMENT_BYTES));
    assert!(e.to_string().contains(&limits::MAX_DOCUMENT_BYTES.to_string()));
}

#[test]
fn too_many_origins_and_zones_are_refused_with_the_count() {
    let mut doc = String::from(
        "[listen]\nhttp = \"127.0.0.1:8080\"\n[[zones]]\nname = \"z\"\nhostnames = [\"z.example\"]\norigins = [",
    );
    for i in 0..(limits::MAX_ORIGINS_PER_ZONE + 1) {
        doc.push_str(&format!("{{ address = \"127.0.0.1:{}\" }},", 1000 + i));
    }
    doc.push_str("]\n");
    let e = load(doc.as_bytes()).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "has {} entries; the limit is {}",
            limits::MAX_ORIGINS_PER_ZONE + 1,
            limits::MAX_ORIGINS_PER_ZONE
        )),
        "{e}"
    );

    let mut doc = String::from("[listen]\nhttp = \"127.0.0.1:8080\"\n");
    for i in 0..(limits::MAX_ZONES + 1) {
        doc.push_str(&format!(
            "[[zones]]\nname = \"z{i}\"\nhostnames = [\"z{i}.example\"]\norigins = [{{ address = \"127.0.0.1:1\" }}]\n"
        ));
    }
    let e = load(doc.as_bytes()).unwrap_err();
    assert!(paths(&e).contains(&"zones".to_string()), "{e}");
}

#[test]
fn duplicated_entries_are_refused() {
    // The 18 November failure mode: the same rows twice.
    let dup = GOOD.replace(
        "origins = [{ address = \"127.0.0.1:9000\" }",
        "origins = [{ address = \"127.0.0.1:9000\" }, { address = \"127.0.0.1:9000\" }",
    );
    let e = load(dup.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("duplicate origin 127.0.0.1:9000"), "{e}");
    // A whole zone duplicated.
    let start = GOOD.find("[[zones]]").unwrap();
    let twice = format!("{GOOD}\n{}", &GOOD[start..]);
    let e = load(twice.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("duplicate zone name"), "{e}");
}

#[test]
fn every_truncation_is_rejected_or_valid_never_a_panic() {
    let bytes = GOOD.as_bytes();
    for n in 0..bytes.len() {
        // Must return, whatever the cut. Most cuts are errors; some are valid documents.
        let _ = load(&bytes[..n]);
    }
    assert!(load(&bytes[..GOOD.find("[[zones]]").unwrap()]).is_ok());
    assert!(load(&bytes[..bytes.len() - 10]).is_err());
}

#[test]
fn random_and_mutated_inputs_are_rejected_cleanly() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut rejected = 0;
    for _ in 0..3000 {
        let len = (next() % 512) as usize;
        let random: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if load(&random).is_err() {
            rejected += 1;
        }
        let mut mutated = GOOD.as_bytes().to_vec();
        for _ in 0..(1 + next() % 4) {
            let i = (next() as usize) % mutated.len();
            mutated[i] = next() as u8;
        }
        let _ = load(&mutated);
    }
    assert!(rejected > 2900, "random bytes were accepted {} times", 3000 - rejected);
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let deep = format!("x = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(load(deep.as_bytes()).is_err());
}

#[test]
fn hostnames() {
    assert_eq!(validate::check_hostname("*.Example.COM").unwrap(), "*.example.com");
    for bad in ["", "*.", "a..b", "-a.b", "a b", "*.*.a", "a.*.b", &"a".repeat(64)] {
        assert!(validate::check_hostname(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_readme_example_is_a_valid_document_with_every_default_spelled_out() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let v = load(&readme.as_bytes()[start..end]).unwrap();
    let z = &v.doc.zones[0];
    // The comments claim these are the defaults: keep them honest.
    assert_eq!(v.doc.limits, ConnectionLimits::default());
    assert_eq!(v.doc.access_log, AccessLogSection::default());
    assert_eq!(z.timeouts, PoolTimeouts::default());
    assert_eq!(z.retries, RetryPolicy::default());
    assert_eq!(z.passive_health, PassiveHealth::default());
    let hc = z.health_check.as_ref().unwrap();
    assert_eq!((hc.interval_ms, hc.timeout_ms, hc.expected_status), (5000, 2000, 200));
    assert_eq!(z.ip_deny.as_deref(), Some("blocked"));
    assert_eq!(v.doc.artifacts[0].kind, crate::artifact::ArtifactKind::IpList);
}

#[test]
fn origin_queue_and_ddos_settings_name_the_field_and_the_range() {
    let v = load(GOOD.as_bytes()).unwrap();
    assert!(v.doc.zones[0].ddos.enabled, "automatic DDoS mitigation is on by default");
    assert_eq!(v.doc.zones[0].concurrency, None);
    let bad = format!(
        "{GOOD}[zones.concurrency]\nmax_in_flight = 0\n[zones.ddos]\nconcentration_percent = 101\nsurge_factor_tenths = 10\n"
    );
    let e = load(bad.as_bytes()).unwrap_err();
    let problems = e.problems();
    let find = |path: &str| problems.iter().find(|p| p.path == path).map(|p| p.message.clone());
    assert_eq!(find("zones[0].concurrency.max_in_flight").as_deref(), Some("0 is out of range; allowed 1..=1000000"));
    assert_eq!(find("zones[0].ddos.concentration_percent").as_deref(), Some("101 is out of range; allowed 1..=100"));
    assert_eq!(find("zones[0].ddos.surge_factor_tenths").as_deref(), Some("10 is out of range; allowed 11..=10000"));
    let good = format!("{GOOD}[zones.concurrency]\nmax_in_flight = 8\n[zones.ddos]\naction = \"rate_limit\"\n");
    let v = load(good.as_bytes()).unwrap();
    let q = v.doc.zones[0].concurrency.clone().unwrap();
    assert_eq!((q.max_in_flight, q.max_queue, q.queue_timeout_ms), (8, 1024, 2000));
    assert_eq!(v.doc.zones[0].ddos.action, DdosAction::RateLimit);
}

#[test]
fn the_readme_ddos_example_spells_out_the_defaults() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n[zones.ddos]\n").unwrap() + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let v = load(format!("{GOOD}{}", &readme[start..end]).as_bytes()).unwrap();
    assert_eq!(v.doc.zones[0].ddos, Ddos::default());
}

#[test]
fn rate_limit_characteristics_parse_and_a_bad_one_lists_the_choices() {
    assert_eq!(parse_characteristic("http.fingerprint"), Ok(Characteristic::HttpFingerprint));
    assert_eq!(parse_characteristic("ip.src/24"), Ok(Characteristic::Ip { v4_prefix: 24, v6_prefix: 64 }));
    assert_eq!(parse_characteristic("tls.ja4"), Ok(Characteristic::TlsJa4));
    let e = parse_characteristic("tls.ja3").unwrap_err();
    assert!(e.contains("http.fingerprint") && e.contains("`tls.ja3`"), "{e}");
}

#[test]
fn the_readme_cache_examples_spell_out_the_defaults_and_validate() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n[cache]").unwrap() + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let v = load(format!("{GOOD}{}", &readme[start..end]).as_bytes()).unwrap();
    assert_eq!(v.doc.cache, CacheSection::default());
    assert_eq!(v.doc.zones[0].cache, ZoneCache::default());
    let start = readme.find("```toml\n[[zones.cache.rules]]").unwrap() + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let v = load(format!("{GOOD}{}", &readme[start..end]).as_bytes()).unwrap();
    let r = &v.doc.zones[0].cache.rules[0];
    assert_eq!((r.edge_ttl_s, r.browser_ttl_s), (Some(86400), Some(3600)));
    assert_eq!(r.key.as_ref().unwrap().query.as_deref(), Some(&["v".to_string()][..]));
    assert!(v.zones[0].cache_rules[0].is_some());
}

#[test]
fn cache_settings_name_the_field_and_the_limit() {
    let bad = format!(
        "{GOOD}[cache]\nmax_object_bytes = 100000000\n[zones.cache]\nlock_timeout_ms = 60001\n\
[[zones.cache.rules]]\nname = \"a\"\nexpression = 'http.host eq'\nedge_ttl_s = 99999999999\n\
key = {{ headers = [\"Accept\"], query = [\"a=b\"] }}\n\
[[zones.cache.rules]]\nname = \"a\"\naction = \"bypass\"\n"
    );
    let e = load(bad.as_bytes()).unwrap_err();
    let problems = e.problems();
    let find = |path: &str| problems.iter().find(|p| p.path == path).map(|p| p.message.clone()).unwrap_or_default();
    assert_eq!(find("cache.max_object_bytes"), "100000000 is out of range; allowed 0..=67107840");
    assert_eq!(find("zones[0].cache.lock_timeout_ms"), "60001 is out of range; allowed 0..=60000");
    assert!(find("zones[0].cache.rules[0].expression").contains("column"), "{problems:?}");
    assert!(find("zones[0].cache.rules[0].edge_ttl_s").contains("allowed 0..=31536000"));
    assert!(find("zones[0].cache.rules[0].key.headers[0]").contains("lowercase"));
    assert!(find("zones[0].cache.rules[0].key.query[0]").contains("without `=`"));
    assert!(find("zones[0].cache.rules[1].name").contains("also the name of cache.rules[0]"));
    let many: String = (0..51).map(|i| format!("[[zones.cache.rules]]\nname = \"r{i}\"\n")).collect();
    let e = load(format!("{GOOD}{many}").as_bytes()).unwrap_err();
    assert!(e.problems().iter().any(|p| p.path == "zones[0].cache.rules" && p.message.contains("50")), "{e}");
}
