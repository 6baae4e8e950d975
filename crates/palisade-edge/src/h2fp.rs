//! The HTTP/2 client fingerprint: what a client says first on a new connection, before any
//! request is served. In the form Akamai published (Shuster & Segal, Black Hat EU 2017):
//! `SETTINGS|WINDOW_UPDATE|PRIORITY|PSEUDO-HEADER ORDER`, for example Chromium's
//! `1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p`:
//! - the SETTINGS frame's parameters, `id:value`, in the order sent;
//! - the connection's WINDOW_UPDATE increment (0 when none came before the first request);
//! - PRIORITY frames before the first request, `stream:exclusive:dependency:weight`, comma
//!   separated (0 when none);
//! - the order of the first request's pseudo-headers (`m`ethod, `a`uthority, `s`cheme, `p`ath),
//!   read from its HPACK block without decoding any value.
//!
//! Every library and browser has its own; a script that borrows a browser's user agent keeps
//! its library's. The bytes are untrusted: the parser reads at most [`MAX_BYTES`], never panics
//! (fuzz target `h2_preface`), and gives up (no fingerprint) on anything unexpected.

/// What the client sends first: the connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes read for a fingerprint at most.
pub const MAX_BYTES: usize = 16 * 1024;

/// The parse of what has arrived so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Not enough bytes yet.
    More,
    /// The fingerprint, or None when the bytes do not make one.
    Done(Option<String>),
}

struct Frames<'a> {
    bytes: &'a [u8],
}

/// One frame: (type, flags, stream, payload), or None when it has not all arrived.
fn frame(b: &[u8]) -> Option<(u8, u8, u32, &[u8], usize)> {
    let head = b.get(..9)?;
    let len = (usize::from(*head.first()?) << 16) | (usize::from(*head.get(1)?) << 8) | usize::from(*head.get(2)?);
    let (kind, flags) = (*head.get(3)?, *head.get(4)?);
    let stream = u32::from_be_bytes([*head.get(5)?, *head.get(6)?, *head.get(7)?, *head.get(8)?]) & 0x7fff_ffff;
    let payload = b.get(9..9 + len)?;
    Some((kind, flags, stream, payload, 9 + len))
}

impl Frames<'_> {
    fn fingerprint(&mut self) -> Read {
        let mut settings = None;
        let mut window = 0u32;
        let mut priorities: Vec<String> = Vec::new();
        loop {
            let Some((kind, flags, stream, payload, used)) = frame(self.bytes) else {
                return Read::More;
            };
            self.bytes = self.bytes.get(used..).unwrap_or_default();
            match kind {
                // SETTINGS (not an ACK): six bytes a parameter.
                0x4 if flags & 0x1 == 0 && settings.is_none() => {
                    if payload.len() % 6 != 0 {
                        return Read::Done(None);
                    }
                    let params: Vec<String> = payload
                        .chunks_exact(6)
                        .filter_map(|p| {
                            let id = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
                            let value = u32::from_be_bytes([*p.get(2)?, *p.get(3)?, *p.get(4)?, *p.get(5)?]);
                            Some(format!("{id}:{value}"))
                        })
                        .collect();
                    settings = Some(params.join(";"));
                }
                0x8 if stream == 0 && payload.len() == 4 => {
                    let b: [u8; 4] = payload.try_into().unwrap_or_default();
                    window = u32::from_be_bytes(b) & 0x7fff_ffff;
                }
                0x2 if payload.len() == 5 && priorities.len() < 16 => {
                    priorities.push(priority(stream, payload));
                }
                // The first request's HEADERS: the end.
                0x1 => {
                    let Some(settings) = settings else { return Read::Done(None) };
                    let mut block = payload;
                    if flags & 0x8 != 0 {
                        // PADDED: a pad length, and that much padding at the end.
                        let pad = usize::from(*block.first().unwrap_or(&0));
                        block = block.get(1..block.len().saturating_sub(pad)).unwrap_or_default();
                    }
                    if flags & 0x20 != 0 {
                        // The request's own priority: not part of the form (PRIORITY frames are).
                        block = block.get(5..).unwrap_or_default();
                    }
                    let priority = if priorities.is_empty() { "0".to_string() } else { priorities.join(",") };
                    return Read::Done(Some(format!("{settings}|{window}|{priority}|{}", pseudo_order(block))));
                }
                _ => {}
            }
        }
    }
}

fn priority(stream: u32, p: &[u8]) -> String {
    let dep = u32::from_be_bytes([
        *p.first().unwrap_or(&0),
        *p.get(1).unwrap_or(&0),
        *p.get(2).unwrap_or(&0),
        *p.get(3).unwrap_or(&0),
    ]);
    let weight = u16::from(*p.get(4).unwrap_or(&0)) + 1;
    format!("{stream}:{}:{}:{weight}", dep >> 31, dep & 0x7fff_ffff)
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1); the value and the bytes it took.
fn integer(b: &[u8], n: u32) -> Option<(u64, usize)> {
    let max = (1u64 << n) - 1;
    let first = u64::from(*b.first()?) & max;
    if first < max {
        return Some((first, 1));
    }
    let mut value = max;
    for (i, byte) in b.iter().enumerate().skip(1).take(8) {
        value = value.checked_add(u64::from(byte & 0x7f) << (7 * (i - 1)))?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Skips an HPACK string literal; the bytes it took.
fn string(b: &[u8]) -> Option<usize> {
    let (len, used) = integer(b, 7)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    (end <= b.len()).then_some(end)
}

/// The pseudo-headers of a request's header block, in order (`m,a,s,p`), from the static
/// table's indices (RFC 7541 appendix A); stops at the first regular header.
fn pseudo_order(mut b: &[u8]) -> String {
    let mut order: Vec<&str> = Vec::new();
    while let Some(&first) = b.first() {
        let (index, used, literal) = if first & 0x80 != 0 {
            let Some((i, u)) = integer(b, 7) else { break };
            (i, u, false)
        } else if first & 0xc0 == 0x40 {
            let Some((i, u)) = integer(b, 6) else { break };
            (i, u, true)
        } else if first & 0xe0 == 0x20 {
            // A dynamic table size update: no header.
            let Some((_, u)) = integer(b, 5) else { break };
            b = b.get(u..).unwrap_or_default();
            continue;
        } else {
            let Some((i, u)) = integer(b, 4) else { break };
            (i, u, true)
        };
        let name = match index {
            1 => "a",
            2 | 3 => "m",
            4 | 5 => "p",
            6 | 7 => "s",
            // A literal name, or any other header: the pseudo-headers are over.
            _ => break,
        };
        if order.len() < 8 {
            order.push(name);
        }
        let mut at = used;
        if literal {
            let Some(n) = b.get(at..).and_then(string) else { break };
            at += n;
        }
        b = b.get(at..).unwrap_or_default();
    }
    order.join(",")
}

/// The fingerprint of a connection's first bytes (after TLS), or [`Read::More`].
pub fn fingerprint(bytes: &[u8]) -> Read {
    let Some(rest) = bytes.strip_prefix(PREFACE) else {
        return if PREFACE.starts_with(bytes) { Read::More } else { Read::Done(None) };
    };
    match (Frames { bytes: rest }).fingerprint() {
        // No first request within the bytes a fingerprint may take.
        Read::More if bytes.len() > MAX_BYTES => Read::Done(None),
        read => read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Chromium's opening, as sent: its SETTINGS, window update, and a HEADERS block of
    /// :method GET (indexed 2), :authority (literal, name index 1), :scheme https (indexed 7),
    /// :path / (indexed 4), then a regular header.
    fn chromium() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        let mut settings = Vec::new();
        for (id, v) in [(1u16, 65536u32), (2, 0), (4, 6_291_456), (6, 262_144)] {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&v.to_be_bytes());
        }
        b.extend(frame_bytes(0x4, 0, 0, &settings));
        b.extend(frame_bytes(0x8, 0, 0, &15_663_105u32.to_be_bytes()));
        let mut block = vec![0x82, 0x41, 0x03];
        block.extend_from_slice(b"a.b");
        block.extend_from_slice(&[0x87, 0x84, 0x40 | 58, 0x01, b'x']);
        // END_STREAM | END_HEADERS | PRIORITY: exclusive on stream 0, weight 256.
        let mut payload = vec![0x80, 0, 0, 0, 255];
        payload.extend(block);
        b.extend(frame_bytes(0x1, 0x25, 1, &payload));
        b
    }

    #[test]
    fn chromium_s_opening_reads_as_akamai_s_form() {
        let b = chromium();
        assert_eq!(fingerprint(&b), Read::Done(Some("1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p".into())));
        // Every shorter prefix asks for more, never a wrong answer.
        for n in 0..b.len() {
            assert_eq!(fingerprint(b.get(..n).unwrap()), Read::More, "{n}");
        }
    }

    #[test]
    fn anything_else_has_no_fingerprint() {
        assert_eq!(fingerprint(b"GET / HTTP/1.1\r\n"), Read::Done(None));
        let mut no_settings = PREFACE.to_vec();
        no_settings.extend(frame_bytes(0x1, 0x4, 1, &[0x82]));
        assert_eq!(fingerprint(&no_settings), Read::Done(None));
        let mut endless = PREFACE.to_vec();
        endless.extend(frame_bytes(0x4, 0, 0, &[]));
        while endless.len() <= MAX_BYTES {
            endless.extend(frame_bytes(0x0, 0, 1, &[0; 1000]));
        }
        assert_eq!(fingerprint(&endless), Read::Done(None));
    }

    #[test]
    fn hpack_integers() {
        assert_eq!(integer(&[0x0a], 5), Some((10, 1)));
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5), Some((1337, 3)));
        assert_eq!(integer(&[0x1f, 0xff], 5), None, "unfinished");
        assert_eq!(integer(&[0xff; 12], 7), None, "too long");
    }
}
