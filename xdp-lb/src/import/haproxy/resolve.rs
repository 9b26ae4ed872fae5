//! From haproxy's sections to VIPs: each `frontend`/`listen` in `mode tcp` with its backend's
//! `server` lines (after `default-server`), the check those lines and options ask for, and the
//! stats listener.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
};

use super::{Proxy, VALUED, err, number, time};
use crate::import::{Backend, Check, ImportError, Outcome, Plan, Source, Vip};

/// A `bind` address: IPv4, or `*`/empty/0.0.0.0 meaning the keepalived VIP.
fn bind_address(spec: &str, source: &Source, plan: &Plan) -> Result<Vec<SocketAddr>, ImportError> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (host, port) = part
            .rsplit_once(':')
            .ok_or_else(|| err(source, format!("bind {part:?}: needs ADDR:PORT")))?;
        let port: u16 = number(source, "bind port", port)?;
        let address = match host {
            "" | "*" | "0.0.0.0" => plan.vrrp_address().ok_or_else(|| {
                err(
                    source,
                    format!(
                        "bind {part:?} listens on every address; xdp-lb needs the VIP: import keepalived.conf too (--keepalived), or bind the VIP's address"
                    ),
                )
            })?,
            h => h.parse::<Ipv4Addr>().map_err(|_| {
                err(source, format!("bind {part:?}: {h:?} is not an IPv4 address"))
            })?,
        };
        if address.is_loopback() {
            // kubespray's per-node localhost balancer: local clients never pass through XDP.
            continue;
        }
        out.push(SocketAddr::from((address, port)));
    }
    Ok(out)
}

/// A name xdp-lb accepts: A-Z a-z 0-9 - _ . (1 to 64).
fn vip_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    if n.is_empty() { "vip".into() } else { n }
}

/// Every `bind` and `server` line must parse, used or not: a typo in a section that made no VIP
/// (a frontend without `default_backend`, a backend no frontend names) is still a mistake in
/// the file, and an import that says nothing of it leaves the operator a config without it.
fn parse_all(proxies: &[Proxy]) -> Result<(), ImportError> {
    for p in proxies {
        for (spec, source) in &p.binds {
            for part in spec.split(',') {
                let (host, port) = part
                    .rsplit_once(':')
                    .ok_or_else(|| err(source, format!("bind {part:?}: needs ADDR:PORT")))?;
                number::<u16>(source, "bind port", port)?;
                if !matches!(host, "" | "*") && host.parse::<Ipv4Addr>().is_err() {
                    return Err(err(
                        source,
                        format!("bind {part:?}: {host:?} is not an IPv4 address"),
                    ));
                }
            }
        }
        let mut scratch = Servers {
            check: p.check.clone(),
            any_check: false,
            https: false,
            slowstarts: Vec::new(),
        };
        for (line, source) in &p.servers {
            server(
                line,
                source,
                p,
                1,
                &p.name,
                &mut scratch,
                &mut Plan::default(),
            )?;
        }
    }
    Ok(())
}

pub(super) fn resolve(proxies: &[Proxy], plan: &mut Plan) -> Result<(), ImportError> {
    parse_all(proxies)?;
    let by_name: BTreeMap<&str, &Proxy> = proxies
        .iter()
        .filter(|p| p.kind == "backend" || p.kind == "listen")
        .map(|p| (p.name.as_str(), p))
        .collect();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for front in proxies
        .iter()
        .filter(|p| p.kind == "frontend" || p.kind == "listen")
    {
        let from = front.from.clone().expect("set at the section");
        if front.stats && front.servers.is_empty() {
            stats_listen(front, plan)?;
            continue;
        }
        if front.mode.as_deref() == Some("http") {
            plan.report(
                &from,
                &format!("{} {}", front.kind, front.name),
                Outcome::Ignored(
                    "mode http: not translated (xdp-lb is a layer-4 balancer; keep a proxy for HTTP routing)".into(),
                ),
            );
            continue;
        }
        let Some(back) = backend_of(front, &by_name, &from)? else {
            plan.report(
                &from,
                &format!("frontend {}", front.name),
                Outcome::Ignored("no default_backend: nothing to balance to".into()),
            );
            continue;
        };
        if back.mode.as_deref() == Some("http") {
            plan.report(
                &from,
                &format!("frontend {}", front.name),
                Outcome::Ignored(format!("its backend {} is in mode http", back.name)),
            );
            continue;
        }
        vips_of(front, back, &from, &mut names, plan)?;
    }
    Ok(())
}

/// A stats-only section: where haproxy served its page is where `agent.listen` serves ours.
fn stats_listen(front: &Proxy, plan: &mut Plan) -> Result<(), ImportError> {
    let Some((spec, source)) = front.binds.first() else {
        return Ok(());
    };
    let (host, port) = spec
        .rsplit_once(':')
        .ok_or_else(|| err(source, format!("bind {spec:?}: needs ADDR:PORT")))?;
    let port: u16 = number(source, "bind port", port)?;
    let host: Ipv4Addr = match host {
        "" | "*" => Ipv4Addr::UNSPECIFIED,
        h => h
            .parse()
            .map_err(|_| err(source, format!("{h:?} is not an IPv4 address")))?,
    };
    plan.listen = Some((SocketAddr::from((host, port)), source.clone()));
    Ok(())
}

/// The section whose servers a frontend (or listen) balances to: itself for a listen, else its
/// unconditional `use_backend` or its `default_backend`; None when it names none.
fn backend_of<'a>(
    front: &'a Proxy,
    by_name: &BTreeMap<&str, &'a Proxy>,
    from: &Source,
) -> Result<Option<&'a Proxy>, ImportError> {
    if front.kind == "listen" {
        return Ok(Some(front));
    }
    let unconditional = front
        .use_backends
        .iter()
        .find(|(_, conditional, _)| !conditional)
        .map(|(n, _, _)| n.as_str());
    let Some(n) = unconditional.or(front.default_backend.as_deref()) else {
        return Ok(None);
    };
    let back = by_name.get(n).ok_or_else(|| {
        err(
            from,
            format!("frontend {}: no backend named {n:?}", front.name),
        )
    })?;
    Ok(Some(*back))
}

/// A VIP for each address the frontend binds (named after it; a second one gets its port).
fn vips_of(
    front: &Proxy,
    back: &Proxy,
    from: &Source,
    names: &mut BTreeMap<String, usize>,
    plan: &mut Plan,
) -> Result<(), ImportError> {
    let mut addresses = Vec::new();
    for (spec, source) in &front.binds {
        addresses.extend(bind_address(spec, source, plan)?);
    }
    if front.binds.is_empty() {
        return Err(err(
            from,
            format!("{} {} has no bind line", front.kind, front.name),
        ));
    }
    if addresses.is_empty() {
        plan.report(
            from,
            &format!("{} {}", front.kind, front.name),
            Outcome::Ignored(
                "it listens on loopback only (a per-node localhost balancer): local clients never pass through XDP, so there is no VIP to make".into(),
            ),
        );
        return Ok(());
    }
    for addr in addresses {
        let base = vip_name(&front.name);
        let count = names.entry(base.clone()).or_default();
        *count += 1;
        let name = if *count == 1 {
            base
        } else {
            format!("{base}-{}", addr.port())
        };
        let vip = vip_from(front, back, name, addr, plan)?;
        plan.vips.push(vip);
    }
    Ok(())
}

/// Server parameters: the section's `default-server` lines, then the server's own words.
fn params<'a>(
    defaults: &'a [(String, Source)],
    own: &'a [&'a str],
) -> Vec<(&'a str, Option<&'a str>)> {
    let mut out = Vec::new();
    let mut push = |ws: &[&'a str]| {
        let mut i = 0;
        while i < ws.len() {
            let k = ws[i];
            if VALUED.contains(&k) {
                out.push((k, ws.get(i + 1).copied()));
                i += 2;
            } else {
                out.push((k, None));
                i += 1;
            }
        }
    };
    for (line, _) in defaults {
        let ws: Vec<&'a str> = line.split_whitespace().skip(1).collect();
        push(&ws);
    }
    push(own);
    out
}

fn vip_from(
    front: &Proxy,
    back: &Proxy,
    name: String,
    addr: SocketAddr,
    plan: &mut Plan,
) -> Result<Vip, ImportError> {
    let std::net::IpAddr::V4(address) = addr.ip() else {
        unreachable!("bind_address yields IPv4")
    };
    let mut servers = Servers {
        check: back.check.clone(),
        any_check: false,
        https: back.check_ssl,
        slowstarts: Vec::new(),
    };
    let mut backends = Vec::new();
    for (line, source) in &back.servers {
        backends.push(server(
            line,
            source,
            back,
            addr.port(),
            &name,
            &mut servers,
            plan,
        )?);
    }
    for (line, source) in &back.default_server {
        plan.report(
            source,
            line,
            Outcome::Translated("applied to each server line".into()),
        );
    }
    let Servers {
        mut check,
        any_check,
        https,
        slowstarts,
    } = servers;
    check_kind(&mut check, any_check, https, back.ssl_hello);
    if let Some(from) = &back.from {
        check.fit_timeout(from, plan);
        check.fit_kind(from, plan);
    }
    let slowstart = (!slowstarts.is_empty() && slowstarts.iter().all(|s| *s == slowstarts[0]))
        .then(|| slowstarts[0]);
    let from = sources(front, back);
    plan.report(
        &from[0],
        &format!("{} {}", front.kind, front.name),
        Outcome::Approximated(format!(
            "VIP {name} {addr}, forwarding = \"nat\": like haproxy, the backends need no change; DSR is faster but needs the VIP on each backend's loopback (README, \"Backends for DSR\")"
        )),
    );
    Ok(Vip {
        name,
        address,
        port: addr.port(),
        // DSR keeps the port; backends elsewhere need NAT, which is also what a proxy's
        // backends are used to (connections from the balancer's address, no VIP on their
        // loopback).
        forwarding: Some("nat"),
        protocol: None,
        check,
        slowstart,
        backends,
        from,
    })
}

/// The check's type from what the section said: `check-ssl` (or `http-check connect ssl`) is
/// HTTPS; no server checked is none; a TCP check unless an option said HTTP.
fn check_kind(check: &mut Check, any_check: bool, https: bool, ssl_hello: bool) {
    // kubeadm's haproxy.cfg: `option httpchk GET /healthz` + `option ssl-hello-chk`: the
    // apiserver speaks only TLS, so the evident intent is an HTTPS GET of the path.
    let hello_http = ssl_hello && check.kind == Some("http");
    if https || (hello_http && any_check) {
        check.kind = Some("https");
        if hello_http && check.tls_ca_file.is_none() && check.tls_verify.is_none() {
            // ssl-hello-chk verified nothing either.
            check.tls_verify = Some(false);
        }
    } else if !any_check {
        check.kind = Some("none");
    } else if check.kind.is_none() {
        check.kind = Some("tcp");
    }
}

/// What a section's server lines say about the VIP as a whole: the check (its interval,
/// rise, fall, port, TLS), whether any server is checked, and their slow starts.
struct Servers {
    check: Check,
    any_check: bool,
    https: bool,
    slowstarts: Vec<std::time::Duration>,
}

/// One `server NAME ADDR[:PORT] [params…]` line (after the section's `default-server`), as a
/// backend of VIP `name`; reported with what did not carry over.
fn server(
    line: &str,
    source: &Source,
    back: &Proxy,
    vip_port: u16,
    name: &str,
    servers: &mut Servers,
    plan: &mut Plan,
) -> Result<Backend, ImportError> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let (host, port) = match w[2].rsplit_once(':') {
        Some((h, p)) => (h, number::<u16>(source, "server port", p)?),
        None => (w[2], vip_port),
    };
    let server_addr: Ipv4Addr = host.parse().map_err(|_| {
        err(
            source,
            format!(
                "server {}: {host:?} is not an IPv4 address (xdp-lb needs addresses, not names)",
                w[1]
            ),
        )
    })?;
    let (server_name, renamed) = backend_name(w[1]);
    let mut b = Backend {
        name: Some(server_name),
        address: server_addr,
        port,
        weight: None,
        state: None,
        slowstart: None,
    };
    let mut notes: Vec<String> = renamed.into_iter().collect();
    let check = &mut servers.check;
    for (k, v) in params(&back.default_server, &w[3..]) {
        let value = || v.ok_or_else(|| err(source, format!("{k} needs a value")));
        match k {
            "check" => servers.any_check = true,
            "check-ssl" => servers.https = true,
            "inter" => check.interval = Some(time(source, "inter", value()?)?),
            "rise" => check.rise = Some(number(source, "rise", value()?)?),
            "fall" => check.fall = Some(number(source, "fall", value()?)?),
            "port" => check.port = Some(number(source, "port", value()?)?),
            "weight" => b.weight = Some(number(source, "weight", value()?)?),
            "slowstart" => {
                let s = time(source, "slowstart", value()?)?;
                b.slowstart = Some(s);
                servers.slowstarts.push(s);
            }
            "disabled" => b.state = Some("disabled"),
            "verify" if value()? == "none" => check.tls_verify = Some(false),
            "ca-file" => check.tls_ca_file = Some(value()?.into()),
            other => notes.extend(server_note(other, &mut b)),
        }
    }
    let outcome = if notes.is_empty() {
        Outcome::Translated(format!("backend {server_addr}:{port} of VIP {name}"))
    } else {
        Outcome::Approximated(format!(
            "backend {server_addr}:{port} of VIP {name}; {}",
            notes.join("; ")
        ))
    };
    plan.report(source, line, outcome);
    Ok(b)
}

/// A server's name as an xdp-lb backend `name` (1 to 64 of A-Z a-z 0-9 - _ .): haproxy allows
/// more, so other characters become `_` and a longer name is cut, with a note saying so.
fn backend_name(server: &str) -> (String, Option<String>) {
    let name: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let note = (name != server).then(|| {
        format!("server name {server:?} becomes {name:?} (a name is 1 to 64 of A-Z a-z 0-9 - _ .)")
    });
    (name, note)
}

/// What a server parameter without an xdp-lb counterpart means for the operator (None: it
/// does not matter here).
fn server_note(k: &str, b: &mut Backend) -> Option<String> {
    Some(match k {
        "backup" => {
            b.weight = Some(0);
            "backup: weight 0 (no new connections; xdp-lb has no backup servers — raise the weight to use it)".into()
        }
        "fastinter" | "downinter" => format!("{k}: xdp-lb checks at one interval (inter)"),
        "send-proxy" | "send-proxy-v2" => format!(
            "{k}: NOT carried over — xdp-lb forwards packets and adds no PROXY header; the backend must stop expecting one"
        ),
        "ssl" => {
            "ssl: haproxy re-encrypted to the server; xdp-lb passes the client's bytes through"
                .into()
        }
        "maxconn" | "maxqueue" | "minconn" => format!("{k}: xdp-lb does not queue connections"),
        _ => return None,
    })
}

/// Where a VIP came from: its frontend's section and its backend's (once for a `listen`).
fn sources(front: &Proxy, back: &Proxy) -> Vec<Source> {
    let mut from = Vec::new();
    for s in [&front.from, &back.from].into_iter().flatten() {
        if !from.contains(s) {
            from.push(s.clone());
        }
    }
    from
}
