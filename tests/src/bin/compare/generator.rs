//! The traffic generator of the forwarding-rate bed: `xdp_gen` run by `BPF_PROG_TEST_RUN` in
//! live-frames mode from one or two pinned threads (or, on a kernel that refuses live frames,
//! the same frames through AF_PACKET: `packet_sender`), and the sinks' count of what arrived.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aya::programs::Xdp;
use xdp_lb_tests::{NetNs, harness::run_live, in_netns};

/// The generator (client namespace) and the sinks (one per backend).
pub(crate) struct Traffic {
    gen_ebpf: aya::Ebpf,
    sinks: Vec<aya::Ebpf>,
    sender: Sender,
}

/// How the generator puts its frames on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sender {
    /// `xdp_gen` in BPF_PROG_TEST_RUN's live-frames mode: frames are XDP frames from the start.
    LiveFrames,
    /// An AF_PACKET socket (`packet_sender`), where the kernel refuses live frames.
    Packet,
}

impl Sender {
    /// For a target line.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Sender::LiveFrames => "live frames",
            Sender::Packet => "AF_PACKET sender",
        }
    }

    /// For the report.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Sender::LiveFrames => "`BPF_PROG_TEST_RUN` live frames (`xdp_gen`)",
            Sender::Packet => {
                "an AF_PACKET socket, qdisc bypassed (this kernel refuses live frames: each frame \
                 starts as an skb that the receiving veth copies into an XDP frame, so rates are \
                 lower than with live frames; compare ratios within the run)"
            }
        }
    }
}

/// One generator thread's work: its CPU's flows, sent by live frames or AF_PACKET.
enum Job {
    Live {
        fd: aya::programs::ProgramFd,
        frame: Vec<u8>,
        ctx: [u8; 24],
    },
    Packet {
        ifindex: u32,
        frames: Vec<Vec<u8>>,
    },
}

impl Job {
    /// Sends `count` frames from the calling thread (in the generator's namespace).
    fn run(&self, count: u32) -> anyhow::Result<()> {
        match self {
            Job::Live { fd, frame, ctx } => run_live(fd, frame, ctx, count),
            Job::Packet { ifindex, frames } => crate::packet_sender::send(*ifindex, frames, count),
        }
    }
}

pub(crate) fn load_in(
    ns: &NetNs,
    attach: Option<(&str, &'static str)>,
) -> anyhow::Result<aya::Ebpf> {
    let attach = attach.map(|(i, p)| (i.to_owned(), p));
    in_netns(&ns.name, move || -> anyhow::Result<aya::Ebpf> {
        let mut ebpf = aya::Ebpf::load(xdp_lb_tests::BENCH_OBJECT)?;
        if let Some((interface, program)) = attach {
            let p: &mut Xdp = ebpf.program_mut(program).context(program)?.try_into()?;
            p.load()?;
            p.attach(&interface, aya::programs::XdpMode::Driver)?;
        } else {
            let p: &mut Xdp = ebpf.program_mut("xdp_gen").context("xdp_gen")?.try_into()?;
            p.load()?;
        }
        Ok(ebpf)
    })?
}

impl Traffic {
    pub(crate) fn new(generator: &NetNs, sinks: Vec<aya::Ebpf>) -> anyhow::Result<Self> {
        let sender = if xdp_lb_tests::harness::live_frames_supported()? {
            Sender::LiveFrames
        } else {
            eprintln!(
                "compare: {}; sending the rate rows' frames through AF_PACKET instead",
                xdp_lb_tests::harness::LiveFramesRefused
            );
            Sender::Packet
        };
        Ok(Self {
            gen_ebpf: load_in(generator, None)?,
            sinks,
            sender,
        })
    }

    pub(crate) fn sender(&self) -> Sender {
        self.sender
    }

    /// Generator thread `cpu`'s job for `frame` out of `ifindex`.
    fn job(&self, frame: &[u8], ifindex: u32, cpu: usize) -> anyhow::Result<Job> {
        Ok(match self.sender {
            Sender::LiveFrames => {
                let program: &Xdp = self
                    .gen_ebpf
                    .program("xdp_gen")
                    .context("xdp_gen")?
                    .try_into()?;
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex; data_end must be the frame's length.
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                Job::Live {
                    fd: program.fd()?.try_clone()?,
                    frame: frame.to_vec(),
                    ctx,
                }
            }
            Sender::Packet => Job::Packet {
                ifindex,
                frames: crate::packet_sender::frames_for(frame, cpu)?,
            },
        })
    }

    fn delivered(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for s in &self.sinks {
            let m: aya::maps::PerCpuArray<_, u64> =
                aya::maps::PerCpuArray::try_from(s.map("SINK_COUNT").context("SINK_COUNT")?)?;
            total += m.get(&0, 0)?.iter().sum::<u64>();
        }
        Ok(total)
    }

    /// Sends `frames` copies of `frame` (source ports cycled by the generator) out of interface
    /// `ifindex` of `ns`, from `cpus` generator threads at once (thread k pinned to CPU k, each
    /// sending its share); returns (frames delivered to the sinks, seconds).
    ///
    /// A veth hands a frame to the receive queue of its peer numbered by the sending CPU
    /// (`veth_select_rxq`: CPU mod queues) and runs that queue's NAPI on the same CPU, so two
    /// generator CPUs feed two receive queues of the node under test, each served by its own CPU.
    pub(crate) fn send(
        &mut self,
        ns: &NetNs,
        ifindex: u32,
        frame: &[u8],
        frames: u32,
        cpus: usize,
    ) -> anyhow::Result<(u64, f64)> {
        set_template(&mut self.gen_ebpf, frame)?;
        let before = self.delivered()?;
        let elapsed = if cpus <= 1 {
            let job = self.job(frame, ifindex, 0)?;
            in_netns(&ns.name, move || -> anyhow::Result<f64> {
                // On CPU 0 throughout: one receive queue, not whichever the scheduler moves
                // the thread to.
                pin_to_cpu(0)?;
                let started = Instant::now();
                job.run(frames)?;
                Ok(started.elapsed().as_secs_f64())
            })??
        } else {
            let path = format!("/run/netns/{}", ns.name);
            let start = std::sync::Arc::new(std::sync::Barrier::new(cpus));
            let threads = (0..cpus)
                .map(|cpu| {
                    let job = self.job(frame, ifindex, cpu)?;
                    let (path, start) = (path.clone(), start.clone());
                    let share = frames / cpus as u32;
                    Ok(std::thread::spawn(move || -> anyhow::Result<f64> {
                        let ready =
                            xdp_lb_tests::netns::enter_netns(&path).and_then(|()| pin_to_cpu(cpu));
                        // Every thread reaches the barrier, ready or not, so that one failing
                        // cannot leave the others waiting for ever.
                        start.wait();
                        ready?;
                        let started = Instant::now();
                        job.run(share)?;
                        Ok(started.elapsed().as_secs_f64())
                    }))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            // The run lasts until the slower thread is done.
            let mut longest = 0f64;
            for t in threads {
                let secs = t
                    .join()
                    .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
                longest = longest.max(secs);
            }
            longest
        };
        // Frames still in flight through the veths land within a few ms.
        std::thread::sleep(Duration::from_millis(100));
        Ok((self.delivered()? - before, elapsed))
    }
}

/// Pins the calling thread to one CPU.
fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it; sched_setaffinity
    // reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity(CPU {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// The generator writes every frame from this template (see `xdp_gen`).
pub(crate) fn set_template(ebpf: &mut aya::Ebpf, frame: &[u8]) -> anyhow::Result<()> {
    let mut t: aya::maps::Array<_, [u8; 74]> =
        aya::maps::Array::try_from(ebpf.map_mut("GEN_TEMPLATE").context("GEN_TEMPLATE")?)?;
    t.set(0, xdp_lb_tests::packet::gen_template(frame)?, 0)?;
    Ok(())
}
