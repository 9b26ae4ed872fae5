//! `haproxy.cfg`: `frontend`/`listen` sections in `mode tcp` become VIPs, their backends' `server`
//! lines (with `default-server`) become backends, `option httpchk` & co. become the VIP's check,
//! and a stats listener becomes `agent.listen`. Everything else is reported as ignored, with why.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use super::{Backend, Check, ImportError, Outcome, Plan, Source, Vip, duration, read_file};

const SECTIONS: [&str; 17] = [
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
    "crt-store",
    "traces",
    "log-forward",
];

/// `server`/`default-server` keywords that take a value (the rest are flags).
const VALUED: [&str; 34] = [
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "slowstart",
    "port",
    "addr",
    "maxconn",
    "maxqueue",
    "minconn",
    "verify",
    "ca-file",
    "crt",
    "check-sni",
    "sni",
    "observe",
    "on-error",
    "on-marked-down",
    "on-marked-up",
    "error-limit",
    "resolvers",
    "resolve-prefer",
    "init-addr",
    "cookie",
    "id",
    "agent-port",
    "agent-inter",
    "agent-send",
    "source",
    "proto",
    "alpn",
    "check-alpn",
];

#[derive(Debug, Clone, Default)]
struct Proxy {
    kind: String,
    name: String,
    from: Option<Source>,
    mode: Option<String>,
    binds: Vec<(String, Source)>,
    default_backend: Option<String>,
    use_backends: Vec<(String, bool, Source)>,
    servers: Vec<(String, Source)>,
    default_server: Vec<(String, Source)>,
    check: Check,
    /// `http-check connect ssl` or `check-ssl` on `default-server`.
    check_ssl: bool,
    stats: bool,
}

fn err(source: &Source, message: impl Into<String>) -> ImportError {
    ImportError {
        place: source.clone(),
        message: message.into(),
    }
}

fn number<T: std::str::FromStr>(source: &Source, what: &str, text: &str) -> Result<T, ImportError> {
    text.parse()
        .map_err(|_| err(source, format!("{what}: {text:?} is not a number")))
}

fn time(source: &Source, what: &str, text: &str) -> Result<Duration, ImportError> {
    duration(text, true).ok_or_else(|| {
        err(
            source,
            format!("{what}: {text:?} is not a time (e.g. 2s, 500ms)"),
        )
    })
}

/// The line without its comment, split into words.
fn words(line: &str) -> Vec<&str> {
    let mut end = line.len();
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && !line[..i].ends_with('\\') => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    line[..end].split_whitespace().collect()
}

pub(super) fn read(path: &Path, plan: &mut Plan) -> Result<(), ImportError> {
    let text = read_file(path)?;
    let mut proxies: Vec<Proxy> = Vec::new();
    let mut defaults = Proxy::default();
    let mut current: Option<Proxy> = None;
    for (n, line) in text.lines().enumerate() {
        let source = Source {
            file: path.to_owned(),
            line: n + 1,
        };
        let w = words(line);
        let Some(&keyword) = w.first() else { continue };
        let indented = line.starts_with([' ', '\t']);
        if SECTIONS.contains(&keyword) {
            if let Some(p) = current.take() {
                if p.kind == "defaults" {
                    defaults = p;
                } else {
                    proxies.push(p);
                }
            }
            let name = w.get(1).copied().unwrap_or("").to_owned();
            let mut p = match keyword {
                // A section inherits the last `defaults`.
                "frontend" | "backend" | "listen" => defaults.clone(),
                _ => Proxy::default(),
            };
            p.kind = keyword.to_owned();
            p.name = name;
            p.from = Some(source.clone());
            match keyword {
                "frontend" | "backend" | "listen" => {
                    if p.name.is_empty() {
                        return Err(err(&source, format!("`{keyword}` needs a name")));
                    }
                }
                "defaults" | "global" => {}
                other => plan.report(
                    &source,
                    line,
                    Outcome::Ignored(format!("a `{other}` section has no counterpart in xdp-lb")),
                ),
            }
            current = Some(p);
            continue;
        }
        let Some(p) = current.as_mut() else {
            return Err(err(&source, format!("`{keyword}` outside any section")));
        };
        if !indented && is_unknown_top_level(keyword) {
            return Err(err(
                &source,
                format!(
                    "unknown section `{keyword}` (sections: {})",
                    SECTIONS.join(", ")
                ),
            ));
        }
        directive(p, &w, line, &source, plan)?;
    }
    if let Some(p) = current.take()
        && p.kind != "defaults"
    {
        proxies.push(p);
    }
    resolve(&proxies, plan)
}

/// A line at column 0 that is no section keyword: in a hand-written haproxy.cfg a typo'd
/// section header (directives are indented by convention).
fn is_unknown_top_level(keyword: &str) -> bool {
    !SECTIONS.contains(&keyword)
}

fn directive(
    p: &mut Proxy,
    w: &[&str],
    line: &str,
    source: &Source,
    plan: &mut Plan,
) -> Result<(), ImportError> {
    let ignored = |why: &str| Outcome::Ignored(why.to_owned());
    let outcome = match (p.kind.as_str(), w[0]) {
        ("global", _) => ignored("haproxy's process settings"),
        (_, "mode") => {
            p.mode = w.get(1).map(|m| m.to_string());
            match w.get(1) {
                Some(&"tcp") => Outcome::Translated("xdp-lb balances TCP".into()),
                Some(&"http") => Outcome::Ignored(
                    "mode http: xdp-lb balances TCP connections (layer 4), it does not route HTTP requests".into(),
                ),
                _ => ignored("unknown mode"),
            }
        }
        (_, "bind") => {
            let spec = w.get(1).ok_or_else(|| err(source, "bind needs ADDR:PORT"))?;
            p.binds.push((spec.to_string(), source.clone()));
            if w.len() > 2 {
                Outcome::Approximated(format!(
                    "the address is a VIP; bind options {:?} do not apply to xdp-lb (TLS passes through untouched)",
                    &w[2..]
                ))
            } else {
                Outcome::Translated("the VIP's address and port".into())
            }
        }
        (_, "default_backend") => {
            p.default_backend = w.get(1).map(|s| s.to_string());
            Outcome::Translated("the VIP's backends".into())
        }
        (_, "use_backend") => {
            let name = w.get(1).ok_or_else(|| err(source, "use_backend needs a name"))?;
            let conditional = w.len() > 2;
            p.use_backends
                .push((name.to_string(), conditional, source.clone()));
            if conditional {
                Outcome::Ignored(
                    "content-based rules need a proxy: xdp-lb sends every connection of a VIP to its backends (default_backend)".into(),
                )
            } else {
                Outcome::Translated("the VIP's backends".into())
            }
        }
        (_, "server") => {
            if w.len() < 3 {
                return Err(err(source, "server needs NAME ADDR:PORT"));
            }
            p.servers.push((line.trim().to_owned(), source.clone()));
            return Ok(()); // reported when the VIP is made
        }
        (_, "default-server") => {
            p.default_server.push((line.trim().to_owned(), source.clone()));
            return Ok(());
        }
        (_, "option") => match w.get(1).copied() {
            Some("httpchk") => {
                // option httpchk [<uri>] | [<method> <uri> [<version>]]
                let path = match &w[2..] {
                    [] => "/",
                    [uri] => uri,
                    [_, uri, ..] => uri,
                };
                p.check.kind = Some("http");
                p.check.path = Some(path.to_string());
                Outcome::Translated(format!("an HTTP check of {path} (GET)"))
            }
            Some("ssl-hello-chk") => {
                p.check.kind = Some("tcp");
                Outcome::Approximated(
                    "a TLS hello check: a TCP connect check here; for an apiserver use type = \"https\" with /readyz".into(),
                )
            }
            Some("tcp-check") => {
                p.check.kind = Some("tcp");
                Outcome::Approximated("tcp-check rules: a TCP connect check".into())
            }
            _ => ignored("not a balancing or checking option"),
        },
        (_, "http-check") => match &w[1..] {
            ["expect", "status", code, ..] => {
                p.check.expect_status = Some(number(source, "http-check expect status", code)?);
                Outcome::Translated("http_expect_status".into())
            }
            ["expect", ..] => ignored("only `expect status N` is translated"),
            ["connect", rest @ ..] if rest.contains(&"ssl") => {
                p.check_ssl = true;
                Outcome::Translated("the check speaks TLS (type = \"https\")".into())
            }
            ["send", rest @ ..] => {
                let uri = rest
                    .windows(2)
                    .find(|w| w[0] == "uri")
                    .map(|w| w[1].to_string());
                if p.check.kind.is_none() || p.check.kind == Some("tcp") {
                    p.check.kind = Some("http");
                }
                if let Some(uri) = uri {
                    p.check.path = Some(uri.clone());
                    Outcome::Translated(format!("the check GETs {uri}"))
                } else {
                    ignored("no uri")
                }
            }
            _ => ignored("not translated"),
        },
        (_, "timeout") => match w.get(1).copied() {
            Some("check") => {
                let t = w.get(2).ok_or_else(|| err(source, "timeout check needs a time"))?;
                p.check.timeout = Some(time(source, "timeout check", t)?);
                Outcome::Translated("the check timeout".into())
            }
            _ => ignored("xdp-lb does not proxy: TCP timeouts are the client's and the backend's"),
        },
        (_, "balance") => Outcome::Approximated(
            "xdp-lb balances with Maglev consistent hashing (weights honoured); there is no other algorithm".into(),
        ),
        (_, "stats") => {
            if w.get(1) == Some(&"uri") || w.get(1) == Some(&"enable") {
                p.stats = true;
                Outcome::Translated(
                    "a stats page: agent.listen serves /stats, /metrics and /healthz".into(),
                )
            } else {
                ignored("xdp-lb's /stats page has no settings")
            }
        }
        (_, kw) => Outcome::Ignored(format!("`{kw}` has no counterpart in xdp-lb")),
    };
    plan.report(source, line, outcome);
    Ok(())
}

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

fn resolve(proxies: &[Proxy], plan: &mut Plan) -> Result<(), ImportError> {
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
            if let Some((spec, source)) = front.binds.first() {
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
            }
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
        let target: Option<&Proxy> = if front.kind == "listen" {
            Some(front)
        } else {
            let unconditional = front
                .use_backends
                .iter()
                .find(|(_, conditional, _)| !conditional)
                .map(|(n, _, _)| n.as_str());
            let name = unconditional.or(front.default_backend.as_deref());
            match name {
                Some(n) => Some(*by_name.get(n).ok_or_else(|| {
                    err(
                        &from,
                        format!("frontend {}: no backend named {n:?}", front.name),
                    )
                })?),
                None => None,
            }
        };
        let Some(back) = target else {
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
        let mut addresses = Vec::new();
        for (spec, source) in &front.binds {
            addresses.extend(bind_address(spec, source, plan)?);
        }
        if front.binds.is_empty() {
            return Err(err(
                &from,
                format!("{} {} has no bind line", front.kind, front.name),
            ));
        }
        if addresses.is_empty() {
            plan.report(
                &from,
                &format!("{} {}", front.kind, front.name),
                Outcome::Ignored(
                    "it listens on loopback only (a per-node localhost balancer): local clients never pass through XDP, so there is no VIP to make".into(),
                ),
            );
            continue;
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
    let mut check = back.check.clone();
    let mut any_check = false;
    let mut https = back.check_ssl;
    let mut backends = Vec::new();
    let mut slowstarts = Vec::new();
    for (line, source) in &back.servers {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (host, port) = match w[2].rsplit_once(':') {
            Some((h, p)) => (h, number::<u16>(source, "server port", p)?),
            None => (w[2], addr.port()),
        };
        let server_addr: Ipv4Addr = host.parse().map_err(|_| {
            err(source, format!("server {}: {host:?} is not an IPv4 address (xdp-lb needs addresses, not names)", w[1]))
        })?;
        let mut b = Backend {
            address: server_addr,
            port,
            weight: None,
            state: None,
            slowstart: None,
        };
        let mut notes: Vec<String> = Vec::new();
        for (k, v) in params(&back.default_server, &w[3..]) {
            let value = || v.ok_or_else(|| err(source, format!("{k} needs a value")));
            match k {
                "check" => any_check = true,
                "check-ssl" => https = true,
                "inter" => check.interval = Some(time(source, "inter", value()?)?),
                "rise" => check.rise = Some(number(source, "rise", value()?)?),
                "fall" => check.fall = Some(number(source, "fall", value()?)?),
                "port" => check.port = Some(number(source, "port", value()?)?),
                "weight" => b.weight = Some(number(source, "weight", value()?)?),
                "slowstart" => {
                    let s = time(source, "slowstart", value()?)?;
                    b.slowstart = Some(s);
                    slowstarts.push(s);
                }
                "disabled" => b.state = Some("disabled"),
                "verify" if value()? == "none" => check.tls_verify = Some(false),
                "ca-file" => check.tls_ca_file = Some(value()?.into()),
                "backup" => {
                    b.weight = Some(0);
                    notes.push("backup: weight 0 (no new connections; xdp-lb has no backup servers — raise the weight to use it)".into());
                }
                "fastinter" | "downinter" => {
                    notes.push(format!("{k}: xdp-lb checks at one interval (inter)"))
                }
                "send-proxy" | "send-proxy-v2" => notes.push(format!(
                    "{k}: NOT carried over — xdp-lb forwards packets and adds no PROXY header; the backend must stop expecting one"
                )),
                "ssl" => notes.push("ssl: haproxy re-encrypted to the server; xdp-lb passes the client's bytes through".into()),
                "maxconn" | "maxqueue" | "minconn" => {
                    notes.push(format!("{k}: xdp-lb does not queue connections"))
                }
                _ => {}
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
        backends.push(b);
    }
    for (line, source) in &back.default_server {
        plan.report(
            source,
            line,
            Outcome::Translated("applied to each server line".into()),
        );
    }
    if https {
        check.kind = Some("https");
    } else if !any_check {
        check.kind = Some("none");
    } else if check.kind.is_none() {
        check.kind = Some("tcp");
    }
    if let Some(from) = &back.from {
        check.fit_timeout(from, plan);
    }
    let slowstart = (!slowstarts.is_empty() && slowstarts.iter().all(|s| *s == slowstarts[0]))
        .then(|| slowstarts[0]);
    // DSR keeps the port; backends elsewhere need NAT, which is also what a proxy's backends
    // are used to (connections from the balancer's address, no VIP on their loopback).
    let forwarding = "nat";
    let from: Vec<Source> = [front.from.clone(), back.from.clone()]
        .into_iter()
        .flatten()
        .fold(Vec::new(), |mut v, s| {
            if !v.contains(&s) {
                v.push(s);
            }
            v
        });
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
        forwarding: Some(forwarding),
        check,
        slowstart,
        backends,
        from,
    })
}
