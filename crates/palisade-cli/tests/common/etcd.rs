//! A real etcd cluster for the tests: three members (Debian's `etcd-server`, installed by
//! `scripts/test`) on loopback ports the kernel hands out, each in its own data directory,
//! killed and removed on drop. Ready when every member answers a read.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    child: Child,
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    _dir: TempDir,
}

/// Whether a member serves a read (`POST /v3/kv/range` answered 200).
fn answers(client_url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(addr) = client_url.strip_prefix("http://") else { return false };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let body = "{\"key\":\"AA==\"}";
    let req = format!(
        "POST /v3/kv/range HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut out).is_ok() && out.starts_with("HTTP/1.1 200")
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn etcd_binary() -> String {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("etcd is not installed: run ./scripts/test, which installs Debian's etcd-server")
}

impl EtcdCluster {
    pub fn start(n: usize) -> EtcdCluster {
        let dir = temp_dir("etcd");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
        let token = format!("palisade-test-{}", dir.file_name().unwrap().to_string_lossy());
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let child = Command::new(etcd_binary())
                    .args(["--name", &format!("m{i}")])
                    .args(["--data-dir", dir.join(format!("m{i}")).to_str().unwrap()])
                    .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", &token])
                    // Fast elections on loopback.
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start etcd");
                EtcdMember { name: format!("m{i}"), client_url, child }
            })
            .collect();
        let c = EtcdCluster { members, _dir: dir };
        c.wait_ready();
        c
    }

    /// Client URLs, comma-separated (as `palisade control --etcd` takes them).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.client_url.as_str()).collect::<Vec<_>>().join(",")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in &self.members {
            loop {
                if answers(&m.client_url) {
                    break;
                }
                assert!(Instant::now() < deadline, "etcd member {} not ready", m.name);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
