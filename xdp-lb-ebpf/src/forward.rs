//! L2 direct server return: only the MACs change. The backend holds the VIP on a loopback
//! (arp_ignore=1, arp_announce=2) and answers the client directly, so IP and TCP headers and
//! their checksums stay as the client sent them.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use network_types::eth::EthHdr;
use xdp_lb_common::{BackendInfo, Counter};

use crate::maps::TX_PORTS;

/// Writes a MAC address into the frame. Not `*dst = *src`: LLVM lowers a 6-byte array copy
/// to a call of the BPF object's `memmove`, a byte loop (profiled: ~8% of a flow-table hit,
/// two calls per frame); six volatile byte stores stay inline and cannot be merged back into
/// that call.
#[inline(always)]
pub(crate) fn set_mac(dst: *mut [u8; 6], src: &[u8; 6]) {
    let d = dst as *mut u8;
    for (i, b) in src.iter().enumerate() {
        // SAFETY: the caller's pointer is to 6 writable bytes (bounds-checked frame memory).
        unsafe { core::ptr::write_volatile(d.add(i), *b) };
    }
}

#[inline(always)]
pub(crate) fn forward_dsr(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    backend: *const BackendInfo,
) -> Result<u32, Counter> {
    // SAFETY: eth was bounds-checked by the parser and the frame has not been resized since;
    // backend is a map value pointer.
    let ifindex = unsafe {
        set_mac(&raw mut (*eth).dst_addr, &(*backend).mac);
        set_mac(&raw mut (*eth).src_addr, &(*backend).src_mac);
        (*backend).ifindex
    };
    if ifindex as usize == ctx.ingress_ifindex() {
        return Ok(xdp_action::XDP_TX);
    }
    // On a failed lookup the helper returns the low bits of flags: XDP_DROP.
    match TX_PORTS.redirect(ifindex, xdp_action::XDP_DROP as u64) {
        Ok(action) => Ok(action),
        Err(_) => Err(Counter::DropRedirectFailed),
    }
}
