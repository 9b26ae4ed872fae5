//! Rise and fall (haproxy's `rise` / `fall`): how consecutive probe results become a
//! transition. Pure, like the VRRP state machine (`vrrp/machine.rs`): results in, transitions
//! out, unit-tested without a socket.

/// A backend's state as its check counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
    rise: u32,
    fall: u32,
}

impl RiseFall {
    /// Starts `up` or down; `rise` successes bring a down backend up, `fall` failures take an
    /// up one down (each at least 1).
    pub fn new(up: bool, rise: u32, fall: u32) -> Self {
        Self {
            up,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn up(&self) -> bool {
        self.up
    }

    /// One probe's result; the new state when it completes a streak (`fall` failures in a
    /// row while up, `rise` successes in a row while down). A result that agrees with the
    /// state breaks the streak.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(self.up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut rf: RiseFall, results: &[bool]) -> Vec<Option<bool>> {
        results.iter().map(|ok| rf.observe(*ok)).collect()
    }

    #[test]
    fn fall_failures_in_a_row_take_an_up_backend_down() {
        let rf = RiseFall::new(true, 2, 3);
        assert_eq!(
            run(rf, &[false, false, false, false]),
            [None, None, Some(false), None]
        );
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let rf = RiseFall::new(true, 2, 3);
        assert_eq!(
            run(rf, &[false, false, true, false, false, false]),
            [None, None, None, None, None, Some(false)]
        );
    }

    #[test]
    fn rise_successes_in_a_row_bring_a_down_backend_up() {
        let rf = RiseFall::new(false, 2, 3);
        assert_eq!(
            run(rf, &[true, false, true, true]),
            [None, None, None, Some(true)]
        );
    }

    #[test]
    fn results_that_agree_change_nothing_and_one_is_the_least_threshold() {
        let mut rf = RiseFall::new(true, 0, 0);
        assert_eq!(rf.observe(true), None);
        assert_eq!(rf.observe(false), Some(false));
        assert!(!rf.up());
        assert_eq!(rf.observe(true), Some(true));
    }

    #[test]
    fn after_a_transition_the_other_threshold_counts() {
        let rf = RiseFall::new(true, 3, 1);
        // Down at once; then three successes to come back.
        assert_eq!(
            run(rf, &[false, true, true, true]),
            [Some(false), None, None, Some(true)]
        );
    }
}
