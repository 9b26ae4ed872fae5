//! What the bench's traffic generator and sinks agree on: test-ebpf's `xdp_gen` and `xdp_sink`
//! (BPF) and the forwarding-rate bed of the tests crate (`compare`: its AF_PACKET sender and
//! its frames), defined once for both sides. The data plane does not use it.

/// Source ports a generator CPU cycles through: this many distinct flows per CPU.
pub const GEN_FLOWS: u32 = 1024;
/// CPUs with flows of their own; more wrap.
pub const GEN_CPUS: u32 = 8;
/// The first generated source port.
pub const GEN_BASE_PORT: u32 = 40000;
/// The IPv4 identification of generated frames: what the sinks count.
pub const GEN_IP_ID: u16 = 0xb3cc;
/// The IPv6 flow label of generated IPv6 frames: what the sinks count.
pub const GEN_FLOW_LABEL: u32 = 0xb3cc;

/// The source port of generator CPU `cpu`'s `n`-th frame: each CPU its own `GEN_FLOWS` flows,
/// as a NIC's RSS gives each receive queue its own.
#[inline(always)]
pub const fn gen_port(cpu: u32, n: u32) -> u16 {
    (GEN_BASE_PORT + (cpu % GEN_CPUS) * GEN_FLOWS + n % GEN_FLOWS) as u16
}
