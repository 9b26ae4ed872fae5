//! Slow start (haproxy's `slowstart`): a backend that comes up, or is added to a running VIP,
//! takes its share of new flows in steps over `slowstart`, so that a cold backend (empty
//! caches, a JIT warming up, an apiserver rebuilding its watch cache) is not handed a full share
//! at once. Only new flows move: established ones keep their backend through the flow table.
//!
//! A ramp is an input of the desired state (`state::Ramps`): the agent advances it once a
//! second, and each step is one Maglev table swap.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use xdp_lb_common::AnyVipKey;

use crate::{
    config::{AdminState, Config},
    state::Ramps,
};

#[derive(Debug, Default)]
pub(super) struct SlowStart {
    /// Backends ramping up: since when, over how long.
    ramps: BTreeMap<(AnyVipKey, IpAddr), (Instant, Duration)>,
}

impl SlowStart {
    /// `backend` of the VIP `vip` came up now: ramp it if its VIP asks for slow start.
    pub(super) fn came_up(&mut self, config: &Config, vip: AnyVipKey, backend: IpAddr) {
        let period = config
            .vips
            .iter()
            .find(|v| v.key() == vip)
            .and_then(|v| {
                let b = v.backends.iter().find(|b| b.address == backend)?;
                Some(v.slowstart_of(b))
            })
            .unwrap_or_default();
        if !period.is_zero() {
            tracing::info!(%backend, period = %humantime::format_duration(period), "slow start: the backend takes its share of new flows step by step");
            self.ramps.insert((vip, backend), (Instant::now(), period));
        }
    }

    /// After a reload: backends that joined a VIP that was already there, or became active,
    /// ramp; backends that left stop ramping.
    pub(super) fn reloaded(&mut self, old: &Config, new: &Config) {
        let active = |c: &Config| -> BTreeMap<(AnyVipKey, IpAddr), AdminState> {
            c.vips
                .iter()
                .flat_map(|v| {
                    v.backends
                        .iter()
                        .map(move |b| ((v.key(), b.address), b.state))
                })
                .collect()
        };
        let (before, after) = (active(old), active(new));
        let old_vips: Vec<AnyVipKey> = old.vips.iter().map(crate::config::VipConfig::key).collect();
        for (&(vip, backend), state) in &after {
            let was = before.get(&(vip, backend));
            let joins = old_vips.contains(&vip)
                && *state == AdminState::Active
                && was != Some(&AdminState::Active);
            if joins {
                self.came_up(new, vip, backend);
            }
        }
        self.ramps.retain(|k, _| after.contains_key(k));
    }

    /// Whether a ramp is under way (the agent then reconciles every tick).
    pub(super) fn active(&self) -> bool {
        !self.ramps.is_empty()
    }

    /// The fraction of its share each ramping backend takes at `now`.
    pub(super) fn fractions(&self, now: Instant) -> Ramps {
        self.ramps
            .iter()
            .filter_map(|(k, (since, period))| {
                let f = now.duration_since(*since).as_secs_f64() / period.as_secs_f64();
                (f < 1.0).then_some((*k, f))
            })
            .collect()
    }

    /// Drops finished ramps; returns how many finished.
    pub(super) fn finish(&mut self, now: Instant) -> usize {
        let before = self.ramps.len();
        self.ramps
            .retain(|_, (since, period)| now.duration_since(*since) < *period);
        before - self.ramps.len()
    }

    /// Percent of its share a backend takes now, for `status` (None: not ramping).
    pub(super) fn percent(&self, vip: AnyVipKey, backend: IpAddr) -> Option<u32> {
        let f = self.fractions(Instant::now());
        f.get(&(vip, backend)).map(|f| (f * 100.0) as u32)
    }
}
