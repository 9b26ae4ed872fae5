//! The maps of the protections a VIP can have: per-source new-flow limits (token buckets),
//! allow and deny lists (longest-prefix match), and the per-CPU cap on DSR flow-table inserts.

/// The value of `VIP_LIMITS` (indexed by VIP id): a per-source token bucket, in units the agent
/// chose so that the program neither divides nor overflows. A bucket holds `tokens` in
/// nanosecond-units: it gains `rate` of them per nanosecond, a new flow costs `token` of them
/// (the length of the rate's unit in nanoseconds: 1e9 for "/s", 60e9 for "/m"), and it holds
/// at most `burst` × `token`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipLimit {
    pub rate: u64,
    pub token: u64,
    /// `burst` × `token`.
    pub capacity: u64,
    /// After this long idle a bucket is full (`capacity` / `rate`): caps the refill so that
    /// elapsed × rate cannot overflow.
    pub fill_ns: u64,
    /// Sources in one prefix share a bucket (`limit_prefix_v4`), as it sits in the packet.
    pub prefix_mask_be: u32,
    /// IPv6 VIPs: the prefix length sources share a bucket by (`limit_prefix_v6`).
    pub prefix6_len: u32,
}

/// The key of `SOURCE_BUCKETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub vip_id: u32,
    pub src_prefix_be: u32,
}

/// The key of `SOURCE_BUCKETS6`: an IPv6 VIP's source prefix (the address masked to
/// `limit_prefix_v6` bits).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketKey6 {
    pub vip_id: u32,
    pub src_prefix: [u8; 16],
}

/// A value of `SOURCE_BUCKETS` (an LRU hash: idle sources' buckets are evicted).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tokens: u64,
    pub last_ns: u64,
}

/// Entries of `SOURCE_BUCKETS`, all VIPs together.
pub const SOURCE_BUCKETS_SIZE: u32 = 65_536;

/// The data of an `ACL` key (an LPM trie): the VIP, then the client's source address. Every
/// entry's prefix length covers the whole VIP id (32 bits) plus its CIDR's prefix of the
/// address, so a lookup with all 64 bits finds the longest matching prefix among that VIP's
/// lists, and only that VIP's. (The trie compares bytes in order; since the VIP id is always
/// matched whole, its byte order does not matter.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclData {
    pub vip_id: u32,
    pub addr_be: u32,
}

/// The key data of `ACL6`: as [`AclData`], with the IPv6 source (prefix length 32 + the
/// source prefix's, up to 160).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclData6 {
    pub vip_id: u32,
    pub addr: [u8; 16],
}

/// `ACL` values: what the longest matching prefix says.
pub const ACL_ALLOW: u32 = 1;
pub const ACL_DENY: u32 = 2;
/// Entries of `ACL`, all VIPs together.
pub const MAX_ACL_ENTRIES: u32 = 65_536;

/// The value of `INSERT_BUDGET` (per CPU): this second's DSR flow-table inserts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertBudget {
    pub window_start_ns: u64,
    pub used: u32,
    pub _pad: u32,
}
