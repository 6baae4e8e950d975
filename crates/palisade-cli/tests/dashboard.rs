//! The operator dashboard as an operator uses it, in a real Chromium against a real fleet: log
//! in with the token, read the fleet and its traffic (from the nodes' analytics), switch a
//! module off fleet-wide and on again, roll a version out (pausing and resuming it) and abort
//! another, each change confirmed where it should be. Changes without a session or without the
//! form's CSRF token are refused.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::fleet::*;
use common::*;
use serde_json::json;

const SOON: Duration = Duration::from_secs(15);

async fn post_form(a: std::net::SocketAddr, path: &str, cookie: Option<&str>, body: &str) -> (u16, hyper::HeaderMap) {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    let c = cookie.map(|c| format!("palisade_session={c}"));
    if let Some(c) = &c {
        headers.push(("cookie", c.as_str()));
    }
    let (s, h, _) =
        request_full(&client(), "POST", &format!("http://{a}{path}"), &headers, body.as_bytes().to_vec()).await;
    (s, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_fleet_from_the_dashboard() {
    let mut f = Fleet::start("dashboard").await;
    let a = f.a;
    let browser = Browser::start_with(true, &["--window-size=1300,1500"]).await;

    // Login first; a wrong token is told so.
    browser.goto(&format!("http://{a}/dashboard")).await;
    browser.wait_for("Operator login", SOON).await;
    browser.fill("#token", "0000000000000000000000000000000000000000").await;
    browser.click("button[type=submit]").await;
    browser.wait_for("That token is not an operator", SOON).await;
    browser.fill("#token", ALICE).await;
    browser.click("button[type=submit]").await;
    browser.wait_for("data-node=\"tokyo\"", SOON).await;
    let text = browser.text().await;
    assert!(text.to_lowercase().contains("fleet") && text.contains("berlin") && text.contains("paris"), "{text}");
    // The page refreshes itself: the nodes' reports arrive without a reload.
    browser.wait_for("Nodes reporting<b>3 / 3</b>", SOON).await;
    browser.wait_for("<span class=\"badge ok\">healthy</span>", SOON).await;

    // Traffic from the nodes' analytics: requests, and the heaviest path and client.
    browser.goto(&format!("http://{a}/dashboard/traffic?range=15m")).await;
    browser.wait_for("Top paths", SOON).await;
    eventually("analytics reach the dashboard", SOON, || async {
        browser.goto(&format!("http://{a}/dashboard/traffic?range=15m")).await;
        let text = browser.text().await;
        text.contains("127.0.0.1") && !text.contains("Requests\n0")
    })
    .await;
    let (s, v) = api(a, "GET", "/v1/analytics?zone=site", Some(ALICE), None).await;
    assert_eq!(s, 200, "{v}");
    let requests = v["series"]["total"][0].as_u64().unwrap();
    assert!(requests > 0, "{v}");
    assert_eq!(v["fields"][0], "requests");
    assert_eq!(v["series"]["top"]["path"][0][0], "/", "{v}");
    assert_eq!(v["series"]["cities"], json!(["berlin", "paris", "tokyo"]));
    browser.screenshot("dashboard-traffic").await;
    browser.goto(&format!("http://{a}/dashboard")).await;
    browser.wait_for("Requests per second by status", SOON).await;
    browser.screenshot("dashboard-overview").await;

    // No change without a session, nor with a session but without the form's token.
    let (s, h) = post_form(a, "/dashboard/killswitches", None, "name=cache&reason=x").await;
    assert_eq!(s, 303);
    assert_eq!(h.get("location").unwrap(), "/dashboard/login");
    let session = browser.cookies().await.into_iter().find(|(n, _)| n == "palisade_session").map(|(_, v)| v).unwrap();
    let (s, _) = post_form(a, "/dashboard/killswitches", Some(&session), "name=cache&reason=x&csrf=forged").await;
    assert_eq!(s, 403);
    let (_, v) = api(a, "GET", "/v1/killswitches", Some(ALICE), None).await;
    assert!(v["engaged"].as_array().unwrap().is_empty(), "{v}");

    // A kill switch, off fleet-wide and on again, with the nodes' acknowledgements.
    browser.goto(&format!("http://{a}/dashboard/killswitches")).await;
    browser.fill("tr[data-switch=\"cache\"] input[name=reason]", "cache drill").await;
    browser.click("tr[data-switch=\"cache\"] button").await;
    browser.wait_for("data-switch=\"cache\" data-off=\"true\"", SOON).await;
    let (_, v) = api(a, "GET", "/v1/killswitches", Some(ALICE), None).await;
    assert_eq!(v["engaged"][0]["name"], "cache", "{v}");
    assert_eq!(v["engaged"][0]["actor"], "alice", "changes are made, and audited, as the operator");
    browser.wait_for("applied by 3 of 3 nodes", SOON).await;
    browser.screenshot("dashboard-killswitches").await;
    browser.click("tr[data-switch=\"cache\"] button").await;
    browser.wait_for("data-switch=\"cache\" data-off=\"false\"", SOON).await;

    // A rollout from the dashboard: confirmed, paused, resumed, done.
    let (s, v) = push(a, ALICE, &f.doc("# first"), "first", None).await;
    assert_eq!(s, 201, "{v}");
    let first = v["version"]["number"].as_u64().unwrap();
    browser.goto(&format!("http://{a}/dashboard/rollouts")).await;
    browser.click("form[action=\"/dashboard/rollouts\"] button").await;
    browser.wait_for(&format!("Roll out version {first}?"), SOON).await;
    browser.fill("input[name=stages]", "1, 100%").await;
    browser.fill("input[name=bake_s]", "2").await;
    browser.click("button.danger").await;
    browser.wait_for("data-state=\"running\"", SOON).await;
    browser.click("form[action$=\"/pause\"] button").await;
    browser.wait_for("data-state=\"paused\"", SOON).await;
    browser.screenshot("dashboard-rollout-paused").await;
    browser.click("form[action$=\"/resume\"] button").await;
    browser.wait_for("data-state=\"done\"", Duration::from_secs(40)).await;
    let text = browser.text().await;
    assert!(text.to_lowercase().contains("decisions and the figures behind them"), "{text}");
    browser.screenshot("dashboard-rollout").await;
    let (_, v) = api(a, "GET", "/v1/rollouts", Some(ALICE), None).await;
    assert_eq!(v["rollouts"][0]["state"], "done", "{v}");
    assert_eq!(v["rollouts"][0]["version"], first);
    assert_eq!(v["rollouts"][0]["actor"], "alice");

    // Another, aborted from its page: the dashboard asks first.
    let (s, v) = push(a, ALICE, &f.doc("# second"), "second", None).await;
    assert_eq!(s, 201, "{v}");
    let id = start_rollout_baking(a, v["version"]["number"].as_u64().unwrap(), 60_000).await;
    browser.goto(&format!("http://{a}/dashboard/rollouts/{id}")).await;
    browser.wait_for("data-state=\"running\"", SOON).await;
    browser.click("form[action$=\"/abort\"] button").await;
    browser.wait_for(&format!("Abort rollout {id}?"), SOON).await;
    let (_, v) = api(a, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
    assert_eq!(v["rollout"]["state"], "running", "asking is not doing: {v}");
    browser.click("button.danger").await;
    browser.wait_for("data-state=\"rolled_back\"", SOON).await;
    let (_, v) = api(a, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
    assert_eq!(v["rollout"]["state"], "rolled_back", "{v}");
    f.no_failed_requests().await;
}
