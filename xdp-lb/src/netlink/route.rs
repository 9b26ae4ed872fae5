//! The routes of `[announce]`: one host route per announced VIP in a table of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteScope};
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError, host_prefix};

impl Netlink {
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
                if e.code.map(std::num::NonZero::get) == Some(-libc::ESRCH) =>
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
}
