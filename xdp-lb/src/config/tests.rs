//! Config parsing and validation: every error names its file, line and key.

use std::{path::Path, time::Duration};

use xdp_lb_common::{DEFAULT_MAX_VIPS, MAGLEV_MAX_TABLE_SIZE};

use super::*;

mod general {
    use super::*;

    const GOOD: &str = r#"
[agent]
interface = "eth0"
xdp_mode = "auto"
pin_dir = "/sys/fs/bpf/xdp-lb"
flow_table_size = 1048576

[[vip]]
name = "apiserver"
address = "198.18.0.100"
port = 6443
protocol = "tcp"
forwarding = "dsr"
maglev_table_size = 65537

[[vip.backend]]
address = "198.18.0.11"
weight = 1

[[vip.backend]]
address = "198.18.0.12"
weight = 2
"#;

    #[test]
    fn nat_vip_with_backend_ports_and_snat_settings() {
        let text = GOOD
            .replace("forwarding = \"dsr\"", "forwarding = \"nat\"")
            .replace("weight = 2", "weight = 2\nport = 8443")
            .replace(
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nsnat_address = \"198.18.0.2\"\nsnat_port_range = \"30000-30999\"\nnat_established_timeout = \"2h\"",
            );
        let c = parse_str(&text).unwrap();
        assert_eq!(c.vips[0].forwarding, Forwarding::Nat);
        assert_eq!(
            c.vips[0].backends[0].port, 6443,
            "defaults to the VIP's port"
        );
        assert_eq!(c.vips[0].backends[1].port, 8443);
        assert_eq!(c.agent.snat_address.v4, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(c.agent.snat_port_range, (30000, 30999));
        assert_eq!(c.agent.nat_established_timeout, Duration::from_secs(7200));
        assert_eq!(c.agent.nat_syn_timeout, Duration::from_secs(10));
        assert_eq!(c.agent.nat_closing_timeout, Duration::from_secs(10));
        let dsr = parse_str(GOOD).unwrap();
        assert!(!dsr.agent.snat_address.any());
        assert_eq!(dsr.agent.snat_port_range, DEFAULT_SNAT_PORT_RANGE);
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("test.toml"), text)
    }

    /// Replaces the first occurrence of `from` in the good file and returns the error.
    fn broken(from: &str, to: &str) -> ConfigError {
        assert!(GOOD.contains(from), "{from}");
        parse_str(&GOOD.replacen(from, to, 1)).expect_err("should be rejected")
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.agent.interface, "eth0");
        assert_eq!(c.agent.xdp_mode, XdpMode::Auto);
        assert_eq!(c.agent.flow_table_size, 1_048_576);
        assert_eq!(c.vips.len(), 1);
        let v = &c.vips[0];
        assert_eq!(
            (v.name.as_str(), v.port, v.maglev_table_size),
            ("apiserver", 6443, 65537)
        );
        assert_eq!(
            v.backends[1],
            BackendConfig {
                name: "198.18.0.12".into(),
                address: "198.18.0.12".parse().unwrap(),
                port: 6443,
                weight: 2,
                state: AdminState::Active,
                slowstart: None,
            }
        );
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let c = parse_str(
            "[agent]\ninterface = \"eth1\"\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.100\"\nport = 80\n",
        )
        .unwrap();
        assert_eq!(c.agent.pin_dir, PathBuf::from("/sys/fs/bpf/xdp-lb"));
        assert_eq!(c.agent.max_vips, DEFAULT_MAX_VIPS);
        assert_eq!(c.vips[0].maglev_table_size, MAGLEV_MAX_TABLE_SIZE);
        assert_eq!(c.vips[0].forwarding, Forwarding::Dsr);
        assert!(c.vips[0].backends.is_empty());
    }

    #[test]
    fn each_mistake_has_its_own_error_with_a_line() {
        let cases: &[(&str, &str, usize, &str, &str)] = &[
            // (replace, with, line, key, message fragment)
            (
                "maglev_table_size = 65537",
                "maglev_table_size = 65536",
                14,
                "vip[0].maglev_table_size",
                "not a prime",
            ),
            (
                "maglev_table_size = 65537",
                "maglev_table_size = 131071",
                14,
                "vip[0].maglev_table_size",
                "out of range",
            ),
            (
                "port = 6443",
                "port = 70000",
                11,
                "vip[0].port",
                "out of range",
            ),
            (
                "weight = 2",
                "weight = -1",
                22,
                "vip[0].backend[1].weight",
                "out of range",
            ),
            (
                "address = \"198.18.0.12\"",
                "address = \"198.18.0.11\"",
                21,
                "vip[0].backend[1].address",
                "duplicate backend",
            ),
            (
                "interface = \"eth0\"",
                "interface = \"a-very-long-interface-name\"",
                3,
                "agent.interface",
                "not a valid interface",
            ),
            (
                "pin_dir = \"/sys/fs/bpf/xdp-lb\"",
                "pin_dir = \"relative\"",
                5,
                "agent.pin_dir",
                "absolute",
            ),
            (
                "name = \"apiserver\"",
                "name = \"api server\"",
                9,
                "vip[0].name",
                "not a valid name",
            ),
            (
                "weight = 1",
                "weight = 1\nport = 8443",
                19,
                "vip[0].backend[0].port",
                "needs forwarding = \"nat\"",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nsnat_port_range = \"40000-30000\"",
                7,
                "agent.snat_port_range",
                "not a port range",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nnat_closing_timeout = \"100ms\"",
                7,
                "agent.nat_closing_timeout",
                "out of range",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nsnat_address = \"127.0.0.1\"",
                7,
                "agent.snat_address",
                "cannot be a source address",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 1048576\nsnat_address = [\"198.18.0.2\", \"198.18.0.3\"]",
                7,
                "agent.snat_address",
                "two IPv4 addresses: give at most one per family",
            ),
            (
                "flow_table_size = 1048576",
                "flow_table_size = 0",
                6,
                "agent.flow_table_size",
                "out of range",
            ),
        ];
        for (from, to, line, key, fragment) in cases {
            let err = broken(from, to);
            assert_eq!(err.line, Some(*line), "{err}");
            assert_eq!(err.key.as_deref(), Some(*key), "{err}");
            assert!(err.message.contains(fragment), "{err}");
            let shown = err.to_string();
            assert!(shown.starts_with(&format!("test.toml:{line}:")), "{shown}");
        }
    }

    #[test]
    fn serde_level_mistakes_name_the_line() {
        let cases: &[(&str, &str, usize, &str)] = &[
            (
                "xdp_mode = \"auto\"",
                "xdp_mode = \"turbo\"",
                4,
                "unknown variant `turbo`",
            ),
            ("weight = 1", "wieght = 1", 18, "unknown field `wieght`"),
            (
                "address = \"198.18.0.100\"",
                "address = \"198.18.0.300\"",
                10,
                "invalid IP address",
            ),
            ("port = 6443", "port = \"https\"", 11, "invalid type"),
            (
                "protocol = \"tcp\"",
                "protocol = \"sctp\"",
                12,
                "unknown variant `sctp`",
            ),
            ("[agent]", "[agnet]", 2, "unknown field `agnet`"),
            ("port = 6443", "port = = 6443", 11, ""),
        ];
        for (from, to, line, fragment) in cases {
            let err = broken(from, to);
            assert_eq!(err.line, Some(*line), "{err}");
            assert!(err.message.contains(fragment), "{err}");
        }
    }

    #[test]
    fn duplicate_vip_endpoint_and_name_are_rejected() {
        let twice =
            format!("{GOOD}\n[[vip]]\nname = \"other\"\naddress = \"198.18.0.100\"\nport = 6443\n");
        let err = parse_str(&twice).unwrap_err();
        assert!(err.message.contains("already used"), "{err}");
        let same_name = format!(
            "{GOOD}\n[[vip]]\nname = \"apiserver\"\naddress = \"198.18.0.101\"\nport = 6443\n"
        );
        let err = parse_str(&same_name).unwrap_err();
        assert!(err.message.contains("duplicate VIP name"), "{err}");
    }

    #[test]
    fn backend_names_default_to_the_address_and_are_unique_per_vip() {
        let c = parse_str(&GOOD.replacen(
            "address = \"198.18.0.12\"",
            "name = \"cp2\"\naddress = \"198.18.0.12\"",
            1,
        ))
        .unwrap();
        let names: Vec<&str> = c.vips[0].backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["198.18.0.11", "cp2"]);
        // A name that is another backend's address is as ambiguous as two equal names.
        let err = broken(
            "address = \"198.18.0.12\"",
            "name = \"198.18.0.11\"\naddress = \"198.18.0.12\"",
        );
        assert!(err.message.contains("called \"198.18.0.11\""), "{err}");
        assert_eq!(err.key.as_deref(), Some("vip[0].backend[1].name"));
        assert_eq!(err.line, Some(21));
        let err = broken(
            "address = \"198.18.0.12\"",
            "name = \"cp 2\"\naddress = \"198.18.0.12\"",
        );
        assert!(err.message.contains("not a valid name"), "{err}");
        assert_eq!(err.key.as_deref(), Some("vip[0].backend[1].name"));
    }

    #[test]
    fn missing_required_keys_are_named() {
        let err =
            parse_str("[[vip]]\nname = \"a\"\naddress = \"198.18.0.1\"\nport = 1\n").unwrap_err();
        assert!(err.message.contains("missing field `agent`"), "{err}");
        let err = parse_str("[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"a\"\nport = 1\n")
            .unwrap_err();
        assert!(err.message.contains("missing field `address`"), "{err}");
        assert_eq!(err.line, Some(3), "{err}");
    }

    #[test]
    fn too_many_vips_for_max_vips() {
        let text = "[agent]\ninterface = \"eth0\"\nmax_vips = 1\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.1\"\nport = 1\n[[vip]]\nname = \"b\"\naddress = \"198.18.0.2\"\nport = 1\n";
        let err = parse_str(text).unwrap_err();
        assert!(err.message.contains("max_vips"), "{err}");
        assert_eq!(err.line, Some(8), "{err}");
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(65535));
    }
}

mod source_lists {
    use super::*;

    fn with(keys: &str) -> Result<Config, ConfigError> {
        parse(
            Path::new("l.toml"),
            &format!(
                "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.100\"\nport = 80\n{keys}\n[[vip.backend]]\naddress = \"198.18.0.11\"\n"
            ),
        )
    }

    #[test]
    fn lists_parse_and_each_mistake_names_its_entry() {
        let c =
            with("allow = [\"198.51.100.0/24\", \"203.0.113.7\"]\ndeny = [\"198.51.100.128/25\"]")
                .unwrap();
        assert_eq!(c.vips[0].allow.len(), 2);
        assert_eq!(c.vips[0].allow[1].to_string(), "203.0.113.7/32");
        assert_eq!(c.vips[0].deny[0].len, 25);
        for (keys, at, message) in [
            (
                "allow = [\"198.51.100.0/24\", \"198.51.100\"]",
                "vip[0].allow[1]",
                "not an IP address or prefix",
            ),
            (
                "deny = [\"198.51.100.0/33\"]",
                "vip[0].deny[0]",
                "the prefix length must be 0..=32",
            ),
            (
                "deny = [\"198.51.100.1/24\"]",
                "vip[0].deny[0]",
                "did you mean 198.51.100.0/24",
            ),
            (
                "allow = [\"2001:db8::/32\"]",
                "vip[0].allow[0]",
                "is an IPv6 prefix and the VIP",
            ),
            (
                "allow = [\"10.0.0.0/8\", \"10.0.0.0/8\"]",
                "vip[0].allow[1]",
                "listed twice",
            ),
            (
                "allow = [\"10.0.0.0/8\"]\ndeny = [\"10.0.0.0/8\"]",
                "vip[0].deny[0]",
                "in both lists",
            ),
        ] {
            let e = with(keys).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(at), "{keys}: {e}");
            assert!(
                e.line.is_some() && e.to_string().contains(message),
                "{keys}: {e}"
            );
        }
    }
}

mod source_limits {
    use super::*;

    fn with(keys: &str) -> Result<Config, ConfigError> {
        parse(
            Path::new("r.toml"),
            &format!(
                "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.100\"\nport = 80\n{keys}\n[[vip.backend]]\naddress = \"198.18.0.11\"\n"
            ),
        )
    }

    #[test]
    fn a_limit_parses_with_its_defaults_and_each_mistake_names_its_key() {
        let l = with("new_flows_per_source = \"100/s\"").unwrap().vips[0]
            .limit
            .unwrap();
        assert_eq!(
            (l.count, l.per, l.burst, l.prefix),
            (100, Duration::from_secs(1), 100, 32)
        );
        let l =
            with("new_flows_per_source = \"600/m\"\nnew_flows_burst = 20\nlimit_prefix_v4 = 24")
                .unwrap()
                .vips[0]
                .limit
                .unwrap();
        assert_eq!(
            (l.count, l.per, l.burst, l.prefix),
            (600, Duration::from_secs(60), 20, 24)
        );
        for (keys, at, message) in [
            (
                "new_flows_per_source = \"100\"",
                "vip[0].new_flows_per_source",
                "a rate needs a unit",
            ),
            (
                "new_flows_per_source = \"100/h\"",
                "vip[0].new_flows_per_source",
                "the unit is s or m",
            ),
            (
                "new_flows_per_source = \"0/s\"",
                "vip[0].new_flows_per_source",
                "1..=10000000",
            ),
            (
                "new_flows_per_source = \"10/s\"\nlimit_prefix_v4 = 33",
                "vip[0].limit_prefix_v4",
                "out of range",
            ),
            (
                "new_flows_burst = 5",
                "vip[0].new_flows_burst",
                "needs new_flows_per_source",
            ),
        ] {
            let e = with(keys).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(at), "{keys}: {e}");
            assert!(
                e.line.is_some() && e.to_string().contains(message),
                "{keys}: {e}"
            );
        }
    }
}

mod health_check {
    use super::*;

    const BASE: &str = "[agent]\ninterface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"198.18.0.100\"\nport = 6443\n";

    fn with_check(check: &str) -> Result<Config, ConfigError> {
        parse(
            Path::new("h.toml"),
            &format!(
                "{BASE}[vip.health_check]\n{check}\n[[vip.backend]]\naddress = \"198.18.0.11\"\nstate = \"drain\"\n"
            ),
        )
    }

    #[test]
    fn the_issue_example_parses_and_defaults_follow_haproxy() {
        let c = with_check("type = \"http\"\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 2\nfall = 3\nport = 8080\nhttp_path = \"/healthz\"\nhttp_expect_status = 200\nstart_down = false").unwrap();
        let h = &c.vips[0].health_check;
        assert_eq!(
            (h.kind, h.interval, h.timeout, h.rise, h.fall, h.port),
            (
                CheckType::Http,
                Duration::from_secs(2),
                Duration::from_secs(1),
                2,
                3,
                Some(8080)
            )
        );
        assert_eq!(h.http_path, "/healthz");
        assert_eq!(c.vips[0].backends[0].state, AdminState::Drain);
        let d = with_check("interval = \"500ms\"").unwrap();
        let h = &d.vips[0].health_check;
        assert_eq!(
            (h.kind, h.interval, h.timeout, h.rise, h.fall),
            (
                CheckType::Tcp,
                Duration::from_millis(500),
                Duration::from_millis(500),
                2,
                3
            )
        );
    }

    #[test]
    fn http_keys_on_a_check_that_sends_no_request_are_a_warning_with_their_line() {
        let c = with_check("type = \"tcp\"\nhttp_path = \"/healthz\"\nhttp_expect_status = 204")
            .unwrap();
        let w: Vec<(Option<&str>, Option<usize>)> = c
            .warnings
            .iter()
            .map(|w| (w.key.as_deref(), w.line))
            .collect();
        assert_eq!(
            w,
            [
                (Some("vip[0].health_check.http_path"), Some(9)),
                (Some("vip[0].health_check.http_expect_status"), Some(10))
            ]
        );
        assert!(
            c.warnings[0]
                .message
                .contains("no effect on a type = \"tcp\" check")
        );
        let c = with_check("type = \"http\"\nhttp_path = \"/healthz\"").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn health_check_mistakes_name_line_and_key() {
        let cases = [
            ("interval = \"2 parsecs\"", 8, "invalid duration"),
            ("type = \"icmp\"", 8, "unknown variant `icmp`"),
            ("rise = 0", 8, "vip[0].health_check.rise"),
            (
                "interval = \"1s\"\ntimeout = \"2s\"",
                9,
                "longer than the interval",
            ),
            ("http_path = \"healthz\"", 8, "must start with '/'"),
            ("http_expect_status = 700", 8, "out of range"),
            ("interval = \"1ms\"", 8, "out of range"),
        ];
        for (text, line, fragment) in cases {
            let err = with_check(text).unwrap_err();
            assert_eq!(err.line, Some(line), "{text}: {err}");
            assert!(err.to_string().contains(fragment), "{text}: {err}");
        }
        let err = parse(
            Path::new("h.toml"),
            &format!("{BASE}[[vip.backend]]\naddress = \"198.18.0.11\"\nstate = \"sleeping\"\n"),
        )
        .unwrap_err();
        assert!(
            err.message.contains("unknown variant `sleeping`") && err.line == Some(9),
            "{err}"
        );
    }
}

mod vrrp {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[agent]
interface = "eth0"

[[vrrp]]
name = "vi-apiserver"
interface = "eth0"
vrid = 51
priority = 150                    # 1..255
version = 3                       # 3 | 2
advert_interval = "1s"
preempt = true
preempt_delay = "0s"
virtual_addresses = ["198.18.0.100/24"]
unicast_peers = []
checksum = "rfc9568"
garp_count = 5
garp_repeat_delay = "5s"
track_dataplane = true
track_weight = 0
notify = "/etc/xdp-lb/notify"
"#;

    #[test]
    fn the_issue_example_parses() {
        let c = parse(Path::new("v.toml"), ISSUE_EXAMPLE).unwrap();
        let v = &c.vrrp[0];
        assert_eq!(
            (v.name.as_str(), v.vrid, v.priority, v.version),
            ("vi-apiserver", 51, 150, Version::V3)
        );
        assert_eq!(
            v.virtual_addresses,
            vec![("198.18.0.100".parse().unwrap(), 24)]
        );
        assert_eq!(
            (v.checksum, v.garp_count, v.track_dataplane),
            (ChecksumMode::Rfc9568, 5, true)
        );
        assert_eq!(v.notify.as_deref(), Some(Path::new("/etc/xdp-lb/notify")));
    }

    /// IPv6 instances (VRRPv3, RFC 5798): one family per instance, beside IPv4 ones.
    #[test]
    fn ipv6_instances_and_their_mistakes() {
        let v6 = ISSUE_EXAMPLE
            .replacen(
                "[\"198.18.0.100/24\"]",
                "[\"2001:2::100/64\", \"2001:2::101\"]",
                1,
            )
            .replacen("vrid = 51", "vrid = 52", 1);
        let c = parse(Path::new("v.toml"), &v6).unwrap();
        assert!(c.vrrp[0].is_ipv6());
        assert_eq!(
            c.vrrp[0].virtual_addresses,
            vec![
                ("2001:2::100".parse().unwrap(), 64),
                ("2001:2::101".parse().unwrap(), 128)
            ]
        );
        // Side by side with the IPv4 instance.
        let both = format!("{ISSUE_EXAMPLE}\n{}", &v6[v6.find("[[vrrp]]").unwrap()..]).replacen(
            "name = \"vi-apiserver\"",
            "name = \"v4\"",
            1,
        );
        let c = parse(Path::new("v.toml"), &both).unwrap();
        assert_eq!((c.vrrp[0].is_ipv6(), c.vrrp[1].is_ipv6()), (false, true));
        let cases = [
            (
                v6.replacen("\"2001:2::101\"", "\"198.18.0.101\"", 1),
                "vrrp[0].virtual_addresses",
                "one instance is IPv4 or IPv6",
            ),
            (
                v6.replacen("version = 3 ", "version = 2 ", 1),
                "vrrp[0].version",
                "VRRPv2 is IPv4 only",
            ),
            (
                v6.replacen("unicast_peers = []", "unicast_peers = [\"198.18.0.3\"]", 1),
                "vrrp[0].unicast_peers",
                "not of the family",
            ),
            (
                v6.replacen("\"2001:2::101\"", "\"fe80::1\"", 1),
                "vrrp[0].virtual_addresses",
                "link-local",
            ),
            (
                v6.replacen("\"2001:2::101\"", "\"2001:2::101/129\"", 1),
                "vrrp[0].virtual_addresses",
                "not an IPv4 or IPv6 address",
            ),
        ];
        for (text, key, fragment) in cases {
            let e = parse(Path::new("v.toml"), &text).unwrap_err();
            assert!(e.line.is_some(), "{e}");
            let s = e.to_string();
            assert!(s.contains(key) && s.contains(fragment), "{s}");
        }
    }

    #[test]
    fn vrrp_mistakes_name_line_and_key() {
        let cases = [
            ("vrid = 51", "vrid = 0", "vrrp[0].vrid", "out of range"),
            (
                "version = 3 ",
                "version = 4 ",
                "vrrp[0].version",
                "not a VRRP version",
            ),
            (
                "advert_interval = \"1s\"",
                "advert_interval = \"15ms\"",
                "vrrp[0].advert_interval",
                "10 ms steps",
            ),
            ("version = 3 ", "version = 2 ", "", ""),
            (
                "checksum = \"rfc9568\"",
                "checksum = \"crc32\"",
                "",
                "unknown variant `crc32`",
            ),
            (
                "virtual_addresses = [\"198.18.0.100/24\"]",
                "virtual_addresses = [\"198.18.0.100/33\"]",
                "vrrp[0].virtual_addresses",
                "not an IPv4 or IPv6 address",
            ),
            (
                "virtual_addresses = [\"198.18.0.100/24\"]",
                "virtual_addresses = []",
                "vrrp[0].virtual_addresses",
                "at least one",
            ),
            (
                "notify = \"/etc/xdp-lb/notify\"",
                "notify = \"notify.sh\"",
                "vrrp[0].notify",
                "absolute",
            ),
        ];
        for (from, to, key, fragment) in cases {
            let text = ISSUE_EXAMPLE.replacen(from, to, 1);
            match parse(Path::new("v.toml"), &text) {
                Ok(c) => {
                    assert!(key.is_empty(), "{to} should fail");
                    assert_eq!(c.vrrp[0].version, Version::V2);
                }
                Err(e) => {
                    assert!(e.line.is_some(), "{e}");
                    assert!(
                        e.to_string().contains(key) && e.to_string().contains(fragment),
                        "{to}: {e}"
                    );
                }
            }
        }
        // v2 intervals are whole seconds.
        let v2 = ISSUE_EXAMPLE
            .replacen("version = 3 ", "version = 2 ", 1)
            .replacen("\"1s\"", "\"1500ms\"", 1);
        let e = parse(Path::new("v.toml"), &v2).unwrap_err();
        assert!(e.to_string().contains("whole seconds"), "{e}");
    }
}

mod announce {
    use super::*;

    const BASE: &str = r#"
[agent]
interface = "eth0"

[[vip]]
name = "web"
address = "198.18.0.100"
port = 80

[[vip.backend]]
address = "198.18.0.11"

[[vip]]
name = "api"
address = "198.18.0.101"
port = 6443

[[vip.backend]]
address = "198.18.0.12"
"#;

    #[test]
    fn defaults_and_every_key() {
        let c = parse(Path::new("a.toml"), BASE).unwrap();
        assert_eq!(c.announce, None, "no section: nothing announced");
        let c = parse(Path::new("a.toml"), &format!("{BASE}\n[announce]\n")).unwrap();
        let a = c.announce.unwrap();
        assert_eq!(a.table, DEFAULT_ANNOUNCE_TABLE);
        assert_eq!(a.interface, "eth0", "defaults to agent.interface");
        assert_eq!(a.vips, ["web", "api"], "every VIP by default");
        assert_eq!(a.grace, DEFAULT_ANNOUNCE_GRACE);
        assert_eq!(a.engine_socket, Some(DEFAULT_ENGINE_SOCKET.into()));
        let text = format!(
            "{BASE}\n[announce]\ntable = 4242\ninterface = \"lo\"\nvips = [\"api\"]\ngrace = \"1500ms\"\nengine_socket = \"\"\n"
        );
        let a = parse(Path::new("a.toml"), &text).unwrap().announce.unwrap();
        assert_eq!(
            (
                a.table,
                a.interface.as_str(),
                a.vips,
                a.grace,
                a.engine_socket
            ),
            (
                4242,
                "lo",
                vec!["api".to_owned()],
                Duration::from_millis(1500),
                None
            )
        );
        let c = parse(
            Path::new("a.toml"),
            &format!("{BASE}\n[announce]\nvips = []\n"),
        )
        .unwrap();
        assert!(c.announce.unwrap().vips.is_empty());
        let w = &c.warnings[0];
        assert_eq!(
            (w.key.as_deref(), w.line),
            (Some("announce.vips"), Some(22))
        );
        assert!(w.message.contains("announces no VIP"), "{w}");
    }

    #[test]
    fn inconsistent_sections_name_line_and_key() {
        let vrrp = "\n[[vrrp]]\nname = \"lb\"\ninterface = \"eth0\"\nvrid = 51\npriority = 100\nvirtual_addresses = [\"198.18.0.100/24\"]\n";
        let cases: [(String, &str, &str); 8] = [
            ("table = 254".into(), "announce.table", "main"),
            ("table = 0".into(), "announce.table", "table 0"),
            ("table = -1".into(), "announce.table", "not a routing table"),
            (
                "vips = [\"nope\"]".into(),
                "announce.vips[0]",
                "no [[vip]] is named",
            ),
            (
                "vips = [\"web\", \"web\"]".into(),
                "announce.vips[1]",
                "listed twice",
            ),
            ("grace = \"10m\"".into(), "announce.grace", "out of range"),
            (
                "engine_socket = \"bird.ctl\"".into(),
                "announce.engine_socket",
                "absolute",
            ),
            (
                format!("table = 1000\n{vrrp}"),
                "announce.vips",
                "moved by VRRP",
            ),
        ];
        for (section, key, fragment) in cases {
            let text = format!("{BASE}\n[announce]\n{section}\n");
            let e = parse(Path::new("a.toml"), &text).unwrap_err();
            assert!(e.line.is_some(), "{section}: {e}");
            let s = e.to_string();
            assert!(
                s.starts_with("a.toml:") && s.contains(key) && s.contains(fragment),
                "{section}: {s}"
            );
        }
        // A VRRP address that is not announced is fine.
        let text = format!("{BASE}\n[announce]\nvips = [\"api\"]\n{vrrp}");
        assert!(parse(Path::new("a.toml"), &text).is_ok());
        // Unknown keys are caught by serde, with their line.
        let e = parse(
            Path::new("a.toml"),
            &format!("{BASE}\n[announce]\ntabel = 1\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tabel"), "{e}");
    }
}

mod ipv6 {
    use super::*;

    const DUAL: &str = r#"
[agent]
interface = "eth0"

[[vip]]
name = "web4"
address = "198.18.0.100"
port = 80

[[vip.backend]]
address = "198.18.0.11"

[[vip]]
name = "web6"
address = "2001:2::100"
port = 80

[[vip.backend]]
address = "2001:2::11"

[[vip.backend]]
address = "2001:2::12"
"#;

    fn err(from: &str, to: &str) -> ConfigError {
        assert!(DUAL.contains(from), "{from}");
        parse(Path::new("test.toml"), &DUAL.replacen(from, to, 1)).expect_err("rejected")
    }

    #[test]
    fn a_dual_stack_pair_of_vips_parses() {
        let c = parse(Path::new("test.toml"), DUAL).unwrap();
        assert_eq!(c.vips[1].address, "2001:2::100".parse::<IpAddr>().unwrap());
        assert_eq!(
            c.vips[1].backends[1].address,
            "2001:2::12".parse::<IpAddr>().unwrap()
        );
        assert_eq!(c.agent.flow_table_size_ipv6, DEFAULT_FLOW_TABLE_SIZE_IPV6);
    }

    #[test]
    fn a_vip_mixing_families_is_refused_at_the_backend() {
        let e = err("address = \"2001:2::12\"", "address = \"198.18.0.12\"");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (Some(22), Some("vip[1].backend[1].address")),
            "{e}"
        );
        assert!(e.message.contains("IPv6"), "{e}");
        let e = err("address = \"198.18.0.11\"", "address = \"2001:2::11\"");
        assert_eq!(e.key.as_deref(), Some("vip[0].backend[0].address"), "{e}");
    }

    #[test]
    fn what_ipv6_vips_cannot_have_is_refused_by_name() {
        let cases = [
            (
                "port = 80\n\n[[vip.backend]]\naddress = \"2001",
                "port = 80\nallow = [\"198.18.0.0/16\"]\n\n[[vip.backend]]\naddress = \"2001",
                "vip[1].allow[0]",
            ),
            (
                "port = 80\n\n[[vip.backend]]\naddress = \"2001",
                "port = 80\ndeny = [\"2001:2::1/48\"]\n\n[[vip.backend]]\naddress = \"2001",
                "vip[1].deny[0]",
            ),
            (
                "port = 80\n\n[[vip.backend]]\naddress = \"2001",
                "port = 80\nlimit_prefix_v4 = 24\nnew_flows_per_source = \"10/s\"\n\n[[vip.backend]]\naddress = \"2001",
                "vip[1].limit_prefix_v4",
            ),
        ];
        for (from, to, key) in cases {
            let e = err(from, to);
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.line, Some(17), "{e}");
        }
    }

    #[test]
    fn ipv6_vips_take_a_source_limit_per_v6_prefix() {
        let text = DUAL.replacen(
            "port = 80\n\n[[vip.backend]]\naddress = \"2001",
            "port = 80\nnew_flows_per_source = \"10/s\"\nlimit_prefix_v6 = 56\n\n[[vip.backend]]\naddress = \"2001",
            1,
        );
        let c = parse(Path::new("test.toml"), &text).unwrap();
        assert_eq!(c.vips[1].limit.unwrap().prefix, 56);
        let text = DUAL.replacen(
            "port = 80\n\n[[vip.backend]]\naddress = \"2001",
            "port = 80\nnew_flows_per_source = \"10/s\"\n\n[[vip.backend]]\naddress = \"2001",
            1,
        );
        let c = parse(Path::new("test.toml"), &text).unwrap();
        assert_eq!(c.vips[1].limit.unwrap().prefix, 64, "a /64 by default");
        let e = err(
            "port = 80\n\n[[vip.backend]]\naddress = \"2001",
            "port = 80\nnew_flows_per_source = \"10/s\"\nlimit_prefix_v6 = 129\n\n[[vip.backend]]\naddress = \"2001",
        );
        assert_eq!(e.key.as_deref(), Some("vip[1].limit_prefix_v6"), "{e}");
    }

    #[test]
    fn nat66_takes_an_snat_address_per_family() {
        let text = DUAL
            .replacen(
                "port = 80\n\n[[vip.backend]]\naddress = \"2001",
                "port = 80\nforwarding = \"nat\"\n\n[[vip.backend]]\naddress = \"2001",
                1,
            )
            .replace(
                "interface = \"eth0\"",
                "interface = \"eth0\"\nsnat_address = [\"198.18.0.2\", \"2001:2::2\"]",
            );
        let c = parse(Path::new("test.toml"), &text).unwrap();
        assert_eq!(c.vips[1].forwarding, Forwarding::Nat);
        assert_eq!(c.agent.snat_address.v4, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(c.agent.snat_address.v6, Some("2001:2::2".parse().unwrap()));
        // One string of either family is the short form.
        let one = DUAL.replace(
            "interface = \"eth0\"",
            "interface = \"eth0\"\nsnat_address = \"2001:2::2\"",
        );
        let c = parse(Path::new("test.toml"), &one).unwrap();
        assert_eq!(c.agent.snat_address.v4, None);
        assert_eq!(c.agent.snat_address.v6, Some("2001:2::2".parse().unwrap()));
        for (value, why) in [
            ("[\"2001:2::2\", \"2001:2::3\"]", "one per family"),
            ("[\"198.18.0.2\", \"198.18.0.3\"]", "one per family"),
            ("\"fe80::2\"", "link-local"),
            ("\"::1\"", "loopback"),
            ("\"2001:2::2/64\"", "not an IP address"),
        ] {
            let text = DUAL.replace(
                "interface = \"eth0\"",
                &format!("interface = \"eth0\"\nsnat_address = {value}"),
            );
            let e = parse(Path::new("test.toml"), &text).expect_err(value);
            assert_eq!(e.key.as_deref(), Some("agent.snat_address"), "{e}");
            assert_eq!(e.line, Some(4), "{e}");
            assert!(e.to_string().contains(why), "{value}: {e}");
        }
    }

    #[test]
    fn unusable_ipv6_addresses_are_refused() {
        for (from, to, key) in [
            ("\"2001:2::100\"", "\"fe80::1\"", "vip[1].address"),
            ("\"2001:2::100\"", "\"ff02::1\"", "vip[1].address"),
            ("\"2001:2::100\"", "\"::\"", "vip[1].address"),
            ("\"2001:2::11\"", "\"::1\"", "vip[1].backend[0].address"),
            (
                "\"2001:2::11\"",
                "\"::ffff:198.18.0.1\"",
                "vip[1].backend[0].address",
            ),
        ] {
            let e = err(from, to);
            assert_eq!(e.key.as_deref(), Some(key), "{from} → {to}: {e}");
        }
    }
}

mod udp {
    use super::*;

    const DNS: &str = r#"[agent]
interface = "eth0"
nat_udp_timeout = "45s"

[[vip]]
name = "dns-udp"
address = "198.18.0.100"
port = 53
protocol = "udp"
[vip.health_check]
type = "dns"
dns_name = "whoami.test."
dns_type = "aaaa"
dns_expect_rcode = "NXDOMAIN"
[[vip.backend]]
address = "198.18.0.11"

[[vip]]
name = "dns-tcp"
address = "198.18.0.100"
port = 53
[[vip.backend]]
address = "198.18.0.11"
"#;

    fn err(from: &str, to: &str) -> ConfigError {
        assert!(DNS.contains(from), "{from}");
        parse(Path::new("dns.toml"), &DNS.replacen(from, to, 1)).unwrap_err()
    }

    #[test]
    fn a_udp_and_a_tcp_vip_share_an_address_and_port() {
        let c = parse(Path::new("dns.toml"), DNS).unwrap();
        assert_eq!(c.agent.nat_udp_timeout, Duration::from_secs(45));
        assert_eq!(
            (c.vips[0].protocol, c.vips[1].protocol),
            (Protocol::Udp, Protocol::Tcp)
        );
        let h = &c.vips[0].health_check;
        assert_eq!(h.kind, CheckType::Dns);
        assert_eq!(
            h.dns,
            Some(DnsCheckConfig {
                name: "whoami.test".into(),
                qtype: 28,
                rcode: 3
            })
        );
        let d = parse(
            Path::new("dns.toml"),
            &DNS.replace("nat_udp_timeout = \"45s\"\n", ""),
        );
        assert_eq!(d.unwrap().agent.nat_udp_timeout, Duration::from_secs(30));
        // Defaults: type A, NOERROR; TYPE<n> for the rest.
        let text = DNS
            .replace("dns_type = \"aaaa\"\n", "")
            .replace("dns_expect_rcode = \"NXDOMAIN\"\n", "");
        let dns = parse(Path::new("dns.toml"), &text).unwrap().vips[0]
            .health_check
            .dns
            .clone()
            .unwrap();
        assert_eq!((dns.qtype, dns.rcode), (1, 0));
        let c = parse(
            Path::new("dns.toml"),
            &DNS.replace("\"aaaa\"", "\"TYPE65\""),
        )
        .unwrap();
        assert_eq!(c.vips[0].health_check.dns.as_ref().unwrap().qtype, 65);
    }

    #[test]
    fn udp_mistakes_name_line_and_key() {
        let cases = [
            (
                "port = 53\n[[vip.backend]]",
                "port = 53\nprotocol = \"udp\"\n[[vip.backend]]",
                "vip[1].port",
                "198.18.0.100:53/udp is already used",
            ),
            (
                "protocol = \"udp\"",
                "protocol = \"sctp\"",
                "",
                "unknown variant `sctp`, expected `tcp` or `udp`",
            ),
            (
                "dns_name = \"whoami.test.\"",
                "dns_name = \"who..ami\"",
                "vip[0].health_check.dns_name",
                "1 to 63",
            ),
            (
                "dns_name = \"whoami.test.\"\n",
                "",
                "vip[0].health_check.dns_name",
                "needs dns_name",
            ),
            (
                "\"aaaa\"",
                "\"AAAAA\"",
                "vip[0].health_check.dns_type",
                "not a query type",
            ),
            (
                "\"NXDOMAIN\"",
                "\"NOPE\"",
                "vip[0].health_check.dns_expect_rcode",
                "not a response code",
            ),
            (
                "type = \"dns\"",
                "type = \"tcp\"",
                "vip[0].health_check.dns_name",
                "needs type = \"dns\"",
            ),
            (
                "nat_udp_timeout = \"45s\"",
                "nat_udp_timeout = \"0s\"",
                "agent.nat_udp_timeout",
                "",
            ),
        ];
        for (from, to, key, fragment) in cases {
            let e = err(from, to);
            if !key.is_empty() {
                assert_eq!(e.key.as_deref(), Some(key), "{to}: {e}");
            }
            assert!(e.line.is_some(), "{to}: {e}");
            assert!(e.to_string().contains(fragment), "{to}: {e}");
        }
    }

    #[test]
    fn a_udp_vip_checked_by_tcp_must_name_the_port() {
        // No check section: the default tcp check would connect to the UDP port.
        let text = DNS.replace(
            "[vip.health_check]\ntype = \"dns\"\ndns_name = \"whoami.test.\"\ndns_type = \"aaaa\"\ndns_expect_rcode = \"NXDOMAIN\"\n",
            "",
        );
        let e = parse(Path::new("dns.toml"), &text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("vip[0].health_check"), "{e}");
        assert_eq!(e.line, Some(7), "the VIP's address: {e}");
        assert!(e.to_string().contains("type = \"dns\""), "{e}");
        let tcp = "[vip.health_check]\ntype = \"tcp\"\n";
        let text = DNS.replace(
            "[vip.health_check]\ntype = \"dns\"\ndns_name = \"whoami.test.\"\ndns_type = \"aaaa\"\ndns_expect_rcode = \"NXDOMAIN\"\n",
            tcp,
        );
        let e = parse(Path::new("dns.toml"), &text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("vip[0].health_check.port"), "{e}");
        // With a port: the backends' TCP port 8053 is probed.
        let ok = text.replace(tcp, "[vip.health_check]\ntype = \"tcp\"\nport = 8053\n");
        let c = parse(Path::new("dns.toml"), &ok).unwrap();
        assert_eq!(c.vips[0].health_check.port, Some(8053));
        let none = text.replace(tcp, "[vip.health_check]\ntype = \"none\"\n");
        parse(Path::new("dns.toml"), &none).unwrap();
    }

    #[test]
    fn a_dns_check_on_a_tcp_vip_queries_the_backends_port_over_udp() {
        let text = DNS.replace(
            "name = \"dns-tcp\"\naddress = \"198.18.0.100\"\nport = 53\n",
            "name = \"dns-tcp\"\naddress = \"198.18.0.100\"\nport = 53\n[vip.health_check]\ntype = \"dns\"\ndns_name = \"example.org\"\n",
        );
        let c = parse(Path::new("dns.toml"), &text).unwrap();
        assert_eq!(c.vips[1].health_check.kind, CheckType::Dns);
        assert_eq!(c.vips[1].health_check.port, None);
    }
}

mod sync {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A root-only key file (the tests run as root: `cargo xtask test`).
    fn key_file(mode: u32, len: usize) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("xlb-cfg-{}-{n}.key", std::process::id()));
        std::fs::write(&p, vec![1u8; len]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn with(keys: &str) -> Result<Config, ConfigError> {
        parse(
            Path::new("s.toml"),
            &format!("[agent]\ninterface = \"eth0\"\n\n[sync]\n{keys}\n"),
        )
    }

    #[test]
    fn a_sync_section_parses_with_its_defaults_and_each_mistake_names_its_key() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // the key must be root's: nothing to check as another user
        }
        let key = key_file(0o600, 32);
        let k = key.display();
        let c = with(&format!("peers = [\"198.18.0.3\"]\nkey_file = \"{k}\"")).unwrap();
        let s = c.sync.unwrap();
        assert_eq!(
            (
                s.port,
                s.batch_interval,
                s.max_datagrams_per_second,
                s.queue,
                s.source
            ),
            (
                DEFAULT_SYNC_PORT,
                DEFAULT_SYNC_BATCH,
                DEFAULT_SYNC_RATE,
                DEFAULT_SYNC_QUEUE,
                None
            )
        );
        let open = key_file(0o644, 32);
        let short = key_file(0o600, 8);
        let cases = [
            (
                format!("peers = []\nkey_file = \"{k}\""),
                "sync.peers",
                "1 to 16",
            ),
            (
                format!("peers = [\"198.18.0.3\", \"198.18.0.3\"]\nkey_file = \"{k}\""),
                "sync.peers[1]",
                "listed twice",
            ),
            (
                format!("peers = [\"224.0.0.18\"]\nkey_file = \"{k}\""),
                "sync.peers[0]",
                "unicast",
            ),
            (
                format!(
                    "peers = [\"198.18.0.3\"]\nkey_file = \"{}\"",
                    open.display()
                ),
                "sync.key_file",
                "chmod 600",
            ),
            (
                format!(
                    "peers = [\"198.18.0.3\"]\nkey_file = \"{}\"",
                    short.display()
                ),
                "sync.key_file",
                "at least 32",
            ),
            (
                "peers = [\"198.18.0.3\"]\nkey_file = \"/nonexistent/sync.key\"".into(),
                "sync.key_file",
                "No such file",
            ),
            (
                format!("peers = [\"198.18.0.3\"]\nkey_file = \"{k}\"\nport = 0"),
                "sync.port",
                "not a port",
            ),
            (
                format!("peers = [\"198.18.0.3\"]\nkey_file = \"{k}\"\nsource = \"198.18.0.3\""),
                "sync.source",
                "does not sync with itself",
            ),
            (
                format!("peers = [\"198.18.0.3\"]\nkey_file = \"{k}\"\nsource = \"2001:2::2\""),
                "sync.source",
                "different families",
            ),
            (
                format!("peers = [\"198.18.0.3\"]\nkey_file = \"{k}\"\nbatch_interval = \"2s\""),
                "sync.batch_interval",
                "out of range",
            ),
            (
                format!("peers = [\"198.18.0.3\"]\nkey_file = \"{k}\"\nqueue = 0"),
                "sync.queue",
                "out of range",
            ),
        ];
        for (text, key, fragment) in cases {
            let e = with(&text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.line.is_some(), "{text}: {e}");
            assert!(e.to_string().contains(fragment), "{text}: {e}");
        }
        let e = with(&format!(
            "peers = [\"198.18.0.3\"]\nkey_file = \"{k}\"\npeer = 1"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `peer`"), "{e}");
        for p in [key, open, short] {
            let _ = std::fs::remove_file(p);
        }
    }
}
