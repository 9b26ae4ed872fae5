//! The command line as an operator meets it: exit statuses and messages.

use std::process::Command;

use xdp_lb_tests::xdp_lb_binary;

fn xdp_lb(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(xdp_lb_binary().unwrap())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = xdp_lb_tests::topology::target_dir()
        .join("testbed")
        .join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
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
    let example = root.join("examples/kube-apiserver-ha.toml");
    let (code, out, err) = xdp_lb(&["check-config", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("3 VIP(s), 9 backend(s)") && out.contains("(drain)"),
        "{out}"
    );
    let nat = root.join("examples/kube-apiserver-nat.toml");
    let (code, out, err) = xdp_lb(&["check-config", nat.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(Nat,") && out.contains("10.0.1.11:6443 w1"),
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
