//! keepalived's LVS side: a `virtual_server` with its `real_server`s and their checks becomes a
//! VIP (`lb_kind DR` → DSR, `NAT` → NAT, `TUN` → IPIP; `protocol TCP` or `UDP`).

use super::{
    address, number,
    parse::{Node, err},
    seconds,
};
use crate::import::{Backend, Check, ImportError, Outcome, Plan, Vip};

pub(super) fn virtual_server(node: &Node, plan: &mut Plan) -> Result<(), ImportError> {
    let (Some(addr), Some(_)) = (node.arg(0), node.arg(1)) else {
        return Err(err(
            &node.source,
            "virtual_server needs an address and a port",
        ));
    };
    let address = address(node, addr)?;
    let port: u16 = number(node, 1)?;
    let mut vip = Vip {
        name: format!("vs-{addr}-{port}").replace('.', "-"),
        address,
        port,
        forwarding: None,
        protocol: None,
        check: Check::default(),
        slowstart: None,
        backends: Vec::new(),
        from: vec![node.source.clone()],
    };
    for d in node.children() {
        if let Some(outcome) = vs_directive(d, &mut vip, plan)? {
            plan.report(&d.source, &d.text(), outcome);
        }
    }
    if vip.backends.is_empty() {
        return Err(err(
            &node.source,
            format!("virtual_server {addr} {port}: no real_server"),
        ));
    }
    if vip.check.kind.is_none() {
        vip.check.kind = Some("none");
    }
    udp_check_port(&mut vip, node, plan);
    if vip.protocol == Some("udp") {
        // The same address and port may also be a TCP virtual_server (DNS): names stay unique.
        vip.name.push_str("-udp");
    }
    vip.check.fit_timeout(&node.source, plan);
    plan.report(
        &node.source,
        &format!("virtual_server {addr} {port}"),
        Outcome::Translated(format!("VIP {}", vip.name)),
    );
    plan.vips.push(vip);
    Ok(())
}

fn real_server(node: &Node, vip: &mut Vip, plan: &mut Plan) -> Result<(), ImportError> {
    let addr = node
        .arg(0)
        .ok_or_else(|| err(&node.source, "real_server needs an address and a port"))?;
    let address = address(node, addr)?;
    let port: u16 = number(node, 1)?;
    if matches!(vip.forwarding, Some("dsr" | "ipip")) && port != vip.port {
        return Err(err(
            &node.source,
            format!(
                "real_server {addr} {port}: DR keeps the port ({}); use lb_kind NAT for another port",
                vip.port
            ),
        ));
    }
    let mut b = Backend {
        name: None,
        address,
        port,
        weight: None,
        state: None,
        slowstart: None,
    };
    for d in node.children() {
        let outcome = match d.keyword() {
            "weight" => {
                b.weight = Some(number(d, 0)?);
                Outcome::Translated("weight".into())
            }
            "DNS_CHECK" => dns_check(d, vip, plan)?,
            kw @ ("TCP_CHECK" | "HTTP_GET" | "SSL_GET") => connect_check(kw, d, vip, plan)?,
            kw => Outcome::Ignored(format!("`{kw}` is not translated")),
        };
        plan.report(&d.source, &d.text(), outcome);
    }
    plan.report(
        &node.source,
        &node.text(),
        Outcome::Translated(format!("backend {address}:{port}")),
    );
    vip.backends.push(b);
    Ok(())
}

/// The options every keepalived checker shares (connect_timeout, connect_port, retry), or None
/// for a checker's own keyword.
fn connect_option(c: &Node, check: &mut Check) -> Result<Option<Outcome>, ImportError> {
    Ok(Some(match c.keyword() {
        "connect_timeout" => {
            check.timeout = Some(seconds(c)?);
            Outcome::Translated("check timeout".into())
        }
        "connect_port" => {
            check.port = Some(number(c, 0)?);
            Outcome::Translated("check port".into())
        }
        "retry" | "nb_get_retry" => {
            check.fall = Some(number::<u32>(c, 0)?.max(1));
            Outcome::Translated("fall".into())
        }
        "delay_before_retry" => {
            Outcome::Approximated("xdp-lb retries at the check interval".into())
        }
        _ => return Ok(None),
    }))
}

/// One directive of a `virtual_server`; None when it was reported in parts (`real_server`).
fn vs_directive(d: &Node, vip: &mut Vip, plan: &mut Plan) -> Result<Option<Outcome>, ImportError> {
    let outcome = match d.keyword() {
        "delay_loop" => {
            vip.check.interval = Some(seconds(d)?);
            Outcome::Translated("check interval".into())
        }
        "lb_kind" => match d.arg(0) {
            Some("DR") => {
                vip.forwarding = Some("dsr");
                Outcome::Translated("forwarding = \"dsr\"".into())
            }
            Some("NAT") => {
                vip.forwarding = Some("nat");
                Outcome::Translated("forwarding = \"nat\"".into())
            }
            Some("TUN") => {
                // IPVS's TUN is IPIP (IPv6: IP6IP6) to the real server, which decapsulates it
                // and answers directly: xdp-lb's ipip, with the VIP's port kept as IPVS keeps it.
                vip.forwarding = Some("ipip");
                Outcome::Translated(
                    "forwarding = \"ipip\" (run `xdp-lb decap` on each real server, or keep its ipip/ip6tnl device; README \"Tunnel forwarding\")".into(),
                )
            }
            other => {
                return Err(err(&d.source, format!("lb_kind {other:?}: xdp-lb forwards by DR (dsr), NAT (nat) or TUN (ipip)")));
            }
        },
        "lb_algo" => Outcome::Approximated(
            "xdp-lb balances with Maglev consistent hashing (weights honoured)".into(),
        ),
        "protocol" => match d.arg(0) {
            Some("TCP") => Outcome::Translated("TCP".into()),
            Some("UDP") => {
                vip.protocol = Some("udp");
                Outcome::Translated("protocol = \"udp\"".into())
            }
            other => return Err(err(&d.source, format!("protocol {other:?}: xdp-lb balances TCP and UDP"))),
        },
        "persistence_timeout" => Outcome::Approximated(
            "no persistence table: Maglev sends a client's connections where its 5-tuple hashes; established connections keep their backend".into(),
        ),
        "real_server" => {
            real_server(d, vip, plan)?;
            return Ok(None);
        }
        kw => Outcome::Ignored(format!("`{kw}` is not translated")),
    };
    Ok(Some(outcome))
}

/// keepalived's TCP_CHECK/HTTP_GET on a UDP service connects to the real server's port over
/// TCP; xdp-lb wants that port named (its config refuses a UDP VIP whose TCP check would
/// probe the UDP port by accident).
fn udp_check_port(vip: &mut Vip, node: &Node, plan: &mut Plan) {
    if vip.protocol == Some("udp")
        && matches!(vip.check.kind, Some("tcp" | "http" | "https"))
        && vip.check.port.is_none()
    {
        let port = vip.backends[0].port;
        vip.check.port = Some(port);
        let outcome = if vip.backends.iter().all(|b| b.port == port) {
            Outcome::Translated(format!(
                "check port = {port} (TCP, as keepalived probes it)"
            ))
        } else {
            Outcome::Approximated(format!(
                "the real servers listen on different ports; the check probes TCP port {port} on each"
            ))
        };
        plan.report(&node.source, "protocol UDP with a TCP check", outcome);
    }
}

/// `DNS_CHECK { … }`: the VIP's check becomes a DNS query.
fn dns_check(d: &Node, vip: &mut Vip, plan: &mut Plan) -> Result<Outcome, ImportError> {
    vip.check.kind = Some("dns");
    for c in d.children() {
        if let Some(o) = connect_option(c, &mut vip.check)? {
            plan.report(&c.source, &c.text(), o);
            continue;
        }
        let o = match c.keyword() {
            "name" => {
                vip.check.dns_name = c.arg(0).map(Into::into);
                Outcome::Translated("dns_name".into())
            }
            "type" => {
                vip.check.dns_type = c.arg(0).map(Into::into);
                Outcome::Translated("dns_type".into())
            }
            kw => Outcome::Ignored(format!("`{kw}` is not translated")),
        };
        plan.report(&c.source, &c.text(), o);
    }
    // keepalived's defaults (check_dns.h): the root's SOA. Ours is A, so the
    // query is spelled out.
    vip.check.dns_name.get_or_insert_with(|| ".".into());
    vip.check.dns_type.get_or_insert_with(|| "SOA".into());
    Ok(Outcome::Translated(format!(
        "the VIP's check: type = \"dns\", {} {}",
        vip.check.dns_type.as_deref().unwrap_or_default(),
        vip.check.dns_name.as_deref().unwrap_or_default()
    )))
}

/// `TCP_CHECK`, `HTTP_GET` or `SSL_GET { … }`: the VIP's check connects (and asks for a URL).
fn connect_check(
    kw: &str,
    d: &Node,
    vip: &mut Vip,
    plan: &mut Plan,
) -> Result<Outcome, ImportError> {
    vip.check.kind = Some(match kw {
        "TCP_CHECK" => "tcp",
        "HTTP_GET" => "http",
        _ => {
            // keepalived's SSL_GET does not verify the certificate.
            vip.check.tls_verify = Some(false);
            "https"
        }
    });
    for c in d.children() {
        if let Some(o) = connect_option(c, &mut vip.check)? {
            plan.report(&c.source, &c.text(), o);
            continue;
        }
        let o = match c.keyword() {
            "url" => {
                url(c, vip, plan)?;
                continue;
            }
            kw => Outcome::Ignored(format!("`{kw}` is not translated")),
        };
        plan.report(&c.source, &c.text(), o);
    }
    Ok(Outcome::Translated(format!(
        "the VIP's check: type = {:?}",
        vip.check.kind.unwrap_or("tcp")
    )))
}

/// `url { path …; status_code … }` of an HTTP or SSL check.
fn url(c: &Node, vip: &mut Vip, plan: &mut Plan) -> Result<(), ImportError> {
    for u in c.children() {
        match u.keyword() {
            "path" => vip.check.path = u.arg(0).map(Into::into),
            "status_code" => vip.check.expect_status = Some(number(u, 0)?),
            _ => {}
        }
        plan.report(
            &u.source,
            &u.text(),
            match u.keyword() {
                "path" => Outcome::Translated("http_path".into()),
                "status_code" => Outcome::Translated("http_expect_status".into()),
                _ => Outcome::Ignored("only path and status_code are translated".into()),
            },
        );
    }
    Ok(())
}
