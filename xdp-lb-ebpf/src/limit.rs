//! Per-source new-flow limits (`new_flows_per_source`): a token bucket per (VIP, source
//! prefix), checked for new flows only — an established flow is never limited. The arithmetic
//! is all adds, multiplies and compares: the agent chose the units (`VipLimit`).
//!
//! The buckets are shared by all CPUs and updated without atomics: two CPUs refilling the same
//! bucket at the same instant can lose one update, so a source spread over CPUs may get a few
//! more flows than its limit, never fewer.

use aya_ebpf::maps::LruHashMap;
use xdp_lb_common::{Bucket, BucketKey, BucketKey6, Counter, VIP_F_LIMIT, VipInfo, VipLimit};

use crate::{
    maps::{SOURCE_BUCKETS, SOURCE_BUCKETS6, VIP_LIMITS},
    stats::count_refused,
};

#[inline(always)]
pub(crate) fn admits(vip: &VipInfo, src_addr_be: u32, now: u64) -> Result<(), Counter> {
    if vip.flags & VIP_F_LIMIT == 0 {
        return Ok(());
    }
    let Some(limit) = VIP_LIMITS.get(vip.vip_id) else {
        return Ok(());
    };
    let key = BucketKey {
        vip_id: vip.vip_id,
        src_prefix_be: src_addr_be & limit.prefix_mask_be,
    };
    take_token(&SOURCE_BUCKETS, &key, limit, vip, now)
}

/// `admits` for an IPv6 source: buckets per `limit_prefix_v6` prefix, in `SOURCE_BUCKETS6`.
#[inline(always)]
pub(crate) fn admits6(vip: &VipInfo, src: &[u8; 16], now: u64) -> Result<(), Counter> {
    if vip.flags & VIP_F_LIMIT == 0 {
        return Ok(());
    }
    let Some(limit) = VIP_LIMITS.get(vip.vip_id) else {
        return Ok(());
    };
    let mut key = BucketKey6 {
        vip_id: vip.vip_id,
        src_prefix: *src,
    };
    // The address masked to the prefix, byte by byte (new flows of limited VIPs only).
    let bits = limit.prefix6_len.min(128);
    for (i, b) in key.src_prefix.iter_mut().enumerate() {
        let keep = bits.saturating_sub(i as u32 * 8).min(8);
        *b &= !(0xffu8.checked_shr(keep).unwrap_or(0));
    }
    take_token(&SOURCE_BUCKETS6, &key, limit, vip, now)
}

/// One token from the bucket of `key`, refilled for the time since its last use.
#[inline(always)]
fn take_token<K>(
    buckets: &LruHashMap<K, Bucket>,
    key: &K,
    limit: &VipLimit,
    vip: &VipInfo,
    now: u64,
) -> Result<(), Counter> {
    let Some(bucket) = buckets.get_ptr_mut(key) else {
        // A source's first flow: a full bucket, less this flow's token. (An insert fails only
        // under memory pressure; the flow goes through, as the source had not spent anything.)
        let fresh = Bucket {
            tokens: limit.capacity.saturating_sub(limit.token),
            last_ns: now,
        };
        let _ = buckets.insert(key, fresh, 0);
        return Ok(());
    };
    // SAFETY: a map value pointer from a successful lookup; Bucket is plain integers.
    let b = unsafe { &mut *bucket };
    let idle = now.saturating_sub(b.last_ns).min(limit.fill_ns);
    let tokens = (b.tokens + idle * limit.rate).min(limit.capacity);
    b.last_ns = now;
    if tokens >= limit.token {
        b.tokens = tokens - limit.token;
        Ok(())
    } else {
        b.tokens = tokens;
        count_refused(vip.vip_id, Counter::DropRateLimited);
        Err(Counter::DropRateLimited)
    }
}
