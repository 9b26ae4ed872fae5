//! `xdp-lb capture`: what the CLI asks of the program (`CAPTURE_CONFIG`), what the program
//! records (`CAPTURE`, a ring buffer of [`CaptureRecord`]s) and counts (`CAPTURE_STATS`).
//!
//! A capture is a session of the CLI, not desired state: the CLI writes `CAPTURE_CONFIG` when
//! it starts, renews `until_ns` every second while it runs and clears it when it ends. Should it
//! die, the program stops recording by itself once `until_ns` has passed.

/// Bytes of a frame a record can hold: a full Ethernet frame at MTU 1500 with a VLAN tag and
/// a tunnel's outer headers. A power of two: the program bounds the copy with a mask, the one
/// bound the verifier keeps through LLVM's register spills.
pub const CAPTURE_MAX_SNAPLEN: u32 = 2048;

/// `CaptureRecord::reason` of a frame the program sent (not a drop).
pub const CAPTURE_SENT: u32 = u32::MAX;

/// `CaptureConfig::vip_id` / `backend_id`: any.
pub const CAPTURE_ANY: u32 = u32::MAX;

/// `CaptureConfig::what` bits.
pub const CAPTURE_WHAT_SENT: u32 = 1;
pub const CAPTURE_WHAT_DROPS: u32 = 2;

/// `CAPTURE_CONFIG[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// 0: off (the program's only per-packet cost: reading this word). Else one of every
    /// `every` matching frames is recorded, counted per CPU.
    pub every: u32,
    /// Bytes of each frame recorded (1..=`CAPTURE_MAX_SNAPLEN`).
    pub snaplen: u32,
    /// Only frames of this VIP / to or from this backend (`CAPTURE_ANY`: all). A drop before
    /// a VIP was known (a malformed frame) has neither and passes only filters of `CAPTURE_ANY`.
    pub vip_id: u32,
    pub backend_id: u32,
    /// `CAPTURE_WHAT_*`.
    pub what: u32,
    pub _pad: u32,
    /// bpf_ktime_get_ns() after which nothing is recorded.
    pub until_ns: u64,
}

/// One frame in `CAPTURE`: as the program sent it (after its rewrite) or as it dropped it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CaptureRecord {
    pub ts_ns: u64,
    /// The frame's length, and how much of it `data` holds.
    pub len: u32,
    pub caplen: u32,
    /// The XDP action (XDP_TX 3, XDP_REDIRECT 4, XDP_DROP 1).
    pub action: u32,
    /// A drop's `Counter`, or `CAPTURE_SENT`.
    pub reason: u32,
    /// `CAPTURE_ANY` when not known (a drop before a VIP was found).
    pub vip_id: u32,
    pub backend_id: u32,
    pub data: [u8; CAPTURE_MAX_SNAPLEN as usize],
}

/// `CAPTURE_STATS`, per CPU: frames that matched the filter, were recorded, or were lost
/// because the ring was full (the reader too slow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub matched: u64,
    pub recorded: u64,
    pub lost: u64,
}
