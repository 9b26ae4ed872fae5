//! Anti-replay: each sender numbers its datagrams within an epoch (its start time), and a
//! receiver accepts each (epoch, sequence) at most once, within a window of the latest 64
//! (RFC 4303 §3.4.3's sliding window). A sender that restarts starts a higher epoch, which
//! resets its window; a datagram from an older epoch is stale. The window is updated only for
//! datagrams whose MAC has been verified, so forged ones cannot move it.

use std::{collections::HashMap, net::IpAddr};

/// How many sequence numbers behind the newest are still accepted (once each).
pub const WINDOW: u64 = 64;

/// Why a datagram with a valid MAC is refused anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Seen before.
    Replayed,
    /// Older than the window.
    OutOfWindow,
    /// From an epoch before the sender's current one (a recording from before its restart).
    StaleEpoch,
}

impl Reject {
    pub fn name(self) -> &'static str {
        match self {
            Reject::Replayed => "replayed",
            Reject::OutOfWindow => "out_of_window",
            Reject::StaleEpoch => "stale_epoch",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    epoch: u64,
    /// The highest sequence number accepted.
    top: u64,
    /// Bit i: `top - i` was accepted.
    seen: u64,
}

/// The windows of every sender (by its address), bounded by the number of configured peers:
/// only their datagrams reach this (the caller drops other sources first).
#[derive(Debug, Default)]
pub struct Replay {
    senders: HashMap<IpAddr, Window>,
}

impl Replay {
    /// Accepts (and records) `(epoch, seq)` from the peer at `node`, or says why not. Sequence numbers
    /// start at 1.
    pub fn accept(&mut self, node: IpAddr, epoch: u64, seq: u64) -> Result<(), Reject> {
        let w = self.senders.entry(node).or_insert(Window {
            epoch,
            top: 0,
            seen: 0,
        });
        if epoch < w.epoch {
            return Err(Reject::StaleEpoch);
        }
        if epoch > w.epoch {
            *w = Window {
                epoch,
                top: 0,
                seen: 0,
            };
        }
        if seq > w.top {
            let shift = seq - w.top;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.top = seq;
            return Ok(());
        }
        let behind = w.top - seq;
        if behind >= WINDOW || seq == 0 {
            return Err(Reject::OutOfWindow);
        }
        let bit = 1u64 << behind;
        if w.seen & bit != 0 {
            return Err(Reject::Replayed);
        }
        w.seen |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 3));

    #[test]
    fn each_sequence_number_is_accepted_once_within_the_window() {
        let mut r = Replay::default();
        assert_eq!(r.accept(A, 100, 1), Ok(()));
        assert_eq!(r.accept(A, 100, 1), Err(Reject::Replayed));
        assert_eq!(r.accept(A, 100, 3), Ok(()));
        // Reordered but new: accepted once.
        assert_eq!(r.accept(A, 100, 2), Ok(()));
        assert_eq!(r.accept(A, 100, 2), Err(Reject::Replayed));
        assert_eq!(r.accept(A, 100, 3 + WINDOW), Ok(()));
        assert_eq!(r.accept(A, 100, 3), Err(Reject::OutOfWindow));
        assert_eq!(r.accept(A, 100, 4), Ok(()), "63 behind: still inside");
        assert_eq!(r.accept(A, 100, 0), Err(Reject::OutOfWindow));
        // Other senders have windows of their own.
        assert_eq!(r.accept(B, 5, 1), Ok(()));
    }

    #[test]
    fn a_restarted_sender_starts_over_and_its_old_epoch_is_stale() {
        let mut r = Replay::default();
        for seq in 1..=1000 {
            assert_eq!(r.accept(A, 100, seq), Ok(()));
        }
        assert_eq!(r.accept(A, 200, 1), Ok(()));
        assert_eq!(r.accept(A, 100, 1001), Err(Reject::StaleEpoch));
        assert_eq!(r.accept(A, 200, 1), Err(Reject::Replayed));
        // A jump far ahead clears the window rather than shifting by more than its width.
        assert_eq!(r.accept(A, 200, u64::MAX), Ok(()));
        assert_eq!(r.accept(A, 200, 2), Err(Reject::OutOfWindow));
    }
}
