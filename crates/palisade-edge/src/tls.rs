//! TLS: certificates per zone, chosen by SNI from the active snapshot at handshake time, so a
//! reload that changes a certificate applies to the next handshake.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::snapshot::{normalize_host, Snapshot};

pub fn load_certified_key(cert_file: &str, key_file: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("cannot read certificate file `{cert_file}`: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in `{cert_file}`: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in `{cert_file}`"));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("cannot read private key `{key_file}`: {e}"))?;
    signed(certs, &key).map_err(|e| format!("`{key_file}`: {e}"))
}

/// A certificate chain and key in DER (a `cert_bundle` artifact, decoded) -> a serving key.
pub fn certified_key(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<CertifiedKey, String> {
    let key = PrivateKeyDer::try_from(key).map_err(|e| format!("private key: {e}"))?;
    signed(chain.into_iter().map(CertificateDer::from).collect(), &key)
}

fn signed(certs: Vec<CertificateDer<'static>>, key: &PrivateKeyDer<'_>) -> Result<CertifiedKey, String> {
    let signer =
        rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| format!("unsupported private key: {e}"))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(ck)
}

#[derive(Debug)]
pub struct SniResolver(pub Arc<ArcSwap<Snapshot>>);

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("version", &self.version()).field("hash", &self.hash()).finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        let snap = self.0.load();
        snap.zone_for(&normalize_host(name)).and_then(|z| z.cert.clone())
    }
}

pub fn server_config(snapshots: Arc<ArcSwap<Snapshot>>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(snapshots)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
