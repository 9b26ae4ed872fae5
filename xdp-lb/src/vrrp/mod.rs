//! VRRP: the VIP fails over between LB nodes and interoperates with keepalived.
//!
//! - `machine` — how the VIP fails over: the RFC 5798 state machine, pure and unit-tested.
//! - `packet` — advertisements on the wire (v2/v3, both v3 checksum forms).
//! - `instance` — one instance as the agent holds it: started, tracked, held, shut down;
//!   `worker` — its task (receive checks, the machine's actions); `socket` — its sockets;
//!   `messages` — what the two exchange (control in, status out).
//! - `garp` — gratuitous ARP and unsolicited neighbour advertisements of a new master;
//!   `notify` — the operator's notify hook.

mod garp;
pub mod instance;
pub mod machine;
mod messages;
mod notify;
pub mod packet;
mod socket;
mod worker;
