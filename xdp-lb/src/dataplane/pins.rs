//! Where the data plane lives between agents: the bpf filesystem, the pins under
//! `agent.pin_dir`, and the layout check that keeps an agent from adopting maps another version
//! made.

use std::{ffi::CString, io, path::Path};

use aya::maps::lpm_trie::Key;
use xdp_lb_common::{
    AclData, AclData6, BackendInfo, Bucket, BucketKey, BucketKey6, Counter, FLOW_LOG_SOURCES_SIZE,
    FlowKey, FlowKey6, FlowValue, FlowValue6, MAX_ACL_ENTRIES, MAX_BACKENDS, SOURCE_BUCKETS_SIZE,
    Settings, TrafficCounters, VipInfo, VipKey, VipKey6, VipLimit, map_names,
};

use super::DataplaneError;

/// Name of the pinned XDP link under `pin_dir`.
pub const LINK_PIN: &str = "link";

/// `statfs` magic of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// One map's layout: its key and value sizes, and its entries where they are fixed (None where
/// they may differ: sizes the agent sets from its config, kept from the pinned map on
/// adoption).
struct Layout {
    name: &'static str,
    key: u32,
    value: u32,
    entries: Option<u32>,
}

/// The layout of a map keyed by `K` with values `V`.
const fn layout<K, V>(name: &'static str, entries: Option<u32>) -> Layout {
    Layout {
        name,
        key: size_of::<K>() as u32,
        value: size_of::<V>() as u32,
        entries,
    }
}

/// The maps a pinned data plane must have, as this version lays them out. `VIP_PORTS`,
/// `VIP_TUNNELS` and `TUNNEL_PROBES` are not listed: the pins of a version before them lack
/// them, the loader creates them empty, and the reconciler's first pass fills them from the
/// VIPs it adopts, before the new program is attached — an upgrade across them keeps every
/// flow.
const EXPECTED_LAYOUT: [Layout; 22] = [
    layout::<VipKey, VipInfo>(map_names::VIPS, None),
    layout::<VipKey6, VipInfo>(map_names::VIPS6, None),
    layout::<FlowKey6, FlowValue6>(map_names::FLOWS6, None),
    layout::<FlowKey6, FlowValue6>(map_names::NAT_FLOWS6, None),
    layout::<FlowKey6, FlowValue6>(map_names::NAT_EMBRYONIC6, None),
    layout::<FlowKey6, FlowValue6>(map_names::NAT_EMBRYONIC_CLIENT6, None),
    layout::<u32, BackendInfo>(map_names::BACKENDS, Some(MAX_BACKENDS)),
    layout::<u32, u64>(map_names::MAGLEV, None),
    layout::<FlowKey, FlowValue>(map_names::FLOWS, None),
    layout::<FlowKey, FlowValue>(map_names::NAT_FLOWS, None),
    layout::<FlowKey, FlowValue>(map_names::NAT_EMBRYONIC, None),
    layout::<FlowKey, FlowValue>(map_names::NAT_EMBRYONIC_CLIENT, None),
    layout::<u32, u32>(map_names::FLOW_LOG_SOURCES, Some(FLOW_LOG_SOURCES_SIZE)),
    layout::<u32, TrafficCounters>(map_names::VIP_STATS, None),
    layout::<u32, TrafficCounters>(map_names::BACKEND_STATS, Some(MAX_BACKENDS)),
    layout::<u32, u64>(map_names::COUNTERS, Some(Counter::COUNT)),
    layout::<Key<AclData>, u32>(map_names::ACL, Some(MAX_ACL_ENTRIES)),
    layout::<Key<AclData6>, u32>(map_names::ACL6, Some(MAX_ACL_ENTRIES)),
    layout::<u32, VipLimit>(map_names::VIP_LIMITS, None),
    layout::<BucketKey, Bucket>(map_names::SOURCE_BUCKETS, Some(SOURCE_BUCKETS_SIZE)),
    layout::<BucketKey6, Bucket>(map_names::SOURCE_BUCKETS6, Some(SOURCE_BUCKETS_SIZE)),
    layout::<u32, Settings>(map_names::SETTINGS, Some(1)),
];

pub(super) fn check_pinned_layout(pin_dir: &Path) -> Result<(), DataplaneError> {
    let incompatible = |detail: String| DataplaneError::Incompatible {
        pin_dir: pin_dir.to_owned(),
        detail,
    };
    for &Layout {
        name,
        key,
        value,
        entries,
    } in &EXPECTED_LAYOUT
    {
        let path = pin_dir.join(name);
        if !path.exists() {
            return Err(incompatible(format!("map {name} is missing")));
        }
        let info = aya::maps::MapInfo::from_pin(&path)
            .map_err(|e| incompatible(format!("map {name}: {e}")))?;
        if info.key_size() != key || info.value_size() != value {
            return Err(incompatible(format!(
                "map {name} has {}-byte keys and {}-byte values, this version uses {key} and {value}",
                info.key_size(),
                info.value_size()
            )));
        }
        if let Some(n) = entries
            && info.max_entries() != n
        {
            return Err(incompatible(format!(
                "map {name} has {} entries, this version uses {n}",
                info.max_entries()
            )));
        }
    }
    Ok(())
}

/// Removes every map pin of xdp-lb under `pin_dir`, then the directory if it is empty.
pub fn remove_pins(pin_dir: &Path) -> Result<(), io::Error> {
    // The link first: removing its pin detaches the program (when no agent holds it).
    for name in std::iter::once(LINK_PIN).chain(MAP_NAMES) {
        match std::fs::remove_file(pin_dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match std::fs::remove_dir(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Someone else's files are in there: leave them.
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        Err(e) => Err(e),
    }
}

const MAP_NAMES: [&str; 35] = [
    map_names::VIP_NAMES,
    map_names::BACKEND_NAMES,
    map_names::CAPTURE,
    map_names::CAPTURE_CONFIG,
    map_names::CAPTURE_STATS,
    map_names::SETTINGS,
    map_names::FLOW_LOG,
    map_names::SYNC_EVENTS,
    map_names::FLOW_LOG_BUDGET,
    map_names::FLOW_LOG_SOURCES,
    map_names::VIPS,
    map_names::VIPS6,
    map_names::FLOWS6,
    map_names::BACKENDS,
    map_names::VIP_PORTS,
    map_names::MAGLEV,
    map_names::FLOWS,
    map_names::NAT_FLOWS,
    map_names::NAT_EMBRYONIC,
    map_names::NAT_EMBRYONIC_CLIENT,
    map_names::NAT_FLOWS6,
    map_names::NAT_EMBRYONIC6,
    map_names::NAT_EMBRYONIC_CLIENT6,
    map_names::TX_PORTS,
    map_names::ACL,
    map_names::ACL6,
    map_names::VIP_LIMITS,
    map_names::VIP_TUNNELS,
    map_names::TUNNEL_PROBES,
    map_names::SOURCE_BUCKETS,
    map_names::SOURCE_BUCKETS6,
    map_names::INSERT_BUDGET,
    map_names::VIP_STATS,
    map_names::BACKEND_STATS,
    map_names::COUNTERS,
];

/// Checks that `pin_dir` is (or will be created) on a bpf filesystem, mounting bpffs on
/// /sys/fs/bpf when that is where it should be and nothing is mounted there yet.
pub(crate) fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
    let mut probe = pin_dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    if fs_magic(probe) == Some(BPF_FS_MAGIC) {
        return Ok(());
    }
    let sys_bpf = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(sys_bpf) && fs_magic(sys_bpf) != Some(BPF_FS_MAGIC) {
        let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            tracing::info!("mounted bpffs on /sys/fs/bpf");
            return Ok(());
        }
        return Err(DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            reason: format!(
                "no bpf filesystem, and mounting one on /sys/fs/bpf failed: {}",
                io::Error::last_os_error()
            ),
        });
    }
    Err(DataplaneError::PinDir {
        path: pin_dir.to_owned(),
        reason: "not on a bpf filesystem (mount one: `mount -t bpf bpf /sys/fs/bpf`)".into(),
    })
}

fn fs_magic(path: &Path) -> Option<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: all-zero is a valid statfs (plain integers), filled below.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}
