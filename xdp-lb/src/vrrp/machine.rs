//! How the VIP fails over: the VRRP state machine of RFC 5798 §6.4 (VRRPv3; VRRPv2 per RFC 3768
//! §6.4 differs only in units), plus Fault for data-plane tracking. Pure: it is fed events with
//! the current time and answers with actions, so every timer rule is unit-tested without a
//! network. `vrrp::instance` does the I/O.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::packet::Advert;
use crate::config::Version;

/// Serialized as keepalived names its states (and as `status` and the notify hook show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    #[serde(rename = "INIT")]
    Initialize,
    #[serde(rename = "BACKUP")]
    Backup,
    #[serde(rename = "MASTER")]
    Master,
    /// Tracking failed (data plane not attached, a VIP without backends): no adverts, no VIP.
    #[serde(rename = "FAULT")]
    Fault,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Initialize,
        State::Backup,
        State::Master,
        State::Fault,
    ];

    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 = "I am leaving").
    SendAdvert { priority: u8 },
    /// Add the virtual addresses to the interface and announce them (gratuitous ARP).
    TakeAddresses,
    /// Remove the virtual addresses.
    ReleaseAddresses,
    /// Entered a state: log, notify hook, counters. `cause` says why.
    Transition {
        from: State,
        to: State,
        cause: String,
    },
}

#[derive(Debug, Clone)]
pub struct Params {
    pub version: Version,
    /// Configured priority, 1..=255 (255 = address owner).
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Our primary address on the interface: breaks priority ties (RFC 5798 §6.4.3).
    pub primary: IpAddr,
}

pub struct Machine {
    p: Params,
    pub state: State,
    /// Subtracted from the configured priority by tracking (`track_weight`).
    penalty: u8,
    /// Learnt from the master's adverts in v3 (RFC 5798 §6.4.2); ours in v2.
    master_adver_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    started: Option<Instant>,
    /// Fault requested by tracking, with its reason.
    fault: Option<String>,
    /// The running master-down timer was shortened by a priority-0 advert (for the log).
    master_left: bool,
    /// Taking the addresses is held, for this reason: a node that starts waits for the flow
    /// sync's snapshot (README, "Flow sync"), so that it neither preempts nor takes over from
    /// a silent master before it holds the flows. Lifted by `set_hold(None)`.
    hold: Option<String>,
    /// Master_Down_Interval ran out while held, and no master has been heard since: take over
    /// as soon as the hold is lifted.
    down_while_held: bool,
}

impl Machine {
    pub fn new(p: Params) -> Self {
        let interval = p.advert_interval;
        Self {
            p,
            state: State::Initialize,
            penalty: 0,
            master_adver_interval: interval,
            adver_timer: None,
            master_down_timer: None,
            started: None,
            fault: None,
            master_left: false,
            hold: None,
            down_while_held: false,
        }
    }

    /// Holds (Some(reason)) or allows (None) taking the addresses. Lifting the hold takes over
    /// at once if Master_Down_Interval ran out meanwhile with no master heard.
    pub fn set_hold(&mut self, now: Instant, hold: Option<String>) -> Vec<Action> {
        let mut actions = Vec::new();
        self.hold = hold;
        if self.hold.is_none() && self.down_while_held && self.state == State::Backup {
            self.down_while_held = false;
            self.become_master(
                now,
                "no advert from a master within Master_Down_Interval (held until the sync snapshot)",
                &mut actions,
            );
        }
        actions
    }

    pub fn held(&self) -> Option<&str> {
        self.hold.as_deref()
    }

    /// The priority we advertise now.
    pub fn priority(&self) -> u8 {
        if self.p.priority == 255 {
            255
        } else {
            self.p.priority.saturating_sub(self.penalty).max(1)
        }
    }

    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256 (RFC 5798 §6.1); v2 uses
    /// the same form with its interval (RFC 3768: (256 − Priority) / 256 seconds at 1 s).
    pub fn skew_time(&self) -> Duration {
        self.master_adver_interval * (256 - self.priority() as u32) / 256
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval * 3 + self.skew_time()
    }

    /// The next time `on_timer` has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.adver_timer, self.master_down_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn go(&mut self, to: State, cause: impl Into<String>, actions: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        actions.push(Action::Transition {
            from,
            to,
            cause: cause.into(),
        });
    }

    fn become_master(&mut self, now: Instant, cause: impl Into<String>, actions: &mut Vec<Action>) {
        // RFC 5798 §6.4.1/§6.4.2: advert first, then announce the addresses.
        actions.push(Action::SendAdvert {
            priority: self.priority(),
        });
        actions.push(Action::TakeAddresses);
        self.adver_timer = Some(now + self.p.advert_interval);
        self.master_down_timer = None;
        self.go(State::Master, cause, actions);
    }

    fn become_backup(&mut self, now: Instant, cause: impl Into<String>, actions: &mut Vec<Action>) {
        if self.state == State::Master {
            actions.push(Action::ReleaseAddresses);
        }
        self.adver_timer = None;
        self.master_down_timer = Some(now + self.master_down_interval());
        self.go(State::Backup, cause, actions);
    }

    /// Startup event (RFC 5798 §6.4.1).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.started = Some(now);
        // Whatever an earlier run left: never hold a VIP without being master.
        actions.push(Action::ReleaseAddresses);
        if let Some(reason) = self.fault.clone() {
            self.go(State::Fault, reason, &mut actions);
        } else if self.p.priority == 255 {
            self.become_master(now, "startup as address owner (priority 255)", &mut actions);
        } else {
            self.master_adver_interval = self.p.advert_interval;
            self.become_backup(now, "startup", &mut actions);
        }
        actions
    }

    /// Timers (call at or after `next_deadline`).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Backup => {
                if self.master_down_timer.is_some_and(|t| now >= t) && self.hold.is_some() {
                    self.master_down_timer = None;
                    self.down_while_held = true;
                } else if self.master_down_timer.is_some_and(|t| now >= t) {
                    let cause = if self.master_left {
                        "the master left (priority 0 advert); took over after Skew_Time"
                    } else {
                        "no advert from a master within Master_Down_Interval"
                    };
                    self.master_left = false;
                    self.become_master(now, cause, &mut actions);
                }
            }
            State::Master => {
                if self.adver_timer.is_some_and(|t| now >= t) {
                    actions.push(Action::SendAdvert {
                        priority: self.priority(),
                    });
                    self.adver_timer = Some(now + self.p.advert_interval);
                }
            }
            State::Initialize | State::Fault => {}
        }
        actions
    }

    fn preempt_now(&self, now: Instant) -> bool {
        self.p.preempt
            && self
                .started
                .is_none_or(|s| now.duration_since(s) >= self.p.preempt_delay)
    }

    /// A valid advert for our VRID from `from` (RFC 5798 §6.4.2, §6.4.3).
    pub fn on_advert(&mut self, now: Instant, from: IpAddr, advert: &Advert) -> Vec<Action> {
        let mut actions = Vec::new();
        let theirs = advert.priority;
        let interval = Duration::from_millis(advert.interval_cs as u64 * 10);
        match self.state {
            State::Backup => {
                if theirs == 0 {
                    // The master is leaving: take over after Skew_Time only.
                    self.master_down_timer = Some(now + self.skew_time());
                    self.master_left = true;
                } else if !self.preempt_now(now) || theirs >= self.priority() || self.hold.is_some()
                {
                    // A master we follow (or would preempt, but are held): wait for it again.
                    self.down_while_held = false;
                    if self.p.version == Version::V3 && !interval.is_zero() {
                        self.master_adver_interval = interval;
                    }
                    self.master_down_timer = Some(now + self.master_down_interval());
                    self.master_left = false;
                }
                // else: a lower-priority master and we preempt: let the timer run out.
            }
            State::Master => {
                if theirs == 0 {
                    actions.push(Action::SendAdvert {
                        priority: self.priority(),
                    });
                    self.adver_timer = Some(now + self.p.advert_interval);
                } else if theirs > self.priority()
                    || (theirs == self.priority() && from > self.p.primary)
                {
                    if self.p.version == Version::V3 && !interval.is_zero() {
                        self.master_adver_interval = interval;
                    }
                    self.become_backup(
                        now,
                        format!(
                            "advert from {from} with priority {theirs} (ours {})",
                            self.priority()
                        ),
                        &mut actions,
                    );
                }
                // else: discard; our next advert tells them.
            }
            State::Initialize | State::Fault => {}
        }
        actions
    }

    /// Tracking: enter Fault (with a reason) or leave it.
    pub fn set_fault(&mut self, now: Instant, fault: Option<String>) -> Vec<Action> {
        let mut actions = Vec::new();
        match (&fault, self.state) {
            (Some(reason), State::Master | State::Backup) => {
                if self.state == State::Master {
                    // Tell the backup to take over now rather than after Master_Down_Interval.
                    actions.push(Action::SendAdvert { priority: 0 });
                    actions.push(Action::ReleaseAddresses);
                }
                self.adver_timer = None;
                self.master_down_timer = None;
                self.go(State::Fault, reason.clone(), &mut actions);
            }
            (None, State::Fault) => {
                self.fault = None;
                self.master_adver_interval = self.p.advert_interval;
                self.become_backup(now, "tracking recovered", &mut actions);
            }
            _ => {}
        }
        self.fault = fault;
        actions
    }

    /// Tracking with `track_weight`: lower the advertised priority (0 restores it).
    pub fn set_penalty(&mut self, penalty: u8) -> Vec<Action> {
        let mut actions = Vec::new();
        if penalty != self.penalty {
            self.penalty = penalty;
            if self.state == State::Master {
                // Advertise the new priority at once, so a better backup can preempt.
                actions.push(Action::SendAdvert {
                    priority: self.priority(),
                });
            }
        }
        actions
    }

    /// Shutdown (RFC 5798 §6.4.3): a master sends priority 0 so the backup takes over after
    /// Skew_Time, then releases the addresses.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Master {
            actions.push(Action::SendAdvert { priority: 0 });
        }
        actions.push(Action::ReleaseAddresses);
        self.adver_timer = None;
        self.master_down_timer = None;
        self.go(State::Initialize, "shutdown", &mut actions);
        actions
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn params(priority: u8) -> Params {
        Params {
            version: Version::V3,
            priority,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
        }
    }

    fn advert(priority: u8, interval_cs: u16) -> Advert {
        Advert {
            version: Version::V3,
            vrid: 51,
            priority,
            interval_cs,
            addresses: vec![],
        }
    }

    fn entered(actions: &[Action]) -> Option<State> {
        actions.iter().rev().find_map(|a| match a {
            Action::Transition { to, .. } => Some(*to),
            _ => None,
        })
    }

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));

    #[test]
    fn timers_follow_the_rfc() {
        let m = Machine::new(params(100));
        // Skew = (256-100)/256 s = 609.375 ms; Master_Down = 3 s + skew ≈ 3.61 s (VRRP.md: ~3.6 s).
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        let fast = Machine::new(Params {
            advert_interval: Duration::from_millis(100),
            ..params(100)
        });
        assert!(fast.master_down_interval() < Duration::from_millis(370));
    }

    #[test]
    fn a_backup_without_adverts_becomes_master_after_master_down_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        let a = m.start(t0);
        assert_eq!(entered(&a), Some(State::Backup));
        assert!(
            m.on_timer(t0 + Duration::from_millis(3600)).is_empty(),
            "not yet"
        );
        let a = m.on_timer(t0 + Duration::from_millis(3610));
        assert_eq!(entered(&a), Some(State::Master));
        assert_eq!(
            &a[..2],
            &[Action::SendAdvert { priority: 100 }, Action::TakeAddresses],
            "advert first, then the VIPs"
        );
    }

    #[test]
    fn the_owner_starts_as_master_and_adverts_keep_a_backup_down() {
        let t0 = Instant::now();
        let mut owner = Machine::new(params(255));
        assert_eq!(entered(&owner.start(t0)), Some(State::Master));
        let mut b = Machine::new(params(100));
        b.start(t0);
        for s in 1..10 {
            let now = t0 + Duration::from_secs(s);
            assert!(b.on_advert(now, PEER, &advert(255, 100)).is_empty());
            assert_eq!(b.on_timer(now), vec![]);
        }
        assert_eq!(b.state, State::Backup);
    }

    #[test]
    fn priority_zero_means_take_over_after_skew_time() {
        let t0 = Instant::now();
        let mut b = Machine::new(params(100));
        b.start(t0);
        b.on_advert(t0, PEER, &advert(0, 100));
        assert_eq!(b.next_deadline(), Some(t0 + b.skew_time()));
        let a = b.on_timer(t0 + b.skew_time());
        assert_eq!(entered(&a), Some(State::Master));
        assert!(
            matches!(&a[2], Action::Transition { cause, .. } if cause.contains("priority 0")),
            "{a:?}"
        );
    }

    #[test]
    fn a_master_yields_to_higher_priority_and_ties_go_to_the_higher_address() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        m.start(t0);
        m.on_timer(t0 + Duration::from_secs(4));
        assert_eq!(m.state, State::Master);
        assert!(
            m.on_advert(t0, PEER, &advert(90, 100)).is_empty(),
            "lower priority: ignored"
        );
        let a = m.on_advert(t0, PEER, &advert(100, 100));
        assert_eq!(
            entered(&a),
            Some(State::Backup),
            "equal priority, higher address wins"
        );
        assert!(a.contains(&Action::ReleaseAddresses));
    }

    #[test]
    fn preempt_false_keeps_a_lower_master_and_true_takes_over() {
        for (preempt, expected) in [(false, State::Backup), (true, State::Master)] {
            let t0 = Instant::now();
            let mut m = Machine::new(Params {
                preempt,
                ..params(150)
            });
            m.start(t0);
            let mut now = t0;
            for _ in 0..10 {
                now += Duration::from_secs(1);
                m.on_advert(now, PEER, &advert(100, 100));
                m.on_timer(now);
            }
            assert_eq!(m.state, expected, "preempt = {preempt}");
        }
    }

    #[test]
    fn preempt_delay_holds_preemption_after_start() {
        let t0 = Instant::now();
        let mut m = Machine::new(Params {
            preempt_delay: Duration::from_secs(10),
            ..params(150)
        });
        m.start(t0);
        let mut now = t0;
        while now < t0 + Duration::from_secs(20) {
            now += Duration::from_millis(500);
            m.on_advert(now, PEER, &advert(100, 100));
            m.on_timer(now);
            if now < t0 + Duration::from_secs(10) {
                assert_eq!(m.state, State::Backup, "at {:?}", now - t0);
            }
        }
        assert_eq!(m.state, State::Master);
    }

    #[test]
    fn a_held_backup_neither_preempts_nor_takes_over_until_released() {
        let t0 = Instant::now();
        // Preemption: a lower-priority master keeps the VIP while we are held.
        let mut m = Machine::new(params(200));
        m.start(t0);
        m.set_hold(t0, Some("waiting for the sync snapshot".into()));
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_secs(1);
            m.on_advert(t, "198.18.0.9".parse().unwrap(), &advert(100, 100));
            m.on_timer(t);
        }
        assert_eq!(m.state, State::Backup);
        // Released: the next advert is not followed, and Master_Down_Interval later we take over.
        assert!(m.set_hold(t, None).is_empty(), "a master is there: no jump");
        m.on_advert(t, "198.18.0.9".parse().unwrap(), &advert(100, 100));
        m.on_timer(t + m.master_down_interval());
        assert_eq!(m.state, State::Master);

        // No master at all: the down interval runs out while held; release takes over at once.
        let mut m = Machine::new(params(100));
        m.start(t0);
        m.set_hold(t0, Some("waiting for the sync snapshot".into()));
        let later = t0 + m.master_down_interval() + Duration::from_millis(1);
        assert!(m.on_timer(later).is_empty());
        assert_eq!(m.state, State::Backup);
        assert_eq!(m.next_deadline(), None, "no busy timer while held");
        assert_eq!(entered(&m.set_hold(later, None)), Some(State::Master));
    }

    #[test]
    fn a_v3_backup_learns_the_masters_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        m.start(t0);
        m.on_advert(t0, PEER, &advert(200, 10));
        assert_eq!(m.master_adver_interval(), Duration::from_millis(100));
        assert!(m.master_down_interval() < Duration::from_millis(400));
    }

    #[test]
    fn fault_releases_the_vip_and_tells_the_backup_and_recovery_returns_to_backup() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        m.start(t0);
        let a = m.set_fault(t0, Some("VIP web has no healthy backend".into()));
        assert_eq!(entered(&a), Some(State::Fault));
        assert_eq!(
            &a[..2],
            &[Action::SendAdvert { priority: 0 }, Action::ReleaseAddresses]
        );
        assert!(
            m.on_timer(t0 + Duration::from_secs(100)).is_empty(),
            "no adverts in Fault"
        );
        let a = m.set_fault(t0, None);
        assert_eq!(entered(&a), Some(State::Backup));
    }

    #[test]
    fn track_weight_lowers_the_advertised_priority() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(150));
        m.start(t0);
        m.on_timer(t0 + Duration::from_secs(4));
        assert_eq!(m.set_penalty(60), vec![Action::SendAdvert { priority: 90 }]);
        assert_eq!(
            entered(&m.on_advert(t0, PEER, &advert(100, 100))),
            Some(State::Backup)
        );
    }

    #[test]
    fn shutdown_sends_priority_zero_from_master() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        m.start(t0);
        let a = m.shutdown();
        assert_eq!(
            &a[..2],
            &[Action::SendAdvert { priority: 0 }, Action::ReleaseAddresses]
        );
    }
}
