//! Everything the agent asks the kernel about links, addresses, routes and neighbours, in one
//! place: rtnetlink for the dynamic facts, `if_nametoindex`/`if_indextoname` for names.
//!
//! The backends' MACs and egress interfaces come from the kernel's routing and neighbour
//! tables, so the XDP program can forward without asking the kernel per packet. DSR works at L2: a backend must be on a directly connected subnet. For each backend we ask
//! the kernel for its route (RTM_GETROUTE: which interface, via a gateway or not), then for the
//! neighbour entry on that interface. A missing or failed entry is not an error: we ask the
//! kernel to resolve it (RTM_NEWNEIGH with NTF_USE, which triggers an ARP request like a packet
//! would) and the agent looks again on its next refresh.

use std::{
    ffi::{CStr, CString},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures::TryStreamExt as _;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags},
    link::{LinkAttribute, LinkXdp},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteProtocol, RouteScope},
};
use rtnetlink::{Handle, RouteMessageBuilder};
use thiserror::Error;

/// Where and how to send a frame to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct L2Next {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub src_mac: [u8; 6],
}

/// What the kernel knows about a backend address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Usable now.
    Resolved(L2Next),
    /// On-link through `ifindex`, but the MAC is not known (yet): resolution was requested.
    Pending { ifindex: u32, state: &'static str },
    /// Routed through a gateway: not reachable at L2, so not usable for DSR.
    NotOnLink { via: IpAddr },
    /// No route at all.
    NoRoute,
}

impl Lookup {
    /// A short reason for logs and status.
    pub fn describe(&self) -> String {
        match self {
            Lookup::Resolved(n) => format!("{} via ifindex {}", fmt_mac(&n.mac), n.ifindex),
            Lookup::Pending { ifindex, state } => {
                format!("neighbour {state} on ifindex {ifindex}, resolution requested")
            }
            Lookup::NotOnLink { via } => {
                format!(
                    "routed via gateway {via}; DSR needs the backend on a directly connected subnet"
                )
            }
            Lookup::NoRoute => "no route to the backend".into(),
        }
    }
}

pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

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
    handle: Handle,
    /// Held while a dump runs: the kernel runs one dump per netlink socket at a time and
    /// answers a second one with EBUSY (`netlink_dump_start`), and the clones (the agent, each
    /// VRRP instance) share the socket. Seen: an IPv4 and an IPv6 VRRP instance starting
    /// together, one dumping addresses while the other did, failed the agent's start.
    dumps: std::sync::Arc<tokio::sync::Mutex<()>>,
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

    /// IPv6 backends are resolved the same way: the kernel's neighbour table holds both
    /// families, and NTF_USE makes it send a neighbour solicitation (NDP, RFC 4861) instead of
    /// an ARP request.
    pub async fn lookup(&self, addr: IpAddr) -> Result<Lookup, NetlinkError> {
        let Some((ifindex, gateway)) = self.route(addr).await? else {
            return Ok(Lookup::NoRoute);
        };
        if let Some(via) = gateway {
            return Ok(Lookup::NotOnLink { via });
        }
        let (state, mac) = self.neighbour(ifindex, addr).await?;
        match (state, mac) {
            (
                NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
                | NeighbourState::Noarp,
                Some(mac),
            ) => {
                if matches!(state, NeighbourState::Stale) {
                    // Forwarded frames bypass the kernel, so it never confirms this entry
                    // itself; nudge it to re-verify so a moved MAC is noticed.
                    self.request_resolution(ifindex, addr).await;
                }
                let Some(src_mac) = self.link_mac(ifindex).await? else {
                    return Ok(Lookup::Pending {
                        ifindex,
                        state: "on an interface without a MAC",
                    });
                };
                Ok(Lookup::Resolved(L2Next {
                    ifindex,
                    mac,
                    src_mac,
                }))
            }
            (state, _) => {
                self.request_resolution(ifindex, addr).await;
                Ok(Lookup::Pending {
                    ifindex,
                    state: state_name(state),
                })
            }
        }
    }

    /// The route to `addr`: (egress ifindex, gateway if not on-link); None without a route.
    /// Only asks: nothing is sent, no neighbour is resolved.
    pub async fn route(&self, addr: IpAddr) -> Result<Option<(u32, Option<IpAddr>)>, NetlinkError> {
        let request = match addr {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .build(),
        };
        let _dump = self.dumps.lock().await;
        let mut routes = self.handle.route().get(request).execute();
        let route = match routes.try_next().await {
            Ok(Some(route)) => route,
            Ok(None) => return Ok(None),
            // ENETUNREACH / EHOSTUNREACH come back as errors of the request.
            Err(rtnetlink::Error::NetlinkError(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut oif = None;
        let mut gateway = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
                _ => {}
            }
        }
        Ok(oif.map(|oif| (oif, gateway)))
    }

    async fn neighbour(
        &self,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<(NeighbourState, Option<[u8; 6]>), NetlinkError> {
        let family = match addr {
            IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
        };
        let _dump = self.dumps.lock().await;
        let mut dump = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(msg) = dump.try_next().await? {
            if msg.header.ifindex != ifindex {
                continue;
            }
            let mut dst = None;
            let mut lladdr = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        dst = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        dst = Some(IpAddr::V6(*a))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        lladdr = Some([l[0], l[1], l[2], l[3], l[4], l[5]]);
                    }
                    _ => {}
                }
            }
            if dst == Some(addr) {
                return Ok((msg.header.state, lladdr));
            }
        }
        Ok((NeighbourState::None, None))
    }

    /// Asks the kernel to (re)resolve `addr` on `ifindex`: RTM_NEWNEIGH with NTF_USE makes
    /// neigh_add() call neigh_event_send(), exactly what an outgoing packet would do.
    async fn request_resolution(&self, ifindex: u32, addr: IpAddr) {
        let request = self
            .handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace();
        if let Err(err) = request.execute().await {
            tracing::debug!(%addr, ifindex, %err, "neighbour resolution request failed");
        }
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

    /// The first IPv4 address of `ifindex` that is not in `exclude` (the VIPs, which VRRP adds
    /// and removes): the default SNAT address and VRRP's advert source. The kernel lists an
    /// interface's primary addresses before its secondaries.
    pub async fn primary_ipv4(
        &self,
        ifindex: u32,
        exclude: &[Ipv4Addr],
    ) -> Result<Option<Ipv4Addr>, NetlinkError> {
        let exclude: Vec<IpAddr> = exclude.iter().map(|a| IpAddr::V4(*a)).collect();
        Ok(match self.first_address(ifindex, false, &exclude).await? {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        })
    }

    /// The first address of one family of `ifindex` that is not in `exclude` (IPv6: nor
    /// link-local), in the kernel's order: NAT's default source address.
    pub async fn first_address(
        &self,
        ifindex: u32,
        v6: bool,
        exclude: &[IpAddr],
    ) -> Result<Option<IpAddr>, NetlinkError> {
        Ok(self
            .addresses(ifindex)
            .await?
            .into_iter()
            .find(|a| match a {
                IpAddr::V4(_) => !v6 && !exclude.contains(a),
                IpAddr::V6(v) => v6 && !v.is_unicast_link_local() && !exclude.contains(a),
            }))
    }

    /// The addresses of `ifindex`, in the kernel's order (primary before secondary).
    async fn addresses(&self, ifindex: u32) -> Result<Vec<IpAddr>, NetlinkError> {
        let _dump = self.dumps.lock().await;
        let mut found = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        while let Some(msg) = addrs.try_next().await? {
            // IFA_LOCAL is the address itself on point-to-point links, where IFA_ADDRESS is
            // the peer's; elsewhere both are the same.
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(a) => Some(*a),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(a) => Some(*a),
                _ => None,
            });
            found.extend(local.or(address));
        }
        Ok(found)
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
    /// Puts `addr/32` (IPv6: `/128`) `dev ifindex scope link proto protocol` into routing
    /// `table` (replacing an identical one): how a VIP is offered to the routing engine
    /// (`route_announce`).
    pub async fn add_table_route(
        &self,
        table: u32,
        protocol: u8,
        ifindex: u32,
        addr: IpAddr,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, host_prefix(addr))
            .map_err(|e| NetlinkError::Socket(std::io::Error::other(e.to_string())))?
            .output_interface(ifindex)
            .table_id(table)
            .protocol(RouteProtocol::from(protocol))
            .scope(RouteScope::Link)
            .build();
        self.handle.route().add(route).replace().execute().await?;
        Ok(())
    }

    /// Removes `addr/32` from routing `table`; absent is not an error.
    pub async fn remove_table_route(
        &self,
        table: u32,
        protocol: u8,
        addr: IpAddr,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, host_prefix(addr))
            .map_err(|e| NetlinkError::Socket(std::io::Error::other(e.to_string())))?
            .table_id(table)
            .protocol(RouteProtocol::from(protocol))
            // RT_SCOPE_NOWHERE matches a route of any scope (fib_table_delete); the builder's
            // default, universe, would miss our scope-link route and answer ESRCH.
            .scope(RouteScope::NoWhere)
            .build();
        match self.handle.route().del(route).execute().await {
            // ESRCH: no such route.
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| c.get()) == Some(-libc::ESRCH) =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
            Ok(()) => Ok(()),
        }
    }

    /// The host routes (`/32`, `/128`) in routing `table` put there with `protocol` (what a
    /// previous agent announced), both families.
    pub async fn table_routes(
        &self,
        table: u32,
        protocol: u8,
    ) -> Result<Vec<IpAddr>, NetlinkError> {
        let _dump = self.dumps.lock().await;
        let mut found = Vec::new();
        let v4 = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let v6 = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute();
        let mut dump = futures::StreamExt::chain(v4, v6);
        while let Some(route) = dump.try_next().await? {
            let in_table = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            });
            let in_table = in_table.unwrap_or(route.header.table as u32);
            if in_table != table || route.header.protocol != RouteProtocol::from(protocol) {
                continue;
            }
            for attr in &route.attributes {
                let a = match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => IpAddr::V4(*a),
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => IpAddr::V6(*a),
                    _ => continue,
                };
                if route.header.destination_prefix_length == host_prefix(a) {
                    found.push(a);
                }
            }
        }
        Ok(found)
    }

    /// Adds `addr/prefix` to `ifindex` (replacing an identical one). An IPv6 address is added
    /// without duplicate address detection (IFA_F_NODAD): a VRRP master must answer for it at
    /// once, and the backup that might also hold it does not (VRRP decides, not DAD); and
    /// deprecated, so that it is never a source address (below).
    pub async fn add_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut request = self.handle.address().add(ifindex, addr, prefix).replace();
        if addr.is_ipv6() {
            let attributes = &mut request.message_mut().attributes;
            attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            // Preferred lifetime 0 ("deprecated", valid forever): the address is answered
            // for but never chosen as a source (RFC 6724 §5, rule 3). Linux otherwise
            // prefers a VIP's /128 over the interface's /64 for destinations in the same
            // subnet (rule 8, with the match capped at each prefix length), and the node's
            // own connections — health checks to DSR backends, which hold the VIP on lo —
            // would leave from the VIP and their answers never come back.
            let mut lifetimes = netlink_packet_route::address::CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            attributes.push(AddressAttribute::CacheInfo(lifetimes));
        }
        request.execute().await?;
        Ok(())
    }

    /// Removes `addr` (whatever its prefix) from `ifindex`; absent is not an error.
    pub async fn remove_address(&self, ifindex: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        let _dump = self.dumps.lock().await;
        let mut found = Vec::new();
        let mut dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute();
        while let Some(msg) = dump.try_next().await? {
            let has = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Local(x) | AddressAttribute::Address(x) if *x == addr)
            });
            if has {
                found.push(msg);
            }
        }
        for msg in found {
            self.handle.address().del(msg).execute().await?;
        }
        Ok(())
    }

    /// The IPv6 link-local address of `ifindex` (fe80::/10): a VRRP IPv6 instance's source
    /// address and tie-breaker (RFC 5798 §5.1.2.1).
    pub async fn link_local_ipv6(&self, ifindex: u32) -> Result<Option<Ipv6Addr>, NetlinkError> {
        Ok(self
            .addresses(ifindex)
            .await?
            .into_iter()
            .find_map(|a| match a {
                IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => Some(a),
                _ => None,
            }))
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

fn state_name(state: NeighbourState) -> &'static str {
    match state {
        NeighbourState::Incomplete => "incomplete",
        NeighbourState::Failed => "failed",
        NeighbourState::None => "absent",
        NeighbourState::Reachable => "reachable",
        NeighbourState::Stale => "stale",
        NeighbourState::Delay => "delay",
        NeighbourState::Probe => "probe",
        NeighbourState::Permanent => "permanent",
        NeighbourState::Noarp => "noarp",
        _ => "unknown",
    }
}

/// The prefix length of a host route: 32 for IPv4, 128 for IPv6.
fn host_prefix(a: IpAddr) -> u8 {
    if a.is_ipv6() { 128 } else { 32 }
}
