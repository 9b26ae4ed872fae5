//! What `xdp-lb run` must undo however it ends — a clean stop, a failed start, an error in the
//! loop: background tasks aborted, the control socket removed, interface settings the agent
//! changed restored, and the data plane stopped (detached and unpinned, or left for the next
//! agent). One guard, so every path out of `run` does the same.

use std::path::PathBuf;

use tokio::task::JoinHandle;

use crate::{dataplane::Dataplane, ethtool::VlanOffload};

pub(super) struct StopGuard {
    control_socket: PathBuf,
    /// Background tasks (control socket, HTTP, log readers), aborted on stop.
    pub(super) tasks: Vec<JoinHandle<()>>,
    dataplane: Option<Dataplane>,
    /// Receive-VLAN offload the agent turned off, to turn back on at stop.
    vlan_offload: Option<VlanOffload>,
}

impl StopGuard {
    pub(super) fn new(control_socket: PathBuf, control_task: JoinHandle<()>) -> Self {
        Self {
            control_socket,
            tasks: vec![control_task],
            dataplane: None,
            vlan_offload: None,
        }
    }

    pub(super) fn hold(&mut self, dataplane: Dataplane) {
        self.dataplane = Some(dataplane);
    }

    pub(super) fn dataplane(&self) -> &Dataplane {
        self.dataplane.as_ref().expect("held from the start")
    }

    pub(super) fn dataplane_mut(&mut self) -> &mut Dataplane {
        self.dataplane.as_mut().expect("held from the start")
    }

    /// The program must see every VLAN tag a frame carries: it never forwards a frame whose
    /// tags it cannot see. A NIC's (and veth's) receive-VLAN offload moves the outer tag into
    /// the frame's metadata before XDP runs, so a double-tagged frame would look single-tagged
    /// and reach a backend with its outer tag lost. Turn the offload off while we run (logged,
    /// restored at stop); if the driver refuses, say what that means.
    pub(super) fn see_vlan_tags(&mut self, interface: &str) {
        match VlanOffload::turn_off(interface) {
            Ok(Some(changed)) => {
                tracing::info!(
                    interface,
                    features = %changed.names(),
                    "turned receive-VLAN offload off, so the program sees every VLAN tag (restored at stop)"
                );
                self.vlan_offload = Some(changed);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                interface,
                error = %e,
                "cannot turn receive-VLAN offload off: frames whose outer VLAN tag the NIC strips look untagged to the program"
            ),
        }
        if crate::ethtool::driver(interface).is_ok_and(|d| d == "veth") {
            // On veth nothing strips on receive: a tag the peer's stack holds out of band (a
            // bridge untags every frame it forwards; a VLAN device hands its tag down) stays
            // out of band unless the *peer* inserts it, and XDP sees only what is in the frame.
            tracing::warn!(
                interface,
                "interface is a veth: VLAN tags reach the program only if its peer puts them in the frame; on the peer run `ethtool -K PEER txvlan off tx-vlan-stag-hw-insert off`"
            );
        }
    }

    /// The normal stop: `keep` leaves the program attached and the maps pinned.
    pub(super) fn finish(mut self, keep: bool) -> std::io::Result<()> {
        self.undo_host_changes(keep);
        match self.dataplane.take() {
            Some(dataplane) => dataplane.stop(keep),
            None => Ok(()),
        }
    }

    fn undo_host_changes(&mut self, keep_dataplane: bool) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.control_socket);
        // A kept program still needs to see the tags: leave the offload off for it.
        if let Some(offload) = self.vlan_offload.take()
            && !keep_dataplane
            && let Err(e) = offload.restore()
        {
            tracing::warn!(error = %e, "cannot restore receive-VLAN offload");
        }
    }
}

impl Drop for StopGuard {
    /// Every way out but `finish`: a failed start or an error. Maps another agent left (or
    /// that now hold live flows) are never removed on the way: the data plane stays pinned
    /// when its maps were adopted.
    fn drop(&mut self) {
        let keep = self.dataplane.as_ref().is_some_and(|d| d.adopted_maps);
        self.undo_host_changes(keep);
        if let Some(dataplane) = self.dataplane.take() {
            let _ = dataplane.stop(keep);
        }
    }
}
