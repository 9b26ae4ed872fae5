//! What NAT and tunnels need from the host before they forward: source addresses (NAT's SNAT
//! address, the tunnels' outer source), the interface's MTU, and kernel settings the agent
//! checks (and names the fix for) but does not change behind the operator's back.

use std::net::IpAddr;

use super::AgentError;
use crate::{
    config::{Config, FamilyAddresses, Forwarding},
    netlink::{self, Netlink},
};

/// Who needs a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// NAT's SNAT address (`agent.snat_address`), per VIP family.
    Snat,
    /// The tunnels' outer source (`agent.tunnel_source`), per backend family.
    Tunnel,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Snat => "agent.snat_address",
            Role::Tunnel => "agent.tunnel_source",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Snat => "NAT",
            Role::Tunnel => "a tunnel VIP",
        }
    }

    /// Says which of the interface's addresses the role uses (the key naming none), as a
    /// field named after the key (`snat_address=…`, `tunnel_source=…`).
    fn log_default(self, a: IpAddr, interface: &str) {
        let family = if a.is_ipv6() { "IPv6" } else { "IPv4" };
        if self == Role::Snat {
            tracing::info!(snat_address = %a, interface = %interface, "NAT: connections to {family} backends use the interface's address (agent.snat_address has none)");
            return;
        }
        tracing::info!(tunnel_source = %a, interface = %interface, "tunnels to {family} backends are sent from the interface's address (agent.tunnel_source has none)");
    }

    /// The families `config` needs an address of: (IPv4, IPv6).
    fn families(self, config: &Config) -> (bool, bool) {
        let mut need = (false, false);
        for v in &config.vips {
            let addresses: Vec<IpAddr> = match (self, v.forwarding) {
                (Role::Snat, Forwarding::Nat) => vec![v.address],
                // The outer header is the backend's family (an IPv4 VIP may have IPv6 ones).
                (Role::Tunnel, f) if f.is_tunnel() => {
                    v.backends.iter().map(|b| b.address).collect()
                }
                _ => Vec::new(),
            };
            for a in addresses {
                match a {
                    IpAddr::V4(_) => need.0 = true,
                    IpAddr::V6(_) => need.1 = true,
                }
            }
        }
        need
    }
}

/// The addresses `role` needs under `config`, per family: none for a family it does not
/// use; else that family's configured address, or the first address of that family of
/// agent.interface that is not a VIP or VRRP address (IPv6: not link-local either).
pub(super) async fn source_addresses(
    netlink: &Netlink,
    config: &Config,
    role: Role,
) -> Result<FamilyAddresses, AgentError> {
    let (needs_v4, needs_v6) = role.families(config);
    let configured = match role {
        Role::Snat => config.agent.snat_address,
        Role::Tunnel => config.agent.tunnel_source,
    };
    let mut out = FamilyAddresses::default();
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
    let missing = |family| AgentError::NoSourceAddress {
        role: role.name(),
        key: role.key(),
        interface: interface.clone(),
        family,
    };
    if needs_v4 {
        out.v4 = match configured.v4 {
            Some(a) => Some(a),
            None => match found(false).await? {
                Some(IpAddr::V4(a)) => {
                    role.log_default(IpAddr::V4(a), interface);
                    Some(a)
                }
                _ => return Err(missing("IPv4")),
            },
        };
    }
    if needs_v6 {
        out.v6 = match configured.v6 {
            Some(a) => Some(a),
            None => match found(true).await? {
                Some(IpAddr::V6(a)) => {
                    role.log_default(IpAddr::V6(a), interface);
                    Some(a)
                }
                _ => return Err(missing("IPv6")),
            },
        };
    }
    Ok(out)
}

/// The MTU of agent.interface (0 when it cannot be read: the default `tunnel_mtu` is then
/// 1500).
pub(super) async fn interface_mtu(netlink: &Netlink, config: &Config) -> u16 {
    let Some(ifindex) = netlink::ifindex(&config.agent.interface) else {
        return 0;
    };
    match netlink.link_mtu(ifindex).await {
        Ok(Some(mtu)) => mtu.min(u16::MAX as u32) as u16,
        _ => 0,
    }
}

/// Says which kernel settings NAT and tunnels rely on are missing and what each one breaks.
pub(super) fn check_sysctls(config: &Config) {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let iface = &config.agent.interface;
    let (nat, tunnel) = (Role::Snat.families(config), Role::Tunnel.families(config));
    let who = |nat: bool, tunnel: bool| match (nat, tunnel) {
        (true, true) => "NAT and tunnel",
        (true, false) => "NAT",
        _ => "tunnel",
    };
    let forwarding = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
    if (nat.0 || tunnel.0 || tunnel.1 || nat.1) && read(&forwarding) != "1" {
        let w = who(nat.0 || nat.1, tunnel.0 || tunnel.1);
        tracing::warn!(
            "{w}: IPv4 forwarding is off on {iface}: {w} packets are dropped (counters drop_nat_forwarding_disabled, drop_tunnel_forwarding_disabled); fix: sysctl -w net.ipv4.conf.{iface}.forwarding=1"
        );
    }
    let forwarding6 = format!("/proc/sys/net/ipv6/conf/{iface}/forwarding");
    if (nat.1 || tunnel.1) && read(&forwarding6) != "1" {
        let w = who(nat.1, tunnel.1);
        tracing::warn!(
            "{w}: IPv6 forwarding is off on {iface}: {w} packets to IPv6 backends are dropped; fix: sysctl -w net.ipv6.conf.{iface}.forwarding=1 (which also stops the interface from taking router advertisements unless accept_ra=2)"
        );
    }
    let accept_local = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
    if (nat.0 || tunnel.0) && read(&accept_local) != "1" {
        tracing::warn!(
            "{}: accept_local is off on {iface}: a packet whose next hop is not resolved yet (counters pass_nat_no_neighbour, pass_tunnel_no_neighbour) is dropped by the kernel as a martian instead of being forwarded while it resolves; fix: sysctl -w net.ipv4.conf.{iface}.accept_local=1",
            who(nat.0, tunnel.0)
        );
    }
    check_port_ranges(config, &read);
}

/// The kernel's ephemeral ports must not overlap the SNAT ports (NAT) nor the tunnel health
/// probes' ports (61440 and up).
fn check_port_ranges(config: &Config, read: &impl Fn(&str) -> String) {
    let range = read("/proc/sys/net/ipv4/ip_local_port_range");
    let mut parts = range
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    let (Some(lo), Some(hi)) = (parts.next(), parts.next()) else {
        return;
    };
    let reserved = read("/proc/sys/net/ipv4/ip_local_reserved_ports");
    let nat = Role::Snat.families(config);
    if nat.0 || nat.1 {
        let (slo, shi) = config.agent.snat_port_range;
        if lo <= shi && slo <= hi && reserved.is_empty() {
            tracing::warn!(
                "NAT: the kernel's ephemeral ports {lo}-{hi} overlap agent.snat_port_range {slo}-{shi}: a local connection (a health check) could share a port with a NAT flow; fix: sysctl -w net.ipv4.ip_local_reserved_ports={slo}-{shi}, or move either range"
            );
        }
    }
    let probes = config.vips.iter().any(|v| v.health_check.through_tunnel);
    let base = xdp_lb_common::PROBE_PORT_BASE;
    if probes && hi >= base && reserved.is_empty() {
        tracing::warn!(
            "tunnel health checks: the kernel's ephemeral ports {lo}-{hi} reach into the probe ports {base}-65535: a local connection's SYN-ACK from a VIP could be taken for a probe's; fix: sysctl -w net.ipv4.ip_local_port_range=\"{lo} {}\"",
            base - 1
        );
    }
}
