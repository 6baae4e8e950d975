//! The operator and node API as an OpenAPI 3.1 document, served at `GET /openapi.json`. Built from
//! one table; a test holds the table and the router to the same routes.

use serde_json::{json, Map, Value};

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Role {
    Anyone,
    Operator,
    Node,
    OperatorOrNode,
    /// Another replica of the same control plane.
    Replica,
}

struct Op {
    method: &'static str,
    path: &'static str,
    role: Role,
    summary: &'static str,
    /// Request body fields: (name, JSON type, required, description).
    body: &'static [(&'static str, &'static str, bool, &'static str)],
    /// Status codes and what they mean.
    responses: &'static [(&'static str, &'static str)],
}

const OPS: &[Op] = &[
    Op {
        method: "get",
        path: "/healthz",
        role: Role::Anyone,
        summary: "Liveness",
        body: &[],
        responses: &[("200", "ok")],
    },
    Op {
        method: "post",
        path: "/v1/versions",
        role: Role::Operator,
        summary: "Store a config document as a new version (validated as a node would)",
        body: &[
            ("content", "string", true, "the TOML document"),
            ("message", "string", true, "what the change is (1..4096 bytes)"),
            ("parent", "integer", false, "only if the head is this version (null: no version yet)"),
            ("kind", "string", false, "\"config\" (default)"),
        ],
        responses: &[
            ("201", "stored: {created, version}"),
            ("200", "the content equals the head: nothing stored"),
            ("400", "a bad request body"),
            ("409", "parent is not the head: {error, head}"),
            ("413", "over the document limit"),
            ("422", "rejected: {error, problems: [{path, message}]}"),
        ],
    },
    Op {
        method: "get",
        path: "/v1/versions",
        role: Role::Operator,
        summary: "Versions, newest first (query: kind, limit, before)",
        body: &[],
        responses: &[("200", "{versions}")],
    },
    Op {
        method: "get",
        path: "/v1/versions/{n}",
        role: Role::Operator,
        summary: "A version with its content",
        body: &[],
        responses: &[("200", "{version, content}"), ("404", "no such version")],
    },
    Op {
        method: "get",
        path: "/v1/versions/{n}/content",
        role: Role::OperatorOrNode,
        summary: "The exact bytes, hash in X-Palisade-Hash",
        body: &[],
        responses: &[("200", "application/toml"), ("404", "no such version")],
    },
    Op {
        method: "post",
        path: "/v1/validate",
        role: Role::Operator,
        summary: "Check a document (raw TOML body) without storing it",
        body: &[],
        responses: &[("200", "{valid, hash}"), ("413", "too large"), ("422", "{problems}")],
    },
    Op {
        method: "get",
        path: "/v1/diff/{a}/{b}",
        role: Role::Operator,
        summary: "Structured changes by zone and field",
        body: &[],
        responses: &[("200", "{from, to, changes: [{path, change, old, new}]}")],
    },
    Op {
        method: "get",
        path: "/v1/audit",
        role: Role::Operator,
        summary: "Audit records, newest first (query: limit)",
        body: &[],
        responses: &[("200", "{records}")],
    },
    Op {
        method: "get",
        path: "/v1/nodes",
        role: Role::Operator,
        summary: "Every node: city, assigned and running version, last refusal",
        body: &[],
        responses: &[("200", "{nodes}")],
    },
    Op {
        method: "post",
        path: "/v1/nodes/register",
        role: Role::Node,
        summary: "A node says hello",
        body: &[("city", "string", true, "location label"), ("software", "string", true, "the node's version")],
        responses: &[("200", "{node}")],
    },
    Op {
        method: "get",
        path: "/v1/nodes/self/assignment",
        role: Role::Node,
        summary: "Long poll for the assigned version (query: known, wait_ms <= 30000)",
        body: &[],
        responses: &[
            ("200", "{number, hash}; number null: back to the boot config"),
            ("204", "unchanged"),
            ("409", "register first"),
        ],
    },
    Op {
        method: "post",
        path: "/v1/nodes/self/answer",
        role: Role::Node,
        summary: "ACK or NACK a version, with every reason",
        body: &[
            ("version", "integer", true, "the version (null: the boot config)"),
            ("ok", "boolean", true, "running it"),
            ("problems", "array", false, "why not"),
        ],
        responses: &[("204", "recorded")],
    },
    Op {
        method: "put",
        path: "/v1/nodes/{name}/assignment",
        role: Role::Operator,
        summary: "Point one node at a version by hand",
        body: &[("version", "integer", true, "a config version")],
        responses: &[("200", "{node}"), ("404", "no such node or version")],
    },
    Op {
        method: "post",
        path: "/v1/nodes/self/report",
        role: Role::Node,
        summary: "Cumulative counters (the health gates read them)",
        body: &[("requests", "integer", true, "responses sent"), ("errors", "integer", true, "5xx sent")],
        responses: &[("204", "recorded")],
    },
    Op {
        method: "post",
        path: "/v1/nodes/self/analytics",
        role: Role::Node,
        summary: "An interval of traffic analytics: per zone, the counters of the layout `fields` names (requests, status classes, actions, cache hits, latency and bot score histograms) and the heaviest clients, paths and fingerprints",
        body: &[
            ("start", "integer", true, "Unix seconds the interval started"),
            ("seconds", "integer", true, "its length"),
            ("zones", "object", true, "by zone: counts (array), top {ips, paths, fingerprints}, mitigations"),
        ],
        responses: &[("204", "stored"), ("400", "not in the layout, or over a limit")],
    },
    Op {
        method: "get",
        path: "/v1/analytics",
        role: Role::Operator,
        summary: "Traffic over a range (query: zone, city, from, to in Unix seconds; default the last hour): counters per step (10 s for the last day, 1 min for 30 days), totals over the range, the heaviest hitters; `fields` names the counters",
        body: &[],
        responses: &[("200", "fields and series"), ("400", "a bad range")],
    },
    Op {
        method: "post",
        path: "/v1/killswitches",
        role: Role::Operator,
        summary: "Switch a module off on every node",
        body: &[("name", "string", true, "a name from GET /v1/killswitches (access_log, retries, splice, ip_lists, fault, firewall, rate_limits, ddos, cache)"), ("reason", "string", true, "why")],
        responses: &[("200", "{generation, changed}"), ("404", "no such switch")],
    },
    Op {
        method: "get",
        path: "/v1/killswitches",
        role: Role::Operator,
        summary: "Switches, engaged and known",
        body: &[],
        responses: &[("200", "{generation, engaged, known}")],
    },
    Op {
        method: "delete",
        path: "/v1/killswitches/{name}",
        role: Role::Operator,
        summary: "Release a switch",
        body: &[],
        responses: &[("200", "{generation, changed}")],
    },
    Op {
        method: "get",
        path: "/v1/nodes/self/killswitches",
        role: Role::Node,
        summary: "Long poll for the kill switches (query: known, wait_ms)",
        body: &[],
        responses: &[("200", "{generation, off}"), ("204", "unchanged")],
    },
    Op {
        method: "post",
        path: "/v1/nodes/self/killswitches/ack",
        role: Role::Node,
        summary: "A node applied a generation",
        body: &[
            ("generation", "integer", true, "applied"),
            ("unknown", "array", false, "switch names it does not have"),
        ],
        responses: &[("204", "recorded")],
    },
    Op {
        method: "post",
        path: "/v1/cache/purge",
        role: Role::Operator,
        summary: "Purge cached objects on every node",
        body: &[
            ("files", "array", false, "exact URLs"),
            ("prefixes", "array", false, "URL prefixes (host/path/)"),
            ("hosts", "array", false, "every object of these hosts"),
            ("tags", "array", false, "objects whose Cache-Tag named one of these"),
            ("purge_everything", "boolean", false, "everything (alone)"),
            ("zone", "string", false, "only this zone's objects (tags, everything)"),
        ],
        responses: &[("200", "{seq}"), ("400", "nothing to purge, too many items, or a bad field")],
    },
    Op {
        method: "get",
        path: "/v1/cache/purges",
        role: Role::Operator,
        summary: "The purges kept for nodes that are behind",
        body: &[],
        responses: &[("200", "{latest, purges, complete}")],
    },
    Op {
        method: "get",
        path: "/v1/nodes/self/purges",
        role: Role::Node,
        summary: "Long poll for cache purges (query: after, wait_ms)",
        body: &[],
        responses: &[("200", "{latest, purges, complete}"), ("204", "none new")],
    },
    Op {
        method: "post",
        path: "/v1/nodes/self/purges/ack",
        role: Role::Node,
        summary: "A node applied the purges up to seq",
        body: &[("seq", "integer", true, "applied")],
        responses: &[("204", "recorded")],
    },
    Op {
        method: "post",
        path: "/v1/rollouts",
        role: Role::Operator,
        summary: "Start a staged rollout with health gates",
        body: &[
            ("version", "integer", true, "a config version"),
            ("stages", "array", false, "node counts or percentages, default [\"1\", \"10%\", \"50%\", \"100%\"]"),
            ("bake_ms", "integer", false, "per stage, default 30000"),
            ("emergency", "boolean", false, "the emergency lane: default stages 1, 50%, 100% and 5000 ms bakes"),
        ],
        responses: &[("201", "{rollout}"), ("409", "one is running, or no such version")],
    },
    Op {
        method: "get",
        path: "/v1/rollouts",
        role: Role::Operator,
        summary: "Recent rollouts",
        body: &[],
        responses: &[("200", "{rollouts}")],
    },
    Op {
        method: "get",
        path: "/v1/rollouts/{id}",
        role: Role::Operator,
        summary: "A rollout with every decision and the figures behind it",
        body: &[],
        responses: &[("200", "{rollout, events}"), ("404", "no such rollout")],
    },
    Op {
        method: "post",
        path: "/v1/rollouts/{id}/abort",
        role: Role::Operator,
        summary: "Stop and roll back",
        body: &[],
        responses: &[("204", "rolled back"), ("409", "not running")],
    },
    Op {
        method: "post",
        path: "/v1/artifacts/{kind}/{name}",
        role: Role::Operator,
        summary: "Store an artifact version (raw bytes in the body; kind ip_list, feature_file or cert_bundle; query: message, unchecked, rollout, bake_ms, approved). When the head config lists the artifact, a config version pinning the new hash is made, and with rollout=true rolled out. A feature file whose feature count or size moves more than 50% from the one the fleet runs is held (409) unless approved=true",
        body: &[],
        responses: &[
            ("201", "stored; with the config version and rollout it led to"),
            ("200", "the content equals the head's"),
            ("409", "needs approval: a feature file moving more than 50% from the one the fleet runs"),
            ("413", "over the kind's size limit"),
            ("422", "refused by the kind's decoder, every problem listed"),
        ],
    },
    Op {
        method: "get",
        path: "/v1/bot/learning",
        role: Role::Operator,
        summary: "The nodes' labelled bot traffic, summed: requests of people (a clearance) and of scripts (a signature), and of each per header name",
        body: &[],
        responses: &[("200", "nodes and learning")],
    },
    Op {
        method: "post",
        path: "/v1/bot/generate/{name}",
        role: Role::Operator,
        summary: "Generate feature file `name` from the nodes' labelled traffic (its header_present features replaced) and push it as the `generator` through the same checks (query: message, rollout, bake_ms, approved)",
        body: &[],
        responses: &[
            ("201", "stored; with the config version and rollout it led to"),
            ("404", "no such feature file to start from"),
            ("409", "not enough labelled traffic, or needs approval"),
            ("422", "the generated file was refused by the decoder"),
        ],
    },
    Op {
        method: "get",
        path: "/v1/artifacts/{hash}/content",
        role: Role::OperatorOrNode,
        summary: "An artifact's exact bytes, by SHA-256",
        body: &[],
        responses: &[("200", "the bytes"), ("404", "no artifact with this hash")],
    },
    Op {
        method: "get",
        path: "/v1/artifacts/sources",
        role: Role::Operator,
        summary: "Where artifacts come from (author, kind, name), their last outcomes, and whether each is healthy, failing or flapping",
        body: &[],
        responses: &[("200", "the sources")],
    },
    Op {
        method: "post",
        path: "/v1/rollouts/{id}/pause",
        role: Role::Operator,
        summary: "Pause a running rollout: nodes stay where they are, no stage moves",
        body: &[],
        responses: &[("204", "paused"), ("409", "not running")],
    },
    Op {
        method: "post",
        path: "/v1/rollouts/{id}/resume",
        role: Role::Operator,
        summary: "Resume a paused rollout; the current stage bakes again from the start",
        body: &[],
        responses: &[("204", "resumed"), ("409", "not paused")],
    },
    Op {
        method: "get",
        path: "/v1/replication",
        role: Role::Operator,
        summary: "Where the state lives: embedded (one SQLite file) or etcd, with this replica's name, whether it leads, and the last log index it applied",
        body: &[],
        responses: &[("200", "the mode and position")],
    },
    Op {
        method: "get",
        path: "/v1/internal/blobs/{hash}",
        role: Role::Replica,
        summary: "Between replicas: a large log entry's bytes, by SHA-256",
        body: &[],
        responses: &[("200", "the bytes"), ("404", "not on this replica")],
    },
    Op {
        method: "put",
        path: "/v1/internal/blobs/{hash}",
        role: Role::Replica,
        summary: "Between replicas: keep a large log entry's bytes (checked against the hash)",
        body: &[],
        responses: &[("204", "kept"), ("422", "the bytes do not match the hash")],
    },
    Op {
        method: "get",
        path: "/openapi.json",
        role: Role::Anyone,
        summary: "This document",
        body: &[],
        responses: &[("200", "OpenAPI 3.1")],
    },
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let security = match op.role {
            Role::Anyone => json!([]),
            Role::Operator => json!([{ "operator": [] }]),
            Role::Node => json!([{ "node": [] }]),
            Role::OperatorOrNode => json!([{ "operator": [] }, { "node": [] }]),
            Role::Replica => json!([{ "replica": [] }]),
        };
        let mut responses = Map::new();
        for (code, what) in op.responses {
            responses.insert((*code).into(), json!({ "description": what }));
        }
        let mut operation = Map::new();
        operation.insert("summary".into(), json!(op.summary));
        operation.insert("security".into(), security);
        operation.insert("responses".into(), Value::Object(responses));
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            operation.insert("parameters".into(), json!(params));
        }
        if !op.body.is_empty() {
            let mut props = Map::new();
            let mut required = Vec::new();
            for (name, ty, req, what) in op.body {
                props.insert((*name).into(), json!({ "type": ty, "description": what }));
                if *req {
                    required.push(*name);
                }
            }
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": { "application/json": { "schema": { "type": "object", "properties": props, "required": required } } }
                }),
            );
        }
        if let Value::Object(methods) = paths.entry(op.path.to_string()).or_insert_with(|| json!({})) {
            methods.insert(op.method.into(), Value::Object(operation));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Palisade control plane", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": {
            "operator": { "type": "http", "scheme": "bearer", "description": "an operator token (--tokens)" },
            "node": { "type": "http", "scheme": "bearer", "description": "a node token (--node-tokens)" },
            "replica": { "type": "http", "scheme": "bearer", "description": "the replicas' shared token, kept in etcd" }
        } },
        "paths": paths
    })
}

#[cfg(test)]
mod tests {
    /// Every route the router serves is in the document, and nothing else.
    #[test]
    fn the_document_covers_the_router() {
        let source = include_str!("api.rs");
        let mut routed: Vec<(String, String)> = Vec::new();
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
            let path = line.split('"').nth(1).unwrap().to_string();
            for m in ["get", "post", "put", "delete"] {
                if line.contains(&format!("{m}(")) {
                    routed.push((m.to_string(), path.clone()));
                }
            }
        }
        let mut documented: Vec<(String, String)> =
            super::OPS.iter().map(|o| (o.method.to_string(), o.path.to_string())).collect();
        routed.sort();
        documented.sort();
        assert_eq!(routed, documented);
        let doc = super::document();
        assert_eq!(
            doc["paths"]["/v1/versions"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"],
            serde_json::json!(["content", "message"])
        );
    }
}
