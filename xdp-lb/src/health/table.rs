//! The agent's health table: whether each backend passes its check, as the check's
//! transitions said. The agent owns it and writes it from two things only — the configuration
//! (backends enter in their check's start state and leave with the config) and the
//! [`HealthEvent`]s of the checks — and the desired state reads it. That is the one route by
//! which a health result reaches the maps.

use std::collections::BTreeMap;

use super::HealthEvent;
use crate::config::{BackendKey, CheckType, Config};

/// A backend's health as the agent knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub up: bool,
    /// Transitions since the backend's check started.
    pub transitions: u64,
    /// Unix seconds of the last transition (or of the check's start).
    pub since_unix: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HealthTable(BTreeMap<BackendKey, Verdict>);

impl HealthTable {
    /// In step with `config`: backends no longer configured leave; new ones enter in their
    /// check's start state (`start_down`); a backend whose check became `none` is up. Others
    /// keep their state, so a reload does not flap them.
    pub fn follow(&mut self, config: &Config, now_unix: u64) {
        let mut next = BTreeMap::new();
        for vip in &config.vips {
            let key = vip.key();
            for b in &vip.backends {
                let mut verdict = self.0.get(&(key, b.address)).copied().unwrap_or(Verdict {
                    up: vip.health_check.starts_up(),
                    transitions: 0,
                    since_unix: now_unix,
                });
                if vip.health_check.kind == CheckType::None && !verdict.up {
                    verdict = Verdict {
                        up: true,
                        transitions: verdict.transitions,
                        since_unix: now_unix,
                    };
                }
                next.insert((key, b.address), verdict);
            }
        }
        self.0 = next;
    }

    /// A check's transition. False when the backend is not (or no longer) in the table, or
    /// already in that state: nothing changed.
    pub fn apply(&mut self, event: &HealthEvent) -> bool {
        match self.0.get_mut(&event.key) {
            Some(v) if v.up != event.up => {
                v.up = event.up;
                v.transitions += 1;
                v.since_unix = event.at_unix;
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, key: &BackendKey) -> Option<&Verdict> {
        self.0.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BackendKey, &Verdict)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::health::CheckId;

    fn cfg(check: &str) -> Config {
        let text = format!(
            "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.100\"\nport = 80\n[vip.health_check]\n{check}\n[[vip.backend]]\naddress = \"198.18.0.11\"\n"
        );
        crate::config::parse(Path::new("t.toml"), &text).unwrap()
    }

    fn event(config: &Config, up: bool, at_unix: u64) -> HealthEvent {
        HealthEvent {
            key: (config.vips[0].key(), "198.18.0.11".parse().unwrap()),
            check: CheckId::default(),
            vip_name: "web".into(),
            up,
            reason: String::new(),
            at_unix,
        }
    }

    #[test]
    fn backends_enter_in_their_start_state_and_keep_it_across_a_reload() {
        let c = cfg("type = \"tcp\"\nstart_down = true");
        let mut t = HealthTable::default();
        t.follow(&c, 10);
        let key = (c.vips[0].key(), "198.18.0.11".parse().unwrap());
        assert!(!t.get(&key).unwrap().up);
        assert!(t.apply(&event(&c, true, 20)));
        assert!(
            !t.apply(&event(&c, true, 21)),
            "already up: nothing changes"
        );
        t.follow(&c, 30);
        assert_eq!(
            t.get(&key),
            Some(&Verdict {
                up: true,
                transitions: 1,
                since_unix: 20
            })
        );
    }

    #[test]
    fn a_check_of_type_none_is_up_and_removed_backends_leave() {
        let c = cfg("type = \"tcp\"\nstart_down = true");
        let mut t = HealthTable::default();
        t.follow(&c, 10);
        t.follow(&cfg("type = \"none\""), 11);
        assert!(t.iter().all(|(_, v)| v.up));
        let mut other = c.clone();
        other.vips[0].backends.clear();
        t.follow(&other, 12);
        assert_eq!(t.iter().count(), 0);
        assert!(!t.apply(&event(&c, false, 13)), "not in the table");
    }
}
