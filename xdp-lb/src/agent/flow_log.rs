//! The agent's side of the flow log: reads `FLOW_LOG` (new flows and drops, rate-limited by the
//! program) and writes one line per event, like haproxy's connection log:
//!
//! ```text
//! INFO flow new client=198.18.0.1:40312 vip=198.18.0.100:80 backend=198.18.0.12
//! INFO flow new client=198.18.0.1:40313 vip=198.18.0.100:80 backend=198.18.0.13 name=cp2
//! INFO flow drop client=198.18.0.1:40314 vip=198.18.0.100:80 reason=drop_no_backend
//! INFO flow new client=[2001:db8::1]:40316 vip=[2001:db8::100]:80 backend=2001:db8::12
//! ```
//!
//! ` name=` follows the backend when the config names it (`name`, not just its address).
//!
//! Also polls aya-log, which carries the program's rare debug messages.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, RwLock},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};
use xdp_lb_common::{
    Counter, FLOW_EVENT_DROP6, FLOW_EVENT_NEW, FLOW_EVENT_NEW6, FlowEvent, FlowEvent6,
};

/// A named backend as a flow event sees it: the VIP's address, port and protocol, then the
/// backend's address (IPv4-mapped addresses as IPv4).
type NameKey = (IpAddr, u16, u8, IpAddr);

/// The names of the backends that have one besides their address, kept by the agent (on every
/// apply) for the reader.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedNames(Arc<RwLock<BTreeMap<NameKey, String>>>);

impl SharedNames {
    pub(super) fn set(&self, names: BTreeMap<NameKey, String>) {
        if let Ok(mut n) = self.0.write() {
            *n = names;
        }
    }

    /// ` name=NAME` after a new flow's backend, or nothing.
    fn suffix(&self, vip: IpAddr, port_be: u16, proto: u8, backend: IpAddr) -> String {
        let key = (
            vip.to_canonical(),
            u16::from_be(port_be),
            proto,
            backend.to_canonical(),
        );
        self.0
            .read()
            .ok()
            .and_then(|n| n.get(&key).map(|name| format!(" name={name}")))
            .unwrap_or_default()
    }
}

impl super::Agent {
    /// The flow log's names: every backend whose `name` is not its address.
    pub(super) fn update_flow_names(&self) {
        let mut names = BTreeMap::new();
        for vip in &self.config.vips {
            for b in vip
                .backends
                .iter()
                .filter(|b| b.name != b.address.to_string())
            {
                let key = (vip.address, vip.port, vip.protocol.number(), b.address);
                names.insert(key, b.name.clone());
            }
        }
        self.flow_names.set(names);
    }
}

/// Formats one event; `None` for a record that is not a `FlowEvent`.
pub(super) fn format(bytes: &[u8], names: &SharedNames) -> Option<String> {
    if bytes.len() < size_of::<FlowEvent>() {
        return None;
    }
    // Both kinds of event start with the timestamp, then the kind.
    let kind = u32::from_ne_bytes(bytes[8..12].try_into().ok()?);
    if kind == FLOW_EVENT_NEW6 || kind == FLOW_EVENT_DROP6 {
        return format6(bytes, names);
    }
    // SAFETY: length checked; FlowEvent is plain integers, read unaligned.
    let e: FlowEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let addr = |be: u32| Ipv4Addr::from(be.to_ne_bytes());
    let client = format!("{}:{}", addr(e.src_addr_be), u16::from_be(e.src_port_be));
    let vip = format!(
        "{}:{}{}",
        addr(e.dst_addr_be),
        u16::from_be(e.dst_port_be),
        udp_suffix(e.proto)
    );
    Some(if e.kind == FLOW_EVENT_NEW {
        format!(
            "new client={client} vip={vip} backend={}{}{}",
            addr(e.backend_addr_be),
            names.suffix(
                addr(e.dst_addr_be).into(),
                e.dst_port_be,
                e.proto,
                addr(e.backend_addr_be).into()
            ),
            mode_suffix(e.mode)
        )
    } else {
        format!(
            "drop client={client} vip={vip} reason={}",
            reason_name(e.reason)
        )
    })
}

/// `/udp` after a UDP VIP's port; TCP, the common case, reads as before.
fn udp_suffix(proto: u8) -> &'static str {
    if proto == xdp_lb_common::IPPROTO_UDP {
        "/udp"
    } else {
        ""
    }
}

/// ` mode=ipip` after a new flow's backend (nothing when the event does not say).
fn mode_suffix(mode: u8) -> String {
    xdp_lb_common::flow_mode_name(mode).map_or(String::new(), |m| format!(" mode={m}"))
}

/// An address and port as a socket address: an IPv6 one in brackets (RFC 5952 §6), an
/// IPv4-mapped one (an IPv4 flow to an IPv6 tunnel backend) as the IPv4 address it is.
fn socket6(addr: [u8; 16], port_be: u16) -> String {
    let a = Ipv6Addr::from(addr);
    let port = u16::from_be(port_be);
    match a.to_ipv4_mapped() {
        Some(v4) => format!("{v4}:{port}"),
        None => format!("[{a}]:{port}"),
    }
}

/// An IPv6 event, addresses in brackets with their ports (RFC 5952 §6).
fn format6(bytes: &[u8], names: &SharedNames) -> Option<String> {
    if bytes.len() < size_of::<FlowEvent6>() {
        return None;
    }
    // SAFETY: length checked; FlowEvent6 is plain integers, read unaligned.
    let e: FlowEvent6 = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let client = socket6(e.src_addr, e.src_port_be);
    let vip = format!(
        "{}{}",
        socket6(e.dst_addr, e.dst_port_be),
        udp_suffix(e.proto)
    );
    Some(if e.kind == FLOW_EVENT_NEW6 {
        format!(
            "new client={client} vip={vip} backend={}{}{}",
            Ipv6Addr::from(e.backend_addr),
            names.suffix(
                Ipv6Addr::from(e.dst_addr).into(),
                e.dst_port_be,
                e.proto,
                Ipv6Addr::from(e.backend_addr).into()
            ),
            mode_suffix(e.mode)
        )
    } else {
        format!(
            "drop client={client} vip={vip} reason={}",
            reason_name(e.reason)
        )
    })
}

fn reason_name(reason: u32) -> &'static str {
    Counter::ALL
        .get(reason as usize)
        .map_or("unknown", |c| c.name())
}

/// Reads the flow log until aborted.
pub(super) fn spawn(ring: RingBuf<MapData>, names: SharedNames) -> std::io::Result<JoinHandle<()>> {
    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if let Some(line) = format(&item, &names) {
                    tracing::info!(target: "flow", "flow {line}");
                }
            }
            guard.clear_ready();
        }
    }))
}

/// Polls aya-log (the program's debug messages) until aborted.
pub(super) fn spawn_ebpf_logger(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
) -> std::io::Result<JoinHandle<()>> {
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd owns the logger.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(e: &FlowEvent) -> Vec<u8> {
        // SAFETY: FlowEvent is plain integers.
        unsafe {
            std::slice::from_raw_parts((e as *const FlowEvent).cast::<u8>(), size_of::<FlowEvent>())
        }
        .to_vec()
    }

    #[test]
    fn events_read_like_a_connection_log() {
        let e = FlowEvent {
            kind: FLOW_EVENT_NEW,
            src_addr_be: xdp_lb_common::ipv4_be([198, 18, 0, 1]),
            dst_addr_be: xdp_lb_common::ipv4_be([198, 18, 0, 100]),
            src_port_be: xdp_lb_common::port_be(40312),
            dst_port_be: xdp_lb_common::port_be(80),
            backend_addr_be: xdp_lb_common::ipv4_be([198, 18, 0, 12]),
            ..Default::default()
        };
        assert_eq!(
            format(&bytes(&e), &SharedNames::default()).unwrap(),
            "new client=198.18.0.1:40312 vip=198.18.0.100:80 backend=198.18.0.12"
        );
        let d = FlowEvent {
            kind: xdp_lb_common::FLOW_EVENT_DROP,
            reason: Counter::DropNoBackend as u32,
            ..e
        };
        assert_eq!(
            format(&bytes(&d), &SharedNames::default()).unwrap(),
            "drop client=198.18.0.1:40312 vip=198.18.0.100:80 reason=drop_no_backend"
        );
        assert_eq!(format(&[1, 2, 3], &SharedNames::default()), None);
        let named = SharedNames::default();
        let vip = "198.18.0.100".parse().unwrap();
        let key = (vip, 80, 0, "198.18.0.12".parse().unwrap());
        named.set([(key, "cp1".to_owned())].into());
        assert_eq!(
            format(&bytes(&e), &named).unwrap(),
            "new client=198.18.0.1:40312 vip=198.18.0.100:80 backend=198.18.0.12 name=cp1"
        );
        let u = FlowEvent {
            proto: xdp_lb_common::IPPROTO_UDP,
            dst_port_be: xdp_lb_common::port_be(53),
            ..e
        };
        assert_eq!(
            format(&bytes(&u), &SharedNames::default()).unwrap(),
            "new client=198.18.0.1:40312 vip=198.18.0.100:53/udp backend=198.18.0.12"
        );
    }

    #[test]
    fn ipv6_events_name_addresses_in_brackets() {
        let v6 = |a: &str| a.parse::<Ipv6Addr>().unwrap().octets();
        let e = FlowEvent6 {
            kind: FLOW_EVENT_NEW6,
            src_addr: v6("2001:2::1"),
            dst_addr: v6("2001:2::100"),
            backend_addr: v6("2001:2::12"),
            src_port_be: xdp_lb_common::port_be(40316),
            dst_port_be: xdp_lb_common::port_be(80),
            ..Default::default()
        };
        // SAFETY: FlowEvent6 is plain integers.
        let raw = |e: &FlowEvent6| unsafe {
            std::slice::from_raw_parts(
                (e as *const FlowEvent6).cast::<u8>(),
                size_of::<FlowEvent6>(),
            )
            .to_vec()
        };
        assert_eq!(
            format(&raw(&e), &SharedNames::default()).unwrap(),
            "new client=[2001:2::1]:40316 vip=[2001:2::100]:80 backend=2001:2::12"
        );
        let d = FlowEvent6 {
            kind: FLOW_EVENT_DROP6,
            reason: Counter::DropNoBackend as u32,
            ..e
        };
        assert_eq!(
            format(&raw(&d), &SharedNames::default()).unwrap(),
            "drop client=[2001:2::1]:40316 vip=[2001:2::100]:80 reason=drop_no_backend"
        );
        // Cut short: not an event.
        assert_eq!(format(&raw(&e)[..40], &SharedNames::default()), None);
    }
}
