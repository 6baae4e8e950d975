//! One probe: a real HTTP(S) request to a city's node for a zone, from outside, judged by status,
//! body, latency and certificate expiry. The same small client delivers webhooks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{City, Zone, MAX_PROBE_BODY};

/// What one probe saw, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    /// Answered as expected, but slowly or with a certificate about to expire.
    Degraded,
    Failed,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Unix seconds at which the node's certificate expires (HTTPS only).
    pub cert_expires: Option<u64>,
    /// Why it is not Ok, in words for the page and the incident ("connection refused").
    pub detail: String,
}

pub struct Prober {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

/// Roots from `ca_file`, or the system bundle; none found: every HTTPS probe fails, saying why.
pub fn tls_client(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let file = ca_file.or_else(|| system.exists().then_some(system));
    if let Some(file) = file {
        for cert in CertificateDer::pem_file_iter(file).map_err(|e| format!("{}: {e}", file.display()))? {
            let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
            // A bundle may hold certificates rustls cannot use; the others still count.
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Prober {
    pub fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        Self { tls: tokio_rustls::TlsConnector::from(tls), timeout }
    }

    pub async fn probe(&self, city: &City, zone: &Zone, now: u64) -> Outcome {
        let started = Instant::now();
        let req = Request::builder()
            .method(Method::GET)
            .uri(&zone.path)
            .header(hyper::header::HOST, &zone.host)
            .header(hyper::header::USER_AGENT, concat!("palisade-status/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::new()));
        let attempt = async {
            let req = req.map_err(|e| e.to_string())?;
            self.send(&city.address, city.https.then_some(zone.host.as_str()), req).await
        };
        let result = tokio::time::timeout(self.timeout, attempt).await;
        let latency_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
        let failed = |detail: String, status: Option<u16>, cert_expires: Option<u64>| Outcome {
            verdict: Verdict::Failed,
            status,
            latency_ms,
            cert_expires,
            detail,
        };
        let (status, body, cert_expires) = match result {
            Err(_) => return failed(format!("no answer within {} ms", self.timeout.as_millis()), None, None),
            Ok(Err(e)) => return failed(e, None, None),
            Ok(Ok(answer)) => answer,
        };
        if status != zone.expect_status {
            return failed(format!("status {status}, expected {}", zone.expect_status), Some(status), cert_expires);
        }
        if let Some(needle) = &zone.body_contains {
            if !contains(&body, needle.as_bytes()) {
                return failed(format!("the body does not contain `{needle}`"), Some(status), cert_expires);
            }
        }
        let mut outcome =
            Outcome { verdict: Verdict::Ok, status: Some(status), latency_ms, cert_expires, detail: String::new() };
        if latency_ms > zone.latency_ms {
            outcome.verdict = Verdict::Degraded;
            outcome.detail = format!("answered in {latency_ms} ms (threshold {} ms)", zone.latency_ms);
        } else if let Some(expires) = cert_expires {
            let days_left = expires.saturating_sub(now) / 86_400;
            if days_left < zone.cert_expiry_days {
                outcome.verdict = Verdict::Degraded;
                outcome.detail = format!("the certificate expires in {days_left} days");
            }
        }
        outcome
    }

    /// Connects to `address` (over TLS with `sni` when given) and exchanges one request.
    /// Returns the status, the first [`MAX_PROBE_BODY`] bytes of the body and the certificate's
    /// expiry.
    pub async fn send(
        &self,
        address: &str,
        sni: Option<&str>,
        req: Request<Full<Bytes>>,
    ) -> Result<(u16, Vec<u8>, Option<u64>), String> {
        let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| connect_error(&e))?;
        let _ = tcp.set_nodelay(true);
        let Some(sni) = sni else {
            let (status, body) = exchange(tcp, req).await?;
            return Ok((status, body, None));
        };
        let host = sni.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(sni, |(h, _)| h);
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let expires =
            tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|leaf| crate::cert::not_after(leaf));
        let (status, body) = exchange(tls, req).await?;
        Ok((status, body, expires))
    }
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => format!("connect: {e}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// One HTTP/1.1 exchange on `io`: the status and up to [`MAX_PROBE_BODY`] bytes of body.
async fn exchange<S>(io: S, req: Request<Full<Bytes>>) -> Result<(u16, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let response = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"));
    let result = async {
        let response = response?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut kept = Vec::new();
        while kept.len() < MAX_PROBE_BODY {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(format!("reading the body: {e}")),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = MAX_PROBE_BODY - kept.len();
                        kept.extend_from_slice(data.get(..room.min(data.len())).unwrap_or(data));
                    }
                }
            }
        }
        Ok((status, kept))
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server on loopback for `site.example` whose certificate ends on `expires` (Unix
    /// seconds, a midnight), answering every request with 200 "ok".
    async fn tls_server(dir: &std::path::Path, expires: u64) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["site.example".into()]).unwrap();
        let palisade_config::time::Civil(y, m, d, ..) = palisade_config::time::civil(expires);
        params.not_after = rcgen::date_time_ymd(y as i32, m as u8, d as u8);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    fn zone() -> Zone {
        let c = crate::config::parse(
            "[[cities]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[zones]]\nname = \"site\"\nhost = \"site.example\"\nbody_contains = \"ok\"\n",
        )
        .unwrap();
        c.zones.into_iter().next().unwrap()
    }

    #[tokio::test]
    async fn https_probes_read_the_certificate_expiry() {
        let dir = std::env::temp_dir().join(format!("palisade-status-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = crate::now();
        let midnight = now - now % 86_400;
        let soon = tls_server(&dir, midnight + 6 * 86_400).await;
        let prober = Prober::new(tls_client(Some(&dir.join("ca.pem"))).unwrap(), Duration::from_secs(5));
        let city = City { name: "a".into(), address: soon, https: true };
        let o = prober.probe(&city, &zone(), now).await;
        assert_eq!(o.verdict, Verdict::Degraded, "{o:?}");
        assert!(o.detail.starts_with("the certificate expires in 5 days"), "{o:?}");
        assert_eq!(o.cert_expires, Some(midnight + 6 * 86_400));

        let later = tls_server(&dir, midnight + 90 * 86_400).await;
        let prober = Prober::new(tls_client(Some(&dir.join("ca.pem"))).unwrap(), Duration::from_secs(5));
        let o = prober.probe(&City { name: "a".into(), address: later.clone(), https: true }, &zone(), now).await;
        assert_eq!(o.verdict, Verdict::Ok, "{o:?}");

        // A certificate nobody vouches for fails the probe, saying why.
        let untrusted = Prober::new(tls_client(None).unwrap(), Duration::from_secs(5));
        let o = untrusted.probe(&City { name: "a".into(), address: later, https: true }, &zone(), now).await;
        assert_eq!(o.verdict, Verdict::Failed, "{o:?}");
        assert!(o.detail.starts_with("TLS: "), "{o:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
