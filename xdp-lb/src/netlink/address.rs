//! The interface's own addresses: the primary ones the agent sends from (VRRP adverts, SNAT),
//! and the virtual addresses VRRP adds and removes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt as _;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};

use super::{Netlink, NetlinkError};

impl Netlink {
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

    /// Every address of every interface of this network namespace (`xdp-lb decap` opens
    /// tunnels to any of them).
    pub async fn all_addresses(&self) -> Result<Vec<IpAddr>, NetlinkError> {
        self.addresses_of(None).await
    }

    /// The addresses of `ifindex`, in the kernel's order (primary before secondary).
    pub(super) async fn addresses(&self, ifindex: u32) -> Result<Vec<IpAddr>, NetlinkError> {
        self.addresses_of(Some(ifindex)).await
    }

    async fn addresses_of(&self, ifindex: Option<u32>) -> Result<Vec<IpAddr>, NetlinkError> {
        let _dump = self.dumps.lock().await;
        let mut found = Vec::new();
        let mut request = self.handle.address().get();
        if let Some(ifindex) = ifindex {
            request = request.set_link_index_filter(ifindex);
        }
        let mut addrs = request.execute();
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
