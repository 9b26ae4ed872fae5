//! `compare.svg`: the TCP rows (new connections and keep-alive) and the forwarding rates, as bars.

use std::path::Path;

pub(crate) fn chart(
    path: &Path,
    tcp: &[(&str, f64, f64)],
    rate: &[(&str, f64)],
    machine: &str,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(440);
    let title = format!("xdp-lb vs its peers — {machine}");
    let max_rps = tcp.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "{title}: TCP requests/s (blue: a new connection per request; green: keep-alive)"
            ),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(210)
        .build_cartesian_2d(0.0..max_rps, 0..(tcp.len() * 3) as i32)?;
    c.configure_mesh()
        .disable_y_mesh()
        .y_labels(tcp.len() * 3)
        .y_label_formatter(&|y| {
            let i = (*y / 3) as usize;
            if *y % 3 == 1 && i < tcp.len() {
                tcp[tcp.len() - 1 - i].0.to_owned()
            } else {
                String::new()
            }
        })
        .x_desc("requests/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (_, new_conn, keep)) in tcp.iter().rev().enumerate() {
        let y = (i * 3) as i32;
        c.draw_series([Rectangle::new(
            [(0.0, y), (*new_conn, y + 1)],
            BLUE.mix(0.7).filled(),
        )])?;
        c.draw_series([Rectangle::new(
            [(0.0, y + 1), (*keep, y + 2)],
            GREEN.mix(0.6).filled(),
        )])?;
    }
    let max_rate = rate.iter().map(|r| r.1).fold(0.01, f64::max) * 1.15;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            "forwarding rate (1024 flows), Mpps delivered",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(210)
        .build_cartesian_2d(0.0..max_rate, 0..(rate.len() * 2) as i32)?;
    c.configure_mesh()
        .disable_y_mesh()
        .y_labels(rate.len() * 2)
        .y_label_formatter(&|y| {
            let i = (*y / 2) as usize;
            if *y % 2 == 0 && i < rate.len() {
                rate[rate.len() - 1 - i].0.to_owned()
            } else {
                String::new()
            }
        })
        .x_desc("Mpps")
        .draw()?;
    for (i, (_, mpps)) in rate.iter().rev().enumerate() {
        let y = (i * 2) as i32;
        c.draw_series([Rectangle::new(
            [(0.0, y), (*mpps, y + 1)],
            RED.mix(0.6).filled(),
        )])?;
    }
    root.present()?;
    Ok(())
}
