//! The firewall rule language: expressions over request fields, modelled on the public
//! wirefilter / Cloudflare Rules language.
//!
//! ```text
//! http.request.uri.path wildcard "/admin/*" and not ip.src in { 10.0.0.0/8 192.0.2.7 }
//! http.request.method in { "PUT" "DELETE" } or http.user_agent contains "curl"
//! http.request.headers["x-api-key"] eq "" xor ssl
//! ip.src in $blocked        # an ip_list artifact of the document
//! ```
//!
//! - **Fields.** `http.request.method`, `http.request.uri` (path and query),
//!   `http.request.uri.path`, `http.request.uri.query`, `http.request.headers["name"]`,
//!   `http.request.version`, `http.host`, `http.user_agent`, `ip.src`, `ssl`, `bot.score`,
//!   `bot.verified`, `tls.ja4`, `http.fingerprint`, `http2.fingerprint`.
//! - **Operators.** `eq ne lt le gt ge` (also `== != < <= > >=`), `contains`, `wildcard`
//!   (`*` matches any run of characters, case-insensitive), `matches` (the `regex` crate: linear
//!   time, compiled size limited), `in` (a list in braces, or `$name` of an `ip_list` artifact).
//! - **Logic.** `not` (`!`), `and` (`&&`), `xor` (`^^`), `or` (`||`), binding in that order, and
//!   parentheses.
//! - **A missing value.** A header that is not there, or `bot.score` when no score was computed,
//!   is *absent*. Every comparison with an absent value is false (`not` makes it true): absent
//!   never stands in for "" or 0.
//!
//! Untrusted input like the rest of the document: an expression has at most
//! [`MAX_EXPRESSION_BYTES`] bytes and [`MAX_DEPTH`] levels of nesting. A parse error names the
//! column. The parser never panics (fuzzed: `fuzz/fuzz_targets/rule_parser.rs`).

use std::net::IpAddr;

use crate::artifact::IpSet;

pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;
/// Items in one `{ ... }` list.
pub const MAX_LIST_ITEMS: usize = 1000;
/// Compiled size of one `matches` regex.
pub const MAX_REGEX_BYTES: usize = 256 * 1024;

/// A field a rule can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Method,
    Uri,
    Path,
    Query,
    Header(String),
    Version,
    Host,
    UserAgent,
    IpSrc,
    Ssl,
    BotScore,
    /// A verified bot (true or false on its own).
    BotVerified,
    /// The TLS client fingerprint (JA4); absent without TLS.
    TlsJa4,
    /// The request's HTTP fingerprint (16 hex digits: method, path shape, header names in order,
    /// user agent, HTTP version, TLS and HTTP/2 fingerprints), as automatic DDoS mitigation
    /// counts it.
    HttpFingerprint,
    /// The HTTP/2 client fingerprint (Akamai's form); absent for HTTP/1.
    Http2Fingerprint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Ip,
    Bool,
    Int,
}

impl Field {
    fn kind(&self) -> Kind {
        match self {
            Field::IpSrc => Kind::Ip,
            Field::Ssl | Field::BotVerified => Kind::Bool,
            Field::BotScore => Kind::Int,
            _ => Kind::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Xor(Box<Expr>, Box<Expr>),
    /// A bool field on its own (`ssl`, `bot.verified`).
    Flag(Field),
    Text(Field, TextOp),
    Ip(IpOp),
    Int(Field, Cmp, i64),
    IntIn(Field, Vec<i64>),
}

#[derive(Debug, Clone)]
pub enum TextOp {
    Cmp(Cmp, String),
    Contains(String),
    /// Lowercased pattern, split at `*`.
    Wildcard(Vec<String>),
    Matches(Box<regex::Regex>),
    In(Vec<String>),
}

#[derive(Debug, Clone)]
pub enum IpOp {
    Eq(IpAddr),
    Ne(IpAddr),
    /// A literal set, or an artifact's (`$name`), resolved when the zone is compiled.
    In(std::sync::Arc<IpSet>),
    InList(String),
}

/// A parse error: what, and the column (1-based, in bytes) where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

/// What a request offers a rule.
pub trait Request {
    fn method(&self) -> &str;
    fn uri(&self) -> &str;
    fn path(&self) -> &str;
    fn query(&self) -> &str;
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]>;
    fn version(&self) -> &str;
    fn host(&self) -> &str;
    fn ip(&self) -> IpAddr;
    fn ssl(&self) -> bool;
    fn bot_score(&self) -> Option<i64>;
    /// The TLS client fingerprint (JA4); None without TLS (a comparison with it is false).
    fn tls_ja4(&self) -> Option<&str> {
        None
    }
    /// Whether the bot module found a verified bot.
    fn bot_verified(&self) -> bool {
        false
    }
    /// The HTTP fingerprint, when the node computes one.
    fn http_fingerprint(&self) -> Option<String> {
        None
    }
    /// The HTTP/2 client fingerprint; None for HTTP/1.
    fn http2_fingerprint(&self) -> Option<&str> {
        None
    }
}

/// A request as plain data: for tools, tests, benches and the fuzzer.
#[derive(Debug, Clone)]
pub struct RequestData {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lowercase names.
    pub headers: Vec<(String, Vec<u8>)>,
    pub version: String,
    pub host: String,
    pub ip: IpAddr,
    pub ssl: bool,
    pub bot_score: Option<i64>,
    /// `path?query` (or the path alone), kept whole as a request carries it.
    uri: String,
}

impl RequestData {
    /// A GET of `target` (`/path?query`) from `ip`, over HTTP/1.1 without TLS, with no headers.
    pub fn get(host: &str, target: &str, ip: IpAddr) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            headers: Vec::new(),
            version: "HTTP/1.1".into(),
            host: host.into(),
            ip,
            ssl: false,
            bot_score: None,
            uri: target.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }
}

impl Request for RequestData {
    fn method(&self) -> &str {
        &self.method
    }
    fn uri(&self) -> &str {
        &self.uri
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn query(&self) -> &str {
        &self.query
    }
    fn header<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn host(&self) -> &str {
        &self.host
    }
    fn ip(&self) -> IpAddr {
        self.ip
    }
    fn ssl(&self) -> bool {
        self.ssl
    }
    fn bot_score(&self) -> Option<i64> {
        self.bot_score
    }
}

impl Expr {
    /// Whether the request matches.
    pub fn eval(&self, r: &dyn Request) -> bool {
        match self {
            Expr::Not(e) => !e.eval(r),
            Expr::And(all) => all.iter().all(|e| e.eval(r)),
            Expr::Or(any) => any.iter().any(|e| e.eval(r)),
            Expr::Xor(a, b) => a.eval(r) != b.eval(r),
            Expr::Flag(Field::BotVerified) => r.bot_verified(),
            Expr::Flag(_) => r.ssl(),
            Expr::Text(field, op) => {
                let value: Option<std::borrow::Cow<'_, str>> = match field {
                    Field::Method => Some(r.method().into()),
                    Field::Uri => Some(r.uri().into()),
                    Field::Path => Some(r.path().into()),
                    Field::Query => Some(r.query().into()),
                    Field::Version => Some(r.version().into()),
                    Field::Host => Some(r.host().into()),
                    Field::UserAgent => r.header("user-agent").map(String::from_utf8_lossy),
                    Field::Header(h) => r.header(h).map(String::from_utf8_lossy),
                    Field::TlsJa4 => r.tls_ja4().map(Into::into),
                    Field::HttpFingerprint => r.http_fingerprint().map(Into::into),
                    Field::Http2Fingerprint => r.http2_fingerprint().map(Into::into),
                    _ => None,
                };
                value.is_some_and(|v| op.test(&v))
            }
            Expr::Ip(op) => match op {
                IpOp::Eq(a) => r.ip() == *a,
                IpOp::Ne(a) => r.ip() != *a,
                IpOp::In(set) => set.contains(r.ip()),
                // Unresolved (a document not yet compiled): matches nothing.
                IpOp::InList(_) => false,
            },
            Expr::Int(_, cmp, n) => r.bot_score().is_some_and(|v| compare(v.cmp(n), *cmp)),
            Expr::IntIn(_, list) => r.bot_score().is_some_and(|v| list.contains(&v)),
        }
    }

    /// Resolves `ip.src in $name` against the document's IP lists; returns the names it could
    /// not resolve.
    pub fn resolve(&mut self, lists: &dyn Fn(&str) -> Option<std::sync::Arc<IpSet>>) -> Vec<String> {
        let mut missing = Vec::new();
        self.visit(&mut |e| {
            if let Expr::Ip(op @ IpOp::InList(_)) = e {
                if let IpOp::InList(name) = op {
                    match lists(name) {
                        Some(set) => *op = IpOp::In(set),
                        None => missing.push(name.clone()),
                    }
                }
            }
        });
        missing
    }

    /// The `$names` of IP lists the expression uses.
    pub fn lists(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut me = self.clone();
        me.visit(&mut |e| {
            if let Expr::Ip(IpOp::InList(n)) = e {
                out.push(n.clone());
            }
        });
        out
    }

    fn visit(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Expr::Not(e) => e.visit(f),
            Expr::And(v) | Expr::Or(v) => v.iter_mut().for_each(|e| e.visit(f)),
            Expr::Xor(a, b) => {
                a.visit(f);
                b.visit(f);
            }
            other => f(other),
        }
    }
}

fn compare(o: std::cmp::Ordering, c: Cmp) -> bool {
    use std::cmp::Ordering::*;
    match c {
        Cmp::Eq => o == Equal,
        Cmp::Ne => o != Equal,
        Cmp::Lt => o == Less,
        Cmp::Le => o != Greater,
        Cmp::Gt => o == Greater,
        Cmp::Ge => o != Less,
    }
}

impl TextOp {
    fn test(&self, v: &str) -> bool {
        match self {
            TextOp::Cmp(c, s) => compare(v.cmp(s.as_str()), *c),
            TextOp::Contains(s) => v.contains(s.as_str()),
            TextOp::Wildcard(parts) => wildcard(&v.to_ascii_lowercase(), parts),
            TextOp::Matches(re) => re.is_match(v),
            TextOp::In(list) => list.iter().any(|s| s == v),
        }
    }
}

/// `parts` are the pattern split at `*`: the first must be a prefix, the last a suffix, the
/// others appear in order between.
fn wildcard(v: &str, parts: &[String]) -> bool {
    let Some((first, rest)) = parts.split_first() else { return v.is_empty() };
    let Some(mut tail) = v.strip_prefix(first.as_str()) else { return false };
    let Some((last, middle)) = rest.split_last() else { return tail.is_empty() };
    for p in middle {
        match tail.find(p.as_str()) {
            Some(i) => tail = tail.get(i + p.len()..).unwrap_or(""),
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last.as_str())
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    /// An IP address or CIDR prefix (lexed as a word of digits, dots, colons, slash).
    Addr(String),
    List(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Op(&'static str),
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, m: String| ParseError { column: at + 1, message: m };
    while i < b.len() {
        let c = b.get(i).copied().unwrap_or(0);
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' | b')' | b'{' | b'}' | b'[' | b']' => {
                out.push((
                    start,
                    match c {
                        b'(' => Tok::LParen,
                        b')' => Tok::RParen,
                        b'{' => Tok::LBrace,
                        b'}' => Tok::RBrace,
                        b'[' => Tok::LBracket,
                        _ => Tok::RBracket,
                    },
                ));
                i += 1;
            }
            b'"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match b.get(i) {
                        None => return Err(err(start, "a string is not closed (missing `\"`)".into())),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match b.get(i + 1) {
                                Some(b'"') => s.push('"'),
                                Some(b'\\') => s.push('\\'),
                                _ => return Err(err(i, "only \\\" and \\\\ are escapes in a string".into())),
                            }
                            i += 2;
                        }
                        Some(_) => {
                            // Whole UTF-8 characters.
                            let rest = src.get(i..).unwrap_or("");
                            let ch = rest.chars().next().unwrap_or('\u{fffd}');
                            s.push(ch);
                            i += ch.len_utf8().max(1);
                        }
                    }
                }
                out.push((start, Tok::Str(s)));
            }
            b'$' => {
                i += 1;
                while b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')) {
                    i += 1;
                }
                let name = src.get(start + 1..i).unwrap_or("");
                if name.is_empty() {
                    return Err(err(start, "`$` must be followed by a list's name".into()));
                }
                out.push((start, Tok::List(name.to_string())));
            }
            b'=' | b'!' | b'<' | b'>' | b'&' | b'|' | b'^' | b'~' => {
                let two = src.get(i..i + 2).unwrap_or("");
                let op = match two {
                    "==" => Some("eq"),
                    "!=" => Some("ne"),
                    "<=" => Some("le"),
                    ">=" => Some("ge"),
                    "&&" => Some("and"),
                    "||" => Some("or"),
                    "^^" => Some("xor"),
                    _ => None,
                };
                if let Some(op) = op {
                    out.push((start, Tok::Op(op)));
                    i += 2;
                } else {
                    let op = match c {
                        b'<' => "lt",
                        b'>' => "gt",
                        b'!' => "not",
                        b'~' => "matches",
                        _ => return Err(err(start, format!("`{}` is not an operator", c as char))),
                    };
                    out.push((start, Tok::Op(op)));
                    i += 1;
                }
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b':' => {
                while b.get(i).is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'/')) {
                    i += 1;
                }
                let word = src.get(start..i).unwrap_or("");
                let tok = if let Ok(n) = word.parse::<i64>() {
                    Tok::Int(n)
                } else if word.contains(':') || word.split('/').next().is_some_and(|w| w.parse::<IpAddr>().is_ok()) {
                    Tok::Addr(word.to_string())
                } else {
                    Tok::Ident(word.to_string())
                };
                out.push((start, tok));
            }
            _ => {
                return Err(err(
                    start,
                    format!("unexpected `{}`", src.get(start..).and_then(|s| s.chars().next()).unwrap_or('?')),
                ))
            }
        }
    }
    Ok(out)
}

// ---- parser ----

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    end: usize,
}

/// Parses an expression (with its limits).
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_EXPRESSION_BYTES {
        return Err(ParseError {
            column: MAX_EXPRESSION_BYTES + 1,
            message: format!("the expression is {} bytes; the limit is {MAX_EXPRESSION_BYTES}", src.len()),
        });
    }
    let mut p = Parser { toks: lex(src)?, at: 0, end: src.len() };
    let e = p.or(0)?;
    match p.toks.get(p.at) {
        None => Ok(e),
        Some((col, t)) => Err(ParseError { column: col + 1, message: format!("unexpected {}", describe(t)) }),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Int(n) => format!("number {n}"),
        Tok::Addr(a) => format!("address {a}"),
        Tok::List(n) => format!("list ${n}"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBrace => "`{`".into(),
        Tok::RBrace => "`}`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|(_, t)| t)
    }

    fn column(&self) -> usize {
        self.toks.get(self.at).map(|(c, _)| c + 1).unwrap_or(self.end + 1)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { column: self.column(), message: message.into() })
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).map(|(_, t)| t.clone());
        self.at += 1;
        t
    }

    /// A keyword operator, spelled as a word (`and`) or a symbol (`&&`).
    fn eat_op(&mut self, word: &str) -> bool {
        let hit = match self.peek() {
            Some(Tok::Op(o)) => *o == word,
            Some(Tok::Ident(i)) => i == word,
            _ => false,
        };
        if hit {
            self.at += 1;
        }
        hit
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut items = vec![self.xor(depth)?];
        while self.eat_op("or") {
            items.push(self.xor(depth)?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Or(items) })
    }

    fn xor(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut e = self.and(depth)?;
        while self.eat_op("xor") {
            e = Expr::Xor(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut items = vec![self.not(depth)?];
        while self.eat_op("and") {
            items.push(self.not(depth)?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::And(items) })
    }

    fn not(&mut self, depth: usize) -> Result<Expr, ParseError> {
        if depth > MAX_DEPTH {
            return self.fail(format!("nested more than {MAX_DEPTH} levels deep"));
        }
        if self.eat_op("not") {
            return Ok(Expr::Not(Box::new(self.not(depth + 1)?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.at += 1;
            let e = self.or(depth + 1)?;
            if self.next() != Some(Tok::RParen) {
                self.at -= 1;
                return self.fail("expected `)`");
            }
            return Ok(e);
        }
        self.comparison()
    }

    fn field(&mut self) -> Result<Field, ParseError> {
        let col = self.column();
        let Some(Tok::Ident(name)) = self.next() else {
            self.at -= 1;
            return self.fail("expected a field, such as http.request.uri.path or ip.src");
        };
        Ok(match name.as_str() {
            "http.request.method" => Field::Method,
            "http.request.uri" => Field::Uri,
            "http.request.uri.path" => Field::Path,
            "http.request.uri.query" => Field::Query,
            "http.request.version" => Field::Version,
            "http.host" => Field::Host,
            "http.user_agent" => Field::UserAgent,
            "ip.src" => Field::IpSrc,
            "ssl" => Field::Ssl,
            "bot.score" => Field::BotScore,
            "bot.verified" => Field::BotVerified,
            "tls.ja4" => Field::TlsJa4,
            "http.fingerprint" => Field::HttpFingerprint,
            "http2.fingerprint" => Field::Http2Fingerprint,
            "http.request.headers" => {
                let key = match (self.next(), self.next(), self.next()) {
                    (Some(Tok::LBracket), Some(Tok::Str(k)), Some(Tok::RBracket)) => k,
                    _ => {
                        return Err(ParseError {
                            column: col,
                            message: "a header is written http.request.headers[\"name\"]".into(),
                        })
                    }
                };
                if key.is_empty()
                    || key.len() > 128
                    || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(ParseError { column: col, message: format!("{key:?} is not a header name") });
                }
                Field::Header(key.to_ascii_lowercase())
            }
            other => return Err(ParseError { column: col, message: format!("unknown field `{other}`") }),
        })
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let field = self.field()?;
        let kind = field.kind();
        let op_col = self.column();
        let op = match self.peek() {
            Some(Tok::Op(o)) if !matches!(*o, "and" | "or" | "xor" | "not") => o.to_string(),
            Some(Tok::Ident(i))
                if matches!(
                    i.as_str(),
                    "eq" | "ne" | "lt" | "le" | "gt" | "ge" | "contains" | "wildcard" | "matches" | "in"
                ) =>
            {
                i.clone()
            }
            _ if kind == Kind::Bool => return Ok(Expr::Flag(field)),
            _ => return self.fail("expected an operator: eq ne lt le gt ge contains wildcard matches in"),
        };
        self.at += 1;
        let bad = |m: String| Err(ParseError { column: op_col, message: m });
        let cmp = match op.as_str() {
            "eq" => Some(Cmp::Eq),
            "ne" => Some(Cmp::Ne),
            "lt" => Some(Cmp::Lt),
            "le" => Some(Cmp::Le),
            "gt" => Some(Cmp::Gt),
            "ge" => Some(Cmp::Ge),
            _ => None,
        };
        match kind {
            Kind::Bool => {
                bad("a flag (ssl, bot.verified) is true or false on its own: write `ssl` or `not ssl`".into())
            }
            Kind::Text => match (op.as_str(), cmp) {
                (_, Some(c)) => Ok(Expr::Text(field, TextOp::Cmp(c, self.string()?))),
                ("contains", _) => Ok(Expr::Text(field, TextOp::Contains(self.string()?))),
                ("wildcard", _) => {
                    let pattern = self.string()?.to_ascii_lowercase();
                    Ok(Expr::Text(field, TextOp::Wildcard(pattern.split('*').map(str::to_string).collect())))
                }
                ("matches", _) => {
                    let col = self.column();
                    let pattern = self.string()?;
                    let re = regex::RegexBuilder::new(&pattern)
                        .size_limit(MAX_REGEX_BYTES)
                        .build()
                        .map_err(|e| ParseError { column: col, message: format!("bad regex: {e}") })?;
                    Ok(Expr::Text(field, TextOp::Matches(Box::new(re))))
                }
                ("in", _) => {
                    let items = self.list(|p| p.string())?;
                    Ok(Expr::Text(field, TextOp::In(items)))
                }
                (o, _) => bad(format!("`{o}` does not apply to a text field")),
            },
            Kind::Int => match (op.as_str(), cmp) {
                (_, Some(c)) => Ok(Expr::Int(field, c, self.int()?)),
                ("in", _) => Ok(Expr::IntIn(field, self.list(|p| p.int())?)),
                (o, _) => bad(format!("`{o}` does not apply to a number")),
            },
            Kind::Ip => match (op.as_str(), cmp) {
                ("eq", _) | ("ne", _) => {
                    let col = self.column();
                    let a = match self.next() {
                        Some(Tok::Addr(a)) => a.parse::<IpAddr>().map_err(|_| ParseError {
                            column: col,
                            message: format!("`{a}` is not an IP address (a prefix needs `in {{ ... }}`)"),
                        })?,
                        _ => return Err(ParseError { column: col, message: "expected an IP address".into() }),
                    };
                    Ok(Expr::Ip(if op == "eq" { IpOp::Eq(a) } else { IpOp::Ne(a) }))
                }
                ("in", _) => {
                    if let Some(Tok::List(name)) = self.peek().cloned() {
                        self.at += 1;
                        return Ok(Expr::Ip(IpOp::InList(name)));
                    }
                    let col = self.column();
                    let items = self.list(|p| {
                        let col = p.column();
                        match p.next() {
                            Some(Tok::Addr(a)) => Ok(a),
                            _ => Err(ParseError { column: col, message: "expected an IP address or prefix".into() }),
                        }
                    })?;
                    let text = items.join("\n");
                    let set = match crate::artifact::decode(crate::artifact::ArtifactKind::IpList, text.as_bytes()) {
                        Ok(crate::artifact::Artifact::IpList(set)) => set,
                        Ok(_) => IpSet::default(),
                        Err(problems) => {
                            let m = problems.first().map(|p| p.message.clone()).unwrap_or_default();
                            return Err(ParseError { column: col, message: m });
                        }
                    };
                    Ok(Expr::Ip(IpOp::In(std::sync::Arc::new(set))))
                }
                (o, _) => bad(format!("`{o}` does not apply to ip.src (use eq, ne or in)")),
            },
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            _ => {
                self.at -= 1;
                self.fail("expected a string in double quotes")
            }
        }
    }

    fn int(&mut self) -> Result<i64, ParseError> {
        match self.next() {
            Some(Tok::Int(n)) => Ok(n),
            _ => {
                self.at -= 1;
                self.fail("expected a number")
            }
        }
    }

    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Result<T, ParseError>) -> Result<Vec<T>, ParseError> {
        if self.next() != Some(Tok::LBrace) {
            self.at -= 1;
            return self.fail("expected `{` and a list");
        }
        let mut out = Vec::new();
        loop {
            if self.peek() == Some(&Tok::RBrace) {
                self.at += 1;
                return Ok(out);
            }
            if self.peek().is_none() {
                return self.fail("the list is not closed (missing `}`)");
            }
            if out.len() >= MAX_LIST_ITEMS {
                return self.fail(format!("more than {MAX_LIST_ITEMS} items in one list"));
            }
            out.push(item(self)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RequestData {
        let mut r = RequestData::get("shop.example", "/admin/users?a=1", "192.0.2.7".parse().unwrap())
            .header("user-agent", "curl/8.5")
            .header("x-api-key", "k1");
        r.ssl = true;
        r
    }

    fn t(src: &str) -> bool {
        parse(src).unwrap_or_else(|e| panic!("{src}: {e}")).eval(&req())
    }

    #[test]
    fn fields_operators_and_precedence() {
        assert!(t(r#"http.request.uri.path wildcard "/ADMIN/*""#));
        assert!(t(r#"http.request.method in { "PUT" "GET" } and ssl"#));
        assert!(t(r#"http.user_agent contains "curl" && ip.src in { 192.0.2.0/24 }"#));
        assert!(!t(r#"not ip.src in { 10.0.0.0/8 192.0.2.7 }"#));
        assert!(t(r#"ip.src eq 192.0.2.7 and http.request.headers["X-Api-Key"] == "k1""#));
        assert!(t(r#"http.request.uri.path matches "^/admin/[a-z]+$""#));
        // and binds tighter than xor, xor tighter than or.
        assert!(t(r#"ssl or ssl and not ssl"#));
        assert!(!t(r#"ssl xor ssl and ssl"#));
        assert!(t(r#"(ssl xor ssl) or http.host eq "shop.example""#));
        assert!(t(r#"http.request.uri.query eq "a=1" and http.request.version eq "HTTP/1.1""#));
    }

    #[test]
    fn absent_values_compare_false_never_as_zero_or_empty() {
        assert!(!t(r#"bot.score lt 30"#));
        assert!(!t(r#"bot.score eq 0"#));
        assert!(t(r#"not bot.score lt 30"#));
        assert!(!t(r#"http.request.headers["cookie"] eq """#));
        assert!(!t(r#"http.request.headers["cookie"] ne "x""#));
        let mut r = req();
        r.bot_score = Some(12);
        assert!(parse("bot.score lt 30 and bot.score in { 12 13 }").unwrap().eval(&r));
    }

    #[test]
    fn errors_name_the_column() {
        let e = |src: &str| parse(src).unwrap_err().to_string();
        assert_eq!(e(r#"http.request.path eq "/""#), "column 1: unknown field `http.request.path`");
        assert_eq!(e(r#"ssl and ip.src eq "x""#), "column 19: expected an IP address");
        assert_eq!(
            e(r#"http.host eq "a" and"#),
            "column 21: expected a field, such as http.request.uri.path or ip.src"
        );
        assert_eq!(e(r#"(ssl"#), "column 5: expected `)`");
        assert_eq!(e(r#"http.host eq "open"#), "column 14: a string is not closed (missing `\"`)");
        assert_eq!(e(r#"http.host lt 5"#), "column 14: expected a string in double quotes");
        assert_eq!(e(r#"ip.src contains "1""#), "column 8: `contains` does not apply to ip.src (use eq, ne or in)");
        assert!(e(r#"http.host matches "(""#).starts_with("column 19: bad regex"));
        assert!(e(r#"ip.src in { 10.0.0.1/8 }"#).contains("host bits set"));
        let deep = format!("{}ssl{}", "(".repeat(40), ")".repeat(40));
        assert!(e(&deep).contains("nested more than 32 levels"));
        let long = format!("ssl{}", " ".repeat(MAX_EXPRESSION_BYTES));
        assert!(e(&long).contains("the limit is 4096"));
        assert!(e(r#"http.host matches "a{1000}{1000}""#).contains("bad regex"));
    }

    #[test]
    fn ip_lists_by_name_are_resolved_at_compile_time() {
        let mut e = parse("ip.src in $blocked or ip.src in $other").unwrap();
        assert_eq!(e.lists(), vec!["blocked".to_string(), "other".to_string()]);
        assert!(!e.eval(&req()), "unresolved lists match nothing");
        let set = match crate::artifact::decode(crate::artifact::ArtifactKind::IpList, b"192.0.2.0/24\n").unwrap() {
            crate::artifact::Artifact::IpList(s) => std::sync::Arc::new(s),
            _ => unreachable!(),
        };
        let missing = e.resolve(&|n| (n == "blocked").then(|| set.clone()));
        assert_eq!(missing, vec!["other".to_string()]);
        assert!(e.eval(&req()));
    }
}
