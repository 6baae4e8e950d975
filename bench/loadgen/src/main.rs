//! `palisade-loadgen`: legitimate clients beside an attack, each client bound to its own address
//! in 127.0.0.0/8, against any HTTP/1.1 proxy (bench/shield.sh runs it against Palisade, nginx
//! and HAProxy).
//!
//! - Legitimate clients: `--legit` of them, client `i` on `127.1.x.y`, one request a second on a
//!   kept-alive connection with browser-like headers. Latency is measured from when the request
//!   was due (a stalled client does not hide the wait); a request answered with a non-2xx, or
//!   more than `--timeout-ms` after it was due, fails.
//! - The attack starts after `--warmup-s` (legitimate traffic only) and lasts `--duration-s`:
//!   `flood`: `--attack-conns` kept-alive connections spread over `--attack-ips` addresses
//!   (`127.2.x.y`), each sending as fast as answers come, or `--attack-rate-per-ip` requests a
//!   second per address; `slowloris`: connections that send a request head one header a second
//!   and never finish it, reconnecting when closed.
//!
//! It prints one JSON object: the legitimate clients' success rate and latency during the attack
//! (and before it), the attack's answers by class, and how long after the attack started its
//! requests stopped being served (`mitigated_after_s`: from then on, under 10% of its requests
//! in every quarter second got a 2xx).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Attack {
    None,
    Flood,
    Slowloris,
}

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The proxy's HTTP address.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value = "site.example")]
    host: String,
    #[arg(long, default_value_t = 50)]
    legit: u32,
    #[arg(long, default_value = "/")]
    legit_path: String,
    #[arg(long, default_value_t = 10)]
    warmup_s: u64,
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    #[arg(long, value_enum, default_value = "none")]
    attack: Attack,
    #[arg(long, default_value_t = 1)]
    attack_ips: u32,
    #[arg(long, default_value_t = 200)]
    attack_conns: u32,
    /// Requests a second per attacking address (0: as fast as answers come).
    #[arg(long, default_value_t = 0.0)]
    attack_rate_per_ip: f64,
    #[arg(long, default_value = "/")]
    attack_path: String,
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

fn addr(net: u8, i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, net, (i / 250) as u8, (i % 250 + 1) as u8))
}

async fn connect(src: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src, 0))?;
    let stream = s.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one response; its status, and whether the connection may be used again.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, bool)> {
    buf.clear();
    let mut chunk = [0u8; 16384];
    let err = |m: &str| std::io::Error::other(m.to_string());
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(err("closed"));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buf.len() > 65536 {
                return Err(err("head too large"));
            }
            continue;
        };
        let head = String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).to_ascii_lowercase();
        let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| err("bad status line"))?;
        let close = head.contains("\r\nconnection: close");
        let chunked = head.contains("\r\ntransfer-encoding: chunked");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0);
        let body_start = end + 4;
        loop {
            let have = buf.len().saturating_sub(body_start);
            let done =
                if chunked { buf.get(body_start..).is_some_and(|b| b.ends_with(b"0\r\n\r\n")) } else { have >= len };
            if done {
                return Ok((status, !close));
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(err("closed in body"));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }
}

#[derive(Default)]
struct Legit {
    /// (during the attack?, latency ms or None when failed, failure kind)
    samples: Mutex<Vec<(bool, Option<f64>, &'static str)>>,
}

#[derive(Default)]
struct AttackStats {
    requests: AtomicU64,
    ok: AtomicU64,
    s429: AtomicU64,
    s503: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
    connections: AtomicU64,
    /// Per quarter second of the attack: (2xx, all).
    buckets: Vec<(AtomicU64, AtomicU64)>,
}

async fn legit_client(i: u32, args: Arc<Args>, start: Instant, end: Instant, attack_at: Instant, out: Arc<Legit>) {
    let src = addr(1, i);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\n\
         Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-GB,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n\
         Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n\r\n",
        args.legit_path, args.host
    );
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    // Spread the clients over the second.
    let mut due = start + Duration::from_millis(u64::from(i) * 1000 / u64::from(args.legit.max(1)));
    let timeout = Duration::from_millis(args.timeout_ms);
    while due < end {
        tokio::time::sleep_until(due).await;
        let during = due >= attack_at;
        let attempt = async {
            if conn.is_none() {
                conn = Some(connect(src, args.target).await.map_err(|_| "connect")?);
            }
            let s = conn.as_mut().ok_or("connect")?;
            s.write_all(req.as_bytes()).await.map_err(|_| "write")?;
            let (status, keep) = read_response(s, &mut buf).await.map_err(|_| "read")?;
            if !keep {
                conn = None;
            }
            Ok::<u16, &'static str>(status)
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(429)) => Err("status_429"),
            Ok(Ok(503)) => Err("status_503"),
            Ok(Ok(_)) => Err("status_other"),
            Ok(Err(kind)) => Err(kind),
            Err(_) => Err("timeout"),
        };
        if result.is_err() {
            conn = None;
        }
        let latency = due.elapsed().as_secs_f64() * 1000.0;
        // Served, but more than the timeout after it was due (behind a backlog): a failure too.
        let result = match result {
            Ok(()) if latency > args.timeout_ms as f64 => Err("late"),
            r => r,
        };
        if latency > 200.0 || result.is_err() {
            // On stderr, for a look at when and why (the summary is on stdout).
            eprintln!(
                "legit {i}: {:+.2} s from the attack's start: {latency:.0} ms {result:?}",
                due.saturating_duration_since(attack_at).as_secs_f64()
                    - attack_at.saturating_duration_since(due).as_secs_f64()
            );
        }
        let sample = match result {
            Ok(()) => (during, Some(latency), ""),
            Err(kind) => (during, None, kind),
        };
        if let Ok(mut v) = out.samples.lock() {
            v.push(sample);
        }
        due += Duration::from_secs(1);
    }
}

fn record(stats: &AttackStats, attack_at: Instant, status: u16) {
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let c = match status {
        200..=299 => &stats.ok,
        429 => &stats.s429,
        503 => &stats.s503,
        _ => &stats.other,
    };
    c.fetch_add(1, Ordering::Relaxed);
    let q = (attack_at.elapsed().as_millis() / 250) as usize;
    if let Some((ok, all)) = stats.buckets.get(q) {
        if (200..300).contains(&status) {
            ok.fetch_add(1, Ordering::Relaxed);
        }
        all.fetch_add(1, Ordering::Relaxed);
    }
}

async fn flood_conn(
    src: IpAddr,
    interval: Option<Duration>,
    args: Arc<Args>,
    attack_at: Instant,
    end: Instant,
    stats: Arc<AttackStats>,
) {
    let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: flood/1.0\r\n\r\n", args.attack_path, args.host);
    let mut buf = Vec::new();
    let mut due = Instant::now();
    while Instant::now() < end {
        let Ok(Ok(mut s)) = tokio::time::timeout_at(end, connect(src, args.target)).await else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        loop {
            if let Some(iv) = interval {
                tokio::time::sleep_until(due).await;
                due = due.max(Instant::now() - iv) + iv;
            }
            if Instant::now() >= end {
                return;
            }
            if s.write_all(req.as_bytes()).await.is_err() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            match tokio::time::timeout_at(end, read_response(&mut s, &mut buf)).await {
                Ok(Ok((status, keep))) => {
                    record(&stats, attack_at, status);
                    if !keep {
                        break;
                    }
                }
                Ok(Err(_)) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

async fn slowloris_conn(src: IpAddr, args: Arc<Args>, end: Instant, stats: Arc<AttackStats>, offset: Duration) {
    tokio::time::sleep(offset).await;
    while Instant::now() < end {
        let Ok(Ok(mut s)) = tokio::time::timeout_at(end, connect(src, args.target)).await else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let head = format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: slow/1.0\r\n", args.attack_path, args.host);
        if s.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        let mut n = 0u64;
        let mut byte = [0u8; 512];
        loop {
            // One more header a second, never the end of the head; a server that answers or
            // closes ends this connection (and a new one starts).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = s.read(&mut byte) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            if Instant::now() >= end {
                return;
            }
            n += 1;
            if s.write_all(format!("X-Slow-{n}: {n}\r\n").as_bytes()).await.is_err() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

fn summary(samples: &[(bool, Option<f64>, &'static str)], during: bool) -> serde_json::Value {
    let mine: Vec<_> = samples.iter().filter(|s| s.0 == during).collect();
    let mut lat: Vec<f64> = mine.iter().filter_map(|s| s.1).collect();
    lat.sort_by(f64::total_cmp);
    let mut errors = serde_json::Map::new();
    for s in mine.iter().filter(|s| s.1.is_none()) {
        let e = errors.entry(s.2.to_string()).or_insert(json!(0));
        *e = json!(e.as_u64().unwrap_or(0) + 1);
    }
    let n = mine.len();
    json!({
        "requests": n,
        "ok": lat.len(),
        "success_pct": if n == 0 { 0.0 } else { lat.len() as f64 * 100.0 / n as f64 },
        "p50_ms": percentile(&lat, 0.50),
        "p99_ms": percentile(&lat, 0.99),
        "max_ms": lat.last().copied().unwrap_or(0.0),
        "errors": errors,
    })
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let start = Instant::now() + Duration::from_millis(200);
    let attack_at = start + Duration::from_secs(args.warmup_s);
    let end = attack_at + Duration::from_secs(args.duration_s);
    let legit = Arc::new(Legit::default());
    let quarters = (args.duration_s * 4 + 8) as usize;
    let stats = Arc::new(AttackStats {
        buckets: (0..quarters).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect(),
        ..Default::default()
    });
    let mut tasks = Vec::new();
    for i in 0..args.legit {
        tasks.push(tokio::spawn(legit_client(i, args.clone(), start, end, attack_at, legit.clone())));
    }
    let ips = args.attack_ips.max(1);
    for c in 0..args.attack_conns {
        let src = addr(2, c % ips);
        let (args2, stats) = (args.clone(), stats.clone());
        match args.attack {
            Attack::None => break,
            Attack::Flood => {
                let per_ip = f64::from(args.attack_conns.div_ceil(ips));
                let interval =
                    (args.attack_rate_per_ip > 0.0).then(|| Duration::from_secs_f64(per_ip / args.attack_rate_per_ip));
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(attack_at).await;
                    flood_conn(src, interval, args2, attack_at, end, stats).await;
                }));
            }
            Attack::Slowloris => {
                let offset = Duration::from_millis(u64::from(c) * 1000 / u64::from(args.attack_conns.max(1)));
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(attack_at).await;
                    slowloris_conn(src, args2, end, stats, offset).await;
                }));
            }
        }
    }
    for t in tasks {
        let _ = tokio::time::timeout_at(end + Duration::from_millis(args.timeout_ms + 1000), t).await;
    }
    let samples = legit.samples.lock().map(|v| v.clone()).unwrap_or_default();
    // From which quarter second on the attack's requests were (almost) never served.
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let buckets: Vec<(u64, u64)> = stats.buckets.iter().map(|(o, a)| (ld(o), ld(a))).collect();
    let mitigated = if stats.requests.load(Ordering::Relaxed) == 0 {
        None
    } else {
        let served = |b: &(u64, u64)| b.1 > 0 && b.0 * 10 >= b.1;
        match buckets.iter().rposition(served) {
            None => Some(0.0),
            Some(last) if last + 1 < buckets.len() && buckets.iter().skip(last + 1).any(|b| b.1 > 0) => {
                Some((last + 1) as f64 / 4.0)
            }
            Some(_) => None,
        }
    };
    let out = json!({
        "attack": format!("{:?}", args.attack).to_lowercase(),
        "legit": summary(&samples, true),
        "legit_before": summary(&samples, false),
        "attack_requests": {
            "sent": ld(&stats.requests),
            "2xx": ld(&stats.ok),
            "429": ld(&stats.s429),
            "503": ld(&stats.s503),
            "other": ld(&stats.other),
            "conn_errors": ld(&stats.errors),
            "connections": ld(&stats.connections),
        },
        "mitigated_after_s": mitigated,
    });
    println!("{out}");
}
