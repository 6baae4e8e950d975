//! The `challenge` action on a real node: the page, its proof of work and its slow path without
//! JavaScript, the clearance cookie and what it is bound to, rate limits that challenge, and a
//! real headless Chromium passing the challenge (with and without JavaScript) to reach the
//! origin.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;
use tokio::io::AsyncWriteExt;

/// A response read off a raw connection: status, header block (lowercased names), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One GET from source address `src`, with a user agent and an optional cookie.
async fn ask(addr: SocketAddr, src: &str, host: &str, path: &str, ua: &str, cookie: Option<&str>) -> Answer {
    let mut s = connect_from(src, addr).await.unwrap();
    let cookie = cookie.map(|c| format!("cookie: {c}\r\n")).unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: {ua}\r\n{cookie}connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let text = read_all(&mut s, Duration::from_secs(10)).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer { status: head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0), head: head.into(), body: body.into() }
}

/// The token a challenge page carries (its script's `data-t`).
fn token(page: &str) -> String {
    let start = page.find("data-t=\"").expect("a token on the page") + 8;
    page[start..].split('"').next().unwrap().to_string()
}

/// A nonce doing at least `bits` of work for `token` (what the page's script finds), or with
/// `at_most` set, one doing less than that.
fn nonce(token: &str, bits: u32, at_most: bool) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|n| {
            let w = palisade_edge::challenge::work(token, n);
            if at_most {
                w < bits
            } else {
                w >= bits
            }
        })
        .unwrap()
}

/// `palisade_clearance=...` from a Set-Cookie value.
fn clearance(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

fn config(origin: SocketAddr, extra: &str) -> String {
    format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{origin}\" }}]\n\
         [zones.challenge]\ndifficulty = 10\nwait_s = 1\nclearance_ttl_s = 120\n\
         [[zones.rules]]\nname = \"gate\"\nexpression = 'http.request.uri.path eq \"/bytes/7\"'\naction = \"challenge\"\n\
         {extra}\n\
         [[zones]]\nname = \"other\"\nhostnames = [\"other.example\"]\norigins = [{{ address = \"{origin}\" }}]\n\
         [[zones.rules]]\nname = \"gate\"\nexpression = 'http.request.uri.path eq \"/bytes/7\"'\naction = \"challenge\"\n",
        listen_section(false)
    )
}

const UA: &str = "Mozilla/5.0 test-browser";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_is_passed_by_work_or_by_waiting_and_the_clearance_is_bound_to_the_client() {
    let origin = origin("challenge-origin");
    let e = edge(&config(origin.addr, ""));
    let addr = e.http();

    // The page: 403, marked, uncacheable, a strict CSP, no external resources.
    let page = ask(addr, "127.0.0.2", "site.example", "/bytes/7", UA, None).await;
    assert_eq!(page.status, 403);
    assert_eq!(page.header("palisade-mitigated").as_deref(), Some("challenge"));
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!page.body.contains("http://") && !page.body.contains("https://"), "no external resources");
    assert!(page.body.contains("role=\"status\""), "the progress is announced to screen readers");
    assert!(page.body.len() < 8192, "a small page: {} bytes", page.body.len());
    assert_eq!(origin_stats(origin.addr).await["requests"], 1, "the origin was not asked (only this stats call)");
    let t = token(&page.body);

    // Work too little: refused, with a new challenge.
    let weak = nonce(&t, 10, true);
    let r =
        ask(addr, "127.0.0.2", "site.example", &format!("/.palisade/challenge?t={t}&n={weak}&r=/bytes/7"), UA, None)
            .await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    // The token is bound to its client: another /24 cannot answer it.
    let n = nonce(&t, 10, false);
    let answer = format!("/.palisade/challenge?t={t}&n={n}&r=%2Fbytes%2F7");
    let r = ask(addr, "127.0.1.2", "site.example", &answer, UA, None).await;
    assert_eq!(r.status, 403, "a token answered from elsewhere");
    let r = ask(addr, "127.0.0.2", "site.example", &answer, "another agent", None).await;
    assert_eq!(r.status, 403, "a token answered by another user agent");

    // Work done: 303 back to the page, with the clearance cookie.
    let r = ask(addr, "127.0.0.2", "site.example", &answer, UA, None).await;
    assert_eq!(r.status, 303, "{}", r.head);
    assert_eq!(r.header("location").as_deref(), Some("/bytes/7"));
    let set = r.header("set-cookie").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Max-Age=120"), "{set}");
    let cookie = clearance(&set);

    // The clearance passes the rule, from the same /24 with the same user agent only.
    let ok = ask(addr, "127.0.0.2", "site.example", "/bytes/7", UA, Some(&cookie)).await;
    assert_eq!((ok.status, ok.body.len()), (200, 7));
    assert_eq!(ask(addr, "127.0.0.99", "site.example", "/bytes/7", UA, Some(&cookie)).await.status, 200, "same /24");
    assert_eq!(ask(addr, "127.0.1.2", "site.example", "/bytes/7", UA, Some(&cookie)).await.status, 403, "other /24");
    assert_eq!(
        ask(addr, "127.0.0.2", "site.example", "/bytes/7", "curl/8", Some(&cookie)).await.status,
        403,
        "other UA"
    );
    assert_eq!(ask(addr, "127.0.0.2", "other.example", "/bytes/7", UA, Some(&cookie)).await.status, 403, "other zone");
    let mut forged = cookie.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(ask(addr, "127.0.0.2", "site.example", "/bytes/7", UA, Some(&forged)).await.status, 403, "forged");
    // Among other cookies, and unchallenged paths never look at it.
    let among = format!("a=1; {cookie}; b=2");
    assert_eq!(ask(addr, "127.0.0.2", "site.example", "/bytes/7", UA, Some(&among)).await.status, 200);
    assert_eq!(ask(addr, "127.0.0.2", "site.example", "/bytes/3", UA, None).await.status, 200);

    // The way back stays on the site.
    let page = ask(addr, "127.0.0.3", "site.example", "/bytes/7", UA, None).await;
    let t = token(&page.body);
    let n = nonce(&t, 10, false);
    let r = ask(
        addr,
        "127.0.0.3",
        "site.example",
        &format!("/.palisade/challenge?t={t}&n={n}&r=//evil.example/"),
        UA,
        None,
    )
    .await;
    assert_eq!((r.status, r.header("location").as_deref()), (303, Some("/")));

    // Without JavaScript: the page refreshes to the slow path after wait_s; asked early, it
    // shows the same page again with the rest of the wait; after it, the clearance.
    let page = ask(addr, "127.0.0.4", "site.example", "/bytes/7?x=1", UA, None).await;
    assert!(page.body.contains("<noscript><meta http-equiv=\"refresh\" content=\"1;url=/.palisade/challenge?t="));
    let issued = Instant::now();
    let t = token(&page.body);
    let slow = format!("/.palisade/challenge?t={t}&w=1&r=%2Fbytes%2F7%3Fx%3D1");
    let early = ask(addr, "127.0.0.4", "site.example", &slow, UA, None).await;
    assert_eq!(early.status, 403);
    assert_eq!(token(&early.body), t, "the same token, still waiting");
    let mut passed = None;
    while passed.is_none() {
        let r = ask(addr, "127.0.0.4", "site.example", &slow, UA, None).await;
        if r.status == 303 {
            passed = Some(r);
        } else {
            assert!(issued.elapsed() < Duration::from_secs(5), "the slow path never passed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let r = passed.unwrap();
    assert_eq!(r.header("location").as_deref(), Some("/bytes/7?x=1"));
    let cookie = clearance(&r.header("set-cookie").unwrap());
    assert_eq!(ask(addr, "127.0.0.4", "site.example", "/bytes/7", UA, Some(&cookie)).await.status, 200);

    // Garbage answers are refused with a fresh page, never an error.
    for q in ["", "?t=", "?t=1.2.3.4&n=1", "?t=99999999999999999999.1.1.00&n=x", "?t=%ff%fe&w=1&r=%zz"] {
        let r = ask(addr, "127.0.0.5", "site.example", &format!("/.palisade/challenge{q}"), UA, None).await;
        assert_eq!(r.status, 403, "{q}");
        assert!(r.body.contains("data-t=\""), "{q}: a fresh challenge");
    }

    assert_eq!(e.metric("palisade_challenges_solved_total{zone=\"site\"}").await, Some(2.0));
    assert_eq!(e.metric("palisade_challenges_waited_total{zone=\"site\"}").await, Some(1.0));
    let failed = e.metric("palisade_challenges_failed_total{zone=\"site\"}").await.unwrap();
    assert!(failed >= 9.0, "{failed}");
    // The first page, then other /24, other agent, forged, and the pages for .3 and .4.
    assert_eq!(e.metric("palisade_challenges_issued_total{zone=\"site\"}").await, Some(6.0));
}

/// A rate limit with `challenge`: over the limit, the challenge page instead of 429; a client
/// that passed it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_can_challenge_instead_of_refusing() {
    let origin = origin("challenge-rl-origin");
    let limit = "[[zones.rate_limits]]\nname = \"search\"\nexpression = 'http.request.uri.path eq \"/bytes/9\"'\n\
                 characteristics = [\"ip.src\"]\nperiod_s = 3600\nrequests = 2\naction = \"challenge\"\ndifficulty = 6\n";
    let e = edge(&config(origin.addr, limit));
    let addr = e.http();
    for _ in 0..2 {
        assert_eq!(ask(addr, "127.0.0.7", "site.example", "/bytes/9", UA, None).await.status, 200);
    }
    let page = ask(addr, "127.0.0.7", "site.example", "/bytes/9", UA, None).await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("data-d=\"6\""), "the limit's own difficulty");
    let t = token(&page.body);
    let r = ask(
        addr,
        "127.0.0.7",
        "site.example",
        &format!("/.palisade/challenge?t={t}&n={}&r=/bytes/9", nonce(&t, 6, false)),
        UA,
        None,
    )
    .await;
    assert_eq!(r.status, 303, "the answer is not itself rate limited");
    let cookie = clearance(&r.header("set-cookie").unwrap());
    for _ in 0..3 {
        assert_eq!(ask(addr, "127.0.0.7", "site.example", "/bytes/9", UA, Some(&cookie)).await.status, 200);
    }
    assert_eq!(ask(addr, "127.0.0.7", "site.example", "/bytes/9", UA, None).await.status, 403, "still over without it");
}

/// A bad difficulty names its field and the range.
#[test]
fn challenge_settings_are_checked() {
    let bad = config("127.0.0.1:9".parse().unwrap(), "")
        .replace("difficulty = 10", "difficulty = 40")
        .replace("action = \"challenge\"\n\n", "action = \"block\"\ndifficulty = 3\n\n");
    let text = palisade_config::load(bad.as_bytes()).unwrap_err().to_string();
    assert!(text.contains("zones[0].challenge.difficulty: 40 is out of range; allowed 1..=24"), "{text}");
    assert!(text.contains("zones[0].rules[0].difficulty: only a `challenge` action has a difficulty"), "{text}");
}

/// A real browser meets the challenge on its first visit, runs the proof of work, and lands on
/// the origin's page; the next visit goes straight through on the clearance cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_passes_the_challenge_and_reaches_the_origin() {
    let origin = origin("challenge-browser-origin");
    let extra =
        "[[zones.rules]]\nname = \"home\"\nexpression = 'http.request.uri.path eq \"/\"'\naction = \"challenge\"\n";
    let e = edge(&config(origin.addr, extra).replace("difficulty = 10", "difficulty = 16"));
    let url = format!("http://site.example:{}/", e.http().port());
    let before = origin_stats(origin.addr).await["requests"].as_u64().unwrap();

    let browser = Browser::start(true).await;
    let start = Instant::now();
    browser.goto(&url).await;
    browser.wait_for("challenge-browser-origin", Duration::from_secs(30)).await;
    // From asking for the page to the origin's page: challenge, proof of work, answer, back.
    let took = start.elapsed();
    browser.screenshot("challenge-passed").await;
    assert_eq!(browser.url().await, url, "back on the page it asked for");
    assert!(browser.cookies().await.iter().any(|(n, _)| n == "palisade_clearance"));
    assert_eq!(e.metric("palisade_challenges_solved_total{zone=\"site\"}").await, Some(1.0));
    // The origin saw the page once, this stats call, and perhaps the browser's favicon request.
    let seen = origin_stats(origin.addr).await["requests"].as_u64().unwrap() - before;
    assert!((2..=3).contains(&seen), "{seen}");
    eprintln!("chromium passed a 16-bit challenge in {took:?}");

    // Next visit: straight through.
    browser.goto(&format!("{url}?again=1")).await;
    browser.wait_for("challenge-browser-origin", Duration::from_secs(10)).await;
    assert_eq!(e.metric("palisade_challenges_issued_total{zone=\"site\"}").await, Some(1.0));
}

/// With JavaScript off, the page's meta refresh takes the slow path and the browser still
/// reaches the origin, after the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_without_javascript_passes_by_waiting() {
    let origin = origin("challenge-nojs-origin");
    let extra =
        "[[zones.rules]]\nname = \"home\"\nexpression = 'http.request.uri.path eq \"/\"'\naction = \"challenge\"\n";
    let e = edge(&config(origin.addr, extra));
    let url = format!("http://site.example:{}/", e.http().port());

    let browser = Browser::start(false).await;
    let start = Instant::now();
    browser.goto(&url).await;
    if browser.source().await.contains("Checking your browser") {
        browser.screenshot("challenge-page").await;
    }
    browser.wait_for("challenge-nojs-origin", Duration::from_secs(30)).await;
    browser.screenshot("challenge-passed-without-javascript").await;
    assert!(start.elapsed() >= Duration::from_secs(1), "the slow path waits wait_s");
    assert_eq!(e.metric("palisade_challenges_waited_total{zone=\"site\"}").await, Some(1.0));
    assert_eq!(e.metric("palisade_challenges_solved_total{zone=\"site\"}").await, Some(0.0));
}
