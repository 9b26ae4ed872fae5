//! What the test-side programs share with the tests crate: the bench's traffic generator and
//! sinks and the forwarding-rate bed agree on these (`bench`). Kept out of the product's shared
//! crate: the data plane never uses them.
#![no_std]

pub mod bench;
