//! The command line as an operator meets it: exit statuses and messages.

use std::process::Command;

use xdp_lb_tests::{NetNs, require_root, topology::xdp_lb_cli_in, xdp_lb_binary};

/// Runs the CLI in a namespace of its own, so that what `check-config` finds on "the LB host"
/// (interfaces, routes) is what the test made, not what this machine has.
fn xdp_lb(args: &[&str]) -> (i32, String, String) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let out = Command::new(xdp_lb_binary().unwrap())
            .args(args)
            .output()
            .unwrap();
        return (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
    }
    let ns = NetNs::new("cli").unwrap();
    xdp_lb_cli_in(&ns, args).unwrap()
}

fn dir() -> std::path::PathBuf {
    let dir = xdp_lb_tests::topology::target_dir()
        .join("testbed")
        .join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let path = dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn good() -> String {
    xdp_lb_tests::fixtures::config("eth0")
        .vip(xdp_lb_tests::fixtures::vip("web", "198.18.0.100", 80).backend("198.18.0.11"))
        .to_string()
}

#[test]
fn check_config_accepts_a_good_file_and_summarises_it() {
    let path = write("good.toml", &good());
    let (code, out, err) = xdp_lb(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("OK")
            && out.contains("web 198.18.0.100:80/tcp")
            && out.contains("198.18.0.11 w1"),
        "{out}"
    );
}

/// `[announce]`: summarised when good; an inconsistent section (a VIP both announced and moved
/// by VRRP, a table the host routes by) exits 2 with file, line and key.
#[test]
fn check_config_on_the_announce_section() {
    let announced = xdp_lb_tests::fixtures::config("eth0")
        .vip(xdp_lb_tests::fixtures::vip("web", "198.18.0.100", 80).backend("198.18.0.11"))
        .announce("table", 1000);
    let path = write("announce.toml", &announced.to_string());
    let (code, out, err) = xdp_lb(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("announce web as host routes in table 1000"),
        "{out}"
    );

    let main_table = write(
        "announce-main.toml",
        &announced.clone().announce("table", 254).to_string(),
    );
    let (code, _, err) = xdp_lb(&["check-config", main_table.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{}:", main_table.display()))
            && err.contains("announce.table: table 254"),
        "{err}"
    );
    let both = write(
        "announce-vrrp.toml",
        &announced
            .vrrp(
                xdp_lb_tests::fixtures::vrrp("lb", "eth0", 51, 100).addresses(&["198.18.0.100/24"]),
            )
            .to_string(),
    );
    let (code, _, err) = xdp_lb(&["check-config", both.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("announce.vips") && err.contains("moved by VRRP"),
        "{err}"
    );
}

#[test]
fn bad_files_exit_2_naming_file_line_and_key() {
    let path = write("bad.toml", &good().replace("port = 80", "port = 0"));
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["run", "--config", path.to_str().unwrap()],
    ] {
        let (code, _, err) = xdp_lb(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let expected = format!("{}:7:8: vip[0].port: 0 is out of range", path.display());
        assert!(err.contains(&expected), "{args:?}: {err}");
    }
    let (code, _, err) = xdp_lb(&["check-config", "/nonexistent/xdp-lb.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/xdp-lb.toml: cannot read the file"),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, _, err) = xdp_lb(&["run"]);
    assert_eq!(code, 2, "clap's usage exit status");
    assert!(err.contains("--config <FILE>"), "{err}");
    let (code, _, err) = xdp_lb(&["run", "--config", "x", "--log-level", "loud"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid --log-level"), "{err}");
    let (code, out, _) = xdp_lb(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("check-config") && out.contains("Examples"),
        "{out}"
    );
}

#[test]
fn the_example_config_and_the_systemd_unit_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    // The example verifies the apiservers against kubeadm's CA file, which this machine does
    // not have: check it with a test CA in that file's place.
    let ca = xdp_lb_tests::pki::Ca::new("test cluster CA").unwrap();
    let ca_file = ca.write(&dir(), "cluster-ca").unwrap();
    let example = write(
        "kube-apiserver-ha.toml",
        &std::fs::read_to_string(root.join("examples/kube-apiserver-ha.toml"))
            .unwrap()
            .replace("/etc/kubernetes/pki/ca.crt", ca_file.to_str().unwrap()),
    );
    let (code, out, err) = xdp_lb(&["check-config", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("3 VIP(s), 9 backend(s)") && out.contains("(drain)"),
        "{out}"
    );
    assert!(err.is_empty(), "no warnings: {err}");
    let nat = root.join("examples/kube-apiserver-nat.toml");
    let (code, out, err) = xdp_lb(&["check-config", nat.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(nat,")
            && out.contains("10.0.1.11:6443 w1")
            && out.contains("1 VRRP instance(s)")
            && out.contains("\n  vrrp ")
            && out.contains("\n  agent: ")
            && out.contains("\n    check "),
        "{out}"
    );

    // systemd's own checker, with the unit pointing at the binary under test.
    let unit = std::fs::read_to_string(root.join("packaging/xdp-lb.service")).unwrap();
    let bin = xdp_lb_binary().unwrap();
    let path = write(
        "xdp-lb.service",
        &unit.replace("/usr/local/bin/xdp-lb", bin.to_str().unwrap()),
    );
    match Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("systemd-analyze (Debian's systemd package) is needed: {e}"),
    }
}

/// An https check, its TLS files, and the warnings check-config gives (exit 0, stderr).
#[test]
fn https_checks_name_bad_tls_files_and_warn_about_unverifiable_ones() {
    let ca = xdp_lb_tests::pki::Ca::new("test CA").unwrap();
    let ca_file = ca.write(&dir(), "https-ca").unwrap();
    let not_pem = write("not-pem.crt", "this is not a certificate\n");
    let https_vip = |keys: &[(&str, &str)]| {
        keys.iter()
            .fold(
                xdp_lb_tests::fixtures::vip("api", "198.18.0.100", 6443)
                    .check("type", "https")
                    .check("http_path", "/readyz"),
                |v, (k, val)| v.check(k, *val),
            )
            .backend("198.18.0.11")
    };
    let https = |keys: &[(&str, &str)]| {
        xdp_lb_tests::fixtures::config("eth0")
            .vip(https_vip(keys))
            .to_string()
    };
    // A CA file that is there and valid: no warning.
    let good = write(
        "https-good.toml",
        &https(&[("tls_ca_file", ca_file.to_str().unwrap())]),
    );
    let (code, out, err) = xdp_lb(&["check-config", good.to_str().unwrap()]);
    assert!(
        code == 0 && out.contains("OK") && err.is_empty(),
        "{out}{err}"
    );

    // Bad files and contradictions: exit 2, with the file, line and key.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "missing CA file",
            vec![("tls_ca_file", "/nonexistent/ca.crt")],
            "vip[0].health_check.tls_ca_file: cannot read /nonexistent/ca.crt",
        ),
        (
            "not PEM",
            vec![("tls_ca_file", not_pem.to_str().unwrap())],
            "vip[0].health_check.tls_ca_file:",
        ),
        (
            "verify off and a CA",
            vec![
                ("tls_verify", "false"),
                ("tls_ca_file", ca_file.to_str().unwrap()),
            ],
            "vip[0].health_check.tls_verify: tls_verify = false accepts any certificate",
        ),
        (
            "a certificate without its key",
            vec![("tls_client_cert", ca_file.to_str().unwrap())],
            "vip[0].health_check.tls_client_cert: needs tls_client_key too",
        ),
        (
            "a bad server name",
            vec![("tls_server_name", "not a name!")],
            "vip[0].health_check.tls_server_name:",
        ),
    ];
    for (what, keys, expected) in cases {
        // tls_verify is a boolean: written bare, not quoted.
        let text = https(&keys).replace("tls_verify = \"false\"", "tls_verify = false");
        let path = write("https-bad.toml", &text);
        let (code, _, err) = xdp_lb(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{what}: {err}");
        let line = text.lines().position(|l| l.starts_with(keys[0].0)).unwrap() + 1;
        assert!(
            err.contains(&format!("{}:{line}:", path.display())) && err.contains(expected),
            "{what}: line {line}, {expected}: {err}"
        );
    }

    // TLS settings on a plain HTTP check are a mistake, not ignored.
    let text = https(&[("tls_ca_file", ca_file.to_str().unwrap())])
        .replace("type = \"https\"", "type = \"http\"");
    let path = write("http-tls.toml", &text);
    let (code, _, err) = xdp_lb(&["check-config", path.to_str().unwrap()]);
    assert!(
        code == 2 && err.contains("tls_ca_file: a TLS setting needs type = \"https\""),
        "{err}"
    );

    // Loads, but says what will go wrong: no CA file and verification on; a VIP without
    // backends.
    let text = xdp_lb_tests::fixtures::config("eth0")
        .vip(https_vip(&[]))
        .vip(xdp_lb_tests::fixtures::vip("empty", "198.18.0.100", 80))
        .to_string();
    let path = write("https-warn.toml", &text);
    let (code, out, err) = xdp_lb(&["check-config", path.to_str().unwrap()]);
    assert!(code == 0 && out.contains("OK"), "{out}{err}");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].starts_with(&format!("xdp-lb: warning: {}:", path.display()))
            && warnings[0].contains("verifies against the system's CAs"),
        "{err}"
    );
    assert!(
        warnings[1].contains("vip[1].backend: VIP \"empty\" has no backends"),
        "{err}"
    );
}

/// On the LB host, check-config names a DSR backend the kernel routes through a gateway (DSR
/// needs it on a directly connected subnet), with its line; it only asks for the route.
#[test]
fn check_config_on_the_lb_host_warns_about_routed_dsr_backends() {
    require_root!();
    let ns = NetNs::new("clihost").unwrap();
    // (This kernel has no dummy interfaces: a veth pair inside the namespace.)
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .unwrap();
    ns.ip(&["link", "set", "eth1", "up"]).unwrap();
    ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "eth0"])
        .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&["route", "add", "default", "via", "198.18.0.1"])
        .unwrap();
    let text = xdp_lb_tests::fixtures::config("eth0")
        .vip(
            xdp_lb_tests::fixtures::vip("web", "198.18.0.100", 80)
                .backend("198.18.0.11")
                .backend("198.19.5.5"),
        )
        .to_string();
    let path = write("routed.toml", &text);
    let (code, _, err) = xdp_lb_cli_in(&ns, &["check-config", path.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{err}");
    let line = text.lines().position(|l| l.contains("198.19.5.5")).unwrap() + 1;
    assert_eq!(err.lines().count(), 1, "only the routed backend: {err}");
    assert!(
        err.contains(&format!(
            "{}:{line}:11: vip[0].backend[1].address: 198.19.5.5 is routed via 198.18.0.1",
            path.display()
        )),
        "{err}"
    );
}
