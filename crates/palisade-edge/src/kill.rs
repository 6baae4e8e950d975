//! Kill switches on this node: set by the control plane's fast path ([`crate::agent`]), read by
//! the data plane with one relaxed load. Each switch only turns its module off; the module's
//! failure policy says what happens instead (no record, no retry, the copying path).

use std::sync::atomic::{AtomicBool, Ordering};

use palisade_config::limits::KILL_SWITCHES;

#[derive(Debug, Clone, Copy)]
pub enum Switch {
    AccessLog = 0,
    Retries = 1,
    Splice = 2,
    IpLists = 3,
    Fault = 4,
    Firewall = 5,
    RateLimits = 6,
    Ddos = 7,
    Cache = 8,
    Bot = 9,
    Analytics = 10,
}

/// The fleet's switches (from the control plane) and this node's own (its admin API): a module
/// is off when either says so.
#[derive(Debug, Default)]
pub struct KillSwitches([AtomicBool; KILL_SWITCHES.len()], [AtomicBool; KILL_SWITCHES.len()]);

impl KillSwitches {
    /// Whether `s` is switched off.
    pub fn off(&self, s: Switch) -> bool {
        let i = s as usize;
        self.0.get(i).is_some_and(|f| f.load(Ordering::Relaxed))
            || self.1.get(i).is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// This node's own switch `name` (admin API); false when no switch has that name.
    pub fn set_local(&self, name: &str, off: bool) -> bool {
        match KILL_SWITCHES.iter().position(|(n, _)| *n == name).and_then(|i| self.1.get(i)) {
            Some(f) => {
                f.store(off, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// (name, off) for every switch this node's admin API has set, in [`KILL_SWITCHES`] order.
    pub fn local_states(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        KILL_SWITCHES
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (*n, self.1.get(i).is_some_and(|f| f.load(Ordering::Relaxed))))
    }

    /// Exactly these switches off, the others on; names this node does not know are returned.
    pub fn set(&self, off: &[String]) -> Vec<String> {
        for (i, (name, _)) in KILL_SWITCHES.iter().enumerate() {
            if let Some(f) = self.0.get(i) {
                f.store(off.iter().any(|o| o == name), Ordering::Relaxed);
            }
        }
        off.iter().filter(|o| !KILL_SWITCHES.iter().any(|(n, _)| n == o)).cloned().collect()
    }

    /// (name, off) for every switch, in [`KILL_SWITCHES`] order.
    pub fn states(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        KILL_SWITCHES
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (*n, self.0.get(i).is_some_and(|f| f.load(Ordering::Relaxed))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_match_the_shared_list() {
        assert_eq!(KILL_SWITCHES.len(), 11);
        assert_eq!(KILL_SWITCHES[Switch::Cache as usize].0, "cache");
        assert_eq!(KILL_SWITCHES[Switch::Bot as usize].0, "bot");
        assert_eq!(KILL_SWITCHES[Switch::Analytics as usize].0, "analytics");
        assert_eq!(KILL_SWITCHES[Switch::Ddos as usize].0, "ddos");
        assert_eq!(KILL_SWITCHES[Switch::AccessLog as usize].0, "access_log");
        assert_eq!(KILL_SWITCHES[Switch::Retries as usize].0, "retries");
        assert_eq!(KILL_SWITCHES[Switch::Splice as usize].0, "splice");
        assert_eq!(KILL_SWITCHES[Switch::IpLists as usize].0, "ip_lists");
        assert_eq!(KILL_SWITCHES[Switch::Fault as usize].0, "fault");
        assert_eq!(KILL_SWITCHES[Switch::Firewall as usize].0, "firewall");
        assert_eq!(KILL_SWITCHES[Switch::RateLimits as usize].0, "rate_limits");
        let k = KillSwitches::default();
        assert_eq!(k.set(&["retries".into(), "warp_drive".into()]), vec!["warp_drive".to_string()]);
        assert!(k.off(Switch::Retries) && !k.off(Switch::AccessLog));
        k.set(&[]);
        assert!(!k.off(Switch::Retries));
        // The node's own switch holds whatever the fleet's say.
        assert!(k.set_local("fault", true) && !k.set_local("warp_drive", true));
        k.set(&[]);
        assert!(k.off(Switch::Fault));
        assert!(k.set_local("fault", false));
        assert!(!k.off(Switch::Fault));
    }
}
