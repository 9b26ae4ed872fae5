//! Where the NAT code builds its map keys and entries (`NatSlots`), and how they are zeroed:
//! shared by `nat.rs`, which fills them, and `maps.rs`, whose per-CPU `NAT6_SLOTS` holds
//! NAT66's.

use xdp_lb_common::{FlowTuple, FlowValueOf};

/// The keys and entries the NAT code builds for its map calls. The IPv4 path keeps them on
/// its stack; the IPv6 path, whose 128-bit addresses make them larger than its stack has room
/// for (see `ipv6.rs`), in a per-CPU array (`NAT6_SLOTS`). Each probe of `create` reuses the
/// same slots.
#[repr(C)]
pub(crate) struct NatSlots<K: FlowTuple> {
    pub key: K,
    pub reply: FlowValueOf<K::Addr>,
    pub forward: FlowValueOf<K::Addr>,
}

impl<K: FlowTuple> NatSlots<K> {
    /// Zeroes `slot` in place (`zero_words`) and returns it: 128 bytes on each new NAT flow
    /// and each promotion, which a struct literal (or a value returned and copied) would zero
    /// with a call of the object's byte-loop `memset`.
    #[inline(always)]
    pub(crate) fn zeroed_in(slot: &mut core::mem::MaybeUninit<Self>) -> &mut Self {
        zero_words(slot.as_mut_ptr());
        // SAFETY: every byte is written, and all zeros is a valid value of these plain
        // integer structs.
        unsafe { slot.assume_init_mut() }
    }
}

/// Zeroes `*p` with 32-bit volatile stores. `zeroed()`, `Default` or a literal of zeros
/// compile for BPF to a call of the object's `memset`, a byte loop (found in the disassembly
/// after the profile showed it, issue 18); volatile stores are never merged back into one.
#[inline(always)]
pub(crate) fn zero_words<T>(p: *mut T) {
    const { assert!(size_of::<T>().is_multiple_of(4) && align_of::<T>() >= 4) };
    let words = p.cast::<u32>();
    for i in 0..size_of::<T>() / 4 {
        // SAFETY: inside the caller's value, 4-aligned (asserted above).
        unsafe { words.add(i).write_volatile(0) };
    }
}
