//! What NAT needs from the host before it forwards: a source address, and kernel settings the
//! agent checks (and names the fix for) but does not change behind the operator's back.

use std::net::Ipv4Addr;

use super::AgentError;
use crate::{
    config::{Config, Forwarding},
    netlink::{self, Netlink},
};

/// The SNAT address `config` needs: None without NAT VIPs; else agent.snat_address, or the
/// first IPv4 address of agent.interface that is not a VIP.
pub(super) async fn snat_address(
    netlink: &Netlink,
    config: &Config,
) -> Result<Option<Ipv4Addr>, AgentError> {
    if !config.vips.iter().any(|v| v.forwarding == Forwarding::Nat) {
        return Ok(None);
    }
    if let Some(a) = config.agent.snat_address {
        return Ok(Some(a));
    }
    let interface = &config.agent.interface;
    let mut exclude: Vec<Ipv4Addr> = config
        .vips
        .iter()
        .filter_map(|v| match v.address {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    exclude.extend(
        config
            .vrrp
            .iter()
            .flat_map(|v| v.virtual_addresses.iter())
            .filter_map(|(a, _)| match a {
                std::net::IpAddr::V4(a) => Some(*a),
                std::net::IpAddr::V6(_) => None,
            }),
    );
    let found = match netlink::ifindex(interface) {
        Some(ifindex) => netlink.primary_ipv4(ifindex, &exclude).await?,
        None => None,
    };
    match found {
        Some(a) => {
            tracing::info!(snat_address = %a, interface = %interface, "NAT: connections to backends use the interface's address (agent.snat_address unset)");
            Ok(Some(a))
        }
        None => Err(AgentError::NoSnatAddress(interface.clone())),
    }
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
