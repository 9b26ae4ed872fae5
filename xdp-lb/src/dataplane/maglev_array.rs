//! The Maglev tables' array, written through a memory mapping rather than a syscall per entry.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::MapData;
use xdp_lb_common::{MAGLEV_MAX_TABLE_SIZE, MAGLEV_SLOT_ELEMS, map_names};

use super::DataplaneError;

/// The `MAGLEV` array, mapped into our memory (it is created with BPF_F_MMAPABLE).
///
/// Writing a 65537-entry table through `bpf_map_update_elem` would take 32769 syscalls; through
/// the mapping it is one 256 KiB copy. The copy goes into the VIP's inactive slot, which no
/// packet reads until the agent swaps `VipInfo::maglev_slot` with one map update (a syscall,
/// so also a full barrier for the copy). The map's u64 elements each pack two entries, so the
/// mapping is read and written here as a plain `u32` table (see `MAGLEV_SLOT_ELEMS`).
pub(super) struct MaglevArray {
    _data: MapData,
    ptr: NonNull<u32>,
    /// Length of the mapping in u32 entries.
    entries: usize,
}

// SAFETY: the mapping is owned by this value and only accessed through &self/&mut self.
unsafe impl Send for MaglevArray {}
// SAFETY: as for Send: shared references only read it.
unsafe impl Sync for MaglevArray {}

/// u32 entries per slot in the mapping.
const SLOT_STRIDE: usize = MAGLEV_SLOT_ELEMS as usize * 2;

impl MaglevArray {
    pub(super) fn new(data: MapData) -> Result<Self, DataplaneError> {
        let info = data.info().map_err(|source| DataplaneError::Map {
            name: map_names::MAGLEV,
            source,
        })?;
        if info.value_size() != 8 {
            return Err(DataplaneError::WrongMap {
                name: map_names::MAGLEV,
                detail: format!(
                    "value size {} instead of 8 (pinned by another version?)",
                    info.value_size()
                ),
            });
        }
        let len = info.max_entries() as usize * 8;
        // SAFETY: mapping a BPF array fd; the kernel checks BPF_F_MMAPABLE and the length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                name: map_names::MAGLEV,
                source: io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(ptr.cast::<u32>()).expect("mmap returned NULL without MAP_FAILED");
        Ok(Self {
            _data: data,
            ptr,
            entries: len / 4,
        })
    }

    /// Number of slots (two per VIP).
    pub(super) fn slots(&self) -> u32 {
        (self.entries / SLOT_STRIDE) as u32
    }

    fn slot_range(&self, slot: u32, len: usize) -> std::ops::Range<usize> {
        let start = slot as usize * SLOT_STRIDE;
        assert!(
            len <= MAGLEV_MAX_TABLE_SIZE as usize && start + len <= self.entries,
            "slot {slot} out of range"
        );
        start..start + len
    }

    /// Copies `table` into `slot`. The caller guarantees no packet reads `slot` now.
    pub(super) fn write_slot(&mut self, slot: u32, table: &[u32]) {
        let range = self.slot_range(slot, table.len());
        // SAFETY: in bounds of the mapping (slot_range asserts); we hold &mut self.
        unsafe {
            std::ptr::copy_nonoverlapping(
                table.as_ptr(),
                self.ptr.as_ptr().add(range.start),
                table.len(),
            );
        }
    }

    /// Reads `len` entries of `slot`.
    pub(super) fn read_slot(&self, slot: u32, len: u32) -> Vec<u32> {
        let range = self.slot_range(slot, len as usize);
        // SAFETY: in bounds of the mapping. The kernel only reads it; another agent writing
        // at the same time would be a misconfiguration (two agents on one pin_dir).
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(range.start), range.len()).to_vec()
        }
    }
}

impl Drop for MaglevArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.entries * 4) };
    }
}
