//! End-to-end: TLS with one certificate per zone chosen by SNI, ALPN h2 and http/1.1, and 421
//! for a request whose Host belongs to another zone than the connection's certificate.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

struct Zone {
    cert: CertificateDer<'static>,
}

fn write_cert(dir: &std::path::Path, name: &str, sans: &[&str]) -> (Zone, String) {
    let ck = rcgen::generate_simple_self_signed(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, ck.cert.pem()).unwrap();
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
    let tls = format!("[zones.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n", cert_file.display(), key_file.display());
    (Zone { cert: ck.cert.der().clone() }, tls)
}

fn connector(roots: &[&Zone], alpn: &[&[u8]]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for z in roots {
        store.add(z.cert.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// One request over a fresh TLS connection; returns (negotiated ALPN, status, origin, body).
async fn tls_get(
    e: &EdgeProc,
    tls: &TlsConnector,
    sni: &str,
    host: &str,
    h2: bool,
    path: &str,
) -> std::io::Result<(Option<Vec<u8>>, u16, String, String)> {
    let tcp = tokio::net::TcpStream::connect(e.https.unwrap()).await?;
    let stream = tls.connect(ServerName::try_from(sni.to_string()).unwrap(), tcp).await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let io = TokioIo::new(stream);
    let req =
        Request::get(format!("https://{host}{path}")).header("host", host).body(Empty::<bytes::Bytes>::new()).unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let origin = origin_name(resp.headers());
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    Ok((alpn, status, origin, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_sni_alpn_and_misdirected_requests() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = temp_dir("tls");
    let (za, tls_a) = write_cert(&dir, "a", &["a.test"]);
    let (zb, tls_b) = write_cert(&dir, "b", &["*.b.test"]);
    let cfg = format!(
        "[limits]\nheader_timeout_ms = 1000\nidle_timeout_ms = 3000\n{}\n[[zones]]\nname = \"a\"\nhostnames = [\"a.test\"]\norigins = [{{ address = \"{}\" }}]\n{tls_a}\n\
         [[zones]]\nname = \"b\"\nhostnames = [\"*.b.test\"]\norigins = [{{ address = \"{}\" }}]\n{tls_b}\n",
        listen_section(true),
        a.addr,
        b.addr
    );
    let path = dir.join("palisade.toml");
    std::fs::write(&path, cfg).unwrap();
    let e = edge_with(dir, path, &[]);

    let both = connector(&[&za, &zb], &[b"h2", b"http/1.1"]);
    // h2 by ALPN, the right certificate for each SNI (the client verifies it against that zone's cert only).
    let only_a = connector(&[&za], &[b"h2", b"http/1.1"]);
    let (alpn, s, o, body) = tls_get(&e, &only_a, "a.test", "a.test", true, "/echo").await.unwrap();
    assert_eq!((alpn.as_deref(), s, o.as_str()), (Some(&b"h2"[..]), 200, "a"), "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let xfp: Vec<_> = echo["headers"].as_array().unwrap().iter().filter(|h| h[0] == "x-forwarded-proto").collect();
    assert_eq!(xfp[0][1], "https");
    let only_b = connector(&[&zb], &[b"http/1.1"]);
    let (alpn, s, o, _) = tls_get(&e, &only_b, "www.b.test", "www.b.test", false, "/echo").await.unwrap();
    assert_eq!((alpn.as_deref(), s, o.as_str()), (Some(&b"http/1.1"[..]), 200, "b"));
    // a.test's certificate must not be offered for b's names.
    assert!(tls_get(&e, &only_a, "www.b.test", "www.b.test", false, "/echo").await.is_err());
    // A Host of another zone on this connection: 421, never the other zone's origin.
    let both_h1 = connector(&[&za, &zb], &[b"http/1.1"]);
    let (_, s, o, body) = tls_get(&e, &both_h1, "a.test", "www.b.test", false, "/echo").await.unwrap();
    assert_eq!((s, o.as_str()), (421, ""), "{body}");
    // A large body reaches a TLS client whole: it is copied through rustls (splicing needs a
    // plain socket), over HTTP/1.1 and HTTP/2 alike.
    let a_h1 = connector(&[&za], &[b"http/1.1"]);
    for (tls, h2) in [(&a_h1, false), (&only_a, true)] {
        let (_, s, _, body) = tls_get(&e, tls, "a.test", "a.test", h2, "/bytes/300000").await.unwrap();
        assert_eq!((s, body.len()), (200, 300_000), "h2 {h2}");
        assert!(body.bytes().all(|b| b == b'x'));
    }
    assert_eq!(e.metric("palisade_spliced_bytes_total").await, Some(0.0));
    // No certificate for an unknown name: the handshake fails.
    assert!(tls_get(&e, &both, "unknown.test", "unknown.test", false, "/echo").await.is_err());
    assert!(e.metric("palisade_tls_handshake_failures_total").await >= Some(2.0));
    assert_eq!(e.metric("palisade_misdirected_total").await, Some(1.0));

    // An idle h2 connection lives by idle_timeout_ms (3 s here), not by the 1 s header timeout.
    let tcp = tokio::net::TcpStream::connect(e.https.unwrap()).await.unwrap();
    let stream = only_a.connect(ServerName::try_from("a.test").unwrap(), tcp).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for pause in [0, 1500] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let req = Request::get("https://a.test/1k").body(Empty::<bytes::Bytes>::new()).unwrap();
        let resp = send.send_request(req).await.expect("idle h2 connection was closed too early");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }

    // A slow TLS client (no ClientHello) is cut off by the header timeout like any other.
    let mut s = tokio::net::TcpStream::connect(e.https.unwrap()).await.unwrap();
    let out = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(out.is_empty());
}

/// The TLS client fingerprint (JA4) is read from each ClientHello, split over many small
/// writes or not, and rules and rate limits can use it; without TLS it is absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_see_the_tls_client_fingerprint() {
    let o = origin("a");
    let dir = temp_dir("ja4");
    let (za, tls_a) = write_cert(&dir, "a", &["a.test"]);
    let rules = r#"
[[zones.rules]]
name = "tls13-h2-clients"
expression = 'tls.ja4 matches "^t13d[0-9]{4}h2_[0-9a-f]{12}_[0-9a-f]{12}$"'
action = "block"
[[zones.rules]]
name = "no-fingerprint"
expression = 'tls.ja4 eq ""'
action = "block"
"#;
    let cfg = format!(
        "{}\n[[zones]]\nname = \"a\"\nhostnames = [\"a.test\"]\norigins = [{{ address = \"{}\" }}]\n{tls_a}\n{rules}",
        listen_section(true),
        o.addr
    );
    let path = dir.join("palisade.toml");
    std::fs::write(&path, cfg).unwrap();
    let e = edge_with(dir, path, &[]);
    // ALPN h2 first: the fingerprint says h2, the first rule refuses it.
    let h2 = connector(&[&za], &[b"h2", b"http/1.1"]);
    let (_, s, _, _) = tls_get(&e, &h2, "a.test", "a.test", true, "/").await.unwrap();
    assert_eq!(s, 403);
    // http/1.1 only: "h1", served.
    let h1 = connector(&[&za], &[b"http/1.1"]);
    let (_, s, o_name, _) = tls_get(&e, &h1, "a.test", "a.test", false, "/").await.unwrap();
    assert_eq!((s, o_name.as_str()), (200, "a"));
    // Without TLS there is no fingerprint: `eq ""` is false for an absent value.
    assert_eq!(get_host(e.http(), "a.test", "/").await.0, 200);
    // A ClientHello trickled a few bytes at a time is read whole all the same.
    let tcp = tokio::net::TcpStream::connect(e.https.unwrap()).await.unwrap();
    let slow = Trickle(tcp);
    let stream = h2.connect(ServerName::try_from("a.test").unwrap(), slow).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(Request::get("https://a.test/").body(Empty::<bytes::Bytes>::new()).unwrap()).await;
    assert_eq!(resp.unwrap().status(), 403);
}

/// The HTTP/2 client fingerprint: a real Chromium and hyper's client each have their own; rules
/// and the access log see it, and HTTP/1.1 has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_fingerprints_tell_chromium_from_a_library() {
    let o = origin("h2fp");
    let dir = temp_dir("h2fp");
    let (za, tls_a) = write_cert(&dir, "a", &["a.test"]);
    let log = dir.join("access.log");
    let rules = "[[zones.rules]]\nname = \"chromium-order\"\nexpression = 'http2.fingerprint wildcard \"*|m,a,s,p\"'\naction = \"log\"\n";
    let cfg = format!(
        "{}\n[access_log]\ntarget = \"{}\"\n[[zones]]\nname = \"a\"\nhostnames = [\"a.test\"]\norigins = [{{ address = \"{}\" }}]\n{tls_a}\n{rules}",
        listen_section(true),
        log.display(),
        o.addr
    );
    let path = dir.join("palisade.toml");
    std::fs::write(&path, cfg).unwrap();
    let e = edge_with(dir, path, &[]);
    let h2 = connector(&[&za], &[b"h2"]);
    assert_eq!(tls_get(&e, &h2, "a.test", "a.test", true, "/bytes/1").await.unwrap().1, 200);
    let h1 = connector(&[&za], &[b"http/1.1"]);
    assert_eq!(tls_get(&e, &h1, "a.test", "a.test", false, "/bytes/2").await.unwrap().1, 200);

    let browser = common::browser::Browser::start_with(true, &["--ignore-certificate-errors"]).await;
    browser.goto(&format!("https://a.test:{}/bytes/5", e.https.unwrap().port())).await;
    browser.wait_for("xxxxx", Duration::from_secs(20)).await;

    let records = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    eventually("three records", Duration::from_secs(5), || {
        let n = records().iter().filter(|r| r["ClientRequestPath"].as_str().unwrap().starts_with("/bytes/")).count();
        async move { n >= 3 }
    })
    .await;
    let fp = |path: &str| {
        records()
            .into_iter()
            .find(|r| r["ClientRequestPath"] == path)
            .map(|r| r["H2Fingerprint"].as_str().map(String::from))
    };
    let library = fp("/bytes/1").unwrap().expect("hyper's fingerprint");
    let chromium = fp("/bytes/5").unwrap().expect("Chromium's fingerprint");
    assert_eq!(fp("/bytes/2").unwrap(), None, "HTTP/1.1 has none");
    // Chromium's SETTINGS start with a 64 KiB header table and push off; its pseudo-headers
    // come method, authority, scheme, path.
    assert!(chromium.starts_with("1:65536;2:0;") && chromium.ends_with("|m,a,s,p"), "{chromium}");
    assert_ne!(library, chromium);
    assert_eq!(library.split('|').count(), 4, "{library}");
    let m = e.metrics().await;
    assert!(m.contains("palisade_rule_matches_total{zone=\"a\",rule=\"chromium-order\"}"), "{m}");
    eprintln!("HTTP/2 fingerprints: hyper {library}, Chromium {chromium}");
}

/// A TCP stream that writes at most 7 bytes at a time.
struct Trickle(tokio::net::TcpStream);

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = buf.len().min(7);
        let r = std::pin::Pin::new(&mut self.0).poll_write(cx, &buf[..n]);
        if r.is_ready() {
            let _ = self.0.set_nodelay(true);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
