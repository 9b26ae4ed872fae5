//! Prefixes of either family, as the source lists (`allow`, `deny`) name them.

use std::{fmt, net::IpAddr, str::FromStr};

use thiserror::Error;

/// A prefix of either family: `198.51.100.0/24`, `2001:db8::/32`, or an address alone (`/32`,
/// `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why a text is not a prefix; the message says what was meant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or prefix (e.g. \"198.51.100.0/24\", \"2001:db8::/32\")")]
    NotAnAddress(String),
    #[error("{text:?}: the prefix length must be 0..={max}")]
    BadLength { text: String, max: u8 },
    #[error("{text:?} has host bits set: did you mean {network} (or {addr}/{max})?")]
    HostBits {
        text: String,
        network: Cidr,
        addr: IpAddr,
        max: u8,
    },
}

impl Cidr {
    /// Whether `a` is inside this prefix (never across families).
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(a) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(a) & mask == u128::from(net)
            }
            _ => false,
        }
    }

    /// The prefix of `len` bits that holds `addr`.
    fn network(addr: IpAddr, len: u8) -> Self {
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr { addr, len }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `a.b.c.d/len` or an address (`/32`), without host bits (a `198.51.100.1/24` is most
    /// likely a typo for `.0/24` or `/32`).
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::NotAnAddress(text.to_owned()))?;
        let max = if addr.is_ipv6() { 128 } else { 32 };
        let len: u8 = match len.map(str::parse::<u8>) {
            None => max,
            Some(Ok(n)) if n <= max => n,
            _ => {
                return Err(CidrError::BadLength {
                    text: text.to_owned(),
                    max,
                });
            }
        };
        let network = Cidr::network(addr, len);
        if network.addr != addr {
            return Err(CidrError::HostBits {
                text: text.to_owned(),
                network,
                addr,
                max,
            });
        }
        Ok(network)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}
