//! What the maps hold now, read once per request of `/metrics` or `/stats` (read-only, like
//! `xdp-lb inspect`).

use std::path::Path;

use super::inspect::{BackendView, InspectError, Inspector, Stats, VipView};

pub(super) struct PageData {
    pub(super) vips: Vec<VipView>,
    pub(super) backends: Vec<BackendView>,
    pub(super) stats: Stats,
}

impl PageData {
    pub(super) fn read(pin_dir: &Path) -> Result<Self, InspectError> {
        let inspector = Inspector::open(pin_dir)?;
        Ok(Self {
            vips: inspector.vips(),
            backends: inspector.backends(None)?,
            stats: inspector.stats(),
        })
    }
}
