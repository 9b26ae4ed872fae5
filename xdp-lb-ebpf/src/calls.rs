//! What a function called below `xdp_lb` (a BPF-to-BPF call of its own: the IPv6 path's
//! steps, the tunnel) needs to take its context.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};

/// The program's context in a call below `xdp_lb`. Read through a volatile load so LLVM cannot
/// see that a callee only loads `data` and `data_end` from it: it would then pass those two
/// 32-bit fields instead of the pointer (argument promotion) and zero-extend them in the
/// callee, a shift of a packet pointer that the verifier refuses ("pointer arithmetic with
/// <<= operator prohibited").
#[inline(always)]
pub(crate) fn context(ctx: *mut xdp_md) -> XdpContext {
    // SAFETY: a read of a local.
    XdpContext::new(unsafe { core::ptr::read_volatile(&ctx) })
}
