//! A backend's next hop for DSR: its route (RTM_GETROUTE: which interface, via a gateway or
//! not), then its neighbour entry on that interface; a missing entry is asked for (RTM_NEWNEIGH
//! with NTF_USE, an ARP request or a neighbour solicitation).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState},
    route::{RouteAddress, RouteAttribute},
};
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError};

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
            // What it means depends on the VIP: fine for NAT and tunnels, not for DSR (the
            // caller says so where it matters).
            Lookup::NotOnLink { via } => format!("routed via gateway {via}"),
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

impl Netlink {
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

    pub(super) async fn neighbour(
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
                        dst = Some(IpAddr::V4(*a));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        dst = Some(IpAddr::V6(*a));
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
    pub(super) async fn request_resolution(&self, ifindex: u32, addr: IpAddr) {
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
