//! Reference programs for `cargo xtask bench`, built from the same parser as the data plane so
//! that the comparison isolates what xdp-lb adds (VIP lookup, flow table, Maglev, counters).
//!
//! - `xdp_floor`: parse Ethernet/IPv4/TCP, rewrite both MACs, XDP_TX. The least any L2
//!   forwarder must do; xdp-lb's paths are reported as ratios to it.
//! - `xdp_floor_lookup`: the floor plus one hash lookup of the 5-tuple in an LRU map shaped like
//!   the flow table: shows how much of xdp-lb's flow-hit path is that one lookup.
//! - `xdp_empty`: return XDP_PASS. The fixed cost of BPF_PROG_TEST_RUN itself, subtracted from
//!   rows measured with `repeat = 1`.
// Built for BPF by xdp-lb's build.rs. On the host (`cargo clippy/test --workspace`) it builds
// as an ordinary program with an empty main, so workspace-wide tools need no special casing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[path = "parse.rs"]
#[expect(
    dead_code,
    reason = "the floor parses like the data plane but does not use the 5-tuple"
)]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::LruHashMap,
    programs::XdpContext,
};
use xdp_lb_common::{FlowKey, FlowValue};

/// Same key and value as the data plane's FLOWS; filled by the bench.
#[map]
static BENCH_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(1024, 0);

const FLOOR_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const FLOOR_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[xdp]
pub fn xdp_floor(ctx: XdpContext) -> u32 {
    match parse::parse(&ctx) {
        Ok(packet) => {
            // SAFETY: bounds-checked by the parser.
            unsafe {
                (*packet.eth).dst_addr = FLOOR_DST_MAC;
                (*packet.eth).src_addr = FLOOR_SRC_MAC;
            }
            xdp_action::XDP_TX
        }
        Err(_) => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn xdp_floor_lookup(ctx: XdpContext) -> u32 {
    match parse::parse(&ctx) {
        Ok(packet) => {
            if BENCH_FLOWS.get_ptr(packet.flow).is_none() {
                return xdp_action::XDP_PASS;
            }
            // SAFETY: bounds-checked by the parser.
            unsafe {
                (*packet.eth).dst_addr = FLOOR_DST_MAC;
                (*packet.eth).src_addr = FLOOR_SRC_MAC;
            }
            xdp_action::XDP_TX
        }
        Err(_) => xdp_action::XDP_PASS,
    }
}

#[xdp]
pub fn xdp_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
