//! The traffic generator of the forwarding-rate bed: `xdp_gen` run by `BPF_PROG_TEST_RUN` in
//! live-frames mode from one or two pinned threads, and the sinks' count of what arrived.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aya::programs::Xdp;
use xdp_lb_tests::{NetNs, harness::run_live, in_netns};

/// The generator (client namespace) and the sinks (one per backend).
pub(crate) struct Traffic {
    gen_ebpf: aya::Ebpf,
    sinks: Vec<aya::Ebpf>,
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
        Ok(Self {
            gen_ebpf: load_in(generator, None)?,
            sinks,
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
        let elapsed = if cpus <= 1 {
            let fd = program.fd()?.try_clone()?;
            let frame = frame.to_vec();
            in_netns(&ns.name, move || -> anyhow::Result<f64> {
                // On CPU 0 throughout: one receive queue, not whichever the scheduler moves
                // the thread to.
                pin_to_cpu(0)?;
                let started = Instant::now();
                run_live(&fd, &frame, &ctx, frames)?;
                Ok(started.elapsed().as_secs_f64())
            })??
        } else {
            let path = format!("/run/netns/{}", ns.name);
            let start = std::sync::Arc::new(std::sync::Barrier::new(cpus));
            let threads = (0..cpus)
                .map(|cpu| {
                    let fd = program.fd()?.try_clone()?;
                    let (frame, path, start) = (frame.to_vec(), path.clone(), start.clone());
                    let share = frames / cpus as u32;
                    Ok(std::thread::spawn(move || -> anyhow::Result<f64> {
                        let ready =
                            xdp_lb_tests::netns::enter_netns(&path).and_then(|()| pin_to_cpu(cpu));
                        // Every thread reaches the barrier, ready or not, so that one failing
                        // cannot leave the others waiting for ever.
                        start.wait();
                        ready?;
                        let started = Instant::now();
                        run_live(&fd, &frame, &ctx, share)?;
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
