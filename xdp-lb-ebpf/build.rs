use std::env;

/// Building this crate for BPF needs the `bpf-linker` binary, which Cargo cannot declare as a
/// dependency. Rebuild when it changes (e.g. `cargo xtask setup` rebuilt it against another LLVM).
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        match which::which("bpf-linker") {
            Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
            Err(err) => panic!("bpf-linker not found ({err}); run `cargo xtask setup`"),
        }
    }
}
