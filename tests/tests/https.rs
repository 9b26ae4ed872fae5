//! `https` health checks against real TLS servers: nginx on each backend with a certificate
//! from a test PKI made by the test, and one backend that accepts TCP but never answers the
//! TLS handshake. Each backend's state and reason are read back from `xdp-lb status`.

use std::{collections::BTreeMap, path::Path, time::Duration};

use xdp_lb_tests::{
    Agent, DsrTopology, fixtures, in_netns,
    peers::{Proc, nginx_with},
    pki::Ca,
    require_root,
    topology::{VIP, backend_addr, backend_addr6, xdp_lb_cli},
};

const READY: &str = "xdp-lb is forwarding";
const TLS_PORT: u16 = 443;
/// be1..be6, what each backend serves.
const VALID: usize = 0;
const EXPIRED: usize = 1;
const WRONG_NAME: usize = 2;
const OTHER_CA: usize = 3;
const NOT_READY: usize = 4;
const SILENT: usize = 5;
/// Wants a client certificate from the test CA (nginx `ssl_verify_client on`).
const WANTS_CLIENT_CERT: usize = 6;

struct Bed {
    topo: DsrTopology,
    _nginx: Vec<Proc>,
    _silent: std::net::TcpListener,
    agent: Agent,
}

/// The backends' TLS servers, and an agent checking them three ways: verified against the
/// test CA, not verified, and by DNS name (SNI).
fn bed() -> Bed {
    let topo = DsrTopology::new(7).unwrap();
    let dir = &topo.dir;
    let ca = Ca::new("xdp-lb test CA").unwrap();
    let other = Ca::new("another CA").unwrap();
    let ca_file = ca.write(dir, "ca").unwrap();
    let addr = |i: usize| backend_addr(i).to_string();
    let mut nginx = Vec::new();
    let client = ca.leaf(&["health-check.test"], false).unwrap();
    let (client_cert, client_key) = client.write(dir, "client").unwrap();
    for i in [
        VALID,
        EXPIRED,
        WRONG_NAME,
        OTHER_CA,
        NOT_READY,
        WANTS_CLIENT_CERT,
    ] {
        let leaf = match i {
            VALID | NOT_READY | WANTS_CLIENT_CERT => ca.leaf(&[&addr(i), "api.test"], false),
            EXPIRED => ca.leaf(&[&addr(i)], true),
            WRONG_NAME => ca.leaf(&["198.18.0.99", "other.test"], false),
            _ => other.leaf(&[&addr(i)], false),
        }
        .unwrap();
        let name = format!("be{}", i + 1);
        let (cert, key) = leaf.write(dir, &name).unwrap();
        let readyz = if i == NOT_READY { 503 } else { 200 };
        let client_auth = if i == WANTS_CLIENT_CERT {
            format!(
                "ssl_verify_client on; ssl_client_certificate {};",
                ca_file.display()
            )
        } else {
            String::new()
        };
        let server = format!(
            "server {{ listen {}:{TLS_PORT} ssl; ssl_certificate {}; ssl_certificate_key {}; {client_auth}\n\
             location = /readyz {{ return {readyz} \"ready?\\n\"; }} location / {{ return 200 \"{name}\\n\"; }} }}",
            addr(i),
            cert.display(),
            key.display()
        );
        nginx.push(nginx_with(&topo.backends[i], dir, &name, &server).unwrap());
    }
    // Accepts TCP (the kernel completes the handshake into the backlog) and never reads.
    let silent = in_netns(&topo.backends[SILENT].name, move || {
        std::net::TcpListener::bind((backend_addr(SILENT), TLS_PORT))
    })
    .unwrap()
    .unwrap();

    let checked = |name: &str, port: u16, backends: &[usize]| {
        let vip = fixtures::vip(name, VIP, port)
            .key("maglev_table_size", 251)
            .check("type", "https")
            .check("port", TLS_PORT)
            .check("http_path", "/readyz")
            .check("interval", "300ms")
            .check("timeout", "300ms")
            .check("rise", 1u32)
            .check("fall", 1u32);
        backends
            .iter()
            .fold(vip, |v, i| v.backend(backend_addr(*i)))
    };
    let all = [
        VALID,
        EXPIRED,
        WRONG_NAME,
        OTHER_CA,
        NOT_READY,
        SILENT,
        WANTS_CLIENT_CERT,
    ];
    let config = topo
        .agent_config(&topo.pin_dir())
        .key("listen", "")
        .vip(checked("verified", 443, &all).check("tls_ca_file", ca_file.clone()))
        .vip(checked("unverified", 444, &all).check("tls_verify", false))
        .vip(
            checked("named", 445, &[VALID, WRONG_NAME])
                .check("tls_ca_file", ca_file.clone())
                .check("tls_server_name", "api.test"),
        )
        .vip(
            checked("client-cert", 446, &[WANTS_CLIENT_CERT])
                .check("tls_ca_file", ca_file)
                .check("tls_client_cert", client_cert)
                .check("tls_client_key", client_key),
        )
        .to_string();
    let path = dir.join("xdp-lb.toml");
    std::fs::write(&path, config).unwrap();
    let agent = Agent::start(
        &topo.lb,
        &["run", "--config", path.to_str().unwrap()],
        dir.join("agent.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap();
    Bed {
        topo,
        _nginx: nginx,
        _silent: silent,
        agent,
    }
}

/// (VIP, backend index) → (health, last check), from `xdp-lb status --json`.
fn checks(socket: &Path) -> BTreeMap<(String, usize), (String, String)> {
    let (code, out, err) =
        xdp_lb_cli(&["status", "--json", "--socket", socket.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut out = BTreeMap::new();
    for vip in status["vips"].as_array().unwrap() {
        for b in vip["backends"].as_array().unwrap() {
            let address = b["address"].as_str().unwrap();
            let i = (0..7)
                .find(|i| backend_addr(*i).to_string() == address)
                .unwrap();
            out.insert(
                (vip["name"].as_str().unwrap().to_owned(), i),
                (
                    b["health"].as_str().unwrap_or("?").to_owned(),
                    b["last_check"].as_str().unwrap_or("-").to_owned(),
                ),
            );
        }
    }
    out
}

#[test]
fn https_checks_verify_the_certificate_and_say_why_a_backend_is_down() {
    require_root!();
    let mut bed = bed();
    // (VIP, backend) → expected health and the start of the reason.
    let down = |reason: &'static str| ("down", reason);
    let expected: BTreeMap<(&str, usize), (&str, &str)> = [
        (("verified", VALID), ("up", "ok")),
        (("verified", EXPIRED), down("certificate expired")),
        (("verified", WRONG_NAME), down("name mismatch")),
        (("verified", OTHER_CA), down("unknown CA")),
        (("verified", NOT_READY), down("HTTP 503")),
        (("verified", SILENT), down("handshake timeout")),
        // nginx answers a request without the client certificate it wants with 400.
        (("verified", WANTS_CLIENT_CERT), down("HTTP 400")),
        // tls_verify = false: any certificate; /readyz and the handshake still decide.
        (("unverified", VALID), ("up", "ok")),
        (("unverified", EXPIRED), ("up", "ok")),
        (("unverified", WRONG_NAME), ("up", "ok")),
        (("unverified", OTHER_CA), ("up", "ok")),
        (("unverified", NOT_READY), down("HTTP 503")),
        (("unverified", SILENT), down("handshake timeout")),
        (("unverified", WANTS_CLIENT_CERT), down("HTTP 400")),
        // tls_server_name: SNI and the name checked is api.test, not the address.
        (("named", VALID), ("up", "ok")),
        (("named", WRONG_NAME), down("name mismatch")),
        // tls_client_cert/tls_client_key: the certificate the backend asks for.
        (("client-cert", WANTS_CLIENT_CERT), ("up", "ok")),
    ]
    .into();
    let matches = |got: &BTreeMap<(String, usize), (String, String)>| {
        expected.iter().all(|((vip, i), (health, reason))| {
            got.get(&((*vip).to_owned(), *i))
                .is_some_and(|(h, r)| h == health && r.starts_with(reason))
        })
    };
    let socket = bed.topo.control_socket();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = checks(&socket);
    while !matches(&got) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = checks(&socket);
    }
    assert!(matches(&got), "expected {expected:#?}\ngot {got:#?}");
    // The reasons are in the log too, with the transition.
    let log = bed.agent.log_text();
    for reason in [
        "certificate expired",
        "unknown CA",
        "name mismatch",
        "HTTP 503",
    ] {
        assert!(log.contains(reason), "{reason} not logged:\n{log}");
    }
    assert!(bed.agent.stop().unwrap().success());
}

/// `https` checks over IPv6: nginx on two IPv6 backends, one with a certificate for its own
/// IPv6 address (an IP SAN) and one for another address; the check connects to
/// `[backend]:443`, verifies against the test CA with the address as the name, and says why
/// the second is down.
#[test]
fn https_checks_over_ipv6_verify_the_address_in_the_certificate() {
    require_root!();
    let topo = DsrTopology::new(2).unwrap();
    topo.add_ipv6().unwrap();
    let dir = &topo.dir;
    let ca = Ca::new("xdp-lb test CA").unwrap();
    let ca_file = ca.write(dir, "ca").unwrap();
    let mut nginx = Vec::new();
    for (i, names) in [
        (0, vec![backend_addr6(0).to_string()]),
        (1, vec!["2001:2::99".to_owned()]),
    ] {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (cert, key) = ca
            .leaf(&names, false)
            .unwrap()
            .write(dir, &format!("be{}", i + 1))
            .unwrap();
        let server = format!(
            "server {{ listen [{}]:{TLS_PORT} ssl; ssl_certificate {}; ssl_certificate_key {};\n\
             location = /readyz {{ return 200 \"ready\\n\"; }} }}",
            backend_addr6(i),
            cert.display(),
            key.display()
        );
        nginx.push(nginx_with(&topo.backends[i], dir, &format!("be{}", i + 1), &server).unwrap());
    }
    let vip = topo
        .vip6(80)
        .key("maglev_table_size", 251)
        .check("type", "https")
        .check("port", TLS_PORT)
        .check("http_path", "/readyz")
        .check("interval", "300ms")
        .check("timeout", "300ms")
        .check("rise", 1u32)
        .check("fall", 1u32)
        .check("tls_ca_file", ca_file);
    let config = topo
        .agent_config(&topo.pin_dir())
        .key("listen", "")
        .vip(vip)
        .to_string();
    let path = dir.join("xdp-lb.toml");
    std::fs::write(&path, config).unwrap();
    let mut agent = Agent::start(
        &topo.lb,
        &["run", "--config", path.to_str().unwrap()],
        dir.join("agent.log"),
        READY,
        Duration::from_secs(20),
    )
    .unwrap();
    let socket = topo.control_socket();
    let state = || -> Vec<(String, String)> {
        let (_, out, _) =
            xdp_lb_cli(&["status", "--json", "--socket", socket.to_str().unwrap()]).unwrap();
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        status["vips"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["health"].as_str().unwrap_or("?").to_owned(),
                    b["last_check"].as_str().unwrap_or("-").to_owned(),
                )
            })
            .collect()
    };
    let wanted = |s: &[(String, String)]| {
        s.len() == 2
            && s[0] == ("up".to_owned(), "ok".to_owned())
            && s[1].0 == "down"
            && s[1].1.starts_with("name mismatch")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = state();
    while !wanted(&got) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = state();
    }
    assert!(wanted(&got), "{got:?}\n{}", agent.log_text());
    assert!(agent.stop().unwrap().success());
    drop(nginx);
}
