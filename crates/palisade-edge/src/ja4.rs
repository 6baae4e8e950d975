//! The TLS client fingerprint (JA4, FoxIO's open specification) of each TLS connection, worked
//! out from the raw ClientHello before the stream is handed to rustls (which does not expose
//! the extensions in order). It becomes the `tls.ja4` field of rules, a rate-limit
//! characteristic, and part of the DDoS detector's request fingerprint.
//!
//! `t13d1516h2_8daaf6152771_e5627efa2ab1`: TCP, TLS 1.3, SNI present, 15 cipher suites and 16
//! extensions (GREASE left out), the first ALPN's first and last characters; then the first 12
//! hex digits of the SHA-256 of the sorted cipher suites, and of the sorted extensions (without
//! SNI and ALPN) followed by the signature algorithms in order.
//!
//! The ClientHello is untrusted input: every length is checked, nothing is indexed blindly, and
//! a hello that is not well formed simply has no fingerprint (rustls then refuses it).

use std::io;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Most bytes read ahead for a ClientHello (several records may carry one).
pub const MAX_HELLO: usize = 64 * 1024;

/// What JA4 reads from a ClientHello (GREASE values already left out).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The legacy version field (used when there is no supported_versions extension).
    pub version: u16,
    pub ciphers: Vec<u16>,
    /// Extension types, in the order sent.
    pub extensions: Vec<u16>,
    pub sni: bool,
    pub alpn: Option<Vec<u8>>,
    pub signature_algorithms: Vec<u16>,
    pub supported_versions: Vec<u16>,
}

fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// A cursor over untrusted bytes: every read checks its length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
    }
    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some((usize::from(*b.first()?) << 16) | (usize::from(*b.get(1)?) << 8) | usize::from(*b.get(2)?))
    }
    /// A vector with a length prefix of `width` bytes.
    fn vec(&mut self, width: usize) -> Option<Reader<'a>> {
        let n = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        Some(Reader(self.take(n)?))
    }
    fn u16s(mut self) -> Vec<u16> {
        let mut out = Vec::new();
        while let Some(v) = self.u16() {
            out.push(v);
        }
        out
    }
}

/// The handshake bytes carried by the TLS records at the start of `buf`, and whether a whole
/// handshake message is among them. None: not a TLS handshake.
fn handshake(buf: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut r = Reader(buf);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        if r.0.len() < 5 {
            break;
        }
        let content_type = r.u8()?;
        if content_type != 22 {
            return None;
        }
        let _version = r.u16()?;
        let len = usize::from(r.u16()?);
        match r.take(len) {
            Some(fragment) => out.extend_from_slice(fragment),
            None => break,
        }
    }
    let complete = out.len() >= 4 && {
        let mut h = Reader(&out);
        let _type = h.u8();
        h.u24().is_some_and(|n| out.len() >= 4 + n)
    };
    Some((out, complete))
}

/// Parses a ClientHello handshake message.
pub fn parse(handshake: &[u8]) -> Option<Hello> {
    let mut r = Reader(handshake);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader(r.take(len)?);
    let mut hello = Hello { version: body.u16()?, ..Hello::default() };
    body.take(32)?;
    body.vec(1)?;
    hello.ciphers = body.vec(2)?.u16s().into_iter().filter(|c| !grease(*c)).collect();
    body.vec(1)?;
    // No extensions at all is allowed (old clients).
    let Some(mut exts) = body.vec(2) else { return Some(hello) };
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.vec(2)?;
        if grease(kind) {
            continue;
        }
        hello.extensions.push(kind);
        match kind {
            0x0000 => hello.sni = true,
            0x0010 => {
                let mut list = data.vec(2)?;
                hello.alpn = list.vec(1).map(|first| first.0.to_vec());
            }
            0x000d => hello.signature_algorithms = data.vec(2)?.u16s(),
            0x002b => hello.supported_versions = data.vec(1)?.u16s().into_iter().filter(|v| !grease(*v)).collect(),
            _ => {}
        }
    }
    Some(hello)
}

fn hex_list(values: impl Iterator<Item = u16>) -> String {
    values.map(|v| format!("{v:04x}")).collect::<Vec<_>>().join(",")
}

fn hash12(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes())).get(..12).unwrap_or_default().to_string()
}

/// The JA4 fingerprint of a ClientHello.
pub fn ja4(h: &Hello) -> String {
    let version = h.supported_versions.iter().copied().max().unwrap_or(h.version);
    let version = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0200 => "s2",
        0x0100 => "s1",
        _ => "00",
    };
    let alpn = match h.alpn.as_deref() {
        Some([first, .., last]) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() => {
            format!("{}{}", *first as char, *last as char)
        }
        Some([only]) if only.is_ascii_alphanumeric() => format!("{}{}", *only as char, *only as char),
        // Not alphanumeric: the first and last characters of its hex.
        Some(v @ [_, ..]) => {
            let hex = hex::encode(v);
            format!("{}{}", hex.chars().next().unwrap_or('0'), hex.chars().last().unwrap_or('0'))
        }
        _ => "00".into(),
    };
    let mut ciphers = h.ciphers.clone();
    ciphers.sort_unstable();
    let mut exts: Vec<u16> = h.extensions.iter().copied().filter(|e| *e != 0x0000 && *e != 0x0010).collect();
    exts.sort_unstable();
    let mut ext_text = hex_list(exts.into_iter());
    if !h.signature_algorithms.is_empty() {
        ext_text.push('_');
        ext_text.push_str(&hex_list(h.signature_algorithms.iter().copied()));
    }
    format!(
        "t{version}{}{:02}{:02}{alpn}_{}_{}",
        if h.sni { 'd' } else { 'i' },
        h.ciphers.len().min(99),
        h.extensions.len().min(99),
        hash12(&hex_list(ciphers.into_iter())),
        hash12(&ext_text),
    )
}

/// What the bytes read so far from a TLS connection give.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Not a TLS handshake: no fingerprint (rustls will refuse the connection).
    NotTls,
    /// The ClientHello is incomplete: read more.
    More,
    /// A whole handshake message: its fingerprint, if it is a well-formed ClientHello.
    Done(Option<String>),
}

/// The fingerprint of the ClientHello at the start of `buf` (the connection's first bytes).
pub fn fingerprint(buf: &[u8]) -> Read {
    match handshake(buf) {
        None => Read::NotTls,
        Some((_, false)) => Read::More,
        Some((hs, true)) => Read::Done(parse(&hs).map(|h| ja4(&h))),
    }
}

/// Reads from `stream` until a whole ClientHello has arrived (or the bytes are not a TLS
/// handshake, or [`MAX_HELLO`] is reached); returns the bytes read, to be put back in front of
/// the stream for rustls, and the fingerprint when the hello could be read. The caller bounds
/// the time this takes.
pub async fn read_hello(stream: &mut tokio::net::TcpStream) -> io::Result<(Bytes, Option<String>)> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok((buf.freeze(), None));
        }
        match fingerprint(&buf) {
            Read::NotTls => return Ok((buf.freeze(), None)),
            Read::Done(fp) => return Ok((buf.freeze(), fp)),
            Read::More if buf.len() >= MAX_HELLO => return Ok((buf.freeze(), None)),
            Read::More => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with these values, GREASE mixed in as browsers send it.
    fn record(ciphers: &[u16], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        let cs: Vec<u8> = ciphers.iter().flat_map(|c| c.to_be_bytes()).collect();
        body.extend_from_slice(&(cs.len() as u16).to_be_bytes());
        body.extend_from_slice(&cs);
        body.extend_from_slice(&[1, 0]);
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend_from_slice(&kind.to_be_bytes());
            e.extend_from_slice(&(data.len() as u16).to_be_bytes());
            e.extend_from_slice(data);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        rec.extend_from_slice(&hs);
        rec
    }

    fn u16_list(width: usize, values: &[u16]) -> Vec<u8> {
        let body: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut out = if width == 1 { vec![body.len() as u8] } else { (body.len() as u16).to_be_bytes().to_vec() };
        out.extend_from_slice(&body);
        out
    }

    /// The specification's example: the same fingerprint, GREASE or not, in one record or two.
    #[test]
    fn the_specification_example() {
        let ciphers = [
            0x1a1a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c,
            0x009d, 0x002f, 0x0035,
        ];
        let alpn = {
            let mut l = vec![0, 12, 2];
            l.extend_from_slice(b"h2");
            l.push(8);
            l.extend_from_slice(b"http/1.1");
            l
        };
        let sigs = u16_list(2, &[0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]);
        let versions = u16_list(1, &[0x3a3a, 0x0304, 0x0303]);
        let mut exts: Vec<(u16, Vec<u8>)> = [
            0x2a2a, 0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012, 0x002b,
            0xff01, 0x000b, 0x000a, 0x0015,
        ]
        .iter()
        .map(|k| (*k, Vec::new()))
        .collect();
        for (k, d) in &mut exts {
            *d = match *k {
                0x0000 => vec![0, 8, 0, 0, 5, b's', b'i', b't', b'e', b'.'],
                0x0010 => alpn.clone(),
                0x000d => sigs.clone(),
                0x002b => versions.clone(),
                _ => Vec::new(),
            };
        }
        let rec = record(&ciphers, &exts);
        let (hs, complete) = handshake(&rec).unwrap();
        assert!(complete);
        let hello = parse(&hs).unwrap();
        assert_eq!((hello.ciphers.len(), hello.extensions.len()), (15, 16));
        assert_eq!(ja4(&hello), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        // Split over two records (as a large hello is): the same.
        let hs_bytes = &rec[5..];
        let mut two = vec![22, 3, 1, 0, 10];
        two.extend_from_slice(&hs_bytes[..10]);
        let rest = &hs_bytes[10..];
        two.extend_from_slice(&[22, 3, 1, (rest.len() >> 8) as u8, rest.len() as u8]);
        two.extend_from_slice(rest);
        let (hs2, complete) = handshake(&two).unwrap();
        assert!(complete);
        assert_eq!(ja4(&parse(&hs2).unwrap()), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        // Half a hello is not complete; not TLS at all is not a handshake.
        assert!(!handshake(&rec[..rec.len() / 2]).unwrap().1);
        assert!(handshake(b"GET / HTTP/1.1\r\n").is_none());
        // No signature algorithms: no underscore before the hash (the specification's 6d807ffa2a79).
        let mut no_sigs = hello.clone();
        no_sigs.signature_algorithms.clear();
        assert!(ja4(&no_sigs).ends_with("_6d807ffa2a79"));
    }

    #[test]
    fn no_sni_no_alpn_old_versions_and_garbage() {
        let rec = record(&[0x002f], &[]);
        let h = parse(&handshake(&rec).unwrap().0).unwrap();
        assert!(ja4(&h).starts_with("t12i010000_"), "{}", ja4(&h));
        let odd = Hello { alpn: Some(vec![0xab, 0xcd]), ..h.clone() };
        assert!(ja4(&odd).starts_with("t12i0100ad_"), "{}", ja4(&odd));
        // Truncated or lying lengths: no fingerprint, no panic.
        for cut in 0..rec.len() {
            let _ = handshake(&rec[..cut]).map(|(hs, _)| parse(&hs));
        }
        let mut liar = rec.clone();
        liar[8] = 0xff;
        assert!(parse(&handshake(&liar).unwrap().0).is_none());
    }
}
