//! What a VRRP transition tells the world: gratuitous ARP for each virtual address (so switches
//! and neighbours learn the new master's MAC; RFC 5798 §6.4.1), and the operator's notify hook
//! (keepalived's `notify`, e.g. a cloud API call that moves a floating address).

use std::{net::Ipv4Addr, time::Duration};

use super::machine::State;

/// Runs the notify hook directly (no shell) with `STATE VRID NAME`; failure is logged only.
pub(super) fn notify(program: std::path::PathBuf, state: State, vrid: u8, name: String) {
    tokio::spawn(async move {
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&program)
                .args([state.name(), &vrid.to_string(), &name])
                .stdin(std::process::Stdio::null())
                .status(),
        )
        .await;
        match result {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => {
                tracing::warn!(instance = %name, program = %program.display(), status = %s, "notify hook failed")
            }
            Ok(Err(e)) => {
                tracing::warn!(instance = %name, program = %program.display(), error = %e, "notify hook could not run")
            }
            Err(_) => {
                tracing::warn!(instance = %name, program = %program.display(), "notify hook still running after 30 s; not waited for")
            }
        }
    });
}

/// A gratuitous ARP request: sender and target protocol address both the VIP, broadcast.
fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&vip.octets());
    f
}

pub(super) fn send_garps(name: &str, ifindex: u32, mac: [u8; 6], vips: &[Ipv4Addr], count: u32) {
    const ETH_P_ARP: u16 = 0x0806;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (ETH_P_ARP.to_be()) as i32) };
    if fd < 0 {
        tracing::warn!(instance = %name, error = %std::io::Error::last_os_error(), "cannot open a packet socket for gratuitous ARP");
        return;
    }
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for _ in 0..count {
        for vip in vips {
            let frame = garp_frame(mac, *vip);
            // SAFETY: valid buffer and address for the duration of the call.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc < 0 {
                tracing::warn!(instance = %name, error = %std::io::Error::last_os_error(), "sending a gratuitous ARP failed");
            }
        }
    }
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_is_a_broadcast_arp_request_for_the_vip() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[198, 18, 0, 100], "sender = VIP");
        assert_eq!(&f[38..42], &[198, 18, 0, 100], "target = VIP");
    }
}
