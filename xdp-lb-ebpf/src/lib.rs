//! What the data plane and the test-side programs (`test-ebpf`: the bench's floor, the traffic
//! generator) share: how a packet is parsed, and what every BPF binary needs once — its panic
//! handler and its licence.
//!
//! The data plane itself is the `xdp-lb-ebpf` binary target (`main.rs`), which `xdp-lb`'s
//! build script compiles for BPF. On the host (`cargo clippy/test --workspace`) this builds as
//! an ordinary library, so workspace-wide tools need no special casing.
#![no_std]

pub mod parse;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier proves every access in bounds, so nothing the program does can panic; an
    // endless loop would be rejected if it were ever reachable.
    loop {}
}

/// The kernel lets GPL-only helpers (`bpf_fib_lookup` among them) be called only by programs
/// that declare a GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
#[used]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
