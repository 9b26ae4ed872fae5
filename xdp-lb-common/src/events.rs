//! What the program reports to the agent through ring buffers: new flows for the sync
//! (`SYNC_EVENTS`) and the flow log's events (`FLOW_LOG`), with the flow log's per-CPU budget.

/// A flow the agent's sync sends to its peers (`[sync]`), reported through the `SYNC_EVENTS`
/// ring buffer when it is made: a DSR flow when it is recorded, a NAT flow when it is
/// established (the client's second packet). Both families: an IPv4 address fills the first
/// four bytes (network order) of its 16.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncEvent {
    /// `SYNC_EVENT_*`.
    pub kind: u8,
    /// 4 or 6.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
    /// The sender's own ids; its agent turns them into addresses before they leave the node.
    pub backend_id: u32,
    pub vip_id: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    /// NAT: the SNAT port (the SNAT address is the agent's `snat_address`).
    pub snat_port_be: u16,
    pub _pad2: u16,
    /// The client's address and the VIP's.
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
}

pub const SYNC_EVENT_DSR: u8 = 1;
pub const SYNC_EVENT_NAT: u8 = 2;
/// A NAT flow that started closing (FIN or RST seen).
pub const SYNC_EVENT_NAT_CLOSING: u8 = 3;

/// A flow-log event, sent through the `FLOW_LOG` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub ts_ns: u64,
    /// `FLOW_EVENT_*`.
    pub kind: u32,
    /// For drops: the `Counter` that counted it.
    pub reason: u32,
    pub src_addr_be: u32,
    pub dst_addr_be: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub backend_addr_be: u32,
    /// `IPPROTO_TCP` or `IPPROTO_UDP` (a TCP and a UDP VIP may share an address and port).
    pub proto: u8,
    /// New flows: how the VIP forwards (`FLOW_MODE_*`); 0 for drops.
    pub mode: u8,
    pub _pad: [u8; 6],
}

/// `FlowEvent::mode` of a new flow: the forwarding mode of its VIP.
pub const FLOW_MODE_DSR: u8 = 1;
pub const FLOW_MODE_NAT: u8 = 2;
pub const FLOW_MODE_IPIP: u8 = 3;
pub const FLOW_MODE_GUE: u8 = 4;

/// A new flow's mode as the config spells it; None when the event does not say.
pub const fn flow_mode_name(mode: u8) -> Option<&'static str> {
    match mode {
        FLOW_MODE_DSR => Some("dsr"),
        FLOW_MODE_NAT => Some("nat"),
        FLOW_MODE_IPIP => Some("ipip"),
        FLOW_MODE_GUE => Some("gue"),
        _ => None,
    }
}

/// The mode of a new flow to a backend with these `BackendInfo::flags` (`nat`: its VIP's
/// flags say NAT).
pub const fn flow_mode(nat: bool, backend_flags: u32) -> u8 {
    if nat {
        FLOW_MODE_NAT
    } else if backend_flags & crate::BACKEND_F_GUE != 0 {
        FLOW_MODE_GUE
    } else if backend_flags & crate::BACKEND_F_TUNNEL != 0 {
        FLOW_MODE_IPIP
    } else {
        FLOW_MODE_DSR
    }
}

pub const FLOW_EVENT_NEW: u32 = 1;
pub const FLOW_EVENT_DROP: u32 = 2;
/// The same events about IPv6 flows, carried as [`FlowEvent6`].
pub const FLOW_EVENT_NEW6: u32 = 3;
pub const FLOW_EVENT_DROP6: u32 = 4;

/// A flow-log event about an IPv6 flow. Starts like [`FlowEvent`] (`ts_ns`, then `kind`), so
/// the reader tells the two apart by `kind` before it reads the rest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent6 {
    pub ts_ns: u64,
    /// `FLOW_EVENT_NEW6` or `FLOW_EVENT_DROP6`.
    pub kind: u32,
    pub reason: u32,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub backend_addr: [u8; 16],
    pub src_port_be: u16,
    pub dst_port_be: u16,
    /// As [`FlowEvent::proto`].
    pub proto: u8,
    /// As [`FlowEvent::mode`].
    pub mode: u8,
    pub _pad: [u8; 2],
}

/// Per-CPU rate limiter of the flow log: a one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLogBudget {
    pub window_start_ns: u64,
    pub used: u32,
    /// Events not reported because the budget was spent (cumulative).
    pub suppressed: u32,
}

/// Entries of `FLOW_LOG_SOURCES`: the sources whose drops the flow log dedupes per second.
pub const FLOW_LOG_SOURCES_SIZE: u32 = 16_384;
