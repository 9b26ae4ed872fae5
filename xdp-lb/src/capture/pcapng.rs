//! A pcapng writer, the little of the format a capture needs (the IETF draft
//! "PCAP Next Generation (pcapng) Capture File Format"): a Section Header Block, one Interface
//! Description Block (Ethernet, nanosecond timestamps) and an Enhanced Packet Block per frame,
//! each with a comment carrying the program's verdict. Wireshark shows the comments;
//! `tcpdump -r` reads the file (libpcap reads pcapng) and shows the frames.

use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const OPT_SHB_USERAPPL: u16 = 4;
const OPT_IF_NAME: u16 = 2;
const OPT_IF_TSRESOL: u16 = 9;

pub struct PcapngWriter<W: Write> {
    out: W,
}

fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// One option: code, length, value padded to 32 bits.
fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
    buf.extend_from_slice(value);
    buf.resize(pad4(buf.len()), 0);
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header and the interface (`interface`: its name, for the reader).
    pub fn new(mut out: W, interface: &str, snaplen: u32) -> io::Result<Self> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes()); // major
        shb.extend_from_slice(&0u16.to_le_bytes()); // minor
        shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
        option(&mut shb, OPT_SHB_USERAPPL, b"xdp-lb capture");
        option(&mut shb, OPT_END, &[]);
        block(&mut out, SHB, &shb)?;
        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&snaplen.to_le_bytes());
        option(&mut idb, OPT_IF_NAME, interface.as_bytes());
        // Timestamps in nanoseconds (10^-9).
        option(&mut idb, OPT_IF_TSRESOL, &[9]);
        option(&mut idb, OPT_END, &[]);
        block(&mut out, IDB, &idb)?;
        Ok(Self { out })
    }

    /// One frame: its first bytes (`data`), its length on the wire, when (ns since the Unix
    /// epoch), and a comment.
    pub fn packet(
        &mut self,
        ts_unix_ns: u64,
        orig_len: u32,
        data: &[u8],
        comment: &str,
    ) -> io::Result<()> {
        let mut epb = Vec::with_capacity(32 + data.len() + comment.len());
        epb.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        epb.extend_from_slice(&((ts_unix_ns >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts_unix_ns as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&orig_len.to_le_bytes());
        epb.extend_from_slice(data);
        epb.resize(pad4(epb.len()), 0);
        option(&mut epb, OPT_COMMENT, comment.as_bytes());
        option(&mut epb, OPT_END, &[]);
        block(&mut self.out, EPB, &epb)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A block: type, total length, body, total length again.
fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_le_bytes())?;
    out.write_all(&total.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks of a file: (type, body).
    fn blocks(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 12 {
            let kind = u32::from_le_bytes(b[0..4].try_into().unwrap());
            let total = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
            assert_eq!(total % 4, 0, "blocks are 32-bit aligned");
            let trailer = u32::from_le_bytes(b[total - 4..total].try_into().unwrap()) as usize;
            assert_eq!(total, trailer, "the length is repeated at the end");
            out.push((kind, b[8..total - 4].to_vec()));
            b = &b[total..];
        }
        assert!(b.is_empty());
        out
    }

    #[test]
    fn a_file_is_a_section_an_interface_and_one_block_per_frame() {
        let mut buf = Vec::new();
        let mut w = PcapngWriter::new(&mut buf, "eth0", 256).unwrap();
        let frame = [0xaau8; 61];
        w.packet(
            1_700_000_000_123_456_789,
            1514,
            &frame,
            "tx vip=web backend=cp1",
        )
        .unwrap();
        w.flush().unwrap();
        let b = blocks(&buf);
        assert_eq!(
            b.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [SHB, IDB, EPB]
        );
        assert_eq!(&b[0].1[0..4], &BYTE_ORDER_MAGIC.to_le_bytes());
        let epb = &b[2].1;
        let ts = (u64::from(u32::from_le_bytes(epb[4..8].try_into().unwrap())) << 32)
            | u64::from(u32::from_le_bytes(epb[8..12].try_into().unwrap()));
        assert_eq!(ts, 1_700_000_000_123_456_789);
        assert_eq!(u32::from_le_bytes(epb[12..16].try_into().unwrap()), 61);
        assert_eq!(u32::from_le_bytes(epb[16..20].try_into().unwrap()), 1514);
        assert_eq!(&epb[20..81], &frame);
        let opts = &epb[84..];
        assert_eq!(u16::from_le_bytes([opts[0], opts[1]]), OPT_COMMENT);
        assert_eq!(&opts[4..26], b"tx vip=web backend=cp1");
    }
}
