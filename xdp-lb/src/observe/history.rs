//! The traffic history `/stats` draws and takes its rates from: every VIP's and backend's
//! counters sampled every `STEP` for the last `WINDOW`, kept in the agent's process (its HTTP
//! face samples the pinned maps, as a request would). Rates are the difference between now and
//! the newest sample at least a second old, so they are right from the second request on and
//! never depend on how often someone looks.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{inspect::Traffic, page_data::PageData};

/// Between samples.
pub(super) const STEP: Duration = Duration::from_secs(10);
/// Samples kept: 10 minutes.
pub(super) const POINTS: usize = 60;

/// A VIP by name, or a backend by its VIP's name and its address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    Vip(String),
    Backend(String, IpAddr),
}

impl Key {
    pub(super) fn all(page: &PageData) -> impl Iterator<Item = (Key, &Traffic)> {
        let vips = page
            .vips
            .iter()
            .map(|v| (Key::Vip(v.name.clone()), &v.traffic));
        let backends = page
            .backends
            .iter()
            .map(|b| (Key::Backend(b.vip.clone(), b.address), &b.traffic));
        vips.chain(backends)
    }
}

struct Sample {
    at: Instant,
    counters: BTreeMap<Key, (u64, u64, u64)>,
}

fn counts(t: &Traffic) -> (u64, u64, u64) {
    (t.packets, t.bytes, t.new_flows)
}

/// Packets, bits and new flows per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Rate {
    pub(super) pps: f64,
    pub(super) bps: f64,
    pub(super) flows: f64,
}

#[derive(Default)]
pub(super) struct History(Mutex<VecDeque<Sample>>);

impl History {
    /// Adds a sample of `page` taken `at`, dropping what is older than the window.
    pub(super) fn record(&self, page: &PageData, at: Instant) {
        let sample = Sample {
            at,
            counters: Key::all(page).map(|(k, t)| (k, counts(t))).collect(),
        };
        let mut h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.push_back(sample);
        while h.len() > POINTS + 1 {
            h.pop_front();
        }
    }

    /// Each key's rate now (`page` read `at`), against the newest sample at least a second
    /// old; none before there is one.
    pub(super) fn rates(&self, page: &PageData, at: Instant) -> BTreeMap<Key, Rate> {
        let h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(base) = h
            .iter()
            .rev()
            .find(|s| at.saturating_duration_since(s.at) >= Duration::from_secs(1))
        else {
            return BTreeMap::new();
        };
        let dt = at.saturating_duration_since(base.at).as_secs_f64();
        Key::all(page)
            .filter_map(|(k, t)| {
                let was = base.counters.get(&k)?;
                Some((k, rate(*was, counts(t), dt)))
            })
            .collect()
    }

    /// Each key's packet rate between consecutive samples, oldest first (at most `POINTS`).
    pub(super) fn series(&self) -> BTreeMap<Key, Vec<f64>> {
        let h = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
        for (a, b) in h.iter().zip(h.iter().skip(1)) {
            let dt = b.at.saturating_duration_since(a.at).as_secs_f64();
            for (k, now) in &b.counters {
                let r = a
                    .counters
                    .get(k)
                    .map_or(0.0, |was| rate(*was, *now, dt).pps);
                out.entry(k.clone()).or_default().push(r);
            }
        }
        out
    }
}

/// A counter that went down (a backend id reused, a program reloaded) counts as a restart.
fn rate(was: (u64, u64, u64), now: (u64, u64, u64), dt: f64) -> Rate {
    if dt <= 0.0 {
        return Rate::default();
    }
    let d = |a: u64, b: u64| b.checked_sub(a).unwrap_or(b) as f64 / dt;
    Rate {
        pps: d(was.0, now.0),
        bps: 8.0 * d(was.1, now.1),
        flows: d(was.2, now.2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_over_time_and_a_restart_is_not_negative() {
        let r = rate((100, 1000, 10), (300, 3000, 30), 2.0);
        assert_eq!(
            r,
            Rate {
                pps: 100.0,
                bps: 8000.0,
                flows: 10.0
            }
        );
        assert_eq!(rate((500, 0, 0), (50, 0, 0), 1.0).pps, 50.0);
        assert_eq!(rate((0, 0, 0), (1, 1, 1), 0.0), Rate::default());
    }
}
