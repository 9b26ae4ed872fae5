//! Loading, attaching and pinning the XDP program, and typed handles on its maps.
//!
//! Maps are pinned by name under `agent.pin_dir`; aya reuses a map already pinned there, which
//! is how a restarted agent finds the flow table of the one before it. `Maps::open_pinned`
//! opens the same maps from any other process (`xdp-lb inspect`, tests).

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    ptr::NonNull,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use thiserror::Error;
use xdp_lb_common::{
    BackendInfo, FlowKey, FlowLogBudget, FlowValue, MAGLEV_MAX_TABLE_SIZE, MAGLEV_SLOT_ELEMS,
    PROGRAM_NAME, Settings, TrafficCounters, VipInfo, VipKey, VipName, map_names,
};

use crate::config::{AgentConfig, XdpMode};

/// The data plane object, built by `build.rs` from the `xdp-lb-ebpf` crate.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb-ebpf"));

/// Reference programs for `cargo xtask bench` (`xdp_floor`, `xdp_empty`).
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb-bench"));

/// `statfs` magic of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("{path}: {reason}")]
    PinDir { path: PathBuf, reason: String },
    #[error("loading the XDP object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the XDP program failed the kernel's checks: {0}")]
    Program(#[source] aya::programs::ProgramError),
    #[error("interface {0:?} does not exist in this network namespace")]
    NoInterface(String),
    #[error("attaching to {interface} in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {name} is missing from {place}")]
    MissingMap { name: &'static str, place: String },
    #[error(
        "the maps pinned in {pin_dir} were made by an incompatible version ({detail}); nothing was \
         changed. To replace them: stop the old data plane (remove {pin_dir}, which interrupts \
         forwarding) and start again"
    )]
    Incompatible { pin_dir: PathBuf, detail: String },
    #[error("mapping {name} into memory: {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Sizes that are fixed when the maps are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    pub flow_table_size: u32,
    pub max_vips: u32,
}

impl From<&AgentConfig> for MapSizes {
    fn from(agent: &AgentConfig) -> Self {
        Self {
            flow_table_size: agent.flow_table_size,
            max_vips: agent.max_vips,
        }
    }
}

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    Driver,
    Generic,
    /// The attachment an earlier agent pinned, whose program was replaced by ours.
    Adopted,
}

impl AttachedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Generic => "generic",
            AttachedMode::Adopted => "adopted",
        }
    }
}

/// A loaded (and possibly attached) data plane.
pub struct Dataplane {
    ebpf: Ebpf,
    link: Option<Link>,
    pin_dir: PathBuf,
    pub maps: Maps,
    pub attached: Option<(String, AttachedMode)>,
    /// The maps were already pinned (left by an agent that died or was stopped with
    /// `--keep-dataplane`) and are being reused, flow table included.
    pub adopted_maps: bool,
    /// aya-log's reader of the program's debug messages; the agent takes and polls it.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// The attachment: a bpf_link pinned under `pin_dir/link`, so that it outlives the agent, or
/// (on kernels without XDP bpf_link) a netlink attachment owned by the program.
enum Link {
    Pinned(FdLink),
    Owned(XdpLinkId),
}

/// Name of the pinned XDP link under `pin_dir`.
pub const LINK_PIN: &str = "link";

impl Dataplane {
    /// Loads the program and creates (or reuses) the pinned maps. Nothing is attached yet.
    pub fn load(pin_dir: &Path, sizes: MapSizes) -> Result<Self, DataplaneError> {
        ensure_bpffs(pin_dir)?;
        let adopted_maps = pin_dir.join(map_names::VIPS).exists();
        std::fs::create_dir_all(pin_dir).map_err(|e| DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            reason: format!("cannot create: {e}"),
        })?;
        if adopted_maps {
            // aya reuses a pinned map by name whatever its layout; a map from another version
            // would be misread (or rejected by the verifier halfway through). Check first.
            check_pinned_layout(pin_dir)?;
        }
        let loaded = Self::load_inner(pin_dir, sizes);
        if loaded.is_err() && !adopted_maps {
            // Do not leave half a data plane behind; but never remove maps we did not make.
            let _ = remove_pins(pin_dir);
        }
        let (mut ebpf, maps) = loaded?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!(error = %e, "no aya-log in the program; its debug messages are not shown");
                None
            }
        };
        Ok(Self {
            ebpf,
            link: None,
            pin_dir: pin_dir.to_owned(),
            maps,
            attached: None,
            adopted_maps,
            logger,
        })
    }

    fn load_inner(pin_dir: &Path, sizes: MapSizes) -> Result<(Ebpf, Maps), DataplaneError> {
        let maglev_entries = sizes.max_vips * 2 * MAGLEV_SLOT_ELEMS;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries(map_names::FLOWS, sizes.flow_table_size)
            .map_max_entries(map_names::NAT_FLOWS, sizes.flow_table_size)
            .map_max_entries(map_names::VIPS, sizes.max_vips)
            .map_max_entries(map_names::VIP_STATS, sizes.max_vips)
            .map_max_entries(map_names::VIP_NAMES, sizes.max_vips)
            .map_max_entries(map_names::MAGLEV, maglev_entries)
            .load(PROGRAM_OBJECT)
            .map_err(DataplaneError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingMap {
                name: "xdp_lb program",
                place: "the object".into(),
            })?
            .try_into()
            .map_err(DataplaneError::Program)?;
        program.load().map_err(DataplaneError::Program)?;
        let maps = Maps::take(&mut ebpf)?;
        if sizes.flow_table_size != maps.flows_max_entries() {
            tracing::warn!(
                configured = sizes.flow_table_size,
                pinned = maps.flows_max_entries(),
                "agent.flow_table_size differs from the pinned flow table, which is kept (with its flows); \
                 stop with SIGTERM (without --keep-dataplane) and start again to resize it"
            );
        }
        Ok((ebpf, maps))
    }

    /// The loaded program, for BPF_PROG_TEST_RUN.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded in Dataplane::load")
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .expect("loaded in Dataplane::load")
            .try_into()
            .map_err(DataplaneError::Program)
    }

    /// Attaches to `interface` and pins the attachment, or — when an earlier agent left its
    /// attachment pinned — atomically replaces the program on it (bpf_link_update: no packet
    /// sees an interface without a program). `auto` tries driver mode, then generic.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let ifindex =
            ifindex(interface).ok_or_else(|| DataplaneError::NoInterface(interface.into()))?;
        let link_pin = self.pin_dir.join(LINK_PIN);
        if link_pin.exists() {
            let adopt = |program: &mut Xdp| -> Result<FdLink, String> {
                let pinned = PinnedLink::from_pin(&link_pin).map_err(|e| e.to_string())?;
                let fd: FdLink = pinned.into();
                let link = XdpLink::try_from(fd).map_err(|e| e.to_string())?;
                let id = program.attach_to_link(link).map_err(|e| e.to_string())?;
                let link = program.take_link(id).map_err(|e| e.to_string())?;
                FdLink::try_from(link).map_err(|e| e.to_string())
            };
            let program = self.program_mut()?;
            match adopt(program) {
                Ok(fd) => {
                    self.link = Some(Link::Pinned(fd));
                    self.attached = Some((interface.to_owned(), AttachedMode::Adopted));
                    return Ok(AttachedMode::Adopted);
                }
                Err(e) => {
                    tracing::warn!(link = %link_pin.display(), error = %e, "cannot take over the pinned attachment; attaching afresh");
                    let _ = std::fs::remove_file(&link_pin);
                }
            }
        }
        let program = self.program_mut()?;
        let attempt = |program: &mut Xdp, m: AttachedMode| {
            let aya_mode = match m {
                AttachedMode::Generic => AyaXdpMode::Skb,
                _ => AyaXdpMode::Driver,
            };
            program
                .attach_to_if_index(ifindex, aya_mode)
                .map_err(|source| DataplaneError::Attach {
                    interface: interface.into(),
                    mode: m.as_str(),
                    source,
                })
        };
        let (id, attached) = match mode {
            XdpMode::Driver => (
                attempt(program, AttachedMode::Driver)?,
                AttachedMode::Driver,
            ),
            XdpMode::Generic => (
                attempt(program, AttachedMode::Generic)?,
                AttachedMode::Generic,
            ),
            XdpMode::Auto => match attempt(program, AttachedMode::Driver) {
                Ok(id) => (id, AttachedMode::Driver),
                Err(err) => {
                    tracing::warn!(
                        interface,
                        error = %err,
                        "driver-mode XDP is not available; falling back to generic mode (slower: runs after the kernel allocates an skb)"
                    );
                    (
                        attempt(program, AttachedMode::Generic)?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        // Pin the attachment so that it outlives this process (a crash or an upgrade).
        let link = program.take_link(id).map_err(DataplaneError::Program)?;
        self.link = Some(match FdLink::try_from(link) {
            Ok(fd) => match fd.pin(&link_pin) {
                Ok(pinned) => Link::Pinned(pinned.into()),
                Err(e) => {
                    // The FdLink is gone with the failed pin; the program stays attached only
                    // while this process lives.
                    tracing::warn!(error = %e, "cannot pin the attachment: a restart will interrupt forwarding");
                    return Err(DataplaneError::PinDir {
                        path: link_pin,
                        reason: e.to_string(),
                    });
                }
            },
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the kernel attached through netlink (no XDP bpf_link): the program is detached when the agent exits"
                );
                let program = self.program_mut()?;
                let id = program
                    .attach_to_if_index(ifindex, AyaXdpMode::Skb)
                    .map_err(DataplaneError::Program)?;
                Link::Owned(id)
            }
        });
        self.attached = Some((interface.to_owned(), attached));
        Ok(attached)
    }

    /// Stops. With `keep`, the attachment and the maps stay pinned and keep forwarding with
    /// their last contents, for the next `xdp-lb run` to adopt. Without, the program is
    /// detached and every pin removed: a clean stop leaves nothing behind.
    pub fn stop(mut self, keep: bool) -> Result<(), io::Error> {
        if keep {
            // Dropping our descriptors leaves the pins, which hold the link and maps.
            return Ok(());
        }
        match self.link.take() {
            Some(Link::Pinned(fd)) => {
                // Remove the pin first: dropping the last descriptor then releases the link,
                // which detaches the program.
                match std::fs::remove_file(self.pin_dir.join(LINK_PIN)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                drop(fd);
            }
            Some(Link::Owned(id)) => {
                let program = self.program_mut().map_err(io::Error::other)?;
                program.detach(id).map_err(io::Error::other)?;
            }
            None => {}
        }
        remove_pins(&self.pin_dir)
    }
}

/// The (key size, value size, entries) each map must have; entries None where it may differ
/// (sizes the agent sets from its config, kept from the pinned map on adoption).
fn expected_layout() -> [(&'static str, u32, u32, Option<u32>); 9] {
    use std::mem::size_of;
    [
        (
            map_names::VIPS,
            size_of::<VipKey>() as u32,
            size_of::<VipInfo>() as u32,
            None,
        ),
        (
            map_names::BACKENDS,
            4,
            size_of::<BackendInfo>() as u32,
            Some(xdp_lb_common::MAX_BACKENDS),
        ),
        (map_names::MAGLEV, 4, 8, None),
        (
            map_names::FLOWS,
            size_of::<FlowKey>() as u32,
            size_of::<FlowValue>() as u32,
            None,
        ),
        (
            map_names::NAT_FLOWS,
            size_of::<FlowKey>() as u32,
            size_of::<FlowValue>() as u32,
            None,
        ),
        (
            map_names::VIP_STATS,
            4,
            size_of::<TrafficCounters>() as u32,
            None,
        ),
        (
            map_names::BACKEND_STATS,
            4,
            size_of::<TrafficCounters>() as u32,
            Some(xdp_lb_common::MAX_BACKENDS),
        ),
        (
            map_names::COUNTERS,
            4,
            8,
            Some(xdp_lb_common::Counter::COUNT),
        ),
        (
            map_names::SETTINGS,
            4,
            size_of::<Settings>() as u32,
            Some(1),
        ),
    ]
}

fn check_pinned_layout(pin_dir: &Path) -> Result<(), DataplaneError> {
    let incompatible = |detail: String| DataplaneError::Incompatible {
        pin_dir: pin_dir.to_owned(),
        detail,
    };
    for (name, key, value, entries) in expected_layout() {
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

const MAP_NAMES: [&str; 13] = [
    map_names::VIP_NAMES,
    map_names::SETTINGS,
    map_names::FLOW_LOG,
    map_names::FLOW_LOG_BUDGET,
    map_names::VIPS,
    map_names::BACKENDS,
    map_names::MAGLEV,
    map_names::FLOWS,
    map_names::NAT_FLOWS,
    map_names::TX_PORTS,
    map_names::VIP_STATS,
    map_names::BACKEND_STATS,
    map_names::COUNTERS,
];

pub fn ifindex(interface: &str) -> Option<u32> {
    let name = CString::new(interface).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// Checks that `pin_dir` is (or will be created) on a bpf filesystem, mounting bpffs on
/// /sys/fs/bpf when that is where it should be and nothing is mounted there yet.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), DataplaneError> {
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
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

/// Typed handles on every map of the program.
pub struct Maps {
    pub vips: HashMap<MapData, VipKey, VipInfo>,
    pub backends: Array<MapData, BackendInfo>,
    pub maglev: MaglevArray,
    pub flows: HashMap<MapData, FlowKey, FlowValue>,
    /// NAT reply direction and SNAT port reservations (see `xdp-lb-ebpf/src/nat.rs`).
    pub nat_flows: HashMap<MapData, FlowKey, FlowValue>,
    pub tx_ports: DevMapHash<MapData>,
    pub vip_stats: PerCpuArray<MapData, TrafficCounters>,
    pub backend_stats: PerCpuArray<MapData, TrafficCounters>,
    pub counters: PerCpuArray<MapData, u64>,
    pub vip_names: Array<MapData, VipName>,
    pub settings: Array<MapData, Settings>,
    pub flow_log_budget: PerCpuArray<MapData, FlowLogBudget>,
    /// The flow-log ring buffer; the agent takes it to read events.
    pub flow_log: Option<RingBuf<MapData>>,
    flows_size: u32,
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Self::from_source(|name| {
            ebpf.take_map(name).ok_or(DataplaneError::MissingMap {
                name,
                place: "the object".into(),
            })
        })
    }

    /// Opens the maps pinned under `pin_dir` by a running (or dead but kept) agent.
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Self::from_source(|name| {
            let path = pin_dir.join(name);
            if !path.exists() {
                return Err(DataplaneError::MissingMap {
                    name,
                    place: format!("{} (is xdp-lb running?)", pin_dir.display()),
                });
            }
            let data =
                MapData::from_pin(&path).map_err(|source| DataplaneError::Map { name, source })?;
            Map::from_map_data(data).map_err(|source| DataplaneError::Map { name, source })
        })
    }

    fn from_source(
        mut get: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Self, DataplaneError> {
        fn conv<T: TryFrom<Map, Error = aya::maps::MapError>>(
            name: &'static str,
            map: Map,
        ) -> Result<T, DataplaneError> {
            T::try_from(map).map_err(|source| DataplaneError::Map { name, source })
        }
        let maglev = match get(map_names::MAGLEV)? {
            Map::Array(data) => MaglevArray::new(data)?,
            _ => {
                return Err(DataplaneError::MissingMap {
                    name: map_names::MAGLEV,
                    place: "the object (wrong type)".into(),
                });
            }
        };
        let flows = get(map_names::FLOWS)?;
        let flows_size = match &flows {
            Map::LruHashMap(d) | Map::HashMap(d) => d.info().map(|i| i.max_entries()).unwrap_or(0),
            _ => 0,
        };
        Ok(Self {
            vips: conv(map_names::VIPS, get(map_names::VIPS)?)?,
            backends: conv(map_names::BACKENDS, get(map_names::BACKENDS)?)?,
            maglev,
            flows: conv(map_names::FLOWS, flows)?,
            nat_flows: conv(map_names::NAT_FLOWS, get(map_names::NAT_FLOWS)?)?,
            tx_ports: conv(map_names::TX_PORTS, get(map_names::TX_PORTS)?)?,
            vip_stats: conv(map_names::VIP_STATS, get(map_names::VIP_STATS)?)?,
            backend_stats: conv(map_names::BACKEND_STATS, get(map_names::BACKEND_STATS)?)?,
            counters: conv(map_names::COUNTERS, get(map_names::COUNTERS)?)?,
            vip_names: conv(map_names::VIP_NAMES, get(map_names::VIP_NAMES)?)?,
            settings: conv(map_names::SETTINGS, get(map_names::SETTINGS)?)?,
            flow_log_budget: conv(map_names::FLOW_LOG_BUDGET, get(map_names::FLOW_LOG_BUDGET)?)?,
            flow_log: Some(conv(map_names::FLOW_LOG, get(map_names::FLOW_LOG)?)?),
            flows_size,
        })
    }
}

/// The `MAGLEV` array, mapped into our memory (it is created with BPF_F_MMAPABLE).
///
/// Writing a 65537-entry table through `bpf_map_update_elem` would take 32769 syscalls; through
/// the mapping it is one 256 KiB copy. The copy goes into the VIP's inactive slot, which no
/// packet reads until the agent swaps `VipInfo::maglev_slot` with one map update (a syscall,
/// so also a full barrier for the copy). The map's u64 elements each pack two entries, so the
/// mapping is read and written here as a plain `u32` table (see `MAGLEV_SLOT_ELEMS`).
pub struct MaglevArray {
    _data: MapData,
    ptr: NonNull<u32>,
    /// Length of the mapping in u32 entries.
    entries: usize,
}

// SAFETY: the mapping is owned by this value and only accessed through &self/&mut self.
unsafe impl Send for MaglevArray {}
unsafe impl Sync for MaglevArray {}

/// u32 entries per slot in the mapping.
const SLOT_STRIDE: usize = MAGLEV_SLOT_ELEMS as usize * 2;

impl MaglevArray {
    fn new(data: MapData) -> Result<Self, DataplaneError> {
        let info = data.info().map_err(|source| DataplaneError::Map {
            name: map_names::MAGLEV,
            source,
        })?;
        if info.value_size() != 8 {
            return Err(DataplaneError::MissingMap {
                name: map_names::MAGLEV,
                place: format!(
                    "the maps (value size {} instead of 8: pinned by another version?)",
                    info.value_size()
                ),
            });
        }
        let len = info.max_entries() as usize * 8;
        // SAFETY: mapping a BPF array fd; the kernel checks BPF_F_MMAPABLE and the length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                name: map_names::MAGLEV,
                source: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast::<u32>()).expect("mmap returned NULL without MAP_FAILED");
        Ok(Self {
            _data: data,
            ptr,
            entries: len / 4,
        })
    }

    /// Number of slots (two per VIP).
    pub fn slots(&self) -> u32 {
        (self.entries / SLOT_STRIDE) as u32
    }

    fn slot_range(&self, slot: u32, len: usize) -> std::ops::Range<usize> {
        let start = slot as usize * SLOT_STRIDE;
        assert!(
            len <= MAGLEV_MAX_TABLE_SIZE as usize && start + len <= self.entries,
            "slot {slot} out of range"
        );
        start..start + len
    }

    /// Copies `table` into `slot`. The caller guarantees no packet reads `slot` now.
    pub fn write_slot(&mut self, slot: u32, table: &[u32]) {
        let range = self.slot_range(slot, table.len());
        // SAFETY: in bounds of the mapping (slot_range asserts); we hold &mut self.
        unsafe {
            std::ptr::copy_nonoverlapping(
                table.as_ptr(),
                self.ptr.as_ptr().add(range.start),
                table.len(),
            );
        }
    }

    /// Reads `len` entries of `slot`.
    pub fn read_slot(&self, slot: u32, len: u32) -> Vec<u32> {
        let range = self.slot_range(slot, len as usize);
        // SAFETY: in bounds of the mapping. The kernel only reads it; another agent writing
        // at the same time would be a misconfiguration (two agents on one pin_dir).
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(range.start), range.len()).to_vec()
        }
    }
}

impl Drop for MaglevArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.entries * 4) };
    }
}

impl Maps {
    /// The flow table's size as created.
    pub fn flows_max_entries(&self) -> u32 {
        self.flows_size
    }

    /// A counter summed over CPUs. `Tx` and `Redirect` are summed over the VIPs' counters,
    /// where the data plane keeps them (see `TrafficCounters`).
    pub fn counter(&self, counter: xdp_lb_common::Counter) -> Result<u64, aya::maps::MapError> {
        use xdp_lb_common::Counter;
        match counter {
            Counter::Tx | Counter::Redirect => {
                let mut total = 0;
                for values in self.vip_stats.iter() {
                    for v in values?.iter() {
                        total += if counter == Counter::Tx {
                            v.tx
                        } else {
                            v.redirect
                        };
                    }
                }
                Ok(total)
            }
            c => Ok(self.counters.get(&(c as u32), 0)?.iter().sum()),
        }
    }

    /// A VIP's or backend's counters summed over CPUs.
    pub fn traffic(
        map: &PerCpuArray<MapData, TrafficCounters>,
        index: u32,
    ) -> Result<TrafficCounters, aya::maps::MapError> {
        let mut total = TrafficCounters::default();
        for v in map.get(&index, 0)?.iter() {
            total.add(v);
        }
        Ok(total)
    }
}
