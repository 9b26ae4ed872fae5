//! VRRP: the VIP fails over between LB nodes and interoperates with keepalived.
//!
//! - `packet` — advertisements on the wire (v2/v3, both v3 checksum forms).
//! - `machine` — how the VIP fails over: the RFC 5798 state machine, pure and unit-tested.
//! - `instance` — one instance at work: the advert socket, timers, virtual addresses.
//! - `announce` — what a transition tells the world: gratuitous ARP and the notify hook.

mod announce;
pub mod instance;
pub mod machine;
pub mod packet;
