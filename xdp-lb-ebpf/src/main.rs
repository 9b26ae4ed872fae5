//! The xdp-lb data plane: for each TCP/IPv4 frame to a VIP, choose a backend and forward the
//! frame to it (L2 DSR). Everything else goes on to the kernel untouched.
//!
//! Per packet: parse (`parse.rs`) → choose a backend (`balance.rs`) → rewrite and forward
//! (`forward.rs`) → count (`stats.rs`). Everything that can be precomputed — Maglev tables,
//! backend MACs and egress interfaces, per-VIP seeds — is precomputed by the agent.
// Built for BPF by xdp-lb's build.rs. On the host (`cargo clippy/test --workspace`) it builds
// as an ordinary program with an empty main, so workspace-wide tools need no special casing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod balance;
mod flow_log;
mod forward;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use xdp_lb_common::Counter;

use crate::{
    maps::{BACKEND_STATS, SETTINGS, VIP_STATS},
    stats::{add_traffic, count},
};

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    match try_xdp_lb(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            verdict_for(reason)
        }
    }
}

#[inline(always)]
fn try_xdp_lb(ctx: &XdpContext) -> Result<u32, Counter> {
    let packet = parse::parse(ctx)?;
    // Array lookups are inlined by the verifier: a few instructions and a 6-byte compare.
    if let Some(settings) = SETTINGS.get(0)
        && settings.check_local_mac != 0
        // SAFETY: bounds-checked by the parser.
        && unsafe { (*packet.eth).dst_addr } != settings.local_mac
    {
        return Err(Counter::PassNotLocalMac);
    }
    let forwarded = balance::choose_backend(&packet.flow).and_then(|choice| {
        forward::forward_dsr(ctx, packet.eth, choice.backend).map(|action| (choice, action))
    });
    let (choice, action) = match forwarded {
        Ok(v) => v,
        Err(reason) => {
            if !matches!(reason, Counter::PassNotVip | Counter::PassNotLocalMac) {
                // A VIP packet we could not forward: worth a line in the flow log.
                flow_log::drop(&packet.flow, reason);
                if matches!(
                    reason,
                    Counter::DropBadBackend | Counter::DropRedirectFailed
                ) {
                    // Should not happen: the agent's maps are inconsistent or an interface left.
                    debug!(
                        ctx,
                        "xdp-lb: dropped a VIP packet, reason {}", reason as u32
                    );
                }
            }
            return Err(reason);
        }
    };
    // Counted after forwarding so the verdict is known; a failed redirect was counted as a drop.
    let tx = action == xdp_action::XDP_TX;
    add_traffic(&VIP_STATS, choice.vip_id, packet.len, choice.new_flow, tx);
    add_traffic(
        &BACKEND_STATS,
        choice.backend_id,
        packet.len,
        choice.new_flow,
        tx,
    );
    Ok(action)
}

/// The verdict for a frame we do not forward: `Pass*` reasons go to the kernel, the rest drop.
#[inline(always)]
fn verdict_for(reason: Counter) -> u32 {
    match reason {
        Counter::PassNotIpv4
        | Counter::PassNotTcp
        | Counter::PassNotVip
        | Counter::PassFragment
        | Counter::PassNotLocalMac => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
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
