//! The challenge page: the `challenge` action of firewall rules, rate limits and DDoS
//! mitigations.
//!
//! A challenged request gets a small page (403, no external resources, a strict CSP) that
//! proves work in the browser: it finds a nonce for which SHA-256(`token.nonce`) starts with
//! `difficulty` zero bits, then asks [`PATH`] for a clearance. Without JavaScript, a meta refresh
//! (and a plain link, for anyone the automatic step misses) asks for it after `wait_s` seconds:
//! the slower check. Nobody is ever asked to solve a puzzle, so a person with a screen reader
//! passes as anyone else does.
//!
//! Both the page's token and the clearance cookie are signed with the node's key (HMAC-SHA-256)
//! and bound to the zone, the client's address prefix (/24 for IPv4, /64 for IPv6: a phone that
//! changes address in its carrier's block keeps its clearance) and its user agent. A token is
//! answerable for [`TOKEN_TTL_S`]; a clearance lasts the zone's `clearance_ttl_s`. Nothing is
//! stored on the node: any node holding the same key file accepts the cookie.

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Response, StatusCode};
use palisade_config::ChallengeSettings;
use ring::hmac;
use sha2::Digest;

use crate::body::EdgeBody;
use crate::modules::RequestView;

/// The clearance cookie's name.
pub const COOKIE: &str = "palisade_clearance";
/// Where a solved challenge is answered; reserved in every zone.
pub const PATH: &str = "/.palisade/challenge";
/// How long a challenge page can be answered.
pub const TOKEN_TTL_S: u64 = 300;
/// Bytes of the HMAC kept in tokens and cookies (128 bits).
const MAC_LEN: usize = 16;
/// The key file in the node's state directory.
const KEY_FILE: &str = "challenge.key";
const KEY_LEN: usize = 32;

static MITIGATED: HeaderName = HeaderName::from_static("palisade-mitigated");

/// The node's signing key for tokens and clearances.
pub struct Keys(hmac::Key);

impl Keys {
    /// The key in `state_dir/challenge.key`, made there (32 random bytes, mode 0600) on first
    /// start; copy the file to every node of a fleet for clearances that work on any of them.
    /// Without a state directory the key lives as long as the process.
    pub fn open(state_dir: Option<&Path>) -> Result<Keys, String> {
        let Some(dir) = state_dir else { return Keys::random() };
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= KEY_LEN => return Ok(Keys(hmac::Key::new(hmac::HMAC_SHA256, &bytes))),
            Ok(bytes) => {
                return Err(format!("{}: {} bytes; a key has at least {KEY_LEN}", path.display(), bytes.len()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let bytes = random_key()?;
        write_key(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Keys(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    pub fn random() -> Result<Keys, String> {
        Ok(Keys(hmac::Key::new(hmac::HMAC_SHA256, &random_key()?)))
    }

    /// The MAC of what a token or clearance is bound to, and its own fields.
    fn mac(&self, kind: u8, zone: &str, ip: IpAddr, user_agent: &[u8], fields: &[u64]) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&[kind]);
        ctx.update(&(zone.len() as u64).to_be_bytes());
        ctx.update(zone.as_bytes());
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                ctx.update(&[4]);
                ctx.update(a.octets().get(..3).unwrap_or_default());
            }
            IpAddr::V6(a) => {
                ctx.update(&[6]);
                ctx.update(a.octets().get(..8).unwrap_or_default());
            }
        }
        ctx.update(&(user_agent.len() as u64).to_be_bytes());
        ctx.update(user_agent);
        for f in fields {
            ctx.update(&f.to_be_bytes());
        }
        let tag = ctx.sign();
        let mut out = [0; MAC_LEN];
        for (o, t) in out.iter_mut().zip(tag.as_ref()) {
            *o = *t;
        }
        out
    }
}

fn random_key() -> Result<[u8; KEY_LEN], String> {
    let mut bytes = [0; KEY_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no random numbers from the operating system".to_string())?;
    Ok(bytes)
}

fn write_key(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Equal in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const KIND_TOKEN: u8 = b't';
const KIND_CLEARANCE: u8 = b'c';

fn user_agent<'a>(req: &'a RequestView<'_>) -> &'a [u8] {
    req.headers.header("user-agent").unwrap_or_default()
}

/// Whether the request carries a valid clearance for `zone`.
pub fn cleared(keys: &Keys, zone: &str, req: &RequestView<'_>) -> bool {
    let Some(value) = req.headers.cookie(COOKIE) else { return false };
    let Some((expires, mac)) = std::str::from_utf8(value).ok().and_then(|v| v.split_once('.')) else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else { return false };
    if expires <= crate::clock::unix_now() {
        return false;
    }
    let want = keys.mac(KIND_CLEARANCE, zone, req.client_ip, user_agent(req), &[expires]);
    hex::decode(mac).is_ok_and(|m| same(&m, &want))
}

/// A challenge page's token: `issued.difficulty.salt.mac`.
struct Token {
    issued: u64,
    difficulty: u8,
    salt: u64,
}

impl Token {
    fn new(difficulty: u8) -> Token {
        Token { issued: crate::clock::unix_now(), difficulty, salt: crate::pool::fast_random() }
    }

    fn encode(&self, keys: &Keys, zone: &str, req: &RequestView<'_>) -> String {
        let mac = keys.mac(
            KIND_TOKEN,
            zone,
            req.client_ip,
            user_agent(req),
            &[self.issued, u64::from(self.difficulty), self.salt],
        );
        format!("{}.{}.{:x}.{}", self.issued, self.difficulty, self.salt, hex::encode(mac))
    }

    /// A token this node signed for this client and zone, still answerable.
    fn decode(text: &str, keys: &Keys, zone: &str, req: &RequestView<'_>) -> Option<Token> {
        let mut parts = text.split('.');
        let issued = parts.next()?.parse::<u64>().ok()?;
        let difficulty = parts.next()?.parse::<u8>().ok()?;
        let salt = u64::from_str_radix(parts.next()?, 16).ok()?;
        let mac = hex::decode(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        let want = keys.mac(KIND_TOKEN, zone, req.client_ip, user_agent(req), &[issued, u64::from(difficulty), salt]);
        let now = crate::clock::unix_now();
        // A little slack for a node whose clock is ahead of the one that issued it.
        let fresh = issued <= now + 5 && now <= issued + TOKEN_TTL_S;
        (same(&mac, &want) && fresh).then_some(Token { issued, difficulty, salt })
    }
}

/// Leading zero bits of SHA-256(`token.nonce`).
pub fn work(token: &str, nonce: &str) -> u32 {
    let mut h = sha2::Sha256::new();
    h.update(token.as_bytes());
    h.update(b".");
    h.update(nonce.as_bytes());
    let digest = h.finalize();
    let mut bits = 0;
    for b in digest {
        bits += b.leading_zeros();
        if b != 0 {
            break;
        }
    }
    bits
}

/// A rule's proof-of-work bits: its own, else the zone's (both validated to 1..=24).
pub fn difficulty(own: Option<u64>, zone: &ChallengeSettings) -> u8 {
    u8::try_from(own.unwrap_or(zone.difficulty)).unwrap_or(16)
}

/// The challenge page for a request a rule, rate limit or mitigation challenged.
pub fn page(
    keys: &Keys,
    zone: &str,
    settings: &ChallengeSettings,
    req: &RequestView<'_>,
    difficulty: u8,
    request_id: &str,
) -> Response<EdgeBody> {
    let token = Token::new(difficulty).encode(keys, zone, req);
    render(&token, difficulty, settings.wait_s, &return_path(req), request_id)
}

/// The local path to go back to once cleared: the request's own.
fn return_path(req: &RequestView<'_>) -> String {
    encode_component(req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
}

/// Answers [`PATH`]: `t` (the token), `r` (where to go back to), and either `n` (the nonce the
/// script found) or `w=1` (the no-JavaScript path, once `wait_s` has passed). Success: 303 back
/// with the clearance cookie. Too early on the slow path: the same page, refreshing when the
/// wait is over. Anything else: a new challenge.
pub fn answer(
    keys: &Keys,
    zone: &str,
    settings: &ChallengeSettings,
    req: &RequestView<'_>,
    request_id: &str,
) -> (Response<EdgeBody>, Answer) {
    let (mut t, mut n, mut w, mut r) = (None, None, false, None);
    for pair in req.uri.query().unwrap_or("").split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("t", v) => t = Some(v),
            ("n", v) => n = Some(v),
            ("w", "1") => w = true,
            ("r", v) => r = Some(v),
            _ => {}
        }
    }
    let back = r.map(decode_component).filter(|p| is_local_path(p)).unwrap_or_else(|| "/".into());
    let default_difficulty = difficulty(None, settings);
    let Some((text, token)) = t.and_then(|t| Some((t, Token::decode(t, keys, zone, req)?))) else {
        let resp = render(
            &Token::new(default_difficulty).encode(keys, zone, req),
            default_difficulty,
            settings.wait_s,
            &encode_component(&back),
            request_id,
        );
        return (resp, Answer::Failed);
    };
    let now = crate::clock::unix_now();
    let passed = match (n, w) {
        (Some(nonce), _) if nonce.len() <= 20 && work(text, nonce) >= u32::from(token.difficulty) => Some(Answer::Work),
        (None, true) if now >= token.issued + settings.wait_s => Some(Answer::Waited),
        (None, true) => {
            // Too early: the same token, with the rest of the wait.
            let left = (token.issued + settings.wait_s).saturating_sub(now);
            return (render(text, token.difficulty, left, &encode_component(&back), request_id), Answer::Early);
        }
        _ => None,
    };
    let Some(how) = passed else {
        let fresh = Token::new(token.difficulty).encode(keys, zone, req);
        let resp = render(&fresh, token.difficulty, settings.wait_s, &encode_component(&back), request_id);
        return (resp, Answer::Failed);
    };
    let expires = now + settings.clearance_ttl_s;
    let mac = keys.mac(KIND_CLEARANCE, zone, req.client_ip, user_agent(req), &[expires]);
    let secure = if req.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={expires}.{}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        hex::encode(mac),
        settings.clearance_ttl_s
    );
    let mut resp = Response::new(EdgeBody::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    h.insert(LOCATION, HeaderValue::from_str(&back).unwrap_or(HeaderValue::from_static("/")));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(SET_COOKIE, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (resp, how)
}

/// What an answer to [`PATH`] came to (counted per zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Cleared by the proof of work.
    Work,
    /// Cleared by waiting (no JavaScript).
    Waited,
    /// The slow path, asked before its time.
    Early,
    /// A bad, stale or someone else's token, or a nonce that does not do the work.
    Failed,
}

/// Whether `p` stays on this site: a path, not `//host` or `/\host`, nothing a header refuses.
fn is_local_path(p: &str) -> bool {
    p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") && p.bytes().all(|b| b.is_ascii_graphic())
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            for digit in [b >> 4, b & 15] {
                out.push(char::from_digit(u32::from(digit), 16).unwrap_or('0').to_ascii_uppercase());
            }
        }
    }
    out
}

fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|d| char::from(*d).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The page's script: finds the nonce, a slice of work at a time so the page stays responsive,
/// then goes to `data-u` with `&n=` the nonce. SHA-256 is written out: `crypto.subtle` exists
/// only in secure contexts, and this page is also served over plain HTTP.
const SCRIPT: &str = r#"(function(){
var e=document.getElementById("c"),t=e.getAttribute("data-t"),d=+e.getAttribute("data-d"),u=e.getAttribute("data-u");
var K=[0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2];
var W=new Array(64);
function r(x,n){return (x>>>n)|(x<<(32-n));}
function sha(m){
var l=m.length*8,H=[0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19],i,o;
m.push(0x80);while(m.length%64!==56)m.push(0);
m.push(0,0,0,0,(l>>>24)&255,(l>>>16)&255,(l>>>8)&255,l&255);
for(o=0;o<m.length;o+=64){
for(i=0;i<16;i++)W[i]=(m[o+4*i]<<24)|(m[o+4*i+1]<<16)|(m[o+4*i+2]<<8)|m[o+4*i+3];
for(i=16;i<64;i++){var a=W[i-15],b=W[i-2];W[i]=(W[i-16]+(r(a,7)^r(a,18)^(a>>>3))+W[i-7]+(r(b,17)^r(b,19)^(b>>>10)))|0;}
var A=H[0],B=H[1],C=H[2],D=H[3],E=H[4],F=H[5],G=H[6],X=H[7];
for(i=0;i<64;i++){
var t1=(X+(r(E,6)^r(E,11)^r(E,25))+((E&F)^(~E&G))+K[i]+W[i])|0,t2=((r(A,2)^r(A,13)^r(A,22))+((A&B)^(A&C)^(B&C)))|0;
X=G;G=F;F=E;E=(D+t1)|0;D=C;C=B;B=A;A=(t1+t2)|0;}
H[0]=(H[0]+A)|0;H[1]=(H[1]+B)|0;H[2]=(H[2]+C)|0;H[3]=(H[3]+D)|0;H[4]=(H[4]+E)|0;H[5]=(H[5]+F)|0;H[6]=(H[6]+G)|0;H[7]=(H[7]+X)|0;}
return H;}
function zeros(H){var n=0;for(var i=0;i<8;i++){if(H[i]===0){n+=32;continue;}return n+Math.clz32(H[i]);}return n;}
var p=[];for(var i=0;i<t.length;i++)p.push(t.charCodeAt(i));p.push(46);
var n=0;
function step(){
for(var end=n+5000;n<end;n++){
var m=p.slice(),s=String(n);for(var j=0;j<s.length;j++)m.push(s.charCodeAt(j));
if(zeros(sha(m))>=d){document.getElementById("s").textContent="Done. Taking you to the site\u2026";location.replace(u+"&n="+n);return;}}
setTimeout(step,0);}
step();
})();"#;

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}code{background:#f3f3f3;padding:.1rem .3rem}";

/// `Content-Security-Policy` for the page: its own script and style, by hash; nothing else.
fn csp() -> &'static HeaderValue {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s.as_bytes()));
        let policy = format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(SCRIPT),
            hash(STYLE)
        );
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
    })
}

/// The page. `token` and `back` (percent-encoded) need no escaping: neither holds `"`, `<` or
/// `&`; `request_id` is the node's own.
fn render(token: &str, difficulty: u8, wait_s: u64, back: &str, request_id: &str) -> Response<EdgeBody> {
    let answer = format!("{PATH}?t={token}&amp;r={back}");
    let unit = if wait_s == 1 { "second" } else { "seconds" };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\">\
<title>Checking your browser</title>\
<noscript><meta http-equiv=\"refresh\" content=\"{wait_s};url={answer}&amp;w=1\"></noscript>\
<style>{STYLE}</style></head>\n<body><main><h1>Checking your browser</h1>\
<p id=\"s\" role=\"status\" aria-live=\"polite\">This site checks that its visitors are not automated. \
It takes a few seconds and needs nothing from you.</p>\
<p>Without JavaScript this page goes on by itself in {wait_s} {unit}; if it does not, \
<a href=\"{answer}&amp;w=1\">continue here</a> after that.</p>\
<p><small>Request ID: <code>{request_id}</code></small></p></main>\
<script id=\"c\" data-t=\"{token}\" data-d=\"{difficulty}\" data-u=\"{answer}\">{SCRIPT}</script>\
</body></html>\n"
    );
    let mut resp = Response::new(EdgeBody::full(html));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(hyper::header::CONTENT_SECURITY_POLICY, csp().clone());
    h.insert(MITIGATED.clone(), HeaderValue::from_static("challenge"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(crate::proxy::X_REQUEST_ID.clone(), v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cookie(String);

    impl crate::modules::Headers for Cookie {
        fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
            match name {
                "cookie" => Some(self.0.as_bytes()),
                "user-agent" => Some(b"ua"),
                _ => None,
            }
        }
        fn names(&self, _: &mut dyn FnMut(&[u8])) {}
    }

    fn with_cookie<T>(cookie: String, f: impl FnOnce(&RequestView<'_>) -> T) -> T {
        let (method, uri) = (hyper::Method::GET, hyper::Uri::from_static("/"));
        let headers = Cookie(cookie);
        let req = RequestView::plain(IpAddr::from([192, 0, 2, 10]), &method, &uri, &headers);
        f(&req)
    }

    #[test]
    fn a_clearance_holds_until_it_expires_and_only_under_its_key() {
        let keys = Keys::random().unwrap();
        let mint = |expires: u64| {
            let mac = keys.mac(KIND_CLEARANCE, "z", IpAddr::from([192, 0, 2, 99]), b"ua", &[expires]);
            format!("{COOKIE}={expires}.{}", hex::encode(mac))
        };
        let now = crate::clock::unix_now();
        assert!(with_cookie(mint(now + 60), |r| cleared(&keys, "z", r)));
        assert!(!with_cookie(mint(now + 60), |r| cleared(&keys, "y", r)), "another zone");
        assert!(!with_cookie(mint(now), |r| cleared(&keys, "z", r)), "expired");
        assert!(!with_cookie(mint(now + 60), |r| cleared(&Keys::random().unwrap(), "z", r)), "another key");
        for junk in [
            "",
            "palisade_clearance=",
            "palisade_clearance=1.",
            "palisade_clearance=x.y",
            "palisade_clearance=99999999999999999999.00",
        ] {
            assert!(!with_cookie(junk.into(), |r| cleared(&keys, "z", r)), "{junk}");
        }
    }

    #[test]
    fn the_key_file_is_made_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("palisade-challenge-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Keys::open(Some(&dir)).unwrap();
        let b = Keys::open(Some(&dir)).unwrap();
        let ip = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(a.mac(KIND_TOKEN, "z", ip, b"", &[1]), b.mac(KIND_TOKEN, "z", ip, b"", &[1]));
        std::fs::write(dir.join(KEY_FILE), b"short").unwrap();
        assert!(Keys::open(Some(&dir)).err().unwrap().contains("at least 32"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn return_paths_stay_on_the_site() {
        assert!(is_local_path("/a/b?c=d"));
        for p in ["//evil.example/", "/\\evil.example", "https://evil.example/", "/a\r\nSet-Cookie: x", ""] {
            assert!(!is_local_path(p), "{p:?}");
        }
        let p = "/search?q=a b&x=%2F";
        assert_eq!(decode_component(&encode_component(p)), p);
        assert!(!encode_component("/\"<&>").contains(['"', '<', '&', '>']));
    }

    #[test]
    fn work_counts_leading_zero_bits() {
        // Find nonces with at least 8 and 12 zero bits, then check the count against a byte
        // view of the digest.
        for want in [8, 12] {
            let nonce = (0u64..).find(|n| work("tok", &n.to_string()) >= want).map(|n| n.to_string());
            let nonce = nonce.unwrap_or_default();
            let d = sha2::Sha256::digest(format!("tok.{nonce}").as_bytes());
            assert_eq!(d[0], 0);
            assert!(want < 16 || d[1] == 0);
        }
    }
}
