//! The data plane as the agent holds it: the loaded XDP program, its attachment, its pinned
//! maps, and the one writer of those maps.
//!
//! - `mod.rs` (here) — load, attach (or adopt a pinned attachment), stop.
//! - `maps` — typed handles on every map; readable by anyone, writable only in here.
//! - `reconcile` — [`Reconciler`], the only writer: desired state in, map writes out, step by
//!   step; `held` — what the maps hold, as it knows them; `purge` — its flow purges;
//!   `sync_install` — its installs of the peers' flows.
//! - `nat_expiry` — the reconciler's walk that reclaims expired NAT flows.
//! - `maglev_array` — the Maglev tables, written through a memory mapping.
//! - `pins` — the bpf filesystem, the pins, and the layout check before adopting them.
//!
//! Maps are pinned by name under `agent.pin_dir`; aya reuses a map already pinned there, which
//! is how a restarted agent finds the flow table of the one before it. `Maps::open_pinned`
//! opens the same maps from any other process (`xdp-lb inspect`, tests).

mod held;
mod maglev_array;
mod maps;
mod nat_expiry;
mod pins;
mod purge;
mod reconcile;
mod reconcile_acl;
mod reconcile_error;
mod reconcile_vips;
mod sync_install;

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use thiserror::Error;
use xdp_lb_common::{MAGLEV_SLOT_ELEMS, PROGRAM_NAME, map_names};

use self::pins::check_pinned_layout;
pub(crate) use self::pins::ensure_bpffs;
pub use self::{
    maps::Maps,
    pins::{LINK_PIN, remove_pins},
    reconcile::{ApplyReport, Reconciler},
    reconcile_error::ReconcileError,
    reconcile_vips::SLOT_REUSE_GRACE,
    sync_install::{InstallReport, SyncedFlow},
};
use crate::netlink;

/// The data plane object, built by `build.rs` from the `xdp-lb-ebpf` crate.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb-ebpf"));

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("{path}: {reason}")]
    PinDir { path: PathBuf, reason: String },
    #[error("loading the XDP object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the XDP object has no program {0:?} (built from another version?)")]
    MissingProgram(&'static str),
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
    #[error("map {name} is not what this version expects: {detail}")]
    WrongMap { name: &'static str, detail: String },
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
    /// `FLOWS6`, the IPv6 flow table.
    pub flow_table_size_ipv6: u32,
    pub max_vips: u32,
}

/// How to attach: driver (native) mode, generic (skb) mode, or driver falling back to generic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Auto,
    Driver,
    Generic,
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
    attached: Option<(String, AttachedMode)>,
    /// The maps were already pinned (left by an agent that died or was stopped with
    /// `--keep-dataplane`) and are being reused, flow table included.
    pub adopted_maps: bool,
    /// aya-log's reader of the program's debug messages, until the agent takes it to poll.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// The attachment: a bpf_link pinned under `pin_dir/link`, so that it outlives the agent, or
/// (on kernels without XDP bpf_link) a netlink attachment owned by the program.
enum Link {
    Pinned(FdLink),
    Owned(XdpLinkId),
}

impl Dataplane {
    /// Loads the program and creates (or reuses) the pinned maps. Nothing is attached yet.
    /// The maps come back apart: they are for the one [`Reconciler`] to own.
    pub fn load(pin_dir: &Path, sizes: MapSizes) -> Result<(Self, Maps), DataplaneError> {
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
        let dataplane = Self {
            ebpf,
            link: None,
            pin_dir: pin_dir.to_owned(),
            attached: None,
            adopted_maps,
            logger,
        };
        Ok((dataplane, maps))
    }

    fn load_inner(pin_dir: &Path, sizes: MapSizes) -> Result<(Ebpf, Maps), DataplaneError> {
        let maglev_entries = sizes.max_vips * 2 * MAGLEV_SLOT_ELEMS;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries(map_names::FLOWS, sizes.flow_table_size)
            .map_max_entries(map_names::NAT_FLOWS, sizes.flow_table_size)
            .map_max_entries(map_names::NAT_EMBRYONIC, sizes.flow_table_size)
            .map_max_entries(map_names::NAT_EMBRYONIC_CLIENT, sizes.flow_table_size)
            .map_max_entries(map_names::FLOWS6, sizes.flow_table_size_ipv6)
            .map_max_entries(map_names::NAT_FLOWS6, sizes.flow_table_size_ipv6)
            .map_max_entries(map_names::NAT_EMBRYONIC6, sizes.flow_table_size_ipv6)
            .map_max_entries(map_names::NAT_EMBRYONIC_CLIENT6, sizes.flow_table_size_ipv6)
            .map_max_entries(map_names::VIPS, sizes.max_vips)
            .map_max_entries(map_names::VIPS6, sizes.max_vips)
            .map_max_entries(map_names::VIP_STATS, sizes.max_vips)
            .map_max_entries(map_names::VIP_NAMES, sizes.max_vips)
            .map_max_entries(map_names::VIP_LIMITS, sizes.max_vips)
            .map_max_entries(map_names::VIP_TUNNELS, sizes.max_vips)
            .map_max_entries(map_names::MAGLEV, maglev_entries)
            .load(PROGRAM_OBJECT)
            .map_err(DataplaneError::Load)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?
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

    /// Where the program is attached, and how (None before `attach`).
    pub fn attached(&self) -> Option<&(String, AttachedMode)> {
        self.attached.as_ref()
    }

    /// The program's debug-log reader, for the agent to poll (once).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
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
        mode: AttachMode,
    ) -> Result<AttachedMode, DataplaneError> {
        let ifindex = netlink::ifindex(interface)
            .ok_or_else(|| DataplaneError::NoInterface(interface.into()))?;
        let link_pin = self.pin_dir.join(LINK_PIN);
        if link_pin.exists() {
            match adopt_link(self.program_mut()?, &link_pin) {
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
        let (id, attached) = attach_new(self.program_mut()?, ifindex, interface, mode)?;
        // Pin the attachment so that it outlives this process (a crash or an upgrade).
        let link = self
            .program_mut()?
            .take_link(id)
            .map_err(DataplaneError::Program)?;
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

/// Why the pinned attachment could not be taken over.
#[derive(Debug, Error)]
enum AdoptError {
    #[error("{0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error("{0}")]
    Program(#[from] aya::programs::ProgramError),
}

/// Puts `program` on the attachment an earlier agent pinned at `link_pin` (bpf_link_update).
fn adopt_link(program: &mut Xdp, link_pin: &Path) -> Result<FdLink, AdoptError> {
    let fd: FdLink = PinnedLink::from_pin(link_pin)?.into();
    let link = XdpLink::try_from(fd)?;
    let id = program.attach_to_link(link)?;
    let link = program.take_link(id)?;
    Ok(FdLink::try_from(link)?)
}

/// Attaches `program` to `ifindex` afresh: in driver mode, generic mode, or driver mode
/// falling back to generic (`Auto`, said in the log).
pub(crate) fn attach_new(
    program: &mut Xdp,
    ifindex: u32,
    interface: &str,
    mode: AttachMode,
) -> Result<(XdpLinkId, AttachedMode), DataplaneError> {
    let mut attempt = |m: AttachedMode| {
        let aya_mode = match m {
            AttachedMode::Generic => AyaXdpMode::Skb,
            _ => AyaXdpMode::Driver,
        };
        program
            .attach_to_if_index(ifindex, aya_mode)
            .map(|id| (id, m))
            .map_err(|source| DataplaneError::Attach {
                interface: interface.into(),
                mode: m.as_str(),
                source,
            })
    };
    match mode {
        AttachMode::Driver => attempt(AttachedMode::Driver),
        AttachMode::Generic => attempt(AttachedMode::Generic),
        AttachMode::Auto => attempt(AttachedMode::Driver).or_else(|err| {
            tracing::warn!(
                interface,
                error = %err,
                "driver-mode XDP is not available; falling back to generic mode (slower: runs after the kernel allocates an skb)"
            );
            attempt(AttachedMode::Generic)
        }),
    }
}
