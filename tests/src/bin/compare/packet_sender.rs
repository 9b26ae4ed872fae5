//! The forwarding-rate bed's second sender, for kernels that refuse BPF_PROG_TEST_RUN's
//! live-frames mode (`harness::LiveFramesRefused`): an AF_PACKET socket on the generator's
//! veth, the qdisc bypassed, 64 frames a `sendmmsg`. It sends what `xdp_gen` would — the
//! template with the sending CPU's 1024 source ports, checksums fixed — but each frame starts
//! as an skb, which the receiving veth turns back into an XDP frame (a copy): rates are lower
//! than with live frames, the same for every row, so only ratios within a run compare.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xdp_lb_common::csum;
use xdp_lb_test_ebpf::bench::{GEN_FLOWS, gen_port};

/// Frames per `sendmmsg`.
const BATCH: usize = 64;
/// A send that makes no progress for this long (the device gone, a full queue that never
/// drains) ends the run with an error rather than spinning.
const STALL: Duration = Duration::from_secs(10);

/// The frames CPU `cpu`'s sender cycles through: `template` (IPv4 or IPv6, TCP or UDP over
/// IPv4) with each of the CPU's source ports (`bench::gen_port`, as `xdp_gen`), its L4 checksum
/// updated as `xdp_gen` does.
pub(crate) fn frames_for(template: &[u8], cpu: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let ipv6 = template.get(12..14) == Some(&[0x86, 0xdd][..]);
    let (l4, proto) = if ipv6 {
        (54, xdp_lb_common::IPPROTO_TCP)
    } else {
        let ihl = usize::from(*template.get(14).context("a frame without IPv4 header")? & 0x0f);
        (
            14 + ihl * 4,
            *template.get(23).context("a frame without IPv4 header")?,
        )
    };
    let check_at = match proto {
        xdp_lb_common::IPPROTO_TCP => l4 + 16,
        xdp_lb_common::IPPROTO_UDP => l4 + 6,
        other => bail!("the generator sends TCP or UDP, not protocol {other}"),
    };
    anyhow::ensure!(template.len() >= check_at + 2, "a frame cut short");
    Ok((0..GEN_FLOWS)
        .map(|i| {
            let mut f = template.to_vec();
            let port = gen_port(cpu as u32, i).to_be_bytes();
            let old = u16::from_ne_bytes([f[l4], f[l4 + 1]]);
            let delta = csum::fold((!old) as u32 + u16::from_ne_bytes(port) as u32);
            let check = u16::from_ne_bytes([f[check_at], f[check_at + 1]]);
            let new = if proto == xdp_lb_common::IPPROTO_UDP {
                csum::apply_udp(check, delta)
            } else {
                csum::apply(check, delta)
            };
            f[l4..l4 + 2].copy_from_slice(&port);
            f[check_at..check_at + 2].copy_from_slice(&new.to_ne_bytes());
            f
        })
        .collect())
}

/// Sends `count` frames, cycling through `frames`, out of interface `ifindex` of the calling
/// thread's network namespace.
pub(crate) fn send(ifindex: u32, frames: &[Vec<u8>], count: u32) -> anyhow::Result<()> {
    anyhow::ensure!(!frames.is_empty(), "nothing to send");
    // SAFETY: plain socket calls on a descriptor this function owns; every pointer passed
    // points at a live local of the size given.
    let socket = unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        let socket = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            bail!(
                "AF_PACKET bind to ifindex {ifindex}: {}",
                std::io::Error::last_os_error()
            );
        }
        // Straight to the driver, as a traffic generator does: no qdisc in the measurement.
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        ) != 0
        {
            bail!("PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
        }
        socket
    };
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let (mut sent, mut next) = (0u32, 0usize);
    let mut progress = Instant::now();
    while sent < count {
        let n = BATCH.min((count - sent) as usize);
        // SAFETY: a zeroed msghdr is empty; each points at one iovec of `iovecs`, which
        // outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = (0..n)
            .map(|k| unsafe {
                let mut m: libc::mmsghdr = std::mem::zeroed();
                m.msg_hdr.msg_iov = &mut iovecs[(next + k) % frames.len()];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: `msgs` holds `n` initialised headers.
        let r = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if r > 0 {
            sent += r as u32;
            next = (next + r as usize) % frames.len();
            progress = Instant::now();
            continue;
        }
        let err = std::io::Error::last_os_error();
        // The veth's queue is full for a moment: try again.
        if !matches!(err.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
            bail!("AF_PACKET sendmmsg on ifindex {ifindex}: {err}");
        }
        if progress.elapsed() > STALL {
            bail!("AF_PACKET send on ifindex {ifindex}: no progress for {STALL:?} ({err})");
        }
        std::thread::yield_now();
    }
    Ok(())
}
