//! Structured diff of two config documents: what changed, by zone and field (and of two versions
//! of an artifact: which lines went and came).
//!
//! Paths read like the validator's (`zones["shop"].origins[0].address`), except that entries of a
//! list whose items all have a `name` are matched by name, so inserting a zone does not show as a
//! change to every zone after it.

use serde::Serialize;
use toml::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The old and new values as TOML text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

/// Changes from `old` to `new`: tables in key order, lists in the old order then what is new.
pub fn diff(old: &str, new: &str) -> Result<Vec<Change>, toml::de::Error> {
    let a: Value = toml::from_str(old)?;
    let b: Value = toml::from_str(new)?;
    let mut out = Vec::new();
    walk(String::new(), Some(&a), Some(&b), &mut out);
    Ok(out)
}

/// Most line changes an artifact diff lists.
pub const MAX_LINE_CHANGES: usize = 1000;

/// Changes between two versions of an artifact, as sets of lines (an IP list's entries, say):
/// `removed` lines of `old` not in `new`, then `added` lines of `new` not in `old`, each once,
/// comments and blank lines left out; at most [`MAX_LINE_CHANGES`]. `path` is `line N` in the
/// version the line is in.
pub fn lines(old: &str, new: &str) -> Vec<Change> {
    use std::collections::HashSet;
    let entries = |text: &str| -> Vec<(usize, String)> {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim().to_string()))
            .filter(|(_, l)| !l.is_empty())
            .collect()
    };
    let (a, b) = (entries(old), entries(new));
    let in_a: HashSet<&str> = a.iter().map(|(_, l)| l.as_str()).collect();
    let in_b: HashSet<&str> = b.iter().map(|(_, l)| l.as_str()).collect();
    let mut seen = HashSet::new();
    let removed = a.iter().filter(|(_, l)| !in_b.contains(l.as_str())).map(|(n, l)| (n, l, "removed"));
    let added = b.iter().filter(|(_, l)| !in_a.contains(l.as_str())).map(|(n, l)| (n, l, "added"));
    removed
        .chain(added)
        .filter(|(_, l, c)| seen.insert((l.as_str(), *c)))
        .take(MAX_LINE_CHANGES)
        .map(|(n, l, change)| {
            let text = Some(l.clone());
            let (old, new) = if change == "removed" { (text, None) } else { (None, text) };
            Change { path: format!("line {n}"), change, old, new }
        })
        .collect()
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn named(items: &[Value]) -> Option<Vec<(&str, &Value)>> {
    items.iter().map(|v| v.get("name").and_then(Value::as_str).map(|n| (n, v))).collect()
}

fn find_named<'a>(list: &[(&str, &'a Value)], name: &str) -> Option<&'a Value> {
    list.iter().find(|(m, _)| *m == name).map(|(_, v)| *v)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (None, None) => {}
        (Some(a), None) => out.push(Change { path, change: "removed", old: Some(render(a)), new: None }),
        (None, Some(b)) => out.push(Change { path, change: "added", old: None, new: Some(render(b)) }),
        (Some(Value::Table(ta)), Some(Value::Table(tb))) => {
            let mut keys: Vec<&String> = ta.keys().collect();
            keys.extend(tb.keys().filter(|k| !ta.contains_key(*k)));
            for k in keys {
                walk(join(&path, k), ta.get(k), tb.get(k), out);
            }
        }
        (Some(Value::Array(xa)), Some(Value::Array(xb))) => match (named(xa), named(xb)) {
            (Some(na), Some(nb)) => {
                let mut names: Vec<&str> = na.iter().map(|(n, _)| *n).collect();
                names.extend(nb.iter().map(|(n, _)| *n).filter(|n| !na.iter().any(|(m, _)| m == n)));
                for n in names {
                    walk(format!("{path}[{n:?}]"), find_named(&na, n), find_named(&nb, n), out);
                }
            }
            _ => {
                for i in 0..xa.len().max(xb.len()) {
                    walk(format!("{path}[{i}]"), xa.get(i), xb.get(i), out);
                }
            }
        },
        (Some(a), Some(b)) => {
            if a != b {
                out.push(Change { path, change: "changed", old: Some(render(a)), new: Some(render(b)) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_match_by_name_and_fields_by_path() {
        let old = r#"
[listen]
http = "127.0.0.1:8080"
[[zones]]
name = "shop"
hostnames = ["shop.example"]
origins = [{ address = "10.0.0.1:80" }]
[[zones]]
name = "blog"
hostnames = ["blog.example"]
origins = [{ address = "10.0.0.2:80" }]
"#;
        let new = r#"
[listen]
http = "127.0.0.1:8080"
[[zones]]
name = "api"
hostnames = ["api.example"]
origins = [{ address = "10.0.0.3:80" }]
[[zones]]
name = "shop"
hostnames = ["shop.example"]
origins = [{ address = "10.0.0.9:80" }]
balance = "least_connections"
"#;
        let changes = diff(old, new).unwrap();
        let paths: Vec<(&str, &str)> = changes.iter().map(|c| (c.path.as_str(), c.change)).collect();
        assert_eq!(
            paths,
            vec![
                (r#"zones["shop"].origins[0].address"#, "changed"),
                (r#"zones["shop"].balance"#, "added"),
                (r#"zones["blog"]"#, "removed"),
                (r#"zones["api"]"#, "added"),
            ]
        );
        assert_eq!(changes[0].old.as_deref(), Some("\"10.0.0.1:80\""));
        assert_eq!(changes[0].new.as_deref(), Some("\"10.0.0.9:80\""));
        assert!(diff(old, old).unwrap().is_empty());
    }
}
