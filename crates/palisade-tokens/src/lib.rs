//! palisade-tokens: bearer tokens, shared by the control plane and the status page (which must not
//! depend on each other). It depends on nothing.
//!
//! Operator tokens: who may change the fleet. Each token has a name, and the name is the author
//! and actor recorded for what it does, so a version's author cannot be claimed by the caller.
//!
//! File format, one per line: `NAME TOKEN` (`#` starts a comment). Tokens are compared in
//! constant time.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

use std::path::Path;

#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
}

/// Names only: a token never reaches a log.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(name, _)| name)).finish()
    }
}

/// Shortest token accepted: 128 bits of hex.
pub const MIN_TOKEN_LEN: usize = 32;

impl Tokens {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `NAME TOKEN`", i + 1));
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {}: token of {name} is {} characters; at least {MIN_TOKEN_LEN}",
                    i + 1,
                    token.len()
                ));
            }
            if entries.iter().any(|(n, _)| n == name) {
                return Err(format!("line {}: {name} appears twice", i + 1));
            }
            entries.push((name.to_string(), token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Self { entries })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A new random token for `name`, from the kernel's random source.
    pub fn generate(name: &str) -> Result<(Self, String), String> {
        let token = random_token()?;
        Ok((Self { entries: vec![(name.to_string(), token.as_bytes().to_vec())] }, token))
    }

    /// Tokens from (name, token) pairs, checked as a file's would be.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, String> {
        Self::parse(&pairs.iter().map(|(n, t)| format!("{n} {t}\n")).collect::<String>())
    }

    /// The name of the holder of `presented`, checking every token in constant time.
    pub fn who(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.entries {
            if constant_time_eq(token, presented) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// 192 random bits as hex, from the kernel's random source.
pub fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal length and equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let t = Tokens::parse(
            "# operators\nalice 0123456789abcdef0123456789abcdef\nbob fedcba9876543210fedcba9876543210 # on call\n",
        )
        .unwrap();
        assert_eq!(t.who(b"0123456789abcdef0123456789abcdef"), Some("alice"));
        assert_eq!(t.who(b"fedcba9876543210fedcba9876543210"), Some("bob"));
        assert_eq!(t.who(b"0123456789abcdef0123456789abcdee"), None);
        assert_eq!(t.who(b""), None);
        assert!(Tokens::parse("alice short").unwrap_err().contains("at least 32"));
        assert!(Tokens::parse("alice 0123456789abcdef0123456789abcdef\nalice 0123456789abcdef0123456789abcdeX")
            .unwrap_err()
            .contains("twice"));
        assert!(Tokens::parse("# nothing\n").is_err());
        let (g, token) = Tokens::generate("operator").unwrap();
        assert_eq!(token.len(), 48);
        assert_eq!(g.who(token.as_bytes()), Some("operator"));
    }
}
