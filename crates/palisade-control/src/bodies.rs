//! Request bodies of the node and rollout endpoints, decoded from untrusted JSON (fuzzed with the
//! push body: `fuzz/fuzz_targets/control_push.rs`). Unknown fields are refused.

use serde::Deserialize;
use serde_json::Value;

/// `POST /v1/versions`, as sent (checked further by [`crate::api::parse_push`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    #[serde(default)]
    pub kind: Option<String>,
    pub content: String,
    pub message: String,
    /// Absent: no check; null: there must be no version yet; N: the head must be N.
    #[serde(default)]
    pub parent: Option<Value>,
}

/// `POST /v1/nodes/register`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    pub city: String,
    pub software: String,
}

/// `POST /v1/nodes/self/answer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// None: back on the boot config.
    pub version: Option<u64>,
    pub ok: bool,
    #[serde(default)]
    pub problems: Vec<String>,
}

/// `PUT /v1/nodes/{name}/assignment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    pub version: u64,
}

/// `POST /v1/nodes/self/report`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    /// Latency histogram since the node started: bucket upper bounds in ms, and the count in
    /// each bucket (one more count than bounds: the last is above every bound).
    #[serde(default)]
    pub latency_le_ms: Vec<f64>,
    #[serde(default)]
    pub latency: Vec<u64>,
    /// The hash of the config it runs.
    #[serde(default)]
    pub hash: Option<String>,
    /// Per security module, cumulative since the node started.
    #[serde(default)]
    pub modules: std::collections::BTreeMap<String, ModuleReport>,
    /// Labelled bot traffic, for the model generator.
    #[serde(default)]
    pub bot: Option<palisade_config::botlearn::Learning>,
}

/// One module's cumulative figures on a node.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleReport {
    #[serde(default)]
    pub calls: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub panics: u64,
    #[serde(default)]
    pub breaker_trips: u64,
}

/// `POST /v1/rollouts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub version: u64,
    #[serde(default)]
    pub stages: Option<Vec<String>>,
    #[serde(default)]
    pub bake_ms: Option<u64>,
    /// The emergency lane: shorter bakes and fewer stages by default; still validated and staged.
    #[serde(default)]
    pub emergency: bool,
}

/// `POST /v1/killswitches`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engage {
    pub name: String,
    pub reason: String,
}

/// `POST /v1/nodes/self/killswitches/ack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub generation: u64,
    #[serde(default)]
    pub unknown: Vec<String>,
}
