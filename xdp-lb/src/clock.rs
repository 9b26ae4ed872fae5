//! The two clocks the agent reads: wall-clock seconds for what people see (status, logs), and
//! the data plane's own coarse monotonic seconds for flow ages and expiry.

use std::time::SystemTime;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it): a sync epoch, which a
/// restarted agent must see grow.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `t` in seconds since the Unix epoch (0 if before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// CLOCK_MONOTONIC_COARSE in seconds: the clock of `FlowValue::last_seen_s`, which the program
/// reads with `bpf_ktime_get_coarse_ns`.
pub fn coarse_now_s() -> u32 {
    now(libc::CLOCK_MONOTONIC_COARSE).tv_sec as u32
}

fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns` (`FlowValue::created_ns`).
pub fn monotonic_ns() -> u64 {
    let ts = now(libc::CLOCK_MONOTONIC);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
