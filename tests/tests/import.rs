//! `xdp-lb import`: a corpus of haproxy.cfg and keepalived.conf files in the shapes people
//! publish for kube-apiserver HA, each imported and checked; malformed inputs, each named with
//! its line; and one import run end to end in namespaces.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use xdp_lb::config::{self, CheckType, Config, Forwarding, Protocol};
use xdp_lb_tests::{
    Agent, DsrTopology, TcpService, http_get_many, in_netns, require_root,
    topology::{VIP, xdp_lb_cli},
};

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/import")
        .join(name)
}

fn out_dir() -> PathBuf {
    let dir = xdp_lb_tests::topology::target_dir()
        .join("testbed")
        .join(format!("import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Imports, writes with `-o`, checks the file with `check-config`, and parses it.
fn import(haproxy: Option<&str>, keepalived: Option<&str>) -> (Config, String) {
    let out = out_dir().join(format!(
        "{}.toml",
        haproxy.or(keepalived).unwrap().replace('.', "-")
    ));
    let mut args = vec!["import".to_owned()];
    if let Some(h) = haproxy {
        args.extend(["--haproxy".into(), corpus(h).display().to_string()]);
    }
    if let Some(k) = keepalived {
        args.extend(["--keepalived".into(), corpus(k).display().to_string()]);
    }
    args.extend(["-o".into(), out.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, report) = xdp_lb_cli(&args).unwrap();
    assert_eq!(code, 0, "{report}");
    let summary = report.lines().rev().nth(1).unwrap_or("").to_owned();
    println!("{haproxy:?} {keepalived:?}: {summary}");
    let (code, _, err) = xdp_lb_cli(&["check-config", out.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    (config::parse(&out, &text).unwrap(), report)
}

#[test]
fn the_corpus_imports_and_checks() {
    // kubeadm's guide: keepalived (VRRP + a check script) and haproxy (https /healthz).
    let (c, report) = import(Some("kubeadm-haproxy.cfg"), Some("kubeadm-keepalived.conf"));
    let v = &c.vips[0];
    assert_eq!(
        (v.address.to_string(), v.port),
        ("192.168.1.100".into(), 8443)
    );
    assert_eq!(v.forwarding, Forwarding::Nat);
    assert_eq!(v.backends.len(), 3);
    assert!(v.backends.iter().all(|b| b.port == 6443));
    let names: Vec<&str> = v.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["cp1", "cp2", "cp3"],
        "haproxy's server names carry over"
    );
    assert_eq!(v.health_check.kind, CheckType::Https);
    assert_eq!(v.health_check.http_path, "/healthz");
    assert!(!v.health_check.tls.as_ref().unwrap().verify, "verify none");
    let r = &c.vrrp[0];
    assert_eq!((r.vrid, r.priority, r.track_dataplane), (51, 101, true));
    assert_eq!(c.agent.interface, "eth0");
    assert!(report.contains("kubeadm-keepalived.conf:19: authentication: ignored"));
    assert!(report.contains("check_apiserver"), "the script is named");
    assert!(report.contains("kubeadm-haproxy.cfg:50: balance     roundrobin: APPROXIMATED"));

    // kubespray's external balancer: default-server, check-ssl, slowstart; a localhost
    // frontend and an HTTP monitor frontend are not VIPs.
    let (c, report) = import(Some("kubespray-haproxy.cfg"), None);
    assert_eq!(c.vips.len(), 1, "{report}");
    let v = &c.vips[0];
    assert_eq!(v.slowstart, Duration::from_secs(60));
    assert_eq!(
        (
            v.health_check.interval,
            v.health_check.rise,
            v.health_check.fall
        ),
        (Duration::from_secs(15), 2, 2)
    );
    assert!(v.backends.iter().all(|b| b.weight == 100));
    assert!(report.contains("frontend healthz: ignored: mode http"));
    assert!(report.contains("frontend kube_api_localhost: ignored: it listens on loopback only"));
    assert!(report.contains("downinter: xdp-lb checks at one interval"));

    // keepalived as LVS-DR director: virtual_server → a DSR VIP with SSL_GET /readyz; VRRPv3
    // by unicast, keepalived's checksum.
    let (c, _) = import(None, Some("keepalived-dr.conf"));
    let v = &c.vips[0];
    assert_eq!(v.forwarding, Forwarding::Dsr);
    assert!(
        v.backends.iter().all(|b| b.name == b.address.to_string()),
        "a real_server is named by its address"
    );
    assert_eq!(v.health_check.kind, CheckType::Https);
    assert_eq!(
        (v.health_check.http_path.as_str(), v.health_check.fall),
        ("/readyz", 3)
    );
    let r = &c.vrrp[0];
    assert_eq!(r.version, config::Version::V3);
    assert_eq!(r.checksum, config::ChecksumMode::PseudoHeader);
    assert!(!r.preempt);
    assert_eq!(
        r.unicast_peers,
        ["10.0.0.3".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(c.agent.interface, "ens192");

    // keepalived in front of resolvers: UDP and TCP on one address and port; DNS_CHECK; a
    // TCP_CHECK on a UDP service probes the real servers' port over TCP.
    let (c, report) = import(None, Some("keepalived-dns.conf"));
    let (udp, tcp, syslog) = (&c.vips[0], &c.vips[1], &c.vips[2]);
    assert_eq!(
        (udp.protocol, tcp.protocol, syslog.protocol),
        (Protocol::Udp, Protocol::Tcp, Protocol::Udp)
    );
    assert_eq!((udp.address, udp.port), (tcp.address, tcp.port));
    assert_eq!(udp.health_check.kind, CheckType::Dns);
    let dns = udp.health_check.dns.as_ref().unwrap();
    assert_eq!((dns.name.as_str(), dns.qtype), ("whoami.example.org", 1));
    assert_eq!(udp.health_check.fall, 2);
    assert_eq!(tcp.health_check.kind, CheckType::Tcp);
    assert_eq!(
        (syslog.health_check.kind, syslog.health_check.port),
        (CheckType::Tcp, Some(5514))
    );
    assert!(report.contains("check port = 5514"), "{report}");

    // keepalived LVS-NAT: weights, another backend port, TCP_CHECK on connect_port.
    let (c, _) = import(None, Some("keepalived-nat.conf"));
    let v = &c.vips[0];
    assert_eq!(v.forwarding, Forwarding::Nat);
    assert_eq!(
        v.backends
            .iter()
            .map(|b| (b.weight, b.port))
            .collect::<Vec<_>>(),
        [(3, 8443), (1, 8443)]
    );
    assert_eq!(v.health_check.port, Some(8443));
    assert_eq!(
        c.vrrp[0].version,
        config::Version::V2,
        "keepalived's default"
    );

    // keepalived LVS-TUN: IPIP to real servers in other subnets, checked through the tunnel.
    let (c, report) = import(None, Some("keepalived-tun.conf"));
    let v = &c.vips[0];
    assert_eq!(v.forwarding, Forwarding::Ipip, "{report}");
    assert!(v.tunnel.is_some());
    assert!(v.backends.iter().all(|b| b.port == 443));
    assert!(
        v.health_check.through_tunnel,
        "a tunnel VIP's check goes through the tunnel by default"
    );
    assert!(report.contains("forwarding = \"ipip\""), "{report}");
    assert!(
        report.contains("xdp-lb decap"),
        "the report says what the real servers need"
    );

    // Dual stack: the IPv6 instance becomes a VRRPv3 IPv6 instance (keepalived's own choice
    // for IPv6, whatever vrrp_version says), beside the IPv4 one.
    let (c, _) = import(None, Some("keepalived-dual-stack.conf"));
    assert_eq!(c.vrrp.len(), 2);
    assert_eq!(
        (c.vrrp[0].is_ipv6(), c.vrrp[0].version),
        (false, config::Version::V2)
    );
    assert_eq!(
        (c.vrrp[1].is_ipv6(), c.vrrp[1].version, c.vrrp[1].vrid),
        (true, config::Version::V3, 52)
    );
    assert_eq!(
        c.vrrp[1].virtual_addresses,
        [("2001:db8::100".parse().unwrap(), 64)]
    );

    // listen sections and a stats page; a backup server and send-proxy are reported.
    let (c, report) = import(Some("haproxy-listen-stats.cfg"), None);
    assert_eq!(c.agent.listen, Some("0.0.0.0:8404".parse().unwrap()));
    assert_eq!(c.vips.len(), 2);
    assert_eq!(c.vips[0].backends[2].weight, 0, "backup");
    assert!(report.contains("send-proxy: NOT carried over"));
}

/// kubeadm's own haproxy.cfg (its HA guide, older form): `option httpchk GET /healthz` then
/// `option ssl-hello-chk`. The apiserver speaks only TLS, so the intent is an HTTPS GET of
/// /healthz — not a TCP check carrying an HTTP path.
#[test]
fn httpchk_with_ssl_hello_chk_is_an_https_check() {
    let dir = out_dir();
    for (i, options) in [
        "    option httpchk GET /healthz\n    option ssl-hello-chk\n",
        "    option ssl-hello-chk\n    option httpchk GET /healthz\n",
    ]
    .iter()
    .enumerate()
    {
        let path = dir.join(format!("kubeadm-hello-{i}.cfg"));
        std::fs::write(
            &path,
            format!(
                "frontend apiserver\n    bind 192.0.2.100:8443\n    mode tcp\n    default_backend apiserverbackend\nbackend apiserverbackend\n{options}    http-check expect status 200\n    mode tcp\n    server cp1 192.0.2.11:6443 check\n    server cp2 192.0.2.12:6443 check\n"
            ),
        )
        .unwrap();
        let out = dir.join(format!("kubeadm-hello-{i}.toml"));
        let (code, _, report) = xdp_lb_cli(&[
            "import",
            "--haproxy",
            path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(code, 0, "{report}");
        let text = std::fs::read_to_string(&out).unwrap();
        let c = config::parse(&out, &text).unwrap();
        let h = &c.vips[0].health_check;
        assert_eq!(
            (h.kind, h.http_path.as_str(), h.http_expect_status),
            (CheckType::Https, "/healthz", 200),
            "{text}"
        );
        assert!(!h.tls.as_ref().unwrap().verify);
        assert!(
            report.contains("tls_verify = false") && report.contains("set tls_ca_file"),
            "reported as approximated, with the way to verify: {report}"
        );
        let (code, _, err) = xdp_lb_cli(&["check-config", out.to_str().unwrap()]).unwrap();
        assert_eq!(
            (code, err.as_str()),
            (0, ""),
            "no warning: every key has its effect"
        );
    }
    // ssl-hello-chk alone: a TCP check, and nothing HTTP-shaped left in it.
    let path = dir.join("hello-alone.cfg");
    std::fs::write(
        &path,
        "listen api\n    bind 192.0.2.100:8443\n    option ssl-hello-chk\n    http-check expect status 200\n    server cp1 192.0.2.11:6443 check\n",
    )
    .unwrap();
    let (code, toml, report) =
        xdp_lb_cli(&["import", "--haproxy", path.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{report}");
    assert!(
        toml.contains("type = \"tcp\"") && !toml.contains("http_"),
        "{toml}"
    );
    assert!(report.contains("the expected status left out"), "{report}");
}

#[test]
fn malformed_inputs_are_named_with_their_line() {
    let dir = out_dir();
    let cases = [
        (
            "haproxy",
            "global\n    daemon\nfronted api\n    bind 192.0.2.1:80\n",
            "bad1.cfg:3: unknown section `fronted`",
        ),
        (
            "haproxy",
            "frontend api\n    bind 192.0.2.1\n    default_backend b\nbackend b\n    server s1 192.0.2.2:80\n",
            "bad2.cfg:2: bind \"192.0.2.1\": needs ADDR:PORT",
        ),
        (
            "haproxy",
            "listen api\n    bind 192.0.2.1:80\n    server s1 192.0.2.2:80 check rise many\n",
            "bad3.cfg:3: rise: \"many\" is not a number",
        ),
        (
            "haproxy",
            "frontend api\n    bind *:6443\n    default_backend b\nbackend b\n    server s1 192.0.2.2:6443\n",
            "bad4.cfg:2: bind \"*:6443\" listens on every address",
        ),
        (
            "keepalived",
            "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id fifty\n}\n",
            "bad5.conf:3: virtual_router_id: \"fifty\" is not a number",
        ),
        (
            "keepalived",
            "vrrp_instance VI_1 {\n    interface eth0\n",
            "bad6.conf:1: this block is never closed",
        ),
        (
            "keepalived",
            "virtual_server 192.0.2.1 80 {\n    lb_kind FNAT\n    real_server 192.0.2.2 80 {\n    }\n}\n",
            "bad7.conf:2: lb_kind Some(\"FNAT\")",
        ),
        // A frontend that makes no VIP (no default_backend) still has to parse.
        (
            "haproxy",
            "frontend api\n    bind 192.0.2.1:80\n    default_backend b\nfrontend other\n    bind 192.0.2.300:81\nbackend b\n    server s1 192.0.2.2:80\n",
            "bad8.cfg:5: bind \"192.0.2.300:81\": \"192.0.2.300\" is not an IPv4 address",
        ),
        // So does a backend no frontend names.
        (
            "haproxy",
            "listen api\n    bind 192.0.2.1:80\n    server s1 192.0.2.2:80\nbackend spare\n    server s2 192.0.2.3:http\n",
            "bad9.cfg:5: server port: \"http\" is not a number",
        ),
        // Nothing to balance: every frontend ignored (each says why), no file.
        (
            "haproxy",
            "frontend api\n    bind 192.0.2.1:80\n",
            "no VIP: no frontend balances TCP to servers",
        ),
    ];
    for (i, (kind, text, expected)) in cases.iter().enumerate() {
        let ext = if *kind == "haproxy" { "cfg" } else { "conf" };
        let path = dir.join(format!("bad{}.{ext}", i + 1));
        std::fs::write(&path, text).unwrap();
        let (code, out, err) =
            xdp_lb_cli(&["import", &format!("--{kind}"), path.to_str().unwrap()]).unwrap();
        assert_eq!(code, 2, "{expected}: {err}");
        assert!(out.is_empty(), "nothing written on failure");
        assert!(err.contains(expected), "expected {expected:?} in {err}");
    }
    // Neither input: a usage error.
    let (code, _, err) = xdp_lb_cli(&["import"]).unwrap();
    assert_eq!(code, 2, "{err}");
}

/// An LVS-DR director's keepalived.conf, imported and run: its VIP balances real connections
/// over the test bed's three backends.
#[test]
fn an_imported_config_runs_end_to_end() {
    require_root!();
    let topo = DsrTopology::new(3).unwrap();
    let _services: Vec<TcpService> = (0..3)
        .map(|i| TcpService::start(&topo.backends[i].name, 80, &format!("be{}", i + 1)).unwrap())
        .collect();
    let (code, imported, err) = xdp_lb_cli(&[
        "import",
        "--keepalived",
        corpus("e2e-keepalived-dr.conf").to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0, "{err}");
    // Where this bed keeps its pins and socket (the import leaves the defaults).
    let mut table: toml::Table = toml::from_str(&imported).unwrap();
    let agent = table["agent"].as_table_mut().unwrap();
    for (k, v) in [
        ("pin_dir", topo.pin_dir().display().to_string()),
        (
            "control_socket",
            topo.control_socket().display().to_string(),
        ),
        ("listen", String::new()),
    ] {
        agent.insert(k.into(), toml::Value::String(v));
    }
    let path = topo.dir.join("imported.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    let mut agent = Agent::start(
        &topo.lb,
        &["run", "--config", path.to_str().unwrap()],
        topo.dir.join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(20),
    )
    .unwrap();
    let answers = in_netns(&topo.client.name, || {
        http_get_many(SocketAddr::from((VIP, 80)), 300, Duration::from_secs(3))
    })
    .unwrap();
    assert_eq!(answers.len(), 300);
    let mut per = std::collections::BTreeMap::<String, usize>::new();
    for a in answers {
        *per.entry(a.unwrap()).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "{per:?}");
    assert!(per.values().all(|n| (60..=140).contains(n)), "{per:?}");
    assert!(agent.stop().unwrap().success());
}
