//! From probe results to component states, and from state changes to incidents. Pure logic: no
//! I/O and no clock (times come in as arguments), so every rule here is tested directly.
//!
//! - A **target** is one zone probed through one city. Its state changes only after
//!   `fail_after` consecutive worse results (one failed probe is not an incident) or
//!   `recover_after` consecutive better ones.
//! - A **component** is a zone (its targets in every city) or a city (every zone through it):
//!   all targets up is operational; any degraded is degraded performance; some down is partial
//!   outage; all down is major outage. A component in a running maintenance window is under
//!   maintenance, and opens no incident.
//! - **Automatic incidents**: one is opened when a component leaves operational, updated as
//!   components change, and resolved when every one is operational again.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::config::StatusConfig;
use crate::probe::{Outcome, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    Operational,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
    UnderMaintenance,
}

impl ComponentStatus {
    pub const ALL: [ComponentStatus; 5] =
        [Self::Operational, Self::DegradedPerformance, Self::PartialOutage, Self::MajorOutage, Self::UnderMaintenance];

    /// The name in the JSON API (Statuspage's).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::DegradedPerformance => "degraded_performance",
            Self::PartialOutage => "partial_outage",
            Self::MajorOutage => "major_outage",
            Self::UnderMaintenance => "under_maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// In words, for people.
    pub fn words(self) -> &'static str {
        match self {
            Self::Operational => "Operational",
            Self::DegradedPerformance => "Degraded performance",
            Self::PartialOutage => "Partial outage",
            Self::MajorOutage => "Major outage",
            Self::UnderMaintenance => "Under maintenance",
        }
    }

    /// An incident's impact when this is its worst component.
    pub fn impact(self) -> &'static str {
        match self {
            Self::Operational => "none",
            Self::DegradedPerformance => "minor",
            Self::PartialOutage => "major",
            Self::MajorOutage => "critical",
            Self::UnderMaintenance => "maintenance",
        }
    }

    /// How bad, for "the worst of": maintenance is not an outage.
    fn severity(self) -> u8 {
        match self {
            Self::Operational | Self::UnderMaintenance => 0,
            Self::DegradedPerformance => 1,
            Self::PartialOutage => 2,
            Self::MajorOutage => 3,
        }
    }
}

/// The page's overall indicator (Statuspage's `status.indicator` and description).
pub fn overall(components: &[Component]) -> (&'static str, &'static str) {
    let worst = components.iter().map(|c| c.status).max_by_key(|s| s.severity());
    match worst {
        Some(ComponentStatus::MajorOutage) => ("critical", "Major outage"),
        Some(ComponentStatus::PartialOutage) => ("major", "Partial outage"),
        Some(ComponentStatus::DegradedPerformance) => ("minor", "Degraded performance"),
        _ if components.iter().any(|c| c.status == ComponentStatus::UnderMaintenance) => {
            ("maintenance", "Service under maintenance")
        }
        _ => ("none", "All systems operational"),
    }
}

/// One zone through one city.
#[derive(Debug, Clone)]
pub struct Target {
    pub zone: String,
    pub city: String,
    /// Where they are in the config (the prober's round reads them there).
    pub zone_index: usize,
    pub city_index: usize,
    /// The judged state (changes only after a streak).
    pub health: Verdict,
    streak_of: Verdict,
    streak: u32,
    pub last: Option<Outcome>,
}

impl Target {
    pub fn key(&self) -> String {
        target_key(&self.zone, &self.city)
    }
}

pub fn target_key(zone: &str, city: &str) -> String {
    format!("{zone}@{city}")
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// `zone:NAME` or `city:NAME`.
    pub id: String,
    pub name: String,
    /// `Sites` or `Locations`.
    pub group: &'static str,
    pub status: ComponentStatus,
    /// Unix seconds of the last change of `status`.
    pub since: u64,
    /// Indexes of its targets.
    #[serde(skip)]
    pub targets: Vec<usize>,
}

pub const GROUP_SITES: &str = "Sites";
pub const GROUP_LOCATIONS: &str = "Locations";

/// A component's change in one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Transition {
    pub code: String,
    pub name: String,
    pub old_status: ComponentStatus,
    pub new_status: ComponentStatus,
}

pub struct Tracker {
    pub targets: Vec<Target>,
    pub components: Vec<Component>,
    fail_after: u32,
    recover_after: u32,
}

impl Tracker {
    /// Targets and components of `config`, with the states saved before a restart (a restart
    /// neither forgets an outage nor opens its incident again).
    pub fn new(
        config: &StatusConfig,
        saved_targets: &HashMap<String, Verdict>,
        saved_components: &HashMap<String, (ComponentStatus, u64)>,
        now: u64,
    ) -> Self {
        let mut targets = Vec::new();
        for (zone_index, zone) in config.zones.iter().enumerate() {
            for (city_index, city) in config.cities.iter().enumerate() {
                let health = saved_targets.get(&target_key(&zone.name, &city.name)).copied().unwrap_or(Verdict::Ok);
                targets.push(Target {
                    zone: zone.name.clone(),
                    city: city.name.clone(),
                    zone_index,
                    city_index,
                    health,
                    streak_of: health,
                    streak: 0,
                    last: None,
                });
            }
        }
        let mut components = Vec::new();
        let mut add = |id: String, name: &str, group: &'static str, of: Vec<usize>| {
            let (status, since) = saved_components.get(&id).copied().unwrap_or((ComponentStatus::Operational, now));
            components.push(Component { id, name: name.to_string(), group, status, since, targets: of });
        };
        for zone in &config.zones {
            let of = targets.iter().enumerate().filter(|(_, t)| t.zone == zone.name).map(|(i, _)| i).collect();
            add(format!("zone:{}", zone.name), &zone.name, GROUP_SITES, of);
        }
        for city in &config.cities {
            let of = targets.iter().enumerate().filter(|(_, t)| t.city == city.name).map(|(i, _)| i).collect();
            add(format!("city:{}", city.name), &city.name, GROUP_LOCATIONS, of);
        }
        Self { targets, components, fail_after: config.fail_after, recover_after: config.recover_after }
    }

    /// One probe's result for target `i`.
    pub fn observe(&mut self, i: usize, outcome: Outcome) {
        let (fail_after, recover_after) = (self.fail_after, self.recover_after);
        let Some(t) = self.targets.get_mut(i) else { return };
        let verdict = outcome.verdict;
        if verdict == t.streak_of {
            t.streak = t.streak.saturating_add(1);
        } else {
            (t.streak_of, t.streak) = (verdict, 1);
        }
        let needed = if verdict > t.health { fail_after } else { recover_after };
        if verdict != t.health && t.streak >= needed {
            t.health = verdict;
        }
        t.last = Some(outcome);
    }

    /// Derives every component's state; returns what changed. `maintenance`: component IDs in
    /// a running maintenance window.
    pub fn derive(&mut self, now: u64, maintenance: &HashSet<String>) -> Vec<Transition> {
        let mut changes = Vec::new();
        for c in &mut self.components {
            let healths: Vec<Verdict> =
                c.targets.iter().filter_map(|&i| self.targets.get(i)).map(|t| t.health).collect();
            let down = healths.iter().filter(|h| **h == Verdict::Failed).count();
            let status = if maintenance.contains(&c.id) {
                ComponentStatus::UnderMaintenance
            } else if down > 0 && down == healths.len() {
                ComponentStatus::MajorOutage
            } else if down > 0 {
                ComponentStatus::PartialOutage
            } else if healths.contains(&Verdict::Degraded) {
                ComponentStatus::DegradedPerformance
            } else {
                ComponentStatus::Operational
            };
            if status != c.status {
                changes.push(Transition {
                    code: c.id.clone(),
                    name: c.name.clone(),
                    old_status: c.status,
                    new_status: status,
                });
                (c.status, c.since) = (status, now);
            }
        }
        changes
    }

    /// Why a component is in its state, in words: its failing targets and what they saw.
    pub fn explain(&self, c: &Component) -> String {
        let mut parts = Vec::new();
        for t in c.targets.iter().filter_map(|&i| self.targets.get(i)) {
            if t.health == Verdict::Ok {
                continue;
            }
            let what = t.last.as_ref().map_or("", |o| o.detail.as_str());
            parts.push(format!("{} in {}: {what}", t.zone, t.city));
        }
        parts.join("; ")
    }
}

/// What to do to the open automatic incident after a round.
#[derive(Debug, PartialEq, Eq)]
pub enum IncidentPlan {
    Nothing,
    Open { name: String, impact: &'static str, body: String, components: Vec<String> },
    Update { impact: &'static str, body: String, components: Vec<String> },
    Resolve { body: String },
}

/// Decides from the components (after [`Tracker::derive`]) and this round's transitions.
/// `open`: whether an automatic incident is open.
pub fn plan_incident(tracker: &Tracker, transitions: &[Transition], open: bool) -> IncidentPlan {
    let affected: Vec<&Component> = tracker
        .components
        .iter()
        .filter(|c| !matches!(c.status, ComponentStatus::Operational | ComponentStatus::UnderMaintenance))
        .collect();
    let worst = affected.iter().map(|c| c.status).max_by_key(|s| s.severity());
    let ids: Vec<String> = affected.iter().map(|c| c.id.clone()).collect();
    let describe = |changes: &[&Transition]| -> String {
        changes
            .iter()
            .map(|t| {
                let why = tracker
                    .components
                    .iter()
                    .find(|c| c.id == t.code)
                    .map(|c| tracker.explain(c))
                    .filter(|w| !w.is_empty())
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                format!("{}: {}{why}.", t.name, t.new_status.words().to_lowercase())
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    match (open, worst) {
        (false, None) => IncidentPlan::Nothing,
        (true, None) => {
            IncidentPlan::Resolve { body: "Every component is operational again; this incident is resolved.".into() }
        }
        (false, Some(worst)) => {
            let names: Vec<&str> = affected.iter().map(|c| c.name.as_str()).collect();
            let relevant: Vec<&Transition> = transitions.iter().filter(|t| ids.contains(&t.code)).collect();
            IncidentPlan::Open {
                name: format!("{}: {}", worst.words(), names.join(", ")),
                impact: worst.impact(),
                body: format!("Detected by the prober. {}", describe(&relevant)),
                components: ids,
            }
        }
        (true, Some(worst)) => {
            let relevant: Vec<&Transition> =
                transitions.iter().filter(|t| t.new_status != ComponentStatus::UnderMaintenance).collect();
            if relevant.is_empty() {
                IncidentPlan::Nothing
            } else {
                IncidentPlan::Update { impact: worst.impact(), body: describe(&relevant), components: ids }
            }
        }
    }
}

/// Counts of one component's rounds on one day, for the uptime bars.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Day {
    pub samples: u64,
    pub degraded: u64,
    pub partial: u64,
    pub major: u64,
    pub maintenance: u64,
}

impl Day {
    pub fn add(&mut self, s: ComponentStatus) {
        self.samples += 1;
        match s {
            ComponentStatus::Operational => {}
            ComponentStatus::DegradedPerformance => self.degraded += 1,
            ComponentStatus::PartialOutage => self.partial += 1,
            ComponentStatus::MajorOutage => self.major += 1,
            ComponentStatus::UnderMaintenance => self.maintenance += 1,
        }
    }

    /// Share of the day it was up: a major outage counts whole, a partial one half;
    /// maintenance is not downtime. None: no data that day.
    pub fn uptime(&self) -> Option<f64> {
        (self.samples > 0).then(|| 1.0 - (self.major as f64 + self.partial as f64 / 2.0) / self.samples as f64)
    }

    /// The worst state seen that day (the bar's colour).
    pub fn worst(&self) -> Option<ComponentStatus> {
        if self.samples == 0 {
            None
        } else if self.major > 0 {
            Some(ComponentStatus::MajorOutage)
        } else if self.partial > 0 {
            Some(ComponentStatus::PartialOutage)
        } else if self.degraded > 0 {
            Some(ComponentStatus::DegradedPerformance)
        } else if self.maintenance > 0 {
            Some(ComponentStatus::UnderMaintenance)
        } else {
            Some(ComponentStatus::Operational)
        }
    }
}

/// Uptime over many days (weighted by samples).
pub fn uptime(days: &BTreeMap<String, Day>) -> Option<f64> {
    let samples: u64 = days.values().map(|d| d.samples).sum();
    let down: f64 = days.values().map(|d| d.major as f64 + d.partial as f64 / 2.0).sum();
    (samples > 0).then(|| 1.0 - down / samples as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StatusConfig {
        crate::config::parse(
            "fail_after = 3\nrecover_after = 2\n[[cities]]\nname = \"ams\"\naddress = \"127.0.0.1:1\"\n[[cities]]\nname = \"sin\"\naddress = \"127.0.0.1:2\"\n[[zones]]\nname = \"shop\"\nhost = \"shop.example\"\n",
        )
        .unwrap()
    }

    fn outcome(verdict: Verdict) -> Outcome {
        Outcome { verdict, status: None, latency_ms: 1, cert_expires: None, detail: "connection refused".into() }
    }

    fn status(t: &Tracker, id: &str) -> ComponentStatus {
        t.components.iter().find(|c| c.id == id).unwrap().status
    }

    #[test]
    fn one_failed_probe_is_not_an_incident() {
        let mut t = Tracker::new(&config(), &HashMap::new(), &HashMap::new(), 0);
        let none = HashSet::new();
        for round in 0..2 {
            t.observe(0, outcome(Verdict::Failed));
            t.observe(1, outcome(Verdict::Ok));
            assert!(t.derive(round, &none).is_empty());
        }
        assert_eq!(plan_incident(&t, &[], false), IncidentPlan::Nothing);
        // The third failure in a row: ams is down (its only target), shop is partly down.
        t.observe(0, outcome(Verdict::Failed));
        let changes = t.derive(3, &none);
        assert_eq!(changes.len(), 2);
        assert_eq!(status(&t, "city:ams"), ComponentStatus::MajorOutage);
        assert_eq!(status(&t, "zone:shop"), ComponentStatus::PartialOutage);
        assert_eq!(status(&t, "city:sin"), ComponentStatus::Operational);
        let IncidentPlan::Open { name, impact, body, components } = plan_incident(&t, &changes, false) else {
            panic!("an incident opens")
        };
        assert_eq!(name, "Major outage: shop, ams");
        assert_eq!(impact, "critical");
        assert!(body.contains("ams: major outage (shop in ams: connection refused)."), "{body}");
        assert_eq!(components, vec!["zone:shop", "city:ams"]);
        // One good probe does not recover it; two do, and the incident resolves.
        t.observe(0, outcome(Verdict::Ok));
        assert!(t.derive(4, &none).is_empty());
        t.observe(0, outcome(Verdict::Ok));
        assert_eq!(t.derive(5, &none).len(), 2);
        assert!(matches!(plan_incident(&t, &[], true), IncidentPlan::Resolve { .. }));
    }

    #[test]
    fn maintenance_opens_no_incident_and_states_survive_a_restart() {
        let mut t = Tracker::new(&config(), &HashMap::new(), &HashMap::new(), 0);
        let maint: HashSet<String> = ["city:ams".to_string()].into();
        for _ in 0..3 {
            t.observe(0, outcome(Verdict::Failed));
        }
        let changes = t.derive(1, &maint);
        assert_eq!(status(&t, "city:ams"), ComponentStatus::UnderMaintenance);
        // The zone is still partly down: that is an incident, the maintenance is not.
        let IncidentPlan::Open { components, .. } = plan_incident(&t, &changes, false) else { panic!() };
        assert_eq!(components, vec!["zone:shop"]);
        let saved_targets: HashMap<String, Verdict> = t.targets.iter().map(|x| (x.key(), x.health)).collect();
        let saved: HashMap<String, (ComponentStatus, u64)> =
            t.components.iter().map(|c| (c.id.clone(), (c.status, c.since))).collect();
        let mut again = Tracker::new(&config(), &saved_targets, &saved, 9);
        assert!(again.derive(9, &maint).is_empty(), "a restart changes nothing");
        assert_eq!(status(&again, "zone:shop"), ComponentStatus::PartialOutage);
    }

    #[test]
    fn uptime_counts_partial_outages_half() {
        let mut d = Day::default();
        for s in [
            ComponentStatus::Operational,
            ComponentStatus::PartialOutage,
            ComponentStatus::MajorOutage,
            ComponentStatus::UnderMaintenance,
        ] {
            d.add(s);
        }
        assert_eq!(d.uptime(), Some(1.0 - 1.5 / 4.0));
        assert_eq!(d.worst(), Some(ComponentStatus::MajorOutage));
        assert_eq!(Day::default().uptime(), None);
    }
}
