//! The flow hash that indexes a VIP's Maglev table.
//!
//! It runs once per new flow in the XDP program and in userspace tests that predict the
//! program's choice, so it lives here once. It is the 32-bit finaliser of MurmurHash3 applied
//! over the 5-tuple words: a few multiplies and shifts (cheap for the BPF JIT, no loops, no
//! tables), with full avalanche so that neighbouring source ports land far apart in the table.

#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// Hash of a flow's 5-tuple (all fields in network order as read from the packet) with `seed`.
#[inline(always)]
pub const fn flow_hash(
    src_addr_be: u32,
    dst_addr_be: u32,
    src_port_be: u16,
    dst_port_be: u16,
    proto: u8,
    seed: u32,
) -> u32 {
    let ports = ((src_port_be as u32) << 16) | dst_port_be as u32;
    let mut h = seed ^ proto as u32;
    h = mix(h, src_addr_be);
    h = mix(h, dst_addr_be);
    h = mix(h, ports);
    fmix32(h ^ 12)
}

/// [`flow_hash`] of an IPv6 5-tuple: each address as four words as the packet carries them.
#[inline(always)]
pub const fn flow_hash6(
    src: &[u32; 4],
    dst: &[u32; 4],
    src_port_be: u16,
    dst_port_be: u16,
    proto: u8,
    seed: u32,
) -> u32 {
    let ports = ((src_port_be as u32) << 16) | dst_port_be as u32;
    let mut h = seed ^ proto as u32;
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    h = mix(h, ports);
    fmix32(h ^ 36)
}

/// A 32-bit hash of arbitrary bytes (MurmurHash3 x86_32), for userspace: Maglev permutations
/// and per-VIP seeds. Deterministic across hosts and versions, unlike `std`'s `DefaultHasher`.
pub const fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let k = u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        h = mix(h, k);
        i += 4;
    }
    let mut tail = 0u32;
    let mut shift = 0;
    while i < bytes.len() {
        tail |= (bytes[i] as u32) << shift;
        shift += 8;
        i += 1;
    }
    if shift > 0 {
        h ^= tail
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
    }
    fmix32(h ^ bytes.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = flow_hash(1, 2, 3, 4, 6, 7);
        assert_ne!(base, flow_hash(9, 2, 3, 4, 6, 7));
        assert_ne!(base, flow_hash(1, 9, 3, 4, 6, 7));
        assert_ne!(base, flow_hash(1, 2, 9, 4, 6, 7));
        assert_ne!(base, flow_hash(1, 2, 3, 9, 6, 7));
        assert_ne!(base, flow_hash(1, 2, 3, 4, 17, 7));
        assert_ne!(base, flow_hash(1, 2, 3, 4, 6, 9));
    }

    #[test]
    fn consecutive_ports_spread_over_a_table() {
        // 3000 consecutive source ports into 3 buckets: each within 10% of a third.
        let mut buckets = [0u32; 3];
        for port in 30000u16..33000 {
            buckets[(flow_hash(0x0100_12c6, 0x6400_12c6, port.to_be(), 80u16.to_be(), 6, 1) % 3)
                as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn flow_hash6_depends_on_every_word_and_spreads() {
        let (s, d) = ([1, 2, 3, 4], [5, 6, 7, 8]);
        let base = flow_hash6(&s, &d, 3, 4, 6, 7);
        for i in 0..4 {
            let mut s2 = s;
            s2[i] ^= 1 << 9;
            assert_ne!(base, flow_hash6(&s2, &d, 3, 4, 6, 7));
            let mut d2 = d;
            d2[i] ^= 1 << 9;
            assert_ne!(base, flow_hash6(&s, &d2, 3, 4, 6, 7));
        }
        let mut buckets = [0u32; 3];
        for port in 30000u16..33000 {
            buckets[(flow_hash6(&s, &d, port.to_be(), 80u16.to_be(), 6, 1) % 3) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1100).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn murmur3_known_vectors() {
        // Reference values of MurmurHash3_x86_32.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
    }
}
