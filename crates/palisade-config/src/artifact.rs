//! Artifacts: the files a config document references by content hash (an IP list, the bot
//! model's feature file, a certificate bundle). They are untrusted input exactly as the document
//! is (DESIGN.md, principle 1): each kind has one decoder here, used by the control plane when
//! an artifact is pushed and by every node before it is used, with documented limits that are
//! checked before anything is sized from the content. A decoder returns every problem it finds,
//! with the line or entry it is on; it never panics and never allocates more than the input's
//! validated size allows.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::validate::clip;
use crate::Problem;

/// What an artifact is, and so which decoder reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// One IPv4 or IPv6 address or CIDR prefix per line; `#` starts a comment.
    IpList,
    /// The bot model: JSON, a model version and a list of weighted features.
    FeatureFile,
    /// PEM: a certificate chain (leaf first) and its private key.
    CertBundle,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 3] = [ArtifactKind::IpList, ArtifactKind::FeatureFile, ArtifactKind::CertBundle];

    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::IpList => "ip_list",
            ArtifactKind::FeatureFile => "feature_file",
            ArtifactKind::CertBundle => "cert_bundle",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The largest file of this kind a decoder reads, in bytes (checked first).
    pub fn max_bytes(self) -> usize {
        match self {
            ArtifactKind::IpList => limits::MAX_IP_LIST_BYTES,
            ArtifactKind::FeatureFile => limits::MAX_FEATURE_FILE_BYTES,
            ArtifactKind::CertBundle => limits::MAX_CERT_BUNDLE_BYTES,
        }
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The documented limits of every artifact kind.
pub mod limits {
    /// Artifacts one document may reference.
    pub const MAX_ARTIFACTS: usize = 64;
    pub const MAX_IP_LIST_BYTES: usize = 8 * 1024 * 1024;
    /// Entries (addresses or prefixes) in one IP list.
    pub const MAX_IP_LIST_ENTRIES: usize = 200_000;
    pub const MAX_FEATURE_FILE_BYTES: usize = 1024 * 1024;
    /// Features in one model: the limit whose silent overflow took the web down in 2025, here
    /// enforced at load with the count in the error.
    pub const MAX_FEATURES: usize = 200;
    /// Weights and the bias lie in `-MAX_WEIGHT..=MAX_WEIGHT`.
    pub const MAX_WEIGHT: f64 = 1000.0;
    pub const MAX_FEATURE_NAME_LEN: usize = 64;
    pub const MAX_MODEL_VERSION_LEN: usize = 64;
    pub const MAX_CERT_BUNDLE_BYTES: usize = 256 * 1024;
    /// Certificates in one chain.
    pub const MAX_CHAIN_CERTS: usize = 10;
}

/// A decoded, checked artifact.
#[derive(Debug, Clone, PartialEq)]
pub enum Artifact {
    IpList(IpSet),
    FeatureFile(FeatureFile),
    CertBundle(CertBundle),
}

/// bytes -> a checked artifact of `kind`, or every problem (each names its line or entry).
pub fn decode(kind: ArtifactKind, bytes: &[u8]) -> Result<Artifact, Vec<Problem>> {
    if bytes.len() > kind.max_bytes() {
        return Err(vec![whole(format!("{kind} is {} bytes; the limit is {} bytes", bytes.len(), kind.max_bytes()))]);
    }
    match kind {
        ArtifactKind::IpList => decode_ip_list(bytes).map(Artifact::IpList),
        ArtifactKind::FeatureFile => decode_feature_file(bytes).map(Artifact::FeatureFile),
        ArtifactKind::CertBundle => decode_cert_bundle(bytes).map(Artifact::CertBundle),
    }
}

fn whole(message: String) -> Problem {
    Problem { path: "(artifact)".into(), message }
}

fn utf8(bytes: &[u8]) -> Result<&str, Vec<Problem>> {
    std::str::from_utf8(bytes)
        .map_err(|e| vec![whole(format!("not valid UTF-8 (first bad byte at offset {})", e.valid_up_to()))])
}

/// A set of addresses, as sorted, merged, inclusive ranges per family: a lookup is one binary
/// search, and memory is sized by the entries the list really has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    /// Entries as written (before merging), for metrics and the admin API.
    pub entries: usize,
}

impl IpSet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => in_ranges(&self.v4, u32::from(v4)),
                None => in_ranges(&self.v6, u128::from(a)),
            },
        }
    }
}

fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x is the only one that can hold it.
    let i = ranges.partition_point(|(start, _)| *start <= x);
    i.checked_sub(1).and_then(|i| ranges.get(i)).is_some_and(|(_, end)| x <= *end)
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge<T: Ord + Copy>(mut r: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (s, e) in r {
        if let Some(last) = out.last_mut() {
            if next(last.1).is_none_or(|n| s <= n) {
                if e > last.1 {
                    last.1 = e;
                }
                continue;
            }
        }
        out.push((s, e));
    }
    out.shrink_to_fit();
    out
}

fn parse_prefix(entry: &str) -> Result<IpAddrRange, String> {
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("`{}` is not an IP address", clip(addr)))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len {
        None => max,
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("`/{}`: a prefix length is 0..={max}", clip(l)))?,
    };
    Ok(match ip {
        IpAddr::V4(a) => {
            let host = 32 - len;
            let mask = u32::MAX.checked_shl(host).unwrap_or(0);
            let start = u32::from(a) & mask;
            if start != u32::from(a) {
                return Err(format!("`{entry}` has host bits set; the network is {}/{len}", Ipv4Addr::from(start)));
            }
            IpAddrRange::V4(start, start | !mask)
        }
        IpAddr::V6(a) => {
            let host = 128 - len;
            let mask = u128::MAX.checked_shl(host).unwrap_or(0);
            let start = u128::from(a) & mask;
            if start != u128::from(a) {
                return Err(format!("`{entry}` has host bits set; the network is {}/{len}", Ipv6Addr::from(start)));
            }
            IpAddrRange::V6(start, start | !mask)
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpAddrRange {
    V4(u32, u32),
    V6(u128, u128),
}

/// A line without its comment and surrounding space.
fn entry_of(line: &str) -> &str {
    line.split('#').next().unwrap_or("").trim()
}

fn decode_ip_list(bytes: &[u8]) -> Result<IpSet, Vec<Problem>> {
    let text = utf8(bytes)?;
    let total = text.lines().filter(|l| !entry_of(l).is_empty()).count();
    if total > limits::MAX_IP_LIST_ENTRIES {
        return Err(vec![whole(format!("{total} entries; the limit is {}", limits::MAX_IP_LIST_ENTRIES))]);
    }
    let mut problems = Vec::new();
    let mut seen: HashMap<IpAddrRange, usize> = HashMap::with_capacity(total);
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let mut entries = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let entry = entry_of(raw);
        if entry.is_empty() {
            continue;
        }
        entries += 1;
        match parse_prefix(entry) {
            Ok(r) => {
                if let Some(first) = seen.insert(r, line) {
                    problems.push(Problem {
                        path: format!("line {line}"),
                        message: format!("`{}` duplicates line {first}", clip(entry)),
                    });
                }
                match r {
                    IpAddrRange::V4(s, e) => v4.push((s, e)),
                    IpAddrRange::V6(s, e) => v6.push((s, e)),
                }
            }
            Err(m) => problems.push(Problem { path: format!("line {line}"), message: m }),
        }
        if problems.len() >= MAX_REPORTED {
            problems.push(whole(format!("stopped after {MAX_REPORTED} problems")));
            return Err(problems);
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(IpSet { v4: merge(v4, |x: u32| x.checked_add(1)), v6: merge(v6, |x: u128| x.checked_add(1)), entries })
}

/// A decoder reports this many problems at most: a file of a million bad lines gives a clear
/// answer, not a million-line one.
pub const MAX_REPORTED: usize = 50;

/// The bot model, as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureFile {
    pub model_version: String,
    #[serde(default)]
    pub bias: f64,
    pub features: Vec<Feature>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Unique within the file.
    pub name: String,
    /// Which signal the feature reads (`ua_family`, `header_order`, `ja4`, ...).
    pub extractor: String,
    pub weight: f64,
}

fn token_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn decode_feature_file(bytes: &[u8]) -> Result<FeatureFile, Vec<Problem>> {
    let text = utf8(bytes)?;
    // Memory is bounded by the byte limit checked before: at most a few tens of thousands of
    // features parse, and a count over the limit is refused below with its number.
    let file: FeatureFile = serde_json::from_str(text).map_err(|e| {
        vec![Problem { path: format!("line {}, column {}", e.line(), e.column()), message: e.to_string() }]
    })?;
    let mut problems = Vec::new();
    let n = file.features.len();
    if n > limits::MAX_FEATURES {
        problems.push(Problem {
            path: "features".into(),
            message: format!("{n} features; the limit is {}", limits::MAX_FEATURES),
        });
    }
    if n == 0 {
        problems.push(Problem { path: "features".into(), message: "a model needs at least one feature".into() });
    }
    if !token_ok(&file.model_version, limits::MAX_MODEL_VERSION_LEN) {
        problems.push(Problem {
            path: "model_version".into(),
            message: format!(
                "`{}` must be 1..={} characters of a-z, A-Z, 0-9, `_-.:`",
                clip(&file.model_version),
                limits::MAX_MODEL_VERSION_LEN
            ),
        });
    }
    let weight_ok = |w: f64| w.is_finite() && w.abs() <= limits::MAX_WEIGHT;
    if !weight_ok(file.bias) {
        problems.push(Problem {
            path: "bias".into(),
            message: format!("{} is not a finite number in -{m}..={m}", file.bias, m = limits::MAX_WEIGHT),
        });
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n.min(limits::MAX_FEATURES));
    for (i, f) in file.features.iter().enumerate() {
        if problems.len() >= MAX_REPORTED {
            problems.push(whole(format!("stopped after {MAX_REPORTED} problems")));
            break;
        }
        let p = format!("features[{i}]");
        if !token_ok(&f.name, limits::MAX_FEATURE_NAME_LEN) {
            problems.push(Problem {
                path: format!("{p}.name"),
                message: format!(
                    "`{}` must be 1..={} characters of a-z, A-Z, 0-9, `_-.:`",
                    clip(&f.name),
                    limits::MAX_FEATURE_NAME_LEN
                ),
            });
        } else if let Some(first) = seen.insert(f.name.as_str(), i) {
            problems.push(Problem {
                path: format!("{p}.name"),
                message: format!("`{}` duplicates features[{first}]", f.name),
            });
        }
        if !token_ok(&f.extractor, limits::MAX_FEATURE_NAME_LEN) {
            problems.push(Problem {
                path: format!("{p}.extractor"),
                message: format!("`{}` is not an extractor name", clip(&f.extractor)),
            });
        }
        if !weight_ok(f.weight) {
            problems.push(Problem {
                path: format!("{p}.weight"),
                message: format!("{} is not a finite number in -{m}..={m}", f.weight, m = limits::MAX_WEIGHT),
            });
        }
    }
    if problems.is_empty() {
        Ok(file)
    } else {
        Err(problems)
    }
}

/// A certificate chain (DER, leaf first) and its private key (DER), read from PEM. Whether the
/// key fits the certificate is checked by the node, which has the crypto.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
}

/// The key stays out of logs.
impl std::fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBundle").field("chain", &self.chain.len()).finish_non_exhaustive()
    }
}

fn decode_cert_bundle(bytes: &[u8]) -> Result<CertBundle, Vec<Problem>> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    let mut chain = Vec::new();
    let mut keys = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|e| vec![whole(format!("bad PEM: {e}"))])?;
        match kind {
            SectionKind::Certificate => chain.push(der),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => keys.push(der),
            _ => {}
        }
        if chain.len() > limits::MAX_CHAIN_CERTS {
            return Err(vec![whole(format!(
                "more than {} certificates; the limit is {}",
                limits::MAX_CHAIN_CERTS,
                limits::MAX_CHAIN_CERTS
            ))]);
        }
    }
    let mut problems = Vec::new();
    if chain.is_empty() {
        problems.push(whole("no CERTIFICATE section".into()));
    }
    if keys.len() != 1 {
        problems.push(whole(format!("{} private keys; a bundle holds exactly one", keys.len())));
    }
    match keys.pop() {
        Some(key) if problems.is_empty() => Ok(CertBundle { chain, key }),
        _ => Err(problems),
    }
}

/// Whether `s` is a hex SHA-256 (64 lowercase hex digits).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(kind: ArtifactKind, bytes: &[u8]) -> String {
        crate::render_problems(&decode(kind, bytes).unwrap_err())
    }

    #[test]
    fn ip_lists_parse_merge_and_match() {
        let text = "# blocked\n192.0.2.0/24\n198.51.100.7 # one host\n\n2001:db8::/32\n192.0.3.0/24\n";
        let Artifact::IpList(set) = decode(ArtifactKind::IpList, text.as_bytes()).unwrap() else { panic!() };
        assert_eq!(set.entries, 4);
        for (ip, listed) in [
            ("192.0.2.0", true),
            ("192.0.2.255", true),
            ("192.0.3.9", true),
            ("192.0.4.0", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("::ffff:192.0.2.9", true),
        ] {
            assert_eq!(set.contains(ip.parse().unwrap()), listed, "{ip}");
        }
        // Adjacent prefixes merge into one range.
        assert_eq!(set.v4.len(), 2);
    }

    #[test]
    fn ip_list_problems_name_the_line() {
        let p = problems(ArtifactKind::IpList, b"10.0.0.0/8\nnot-an-ip\n10.0.0.0/8\n10.0.0.1/8\n10.0.0.0/33\n");
        assert!(p.contains("line 2: `not-an-ip` is not an IP address"), "{p}");
        assert!(p.contains("line 3: `10.0.0.0/8` duplicates line 1"), "{p}");
        assert!(p.contains("line 4: `10.0.0.1/8` has host bits set; the network is 10.0.0.0/8"), "{p}");
        assert!(p.contains("line 5: `/33`: a prefix length is 0..=32"), "{p}");
    }

    #[test]
    fn ip_list_limits_are_enforced_with_the_numbers() {
        let mut text = String::new();
        for i in 0..=limits::MAX_IP_LIST_ENTRIES as u32 {
            text.push_str(&format!("{}\n", Ipv4Addr::from(0x0a00_0000 + i)));
        }
        let p = problems(ArtifactKind::IpList, text.as_bytes());
        assert!(
            p.contains(&format!(
                "{} entries; the limit is {}",
                limits::MAX_IP_LIST_ENTRIES + 1,
                limits::MAX_IP_LIST_ENTRIES
            )),
            "{p}"
        );
        let big = vec![b'#'; limits::MAX_IP_LIST_BYTES + 1];
        let p = problems(ArtifactKind::IpList, &big);
        assert!(p.contains(&format!("the limit is {} bytes", limits::MAX_IP_LIST_BYTES)), "{p}");
        assert!(problems(ArtifactKind::IpList, b"\xff\n").contains("not valid UTF-8"));
    }

    fn model(n: usize) -> String {
        let features: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"name": "f{i}", "extractor": "header_present:x-{i}", "weight": 0.5}}"#))
            .collect();
        format!(r#"{{"model_version": "2026-11-27.1", "bias": 1.0, "features": [{}]}}"#, features.join(","))
    }

    #[test]
    fn feature_files_are_checked() {
        let Artifact::FeatureFile(f) = decode(ArtifactKind::FeatureFile, model(3).as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(f.features.len(), 3);
        // The 18 November 2025 file: twice the features.
        let p = problems(ArtifactKind::FeatureFile, model(2 * limits::MAX_FEATURES).as_bytes());
        assert!(p.contains("features: 400 features; the limit is 200"), "{p}");
        // Duplicated rows.
        let dup = model(2).replace("\"f1\"", "\"f0\"");
        assert!(problems(ArtifactKind::FeatureFile, dup.as_bytes())
            .contains("features[1].name: `f0` duplicates features[0]"));
        let heavy = model(1).replace("0.5", "1e9");
        assert!(problems(ArtifactKind::FeatureFile, heavy.as_bytes())
            .contains("features[0].weight: 1000000000 is not a finite number in -1000..=1000"));
        let unknown = model(1).replace("\"bias\"", "\"bais\"");
        assert!(problems(ArtifactKind::FeatureFile, unknown.as_bytes()).contains("unknown field `bais`"));
        assert!(problems(ArtifactKind::FeatureFile, model(0).as_bytes()).contains("at least one feature"));
        let big = vec![b' '; limits::MAX_FEATURE_FILE_BYTES + 1];
        assert!(problems(ArtifactKind::FeatureFile, &big).contains("the limit is 1048576 bytes"));
    }

    #[test]
    fn cert_bundles_need_a_chain_and_one_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".into()]).unwrap().self_signed(&key).unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        let Artifact::CertBundle(b) = decode(ArtifactKind::CertBundle, pem.as_bytes()).unwrap() else { panic!() };
        assert_eq!(b.chain.len(), 1);
        assert!(problems(ArtifactKind::CertBundle, cert.pem().as_bytes()).contains("0 private keys"));
        assert!(problems(ArtifactKind::CertBundle, key.serialize_pem().as_bytes()).contains("no CERTIFICATE"));
        let two = format!("{pem}{}", key.serialize_pem());
        assert!(problems(ArtifactKind::CertBundle, two.as_bytes()).contains("2 private keys"));
    }
}
