//! `xdp-lb capture`: the frames the program sent (after its rewrite) and dropped, with the
//! verdict, from the `CAPTURE` ring buffer into a pcapng file. tcpdump on the LB cannot show
//! them: XDP_TX and XDP_REDIRECT leave below the kernel's taps.
//!
//! A capture is a session of this command, not part of the agent's desired state: it writes
//! `CAPTURE_CONFIG` (the program's filter and sample rate) when it starts, renews its deadline
//! every second and clears it when it ends, however it ends; if it is killed the program stops
//! recording by itself at the deadline. The agent never writes that map. One capture at a
//! time: a second one is refused while the first's deadline runs.

pub mod pcapng;

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use thiserror::Error;
use xdp_lb_common::{
    CAPTURE_ANY, CAPTURE_MAX_SNAPLEN, CAPTURE_SENT, CAPTURE_WHAT_DROPS, CAPTURE_WHAT_SENT,
    CaptureConfig, CaptureRecord, CaptureStats, Counter, map_names,
};

use self::pcapng::PcapngWriter;
use crate::{
    clock::monotonic_ns,
    dataplane::DataplaneError,
    observe::inspect::{InspectError, Inspector},
};

/// How long the program keeps recording without hearing from this command.
const LEASE: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Maps(#[from] DataplaneError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("no backend named {name:?}{} (there are: {})", vip.as_ref().map(|v| format!(" in VIP {v:?}")).unwrap_or_default(), known.join(", "))]
    NoSuchBackend {
        name: String,
        vip: Option<String>,
        known: Vec<String>,
    },
    #[error("backend name {name:?} is in several VIPs ({}): add --vip", vips.join(", "))]
    AmbiguousBackend { name: String, vips: Vec<String> },
    #[error("another capture is running (its lease ends within {0:?}); one capture at a time")]
    Busy(Duration),
    #[error("--snaplen {0}: 1 to {CAPTURE_MAX_SNAPLEN} bytes")]
    Snaplen(u32),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to record, and where.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub pin_dir: PathBuf,
    pub vip: Option<String>,
    pub backend: Option<String>,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub snaplen: u32,
    /// Record one in `every` matching frames (per CPU).
    pub every: u32,
    pub sent: bool,
    pub drops: bool,
    /// The pcapng file; "-": standard output.
    pub output: PathBuf,
}

/// What a capture did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSummary {
    pub written: u64,
    pub sent: u64,
    pub dropped: u64,
    /// The program's counts for this capture: frames that matched the filter, were recorded,
    /// and were lost because the ring was full.
    pub matched: u64,
    pub recorded: u64,
    pub lost: u64,
}

/// The program's three capture maps.
struct CaptureMaps {
    config: Array<MapData, CaptureConfig>,
    ring: RingBuf<MapData>,
    stats: PerCpuArray<MapData, CaptureStats>,
}

impl CaptureMaps {
    fn open(pin_dir: &Path) -> Result<Self, CaptureError> {
        let open = |name: &'static str| -> Result<Map, CaptureError> {
            let path = pin_dir.join(name);
            if !path.exists() {
                return Err(DataplaneError::MissingMap {
                    name,
                    place: format!(
                        "{} (is xdp-lb running, at this version?)",
                        pin_dir.display()
                    ),
                }
                .into());
            }
            let data =
                MapData::from_pin(&path).map_err(|source| DataplaneError::Map { name, source })?;
            Map::from_map_data(data).map_err(|source| CaptureError::Map { name, source })
        };
        let map_err = |name| move |source| CaptureError::Map { name, source };
        Ok(Self {
            config: Array::try_from(open(map_names::CAPTURE_CONFIG)?)
                .map_err(map_err(map_names::CAPTURE_CONFIG))?,
            ring: RingBuf::try_from(open(map_names::CAPTURE)?)
                .map_err(map_err(map_names::CAPTURE))?,
            stats: PerCpuArray::try_from(open(map_names::CAPTURE_STATS)?)
                .map_err(map_err(map_names::CAPTURE_STATS))?,
        })
    }

    fn set(&mut self, cfg: CaptureConfig) -> Result<(), CaptureError> {
        self.config
            .set(0, cfg, 0)
            .map_err(|source| CaptureError::Map {
                name: map_names::CAPTURE_CONFIG,
                source,
            })
    }

    fn stats(&self) -> CaptureStats {
        let mut total = CaptureStats::default();
        if let Ok(per_cpu) = self.stats.get(&0, 0) {
            for s in per_cpu.iter() {
                total.matched += s.matched;
                total.recorded += s.recorded;
                total.lost += s.lost;
            }
        }
        total
    }
}

/// Clears the capture's config however the session ends (error, panic, signal).
struct Session<'a>(&'a mut CaptureMaps);

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.0.set(CaptureConfig::default());
    }
}

/// The names a record's ids stand for.
struct Names {
    vips: BTreeMap<u32, String>,
    backends: BTreeMap<u32, String>,
}

impl Names {
    fn comment(&self, r: &CaptureRecord) -> String {
        let action = match r.action {
            1 => "drop",
            2 => "pass",
            3 => "tx",
            4 => "redirect",
            _ => "?",
        };
        if r.reason != CAPTURE_SENT {
            let reason = Counter::ALL
                .get(r.reason as usize)
                .map_or("unknown", |c| c.name());
            return format!("xdp-lb: {action} reason={reason}");
        }
        let name = |m: &BTreeMap<u32, String>, id: u32| {
            m.get(&id).cloned().unwrap_or_else(|| format!("id {id}"))
        };
        format!(
            "xdp-lb: {action} vip={} backend={}",
            name(&self.vips, r.vip_id),
            name(&self.backends, r.backend_id)
        )
    }
}

/// The ids of `--vip` and `--backend` (CAPTURE_ANY when not given), and every name.
fn resolve(
    inspector: &Inspector,
    opts: &CaptureOptions,
) -> Result<(u32, u32, Names), CaptureError> {
    let vips = inspector.vips();
    let backends = inspector.backends(opts.vip.as_deref())?;
    let vip_id = match &opts.vip {
        // `backends` above refused an unknown name, listing the known ones.
        Some(name) => vips
            .iter()
            .find(|v| &v.name == name)
            .map_or(CAPTURE_ANY, |v| v.vip_id),
        None => CAPTURE_ANY,
    };
    let backend_id = match &opts.backend {
        None => CAPTURE_ANY,
        Some(name) => {
            let found: Vec<_> = backends
                .iter()
                .filter(|b| &b.name == name || b.address.to_string() == *name)
                .collect();
            match found.as_slice() {
                [one] => one.id,
                [] => {
                    return Err(CaptureError::NoSuchBackend {
                        name: name.clone(),
                        vip: opts.vip.clone(),
                        known: backends.iter().map(|b| b.name.clone()).collect(),
                    });
                }
                many => {
                    return Err(CaptureError::AmbiguousBackend {
                        name: name.clone(),
                        vips: many.iter().map(|b| b.vip.clone()).collect(),
                    });
                }
            }
        }
    };
    let names = Names {
        vips: vips.iter().map(|v| (v.vip_id, v.name.clone())).collect(),
        backends: inspector
            .backends(None)?
            .into_iter()
            .map(|b| (b.id, b.name))
            .collect(),
    };
    Ok((vip_id, backend_id, names))
}

impl CaptureMaps {
    /// Refuses while another capture's lease runs; drops what a previous one left unread.
    fn claim(&mut self) -> Result<(), CaptureError> {
        let current = self.config.get(&0, 0).unwrap_or_default();
        let now = monotonic_ns();
        if current.every != 0 && current.until_ns > now {
            return Err(CaptureError::Busy(Duration::from_nanos(
                current.until_ns - now,
            )));
        }
        while self.ring.next().is_some() {}
        Ok(())
    }
}

/// The pcapng file (or standard output for `-`), its header written.
fn open_output(opts: &CaptureOptions, interface: &str) -> io::Result<PcapngWriter<Box<dyn Write>>> {
    let out: Box<dyn Write> = if opts.output == Path::new("-") {
        Box::new(io::stdout().lock())
    } else {
        Box::new(BufWriter::new(File::create(&opts.output)?))
    };
    PcapngWriter::new(out, interface, opts.snaplen)
}

/// One ring item into the file, counted (an item shorter than a record, which the program
/// never makes, is skipped).
fn write_record(
    pcap: &mut PcapngWriter<Box<dyn Write>>,
    names: &Names,
    offset: u64,
    item: &[u8],
    summary: &mut CaptureSummary,
) -> io::Result<()> {
    if item.len() < size_of::<CaptureRecord>() {
        return Ok(());
    }
    // SAFETY: `item` holds a whole CaptureRecord (checked above; the program reserves exactly
    // one), read unaligned; its fields are plain integers.
    let r: CaptureRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
    let caplen = (r.caplen as usize).min(CAPTURE_MAX_SNAPLEN as usize);
    pcap.packet(
        r.ts_ns + offset,
        r.len,
        &r.data[..caplen],
        &names.comment(&r),
    )?;
    summary.written += 1;
    if r.reason == CAPTURE_SENT {
        summary.sent += 1;
    } else {
        summary.dropped += 1;
    }
    Ok(())
}

/// Runs a capture until `--count` frames, `--duration`, or `stop` (a signal).
pub fn run(
    opts: &CaptureOptions,
    interface: &str,
    stop: &AtomicBool,
) -> Result<CaptureSummary, CaptureError> {
    if opts.snaplen == 0 || opts.snaplen > CAPTURE_MAX_SNAPLEN {
        return Err(CaptureError::Snaplen(opts.snaplen));
    }
    let inspector = Inspector::open(&opts.pin_dir)?;
    let (vip_id, backend_id, names) = resolve(&inspector, opts)?;
    let mut maps = CaptureMaps::open(&opts.pin_dir)?;
    maps.claim()?;
    let write_err = |source| CaptureError::Write {
        path: opts.output.clone(),
        source,
    };
    let mut pcap = open_output(opts, interface).map_err(write_err)?;
    let before = maps.stats();
    let what =
        (u32::from(opts.sent) * CAPTURE_WHAT_SENT) | (u32::from(opts.drops) * CAPTURE_WHAT_DROPS);
    let config = |until_ns| CaptureConfig {
        every: opts.every.max(1),
        snaplen: opts.snaplen,
        vip_id,
        backend_id,
        what,
        _pad: 0,
        until_ns,
    };
    // Monotonic (the program's clock) to wall-clock nanoseconds, for the file's timestamps.
    let wall_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let offset = wall_ns.saturating_sub(monotonic_ns());
    let session = Session(&mut maps);
    session
        .0
        .set(config(monotonic_ns() + LEASE.as_nanos() as u64))?;
    let started = Instant::now();
    let mut renewed = Instant::now();
    let mut summary = CaptureSummary::default();
    let done = |s: &CaptureSummary| {
        stop.load(Ordering::Relaxed)
            || opts.count.is_some_and(|n| s.written >= n)
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
    };
    while !done(&summary) {
        let mut any = false;
        while let Some(item) = session.0.ring.next() {
            any = true;
            write_record(&mut pcap, &names, offset, &item, &mut summary).map_err(write_err)?;
            if done(&summary) {
                break;
            }
        }
        if any {
            pcap.flush().map_err(write_err)?;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if renewed.elapsed() >= Duration::from_secs(1) {
            session
                .0
                .set(config(monotonic_ns() + LEASE.as_nanos() as u64))?;
            renewed = Instant::now();
        }
    }
    pcap.flush().map_err(write_err)?;
    let after = session.0.stats();
    drop(session);
    summary.matched = after.matched.saturating_sub(before.matched);
    summary.recorded = after.recorded.saturating_sub(before.recorded);
    summary.lost = after.lost.saturating_sub(before.lost);
    Ok(summary)
}
