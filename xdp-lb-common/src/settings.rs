//! `SETTINGS[0]`: the data plane's switches, set by the agent from `[agent]`.

/// `SETTINGS[0]`: data-plane switches the agent sets from `[agent]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Flow-log events (new flows, drops) each CPU may report per second; 0 = flow log off.
    pub flow_log_per_cpu_per_sec: u32,
    /// Non-zero: only frames addressed to `local_mac` are balanced. A switch floods frames for
    /// a MAC it has not learnt (yet) to every port; without this check every LB node with the
    /// program attached — the VRRP backup too — would forward them, duplicating traffic.
    pub check_local_mac: u32,
    /// The MAC of the interface the program is attached to.
    pub local_mac: [u8; 6],
    /// Non-zero: new flows are reported to the agent's sync (`SYNC_EVENTS`, `[sync]`).
    pub sync_events: u8,
    pub _pad: u8,
    /// NAT: the source address of connections to backends (0: no NAT VIP configured).
    pub snat_addr_be: u32,
    /// NAT: the SNAT port range, inclusive, host order.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// DSR flow-table inserts each CPU may make per second (`agent.flow_insert_rate`); above
    /// it a new flow is forwarded by its Maglev choice without an entry. 0: no cap.
    pub flow_inserts_per_cpu_per_sec: u32,
    /// NAT66: the IPv6 source address of connections to backends (all zero: no IPv6 NAT VIP).
    pub snat_addr6: [u8; 16],
}

impl Settings {
    /// Turns the destination-MAC check on for `mac` (None: off).
    pub fn with_local_mac(self, mac: Option<[u8; 6]>) -> Self {
        match mac {
            Some(local_mac) => Self {
                check_local_mac: 1,
                local_mac,
                ..self
            },
            None => Self {
                check_local_mac: 0,
                local_mac: [0; 6],
                ..self
            },
        }
    }
}
