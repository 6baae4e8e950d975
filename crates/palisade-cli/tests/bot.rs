//! Bot scoring on a real node: a feature-file model, automation signatures and verified bots
//! set `bot.score` and `bot.verified` for the firewall; the `bot` kill switch leaves the score
//! absent (so `bot.score lt 30` matches nothing); a model with an extractor the node does not
//! know is refused by name and the previous one keeps scoring.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

/// One GET from `src` with these header lines; the status.
async fn ask(addr: SocketAddr, src: &str, lines: &[(&str, &str)]) -> u16 {
    let mut s = connect_from(src, addr).await.unwrap();
    let mut head = String::from("GET /bytes/5 HTTP/1.1\r\nhost: site.example\r\n");
    for (k, v) in lines {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

const MODEL: &str = r#"{"model_version": "demo-1", "bias": -3.0, "features": [
  {"name": "lang", "extractor": "accept_language", "weight": 2.5},
  {"name": "fetch", "extractor": "sec_fetch", "weight": 2.5},
  {"name": "browser", "extractor": "ua_browser", "weight": 1.5},
  {"name": "sparse", "extractor": "few_headers", "weight": -2.0}
]}"#;

fn config(origin: SocketAddr, model_file: &std::path::Path, model: &str) -> String {
    format!(
        "{}\n[[artifacts]]\nname = \"bot-model\"\nkind = \"feature_file\"\nsha256 = \"{}\"\nfile = \"{}\"\n\
         [[zones]]\nname = \"site\"\nhostnames = [\"site.example\"]\norigins = [{{ address = \"{origin}\" }}]\n\
         [zones.bot]\nmodel = \"bot-model\"\n\
         [[zones.bot.verified]]\nname = \"searchbot\"\nuser_agent = \"ExampleSearchBot\"\nip_ranges = [\"127.0.0.77/32\"]\n\
         [[zones.rules]]\nname = \"good-bots\"\nexpression = 'bot.verified'\naction = \"allow\"\n\
         [[zones.rules]]\nname = \"automated\"\nexpression = 'bot.score lt 30'\naction = \"block\"\n",
        listen_section(false),
        palisade_config::content_hash(model.as_bytes()),
        model_file.display(),
    )
}

const BROWSER: [(&str, &str); 5] = [
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml"),
    ("accept-language", "en-GB,en;q=0.9"),
    ("accept-encoding", "gzip, br"),
    ("sec-fetch-mode", "navigate"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_act_on_the_bot_score_and_verified_bots() {
    let origin = origin("bot-origin");
    let dir = temp_dir("bot");
    let model_file = dir.join("model.json");
    std::fs::write(&model_file, MODEL).unwrap();
    let path = dir.join("palisade.toml");
    let log = dir.join("access.log");
    let with_log = |c: String| {
        c.replacen("\n[[artifacts]]", &format!("\n[access_log]\ntarget = \"{}\"\n[[artifacts]]", log.display()), 1)
    };
    std::fs::write(&path, with_log(config(origin.addr, &model_file, MODEL))).unwrap();
    let e = edge_with(dir.clone(), path, &[]);
    let addr = e.http();

    let curl = [("user-agent", "curl/8.5.0"), ("accept", "*/*")];
    let searchbot = [("user-agent", "Mozilla/5.0 (compatible; ExampleSearchBot/2.1)")];
    let run = || async {
        vec![
            ask(addr, "127.0.0.2", &BROWSER).await,
            ask(addr, "127.0.0.2", &curl).await,
            ask(addr, "127.0.0.2", &[("user-agent", "Mozilla/5.0 Chrome/156.0")]).await,
            ask(addr, "127.0.0.77", &searchbot).await,
            ask(addr, "127.0.0.2", &searchbot).await,
        ]
    };
    // A browser passes; a tool's signature, a browser's name without a browser's headers, and a
    // search bot's name from an address not its own are blocked; the verified bot is let in.
    assert_eq!(run().await, vec![200, 403, 403, 200, 403]);
    let m = e.metrics().await;
    assert!(m.contains("palisade_rule_matches_total{zone=\"site\",rule=\"good-bots\"} 1"), "{m}");
    assert!(m.contains("palisade_rule_matches_total{zone=\"site\",rule=\"automated\"} 3"), "{m}");
    // Scores in bands of ten: the browser's in the top band, the three signatures' in the
    // bottom one with the bare browser name's.
    assert!(m.contains("palisade_bot_scores_total{zone=\"site\",band=\"9\"} 1"), "{m}");
    assert!(m.contains("palisade_bot_scores_total{zone=\"site\",band=\"0\"} 4"), "{m}");
    // The access log carries each request's score.
    eventually("five access-log records", Duration::from_secs(5), || {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).unwrap_or_default().lines().count() >= 5 }
    })
    .await;
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let scores: Vec<_> = records.iter().take(5).map(|r| (r["BotScore"].as_u64(), r["BotVerified"].as_bool())).collect();
    assert!(scores[0].0.unwrap() >= 90 && scores[0].1.is_none(), "{scores:?}");
    assert_eq!(
        &scores[1..4],
        &[(Some(1), None), (Some(scores[2].0.unwrap()), None), (Some(1), Some(true))],
        "{scores:?}"
    );

    // The kill switch: no score (absent, so `bot.score lt 30` is false), nobody verified.
    assert_eq!(e.admin_json("POST", "/killswitches/bot/off", "").await.0, 200);
    assert_eq!(run().await, vec![200, 200, 200, 200, 200]);
    e.admin_json("POST", "/killswitches/bot/release", "").await;
    assert_eq!(run().await, vec![200, 403, 403, 200, 403]);

    // A model with an extractor this node does not have is refused by name, and the one
    // before keeps scoring.
    let unknown = MODEL.replace("\"few_headers\"", "\"mouse_moves\"");
    std::fs::write(&model_file, &unknown).unwrap();
    e.write_config(&with_log(config(origin.addr, &model_file, &unknown)));
    let (s, v) = e.admin_json("POST", "/reload", "").await;
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("`mouse_moves` is not an extractor this node has"), "{v}");
    assert_eq!(run().await, vec![200, 403, 403, 200, 403]);
}

/// Config mistakes name their field.
#[test]
fn bot_settings_are_checked() {
    let doc = config("127.0.0.1:9".parse().unwrap(), std::path::Path::new("/nonexistent/model.json"), MODEL)
        .replace("kind = \"feature_file\"", "kind = \"ip_list\"")
        .replace("127.0.0.77/32", "127.0.0.777/32");
    let text = palisade_config::load(doc.as_bytes()).unwrap_err().to_string();
    assert!(text.contains("zones[0].bot.model: `bot-model` is a ip_list; this needs a feature_file"), "{text}");
    assert!(text.contains("zones[0].bot.verified[0].ip_ranges"), "{text}");
}
