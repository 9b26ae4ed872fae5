//! The Grafana dashboard (`packaging/grafana/xdp-lb.json`) against a live `/metrics`: every
//! metric an expression names is a family the agent exports, and every label it selects,
//! groups by or puts in a legend is one of that family's labels.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};

/// A family of `/metrics`: whether it has samples, and the label names they carry.
#[derive(Debug, Default)]
pub struct Family {
    pub sampled: bool,
    pub labels: BTreeSet<String>,
}

/// Families in `/metrics` text.
pub fn exported(metrics: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                families.entry(name.to_owned()).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let f = families.entry(line[..name_end].to_owned()).or_default();
            f.sampled = true;
            if let Some((_, labels)) = line.split_once('{') {
                for pair in labels.split("\",") {
                    if let Some((k, _)) = pair.split_once('=') {
                        f.labels.insert(k.trim_start_matches(',').to_owned());
                    }
                }
            }
        }
    }
    families
}

fn ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The metric names in a PromQL expression, each with the label names of its `{…}` selector.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("xdp_lb_") {
        let tail = &rest[at..];
        let end = tail.find(|c| !ident(c)).unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = Vec::new();
        if tail[end..].starts_with('{') {
            let close = tail[end..].find('}').map_or(tail.len(), |c| end + c);
            for m in tail[end + 1..close].split(',') {
                let key: String = m.trim().chars().take_while(|c| ident(*c)).collect();
                if !key.is_empty() {
                    labels.push(key);
                }
            }
        }
        out.push((name, labels));
        rest = &tail[end..];
    }
    out
}

/// Labels named by `by (…)` and `{{…}}` (legend).
fn grouping(expr: &str, legend: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split("by (").skip(1) {
        let inside = part.split(')').next().unwrap_or("");
        out.extend(
            inside
                .split(',')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
    }
    for part in legend.split("{{").skip(1) {
        out.push(part.split("}}").next().unwrap_or("").trim().to_owned());
    }
    out
}

/// Checks every target of `dashboard` against `families`; `empty_here` names the families this
/// agent does not export or has no samples of (a section it has not configured), with the
/// labels they carry where they are (checked instead).
pub fn check(
    dashboard: &serde_json::Value,
    families: &BTreeMap<String, Family>,
    empty_here: &[(&str, &[&str])],
) -> anyhow::Result<usize> {
    let mut checked = 0;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let legend = target["legendFormat"].as_str().unwrap_or("");
            let mut known = BTreeSet::new();
            let sels = selectors(expr);
            if sels.is_empty() {
                bail!("{expr:?} names no xdp_lb metric");
            }
            for (name, labels) in sels {
                let declared = empty_here.iter().find(|(n, _)| *n == name);
                let have: BTreeSet<String> = match (families.get(&name), declared) {
                    (Some(f), _) if f.sampled => f.labels.clone(),
                    (_, Some((_, labels))) => labels.iter().map(|s| (*s).to_owned()).collect(),
                    (Some(_), None) => bail!("{name} has no samples to check {expr:?} against"),
                    (None, None) => bail!("{expr:?}: the agent exports no {name}"),
                };
                for l in &labels {
                    if !have.contains(l) {
                        bail!("{expr:?}: {name} has no label {l} (it has {have:?})");
                    }
                }
                known.extend(have);
            }
            for l in grouping(expr, legend) {
                if !known.contains(&l) {
                    bail!("{expr:?} / {legend:?}: no metric of it has a label {l} ({known:?})");
                }
            }
            checked += 1;
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_label_or_metric_is_caught() {
        let metrics = "# TYPE xdp_lb_a_total counter\nxdp_lb_a_total{vip=\"w\",backend=\"b\"} 1\n";
        let fams = exported(metrics);
        let dash = |expr: &str, legend: &str| serde_json::json!({"panels": [{"targets": [{"expr": expr, "legendFormat": legend}]}]});
        assert!(
            check(
                &dash(
                    "sum by (vip) (rate(xdp_lb_a_total{vip=~\"$vip\"}[5m]))",
                    "{{vip}}"
                ),
                &fams,
                &[]
            )
            .is_ok()
        );
        assert!(check(&dash("xdp_lb_b_total", ""), &fams, &[]).is_err());
        assert!(check(&dash("xdp_lb_a_total{instance=\"x\"}", ""), &fams, &[]).is_err());
        assert!(check(&dash("sum by (state) (xdp_lb_a_total)", ""), &fams, &[]).is_err());
        assert!(check(&dash("xdp_lb_a_total", "{{reason}}"), &fams, &[]).is_err());
    }
}
