//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range` and friends, the same
//! API as gRPC, served on every member's client URL). It needs nothing beyond the HTTP client
//! the workspace already has: no protobuf compiler and no gRPC stack in the build. It speaks to
//! a list of members and moves to the next one when a member does not answer.
//!
//! What the control plane uses: range reads, puts, a compare-and-create transaction (the
//! replicated log's append and the leader key), leases with keep-alive, deletes, and watches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// One call to a member; a member that takes longer is treated as down.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (a range of log entries, each at most [`MAX_VALUE`]).
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Largest value written: under etcd's default request limit of 1.5 MiB, with room for framing.
pub const MAX_VALUE: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Etcd {
    endpoints: std::sync::Arc<Vec<String>>,
    /// The member that answered last: tried first.
    current: std::sync::Arc<AtomicUsize>,
    client: HttpClient,
}

/// A key and its value, with the revision it was last written at.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

static NULL: Value = Value::Null;

/// The value at a JSON pointer (`/header/revision`), or null.
fn field<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&NULL)
}

fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), value);
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

fn unb64(v: &Value) -> Vec<u8> {
    v.as_str().and_then(|s| B64.decode(s).ok()).unwrap_or_default()
}

/// etcd's JSON carries 64-bit numbers as strings.
fn num(v: &Value) -> i64 {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_i64()).unwrap_or(0)
}

/// The end of the range of every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kvs(answer: &Value) -> Vec<Kv> {
    field(answer, "/kvs")
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| Kv {
            key: String::from_utf8_lossy(&unb64(field(kv, "/key"))).into_owned(),
            value: unb64(field(kv, "/value")),
            mod_revision: num(field(kv, "/mod_revision")),
        })
        .collect()
}

impl Etcd {
    /// `endpoints`: client URLs of the members, e.g. `http://127.0.0.1:2379`.
    pub fn new(endpoints: Vec<String>) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("etcd: no endpoints".into());
        }
        for e in &endpoints {
            if !e.starts_with("http://") {
                return Err(format!("etcd endpoint {e}: only http:// client URLs are supported"));
            }
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            endpoints: std::sync::Arc::new(
                endpoints.into_iter().map(|e| e.trim_end_matches('/').to_string()).collect(),
            ),
            current: std::sync::Arc::default(),
            client,
        })
    }

    /// One API call, to the current member, then to each of the others in turn.
    async fn call(&self, path: &str, body: Value) -> Result<Value, String> {
        let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| e.to_string())?);
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for i in 0..n {
            let at = (first + i) % n;
            let Some(base) = self.endpoints.get(at) else { continue };
            match self.call_one(base, path, body.clone()).await {
                Ok(v) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => last_error = e,
            }
        }
        Err(format!("etcd: no member answered ({last_error})"))
    }

    async fn call_one(&self, base: &str, path: &str, body: Bytes) -> Result<Value, String> {
        let url = format!("{base}{path}");
        let req = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let answer = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))?;
            if !status.is_success() {
                return Err(format!("{url}: {status} {}", field(&v, "/message").as_str().unwrap_or("")));
            }
            Ok(v)
        };
        tokio::time::timeout(CALL_TIMEOUT, answer).await.map_err(|_| format!("{url}: no answer in time"))?
    }

    pub async fn get(&self, key: &str) -> Result<Option<Kv>, String> {
        let v = self.call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) })).await?;
        Ok(kvs(&v).into_iter().next())
    }

    /// Keys from `from` (inclusive) up to the end of `prefix`, in key order, at most `limit`.
    pub async fn range_from(&self, from: &str, prefix: &str, limit: i64) -> Result<Vec<Kv>, String> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({ "key": b64(from.as_bytes()), "range_end": b64(&prefix_end(prefix)), "limit": limit }),
            )
            .await?;
        Ok(kvs(&v))
    }

    /// The cluster's current revision.
    pub async fn revision(&self) -> Result<i64, String> {
        let v = self.call("/v3/kv/range", json!({ "key": b64(b"\0"), "limit": 1 })).await?;
        Ok(num(field(&v, "/header/revision")))
    }

    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), String> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(l) = lease {
            set(&mut body, "lease", json!(l.to_string()));
        }
        self.call("/v3/kv/put", body).await.map(|_| ())
    }

    /// Writes `key` only if it does not exist (and, with `fence`, only while `fence.0` holds
    /// `fence.1`). True when written.
    pub async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
        fence: Option<(&str, &[u8])>,
    ) -> Result<bool, String> {
        let mut put = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(l) = lease {
            set(&mut put, "lease", json!(l.to_string()));
        }
        let mut compare =
            vec![json!({ "key": b64(key.as_bytes()), "target": "CREATE", "result": "EQUAL", "create_revision": "0" })];
        if let Some((k, v)) = fence {
            compare.push(json!({ "key": b64(k.as_bytes()), "target": "VALUE", "result": "EQUAL", "value": b64(v) }));
        }
        let v = self.call("/v3/kv/txn", json!({ "compare": compare, "success": [{ "request_put": put }] })).await?;
        Ok(field(&v, "/succeeded").as_bool().unwrap_or(false))
    }

    /// Deletes `key`; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, String> {
        let v = self.call("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) })).await?;
        Ok(num(field(&v, "/deleted")) > 0)
    }

    /// A lease of `ttl_s` seconds; its ID.
    pub async fn grant(&self, ttl_s: i64) -> Result<i64, String> {
        let v = self.call("/v3/lease/grant", json!({ "TTL": ttl_s.to_string() })).await?;
        let id = num(field(&v, "/ID"));
        if id == 0 {
            return Err(format!("etcd: lease not granted: {v}"));
        }
        Ok(id)
    }

    /// Renews a lease; false when it has expired.
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, String> {
        let v = self.call("/v3/lease/keepalive", json!({ "ID": lease.to_string() })).await?;
        Ok(num(field(&v, "/result/TTL")) > 0)
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), String> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() })).await.map(|_| ())
    }

    /// Calls `on_change` with every key written under `prefix` after `revision`, until the
    /// stream breaks (the caller watches again, from where it got to). Returns the last
    /// revision seen.
    pub async fn watch(&self, prefix: &str, revision: i64, mut on_change: impl FnMut(Kv)) -> Result<i64, String> {
        let n = self.endpoints.len();
        let at = self.current.load(Ordering::Relaxed) % n.max(1);
        let base = self.endpoints.get(at).cloned().unwrap_or_default();
        let url = format!("{base}/v3/watch");
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": (revision + 1).to_string(),
        } });
        let req = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = match tokio::time::timeout(CALL_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(r)) => r,
            other => {
                // This member is not answering: the next call tries another.
                self.current.store((at + 1) % n.max(1), Ordering::Relaxed);
                return Err(format!(
                    "{url}: {}",
                    other.map(|r| r.err().map(|e| e.to_string())).ok().flatten().unwrap_or_else(|| "no answer".into())
                ));
            }
        };
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut last = revision;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{url}: {e}"))?;
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            if buf.len() > MAX_ANSWER {
                return Err(format!("{url}: a watch message over {MAX_ANSWER} bytes"));
            }
            // The gateway sends one JSON object per message; take every complete one.
            let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let mut used = 0;
            while let Some(Ok(msg)) = stream.next() {
                used = stream.byte_offset();
                if msg.get("error").is_some() {
                    return Err(format!("{url}: {}", field(&msg, "/error")));
                }
                let result = field(&msg, "/result");
                if field(result, "/canceled").as_bool() == Some(true) {
                    // Compacted past `revision`: the caller resynchronises by reading.
                    return Err(format!("{url}: watch cancelled ({})", field(result, "/cancel_reason")));
                }
                for ev in field(result, "/events").as_array().into_iter().flatten() {
                    let kv = field(ev, "/kv");
                    let change = Kv {
                        key: String::from_utf8_lossy(&unb64(field(kv, "/key"))).into_owned(),
                        value: unb64(field(kv, "/value")),
                        mod_revision: num(field(kv, "/mod_revision")),
                    };
                    last = last.max(change.mod_revision);
                    on_change(change);
                }
            }
            buf.drain(..used);
        }
        Ok(last)
    }
}
