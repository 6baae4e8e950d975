//! `palisade`: one binary, one subcommand per process kind (DESIGN.md, "Processes").
//! This is the binary's edge, so errors are `anyhow` here and typed everywhere below.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use palisade_edge::{Edge, EdgeOptions};

mod control_cli;
mod demo;

#[derive(Parser)]
#[command(name = "palisade", version, about = "Palisade: a self-hostable edge network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an edge node (a "city"): the reverse proxy in front of websites.
    Edge {
        /// The configuration document (TOML). Re-read on SIGHUP and `POST /reload` on the admin listener.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Directory for the last-known-good copy of the active config.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Boot from this last-known-good file when --config is missing or unusable.
        #[arg(long)]
        lkg: Option<PathBuf>,
        /// Data-plane worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Take config versions from this control plane (e.g. http://10.0.0.5:9800; replicas of
        /// one control plane comma-separated, tried in turn). The --config file stays the boot
        /// config; the node serves on when the control plane is gone.
        #[arg(long, requires = "node_token_file")]
        control: Option<String>,
        /// This node's token on the control plane (its name comes with it).
        #[arg(long)]
        node_token_file: Option<PathBuf>,
        /// The CA (PEM) to trust for an https:// control plane.
        #[arg(long)]
        control_ca: Option<PathBuf>,
        /// Location label reported to the control plane.
        #[arg(long, default_value = "unknown")]
        city: String,
        /// This node's HTTP listener, in place of `[listen] http` of every config it loads.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// This node's HTTPS listener, in place of `[listen] https`.
        #[arg(long)]
        https: Option<SocketAddr>,
        /// This node's admin listener, in place of `[listen] admin`.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// How often to report counters to the control plane, in milliseconds.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        report_interval_ms: u64,
        /// How often to send traffic analytics to the control plane, in milliseconds.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
        analytics_interval_ms: u64,
    },
    /// Run the control plane: the versioned config store, its audit log and the operator API.
    Control {
        #[arg(long, default_value = "127.0.0.1:9800")]
        listen: SocketAddr,
        /// Directory of the store (`control.db`).
        #[arg(long, default_value = "palisade-control")]
        data_dir: PathBuf,
        /// Operator tokens, one `NAME TOKEN` per line. Without it, one token named "operator" is
        /// generated and written to DATA_DIR/operator.token (mode 0600).
        #[arg(long)]
        tokens: Option<PathBuf>,
        /// Node tokens, one `NAME TOKEN` per line: the name is the node's name. Without it, no
        /// node can connect.
        #[arg(long)]
        node_tokens: Option<PathBuf>,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Share the state with other replicas through etcd: its members' client URLs,
        /// comma-separated (e.g. http://10.0.0.1:2379,http://10.0.0.2:2379). Needs --replica.
        #[arg(long, value_delimiter = ',', requires = "replica")]
        etcd: Vec<String>,
        /// This replica's name, unique among the replicas sharing the etcd prefix.
        #[arg(long)]
        replica: Option<String>,
        /// Where the other replicas reach this one [default: http://LISTEN].
        #[arg(long)]
        advertise: Option<String>,
        /// The etcd key prefix of this control plane.
        #[arg(long, default_value = "/palisade/")]
        etcd_prefix: String,
    },
    /// Kill switches: switch a module off on every node at once, on a fast path of its own.
    Killswitch {
        #[command(subcommand)]
        command: KillCommand,
    },
    /// Purge cached objects on every node (by URL, prefix, host, Cache-Tag, or everything).
    Purge {
        /// An exact URL (`https://host/path?query`); repeat for more.
        #[arg(long = "url")]
        urls: Vec<String>,
        /// A URL prefix (`host/path/`).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
        /// Every object of a host.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Objects whose `Cache-Tag` response header named this tag.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Everything (alone).
        #[arg(long)]
        everything: bool,
        /// Only this zone's objects (for tags and --everything).
        #[arg(long)]
        zone: Option<String>,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// The fleet as the control plane sees it: each node's city, assigned and running version.
    Nodes {
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Staged rollouts of config versions across the fleet.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Artifacts the config pins by hash: IP lists, the bot model's feature file, certificate bundles.
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Run the demo origin (a small website for demos, benches and tests).
    Origin {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        #[arg(long, default_value = "origin")]
        name: String,
        /// Wait this long before every answer (a slow website).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Handle at most this many requests at once; the rest wait (0: no bound).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// Everything on one machine with embedded defaults: a demo origin and an edge node in front of it.
    /// Run the status page: probes every zone through every city from outside, and serves the
    /// components, incidents and uptime it derives (HTML, JSON, Atom, webhooks). A process of
    /// its own, with its own config and storage: it asks neither the control plane nor a node.
    Status {
        /// The status page's config (TOML): cities, zones, webhooks, listen address, data dir.
        #[arg(long, short)]
        config: PathBuf,
    },
    Demo {
        /// The first node's HTTP port on 127.0.0.1 (the next nodes take the ports after it).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// The first node's admin port on 127.0.0.1 (the next nodes take the ports after it).
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// The control plane's port on 127.0.0.1.
        #[arg(long, default_value_t = 9800)]
        control_port: u16,
        /// The status page's port on 127.0.0.1.
        #[arg(long, default_value_t = 9700)]
        status_port: u16,
        /// How many edge nodes (1 to 5), each named after a city.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
}

#[derive(Subcommand)]
enum KillCommand {
    /// Switch a module off on every node (`palisade killswitch list` names them).
    Off {
        name: String,
        /// Why (recorded in the audit log).
        #[arg(long, short)]
        message: String,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Let the module run again.
    Release {
        name: String,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Every switch and whether it is off.
    List {
        #[command(flatten)]
        remote: control_cli::Remote,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Roll a version out in stages, with health gates and automatic rollback.
    Start {
        version: u64,
        /// Comma-separated stage sizes: node counts or percentages [default: 1,10%,50%,100%].
        #[arg(long)]
        stages: Option<String>,
        /// How long each stage bakes before its health is judged [default: 30000].
        #[arg(long)]
        bake_ms: Option<u64>,
        /// The emergency lane: stages 1,50%,100% and 5 s bakes unless given; still validated,
        /// staged and gated.
        #[arg(long)]
        emergency: bool,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Abort the running rollout (it rolls back), or else roll the previous version out again
    /// on the emergency lane.
    Rollback {
        /// Roll this version out instead (emergency lane).
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Follow a rollout's decisions live (default: the newest); non-zero exit if it rolled back.
    Watch {
        id: Option<u64>,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Stop a running rollout and roll it back.
    Abort {
        id: u64,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Pause a running rollout: nodes stay where they are until it is resumed or aborted.
    Pause {
        id: u64,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Resume a paused rollout (its current stage bakes again from the start).
    Resume {
        id: u64,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
}

#[derive(Subcommand)]
enum ArtifactCommand {
    /// Store a new version of an artifact; when the head config lists it, a config version that
    /// pins the new hash is made (and rolled out with --rollout).
    Push {
        /// ip_list, feature_file or cert_bundle.
        kind: String,
        /// The artifact's name, as listed in the config's [[artifacts]].
        name: String,
        file: PathBuf,
        #[arg(long, short)]
        message: String,
        /// Store it without decoding it on the control plane (the nodes still refuse a bad one).
        #[arg(long)]
        unchecked: bool,
        #[command(flatten)]
        then: Then,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Generate feature file NAME from the nodes' labelled bot traffic (its learned
    /// header_present features replaced), pushed as the `generator` through the same checks.
    Generate {
        name: String,
        #[arg(long, short, default_value = "")]
        message: String,
        #[command(flatten)]
        then: Then,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Where artifacts come from, and whether each source is healthy, failing or flapping.
    Sources {
        #[command(flatten)]
        remote: control_cli::Remote,
    },
}

/// What follows a stored artifact version.
#[derive(clap::Args)]
struct Then {
    /// Start a staged rollout of the config version that pins it.
    #[arg(long)]
    rollout: bool,
    /// Approve a feature file that changes more than 50% (features or bytes) from the one the
    /// fleet runs: without it, such a push is held.
    #[arg(long)]
    approved: bool,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration document offline: prints every problem with its path, exits non-zero on any.
    Validate { file: PathBuf },
    /// Store a document as a new version on the control plane (validated there first).
    Push {
        file: PathBuf,
        /// What the change is (recorded with the version and in the audit log).
        #[arg(long, short)]
        message: String,
        /// Only if the head is still this version (otherwise: conflict, nothing stored).
        #[arg(long)]
        parent: Option<u64>,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// List versions, newest first.
    Versions {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// config, or an artifact kind (ip_list, feature_file, cert_bundle).
        #[arg(long, default_value = "config")]
        kind: String,
        /// One artifact's versions only.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// Print a version's document as stored.
    Show {
        version: u64,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
    /// What changed between two versions, by zone and field.
    Diff {
        from: u64,
        to: u64,
        #[command(flatten)]
        remote: control_cli::Remote,
    },
}

fn init_logging() {
    // rustls warns about what a peer sent (an IP address as SNI, say): once per connection, at a
    // client's pace. A client must not be able to write the node's log; handshake failures are
    // counted in /metrics instead.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| "info,rustls=error".into());
    tracing_subscriber::fmt().json().with_writer(std::io::stderr).with_env_filter(filter).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config { command: ConfigCommand::Validate { file } } => validate(&file),
        other => {
            init_logging();
            // The control runtime: admin API, health checks, signals. The edge's data plane runs
            // on its own per-core worker threads.
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("palisade: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(other)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("palisade: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn validate(file: &std::path::Path) -> ExitCode {
    let bytes = match palisade_edge::server::read_config_file(file) {
        Ok(b) => b,
        Err(p) => {
            eprintln!("{}: {}", file.display(), p.message);
            return ExitCode::from(2);
        }
    };
    match palisade_config::load(&bytes) {
        Ok(v) => {
            println!(
                "{}: ok (version {}, {} zone(s), sha256 {})",
                file.display(),
                v.doc.version,
                v.doc.zones.len(),
                v.hash
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let problems = e.problems();
            eprintln!("{}: {} problem(s)", file.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn print_ready(edge: &Edge) {
    let b = &edge.bound;
    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    println!("palisade edge ready http={} https={} admin={}", show(b.http), show(b.https), show(b.admin));
}

async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Edge {
            config,
            state_dir,
            lkg,
            workers,
            control,
            node_token_file,
            control_ca,
            city,
            report_interval_ms,
            analytics_interval_ms,
            http,
            https,
            admin,
        } => {
            let control = match (control, node_token_file) {
                (Some(url), Some(file)) => {
                    let token = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
                    Some(palisade_edge::agent::ControlLink {
                        url,
                        token: token.trim().to_string(),
                        city,
                        report_every: std::time::Duration::from_millis(report_interval_ms),
                        analytics_every: std::time::Duration::from_millis(analytics_interval_ms),
                        ca_file: control_ca,
                    })
                }
                _ => None,
            };
            let edge = Edge::start(EdgeOptions {
                config_path: config,
                state_dir,
                lkg_file: lkg,
                workers,
                control,
                listen: palisade_edge::ListenOverride { http, https, admin },
            })
            .await?;
            print_ready(&edge);
            edge.run_until_shutdown().await;
            Ok(())
        }
        Command::Origin { listen, name, delay_ms, workers } => {
            let (addr, origin) = palisade_origin::spawn(listen, &name).await?;
            origin.set_delay(delay_ms);
            origin.set_workers(workers);
            println!("palisade origin ready http={addr}");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Status { config } => control_cli::status(&config).await,
        Command::Demo { port, admin_port, control_port, status_port, nodes } => {
            demo::run(port, admin_port, control_port, status_port, nodes).await
        }
        Command::Control {
            listen,
            data_dir,
            tokens,
            node_tokens,
            tls_cert,
            tls_key,
            etcd,
            replica,
            advertise,
            etcd_prefix,
        } => {
            let etcd = replica.filter(|_| !etcd.is_empty()).map(|replica| palisade_control::EtcdOptions {
                endpoints: etcd,
                replica,
                advertise,
                prefix: etcd_prefix,
            });
            control_cli::control(listen, data_dir, tokens, node_tokens, tls_cert.zip(tls_key), etcd).await
        }
        Command::Nodes { remote } => control_cli::nodes(&remote).await,
        Command::Purge { urls, prefixes, hosts, tags, everything, zone, remote } => {
            let request = palisade_config::purge::PurgeRequest {
                zone,
                files: urls,
                prefixes,
                hosts,
                tags,
                purge_everything: everything,
            };
            control_cli::purge(&remote, &request).await
        }
        Command::Killswitch { command } => match command {
            KillCommand::Off { name, message, remote } => {
                control_cli::killswitch(&remote, "off", Some(&name), Some(&message)).await
            }
            KillCommand::Release { name, remote } => {
                control_cli::killswitch(&remote, "release", Some(&name), None).await
            }
            KillCommand::List { remote } => control_cli::killswitch(&remote, "list", None, None).await,
        },
        Command::Rollout { command } => match command {
            RolloutCommand::Start { version, stages, bake_ms, emergency, remote } => {
                control_cli::rollout_start(&remote, version, stages, bake_ms, emergency).await
            }
            RolloutCommand::Rollback { to, remote } => control_cli::rollout_rollback(&remote, to).await,
            RolloutCommand::Watch { id, remote } => control_cli::rollout_watch(&remote, id).await,
            RolloutCommand::Abort { id, remote } => control_cli::rollout_abort(&remote, id).await,
            RolloutCommand::Pause { id, remote } => control_cli::rollout_pause(&remote, id, true).await,
            RolloutCommand::Resume { id, remote } => control_cli::rollout_pause(&remote, id, false).await,
        },
        Command::Artifact { command } => match command {
            ArtifactCommand::Push { kind, name, file, message, unchecked, then, remote } => {
                let flags = control_cli::PushFlags { unchecked, rollout: then.rollout, approved: then.approved };
                control_cli::artifact_push(&remote, &kind, &name, &file, &message, flags).await
            }
            ArtifactCommand::Sources { remote } => control_cli::artifact_sources(&remote).await,
            ArtifactCommand::Generate { name, message, then, remote } => {
                let flags = control_cli::PushFlags { unchecked: false, rollout: then.rollout, approved: then.approved };
                control_cli::artifact_generate(&remote, &name, &message, flags).await
            }
        },
        Command::Config { command } => match command {
            ConfigCommand::Validate { .. } => Ok(()),
            ConfigCommand::Push { file, message, parent, remote } => {
                control_cli::push(&remote, &file, &message, parent).await
            }
            ConfigCommand::Versions { limit, kind, name, remote } => {
                control_cli::versions(&remote, limit, &kind, name.as_deref()).await
            }
            ConfigCommand::Show { version, remote } => control_cli::show(&remote, version).await,
            ConfigCommand::Diff { from, to, remote } => control_cli::diff(&remote, from, to).await,
        },
    }
}
