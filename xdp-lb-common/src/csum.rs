//! Incremental Internet checksum updates for NAT (RFC 1624).
//!
//! A NAT flow rewrites the same four fields (source and destination address and port) of
//! every packet to the same values, so the checksum change is a constant of the flow: it is
//! computed once, when the flow is created, and each packet then costs one add and a fold:
//! `HC' = ~(~HC + Σ(~m + m'))` (RFC 1624 eq. 3), with the sum precomputed.
//!
//! Byte order: the one's-complement sum is byte-order independent (RFC 1071 §2(B)) as long as
//! every word — the old and new fields and the checksum itself — is read the same way. Here
//! all of them are taken as native-endian loads of the bytes as they sit in the packet
//! (addresses and ports in their `*_be` form, the checksum with `u16::from_ne_bytes`).

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1071: the one's-complement sum of `data` taken as big-endian 16-bit words (an odd last
/// byte padded with zero), added to `acc`, so that parts (a pseudo-header, then the message)
/// can be chained. For whole messages in userspace (VRRP, test packets): the data plane only
/// ever updates checksums by delta.
pub fn sum_be(data: &[u8], acc: u32) -> u32 {
    let mut sum = acc as u64;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [last] = words.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u32
}

/// The checksum field for a sum from [`sum_be`]: folded and complemented.
pub fn checksum_of(sum: u32) -> u16 {
    !fold(sum)
}

/// The RFC 1071 Internet checksum of `data` (0 when `data` already carries a valid one).
pub fn internet_checksum(data: &[u8]) -> u16 {
    checksum_of(sum_be(data, 0))
}

/// The two 16-bit words of an address as it sits in memory.
#[inline(always)]
const fn words(addr_be: u32) -> (u32, u32) {
    (addr_be & 0xffff, addr_be >> 16)
}

/// Σ(~m + m') for one 32-bit field.
#[inline(always)]
const fn diff32(old: u32, new: u32) -> u32 {
    let (o1, o2) = words(old);
    let (n1, n2) = words(new);
    (!o1 & 0xffff) + (!o2 & 0xffff) + n1 + n2
}

/// Σ(~m + m') for one 16-bit field.
#[inline(always)]
const fn diff16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

/// The checksum deltas of rewriting (src, dst, sport, dport) from `old` to `new`:
/// `.0` for the IPv4 header checksum (addresses only), `.1` for the TCP checksum (addresses,
/// which the pseudo-header covers, and ports).
#[inline(always)]
pub const fn nat_deltas(old: (u32, u32, u16, u16), new: (u32, u32, u16, u16)) -> (u16, u16) {
    let ip = addr_sum((old.0, old.1), (new.0, new.1));
    (fold(ip), with_ports(ip, (old.2, old.3), (new.2, new.3)))
}

/// The unfolded sum of rewriting an IPv4 (src, dst) from `old` to `new`: the IPv4 header
/// checksum's delta once folded, and the address part of the TCP checksum's. Computed once
/// per flow where only the ports vary (the NAT port probes).
#[inline(always)]
pub const fn addr_sum(old: (u32, u32), new: (u32, u32)) -> u32 {
    diff32(old.0, new.0) + diff32(old.1, new.1)
}

/// [`addr_sum`] for IPv6 addresses (the pseudo-header's part of the TCP checksum delta).
/// Not inlined: in BPF a call of its own, whose 32 loads and adds would otherwise spill into
/// the caller's stack (the IPv6 path's stack is tight, see `xdp-lb-ebpf/src/ipv6.rs`).
#[inline(never)]
pub const fn addr_sum6(old: (&[u8; 16], &[u8; 16]), new: (&[u8; 16], &[u8; 16])) -> u32 {
    // Σ(~m + m') = Σm' + ~Σm (one's complement): one accumulator per address keeps few values
    // live at once.
    (!fold(sum128(old.0) + sum128(old.1))) as u32 + sum128(new.0) + sum128(new.1)
}

/// The TCP checksum delta of a rewrite whose addresses' unfolded sum is `addr` and whose
/// ports go from `old` to `new` (sport, dport).
#[inline(always)]
pub const fn with_ports(addr: u32, old: (u16, u16), new: (u16, u16)) -> u16 {
    fold(addr + diff16(old.0, new.0) + diff16(old.1, new.1))
}

/// Σm over the eight 16-bit words of an IPv6 address (native-endian loads, as everywhere here).
#[inline(always)]
const fn sum128(a: &[u8; 16]) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while i < 16 {
        sum += u16::from_ne_bytes([a[i], a[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// The TCP checksum delta of rewriting an IPv6 packet's (src, dst, sport, dport) from `old`
/// to `new`: the pseudo-header covers both addresses (RFC 8200 §8.1); IPv6 has no header
/// checksum. Used as [`nat_deltas`]`.1` is.
#[inline(always)]
pub const fn nat_delta6(
    old: ([u8; 16], [u8; 16], u16, u16),
    new: ([u8; 16], [u8; 16], u16, u16),
) -> u16 {
    with_ports(
        addr_sum6((&old.0, &old.1), (&new.0, &new.1)),
        (old.2, old.3),
        (new.2, new.3),
    )
}

/// The delta of an ICMP checksum when the IPv4 header and TCP ports quoted in its message are
/// rewritten from `old` to `new` (src, dst, sport, dport) and the quoted header's checksum is
/// updated with [`nat_deltas`]`.0`: only the ports count. The quoted header's checksum keeps
/// that header's one's-complement sum constant, so its address changes and its checksum change
/// cancel out in the ICMP sum (RFC 1624's arithmetic); the ports have no checksum of their own
/// in the quote (the TCP checksum is past the 8 bytes RFC 792 guarantees, and is left as is).
#[inline(always)]
pub const fn quoted_ports_delta(old: (u16, u16), new: (u16, u16)) -> u16 {
    fold(diff16(old.0, new.0) + diff16(old.1, new.1))
}

/// Applies a delta from [`nat_deltas`] to a checksum field as read from the packet
/// (`u16::from_ne_bytes`); returns the new field value, to be stored with `to_ne_bytes`.
#[inline(always)]
pub const fn apply(check: u16, delta: u16) -> u16 {
    !fold((!check) as u32 + delta as u32)
}

/// [`apply`] for a UDP checksum field: 0 means "no checksum" (IPv4 only, RFC 768) and stays
/// 0 (the delta of a rewrite would otherwise turn it into a wrong checksum); a computed 0 is
/// sent as 0xffff, its one's-complement equal, since 0 would say "none" (RFC 768).
#[inline(always)]
pub const fn apply_udp(check: u16, delta: u16) -> u16 {
    if check == 0 {
        return 0;
    }
    match apply(check, delta) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_zero_stays_zero_and_a_computed_zero_is_all_ones() {
        // No checksum (IPv4): whatever the rewrite, none is invented.
        assert_eq!(apply_udp(0, 0x1234), 0);
        // A rewrite whose result folds to 0 is sent as 0xffff (RFC 768).
        let check = 0x1234u16;
        let delta = fold((!0u16) as u32 - (!check) as u32);
        assert_eq!(apply(check, delta), 0);
        assert_eq!(apply_udp(check, delta), 0xffff);
        // Otherwise the same as TCP's.
        assert_eq!(apply_udp(0x1234, 0x0101), apply(0x1234, 0x0101));
    }

    #[test]
    fn rfc1071_example_and_odd_lengths() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum_be(&data, 0), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
        // An odd last byte is the high byte of a zero-padded word.
        assert_eq!(sum_be(&[0x12], 0), 0x1200);
        // A message carrying its own checksum sums to zero.
        let mut msg = data.to_vec();
        msg.extend_from_slice(&internet_checksum(&data).to_be_bytes());
        assert_eq!(internet_checksum(&msg), 0);
    }

    /// RFC 1071 checksum of native-endian words, straight from the definition.
    fn full(words: &[u16]) -> u16 {
        let mut sum = 0u32;
        for w in words {
            sum += *w as u32;
        }
        !fold(sum)
    }

    /// A small deterministic generator of test words (xorshift32).
    fn xorshift(mut seed: u32) -> impl FnMut() -> u32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        }
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut next = xorshift(0x1234_5678);
        for _ in 0..10_000 {
            let old = (next(), next(), next() as u16, next() as u16);
            let new = (next(), next(), next() as u16, next() as u16);
            let other = [next() as u16, next() as u16, next() as u16];
            let fields = |f: (u32, u32, u16, u16)| {
                [
                    f.0 as u16,
                    (f.0 >> 16) as u16,
                    f.1 as u16,
                    (f.1 >> 16) as u16,
                    f.2,
                    f.3,
                    other[0],
                    other[1],
                    other[2],
                ]
            };
            let before = full(&fields(old));
            let (_, l4) = nat_deltas(old, new);
            let after = apply(before, l4);
            // 0x0000 and 0xffff are the same number in one's complement; RFC 1624 §3 shows the
            // incremental form never yields -0 where the full computation gives +0 for TCP.
            let expect = full(&fields(new));
            assert!(
                after == expect || (after ^ expect) == 0xffff && (after == 0 || expect == 0),
                "{after:#x} != {expect:#x}"
            );
        }
    }

    #[test]
    fn incremental_equals_recomputed_for_ipv6() {
        let mut next = xorshift(0x0bad_cafe);
        let addr = |next: &mut dyn FnMut() -> u32| {
            let mut a = [0u8; 16];
            for chunk in a.chunks_mut(4) {
                chunk.copy_from_slice(&next().to_ne_bytes());
            }
            a
        };
        for _ in 0..10_000 {
            let old = (
                addr(&mut next),
                addr(&mut next),
                next() as u16,
                next() as u16,
            );
            let new = (
                addr(&mut next),
                addr(&mut next),
                next() as u16,
                next() as u16,
            );
            let other = [next() as u16, next() as u16, next() as u16];
            // The pseudo-header's addresses, the ports, and some other words of the segment.
            let fields = |f: ([u8; 16], [u8; 16], u16, u16)| {
                let mut w = [0u16; 21];
                for (i, c) in f.0.chunks(2).chain(f.1.chunks(2)).enumerate() {
                    w[i] = u16::from_ne_bytes([c[0], c[1]]);
                }
                w[16..].copy_from_slice(&[f.2, f.3, other[0], other[1], other[2]]);
                w
            };
            let before = full(&fields(old));
            let after = apply(before, nat_delta6(old, new));
            let expect = full(&fields(new));
            assert!(
                after == expect || (after ^ expect) == 0xffff && (after == 0 || expect == 0),
                "{after:#x} != {expect:#x}"
            );
        }
    }

    /// An ICMP message quoting an IPv4 header (with its checksum) and TCP ports: rewriting
    /// the quote's addresses and ports, updating the quoted checksum by `nat_deltas().0` and
    /// the ICMP checksum by `quoted_ports_delta` equals recomputing the ICMP checksum.
    #[test]
    fn a_rewritten_quote_needs_only_its_ports_in_the_icmp_delta() {
        let mut next = xorshift(0x9e37_79b9);
        for _ in 0..10_000 {
            let old = (next(), next(), next() as u16, next() as u16);
            let new = (next(), next(), next() as u16, next() as u16);
            let other = [next() as u16, next() as u16, next() as u16, next() as u16];
            // [type/code, checksum slot, rest of the ICMP header, the quoted header's other
            // words, its checksum, its addresses, then the ports]
            let message = |f: (u32, u32, u16, u16), ip_check: u16| {
                [
                    other[0],
                    other[1],
                    other[2],
                    other[3],
                    ip_check,
                    f.0 as u16,
                    (f.0 >> 16) as u16,
                    f.1 as u16,
                    (f.1 >> 16) as u16,
                    f.2,
                    f.3,
                ]
            };
            let header = |f: (u32, u32, u16, u16)| {
                [
                    other[2],
                    other[3],
                    f.0 as u16,
                    (f.0 >> 16) as u16,
                    f.1 as u16,
                    (f.1 >> 16) as u16,
                ]
            };
            let ip_before = full(&header(old));
            let icmp_before = full(&message(old, ip_before));
            let (ip_delta, _) = nat_deltas(old, new);
            let ip_after = apply(ip_before, ip_delta);
            let icmp_after = apply(
                icmp_before,
                quoted_ports_delta((old.2, old.3), (new.2, new.3)),
            );
            let expect = full(&message(new, ip_after));
            assert!(
                icmp_after == expect || (icmp_after ^ expect) == 0xffff,
                "{icmp_after:#x} != {expect:#x}"
            );
        }
    }
}
