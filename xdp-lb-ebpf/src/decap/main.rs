//! `xdp-lb decap`: the decapsulation program for backends of tunnel VIPs, attached to the
//! backend's interface. A frame that carries IPIP (IPv4 in IPv4), IP6IP6, IPv4 in IPv6 or GUE
//! variant 1 (UDP to the configured port, the inner IP packet right after the UDP header) to
//! one of this host's addresses loses its outer headers and goes up the stack as the client
//! sent it, to the VIP on the backend's loopback; the backend answers the client directly.
//! Everything else passes untouched.
//!
//! Hostile input: every length the outer and inner headers claim is checked against the frame
//! and against each other before anything is stripped, so a frame is either handed up as a
//! well-formed IP packet or dropped and counted (`DecapCounter`), never handed up as
//! something it is not. Encapsulation inside encapsulation is refused (a packet could
//! otherwise be looped or smuggled past a filter that looks at one layer).
//!
//! With it, on the same interface, a TC egress program (`mss.rs`) makes the backend's SYN-ACK
//! offer no larger a segment than the tunnelled SYN did, so the LB's `mss_clamp` holds in both
//! directions.
//!
//! Why our own: the kernel's `ipip`, `ip6_tunnel` and `fou` modules are missing on many hosts
//! (and on the machines we test on); where they exist, README "Tunnel forwarding" shows the
//! kernel's way.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod check;
mod mss;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use xdp_lb_common::{DECAP_MAX_LOCAL, DecapCounter, DecapSettings};
use xdp_lb_ebpf::parse::ptr_at;

use self::check::{Found, Tunnel};

#[map]
static DECAP_LOCAL4: HashMap<u32, u8> = HashMap::pinned(DECAP_MAX_LOCAL, 0);

#[map]
static DECAP_LOCAL6: HashMap<[u8; 16], u8> = HashMap::pinned(DECAP_MAX_LOCAL, 0);

#[map]
static DECAP_SETTINGS: Array<DecapSettings> = Array::pinned(1, 0);

#[map]
static DECAP_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(DecapCounter::COUNT, 0);

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro hands the program its context by value"
)]
pub(crate) fn xdp_lb_decap(ctx: XdpContext) -> u32 {
    let outcome = match check::tunnel(&ctx) {
        Ok(found) => strip(&ctx, &found),
        Err(c) => c,
    };
    count(outcome);
    if outcome.passes() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Removes the outer headers of a checked tunnel frame: the frame starts `outer_len` bytes
/// later, where a new Ethernet header (the same MACs, the inner packet's EtherType) is written
/// over the last bytes of the outer headers.
#[inline(always)]
fn strip(ctx: &XdpContext, found: &Found) -> DecapCounter {
    // SAFETY: the program's context; the helper checks the new start lies in the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, (found.outer_len & 0xff) as i32) } != 0 {
        return DecapCounter::DropAdjust;
    }
    let Some(eth) = ptr_at::<[u8; 14]>(ctx, 0) else {
        return DecapCounter::DropAdjust;
    };
    let ethertype: [u8; 2] = if found.inner_v6 {
        [0x86, 0xdd]
    } else {
        [0x08, 0x00]
    };
    // SAFETY: bounds-checked just above.
    unsafe {
        let e = eth as *mut u8;
        for (i, b) in found.macs.iter().enumerate() {
            *e.add(i) = *b;
        }
        *e.add(12) = ethertype[0];
        *e.add(13) = ethertype[1];
    }
    match found.tunnel {
        Tunnel::Ipip => DecapCounter::Ipip,
        Tunnel::Ip6ip6 => DecapCounter::Ip6ip6,
        Tunnel::Ip4in6 => DecapCounter::Ip4in6,
        Tunnel::Gue => DecapCounter::Gue,
    }
}

#[inline(always)]
fn count(c: DecapCounter) {
    if let Some(slot) = DECAP_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: this CPU's slot, ours while this program runs.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
