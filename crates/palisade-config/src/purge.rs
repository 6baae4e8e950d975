//! A cache purge request: the body of `POST /cache/purge` on a node and of `POST /v1/cache/purge`
//! on the control plane (which passes it to every node), in the shape edge-provider purge APIs
//! use. Untrusted input: sizes are bounded and checked before anything is purged.

use serde::{Deserialize, Serialize};

/// Most URLs, prefixes, hosts and tags in one purge request.
pub const MAX_PURGE_ITEMS: usize = 1000;
/// Longest URL, prefix, host or tag.
pub const MAX_PURGE_ITEM_BYTES: usize = 4096;

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurgeRequest {
    /// Only this zone's objects (tags and `purge_everything`); absent: every zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Exact URLs (`https://host/path?query`; the scheme is optional and ignored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// URL prefixes (`host/path/`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Every object of these hosts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Objects whose `Cache-Tag` response header named one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub purge_everything: bool,
}

impl PurgeRequest {
    /// What is wrong with the request, if anything.
    pub fn check(&self) -> Result<(), String> {
        let lists =
            [("files", &self.files), ("prefixes", &self.prefixes), ("hosts", &self.hosts), ("tags", &self.tags)];
        let items: usize = lists.iter().map(|(_, l)| l.len()).sum();
        if items > MAX_PURGE_ITEMS {
            return Err(format!("{items} items to purge; the limit is {MAX_PURGE_ITEMS} per request"));
        }
        if items == 0 && !self.purge_everything {
            return Err("nothing to purge: give files, prefixes, hosts, tags or purge_everything".into());
        }
        if items > 0 && self.purge_everything {
            return Err("purge_everything goes alone".into());
        }
        for (field, list) in lists {
            if let Some((i, _)) = list.iter().enumerate().find(|(_, s)| s.is_empty() || s.len() > MAX_PURGE_ITEM_BYTES)
            {
                return Err(format!("{field}[{i}]: 1..={MAX_PURGE_ITEM_BYTES} bytes"));
            }
        }
        if let Some(z) = &self.zone {
            if !crate::is_name(z) {
                return Err("zone: not a zone name".into());
            }
        }
        Ok(())
    }

    /// One line for logs and the audit record.
    pub fn summary(&self) -> String {
        if self.purge_everything {
            return match &self.zone {
                Some(z) => format!("everything in zone {z}"),
                None => "everything".into(),
            };
        }
        let mut parts = Vec::new();
        for (what, list) in
            [("url", &self.files), ("prefix", &self.prefixes), ("host", &self.hosts), ("tag", &self.tags)]
        {
            match list.len() {
                0 => {}
                1 => parts.push(format!("{what} {}", list.first().map(String::as_str).unwrap_or_default())),
                n => parts.push(format!("{n} {what}s")),
            }
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_requests_are_checked() {
        let ok = PurgeRequest { tags: vec!["a".into()], ..Default::default() };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.summary(), "tag a");
        assert!(PurgeRequest::default().check().unwrap_err().contains("nothing to purge"));
        let both = PurgeRequest { purge_everything: true, tags: vec!["a".into()], ..Default::default() };
        assert!(both.check().unwrap_err().contains("alone"));
        let many = PurgeRequest { files: vec!["x".into(); MAX_PURGE_ITEMS + 1], ..Default::default() };
        assert!(many.check().unwrap_err().contains("1001 items"));
        let empty = PurgeRequest { hosts: vec![String::new()], ..Default::default() };
        assert_eq!(empty.check().unwrap_err(), "hosts[0]: 1..=4096 bytes");
        let zone = PurgeRequest { purge_everything: true, zone: Some("shop".into()), ..Default::default() };
        assert_eq!((zone.check(), zone.summary().as_str()), (Ok(()), "everything in zone shop"));
    }
}
