//! Builds the XDP program (`xdp-lb-ebpf`) for BPF with aya-build and leaves the objects in
//! OUT_DIR, where `src/dataplane.rs` embeds them.
//!
//! The eBPF crate needs `-Z build-std=core` (no prebuilt core for bpfel-unknown-none), so it is
//! built with the machine's nightly toolchain plus rust-src, and linked by bpf-linker, which must
//! be built against the same LLVM major as that rustc (22 here). `cargo xtask setup` installs
//! and checks both.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("xdp-lb-ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package {
            name: "xdp-lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
    .context("building the XDP program (run `cargo xtask setup` if the toolchain is missing)")
}
