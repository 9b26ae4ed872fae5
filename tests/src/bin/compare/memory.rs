//! Memory: the agent's resident set and every pinned map's memory as the kernel accounts it.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// (map name, max entries, memory in bytes) of every pinned map, from the kernel's fdinfo.
pub(crate) fn map_memory(pin_dir: &Path) -> anyhow::Result<Vec<(String, u32, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pin_dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n == xdp_lb::dataplane::LINK_PIN)
        {
            continue;
        }
        let Ok(data) = aya::maps::MapData::from_pin(&path) else {
            continue;
        };
        let info = data.info()?;
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            data.fd().as_fd().as_raw_fd()
        ))?;
        let memlock = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, info.max_entries(), memlock));
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.2));
    Ok(out)
}
