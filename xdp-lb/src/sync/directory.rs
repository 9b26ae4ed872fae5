//! How this node names its flows to the peers: backend ids are its own, so a flow leaves with
//! its backend's address and port, and NAT flows with this node's SNAT address.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// What the sender needs to turn the program's ids into addresses; the agent replaces it after
/// every reconcile.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    /// Backend id → its address and port.
    pub backends: HashMap<u32, (IpAddr, u16)>,
    pub snat_v4: Option<Ipv4Addr>,
    pub snat_v6: Option<Ipv6Addr>,
}
