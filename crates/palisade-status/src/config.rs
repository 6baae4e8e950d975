//! The status page's own config file (TOML). It names the cities (where edge nodes answer) and
//! the zones (sites) to probe through each of them; every (zone, city) pair is one probe target.
//! It is read once at start; a bad file names the field and the limit, and nothing starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Most cities, zones and webhooks: the page and the probe round stay small.
pub const MAX_CITIES: usize = 64;
pub const MAX_ZONES: usize = 128;
/// Most probe targets (zones x cities) in one round.
pub const MAX_TARGETS: usize = 2048;
pub const MAX_WEBHOOKS: usize = 16;
/// Longest name, host, path or body match.
pub const MAX_TEXT: usize = 256;
/// Most of a response body a probe reads (a body match looks only here).
pub const MAX_PROBE_BODY: usize = 256 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// The page's title ("Example status").
    #[serde(default = "default_title")]
    pub title: String,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where `status.db` lives; relative to the config file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Operators who may post incidents and maintenance (`NAME TOKEN` lines); none: read-only.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Public URL of the page (links in the feed and webhooks); default `http://LISTEN`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// One probe round every `interval_ms`.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Consecutive worse results before a target's state gets worse: one failed probe is not an
    /// incident.
    #[serde(default = "default_fail_after")]
    pub fail_after: u32,
    /// Consecutive better results before it gets better again.
    #[serde(default = "default_recover_after")]
    pub recover_after: u32,
    /// PEM roots that probed certificates must chain to; default the system bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cities: Vec<City>,
    #[serde(default)]
    pub zones: Vec<Zone>,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
}

/// A location: where its edge node answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct City {
    pub name: String,
    /// `host:port` of the node's public listener.
    pub address: String,
    /// Probe over TLS (the zone's host is the SNI name).
    #[serde(default)]
    pub https: bool,
}

/// A site, probed through every city.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    /// The Host (and SNI) the probes carry.
    pub host: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_expect")]
    pub expect_status: u16,
    /// The body must contain this text (in its first 256 KiB).
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Slower than this is degraded performance.
    #[serde(default = "default_latency")]
    pub latency_ms: u64,
    /// A certificate expiring within this many days is degraded (HTTPS cities only).
    #[serde(default = "default_cert_days")]
    pub cert_expiry_days: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL that receives a JSON POST on every change.
    pub url: String,
}

fn default_title() -> String {
    "Palisade status".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9700))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("status-data")
}
fn default_interval() -> u64 {
    10_000
}
fn default_timeout() -> u64 {
    5_000
}
fn default_fail_after() -> u32 {
    3
}
fn default_recover_after() -> u32 {
    2
}
fn default_path() -> String {
    "/".into()
}
fn default_expect() -> u16 {
    200
}
fn default_latency() -> u64 {
    2_000
}
fn default_cert_days() -> u64 {
    14
}

/// Parses and checks a config; every problem with its field.
pub fn parse(text: &str) -> Result<StatusConfig, Vec<String>> {
    let de = toml::Deserializer::parse(text).map_err(|e| vec![e.to_string()])?;
    let config: StatusConfig =
        serde_path_to_error::deserialize(de).map_err(|e| vec![format!("{}: {}", e.path(), e.inner())])?;
    let problems = check(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn check(c: &StatusConfig) -> Vec<String> {
    let mut p = Vec::new();
    let mut text = |field: String, v: &str| {
        if v.is_empty() || v.len() > MAX_TEXT {
            p.push(format!("{field}: 1 to {MAX_TEXT} bytes (is {})", v.len()));
        }
    };
    text("title".into(), &c.title);
    for (i, city) in c.cities.iter().enumerate() {
        text(format!("cities[{i}].name"), &city.name);
        text(format!("cities[{i}].address"), &city.address);
    }
    for (i, z) in c.zones.iter().enumerate() {
        text(format!("zones[{i}].name"), &z.name);
        text(format!("zones[{i}].host"), &z.host);
        text(format!("zones[{i}].path"), &z.path);
        if let Some(b) = &z.body_contains {
            text(format!("zones[{i}].body_contains"), b);
        }
    }
    for (i, city) in c.cities.iter().enumerate() {
        if city.address.parse::<hyper::http::uri::Authority>().map(|a| a.port_u16().is_none()).unwrap_or(true) {
            p.push(format!("cities[{i}].address: `{}` is not host:port", city.address));
        }
        if c.cities.iter().take(i).any(|o| o.name == city.name) {
            p.push(format!("cities[{i}].name: `{}` appears twice", city.name));
        }
    }
    for (i, z) in c.zones.iter().enumerate() {
        if !z.path.starts_with('/') || z.path.parse::<hyper::Uri>().is_err() {
            p.push(format!("zones[{i}].path: `{}` is not an absolute path", z.path));
        }
        if z.host.parse::<hyper::http::uri::Authority>().is_err() {
            p.push(format!("zones[{i}].host: `{}` is not a host name", z.host));
        }
        if !(100..=599).contains(&z.expect_status) {
            p.push(format!("zones[{i}].expect_status: 100 to 599 (is {})", z.expect_status));
        }
        if z.latency_ms == 0 || z.latency_ms > 60_000 {
            p.push(format!("zones[{i}].latency_ms: 1 to 60000 (is {})", z.latency_ms));
        }
        if c.zones.iter().take(i).any(|o| o.name == z.name) {
            p.push(format!("zones[{i}].name: `{}` appears twice", z.name));
        }
    }
    if c.cities.is_empty() || c.cities.len() > MAX_CITIES {
        p.push(format!("cities: 1 to {MAX_CITIES} (are {})", c.cities.len()));
    }
    if c.zones.is_empty() || c.zones.len() > MAX_ZONES {
        p.push(format!("zones: 1 to {MAX_ZONES} (are {})", c.zones.len()));
    }
    if c.cities.len() * c.zones.len() > MAX_TARGETS {
        p.push(format!("zones x cities: at most {MAX_TARGETS} probe targets (are {})", c.cities.len() * c.zones.len()));
    }
    if c.webhooks.len() > MAX_WEBHOOKS {
        p.push(format!("webhooks: at most {MAX_WEBHOOKS} (are {})", c.webhooks.len()));
    }
    for (i, w) in c.webhooks.iter().enumerate() {
        let ok = w.url.parse::<hyper::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() && w.url.len() <= MAX_TEXT
        });
        if !ok {
            p.push(format!("webhooks[{i}].url: `{}` is not an http(s) URL", w.url));
        }
    }
    if !(100..=3_600_000).contains(&c.interval_ms) {
        p.push(format!("interval_ms: 100 to 3600000 (is {})", c.interval_ms));
    }
    if !(50..=60_000).contains(&c.timeout_ms) {
        p.push(format!("timeout_ms: 50 to 60000 (is {})", c.timeout_ms));
    }
    if !(1..=100).contains(&c.fail_after) {
        p.push(format!("fail_after: 1 to 100 (is {})", c.fail_after));
    }
    if !(1..=100).contains(&c.recover_after) {
        p.push(format!("recover_after: 1 to 100 (is {})", c.recover_after));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
title = "Example"
[[cities]]
name = "amsterdam"
address = "127.0.0.1:8080"
[[zones]]
name = "demo"
host = "demo.localhost"
"#;

    #[test]
    fn defaults_and_problems() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.interval_ms, c.fail_after, c.zones[0].expect_status), (10_000, 3, 200));
        let bad = format!("fail_after = 0\n{GOOD}\n[[webhooks]]\nurl = \"ftp://x\"\n");
        let e = parse(&bad).unwrap_err();
        assert!(e.iter().any(|p| p.contains("fail_after: 1 to 100")), "{e:?}");
        assert!(e.iter().any(|p| p.contains("webhooks[0].url")), "{e:?}");
        let e = parse("[[cities]]\nname = \"a\"\naddress = \"x\"\nport = 1\n").unwrap_err();
        assert!(e[0].contains("cities[0]") && e[0].contains("port"), "{e:?}");
        let twice = format!("{GOOD}\n[[zones]]\nname = \"demo\"\nhost = \"b\"\n");
        assert!(parse(&twice).unwrap_err().iter().any(|p| p.contains("zones[1].name: `demo` appears twice")));
    }
}
