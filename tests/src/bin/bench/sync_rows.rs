//! The flow-sync rows of `cargo xtask bench` (issue: flow state synchronised between LB
//! nodes): the program's cost of reporting new flows, and the agent's cost per synced flow.

use super::*;

/// Issue 17: what `[sync]` costs per new flow. In the program: a DSR new flow with the sync's
/// report on against the same without (`repeat=1` over distinct flows, the ring drained between
/// slices, outside the timed calls). In the agent: encoding and authenticating a flow (sender),
/// verifying and decoding it (receiver), and installing it in the maps. On the wire: bytes per
/// flow at full datagrams.
pub(super) fn sync_rows(md: &mut String, args: &Args) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;

    use xdp_lb::sync::wire;
    let key_path = std::env::temp_dir().join(format!("xlb-bench-{}.key", std::process::id()));
    std::fs::write(&key_path, [0x42u8; 32])?;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
    let text = format!(
        "{}\n[sync]\npeers = [\"198.18.0.3\"]\nkey_file = \"{}\"\n",
        fixtures::config("lo")
            .bed("@PIN_DIR@", 1 << 20, 4)
            .vip(fixtures::three_backends("web", 80)),
        key_path.display()
    );
    let mut lb = Loaded::new(&text, LOOPBACK_IFINDEX).context("loading xdp-lb with [sync]")?;
    let data = aya::maps::MapData::from_pin(lb.pin_dir.join(map_names::SYNC_EVENTS))?;
    let mut ring: aya::maps::RingBuf<_> = aya::maps::Map::RingBuf(data).try_into()?;
    let set_sync = |lb: &Loaded, on: u8| -> anyhow::Result<()> {
        let data = aya::maps::MapData::from_pin(lb.pin_dir.join(map_names::SETTINGS))?;
        let mut m: aya::maps::Array<_, xdp_lb_common::Settings> =
            aya::maps::Map::Array(data).try_into()?;
        let mut v = m.get(&0, 0)?;
        v.sync_events = on;
        m.set(0, v, 0)?;
        Ok(())
    };
    let program = lb.dp().program() as *const Xdp;
    // SAFETY: as in main: `lb` outlives the reference; only its maps change meanwhile.
    let program: &Xdp = unsafe { &*program };
    let frames: Vec<Vec<u8>> = (0..args.flows).map(|i| flow(i).build()).collect();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        eprintln!("bench: sync round {}/{}", round + 1, args.rounds);
        for (sync, out) in [(1u8, &mut on), (0u8, &mut off)] {
            set_sync(&lb, sync)?;
            let (nf0, lost0) = (
                lb.counter(Counter::NewFlow),
                lb.counter(Counter::SyncEventLost),
            );
            let mut sum = 0.0;
            let mut reported = 0u64;
            for slice in frames.chunks(8192) {
                for f in slice {
                    sum += per_run(program, f, 1)?.1;
                }
                while ring.next().is_some() {
                    reported += 1;
                }
            }
            ensure!(
                lb.counter(Counter::NewFlow) - nf0 == args.flows as u64
                    && lb.counter(Counter::SyncEventLost) == lost0,
                "sync row: every packet a new flow, no report lost"
            );
            ensure!(
                reported == if sync == 1 { args.flows as u64 } else { 0 },
                "sync row: {reported} reports for {} flows (sync {sync})",
                args.flows
            );
            out.push(sum / args.flows as f64);
            forget_flows(&mut lb, &frames)?;
        }
    }
    // The agent's side, per flow: encode + MAC, verify + decode, install (DSR, one batch).
    let key = wire::Key::new(&[0x42u8; 32]);
    let record = |i: u32| wire::FlowRecord {
        kind: wire::RecordKind::Dsr,
        proto: 6,
        state: 0,
        client: std::net::SocketAddr::from((
            Ipv4Addr::from(0xc613_0000 | i),
            10_000 + (i % 50_000) as u16,
        )),
        vip: std::net::SocketAddr::from((VIP, 80)),
        backend: std::net::SocketAddr::from((Ipv4Addr::new(198, 18, 0, 11), 80)),
        snat: None,
        idle_s: 0,
    };
    let records: Vec<wire::FlowRecord> = (0..args.flows).map(record).collect();
    let started = std::time::Instant::now();
    let datagrams: Vec<Vec<u8>> = records
        .chunks(wire::MAX_RECORDS)
        .enumerate()
        .map(|(i, c)| {
            wire::encode(
                &wire::Message {
                    kind: wire::MessageKind::Flows,
                    node: 1,
                    epoch: 1,
                    seq: i as u64 + 1,
                    records: c.to_vec(),
                },
                &key,
            )
        })
        .collect();
    let encode_ns = started.elapsed().as_nanos() as f64 / args.flows as f64;
    let started = std::time::Instant::now();
    let mut replay = xdp_lb::sync::replay::Replay::default();
    let mut decoded = 0usize;
    for d in &datagrams {
        let m = wire::decode(d, &key).map_err(|e| anyhow::anyhow!("{}", e.name()))?;
        replay
            .accept("198.18.0.3".parse()?, m.epoch, m.seq)
            .map_err(|e| anyhow::anyhow!("{}", e.name()))?;
        decoded += m.records.len();
    }
    let decode_ns = started.elapsed().as_nanos() as f64 / args.flows as f64;
    ensure!(decoded == args.flows as usize, "sync: every record decoded");
    let (vip_id, backend_id) = (
        lb.ids.vips[&lb.config.vips[0].key()],
        lb.backend_id(0, Ipv4Addr::new(198, 18, 0, 11)),
    );
    let synced: Vec<xdp_lb::dataplane::SyncedFlow> = records
        .iter()
        .map(|r| xdp_lb::dataplane::SyncedFlow {
            proto: r.proto,
            client: (r.client.ip(), r.client.port()),
            vip: (r.vip.ip(), r.vip.port()),
            vip_id,
            backend_id,
            backend: (r.backend.ip(), r.backend.port()),
            snat: None,
            state: 0,
            idle_s: 0,
        })
        .collect();
    let started = std::time::Instant::now();
    let report = lb.reconciler.install_synced(
        &synced,
        xdp_lb::clock::monotonic_ns(),
        xdp_lb::clock::coarse_now_s(),
    )?;
    let install_ns = started.elapsed().as_nanos() as f64 / args.flows as f64;
    ensure!(
        report.installed == args.flows as u64,
        "sync: every flow installed ({report:?})"
    );
    let bytes = datagrams.iter().map(|d| d.len() + 42).sum::<usize>() as f64 / args.flows as f64;
    let (on, off) = (median(&on), median(&off));
    writeln!(md, "\n## Flow sync: cost per new flow (issue 17)\n")?;
    writeln!(
        md,
        "| what | per flow | per 1000 new flows/s |\n|---|---:|---:|\n\
         | program: DSR new flow, report on vs off (`repeat=1` × {flows}, median of {rounds}) | +{:.1} ns ({on:.1} vs {off:.1}) | {:.2} ms/s of CPU |\n\
         | sender: encode + HMAC-SHA-256 ({per} flows a datagram) | {encode_ns:.0} ns | {:.2} ms/s |\n\
         | receiver: verify + decode + replay window | {decode_ns:.0} ns | {:.2} ms/s |\n\
         | receiver: install (two map syscalls a DSR flow) | {install_ns:.0} ns | {:.2} ms/s |\n\
         | wire: bytes per flow (Ethernet + IP + UDP + header + record + MAC, full datagrams) | {bytes:.1} B | {:.1} kB/s per peer |",
        on - off,
        (on - off) * 1000.0 / 1e6,
        encode_ns * 1000.0 / 1e6,
        decode_ns * 1000.0 / 1e6,
        install_ns * 1000.0 / 1e6,
        bytes * 1000.0 / 1000.0,
        flows = args.flows,
        rounds = args.rounds,
        per = wire::MAX_RECORDS,
    )?;
    let _ = std::fs::remove_file(&key_path);
    Ok(())
}
