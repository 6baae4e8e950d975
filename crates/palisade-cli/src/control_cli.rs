//! `palisade control` (the control plane process) and the operator verbs that talk to it:
//! `palisade config push | versions | show | diff`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use palisade_control::tokens::Tokens;
use serde_json::{json, Value};

/// Where the operator verbs find the control plane, and the token they present.
#[derive(clap::Args)]
pub struct Remote {
    /// The control plane's API.
    #[arg(long, env = "PALISADE_CONTROL", default_value = "http://127.0.0.1:9800")]
    control: String,
    /// Operator token (prefer --token-file or the environment: arguments show in `ps`).
    #[arg(long, env = "PALISADE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the operator token [default: palisade-control/operator.token when it exists].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The CA (PEM) to trust for an https:// control plane.
    #[arg(long, env = "PALISADE_CONTROL_CA")]
    control_ca: Option<PathBuf>,
}

const DEFAULT_DATA_DIR: &str = "palisade-control";

/// Runs the control plane until Ctrl-C / SIGTERM.
pub async fn control(
    listen: SocketAddr,
    data_dir: PathBuf,
    tokens: Option<PathBuf>,
    node_tokens: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
    etcd: Option<palisade_control::EtcdOptions>,
) -> anyhow::Result<()> {
    let node_tokens = match node_tokens {
        Some(path) => Tokens::load(&path).map_err(anyhow::Error::msg)?,
        None => Tokens::default(),
    };
    let tokens = match tokens {
        Some(path) => Tokens::load(&path).map_err(anyhow::Error::msg)?,
        None => {
            // No token file: one operator token, generated and written where only its owner can read it.
            let (tokens, token) = Tokens::generate("operator").map_err(anyhow::Error::msg)?;
            std::fs::create_dir_all(&data_dir).with_context(|| data_dir.display().to_string())?;
            let path = data_dir.join("operator.token");
            write_private(&path, &token)?;
            println!("operator token written to {} (name \"operator\")", path.display());
            tokens
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let opts = palisade_control::ControlOptions { listen, data_dir, tokens, node_tokens, tls, etcd };
    palisade_control::serve(opts, move |addr| println!("palisade control ready {scheme}={addr}"), async {
        shutdown_signal().await;
        tracing::info!("control plane shutting down");
    })
    .await
    .map_err(anyhow::Error::msg)
}

/// `palisade status`: the status page, until SIGTERM or Ctrl-C.
pub async fn status(config: &std::path::Path) -> anyhow::Result<()> {
    let config = palisade_status::load_config(config).map_err(anyhow::Error::msg)?;
    let targets = config.zones.len() * config.cities.len();
    palisade_status::serve(config, move |addr| println!("palisade status ready http={addr} targets={targets}"), async {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = parent_gone() => {}
        }
        tracing::info!("status page shutting down");
    })
    .await
    .map_err(anyhow::Error::msg)
}

/// Set by `palisade demo` for its status page: the child ends when the demo does, even when the
/// demo is killed outright (nothing else would stop it, and it would keep the demo's port).
pub const EXIT_WITH_PARENT: &str = "PALISADE_EXIT_WITH_PARENT";

/// Resolves when the process that started this one is gone (with [`EXIT_WITH_PARENT`] set);
/// never otherwise.
async fn parent_gone() {
    if std::env::var_os(EXIT_WITH_PARENT).is_none() {
        return std::future::pending().await;
    }
    let parent = std::os::unix::process::parent_id();
    let mut every = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        every.tick().await;
        if std::os::unix::process::parent_id() != parent {
            tracing::warn!("the process that started the status page is gone");
            return;
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    writeln!(f, "{text}").with_context(|| path.display().to_string())?;
    Ok(())
}

impl Remote {
    /// A remote for code that knows its control plane and token (the demo).
    pub fn new(control: String, token: String) -> Self {
        Self { control, token: Some(token), token_file: None, control_ca: None }
    }

    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_string());
        }
        let path = match &self.token_file {
            Some(p) => p.clone(),
            None => {
                let p = Path::new(DEFAULT_DATA_DIR).join("operator.token");
                if !p.exists() {
                    bail!("no operator token: pass --token-file FILE or set PALISADE_TOKEN");
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        Ok(text.trim().to_string())
    }

    /// One API call: (status, JSON body or `null`).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<(StatusCode, Value)> {
        let body = match body {
            Some(v) => Some(("application/json", Bytes::from(serde_json::to_vec(&v)?))),
            None => None,
        };
        self.send(method, path, body).await
    }

    /// One API call with a body of its own type: (status, JSON answer or `null`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Bytes)>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.control.trim_end_matches('/'));
        let mut req =
            Request::builder().method(method).uri(&url).header("authorization", format!("Bearer {}", self.token()?));
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header("content-type", content_type);
                Full::new(bytes)
            }
            None => Full::new(Bytes::new()),
        };
        let client = palisade_edge::agent::control_client(self.control_ca.as_deref()).map_err(anyhow::Error::msg)?;
        let resp = client.request(req.body(body)?).await.with_context(|| format!("control plane at {url}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }
}

fn api_error(status: StatusCode, body: &Value) -> anyhow::Error {
    let message = body.get("error").and_then(Value::as_str).unwrap_or("no details");
    anyhow::anyhow!("control plane answered {status}: {message}")
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn when(ms: u64) -> String {
    palisade_edge::finish::humantime_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// `palisade config push FILE -m MESSAGE [--parent N]`. Exit status: 0 stored or unchanged.
pub async fn push(remote: &Remote, file: &Path, message: &str, parent: Option<u64>) -> anyhow::Result<()> {
    let content = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let mut body = json!({ "content": content, "message": message });
    if let Some(p) = parent {
        body["parent"] = json!(p);
    }
    let (status, v) = remote.call(Method::POST, "/v1/versions", Some(body)).await?;
    let version = &v["version"];
    match status {
        StatusCode::CREATED => {
            println!(
                "stored version {} (sha256 {}), parent {}",
                version["number"],
                short(version["hash"].as_str().unwrap_or("")),
                version["parent"].as_u64().map(|p| p.to_string()).unwrap_or_else(|| "none".into())
            );
            Ok(())
        }
        StatusCode::OK => {
            println!("unchanged: the content is version {}, the head", version["number"]);
            Ok(())
        }
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
            let problems = v["problems"].as_array().cloned().unwrap_or_default();
            eprintln!("{}: rejected, {} problem(s)", file.display(), problems.len());
            for p in &problems {
                eprintln!("  {}: {}", p["path"].as_str().unwrap_or(""), p["message"].as_str().unwrap_or(""));
            }
            bail!("nothing stored")
        }
        s => Err(api_error(s, &v)),
    }
}

/// How an artifact push is made: `--unchecked`, `--rollout`, `--approved`.
pub struct PushFlags {
    pub unchecked: bool,
    pub rollout: bool,
    pub approved: bool,
}

/// `palisade artifact push KIND NAME FILE -m MESSAGE [--unchecked] [--rollout] [--approved]`.
pub async fn artifact_push(
    remote: &Remote,
    kind: &str,
    name: &str,
    file: &Path,
    message: &str,
    PushFlags { unchecked, rollout, approved }: PushFlags,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("message", message);
    if unchecked {
        query.append_pair("unchecked", "true");
    }
    if rollout {
        query.append_pair("rollout", "true");
    }
    if approved {
        query.append_pair("approved", "true");
    }
    let path = format!("/v1/artifacts/{kind}/{name}?{}", query.finish());
    let (status, v) = remote.send(Method::POST, &path, Some(("application/octet-stream", Bytes::from(bytes)))).await?;
    pushed(kind, name, status, &v)
}

/// `palisade artifact generate NAME [-m MESSAGE] [--rollout] [--approved]`.
pub async fn artifact_generate(remote: &Remote, name: &str, message: &str, flags: PushFlags) -> anyhow::Result<()> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("message", message);
    if flags.rollout {
        query.append_pair("rollout", "true");
    }
    if flags.approved {
        query.append_pair("approved", "true");
    }
    let path = format!("/v1/bot/generate/{name}?{}", query.finish());
    let (status, v) = remote.send(Method::POST, &path, Some(("application/octet-stream", Bytes::new()))).await?;
    if status == StatusCode::CONFLICT && v["error"] != "needs approval" {
        bail!("nothing generated: {}", v["error"].as_str().unwrap_or(""));
    }
    pushed("feature_file", name, status, &v)
}

/// What a push (or a generated file's push) came to.
fn pushed(kind: &str, name: &str, status: StatusCode, v: &Value) -> anyhow::Result<()> {
    match status {
        StatusCode::CREATED | StatusCode::OK => {
            let a = &v["version"];
            let what = if status == StatusCode::CREATED { "stored" } else { "unchanged:" };
            println!(
                "{what} {kind} {name} version {} (sha256 {})",
                a["number"],
                short(a["hash"].as_str().unwrap_or(""))
            );
            match (&v["config"], v["config_note"].as_str()) {
                (c, _) if c.is_object() => println!("config version {} pins it", c["number"]),
                (_, Some(note)) => println!("no new config version: {note}"),
                _ => {}
            }
            if let Some(id) = v["rollout"]["id"].as_u64() {
                println!("rollout {id} started: palisade rollout watch {id}");
            } else if let Some(note) = v["rollout_note"].as_str() {
                println!("no rollout: {note}");
            }
            if v["source_state"] == "flapping" {
                eprintln!("warning: this source is flapping (see `palisade artifact sources`)");
            }
            Ok(())
        }
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
            let problems = v["problems"].as_array().cloned().unwrap_or_default();
            eprintln!("{kind} {name}: rejected, {} problem(s)", problems.len().max(1));
            for p in &problems {
                eprintln!("  {}: {}", p["path"].as_str().unwrap_or(""), p["message"].as_str().unwrap_or(""));
            }
            if problems.is_empty() {
                eprintln!("  {}", v["error"].as_str().unwrap_or(""));
            }
            bail!("nothing stored")
        }
        StatusCode::CONFLICT if v["error"] == "needs approval" => {
            bail!("held, nothing stored: {}", v["detail"].as_str().unwrap_or(""))
        }
        s => Err(api_error(s, v)),
    }
}

/// `palisade artifact sources`: who pushes artifacts, and how it went.
pub async fn artifact_sources(remote: &Remote) -> anyhow::Result<()> {
    let (status, v) = remote.call(Method::GET, "/v1/artifacts/sources", None).await?;
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    println!("{:<14}  {:<24}  {:<16}  {:<9}  last outcomes (newest first)", "kind", "name", "author", "state");
    for s in v["sources"].as_array().into_iter().flatten() {
        let recent: String =
            s["recent"].as_array().into_iter().flatten().map(|o| if o["ok"] == true { '+' } else { '-' }).collect();
        println!(
            "{:<14}  {:<24}  {:<16}  {:<9}  {recent}",
            s["kind"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            s["author"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `palisade config versions [--limit N]`: newest first.
pub async fn versions(remote: &Remote, limit: u32, kind: &str, name: Option<&str>) -> anyhow::Result<()> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &limit.to_string()).append_pair("kind", kind);
    if let Some(n) = name {
        query.append_pair("name", n);
    }
    let (status, v) = remote.call(Method::GET, &format!("/v1/versions?{}", query.finish()), None).await?;
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    println!("{:>7}  {:<24}  {:<16}  {:<12}  message", "version", "created (UTC)", "author", "sha256");
    for version in v["versions"].as_array().into_iter().flatten() {
        let named = version["name"].as_str().filter(|n| !n.is_empty()).map(|n| format!("[{n}] ")).unwrap_or_default();
        println!(
            "{:>7}  {:<24}  {:<16}  {:<12}  {named}{}",
            version["number"].as_u64().unwrap_or(0),
            when(version["created_ms"].as_u64().unwrap_or(0)),
            version["author"].as_str().unwrap_or(""),
            short(version["hash"].as_str().unwrap_or("")),
            version["message"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `palisade config show N`: the document as stored.
pub async fn show(remote: &Remote, n: u64) -> anyhow::Result<()> {
    let (status, v) = remote.call(Method::GET, &format!("/v1/versions/{n}"), None).await?;
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    print!("{}", v["content"].as_str().unwrap_or(""));
    Ok(())
}

/// `palisade config diff A B`: one line per change.
pub async fn diff(remote: &Remote, a: u64, b: u64) -> anyhow::Result<()> {
    let (status, v) = remote.call(Method::GET, &format!("/v1/diff/{a}/{b}"), None).await?;
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    let changes = v["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("versions {a} and {b} are the same");
    }
    for c in changes {
        let path = c["path"].as_str().unwrap_or("");
        match c["change"].as_str().unwrap_or("") {
            "added" => println!("+ {path} = {}", c["new"].as_str().unwrap_or("")),
            "removed" => println!("- {path} (was {})", c["old"].as_str().unwrap_or("")),
            _ => println!("~ {path}: {} -> {}", c["old"].as_str().unwrap_or(""), c["new"].as_str().unwrap_or("")),
        }
    }
    Ok(())
}

/// `palisade rollout start VERSION`: prints the rollout's id.
pub async fn rollout_start(
    remote: &Remote,
    version: u64,
    stages: Option<String>,
    bake_ms: Option<u64>,
    emergency: bool,
) -> anyhow::Result<()> {
    let mut body = json!({ "version": version, "emergency": emergency });
    if let Some(s) = stages {
        body["stages"] = json!(s.split(',').map(str::trim).collect::<Vec<_>>());
    }
    if let Some(b) = bake_ms {
        body["bake_ms"] = json!(b);
    }
    let (status, v) = remote.call(Method::POST, "/v1/rollouts", Some(body)).await?;
    if status != StatusCode::CREATED {
        return Err(api_error(status, &v));
    }
    println!("rollout {} started: config v{version}, stages {}", v["rollout"]["id"], v["rollout"]["stages"]);
    Ok(())
}

/// `palisade rollout watch [ID]`: every decision as it is made, until the rollout ends. Exit
/// status 0 when it finished, non-zero when it was rolled back.
pub async fn rollout_watch(remote: &Remote, id: Option<u64>) -> anyhow::Result<()> {
    let id = match id {
        Some(id) => id,
        None => {
            let (status, v) = remote.call(Method::GET, "/v1/rollouts", None).await?;
            if status != StatusCode::OK {
                return Err(api_error(status, &v));
            }
            v["rollouts"][0]["id"].as_u64().context("no rollouts yet")?
        }
    };
    let mut shown = 0;
    loop {
        let (status, v) = remote.call(Method::GET, &format!("/v1/rollouts/{id}"), None).await?;
        if status != StatusCode::OK {
            return Err(api_error(status, &v));
        }
        let events = v["events"].as_array().cloned().unwrap_or_default();
        for e in events.iter().skip(shown) {
            println!("{}  {}", when(e["at_ms"].as_u64().unwrap_or(0)), e["message"].as_str().unwrap_or(""));
        }
        shown = events.len();
        match v["rollout"]["state"].as_str().unwrap_or("") {
            // A paused rollout is watched on: it may be resumed (or aborted).
            "running" | "paused" => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            "done" => return Ok(()),
            other => bail!("rollout {id} {other}: {}", v["rollout"]["reason"].as_str().unwrap_or("")),
        }
    }
}

/// `palisade rollout abort ID`: stops it and rolls back.
pub async fn rollout_abort(remote: &Remote, id: u64) -> anyhow::Result<()> {
    let (status, v) = remote.call(Method::POST, &format!("/v1/rollouts/{id}/abort"), None).await?;
    if status != StatusCode::NO_CONTENT {
        return Err(api_error(status, &v));
    }
    println!("rollout {id} aborted and rolled back");
    Ok(())
}

/// `palisade rollout pause|resume ID`.
pub async fn rollout_pause(remote: &Remote, id: u64, pause: bool) -> anyhow::Result<()> {
    let verb = if pause { "pause" } else { "resume" };
    let (status, v) = remote.call(Method::POST, &format!("/v1/rollouts/{id}/{verb}"), None).await?;
    if status != StatusCode::NO_CONTENT {
        return Err(api_error(status, &v));
    }
    println!("rollout {id} {verb}d");
    Ok(())
}

/// `palisade nodes`: the fleet as the control plane sees it.
pub async fn nodes(remote: &Remote) -> anyhow::Result<()> {
    let (status, v) = remote.call(Method::GET, "/v1/nodes", None).await?;
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    let version = |n: &Value| n.as_u64().map(|n| format!("v{n}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<16} {:<14} {:>8} {:>8}  {:<24}  last refusal",
        "node", "city", "assigned", "running", "last seen (UTC)"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let mut refusal = match n["nack_version"].as_u64() {
            Some(r) => format!("v{r}: {}", n["nack_detail"].as_str().unwrap_or("")),
            None => "-".into(),
        };
        if n["drift"].as_bool() == Some(true) {
            refusal = format!(
                "DRIFT: runs sha256 {} (a local change?); {refusal}",
                short(n["running_hash"].as_str().unwrap_or(""))
            );
        }
        println!(
            "{:<16} {:<14} {:>8} {:>8}  {:<24}  {}",
            n["name"].as_str().unwrap_or(""),
            n["city"].as_str().unwrap_or(""),
            version(&n["assigned"]),
            version(&n["applied"]),
            when(n["last_seen_ms"].as_u64().unwrap_or(0)),
            refusal
        );
    }
    Ok(())
}

/// `palisade purge --url U --prefix P --host H --tag T --everything [--zone Z]`.
pub async fn purge(remote: &Remote, request: &palisade_config::purge::PurgeRequest) -> anyhow::Result<()> {
    // Checked here as well, so a mistake is named before anything is sent.
    request.check().map_err(|e| anyhow::anyhow!(e))?;
    let body = serde_json::to_value(request)?;
    let (status, v) = remote.call(Method::POST, "/v1/cache/purge", Some(body)).await?;
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    println!("purge {} recorded: {}; every node applies it on its purge poll", v["seq"], request.summary());
    Ok(())
}

/// `palisade killswitch off NAME -m REASON` / `release NAME` / `list`.
pub async fn killswitch(remote: &Remote, action: &str, name: Option<&str>, reason: Option<&str>) -> anyhow::Result<()> {
    let (status, v) = match (action, name) {
        ("off", Some(n)) => {
            remote
                .call(Method::POST, "/v1/killswitches", Some(json!({ "name": n, "reason": reason.unwrap_or("") })))
                .await?
        }
        ("release", Some(n)) => remote.call(Method::DELETE, &format!("/v1/killswitches/{n}"), None).await?,
        _ => remote.call(Method::GET, "/v1/killswitches", None).await?,
    };
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    match action {
        "off" | "release" => {
            let what = if action == "off" { "switched off" } else { "released" };
            if v["changed"].as_bool() == Some(true) {
                println!("{} {what} (generation {}); nodes apply it at once", name.unwrap_or(""), v["generation"]);
            } else {
                println!("{} was already {what}", name.unwrap_or(""));
            }
        }
        _ => {
            println!("generation {}", v["generation"]);
            for k in v["known"].as_array().into_iter().flatten() {
                let name = k["name"].as_str().unwrap_or("");
                let engaged = v["engaged"].as_array().into_iter().flatten().find(|e| e["name"] == name);
                match engaged {
                    Some(e) => println!(
                        "  {name:<12} OFF since {} by {}: {}",
                        when(e["engaged_ms"].as_u64().unwrap_or(0)),
                        e["actor"].as_str().unwrap_or(""),
                        e["reason"].as_str().unwrap_or("")
                    ),
                    None => println!("  {name:<12} on    (off: {})", k["switches_off"].as_str().unwrap_or("")),
                }
            }
        }
    }
    Ok(())
}

/// `palisade rollout rollback [--to N]`: a running rollout is aborted (and rolled back); otherwise
/// the version before the last one rolled out everywhere goes out again, on the emergency lane.
pub async fn rollout_rollback(remote: &Remote, to: Option<u64>) -> anyhow::Result<()> {
    let (status, v) = remote.call(Method::GET, "/v1/rollouts", None).await?;
    if status != StatusCode::OK {
        return Err(api_error(status, &v));
    }
    let list = v["rollouts"].as_array().cloned().unwrap_or_default();
    if to.is_none() {
        if let Some(running) = list.iter().find(|r| r["state"] == "running") {
            return rollout_abort(remote, running["id"].as_u64().context("rollout id")?).await;
        }
    }
    let target = match to {
        Some(n) => n,
        None => {
            let done: Vec<u64> =
                list.iter().filter(|r| r["state"] == "done").filter_map(|r| r["version"].as_u64()).collect();
            let current = done.first().copied().context("nothing was rolled out yet")?;
            done.iter().copied().find(|v| *v != current).context("no earlier version was rolled out everywhere")?
        }
    };
    rollout_start(remote, target, None, None, true).await
}
