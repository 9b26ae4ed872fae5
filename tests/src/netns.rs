//! Network namespaces with a guard, and running code or commands inside one.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

use crate::NS_PREFIX;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace (`ip netns add`), deleted when dropped. Deleting it also deletes the
/// veth ends and bridges inside it, and kills nothing: processes started in it are owned by
/// their own guards.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates `xlbt<pid>x<n>-<role>`: unique per process and call, so tests can run side by side.
    pub fn new(role: &str) -> anyhow::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NS_PREFIX}{}x{n}-{role}", std::process::id());
        sh(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        // Loopback up: services bind to it and the VIP lives on it in DSR backends.
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS ARGS…`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside the namespace (`ip netns exec`, for tools such as sysctl/ethtool).
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// The MAC address of `interface` in this namespace.
    pub fn mac(&self, interface: &str) -> anyhow::Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", interface])?;
        let at = out
            .find("link/ether ")
            .with_context(|| format!("{interface} has no MAC"))?
            + "link/ether ".len();
        let mut mac = [0u8; 6];
        for (i, part) in out
            .get(at..at + 17)
            .context("a short MAC")?
            .split(':')
            .enumerate()
        {
            mac[i] = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, returning its stdout; fails with its stderr.
pub fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a new thread that has joined `ns`'s network namespace. Sockets made there live
/// in `ns`. Only the network namespace changes, so /sys/fs/bpf stays the root one.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    let handle = std::thread::spawn(move || -> anyhow::Result<T> {
        enter_netns(&path)?;
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &str) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a namespace fd; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes namespaces and pin directories left by earlier runs of this test bed whose process
/// is gone (a run killed before its guards could run).
pub fn cleanup_stale() {
    let dead = |rest: &str| {
        rest.split(['x', '-'])
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(NS_PREFIX)
                && dead(rest)
            {
                let _ = xdp_lb::dataplane::remove_pins(&e.path());
            }
        }
    }
    let Ok(list) = sh(&["ip", "netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix(NS_PREFIX)
            && dead(rest)
        {
            let _ = sh(&["ip", "netns", "del", name]);
        }
    }
}
