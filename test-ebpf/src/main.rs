//! Reference programs for `cargo xtask bench`, built from the same parser as the data plane so
//! that the comparison isolates what xdp-lb adds (VIP lookup, flow table, Maglev, counters).
//!
//! - `xdp_floor`: parse Ethernet/IPv4/TCP, rewrite both MACs, XDP_TX. The least any L2
//!   forwarder must do; xdp-lb's paths are reported as ratios to it.
//! - `xdp_floor_lookup`: the floor plus one hash lookup of the 5-tuple in an LRU map shaped like
//!   the flow table: shows how much of xdp-lb's flow-hit path is that one lookup.
//! - `xdp_floor_insert`: the floor plus one insert of the 5-tuple into that map: what a new
//!   flow's record alone costs (the kernel's LRU insert), against xdp-lb's whole new flow.
//! - `xdp_floor6`, `xdp_floor6_lookup`: the same two for an IPv6 frame, the lookup's key the
//!   data plane's 40-byte `FlowKey6`: with the two above they split xdp-lb's IPv6 hit cost
//!   into the IPv6 parse and the longer key's hash and compare (issue 18).
//! - `xdp_empty`: return XDP_PASS. The fixed cost of BPF_PROG_TEST_RUN itself, subtracted from
//!   rows measured with `repeat = 1`.
//!
//! For `cargo xtask bench --compare`'s forwarding rate (live frames through the namespaces):
//! - `xdp_gen`: the traffic generator, run with BPF_PROG_TEST_RUN in live-frames mode in the
//!   client namespace: writes the frame from `GEN_TEMPLATE` with the next of its CPU's `GEN_FLOWS`
//!   source ports (fixing the TCP checksum, so the kernel's NAT accepts it) and sends it out
//!   (XDP_TX). It rewrites the whole frame each time because live-frames mode recycles pages
//!   without re-initialising them, and a page can come back modified by whatever handled the
//!   frame downstream (the kernel's NAT rewrites addresses and MACs in place). An IPv6 template
//!   (by its ether type) is a 74-byte frame whose TCP header follows the fixed IPv6 header.
//! - `xdp_floor_live`: the floor as a real forwarder: MACs and egress interface from
//!   `FLOOR_FWD`; XDP_TX, or a redirect when the egress is another interface.
//! - `xdp_sink`: on each backend, counts and drops the generator's frames (IPv4 id
//!   `GEN_IP_ID`, or IPv6 flow label `GEN_FLOW_LABEL`), passing everything else.
// Built for BPF by the tests crate's build.rs. On the host (`cargo clippy/test --workspace`) it builds
// as an ordinary program with an empty main, so workspace-wide tools need no special casing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro hands each program its context by value"
)]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use xdp_lb_common::{FlowKey, FlowKey6, FlowValue, FlowValue6, csum};
use xdp_lb_ebpf::parse;
use xdp_lb_test_ebpf::bench::{GEN_FLOW_LABEL, GEN_IP_ID, gen_port};

/// Same key and value as the data plane's FLOWS, and as many entries as the bench's flow table
/// (1M), so that an insert or a cache-cold lookup here costs what one there does; filled by
/// the bench.
#[map]
static BENCH_FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(1 << 20, 0);

/// Same key and value as the data plane's FLOWS6; filled by the bench.
#[map]
static BENCH_FLOWS6: LruHashMap<FlowKey6, FlowValue6> = LruHashMap::with_max_entries(1024, 0);

const FLOOR_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const FLOOR_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[xdp]
pub(crate) fn xdp_floor(ctx: XdpContext) -> u32 {
    floor(&ctx, false)
}

#[xdp]
pub(crate) fn xdp_floor_lookup(ctx: XdpContext) -> u32 {
    floor(&ctx, true)
}

#[xdp]
pub(crate) fn xdp_floor_insert(ctx: XdpContext) -> u32 {
    let Ok(parse::Parsed::V4(packet)) = parse::parse(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    // XDP_TX only when the insert succeeded, so the bench sees each one happen.
    if BENCH_FLOWS
        .insert(packet.flow, FlowValue::default(), 0)
        .is_err()
    {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: bounds-checked by the parser.
    unsafe {
        (*packet.eth).dst_addr = FLOOR_DST_MAC;
        (*packet.eth).src_addr = FLOOR_SRC_MAC;
    }
    xdp_action::XDP_TX
}

/// Parse, (look the 5-tuple up,) rewrite both MACs, XDP_TX. Inlined, so each program pays for
/// exactly what it does.
#[inline(always)]
fn floor(ctx: &XdpContext, lookup: bool) -> u32 {
    // The floor is the IPv4 path's: an IPv6 frame passes.
    let Ok(parse::Parsed::V4(packet)) = parse::parse(ctx) else {
        return xdp_action::XDP_PASS;
    };
    if lookup && BENCH_FLOWS.get_ptr(packet.flow).is_none() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: bounds-checked by the parser.
    unsafe {
        (*packet.eth).dst_addr = FLOOR_DST_MAC;
        (*packet.eth).src_addr = FLOOR_SRC_MAC;
    }
    xdp_action::XDP_TX
}

#[xdp]
pub(crate) fn xdp_floor6(ctx: XdpContext) -> u32 {
    floor6(&ctx, false)
}

#[xdp]
pub(crate) fn xdp_floor6_lookup(ctx: XdpContext) -> u32 {
    floor6(&ctx, true)
}

/// The floor for an IPv6 frame: the data plane's IPv6 parse (Ethernet, then the IPv6 header
/// and TCP), (one lookup of its `FlowKey6`,) both MACs rewritten, XDP_TX.
#[inline(always)]
fn floor6(ctx: &XdpContext, lookup: bool) -> u32 {
    let Ok(parse::Parsed::Ipv6(l3_off)) = parse::parse(ctx) else {
        return xdp_action::XDP_PASS;
    };
    // The mask shows the verifier the offset's bound (14, or 18 behind a VLAN tag).
    let Ok(parse::Parsed6::Flow(packet)) = parse::parse_ipv6(ctx, l3_off & 0x3f) else {
        return xdp_action::XDP_PASS;
    };
    if lookup && BENCH_FLOWS6.get_ptr(packet.flow).is_none() {
        return xdp_action::XDP_PASS;
    }
    // The destination MAC, then the source MAC.
    let Some(macs) = parse::ptr_at::<[[u8; 6]; 2]>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds-checked just above.
    unsafe { *macs = [FLOOR_DST_MAC, FLOOR_SRC_MAC] };
    xdp_action::XDP_TX
}

#[xdp]
pub(crate) fn xdp_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Length of generated IPv4 frames (the Ethernet minimum without FCS).
const GEN_LEN: usize = 60;
/// Length of generated IPv6 frames: Ethernet, IPv6, TCP (no options, no payload).
const GEN_LEN6: usize = 74;
/// Where an IPv6 frame's TCP header starts.
const TCP6_OFF: usize = 54;

/// [0]: the frame to send, with source port `GEN_BASE_PORT` and valid checksums: `GEN_LEN`
/// bytes (IPv4, the rest zero) or `GEN_LEN6` (IPv6).
#[map]
static GEN_TEMPLATE: Array<[u8; GEN_LEN6]> = Array::with_max_entries(1, 0);

/// [0]: frames generated so far on this CPU.
#[map]
static GEN_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// [0]: the floor's new destination MAC (6 bytes), source MAC (6 bytes) and egress ifindex
/// (4 bytes, native order; 0: back out of the ingress interface).
#[map]
static FLOOR_FWD: Array<[u8; 16]> = Array::with_max_entries(1, 0);

/// [0]: generated frames this sink received.
#[map]
static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub(crate) fn xdp_gen(ctx: XdpContext) -> u32 {
    let Some(template) = GEN_TEMPLATE.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(n) = GEN_STATE.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // Each CPU its own flows, as a NIC's RSS gives each receive queue its own: generator
    // threads on two CPUs feed two queues of the node under test with disjoint flows.
    // SAFETY: bpf_get_smp_processor_id has no preconditions.
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    // SAFETY: a per-CPU slot.
    let port = unsafe {
        let port = gen_port(cpu, *n);
        *n = n.read().wrapping_add(1);
        u16::from_ne_bytes(port.to_be_bytes())
    };
    if template[12..14] == [0x86, 0xdd] {
        let Some(frame) = parse::ptr_at::<[u8; GEN_LEN6]>(&ctx, 0) else {
            return xdp_action::XDP_ABORTED;
        };
        // SAFETY: both are GEN_LEN6 bytes, the frame's bounds checked by ptr_at.
        unsafe {
            *frame = *template;
            let f = &mut *frame;
            let old = u16::from_ne_bytes([f[TCP6_OFF], f[TCP6_OFF + 1]]);
            let delta = csum::fold((!old) as u32 + port as u32);
            let check = u16::from_ne_bytes([f[TCP6_OFF + 16], f[TCP6_OFF + 17]]);
            let [c0, c1] = csum::apply(check, delta).to_ne_bytes();
            let [p0, p1] = port.to_ne_bytes();
            f[TCP6_OFF] = p0;
            f[TCP6_OFF + 1] = p1;
            f[TCP6_OFF + 16] = c0;
            f[TCP6_OFF + 17] = c1;
        }
        return xdp_action::XDP_TX;
    }
    let Some(frame) = parse::ptr_at::<[u8; GEN_LEN]>(&ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the frame's GEN_LEN bytes were bounds-checked by ptr_at; the template has more.
    unsafe {
        (*frame).copy_from_slice(&template[..GEN_LEN]);
    }
    let Ok(parse::Parsed::V4(packet)) = parse::parse(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the ports and the TCP checksum were bounds-checked by the parser.
    unsafe {
        let ports = &mut *packet.ports;
        let old = u16::from_ne_bytes([ports[0], ports[1]]);
        let delta = csum::fold((!old) as u32 + port as u32);
        [ports[0], ports[1]] = port.to_ne_bytes();
        *packet.l4_check = csum::apply(u16::from_ne_bytes(*packet.l4_check), delta).to_ne_bytes();
    }
    xdp_action::XDP_TX
}

#[xdp]
pub(crate) fn xdp_floor_live(ctx: XdpContext) -> u32 {
    let Ok(parse::Parsed::V4(packet)) = parse::parse(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let Some(fwd) = FLOOR_FWD.get(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds-checked by the parser.
    unsafe {
        (*packet.eth).dst_addr.copy_from_slice(&fwd[..6]);
        (*packet.eth).src_addr.copy_from_slice(&fwd[6..12]);
    }
    let ifindex = u32::from_ne_bytes([fwd[12], fwd[13], fwd[14], fwd[15]]);
    if ifindex == 0 {
        return xdp_action::XDP_TX;
    }
    // SAFETY: a helper call.
    unsafe { aya_ebpf::helpers::bpf_redirect(ifindex, 0) as u32 }
}

#[xdp]
pub(crate) fn xdp_sink(ctx: XdpContext) -> u32 {
    let ours = match parse::parse(&ctx) {
        // SAFETY: bounds-checked by the parser.
        Ok(parse::Parsed::V4(packet)) => (unsafe { (*packet.ip).id }) == GEN_IP_ID.to_be_bytes(),
        Ok(parse::Parsed::Ipv6(l3_off)) => match parse::ptr_at::<[u8; 4]>(&ctx, l3_off & 0x3f) {
            // SAFETY: bounds-checked by ptr_at.
            Some(h) => (unsafe { u32::from_be_bytes(*h) }) & 0xf_ffff == GEN_FLOW_LABEL,
            None => false,
        },
        // IPIP (the tunnel rows): the generator's frame inside, its id 20 bytes further on.
        Err(_) => ipip_inner_id(&ctx) == Some(GEN_IP_ID.to_be_bytes()),
    };
    if !ours {
        return xdp_action::XDP_PASS;
    }
    if let Some(c) = SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

/// The inner IPv4 identification of an untagged IPIP frame (outer IPv4 without options,
/// protocol 4), if it is one.
#[inline(always)]
fn ipip_inner_id(ctx: &XdpContext) -> Option<[u8; 2]> {
    let h: *const [u8; 40] = parse::ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked by ptr_at (Ethernet 14 + outer 20 + 6 of the inner header).
    let h = unsafe { &*h };
    (h[12..14] == [0x08, 0x00] && h[14] == 0x45 && h[23] == 4).then(|| [h[38], h[39]])
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
