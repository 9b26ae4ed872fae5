//! The real XDP program, loaded but not attached, with maps filled through the real
//! reconciler from a real config: the subject of the BPF_PROG_TEST_RUN packet tables and the
//! bench. BPF_PROG_TEST_RUN runs with the loopback device as the ingress interface
//! (ifindex 1), so backends "reached through" ifindex 1 are forwarded with XDP_TX.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use anyhow::Context as _;
use aya::programs::{TestRun as _, TestRunOptions};
use xdp_lb::{
    config::{self, Config},
    dataplane::{Dataplane, MapSizes, Maps, Reconciler, remove_pins},
    netlink::L2Next,
    state::{self, IdAssignment},
};
use xdp_lb_common::{Counter, FlowKey, FlowValue};

use crate::packet::LB_MAC;

pub const LOOPBACK_IFINDEX: u32 = 1;

pub fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, (i >> 8) as u8, (i as u8).wrapping_add(1)]
}

pub struct Loaded {
    pub dp: Option<Dataplane>,
    pub reconciler: Reconciler,
    pub config: Config,
    pub ids: IdAssignment,
    pub pin_dir: PathBuf,
}

/// A test run's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub action: u32,
    pub out: Vec<u8>,
    pub duration_ns: u64,
}

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

impl Loaded {
    /// Loads the program with maps pinned under a unique directory and applies `config_text`,
    /// every backend resolved to `backend_mac(i)` via ifindex `ifindex`.
    pub fn new(config_text: &str, ifindex: u32) -> anyhow::Result<Self> {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/xlbt{}-{}",
            std::process::id(),
            unique()
        ));
        let text = config_text.replace("@PIN_DIR@", &pin_dir.display().to_string());
        let config = config::parse(std::path::Path::new("test.toml"), &text)?;
        let sizes = MapSizes {
            flow_table_size: config.agent.flow_table_size,
            flow_table_size_ipv6: config.agent.flow_table_size_ipv6,
            max_vips: config.agent.max_vips,
        };
        let (dp, maps) = Dataplane::load(&pin_dir, sizes).context("loading the program")?;
        let reconciler = Reconciler::new(maps)?;
        let ids = IdAssignment::default().assign(&config)?;
        let mut loaded = Self {
            dp: Some(dp),
            reconciler,
            config,
            ids,
            pin_dir,
        };
        loaded.apply(ifindex)?;
        Ok(loaded)
    }

    pub fn dp(&self) -> &Dataplane {
        self.dp.as_ref().expect("loaded")
    }

    /// The maps, to read (the reconciler is their one writer).
    pub fn maps(&self) -> &Maps {
        self.reconciler.maps()
    }

    /// A flow table (`FLOWS` or `NAT_FLOWS`) opened from its pin, for a test that writes
    /// behind the reconciler's back to set up or inspect a state (as the program would).
    pub fn pinned_flow_table(
        &self,
        name: &str,
    ) -> anyhow::Result<aya::maps::HashMap<aya::maps::MapData, FlowKey, FlowValue>> {
        self.pinned_flows(name)
    }

    /// A flow table of either family (`FLOWS6` and the NAT66 maps hold `FlowKey6` →
    /// `FlowValue6`), as `pinned_flow_table`.
    pub fn pinned_flows<K: aya::Pod, V: aya::Pod>(
        &self,
        name: &str,
    ) -> anyhow::Result<aya::maps::HashMap<aya::maps::MapData, K, V>> {
        let data = aya::maps::MapData::from_pin(self.pin_dir.join(name))?;
        Ok(aya::maps::Map::from_map_data(data)?.try_into()?)
    }

    /// Re-applies the config (after changing `self.config`), all backends resolved.
    pub fn apply(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.ids = self.ids.assign(&self.config)?;
        let neighbours = self.all_resolved(ifindex);
        self.apply_with(&neighbours)
    }

    /// Every configured backend resolved via `ifindex`, with MAC `backend_mac(i)`.
    pub fn all_resolved(&self, ifindex: u32) -> BTreeMap<IpAddr, L2Next> {
        let mut neighbours = BTreeMap::new();
        for vip in &self.config.vips {
            for (i, b) in vip.backends.iter().enumerate() {
                neighbours.insert(
                    b.address,
                    L2Next {
                        ifindex,
                        mac: backend_mac(i),
                        src_mac: LB_MAC,
                    },
                );
            }
        }
        neighbours
    }

    pub fn apply_with(&mut self, neighbours: &BTreeMap<IpAddr, L2Next>) -> anyhow::Result<()> {
        self.apply_health(neighbours, &state::Health::new())
    }

    /// Applies the config with the given health (what the agent does on a health transition).
    pub fn apply_health(
        &mut self,
        neighbours: &BTreeMap<IpAddr, L2Next>,
        health: &state::Health,
    ) -> anyhow::Result<()> {
        self.apply_inputs(neighbours, health, None)?;
        Ok(())
    }

    /// The desired state of these inputs (the interface's SNAT address left to the config),
    /// applied by the real reconciler; returns what it applied.
    pub fn apply_inputs(
        &mut self,
        neighbours: &BTreeMap<IpAddr, L2Next>,
        health: &state::Health,
        local_mac: Option<[u8; 6]>,
    ) -> anyhow::Result<xdp_lb::dataplane::ApplyReport> {
        let desired = state::desired_state(&state::StateInputs {
            config: &self.config,
            ids: &self.ids,
            neighbours,
            health,
            local_mac,
            snat_address: Default::default(),
            tunnel_source: Default::default(),
            interface_mtu: 1500,
            ramps: &state::Ramps::new(),
        });
        Ok(self.reconciler.apply(&desired)?)
    }

    /// Turns the data plane's destination-MAC check on for `mac` (as the agent does with its
    /// interface's MAC), all backends resolved via `ifindex`.
    pub fn check_local_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> anyhow::Result<()> {
        let neighbours = self.all_resolved(ifindex);
        self.apply_inputs(&neighbours, &state::Health::new(), Some(mac))?;
        Ok(())
    }

    /// Runs the program once on `frame`.
    pub fn run(&self, frame: &[u8]) -> anyhow::Result<Run> {
        self.run_repeat(frame, 1)
    }

    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> anyhow::Result<Run> {
        run_program(self.dp.as_ref().expect("loaded").program(), frame, repeat)
    }

    /// A counter summed over CPUs.
    /// Runs a table of frames that are not forwarded, each with the counter that must count
    /// it: passed frames go to the kernel byte for byte, the others are dropped.
    pub fn assert_verdicts(&self, cases: &[(&str, Vec<u8>, Counter)]) {
        for (what, frame, counter) in cases {
            let before = self.counter(*counter);
            let r = self.run(frame).unwrap();
            let verdict = if counter.passes() { XDP_PASS } else { XDP_DROP };
            assert_eq!(r.action, verdict, "{what}: {:?}", self.all_counters());
            assert_eq!(self.counter(*counter), before + 1, "{what}: {counter:?}");
            if counter.passes() {
                assert_eq!(&r.out, frame, "{what}: passed untouched");
            }
        }
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.maps().counter(c).unwrap_or(0)
    }

    pub fn all_counters(&self) -> BTreeMap<&'static str, u64> {
        Counter::ALL
            .iter()
            .map(|c| (c.name(), self.counter(*c)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// The backend id of (vip 0, backend address).
    pub fn backend_id(&self, vip: usize, address: impl Into<IpAddr>) -> u32 {
        self.ids.backends[&(self.config.vips[vip].key(), address.into())]
    }
}

/// The test-side object (`test-ebpf`) with the programs `names` loaded, not attached.
pub fn bench_programs(names: &[&str]) -> anyhow::Result<aya::Ebpf> {
    let mut ebpf = aya::Ebpf::load(crate::BENCH_OBJECT).context("loading the bench programs")?;
    for name in names {
        let p: &mut aya::programs::Xdp = ebpf
            .program_mut(name)
            .with_context(|| name.to_string())?
            .try_into()?;
        p.load()?;
    }
    Ok(ebpf)
}

/// The program `name` of `ebpf`.
pub fn xdp<'a>(ebpf: &'a aya::Ebpf, name: &str) -> anyhow::Result<&'a aya::programs::Xdp> {
    Ok(ebpf.program(name).context(name.to_owned())?.try_into()?)
}

pub fn run_program(program: &aya::programs::Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<Run> {
    let mut out = vec![0u8; frame.len() + 256];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(Run {
        action: result.return_value,
        out,
        duration_ns: result.duration.as_nanos() as u64,
    })
}

impl Drop for Loaded {
    fn drop(&mut self) {
        drop(self.dp.take());
        let _ = remove_pins(&self.pin_dir);
    }
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// BPF_PROG_TEST_RUN in live-frames mode on a program fd (aya's `test_run` needs the program
/// object, which stays on this side of the namespace switch).
pub fn run_live(
    fd: &aya::programs::ProgramFd,
    frame: &[u8],
    ctx: &[u8],
    repeat: u32,
) -> anyhow::Result<()> {
    // bpf_attr for BPF_PROG_TEST_RUN (include/uapi/linux/bpf.h, `test` member).
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    let attr = TestAttr {
        prog_fd: std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd)) as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: ctx.len() as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: 64,
        ..Default::default()
    };
    // SAFETY: attr points at live buffers of the sizes given, for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &attr as *const TestAttr,
            std::mem::size_of::<TestAttr>(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EPERM) {
            return Err(LiveFramesRefused.into());
        }
        anyhow::bail!("BPF_PROG_TEST_RUN (live frames): {err}");
    }
    Ok(())
}

/// The kernel refused BPF_PROG_TEST_RUN's live-frames mode with EPERM, to root (seen on this
/// machine kind's kernel on 2026-12-06, even for a two-instruction XDP_DROP program on a
/// namespace's loopback; ordinary test runs still work there). Live frames put packets on a
/// device from a syscall, which a kernel may be built or set up to forbid. The forwarding-rate
/// bed then sends its frames through AF_PACKET instead (compare's `packet_sender`).
#[derive(Debug)]
pub struct LiveFramesRefused;

impl std::fmt::Display for LiveFramesRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this kernel refuses BPF_PROG_TEST_RUN's live-frames mode (EPERM, as root)")
    }
}

impl std::error::Error for LiveFramesRefused {}

/// Whether `e` is (or wraps) the kernel's refusal of live frames.
pub fn live_frames_refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<LiveFramesRefused>().is_some()
}

/// Whether this kernel runs XDP programs in live-frames mode for us: one frame of the bench
/// object's `xdp_empty` (XDP_PASS) on the loopback of a scratch namespace. Ok(false) on the
/// kernel's refusal (`LiveFramesRefused`); any other failure is an error.
pub fn live_frames_supported() -> anyhow::Result<bool> {
    let ebpf = bench_programs(&["xdp_empty"])?;
    let fd = xdp(&ebpf, "xdp_empty")?.fd()?.try_clone()?;
    let ns = crate::NetNs::new("probe")?;
    let result = crate::in_netns(&ns.name, move || -> anyhow::Result<()> {
        // An Ethernet frame (60 bytes, IPv4 ether type, all else zero), on `lo` (ifindex 1 in a
        // new namespace); struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
        let mut frame = [0u8; 60];
        frame[12] = 0x08;
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&LOOPBACK_IFINDEX.to_ne_bytes());
        run_live(&fd, &frame, &ctx, 1)
    })?;
    match result {
        Ok(()) => Ok(true),
        Err(e) if live_frames_refused(&e) => Ok(false),
        Err(e) => Err(e),
    }
}
