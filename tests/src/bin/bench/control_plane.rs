//! The control-plane rows of `cargo xtask bench`: building a Maglev table, and a health
//! transition to the new table live.

use super::*;

/// Control-plane rows: building a Maglev table, and from a health transition to the new table
/// being live in the map (desired state + table write + VIPS swap), with the flow purge that
/// follows reported separately.
pub(super) fn control_plane(md: &mut String, rounds: usize) -> anyhow::Result<()> {
    use xdp_lb::{
        maglev::{self, MaglevBackend},
        state::Health,
    };
    writeln!(
        md,
        "\n## Control plane: Maglev rebuild and swap (65537 entries)\n"
    )?;
    writeln!(
        md,
        "| backends | build one table (ms) | health transition → new table live: desired state + write + swap (ms) | then purge of the down backend's flows, 10k flows in the table (ms) |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|")?;
    let mut swap_100 = f64::NAN;
    for n in [100usize, 1000] {
        let mut big = fixtures::vip("big", "198.18.0.100", 80).key("maglev_table_size", 65537);
        for i in 0..n {
            big = big.backend(format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250));
        }
        let text = fixtures::config("lo")
            .bed("@PIN_DIR@", 65536, 2)
            .vip(big)
            .to_string();
        let mut lb = Loaded::new(&text, LOOPBACK_IFINDEX)?;
        let neighbours = lb.all_resolved(LOOPBACK_IFINDEX);
        // 10k established flows spread over the backends.
        for i in 0..10_000u32 {
            ensure!(
                lb.run(&flow(i).build())?.action == XDP_TX,
                "populating flows"
            );
        }
        let ids: Vec<Vec<u8>> = lb.config.vips[0]
            .backends
            .iter()
            .map(|b| match b.address {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            })
            .collect();
        let inputs: Vec<MaglevBackend<'_>> = ids
            .iter()
            .map(|id| MaglevBackend {
                identity: id,
                weight: 1,
            })
            .collect();
        let key = lb.config.vips[0].key();
        let (mut build, mut live, mut purge) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let t = std::time::Instant::now();
            let table = maglev::build(&inputs, 65_537).context("build")?;
            build.push(t.elapsed().as_secs_f64() * 1e3);
            ensure!(table.len() == 65_537);

            let slot_before = lb.maps().vip(&key).context("the VIP")?.maglev_slot;
            let down: Health = [((key, lb.config.vips[0].backends[r].address), false)].into();
            // Swaps of one VIP closer together than this wait for it (see reconcile.rs); a
            // real health transition is never that close to the previous one, so the timed
            // swap should not include that wait.
            std::thread::sleep(xdp_lb::dataplane::SLOT_REUSE_GRACE);
            // Timed like the agent's path: new desired state (Maglev build included), then
            // the reconciler until the VIPS swap.
            let t = std::time::Instant::now();
            let desired = xdp_lb::state::desired_state(&xdp_lb::state::StateInputs {
                config: &lb.config,
                ids: &lb.ids,
                neighbours: &neighbours,
                health: &down,
                local_mac: None,
                snat_address: Default::default(),
                tunnel_source: Default::default(),
                interface_mtu: 1500,
                ramps: &xdp_lb::state::Ramps::new(),
            });
            let computed = t.elapsed().as_secs_f64() * 1e3;
            let report = lb.reconciler.apply(&desired)?;
            let total = t.elapsed().as_secs_f64() * 1e3;
            let slot_after = lb.maps().vip(&key).context("the VIP")?.maglev_slot;
            ensure!(slot_after != slot_before, "the table was not swapped");
            let tables = computed
                + report
                    .tables_live_after
                    .context("no table went live")?
                    .as_secs_f64()
                    * 1e3;
            live.push(tables);
            purge.push(total - tables);
            lb.apply_health(&neighbours, &Health::new())?;
        }
        let m = |v: &[f64]| median(v);
        if n == 100 {
            swap_100 = m(&live);
        }
        writeln!(
            md,
            "| {n} | {:.2} | {:.2} | {:.2} |",
            m(&build),
            m(&live),
            m(&purge)
        )?;
    }
    writeln!(
        md,
        "\nTarget (issue: health checks): swap ≤ 10 ms for 100 backends — {} ({swap_100:.2} ms). \
         The figure includes building the new table.",
        if swap_100 <= 10.0 { "met" } else { "NOT met" }
    )?;
    Ok(())
}
