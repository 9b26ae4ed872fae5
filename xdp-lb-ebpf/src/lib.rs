//! Host-side stub: the XDP program lives in the `xdp-lb` binary target of this crate, which
//! `xdp-lb`'s build script compiles for BPF. This library exists only so that `xdp-lb` can
//! name this crate as a build dependency and be rebuilt when it changes.
#![no_std]
