//! Builds the test-side BPF programs (`test-ebpf`: the bench's floor and empty programs, the
//! traffic generator and its sinks) with aya-build into OUT_DIR, where `src/lib.rs` embeds them.
//! They are kept out of the product: `xdp-lb`'s build script builds only the data plane.
//! Toolchain notes: `xdp-lb/build.rs`.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let test_ebpf = std::path::Path::new(&manifest_dir).join("../test-ebpf");
    let package = aya_build::Package {
        name: "xdp-lb-test-ebpf",
        root_dir: test_ebpf.to_str().context("non-UTF-8 path")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly).context(
        "building the test-side BPF programs (run `cargo xtask setup` if the toolchain is missing)",
    )
}
