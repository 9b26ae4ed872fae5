//! What NAT needs from the host before it forwards: a source address, and kernel settings the
//! agent checks (and names the fix for) but does not change behind the operator's back.

use std::net::IpAddr;

use super::AgentError;
use crate::{
    config::{Config, Forwarding, SnatAddresses},
    netlink::{self, Netlink},
};

/// The SNAT addresses `config` needs, per family: none for a family without NAT VIPs; else
/// that family's `agent.snat_address`, or the first address of that family of
/// agent.interface that is not a VIP or VRRP address (IPv6: not link-local either).
pub(super) async fn snat_address(
    netlink: &Netlink,
    config: &Config,
) -> Result<SnatAddresses, AgentError> {
    let nat_vips = || {
        config
            .vips
            .iter()
            .filter(|v| v.forwarding == Forwarding::Nat)
    };
    let (needs_v4, needs_v6) = (
        nat_vips().any(|v| v.address.is_ipv4()),
        nat_vips().any(|v| v.address.is_ipv6()),
    );
    let configured = config.agent.snat_address;
    let mut out = SnatAddresses::default();
    let interface = &config.agent.interface;
    let exclude: Vec<IpAddr> = config
        .vips
        .iter()
        .map(|v| v.address)
        .chain(
            config
                .vrrp
                .iter()
                .flat_map(|v| v.virtual_addresses.iter().map(|(a, _)| *a)),
        )
        .collect();
    let ifindex = netlink::ifindex(interface);
    let found = async |family_v6: bool| -> Result<Option<IpAddr>, AgentError> {
        match ifindex {
            Some(ifindex) => Ok(netlink.first_address(ifindex, family_v6, &exclude).await?),
            None => Ok(None),
        }
    };
    if needs_v4 {
        out.v4 = match configured.v4 {
            Some(a) => Some(a),
            None => match found(false).await? {
                Some(IpAddr::V4(a)) => {
                    tracing::info!(snat_address = %a, interface = %interface, "NAT: connections to IPv4 backends use the interface's address (agent.snat_address has none)");
                    Some(a)
                }
                _ => return Err(AgentError::NoSnatAddress(interface.clone(), "IPv4")),
            },
        };
    }
    if needs_v6 {
        out.v6 = match configured.v6 {
            Some(a) => Some(a),
            None => match found(true).await? {
                Some(IpAddr::V6(a)) => {
                    tracing::info!(snat_address = %a, interface = %interface, "NAT: connections to IPv6 backends use the interface's address (agent.snat_address has none)");
                    Some(a)
                }
                _ => return Err(AgentError::NoSnatAddress(interface.clone(), "IPv6")),
            },
        };
    }
    Ok(out)
}

/// Says which kernel settings NAT relies on are missing and what each one breaks.
pub(super) fn check_sysctls(config: &Config) {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let iface = &config.agent.interface;
    let forwarding = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
    if read(&forwarding) != "1" {
        tracing::warn!(
            "NAT: IPv4 forwarding is off on {iface}: NAT packets are dropped (counter drop_nat_forwarding_disabled); fix: sysctl -w net.ipv4.conf.{iface}.forwarding=1"
        );
    }
    let nat6 = config
        .vips
        .iter()
        .any(|v| v.forwarding == Forwarding::Nat && v.address.is_ipv6());
    let forwarding6 = format!("/proc/sys/net/ipv6/conf/{iface}/forwarding");
    if nat6 && read(&forwarding6) != "1" {
        tracing::warn!(
            "NAT66: IPv6 forwarding is off on {iface}: IPv6 NAT packets are dropped (counter drop_nat_forwarding_disabled); fix: sysctl -w net.ipv6.conf.{iface}.forwarding=1 (which also stops the interface from taking router advertisements unless accept_ra=2)"
        );
    }
    let accept_local = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
    if read(&accept_local) != "1" {
        tracing::warn!(
            "NAT: accept_local is off on {iface}: a NAT packet whose next hop is not resolved yet (counter pass_nat_no_neighbour) is dropped by the kernel as a martian instead of being forwarded while it resolves; fix: sysctl -w net.ipv4.conf.{iface}.accept_local=1"
        );
    }
    let range = read("/proc/sys/net/ipv4/ip_local_port_range");
    let mut parts = range
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    if let (Some(lo), Some(hi)) = (parts.next(), parts.next()) {
        let (slo, shi) = config.agent.snat_port_range;
        let reserved = read("/proc/sys/net/ipv4/ip_local_reserved_ports");
        if lo <= shi && slo <= hi && reserved.is_empty() {
            tracing::warn!(
                "NAT: the kernel's ephemeral ports {lo}-{hi} overlap agent.snat_port_range {slo}-{shi}: a local connection (a health check) could share a port with a NAT flow; fix: sysctl -w net.ipv4.ip_local_reserved_ports={slo}-{shi}, or move either range"
            );
        }
    }
}
