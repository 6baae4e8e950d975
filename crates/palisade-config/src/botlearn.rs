//! What nodes learn about bots from their traffic, and the feature file the control plane
//! generates from it (as the 2025 outage's pipeline generated its file from a database query).
//!
//! A node labels the requests it is sure about: a client holding a clearance (it passed a
//! challenge) is a person; a user agent with an automation signature is a script. For each it
//! counts which header names were present. The control plane sums the nodes' counts and gives
//! each well-supported header a weight, the log-likelihood ratio of its presence among people
//! and among scripts: `header_present:NAME` features that replace the learned ones of the file
//! the fleet runs. The generated file then goes through the same checks, approval gate and
//! staged rollout as a person's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artifact::{Feature, FeatureFile};

/// Header names a node counts (the first ones it sees; the rest are not counted).
pub const MAX_LEARNED_HEADERS: usize = 64;
pub const MAX_HEADER_NAME_LEN: usize = 64;
/// Labelled requests of each kind (summed over nodes) below which nothing is generated.
pub const MIN_LABELLED: u64 = 50;
/// Labelled requests carrying a header below which it gets no feature.
pub const MIN_SUPPORT: u64 = 20;
/// Learned features in a generated file at most (the strongest).
pub const MAX_LEARNED_FEATURES: usize = 50;
/// Weaker learned weights are left out (noise).
pub const MIN_LEARNED_WEIGHT: f64 = 0.1;
/// A learned weight stays within this (far inside the file format's limit).
pub const MAX_LEARNED_WEIGHT: f64 = 8.0;
const PREFIX: &str = "header_present:";

/// Counts since a node started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Learning {
    /// Requests from clients holding a clearance: people.
    pub human: u64,
    /// Requests with an automation signature: scripts.
    pub bot: u64,
    /// Per header name (lowercase): [requests of people, requests of scripts] carrying it.
    pub headers: BTreeMap<String, [u64; 2]>,
}

impl Learning {
    /// A node's report, as untrusted input.
    pub fn check(&self) -> Result<(), String> {
        if self.headers.len() > MAX_LEARNED_HEADERS {
            return Err(format!("bot.headers: {} names; at most {MAX_LEARNED_HEADERS}", self.headers.len()));
        }
        for (name, [h, b]) in &self.headers {
            let token = name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
            if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN || !token {
                return Err(format!("bot.headers: `{}` is not a lowercase header name", name.escape_debug()));
            }
            if *h > self.human || *b > self.bot {
                return Err(format!("bot.headers.{name}: more than the requests counted"));
            }
        }
        Ok(())
    }

    /// Counts one labelled request with these header names (lowercase).
    pub fn count<'a>(&mut self, human: bool, names: impl Iterator<Item = &'a str>) {
        self.count_request(human);
        for name in names {
            self.count_name(human, name);
        }
    }

    pub fn count_request(&mut self, human: bool) {
        if human {
            self.human += 1;
        } else {
            self.bot += 1;
        }
    }

    /// One header name (lowercase) of a request counted by [`Learning::count_request`].
    pub fn count_name(&mut self, human: bool, name: &str) {
        let i = usize::from(!human);
        if let Some(c) = self.headers.get_mut(name) {
            if let Some(n) = c.get_mut(i) {
                *n += 1;
            }
        } else if self.headers.len() < MAX_LEARNED_HEADERS
            && !name.is_empty()
            && name.len() <= MAX_HEADER_NAME_LEN
            && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        {
            let mut c = [0, 0];
            if let Some(n) = c.get_mut(i) {
                *n = 1;
            }
            self.headers.insert(name.to_string(), c);
        }
    }

    /// Adds another node's counts.
    pub fn add(&mut self, other: &Learning) {
        self.human += other.human;
        self.bot += other.bot;
        for (name, [h, b]) in &other.headers {
            let [ch, cb] = self.headers.entry(name.clone()).or_insert([0, 0]);
            *ch += h;
            *cb += b;
        }
    }
}

/// A new feature file: `base` (the file the fleet runs) with its learned features
/// (`header_present:*`) replaced by what `learned` supports. Refused with the reason when there
/// is too little labelled traffic.
pub fn generate(base: &FeatureFile, learned: &Learning, model_version: &str) -> Result<FeatureFile, String> {
    if learned.human < MIN_LABELLED || learned.bot < MIN_LABELLED {
        return Err(format!(
            "not enough labelled traffic: {} requests of people and {} of scripts; {MIN_LABELLED} of each are needed",
            learned.human, learned.bot
        ));
    }
    let (people, scripts) = ((learned.human + 2) as f64, (learned.bot + 2) as f64);
    let mut weights: Vec<(&String, f64)> = learned
        .headers
        .iter()
        .filter(|(_, [h, b])| h + b >= MIN_SUPPORT)
        .map(|(name, [h, b])| {
            let w = ((*h as f64 + 1.0) / people).ln() - ((*b as f64 + 1.0) / scripts).ln();
            (name, (w.clamp(-MAX_LEARNED_WEIGHT, MAX_LEARNED_WEIGHT) * 100.0).round() / 100.0)
        })
        // A header as common among people as among scripts tells nothing.
        .filter(|(_, w)| w.abs() >= MIN_LEARNED_WEIGHT)
        .collect();
    weights.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(b.0)));
    weights.truncate(MAX_LEARNED_FEATURES);
    let mut features: Vec<Feature> =
        base.features.iter().filter(|f| !f.extractor.starts_with(PREFIX)).cloned().collect();
    for (name, weight) in weights {
        let feature = format!("learned-{name}");
        if features.iter().any(|f| f.name == feature) {
            continue;
        }
        features.push(Feature { name: feature, extractor: format!("{PREFIX}{name}"), weight });
    }
    Ok(FeatureFile { model_version: model_version.to_string(), bias: base.bias, features })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> FeatureFile {
        FeatureFile {
            model_version: "m1".into(),
            bias: -1.0,
            features: vec![
                Feature { name: "lang".into(), extractor: "accept_language".into(), weight: 2.0 },
                Feature { name: "old".into(), extractor: "header_present:x-old".into(), weight: 1.0 },
            ],
        }
    }

    #[test]
    fn headers_of_people_weigh_up_and_headers_of_scripts_down() {
        let mut l = Learning::default();
        for _ in 0..100 {
            l.count(true, ["accept-language", "x-person", "accept"].into_iter());
            l.count(false, ["x-script", "accept"].into_iter());
        }
        l.count(false, ["rare"].into_iter());
        l.check().unwrap();
        let f = generate(&base(), &l, "gen-1").unwrap();
        let w = |n: &str| f.features.iter().find(|x| x.extractor == format!("header_present:{n}")).map(|x| x.weight);
        assert!(w("x-person").unwrap() > 3.0 && w("x-script").unwrap() < -3.0, "{f:?}");
        assert_eq!(w("accept"), None, "as common among both: no feature");
        assert_eq!(w("rare"), None, "too little support");
        assert_eq!(w("x-old"), None, "learned features are replaced");
        assert!(f.features.iter().any(|x| x.extractor == "accept_language"), "the base's own features stay");
        // The generated file passes the same decoder as any other.
        let bytes = serde_json::to_vec(&f).unwrap();
        crate::artifact::decode(crate::artifact::ArtifactKind::FeatureFile, &bytes).unwrap();
    }

    #[test]
    fn too_little_traffic_or_bad_reports_are_refused() {
        let mut l = Learning::default();
        l.count(true, std::iter::empty());
        assert!(generate(&base(), &l, "g").unwrap_err().contains("not enough labelled traffic"));
        let mut bad = Learning { human: 1, bot: 0, headers: BTreeMap::new() };
        bad.headers.insert("X-Upper".into(), [1, 0]);
        assert!(bad.check().is_err());
        bad.headers.clear();
        bad.headers.insert("x".into(), [5, 0]);
        assert!(bad.check().unwrap_err().contains("more than the requests"));
        let mut many = Learning::default();
        for i in 0..200 {
            many.count(true, [format!("h{i}").as_str()].into_iter());
        }
        assert_eq!(many.headers.len(), MAX_LEARNED_HEADERS, "a node counts a bounded set of names");
    }
}
