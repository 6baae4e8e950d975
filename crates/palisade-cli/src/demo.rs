//! `palisade demo`: a small fleet on one machine with embedded defaults. Two demo origins, a
//! control plane, and edge nodes named after cities, each on its own ports; the demo config is
//! version 1 on the control plane and reaches the nodes through a staged rollout, as any later
//! change will.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use hyper::Method;
use palisade_control::tokens::{random_token, Tokens};
use palisade_edge::agent::ControlLink;
use palisade_edge::{Edge, EdgeOptions, ListenOverride};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::control_cli::{write_private, Remote};

const CITIES: &[&str] = &["amsterdam", "singapore", "sao-paulo", "chicago", "sydney"];

/// Port `base + i` on loopback (0 stays 0: the kernel picks).
fn port_addr(base: u16, i: usize) -> anyhow::Result<SocketAddr> {
    let port = if base == 0 { 0 } else { base.checked_add(u16::try_from(i)?).context("port out of range")? };
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The status page: `palisade status` in a process of its own (its own failure domain, as in
/// production), probing the demo zone through every node. Killed with the demo.
async fn spawn_status(
    dir: &std::path::Path,
    status_port: u16,
    edges: &[(String, Edge)],
    operator: &str,
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut config = format!(
        "# Written by `palisade demo`: the status page's own config.\ntitle = \"Palisade demo status\"\n\
listen = \"127.0.0.1:{status_port}\"\ndata_dir = \"status-data\"\ntokens_file = \"status.tokens\"\n\
interval_ms = 2000\n[[zones]]\nname = \"demo\"\nhost = \"demo.localhost\"\nbody_contains = \"Hello\"\n"
    );
    for (city, e) in edges {
        let http = e.bound.http.context("a node without an HTTP listener")?;
        config.push_str(&format!("[[cities]]\nname = \"{city}\"\naddress = \"{http}\"\n"));
    }
    let path = dir.join("status.toml");
    std::fs::write(&path, config)?;
    write_private(&dir.join("status.tokens"), &format!("operator {operator}\n"))?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["status", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .env(crate::control_cli::EXIT_WITH_PARENT, "1")
        .kill_on_drop(true)
        .spawn()
        .context("starting the status page")?;
    let stdout = child.stdout.take().context("the status page's output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("palisade status ready http=") {
                return Ok::<_, anyhow::Error>(addr.split_whitespace().next().unwrap_or_default().to_string());
            }
        }
        anyhow::bail!("the status page exited")
    };
    let addr =
        tokio::time::timeout(Duration::from_secs(20), ready).await.context("the status page did not start")??;
    Ok((child, format!("http://{addr}")))
}

pub async fn run(port: u16, admin_port: u16, control_port: u16, status_port: u16, nodes: usize) -> anyhow::Result<()> {
    let nodes = nodes.clamp(1, CITIES.len());
    let (origin_a, _) = palisade_origin::spawn("127.0.0.1:0".parse()?, "demo-origin-a").await?;
    let (origin_b, _) = palisade_origin::spawn("127.0.0.1:0".parse()?, "demo-origin-b").await?;
    let dir = std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // The control plane, in this process, with an operator token and one token per node.
    let operator = random_token().map_err(anyhow::Error::msg)?;
    let token_file = dir.join("operator.token");
    write_private(&token_file, &operator)?;
    let node_tokens: Vec<(String, String)> = CITIES
        .iter()
        .take(nodes)
        .map(|c| Ok((c.to_string(), random_token()?)))
        .collect::<Result<_, String>>()
        .map_err(anyhow::Error::msg)?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let opts = palisade_control::ControlOptions {
        listen: port_addr(control_port, 0)?,
        data_dir: dir.join("control"),
        tokens: Tokens::from_pairs(&[("operator".into(), operator.clone())]).map_err(anyhow::Error::msg)?,
        node_tokens: Tokens::from_pairs(&node_tokens).map_err(anyhow::Error::msg)?,
        tls: None,
        etcd: None,
    };
    let control = tokio::spawn(palisade_control::serve(
        opts,
        move |addr| {
            let _ = ready_tx.send(addr);
        },
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    let control_addr = ready_rx.await.context("the control plane did not start")?;
    let control_url = format!("http://{control_addr}");

    let config = format!(
        r#"# Written by `palisade demo`: version 1 on the control plane, and every node's boot config.
version = 1
[node]
name = "demo-edge"
city = "localhost"
[listen]
http = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin_port}"
[[zones]]
name = "demo"
hostnames = ["localhost", "127.0.0.1", "demo.localhost", "*.demo.localhost"]
origins = [{{ address = "{origin_a}" }}, {{ address = "{origin_b}" }}]
balance = "round_robin"
[zones.health_check]
path = "/health"
interval_ms = 2000
"#
    );
    let path = dir.join("palisade.toml");
    std::fs::write(&path, &config)?;

    // The nodes: one fleet-wide document, each node on its own ports.
    let mut edges = Vec::new();
    for (i, (city, token)) in node_tokens.iter().enumerate() {
        let edge = Edge::start(EdgeOptions {
            config_path: Some(path.clone()),
            state_dir: Some(dir.join(format!("state-{city}"))),
            lkg_file: None,
            workers: Some(1),
            control: Some(ControlLink {
                url: control_url.clone(),
                token: token.clone(),
                city: city.clone(),
                report_every: Duration::from_secs(1),
                analytics_every: Duration::from_secs(palisade_config::analytics::INTERVAL_S),
                ca_file: None,
            }),
            listen: ListenOverride {
                http: Some(port_addr(port, i)?),
                https: None,
                admin: Some(port_addr(admin_port, i)?),
            },
        })
        .await?;
        crate::print_ready(&edge);
        edges.push((city.clone(), edge));
    }

    let (mut status_page, status_url) = spawn_status(&dir, status_port, &edges, &operator).await?;

    // Version 1 is the config the nodes booted with, rolled out in stages like any change.
    let remote = Remote::new(control_url.clone(), operator);
    let (status, v) =
        remote.call(Method::POST, "/v1/versions", Some(json!({ "content": config, "message": "demo config" }))).await?;
    anyhow::ensure!(status.is_success(), "storing the demo config: {status} {v}");
    let version = v["version"]["number"].as_u64().context("version number")?;
    let (status, v) = remote
        .call(
            Method::POST,
            "/v1/rollouts",
            Some(json!({ "version": version, "stages": ["1", "100%"], "bake_ms": 3000 })),
        )
        .await?;
    anyhow::ensure!(status.is_success(), "starting the demo rollout: {status} {v}");

    // A visitor per node, a request every 250 ms: rollouts need traffic to judge a version by
    // (with none they hold, never pass).
    let visitors: Vec<SocketAddr> = edges.iter().filter_map(|(_, e)| e.bound.http).collect();
    let visitor = tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            for addr in &visitors {
                if let Ok(uri) = format!("http://{addr}/").parse::<hyper::Uri>() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await;
                }
            }
        }
    });

    println!();
    println!("  Palisade demo is running: a control plane and {} edge node(s).", edges.len());
    for (i, (city, e)) in edges.iter().enumerate() {
        let http = e.bound.http.map(|a| a.port()).unwrap_or(0);
        let admin = e.bound.admin.map(|a| a.port()).unwrap_or(0);
        if i == 0 {
            println!("  Site through the edge:  http://127.0.0.1:{http}/   (also http://demo.localhost:{http}/)");
            println!("  Metrics:                http://127.0.0.1:{admin}/metrics");
            println!("  Active config:          http://127.0.0.1:{admin}/config");
        }
        println!("  Node {city:<12}     http://127.0.0.1:{http}/   metrics http://127.0.0.1:{admin}/metrics");
    }
    println!("  Control plane:          {control_url}   (operator token in {})", token_file.display());
    println!("  Status page:            {status_url}/   (a process of its own; JSON at /api/v2/summary.json)");
    println!(
        "  Config file:            {}  (each node's boot config; version {version} on the control plane)",
        path.display()
    );
    println!("  Origins:                http://{origin_a}/  http://{origin_b}/");
    println!();
    println!("  Change the fleet (cargo run --release -p palisade-cli -- instead of palisade from a checkout):");
    println!("    export PALISADE_CONTROL={control_url} PALISADE_TOKEN=$(cat {})", token_file.display());
    println!("    palisade rollout watch                  # version {version} going out, stage by stage");
    println!("    palisade config show {version} > site.toml      # edit it, then:");
    println!("    palisade config push site.toml -m 'my change' && palisade rollout start {}", version + 1);
    println!("    palisade rollout watch");
    println!("  The demo sends a request to each node every 250 ms, so rollouts have traffic to judge.");
    println!();
    println!("  Ctrl-C stops it.");

    // Every node stops on the same signal (each listens for it); then the control plane.
    for (_, edge) in edges {
        edge.run_until_shutdown().await;
    }
    visitor.abort();
    let _ = status_page.kill().await;
    let _ = stop_tx.send(true);
    let _ = control.await;
    // The demo's config and state are scratch: a run leaves nothing behind in the temp dir.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
