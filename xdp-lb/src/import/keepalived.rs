//! `keepalived.conf`: `vrrp_instance` blocks become `[[vrrp]]` sections (a `track_script`
//! becomes `track_dataplane`), `virtual_server` blocks with their `real_server`s and checks
//! become VIPs. The file is a tree of `keyword args… { … }` blocks; comments start with `#` or
//! `!`.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use super::{Backend, Check, ImportError, Outcome, Plan, Source, Vip, Vrrp, duration, read_file};

/// One statement and, for a block, what is inside it.
#[derive(Debug)]
struct Node {
    words: Vec<String>,
    source: Source,
    children: Option<Vec<Node>>,
}

impl Node {
    fn keyword(&self) -> &str {
        &self.words[0]
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(String::as_str)
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
}

fn err(source: &Source, message: impl Into<String>) -> ImportError {
    ImportError {
        place: source.clone(),
        message: message.into(),
    }
}

/// Tokens per line: words, quoted strings, and the braces (which may touch words).
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '#' | '!' if !quoted => break,
            '{' | '}' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse(path: &Path, text: &str) -> Result<Vec<Node>, ImportError> {
    // A stack of open blocks; the bottom one is the file.
    let mut stack: Vec<(Vec<Node>, Option<Source>)> = vec![(Vec::new(), None)];
    for (n, line) in text.lines().enumerate() {
        let source = Source {
            file: path.to_owned(),
            line: n + 1,
        };
        let mut words: Vec<String> = Vec::new();
        for t in tokens(line) {
            match t.as_str() {
                "{" => {
                    if words.is_empty() {
                        // `{` on a line of its own opens the previous statement's block.
                        let last = stack
                            .last_mut()
                            .and_then(|(nodes, _)| nodes.pop())
                            .ok_or_else(|| err(&source, "`{` without a keyword before it"))?;
                        words = last.words;
                    }
                    stack.push((Vec::new(), Some(source.clone())));
                    // Remember the statement that owns the block.
                    stack.last_mut().expect("just pushed").0.push(Node {
                        words: std::mem::take(&mut words),
                        source: source.clone(),
                        children: None,
                    });
                }
                "}" => {
                    if !words.is_empty() {
                        let top = &mut stack.last_mut().expect("the file").0;
                        top.push(Node {
                            words: std::mem::take(&mut words),
                            source: source.clone(),
                            children: None,
                        });
                    }
                    if stack.len() == 1 {
                        return Err(err(&source, "`}` without a block to close"));
                    }
                    let (mut nodes, _) = stack.pop().expect("checked");
                    let mut owner = nodes.remove(0);
                    owner.children = Some(nodes);
                    stack.last_mut().expect("the file").0.push(owner);
                }
                _ => words.push(t),
            }
        }
        if !words.is_empty() {
            stack.last_mut().expect("the file").0.push(Node {
                words,
                source,
                children: None,
            });
        }
    }
    if stack.len() > 1 {
        let opened = stack.last().and_then(|(_, s)| s.clone()).expect("a block");
        return Err(err(&opened, "this block is never closed (missing `}`)"));
    }
    Ok(stack.pop().expect("the file").0)
}

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
            "virtual_server" => virtual_server(node, plan)?,
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
                for a in d.children() {
                    let (addr, len) = match a.keyword().split_once('/') {
                        Some((addr, len)) => (addr, len.parse::<u8>().map_err(|_| err(&a.source, format!("{:?}: bad prefix length", a.keyword())))?),
                        None => (a.keyword(), 32),
                    };
                    v.addresses.push((address(a, addr)?, len));
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
                continue;
            }
            "unicast_peer" => {
                for p in d.children() {
                    v.unicast_peers.push(address(p, p.keyword())?);
                    plan.report(&p.source, &p.text(), Outcome::Translated("unicast_peers".into()));
                }
                continue;
            }
            "unicast_src_ip" => Outcome::Approximated(
                "xdp-lb sends unicast adverts from the route's preferred source address".into(),
            ),
            "authentication" => Outcome::Ignored(
                "VRRPv3 has no authentication (RFC 5798) and RFC 3768 deprecates v2's: remove it from the keepalived peers too, or xdp-lb ignores their adverts (counted as rejected: auth)".into(),
            ),
            "track_script" => {
                v.track_dataplane = true;
                let scripts: Vec<String> = d.children().iter().map(|c| c.text()).collect();
                Outcome::Approximated(format!(
                    "track_dataplane = true replaces the script(s) {scripts:?}: the VIP leaves a node whose program is detached or has a VIP without a usable backend"
                ))
            }
            "notify" => {
                v.notify = d.arg(0).map(Into::into);
                Outcome::Translated("notify (called with STATE VRID NAME, like keepalived's)".into())
            }
            kw @ ("notify_master" | "notify_backup" | "notify_fault" | "notify_stop") => {
                if v.notify.is_none() {
                    v.notify = d.arg(0).map(Into::into);
                    Outcome::Approximated(format!(
                        "{kw}: xdp-lb has one notify hook, called on every transition with the state as its first argument; the script must check it"
                    ))
                } else {
                    Outcome::Ignored(format!("{kw}: xdp-lb has one notify hook (already set)"))
                }
            }
            kw => Outcome::Ignored(format!("`{kw}` is not translated")),
        };
        plan.report(&d.source, &d.text(), outcome);
    }
    if v.interface.is_empty() {
        return Err(err(
            &node.source,
            format!("vrrp_instance {name}: no interface"),
        ));
    }
    if v.vrid == 0 {
        return Err(err(
            &node.source,
            format!("vrrp_instance {name}: no virtual_router_id"),
        ));
    }
    if v.addresses.is_empty() {
        return Err(err(
            &node.source,
            format!("vrrp_instance {name}: no virtual_ipaddress"),
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

fn virtual_server(node: &Node, plan: &mut Plan) -> Result<(), ImportError> {
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
        check: Check::default(),
        slowstart: None,
        backends: Vec::new(),
        from: vec![node.source.clone()],
    };
    for d in node.children() {
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
                other => {
                    return Err(err(&d.source, format!("lb_kind {other:?}: xdp-lb forwards by DR (dsr) or NAT, not by tunnel")));
                }
            },
            "lb_algo" => Outcome::Approximated(
                "xdp-lb balances with Maglev consistent hashing (weights honoured)".into(),
            ),
            "protocol" => match d.arg(0) {
                Some("TCP") => Outcome::Translated("TCP".into()),
                other => return Err(err(&d.source, format!("protocol {other:?}: xdp-lb balances TCP"))),
            },
            "persistence_timeout" => Outcome::Approximated(
                "no persistence table: Maglev sends a client's connections where its 5-tuple hashes; established connections keep their backend".into(),
            ),
            "real_server" => {
                real_server(d, &mut vip, plan)?;
                continue;
            }
            kw => Outcome::Ignored(format!("`{kw}` is not translated")),
        };
        plan.report(&d.source, &d.text(), outcome);
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
    if vip.forwarding == Some("dsr") && port != vip.port {
        return Err(err(
            &node.source,
            format!(
                "real_server {addr} {port}: DR keeps the port ({}); use lb_kind NAT for another port",
                vip.port
            ),
        ));
    }
    let mut b = Backend {
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
            kw @ ("TCP_CHECK" | "HTTP_GET" | "SSL_GET") => {
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
                    let o = match c.keyword() {
                        "connect_timeout" => {
                            vip.check.timeout = Some(seconds(c)?);
                            Outcome::Translated("check timeout".into())
                        }
                        "connect_port" => {
                            vip.check.port = Some(number(c, 0)?);
                            Outcome::Translated("check port".into())
                        }
                        "retry" | "nb_get_retry" => {
                            vip.check.fall = Some(number::<u32>(c, 0)?.max(1));
                            Outcome::Translated("fall".into())
                        }
                        "delay_before_retry" => {
                            Outcome::Approximated("xdp-lb retries at the check interval".into())
                        }
                        "url" => {
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
                                        "status_code" => {
                                            Outcome::Translated("http_expect_status".into())
                                        }
                                        _ => Outcome::Ignored(
                                            "only path and status_code are translated".into(),
                                        ),
                                    },
                                );
                            }
                            continue;
                        }
                        kw => Outcome::Ignored(format!("`{kw}` is not translated")),
                    };
                    plan.report(&c.source, &c.text(), o);
                }
                Outcome::Translated(format!(
                    "the VIP's check: type = {:?}",
                    vip.check.kind.unwrap_or("tcp")
                ))
            }
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
