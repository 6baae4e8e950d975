//! Test harness: real `palisade` processes on loopback, real sockets, readiness by the processes'
//! own "ready" lines (never by sleeping).
#![allow(dead_code)]

pub mod browser;
pub mod etcd;
pub mod fleet;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

pub fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "palisade-test-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(std::sync::Arc::new(d))
}

/// A test's scratch directory, removed when the last handle to it is dropped.
#[derive(Clone)]
pub struct TempDir(std::sync::Arc<PathBuf>);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::sync::Arc::strong_count(&self.0) == 1 {
            let _ = std::fs::remove_dir_all(&*self.0);
        }
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_program(bin(), args)
    }

    /// Any program, its stdout read line by line (as [`Proc::wait_line`] waits for).
    pub fn spawn_program(program: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .env("PALISADE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines: rx }
    }

    /// Waits for a stdout line containing `marker`.
    pub fn wait_line(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(marker) => return l,
                Ok(_) => continue,
                Err(e) => panic!("no line with {marker:?}: {e}"),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "process did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}="))).and_then(|v| v.parse().ok())
}

pub struct OriginProc {
    pub proc: Proc,
    pub addr: SocketAddr,
}

pub fn origin(name: &str) -> OriginProc {
    let proc = Proc::spawn(&["origin", "--listen", "127.0.0.1:0", "--name", name]);
    let line = proc.wait_line("palisade origin ready");
    let addr = field(&line, "http").unwrap();
    OriginProc { proc, addr }
}

/// An origin address that refuses every connection: a socket bound to a loopback port and never
/// listening. Hold the socket: while it lives, no other test can take the port (a killed
/// origin's port can be handed to the next process that asks for one).
pub fn dead_origin() -> (tokio::net::TcpSocket, SocketAddr) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

pub struct EdgeProc {
    pub proc: Proc,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// Dropped after `proc` (fields drop in order): the process is gone before its files.
    pub dir: TempDir,
    pub config: PathBuf,
}

impl EdgeProc {
    pub fn http(&self) -> SocketAddr {
        self.http.unwrap()
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub async fn metrics(&self) -> String {
        get(&format!("http://{}/metrics", self.admin)).await.1
    }

    /// Value of one metric line (exact series, e.g. `palisade_config_version`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let m = self.metrics().await;
        m.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
    }

    pub async fn admin_json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (s, b) = request(method, &format!("http://{}{}", self.admin, path), &[], body.as_bytes().to_vec()).await;
        (s, serde_json::from_str(&b).unwrap_or(serde_json::Value::Null))
    }
}

/// The listen/admin header of a test config: everything on port 0 of loopback.
pub fn listen_section(https: bool) -> String {
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{}",
        if https { "https = \"127.0.0.1:0\"\n" } else { "" }
    )
}

/// A one-zone config for `hosts` in front of `origins`, with extra zone lines.
pub fn zone_config(hosts: &[&str], origins: &[SocketAddr], extra_zone: &str) -> String {
    let hosts = hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
    let origins = origins.iter().map(|o| format!("{{ address = \"{o}\" }}")).collect::<Vec<_>>().join(", ");
    format!(
        "{}\n[[zones]]\nname = \"site\"\nhostnames = [{hosts}]\norigins = [{origins}]\n{extra_zone}\n",
        listen_section(false)
    )
}

pub fn edge(config: &str) -> EdgeProc {
    let dir = temp_dir("edge");
    let path = dir.join("palisade.toml");
    std::fs::write(&path, config).unwrap();
    edge_with(dir, path, &[])
}

pub fn edge_with(dir: TempDir, config: PathBuf, extra: &[&str]) -> EdgeProc {
    let state = dir.join("state");
    let mut args = vec!["edge", "--config", config.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(&args);
    let line = proc.wait_line("palisade edge ready");
    EdgeProc {
        http: field(&line, "http"),
        https: field(&line, "https"),
        admin: field(&line, "admin").unwrap(),
        proc,
        dir,
        config,
    }
}

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A request through a fresh pooled client; returns (status, body).
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let (s, _, b) = request_full(&client(), method, url, headers, body).await;
    (s, b)
}

pub async fn request_full(
    c: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(20), c.request(b.body(Full::new(Bytes::from(body))).unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, headers, String::from_utf8_lossy(&body).to_string())
}

pub async fn get(url: &str) -> (u16, String) {
    request("GET", url, &[], Vec::new()).await
}

pub async fn get_host(addr: SocketAddr, host: &str, path: &str) -> (u16, hyper::HeaderMap, String) {
    request_full(&client(), "GET", &format!("http://{addr}{path}"), &[("host", host)], Vec::new()).await
}

/// Connects from a chosen loopback source address (127.0.0.0/8 gives many client IPs).
pub async fn connect_from(src: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{src}:0").parse().unwrap())?;
    s.connect(to).await
}

/// Writes raw bytes and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_all(&mut s, wait).await
}

pub async fn read_all(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Status codes of every response in a raw HTTP/1.1 byte stream.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ").filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok()).collect()
}

/// Polls `f` until it returns true (readiness, not sleeping a fixed time).
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Which origin answered (the demo origin's `x-origin-name`).
pub fn origin_name(h: &hyper::HeaderMap) -> String {
    h.get("x-origin-name").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// The demo origin's own counters (`requests`, `connections`). Asked over a fresh connection,
/// which itself counts as one request and one connection.
pub async fn origin_stats(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(&format!("http://{addr}/__origin/stats")).await.1).unwrap()
}

/// One GET on a kept-alive raw connection (so that requests share one edge worker, whose pool
/// is what the test is about; a pooled client may open a second connection at any time).
/// Reads a `content-length` response; returns (status, body).
pub async fn get_on(s: &mut TcpStream, host: &str, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n =
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("response timed out").unwrap();
        assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .expect("a content-length response");
        if got.len() >= end + 4 + len {
            let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            return (status, String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string());
        }
    }
}
