//! `[sync]`: the other LB nodes this one exchanges flows with, validated. What is sent and how
//! is `crate::sync`; why, the README's "Flow sync".

use std::{net::IpAddr, path::PathBuf, time::Duration};

use toml::Spanned;

use super::{
    ConfigError,
    file::ConfigFile,
    raw::RawSync,
    sync_key::{self, SyncKey},
};

/// `[sync]`: the other LB nodes this one sends its new flows to and takes theirs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub peers: Vec<std::net::IpAddr>,
    /// UDP, the same on every node.
    pub port: u16,
    /// The shared key's file (root-only), and the key it held when the config was validated:
    /// read once, so the agent runs with exactly the bytes that were checked.
    pub key_file: PathBuf,
    pub key: SyncKey,
    /// The local address to send from and listen on; None: every address.
    pub source: Option<std::net::IpAddr>,
    pub batch_interval: Duration,
    /// Per peer.
    pub max_datagrams_per_second: u32,
    /// Flows waiting to be sent (beyond: dropped, counted).
    pub queue: u32,
    /// At start, how long to wait for a peer's snapshot before VRRP may take the addresses;
    /// zero: no snapshot is asked for.
    pub snapshot_wait: Duration,
}

/// Default `sync.port` (UDP; any port both nodes agree on).
pub const DEFAULT_SYNC_PORT: u16 = 7947;
/// Default `sync.batch_interval`: a new flow leaves within this, batched with its neighbours.
pub const DEFAULT_SYNC_BATCH: Duration = Duration::from_millis(10);
/// Default `sync.max_datagrams_per_second` (per peer): 16 flows each, 160 000 new flows/s.
pub const DEFAULT_SYNC_RATE: u32 = 10_000;
/// Default `sync.queue`: flows waiting to be sent; beyond it they are dropped and counted.
pub const DEFAULT_SYNC_QUEUE: u32 = 65_536;
/// Default `sync.snapshot_wait`: a peer on the same segment answers in milliseconds; a
/// million flows take about 10 s to send at the default rate.
pub const DEFAULT_SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// At most this many peers: every flow is sent to each.
pub(super) const MAX_SYNC_PEERS: usize = 16;

pub(super) fn sync(
    file: &ConfigFile<'_>,
    raw: &Spanned<RawSync>,
) -> Result<SyncConfig, ConfigError> {
    let r = raw.get_ref();
    let peers = peers(file, r)?;
    let port = match &r.port {
        None => DEFAULT_SYNC_PORT,
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(file.at(
                    p,
                    "sync.port",
                    format!("{} is not a port (1..=65535)", p.get_ref()),
                ));
            }
        },
    };
    // The key is read now, once: a missing, short or group-readable file is named with its
    // line before anything runs, and the agent uses the bytes validated here.
    let key_file: PathBuf = r.key_file.get_ref().clone();
    let key = sync_key::load(&key_file).map_err(|why| {
        file.at(
            &r.key_file,
            "sync.key_file",
            format!("{}: {why}", key_file.display()),
        )
    })?;
    let batch_interval = within(
        file,
        r.batch_interval.as_ref(),
        "batch_interval",
        DEFAULT_SYNC_BATCH,
        (Duration::from_millis(1), Duration::from_secs(1), "1ms..=1s"),
    )?;
    let max_datagrams_per_second = bounded(
        file,
        r.max_datagrams_per_second.as_ref(),
        "max_datagrams_per_second",
        DEFAULT_SYNC_RATE,
        1_000_000,
    )?;
    let queue = bounded(
        file,
        r.queue.as_ref(),
        "queue",
        DEFAULT_SYNC_QUEUE,
        4_194_304,
    )?;
    let snapshot_wait = within(
        file,
        r.snapshot_wait.as_ref(),
        "snapshot_wait",
        DEFAULT_SNAPSHOT_WAIT,
        (Duration::ZERO, Duration::from_secs(300), "0s..=5m"),
    )?;
    let source = match &r.source {
        None => None,
        Some(s) => Some(source(file, s, &peers)?),
    };
    Ok(SyncConfig {
        peers,
        port,
        key_file,
        key,
        source,
        batch_interval,
        max_datagrams_per_second,
        queue,
        snapshot_wait,
    })
}

/// `sync.peers`: 1 to `MAX_SYNC_PEERS` distinct unicast addresses.
fn peers(file: &ConfigFile<'_>, r: &RawSync) -> Result<Vec<IpAddr>, ConfigError> {
    let list = r.peers.get_ref();
    if list.is_empty() || list.len() > MAX_SYNC_PEERS {
        return Err(file.at(
            &r.peers,
            "sync.peers",
            format!(
                "{} peers; list the other LB nodes' addresses (1 to {MAX_SYNC_PEERS})",
                list.len()
            ),
        ));
    }
    let mut peers = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let key = format!("sync.peers[{i}]");
        let a = *p.get_ref();
        if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
            return Err(file.at(p, key, format!("{a} is not a peer's unicast address")));
        }
        if peers.contains(&a) {
            return Err(file.at(p, key, format!("{a} is listed twice")));
        }
        peers.push(a);
    }
    Ok(peers)
}

/// `sync.source`: a unicast address of the peers' family, not one of them.
fn source(
    file: &ConfigFile<'_>,
    s: &Spanned<IpAddr>,
    peers: &[IpAddr],
) -> Result<IpAddr, ConfigError> {
    let a = *s.get_ref();
    if a.is_unspecified() || a.is_multicast() {
        return Err(file.at(s, "sync.source", format!("{a} is not a unicast address")));
    }
    if peers.contains(&a) {
        return Err(file.at(
            s,
            "sync.source",
            format!("{a} is also listed in sync.peers: a node does not sync with itself"),
        ));
    }
    if peers.iter().any(|p| p.is_ipv4() != a.is_ipv4()) {
        return Err(file.at(
            s,
            "sync.source",
            format!("{a} and the peers are of different families"),
        ));
    }
    Ok(a)
}

/// `sync.KEY`, a duration within (low, high) (`range` says it in words), or `default`.
fn within(
    file: &ConfigFile<'_>,
    value: Option<&Spanned<Duration>>,
    key: &str,
    default: Duration,
    (low, high, range): (Duration, Duration, &str),
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if *d.get_ref() < low || *d.get_ref() > high => Err(file.at(
            d,
            format!("sync.{key}"),
            format!("{:?} is out of range ({range})", d.get_ref()),
        )),
        Some(d) => Ok(*d.get_ref()),
    }
}

/// `sync.KEY`, a count from 1 to `max`, or `default`.
fn bounded(
    file: &ConfigFile<'_>,
    value: Option<&Spanned<i64>>,
    key: &str,
    default: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) => match u32::try_from(*n.get_ref()) {
            Ok(x) if (1..=max).contains(&x) => Ok(x),
            _ => Err(file.at(
                n,
                format!("sync.{key}"),
                format!("{} is out of range (1..={max})", n.get_ref()),
            )),
        },
    }
}
