//! `xdp-lb decap`: the backends' side of tunnel forwarding. Loads the decapsulation program
//! (`xdp-lb-ebpf/src/decap/`), tells it which addresses are this host's (kept in step with the
//! kernel's every second: an address added later opens its tunnels too), attaches it to one
//! interface and holds it there until SIGTERM or SIGINT, then detaches it and removes its
//! pins. Its counters stay readable meanwhile from any process (`xdp-lb decap --status`).
//!
//! The attachment is the process's own (not pinned): when the process dies the program goes
//! with it, and the LB's tunnel health check (`health_check.through_tunnel`) takes the backend
//! out of rotation, with that reason, within its `fall` checks.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, Xdp, tc::SchedClassifierLinkId, xdp::XdpLinkId},
};
use thiserror::Error;
use xdp_lb_common::{
    DECAP_MAX_LOCAL, DECAP_MSS_PROGRAM_NAME, DECAP_PROGRAM_NAME, DecapCounter, DecapSettings,
    decap_map_names, port_be,
};

use crate::{
    dataplane::{AttachMode, AttachedMode, DataplaneError, attach_new, ensure_bpffs},
    netlink::{self, Netlink, NetlinkError},
};

/// The decapsulation program, built by `build.rs` from the `xdp-lb-ebpf` crate.
pub static DECAP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb-decap"));

/// Where its maps are pinned unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdp-lb-decap";

/// How often this host's addresses are read again.
const ADDRESS_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum DecapError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("loading the decapsulation program: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the decapsulation program failed the kernel's checks: {0}")]
    Program(#[source] aya::programs::ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "{0} is not running here (no maps under {1}; start it with `xdp-lb decap --interface IF`)"
    )]
    NotRunning(&'static str, PathBuf),
    #[error("netlink: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("more than {DECAP_MAX_LOCAL} local addresses of one family")]
    TooManyAddresses,
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

/// What `xdp-lb decap` was asked to do.
#[derive(Debug, Clone)]
pub struct DecapOptions {
    pub interface: String,
    /// GUE's UDP port (None: GUE is not decapsulated, only IPIP and IP6IP6).
    pub gue_port: Option<u16>,
    pub mode: AttachMode,
    pub pin_dir: PathBuf,
}

/// The loaded program, its address maps and its attachment.
pub struct Decap {
    ebpf: Ebpf,
    local4: HashMap<MapData, u32, u8>,
    local6: HashMap<MapData, [u8; 16], u8>,
    settings: Array<MapData, DecapSettings>,
    /// What `settings` holds (its GUE port and first few addresses).
    current: DecapSettings,
    known: BTreeSet<IpAddr>,
    link: Option<XdpLinkId>,
    mss_link: Option<SchedClassifierLinkId>,
    pin_dir: PathBuf,
}

impl Decap {
    /// Loads the program with its maps pinned under `pin_dir`, and sets its GUE port.
    pub fn load(pin_dir: &Path, gue_port: Option<u16>) -> Result<Self, DecapError> {
        ensure_bpffs(pin_dir)?;
        std::fs::create_dir_all(pin_dir).map_err(|e| DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            reason: e.to_string(),
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(DECAP_OBJECT)
            .map_err(DecapError::Load)?;
        let program: &mut Xdp = program(&mut ebpf)?;
        program.load().map_err(DecapError::Program)?;
        mss_program(&mut ebpf)?
            .load()
            .map_err(DecapError::Program)?;
        let mut settings: Array<MapData, DecapSettings> =
            take(&mut ebpf, decap_map_names::SETTINGS)?;
        let current = DecapSettings {
            gue_port_be: gue_port.map_or(0, port_be),
            ..Default::default()
        };
        settings
            .set(0, current, 0)
            .map_err(|source| DecapError::Map {
                name: decap_map_names::SETTINGS,
                source,
            })?;
        Ok(Self {
            settings,
            current,
            local4: take(&mut ebpf, decap_map_names::LOCAL4)?,
            local6: take(&mut ebpf, decap_map_names::LOCAL6)?,
            ebpf,
            known: BTreeSet::new(),
            link: None,
            mss_link: None,
            pin_dir: pin_dir.to_owned(),
        })
    }

    /// Attaches to `interface` (auto: driver mode, else generic).
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<AttachedMode, DecapError> {
        let ifindex = netlink::ifindex(interface)
            .ok_or_else(|| DataplaneError::NoInterface(interface.into()))?;
        let (id, attached) = attach_new(program(&mut self.ebpf)?, ifindex, interface, mode)?;
        self.link = Some(id);
        // TC egress (TCX on kernels from 6.6; a clsact qdisc before them): the MSS mirror.
        let _ = aya::programs::tc::qdisc_add_clsact(interface);
        let mss = mss_program(&mut self.ebpf)?
            .attach(interface, TcAttachType::Egress)
            .map_err(DecapError::Program)?;
        self.mss_link = Some(mss);
        Ok(attached)
    }

    /// The loaded program (for BPF_PROG_TEST_RUN).
    pub fn program(&mut self) -> Result<&Xdp, DecapError> {
        program(&mut self.ebpf).map(|p| &*p)
    }

    /// Makes the program's local addresses `now`: (added, removed).
    pub fn set_local(&mut self, now: &BTreeSet<IpAddr>) -> Result<(usize, usize), DecapError> {
        let map_err = |name| move |source| DecapError::Map { name, source };
        let (mut added, mut removed) = (0, 0);
        for a in now.difference(&self.known.clone()) {
            match a {
                IpAddr::V4(v4) => self
                    .local4
                    .insert(u32::from_ne_bytes(v4.octets()), 1, 0)
                    .map_err(|e| too_many(e, map_err(decap_map_names::LOCAL4)))?,
                IpAddr::V6(v6) => self
                    .local6
                    .insert(v6.octets(), 1, 0)
                    .map_err(|e| too_many(e, map_err(decap_map_names::LOCAL6)))?,
            }
            self.known.insert(*a);
            added += 1;
        }
        // The hash maps hold every address before the settings name the first few, and lose
        // one only after the settings stop naming it: a packet never finds a local address
        // in neither place.
        self.write_fast(now)?;
        for a in self.known.difference(now).copied().collect::<Vec<_>>() {
            // An entry already gone is as good as removed.
            let _ = match a {
                IpAddr::V4(v4) => self.local4.remove(&u32::from_ne_bytes(v4.octets())),
                IpAddr::V6(v6) => self.local6.remove(&v6.octets()),
            };
            self.known.remove(&a);
            removed += 1;
        }
        Ok((added, removed))
    }

    /// The first few addresses of each family into the settings (a packet compares those
    /// before it looks the rest up).
    fn write_fast(&mut self, now: &BTreeSet<IpAddr>) -> Result<(), DecapError> {
        let mut next = DecapSettings {
            gue_port_be: self.current.gue_port_be,
            ..Default::default()
        };
        let v4 = now.iter().filter_map(|a| match a {
            IpAddr::V4(v) => Some(u32::from_ne_bytes(v.octets())),
            IpAddr::V6(_) => None,
        });
        for (slot, a) in next.local4.iter_mut().zip(v4) {
            *slot = a;
        }
        let v6 = now.iter().filter_map(|a| match a {
            IpAddr::V6(v) => Some(v.octets()),
            IpAddr::V4(_) => None,
        });
        for (slot, a) in next.local6.iter_mut().zip(v6) {
            *slot = a;
        }
        if next != self.current {
            self.settings
                .set(0, next, 0)
                .map_err(|source| DecapError::Map {
                    name: decap_map_names::SETTINGS,
                    source,
                })?;
            self.current = next;
        }
        Ok(())
    }

    /// Detaches and removes the pins.
    pub fn stop(mut self) {
        if let Some(id) = self.link.take()
            && let Ok(p) = program(&mut self.ebpf)
        {
            let _ = p.detach(id);
        }
        if let Some(id) = self.mss_link.take()
            && let Ok(p) = mss_program(&mut self.ebpf)
        {
            let _ = p.detach(id);
        }
        let pin_dir = self.pin_dir.clone();
        drop(self);
        for name in [
            decap_map_names::LOCAL4,
            decap_map_names::LOCAL6,
            decap_map_names::SETTINGS,
            decap_map_names::COUNTERS,
        ] {
            let _ = std::fs::remove_file(pin_dir.join(name));
        }
        let _ = std::fs::remove_dir(&pin_dir);
    }
}

/// A full hash map says so; other errors are the map's.
fn too_many(
    e: aya::maps::MapError,
    other: impl FnOnce(aya::maps::MapError) -> DecapError,
) -> DecapError {
    match &e {
        aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
            DecapError::TooManyAddresses
        }
        _ => other(e),
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DecapError> {
    ebpf.program_mut(DECAP_PROGRAM_NAME)
        .ok_or(DecapError::Dataplane(DataplaneError::MissingProgram(
            DECAP_PROGRAM_NAME,
        )))?
        .try_into()
        .map_err(DecapError::Program)
}

fn mss_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DecapError> {
    ebpf.program_mut(DECAP_MSS_PROGRAM_NAME)
        .ok_or(DecapError::Dataplane(DataplaneError::MissingProgram(
            DECAP_MSS_PROGRAM_NAME,
        )))?
        .try_into()
        .map_err(DecapError::Program)
}

fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DecapError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DecapError::Dataplane(DataplaneError::MissingMap {
            name,
            place: "the decapsulation object".into(),
        }))?;
    T::try_from(map).map_err(|source| DecapError::Map { name, source })
}

/// The running program's counters, summed over CPUs, from its pins.
pub fn counters(pin_dir: &Path) -> Result<Vec<(DecapCounter, u64)>, DecapError> {
    let path = pin_dir.join(decap_map_names::COUNTERS);
    if !path.exists() {
        return Err(DecapError::NotRunning("xdp-lb decap", pin_dir.to_owned()));
    }
    let name = decap_map_names::COUNTERS;
    let data = MapData::from_pin(&path).map_err(|source| DecapError::Map { name, source })?;
    let map: PerCpuArray<MapData, u64> = Map::from_map_data(data)
        .and_then(PerCpuArray::try_from)
        .map_err(|source| DecapError::Map { name, source })?;
    DecapCounter::ALL
        .iter()
        .map(|c| {
            map.get(&(*c as u32), 0)
                .map(|v| (*c, v.iter().sum()))
                .map_err(|source| DecapError::Map { name, source })
        })
        .collect()
}

/// `xdp-lb decap --interface IF`: load, attach, follow the host's addresses until SIGTERM or
/// SIGINT, then detach.
pub async fn run(options: DecapOptions) -> Result<(), DecapError> {
    use tokio::signal::unix::{SignalKind, signal};
    let netlink = Netlink::new()?;
    let mut decap = Decap::load(&options.pin_dir, options.gue_port)?;
    let local = local_addresses(&netlink).await?;
    decap.set_local(&local)?;
    let mode = match decap.attach(&options.interface, options.mode) {
        Ok(mode) => mode,
        Err(e) => {
            decap.stop();
            return Err(e);
        }
    };
    tracing::info!(
        interface = %options.interface,
        mode = mode.as_str(),
        gue_port = ?options.gue_port,
        addresses = local.len(),
        pin_dir = %options.pin_dir.display(),
        "xdp-lb decap: decapsulating IPIP, IP6IP6{} to this host's addresses",
        if options.gue_port.is_some() { " and GUE" } else { "" }
    );
    let mut term = signal(SignalKind::terminate()).map_err(DecapError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DecapError::Signal)?;
    let mut tick = tokio::time::interval(ADDRESS_REFRESH);
    let result = loop {
        tokio::select! {
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            _ = tick.tick() => {
                match local_addresses(&netlink).await {
                    Ok(now) => match decap.set_local(&now) {
                        Ok((0, 0)) => {}
                        Ok((added, removed)) => tracing::info!(added, removed, "local addresses changed"),
                        Err(e) => break Err(e),
                    },
                    Err(e) => tracing::warn!(error = %e, "reading this host's addresses failed; will retry"),
                }
            }
        }
    };
    decap.stop();
    tracing::info!("xdp-lb decap: detached");
    result
}

/// This host's addresses (every interface's, loopback's VIPs included: a tunnel to a VIP is
/// as much this host's as one to its own address).
async fn local_addresses(netlink: &Netlink) -> Result<BTreeSet<IpAddr>, DecapError> {
    Ok(netlink.all_addresses().await?.into_iter().collect())
}
