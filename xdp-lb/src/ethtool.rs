//! Interface offloads through the ethtool ioctl (`SIOCETHTOOL`), for the one the data plane
//! cannot live with: receive-VLAN offload, which moves a frame's outer VLAN tag into metadata
//! before XDP runs (the program then sees one tag fewer than the wire carried).
//!
//! Features are addressed by name (`ethtool -k` shows the same names): the kernel numbers them
//! per build, so the names are looked up in the `ETH_SS_FEATURES` string set first
//! (include/uapi/linux/ethtool.h: `ETHTOOL_GSSET_INFO`, `ETHTOOL_GSTRINGS`,
//! `ETHTOOL_GFEATURES`, `ETHTOOL_SFEATURES`). The `ethtool` crate reads features over generic
//! netlink but cannot set them.

use std::{ffi::CString, io, os::fd::AsRawFd as _};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// The receive-VLAN offloads: 802.1Q (C-tag) and 802.1ad (S-tag).
const VLAN_RX_FEATURES: [&str; 2] = ["rx-vlan-hw-parse", "rx-vlan-stag-hw-parse"];

/// Receive-VLAN offloads that were on and that [`VlanOffload::turn_off`] turned off.
#[derive(Debug)]
pub struct VlanOffload {
    interface: String,
    features: Vec<&'static str>,
}

impl VlanOffload {
    /// Turns receive-VLAN offload off on `interface`. `Ok(None)` when it was off already (or
    /// the driver has none).
    pub fn turn_off(interface: &str) -> io::Result<Option<Self>> {
        let dev = Device::open(interface)?;
        let names = dev.feature_names()?;
        let active = dev.active_features(names.len())?;
        let on: Vec<(&'static str, usize)> = VLAN_RX_FEATURES
            .into_iter()
            .filter_map(|f| names.iter().position(|n| n == f).map(|i| (f, i)))
            .filter(|(_, i)| active[i / 32] & (1 << (i % 32)) != 0)
            .collect();
        if on.is_empty() {
            return Ok(None);
        }
        dev.set_features(names.len(), on.iter().map(|(_, i)| *i), false)?;
        let still = dev.active_features(names.len())?;
        if let Some((name, _)) = on
            .iter()
            .find(|(_, i)| still[i / 32] & (1 << (i % 32)) != 0)
        {
            return Err(io::Error::other(format!(
                "the driver keeps {name} on (fixed feature)"
            )));
        }
        Ok(Some(Self {
            interface: interface.to_owned(),
            features: on.into_iter().map(|(n, _)| n).collect(),
        }))
    }

    /// The features turned off, for the log.
    pub fn names(&self) -> String {
        self.features.join(", ")
    }

    /// Turns the offloads back on.
    pub fn restore(self) -> io::Result<()> {
        let dev = Device::open(&self.interface)?;
        let names = dev.feature_names()?;
        let indices = self
            .features
            .iter()
            .filter_map(|f| names.iter().position(|n| n == f));
        dev.set_features(names.len(), indices, true)
    }
}

/// The name of `interface`'s driver ("veth", "mlx5_core", ...).
pub fn driver(interface: &str) -> io::Result<String> {
    // ethtool_drvinfo: cmd, then driver[32], version[32], ... (196 bytes in all).
    let mut buf = [0u32; 49];
    buf[0] = ETHTOOL_GDRVINFO;
    Device::open(interface)?.ioctl(&mut buf)?;
    let bytes: Vec<u8> = buf[1..9].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// An interface, addressed through an `AF_INET` datagram socket as the ioctl wants.
struct Device {
    socket: socket2::Socket,
    name: CString,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IF_NAMESIZE],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

impl Device {
    fn open(interface: &str) -> io::Result<Self> {
        let name = CString::new(interface).map_err(io::Error::other)?;
        if name.as_bytes().len() >= libc::IF_NAMESIZE {
            return Err(io::Error::other("interface name too long"));
        }
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        Ok(Self { socket, name })
    }

    /// Runs one ethtool command; `buf` starts with the command's `u32` and is sized for the
    /// answer.
    fn ioctl(&self, buf: &mut [u32]) -> io::Result<()> {
        let mut req = IfReq {
            name: [0; libc::IF_NAMESIZE],
            data: buf.as_mut_ptr().cast(),
            _pad: [0; 16],
        };
        for (dst, src) in req.name.iter_mut().zip(self.name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: req names a live buffer sized for the command's answer (each caller sizes
        // it from the kernel's own count), and the socket is open.
        let rc = unsafe { libc::ioctl(self.socket.as_raw_fd(), SIOCETHTOOL, &mut req) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn feature_names(&self) -> io::Result<Vec<String>> {
        // ethtool_sset_info: cmd, reserved, sset_mask (u64), then one u32 per set asked.
        let mut info = [ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0, 0];
        self.ioctl(&mut info)?;
        let count = info[4] as usize;
        // ethtool_gstrings: cmd, string_set, len, then len × 32 bytes.
        let mut buf = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        buf[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count as u32]);
        self.ioctl(&mut buf)?;
        let bytes: Vec<u8> = buf[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(bytes
            .chunks(ETH_GSTRING_LEN)
            .map(|s| {
                let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .collect())
    }

    /// The active-feature bit words (bit i of word i/32 is feature i).
    fn active_features(&self, count: usize) -> io::Result<Vec<u32>> {
        let blocks = count.div_ceil(32);
        // ethtool_gfeatures: cmd, size, then per block available, requested, active,
        // never_changed.
        let mut buf = vec![0u32; 2 + 4 * blocks];
        buf[..2].copy_from_slice(&[ETHTOOL_GFEATURES, blocks as u32]);
        self.ioctl(&mut buf)?;
        Ok((0..blocks).map(|b| buf[2 + 4 * b + 2]).collect())
    }

    fn set_features(
        &self,
        count: usize,
        indices: impl Iterator<Item = usize>,
        on: bool,
    ) -> io::Result<()> {
        let blocks = count.div_ceil(32);
        // ethtool_sfeatures: cmd, size, then per block valid, requested.
        let mut buf = vec![0u32; 2 + 2 * blocks];
        buf[..2].copy_from_slice(&[ETHTOOL_SFEATURES, blocks as u32]);
        for i in indices {
            buf[2 + 2 * (i / 32)] |= 1 << (i % 32);
            if on {
                buf[2 + 2 * (i / 32) + 1] |= 1 << (i % 32);
            }
        }
        self.ioctl(&mut buf)
    }
}
