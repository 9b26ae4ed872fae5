//! Per-VIP allow and deny lists: who may open a flow. Checked only for new flows, before any
//! state is made (flow entry, SNAT port); a packet of an established flow never pays for it,
//! and a VIP without lists does not look (`VIP_F_ACL`). The longest matching prefix decides;
//! a VIP with an allow list refuses a source no prefix matches.

use aya_ebpf::maps::lpm_trie::Key;
use xdp_lb_common::{ACL_DENY, AclData, AclData6, Counter, VIP_F_ACL, VIP_F_ALLOWLIST, VipInfo};

use crate::{
    maps::{ACL, ACL6},
    stats::count_refused,
};

#[inline(always)]
pub(crate) fn admits(vip: &VipInfo, src_addr_be: u32) -> Result<(), Counter> {
    if vip.flags & VIP_F_ACL == 0 {
        return Ok(());
    }
    let key = Key::new(
        64,
        AclData {
            vip_id: vip.vip_id,
            addr_be: src_addr_be,
        },
    );
    verdict(vip, ACL.get(&key).copied())
}

/// `admits` for an IPv6 source, in `ACL6`.
#[inline(always)]
pub(crate) fn admits6(vip: &VipInfo, src: &[u8; 16]) -> Result<(), Counter> {
    if vip.flags & VIP_F_ACL == 0 {
        return Ok(());
    }
    let key = Key::new(
        160,
        AclData6 {
            vip_id: vip.vip_id,
            addr: *src,
        },
    );
    verdict(vip, ACL6.get(&key).copied())
}

/// What the longest matching prefix's action (if any) means for a new flow.
#[inline(always)]
fn verdict(vip: &VipInfo, action: Option<u32>) -> Result<(), Counter> {
    let refused = match action {
        Some(ACL_DENY) => Counter::DropDenied,
        Some(_) => return Ok(()),
        None if vip.flags & VIP_F_ALLOWLIST != 0 => Counter::DropNotAllowed,
        None => return Ok(()),
    };
    count_refused(vip.vip_id, refused);
    Err(refused)
}
