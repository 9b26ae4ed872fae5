//! Why a write to the maps failed (the reconciler's and its helpers' one error type).

use aya::maps::MapError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("writing {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("writing TX_PORTS: {0}")]
    TxPorts(#[source] aya::maps::xdp::XdpMapError),
    #[error("VIP {name}: id {vip_id} has no Maglev slot (the maps were created for fewer VIPs)")]
    NoSlot { name: String, vip_id: u32 },
}

/// A map error as the reconciler's, naming the map.
pub(super) fn map_err(map: &'static str) -> impl FnOnce(MapError) -> ReconcileError {
    move |source| ReconcileError::Map { map, source }
}
