//! The Palisade configuration document: schema, documented limits and validation.
//!
//! Configuration is untrusted input (DESIGN.md, principle 1). This crate turns bytes into a
//! [`ValidConfig`] in two named steps, [`parse`] (bytes -> [`Document`]) and [`validate`]
//! (document -> [`ValidConfig`]), and reports *every* problem it finds with its path in the
//! document (`zones[2].origins[0].address`). It performs no I/O and must never depend on the
//! edge, the control plane or any runtime: everyone depends on it, it depends on no one.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod analytics;
pub mod artifact;
pub mod botlearn;
pub mod limits;
pub mod purge;
pub mod rules;
mod schema;
pub mod time;
mod validate;

pub use schema::*;
pub use validate::{
    is_name, parse_characteristic, validate, Characteristic, HashKey, Problem, ValidConfig, ValidRateLimit,
};

use sha2::{Digest, Sha256};

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("document is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("document is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("line {line}, column {column}: {message}")]
    Syntax { line: usize, column: usize, message: String },
    #[error("{} problem(s):\n{}", .0.len(), render_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem as `(path, message)`; a syntax error is one problem at `line:column`.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Invalid(p) => p.clone(),
            ConfigError::Syntax { line, column, message } => {
                vec![Problem { path: format!("line {line}, column {column}"), message: message.clone() }]
            }
            other => vec![Problem { path: "(document)".into(), message: other.to_string() }],
        }
    }
}

/// Problems as indented lines, one per problem: the form logs and the CLI print.
pub fn render_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// Hex SHA-256 of the exact bytes of a document: the content hash that names a config version.
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// bytes -> parsed document. Enforces the size limit before looking at the content.
pub fn parse(bytes: &[u8]) -> Result<Document, ConfigError> {
    if bytes.len() > limits::MAX_DOCUMENT_BYTES {
        return Err(ConfigError::TooLarge { size: bytes.len(), limit: limits::MAX_DOCUMENT_BYTES });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 { offset: e.valid_up_to() })?;
    let syntax = |e: toml::de::Error, path: String| {
        let (line, column) = e.span().map(|s| line_column(text, s.start)).unwrap_or((0, 0));
        let message =
            if path.is_empty() || path == "." { e.message().to_string() } else { format!("{path}: {}", e.message()) };
        ConfigError::Syntax { line, column, message }
    };
    let de = toml::Deserializer::parse(text).map_err(|e| syntax(e, String::new()))?;
    serde_path_to_error::deserialize::<_, Document>(de).map_err(|e| {
        let path = e.path().to_string();
        syntax(e.into_inner(), path)
    })
}

/// bytes -> parsed -> validated, the whole way. `hash` of the result is [`content_hash`] of `bytes`.
pub fn load(bytes: &[u8]) -> Result<ValidConfig, ConfigError> {
    let doc = parse(bytes)?;
    validate(doc, content_hash(bytes)).map_err(ConfigError::Invalid)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
