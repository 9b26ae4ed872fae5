//! `keepalived.conf`: `vrrp_instance` blocks become `[[vrrp]]` sections (a `track_script`
//! becomes `track_dataplane`), `virtual_server` blocks with their `real_server`s and checks
//! become VIPs. The file is a tree of `keyword args… { … }` blocks; comments start with `#` or
//! `!`.

use std::{net::Ipv4Addr, path::Path, time::Duration};

mod parse;
mod virtual_server;

use self::parse::{Node, err, parse};
use super::{ImportError, Outcome, Plan, Vrrp, duration, read_file};

fn number<T: std::str::FromStr>(node: &Node, i: usize) -> Result<T, ImportError> {
    let text = node
        .arg(i)
        .ok_or_else(|| err(&node.source, format!("{} needs a value", node.keyword())))?;
    text.parse().map_err(|_| {
        err(
            &node.source,
            format!("{}: {text:?} is not a number", node.keyword()),
        )
    })
}

fn seconds(node: &Node) -> Result<Duration, ImportError> {
    let text = node
        .arg(0)
        .ok_or_else(|| err(&node.source, format!("{} needs a value", node.keyword())))?;
    duration(text, false).ok_or_else(|| {
        err(
            &node.source,
            format!("{}: {text:?} is not a number of seconds", node.keyword()),
        )
    })
}

fn address(node: &Node, text: &str) -> Result<Ipv4Addr, ImportError> {
    text.parse()
        .map_err(|_| err(&node.source, format!("{text:?} is not an IPv4 address")))
}

/// A VRRP address: IPv4 or IPv6 (an instance's family; check-config refuses a mix).
fn vrrp_address(node: &Node, text: &str) -> Result<std::net::IpAddr, ImportError> {
    text.parse().map_err(|_| {
        err(
            &node.source,
            format!("{text:?} is not an IPv4 or IPv6 address"),
        )
    })
}

pub(super) fn read(path: &Path, plan: &mut Plan) -> Result<(), ImportError> {
    let text = read_file(path)?;
    let nodes = parse(path, &text)?;
    let mut version: Option<u8> = None;
    for node in &nodes {
        if node.keyword() == "global_defs" {
            for d in node.children() {
                if d.keyword() == "vrrp_version" {
                    version = Some(number(d, 0)?);
                    plan.report(
                        &d.source,
                        &d.text(),
                        Outcome::Translated("[[vrrp]] version".into()),
                    );
                } else {
                    plan.report(
                        &d.source,
                        &d.text(),
                        Outcome::Ignored("keepalived's process settings".into()),
                    );
                }
            }
            continue;
        }
        match node.keyword() {
            "vrrp_instance" => instance(node, version, plan)?,
            "vrrp_script" => plan.report(
                &node.source,
                &node.text(),
                Outcome::Approximated(
                    "xdp-lb tracks its own data plane (track_dataplane: program attached, every VIP with a usable backend) instead of running a script".into(),
                ),
            ),
            "virtual_server" => virtual_server::virtual_server(node, plan)?,
            _ => plan.report(
                &node.source,
                &node.text(),
                Outcome::Ignored(format!("`{}` has no counterpart in xdp-lb", node.keyword())),
            ),
        }
    }
    // The version applies to every instance, whatever the order in the file.
    if let Some(v) = version {
        for i in &mut plan.vrrp {
            i.version = Some(v);
        }
    }
    Ok(())
}

fn instance(node: &Node, version: Option<u8>, plan: &mut Plan) -> Result<(), ImportError> {
    let name = node
        .arg(0)
        .ok_or_else(|| err(&node.source, "vrrp_instance needs a name"))?
        .to_owned();
    let mut v = Vrrp {
        name: name.clone(),
        interface: String::new(),
        vrid: 0,
        priority: 100, // keepalived's default
        version,
        advert_interval: None,
        preempt: None,
        preempt_delay: None,
        addresses: Vec::new(),
        unicast_peers: Vec::new(),
        notify: None,
        track_dataplane: false,
        from: node.source.clone(),
    };
    for d in node.children() {
        if let Some(outcome) = instance_directive(d, &mut v, plan)? {
            plan.report(&d.source, &d.text(), outcome);
        }
    }
    let missing = if v.interface.is_empty() {
        Some("interface")
    } else if v.vrid == 0 {
        Some("virtual_router_id")
    } else if v.addresses.is_empty() {
        Some("virtual_ipaddress")
    } else {
        None
    };
    if let Some(what) = missing {
        return Err(err(
            &node.source,
            format!("vrrp_instance {name}: no {what}"),
        ));
    }
    plan.report(
        &node.source,
        &format!("vrrp_instance {name}"),
        Outcome::Translated("[[vrrp]]".into()),
    );
    plan.vrrp.push(v);
    Ok(())
}

/// One directive of a `vrrp_instance`; None when its parts were reported one by one.
fn instance_directive(
    d: &Node,
    v: &mut Vrrp,
    plan: &mut Plan,
) -> Result<Option<Outcome>, ImportError> {
    let outcome = match d.keyword() {
        "interface" => {
            v.interface = d
                .arg(0)
                .ok_or_else(|| err(&d.source, "interface needs a name"))?
                .to_owned();
            if plan.interface.is_none() {
                plan.interface = Some((v.interface.clone(), d.source.clone()));
            }
            Outcome::Translated("[[vrrp]] interface (and agent.interface)".into())
        }
        "virtual_router_id" => {
            v.vrid = number(d, 0)?;
            Outcome::Translated("vrid".into())
        }
        "priority" => {
            v.priority = number(d, 0)?;
            Outcome::Translated("priority".into())
        }
        "advert_int" => {
            v.advert_interval = Some(seconds(d)?);
            Outcome::Translated("advert_interval".into())
        }
        "nopreempt" => {
            v.preempt = Some(false);
            Outcome::Translated("preempt = false".into())
        }
        "preempt_delay" => {
            v.preempt_delay = Some(seconds(d)?);
            Outcome::Translated("preempt_delay".into())
        }
        "state" => Outcome::Approximated(
            "xdp-lb starts as backup and elects by priority (a MASTER state with the highest priority wins the same way)".into(),
        ),
        "virtual_ipaddress" => {
        virtual_ipaddress(d, v, plan)?;
        return Ok(None);
    }
    "unicast_peer" => {
            for p in d.children() {
                v.unicast_peers.push(vrrp_address(p, p.keyword())?);
                plan.report(&p.source, &p.text(), Outcome::Translated("unicast_peers".into()));
            }
            return Ok(None);
        }
        "unicast_src_ip" => Outcome::Approximated(
            "xdp-lb sends unicast adverts from the route's preferred source address".into(),
        ),
        "authentication" => Outcome::Ignored(
            "VRRPv3 has no authentication (RFC 5798) and RFC 3768 deprecates v2's: remove it from the keepalived peers too, or xdp-lb ignores their adverts (counted as rejected: auth)".into(),
        ),
        "track_script" => {
            v.track_dataplane = true;
            let scripts: Vec<String> = d.children().iter().map(parse::Node::text).collect();
            Outcome::Approximated(format!(
                "track_dataplane = true replaces the script(s) {scripts:?}: the VIP leaves a node whose program is detached or has a VIP without a usable backend"
            ))
        }
        kw @ ("notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop") => {
            notify(kw, d, v)
        }
        kw => Outcome::Ignored(format!("`{kw}` is not translated")),
    };
    Ok(Some(outcome))
}

/// `virtual_ipaddress { ADDRESS[/LEN] [dev …] … }`: each address reported on its own line.
fn virtual_ipaddress(d: &Node, v: &mut Vrrp, plan: &mut Plan) -> Result<(), ImportError> {
    for a in d.children() {
        let (addr, len) = match a.keyword().split_once('/') {
            Some((addr, len)) => (
                addr,
                len.parse::<u8>()
                    .map_err(|_| err(&a.source, format!("{:?}: bad prefix length", a.keyword())))?,
            ),
            None => (
                a.keyword(),
                if a.keyword().contains(':') { 128 } else { 32 },
            ),
        };
        v.addresses.push((vrrp_address(a, addr)?, len));
        let extra = a.words.len() > 1;
        plan.report(
            &a.source,
            &a.text(),
            if extra {
                Outcome::Approximated(format!(
                    "virtual address {addr}/{len} on the instance's interface ({:?} not carried over)",
                    &a.words[1..]
                ))
            } else {
                Outcome::Translated(format!("virtual address {addr}/{len}"))
            },
        );
    }
    Ok(())
}

/// `notify` (called with STATE VRID NAME, like xdp-lb's hook), or one of the per-state hooks,
/// which xdp-lb's single hook stands in for.
fn notify(kw: &str, d: &Node, v: &mut Vrrp) -> Outcome {
    if kw == "notify" {
        v.notify = d.arg(0).map(Into::into);
        return Outcome::Translated(
            "notify (called with STATE VRID NAME, like keepalived's)".into(),
        );
    }
    if v.notify.is_some() {
        return Outcome::Ignored(format!("{kw}: xdp-lb has one notify hook (already set)"));
    }
    v.notify = d.arg(0).map(Into::into);
    Outcome::Approximated(format!(
        "{kw}: xdp-lb has one notify hook, called on every transition with the state as its first argument; the script must check it"
    ))
}
