//! Everything the agent asks the kernel about links, addresses, routes and neighbours, in one
//! place: rtnetlink for the dynamic facts, `if_nametoindex`/`if_indextoname` for names.
//!
//! Here: the connection, links (MAC, XDP attachment) and names. Beside it: `neighbour` (a DSR
//! backend's next hop), `address` (the interface's own and virtual addresses), `route` (the
//! `[announce]` table's routes).
//!
//! The backends' MACs and egress interfaces come from the kernel's routing and neighbour
//! tables, so the XDP program can forward without asking the kernel per packet. DSR works at
//! L2: a backend must be on a directly connected subnet. For each backend we ask the kernel
//! for its route (RTM_GETROUTE: which interface, via a gateway or not), then for the
//! neighbour entry on that interface. A missing or failed entry is not an error: we ask the
//! kernel to resolve it (RTM_NEWNEIGH with NTF_USE, which triggers an ARP request like a
//! packet would) and the agent looks again on its next refresh.

use std::{
    ffi::{CStr, CString},
    net::IpAddr,
};

use futures::TryStreamExt as _;
use netlink_packet_route::link::{LinkAttribute, LinkXdp};
use rtnetlink::Handle;
use thiserror::Error;

pub use self::neighbour::{L2Next, Lookup, fmt_mac};

mod address;
mod neighbour;
mod route;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
}

/// An rtnetlink connection in the agent's network namespace. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct Netlink {
    pub(super) handle: Handle,
    /// Held while a dump runs: the kernel runs one dump per netlink socket at a time and
    /// answers a second one with EBUSY (`netlink_dump_start`), and the clones (the agent, each
    /// VRRP instance) share the socket. Seen: an IPv4 and an IPv6 VRRP instance starting
    /// together, one dumping addresses while the other did, failed the agent's start.
    pub(super) dumps: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Netlink {
    /// Opens an rtnetlink connection in the current network namespace. Needs a tokio runtime.
    pub fn new() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self {
            handle,
            dumps: Default::default(),
        })
    }

    /// Whether an XDP program is attached to `ifindex` (the kernel's word, not ours).
    pub async fn xdp_attached(&self, ifindex: u32) -> Result<bool, NetlinkError> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        while let Some(link) = links.try_next().await? {
            for attr in &link.attributes {
                if let LinkAttribute::Xdp(xdp) = attr {
                    return Ok(xdp
                        .iter()
                        .any(|x| matches!(x, LinkXdp::ProgId(id) if *id != 0)));
                }
            }
        }
        Ok(false)
    }

    /// The MAC of interface `ifindex`.
    pub async fn link_mac(&self, ifindex: u32) -> Result<Option<[u8; 6]>, NetlinkError> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        while let Some(link) = links.try_next().await? {
            for attr in &link.attributes {
                if let LinkAttribute::Address(a) = attr
                    && a.len() == 6
                {
                    return Ok(Some([a[0], a[1], a[2], a[3], a[4], a[5]]));
                }
            }
        }
        Ok(None)
    }

    /// The MTU of interface `ifindex`.
    pub async fn link_mtu(&self, ifindex: u32) -> Result<Option<u32>, NetlinkError> {
        let mut links = self.handle.link().get().match_index(ifindex).execute();
        while let Some(link) = links.try_next().await? {
            for attr in &link.attributes {
                if let LinkAttribute::Mtu(mtu) = attr {
                    return Ok(Some(*mtu));
                }
            }
        }
        Ok(None)
    }
}

/// The index of interface `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of interface `ifindex`, for reports ("-" for 0, "ifindex N" when it is gone).
pub fn interface_name(ifindex: u32) -> String {
    if ifindex == 0 {
        return "-".into();
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The prefix length of a host route: 32 for IPv4, 128 for IPv6.
pub(super) fn host_prefix(a: IpAddr) -> u8 {
    if a.is_ipv6() { 128 } else { 32 }
}
