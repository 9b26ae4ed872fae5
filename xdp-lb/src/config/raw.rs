//! The file as written: serde structs that mirror the TOML and keep the position (`Spanned`)
//! of every value a later check may complain about. Unknown keys and wrong types fail here.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{AdminState, CheckType, ChecksumMode, Forwarding, Protocol, XdpMode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) agent: Spanned<RawAgent>,
    #[serde(default)]
    pub(super) vip: Vec<Spanned<RawVip>>,
    #[serde(default)]
    pub(super) vrrp: Vec<Spanned<RawVrrp>>,
    #[serde(default)]
    pub(super) announce: Option<Spanned<RawAnnounce>>,
    #[serde(default)]
    pub(super) sync: Option<Spanned<RawSync>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub(super) peers: Spanned<Vec<Spanned<IpAddr>>>,
    pub(super) key_file: Spanned<PathBuf>,
    #[serde(default)]
    pub(super) port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) source: Option<Spanned<IpAddr>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) batch_interval: Option<Spanned<Duration>>,
    #[serde(default)]
    pub(super) max_datagrams_per_second: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) queue: Option<Spanned<i64>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) snapshot_wait: Option<Spanned<Duration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnnounce {
    #[serde(default)]
    pub(super) table: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) interface: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) vips: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) grace: Option<Spanned<Duration>>,
    #[serde(default)]
    pub(super) engine_socket: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrrp {
    pub(super) name: Spanned<String>,
    pub(super) interface: Spanned<String>,
    pub(super) vrid: Spanned<i64>,
    pub(super) priority: Spanned<i64>,
    #[serde(default)]
    pub(super) version: Option<Spanned<i64>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) advert_interval: Option<Spanned<Duration>>,
    #[serde(default)]
    pub(super) preempt: Option<bool>,
    #[serde(default, with = "spanned_duration")]
    pub(super) preempt_delay: Option<Spanned<Duration>>,
    pub(super) virtual_addresses: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) unicast_peers: Vec<Spanned<std::net::IpAddr>>,
    #[serde(default)]
    pub(super) checksum: Option<ChecksumMode>,
    #[serde(default)]
    pub(super) garp_count: Option<Spanned<i64>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) garp_repeat_delay: Option<Spanned<Duration>>,
    #[serde(default)]
    pub(super) track_dataplane: Option<bool>,
    #[serde(default)]
    pub(super) track_weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) notify: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) interface: Spanned<String>,
    #[serde(default)]
    pub(super) xdp_mode: Option<XdpMode>,
    #[serde(default)]
    pub(super) pin_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) flow_table_size: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) flow_table_size_ipv6: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) max_vips: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) control_socket: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) flow_log: Option<bool>,
    #[serde(default)]
    pub(super) flow_log_rate: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) flow_insert_rate: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) snat_address: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(super) tunnel_source: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(super) snat_port_range: Option<Spanned<String>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) nat_syn_timeout: Option<Spanned<Duration>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) nat_established_timeout: Option<Spanned<Duration>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) nat_closing_timeout: Option<Spanned<Duration>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) nat_udp_timeout: Option<Spanned<Duration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<IpAddr>,
    pub(super) port: Spanned<i64>,
    #[serde(default)]
    pub(super) protocol: Option<Protocol>,
    #[serde(default)]
    pub(super) forwarding: Option<Spanned<Forwarding>>,
    #[serde(default)]
    pub(super) maglev_table_size: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) tunnel_mtu: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) mss_clamp: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) gue_port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) deny: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) new_flows_per_source: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) new_flows_burst: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) limit_prefix_v4: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) limit_prefix_v6: Option<Spanned<i64>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) slowstart: Option<Spanned<Duration>>,
    #[serde(default)]
    pub(super) health_check: Option<Spanned<RawHealthCheck>>,
    #[serde(default)]
    pub(super) backend: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    pub(super) address: Spanned<IpAddr>,
    #[serde(default)]
    pub(super) port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) weight: Option<Spanned<i64>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) slowstart: Option<Spanned<Duration>>,
    #[serde(default)]
    pub(super) state: Option<AdminState>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    #[serde(default, rename = "type")]
    pub(super) kind: Option<CheckType>,
    #[serde(default, with = "spanned_duration")]
    pub(super) interval: Option<Spanned<Duration>>,
    #[serde(default, with = "spanned_duration")]
    pub(super) timeout: Option<Spanned<Duration>>,
    #[serde(default)]
    pub(super) rise: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) fall: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) port: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) http_path: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) http_expect_status: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) start_down: Option<bool>,
    #[serde(default)]
    pub(super) through_tunnel: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) dns_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) dns_type: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) dns_expect_rcode: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tls_server_name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tls_ca_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) tls_verify: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) tls_client_cert: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) tls_client_key: Option<Spanned<PathBuf>>,
}

/// Durations as humantime strings ("2s", "150ms"), keeping their position for errors.
mod spanned_duration {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, de::Error as _};
    use toml::Spanned;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Spanned<Duration>>, D::Error> {
        let s: Spanned<String> = Spanned::deserialize(d)?;
        let parsed = humantime::parse_duration(s.get_ref()).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {:?}: {e} (use e.g. \"2s\" or \"150ms\")",
                s.get_ref()
            ))
        })?;
        Ok(Some(Spanned::new(s.span(), parsed)))
    }
}

// ---- entry points ---------------------------------------------------------------------------

/// A key that takes one value or a list of them (`agent.snat_address`: one address, or one per
/// family).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}
