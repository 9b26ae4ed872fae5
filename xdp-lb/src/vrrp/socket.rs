//! The instance's sockets: raw protocol 112 on its interface (IPv4: one socket that receives
//! with the IP header and sends; IPv6: a receiving one asking for destination and hop limit,
//! and a sending one bound to the link-local address), and how an advert is read from them.

use std::{
    mem::MaybeUninit,
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6},
    os::fd::AsRawFd as _,
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

use super::packet::{IPPROTO_VRRP, VRRP_GROUP, VRRP_GROUP_V6, VRRP_TTL, split_ipv4};
use crate::config::VrrpConfig;

/// A received advert: where from, where to, its TTL or hop limit, and the VRRP message.
pub(super) struct Received {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) ttl: u8,
    pub(super) msg: Vec<u8>,
}

/// A step of setting the sockets up that failed: what it was, and the kernel's answer
/// (`VrrpError::Io` at the instance's boundary).
pub(super) type StepFailed = (&'static str, std::io::Error);

/// The instance's sockets: the receiving one, registered with tokio (IPv4: it sends too), and
/// for IPv6 the sending one (see `open_v6`).
pub(super) fn open(
    cfg: &VrrpConfig,
    ifindex: u32,
    primary: IpAddr,
) -> Result<(AsyncFd<Socket>, Option<Socket>), StepFailed> {
    let (socket, sender) = match primary {
        IpAddr::V4(primary) => (open_v4(cfg, ifindex, primary)?, None),
        IpAddr::V6(link_local) => {
            let (rx, tx) = open_v6(cfg, ifindex, link_local)?;
            (rx, Some(tx))
        }
    };
    socket
        .set_nonblocking(true)
        .map_err(|e| ("non-blocking", e))?;
    // SAFETY: the socket owns its fd for as long as the AsyncFd owns the socket.
    let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|e| ("registering with tokio", e.into_parts().1))?;
    Ok((socket, sender))
}

/// One advert from the socket of an instance whose primary address is `primary`'s family:
/// `Ok(None)` for an IPv4 packet too short for its header, or an IPv6 one without the ancillary
/// data we asked for.
pub(super) fn recv(socket: &Socket, primary: IpAddr) -> std::io::Result<Option<Received>> {
    match primary {
        IpAddr::V4(_) => recv_v4(socket),
        IpAddr::V6(_) => recv_v6(socket),
    }
}

/// One IPv4 advert: the raw socket hands us the IP header, which says source, destination and
/// TTL.
fn recv_v4(socket: &Socket) -> std::io::Result<Option<Received>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let (n, _) = socket.recv_from(&mut buf)?;
    // SAFETY: recv_from initialised the first n bytes.
    let bytes: Vec<u8> = buf[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    Ok(split_ipv4(&bytes).map(|(src, dst, ttl, msg)| Received {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        ttl,
        msg: msg.to_vec(),
    }))
}

/// The IPv4 socket: raw protocol 112 (the kernel hands us the IP header), joined to
/// 224.0.0.18, sending with TTL 255 from the primary address.
fn open_v4(
    cfg: &VrrpConfig,
    ifindex: u32,
    primary: std::net::Ipv4Addr,
) -> Result<Socket, StepFailed> {
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(IPPROTO_VRRP as i32)),
    )
    .map_err(|e| ("opening a raw socket for protocol 112", e))?;
    socket
        .bind_device(Some(cfg.interface.as_bytes()))
        .map_err(|e| ("binding to the interface", e))?;
    // Not bound to an address: a raw socket bound to one only receives packets addressed to
    // it, and adverts go to 224.0.0.18. IP_MULTICAST_IF (below) makes multicast adverts
    // leave from the primary address; unicast ones take the route's preferred source.
    // RFC 5798 §5.1.1.3: TTL 255, so that receivers can tell the advert was not routed.
    socket
        .set_ttl_v4(VRRP_TTL as u32)
        .map_err(|e| ("setting the TTL", e))?;
    socket
        .set_multicast_ttl_v4(VRRP_TTL as u32)
        .map_err(|e| ("setting the multicast TTL", e))?;
    socket
        .set_multicast_loop_v4(false)
        .map_err(|e| ("disabling multicast loop", e))?;
    socket
        .set_multicast_if_v4(&primary)
        .map_err(|e| ("choosing the multicast interface", e))?;
    socket
        .join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))
        .map_err(|e| ("joining 224.0.0.18", e))?;
    Ok(socket)
}

/// The IPv6 sockets: one receiving (joined to ff02::12, asking for each packet's destination
/// and hop limit: an IPv6 raw socket gets no header), one sending, bound to the link-local
/// address, hop limit 255 (RFC 5798 §5.1.2.3).
fn open_v6(
    cfg: &VrrpConfig,
    ifindex: u32,
    link_local: Ipv6Addr,
) -> Result<(Socket, Socket), StepFailed> {
    let open = || {
        let s = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(IPPROTO_VRRP as i32)),
        )
        .map_err(|e| ("opening a raw IPv6 socket for protocol 112", e))?;
        s.bind_device(Some(cfg.interface.as_bytes()))
            .map_err(|e| ("binding to the interface", e))?;
        Ok::<_, StepFailed>(s)
    };
    let rx = open()?;
    rx.join_multicast_v6(&VRRP_GROUP_V6, ifindex)
        .map_err(|e| ("joining ff02::12", e))?;
    for option in [libc::IPV6_RECVPKTINFO, libc::IPV6_RECVHOPLIMIT] {
        set_ipv6_option(&rx, option, 1).map_err(|e| ("asking for destination and hop limit", e))?;
    }
    let tx = open()?;
    tx.set_multicast_hops_v6(VRRP_TTL as u32)
        .map_err(|e| ("setting the multicast hop limit", e))?;
    tx.set_unicast_hops_v6(VRRP_TTL as u32)
        .map_err(|e| ("setting the hop limit", e))?;
    tx.set_multicast_loop_v6(false)
        .map_err(|e| ("disabling multicast loop", e))?;
    tx.set_multicast_if_v6(ifindex)
        .map_err(|e| ("choosing the multicast interface", e))?;
    tx.bind(&SockAddr::from(SocketAddr::V6(SocketAddrV6::new(
        link_local, 0, 0, ifindex,
    ))))
    .map_err(|e| ("binding to the link-local address", e))?;
    Ok((rx, tx))
}

fn set_ipv6_option(socket: &Socket, option: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: setsockopt with a valid fd and an int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            option,
            (&value as *const i32).cast(),
            size_of::<i32>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One IPv6 advert with its source (the sender's address), destination (IPV6_PKTINFO) and hop
/// limit (IPV6_HOPLIMIT). `Ok(None)` when the ancillary data is missing.
fn recv_v6(socket: &Socket) -> std::io::Result<Option<Received>> {
    let mut data = [0u8; 2048];
    // Room for both control messages (in6_pktinfo and an int), aligned.
    let mut control = [0u64; 16];
    // SAFETY: zeroed sockaddr_in6 and msghdr are valid; the pointers set below outlive the
    // call.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: as above (a zeroed msghdr is valid; its pointers are set below).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: recvmsg on a valid fd with the buffers above.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (mut dst, mut hops) = (None, None);
    // SAFETY: walking the control messages the kernel wrote, with the libc macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    hops = Some(std::ptr::read_unaligned(data.cast::<i32>()));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
    Ok(match (dst, hops) {
        (Some(dst), Some(hops)) => Some(Received {
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            ttl: u8::try_from(hops).unwrap_or(0),
            msg: data[..n as usize].to_vec(),
        }),
        _ => None,
    })
}
