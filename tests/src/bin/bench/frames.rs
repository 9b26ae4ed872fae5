//! The bench's frames (the i-th distinct flow to each VIP) and their flow-table keys, and the
//! removal of a round's new flows so the next round's are new again.

use super::*;

/// The i-th distinct IPv6 client flow to "web6" (source address and port both vary), a
/// segment with `flags`.
pub(super) fn flow6(i: u32, flags: u8) -> Vec<u8> {
    let mut tcp = xdp_lb_tests::packet::tcp_header();
    tcp[0..2].copy_from_slice(&(10_000 + (i % 50_000) as u16).to_be_bytes());
    tcp[13] = flags;
    let mut f = xdp_lb_tests::packet::ipv6_frame(&[], 6, &tcp);
    // The source address's last four bytes (IPv6 source at 22..38 of the frame).
    f[34..38].copy_from_slice(&i.to_be_bytes());
    f
}

/// The i-th distinct client UDP flow to "dns" (a 32-byte query-sized payload).
pub(super) fn udp_flow(i: u32) -> Frame {
    let mut f = flow(i);
    f.proto = xdp_lb_common::IPPROTO_UDP;
    f.dport = 53;
    f.payload = vec![0x5a; 32];
    f
}

/// The i-th distinct client flow (source address and port both vary).
pub(super) fn flow(i: u32) -> Frame {
    let mut f = Frame::tcp(
        Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8),
        10_000 + (i % 50_000) as u16,
        VIP,
        80,
    );
    f.flags = TCP_ACK;
    f
}

/// The IPv6 5-tuple of one of our own IPv6 frames (no VLAN, no extension header).
pub(super) fn frame_key6(f: &[u8]) -> xdp_lb_common::FlowKey6 {
    let mut key = xdp_lb_common::FlowKey6 {
        src_port_be: u16::from_ne_bytes([f[54], f[55]]),
        dst_port_be: u16::from_ne_bytes([f[56], f[57]]),
        proto: 6,
        ..Default::default()
    };
    key.src_addr.copy_from_slice(&f[22..38]);
    key.dst_addr.copy_from_slice(&f[38..54]);
    key
}

/// The 5-tuple at fixed offsets of our own frames (no VLAN, IHL 5).
pub(super) fn frame_key(f: &[u8]) -> anyhow::Result<xdp_lb_common::FlowKey> {
    Ok(xdp_lb_common::FlowKey {
        src_addr: u32::from_ne_bytes(f[26..30].try_into()?),
        dst_addr: u32::from_ne_bytes(f[30..34].try_into()?),
        src_port_be: u16::from_ne_bytes(f[34..36].try_into()?),
        dst_port_be: u16::from_ne_bytes(f[36..38].try_into()?),
        proto: f[23],
        _pad: [0; 3],
    })
}

pub(super) fn forget_flows(lb: &mut Loaded, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut flows = lb.pinned_flow_table(map_names::FLOWS)?;
    for f in frames {
        let key = frame_key(f)?;
        if let Err(e) = flows.remove(&key) {
            bail!("removing a bench flow: {e}");
        }
    }
    Ok(())
}

/// Removes the IPv6 bench flows of `frames` from `FLOWS6` (the next round's are new again).
pub(super) fn forget_flows6(lb: &mut Loaded, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut flows =
        lb.pinned_flows::<xdp_lb_common::FlowKey6, xdp_lb_common::FlowValue6>(map_names::FLOWS6)?;
    for f in frames {
        let key = frame_key6(f);
        if let Err(e) = flows.remove(&key) {
            bail!("removing an IPv6 bench flow: {e}");
        }
    }
    Ok(())
}
