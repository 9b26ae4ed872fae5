//! Looking inside: `xdp-lb inspect` in every form, checked against the traffic the test sent.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use serde_json::Value;
use xdp_lb_tests::{
    Agent, DsrTopology, TcpService, http_get, in_netns, require_root,
    topology::{VIP, xdp_lb_cli_in},
};

const PORT: u16 = 80;
const CONNECTIONS: usize = 60;

struct Bed {
    topo: DsrTopology,
    services: Vec<TcpService>,
    agent: Agent,
}

/// The bed: three backends, fast checks; `flow_log_rate` turns the flow log on.
fn bed(flow_log_rate: Option<u32>) -> Bed {
    let topo = DsrTopology::new(3).unwrap();
    let services = (0..3)
        .map(|i| TcpService::start(&topo.backends[i].name, PORT, &format!("be{}", i + 1)).unwrap())
        .collect();
    let config = topo.dir.join("xdp-lb.toml");
    let mut agent_config = topo.agent_config(&topo.pin_dir());
    if let Some(rate) = flow_log_rate {
        agent_config = agent_config
            .key("flow_log", true)
            .key("flow_log_rate", rate);
    }
    let text = agent_config
        .vip(
            topo.vip(PORT)
                // One backend named, two by their addresses (the default).
                .backend_name(1, "be2")
                .key("maglev_table_size", 4093)
                // A list no test source is on: shown by `status`, counted as "refused".
                .list("deny", &["198.19.255.0/24"])
                .check("interval", "300ms"),
        )
        .to_string();
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(
        &topo.lb,
        &["run", "--config", config.to_str().unwrap()],
        topo.dir.join("agent.log"),
        "xdp-lb is forwarding",
        Duration::from_secs(20),
    )
    .unwrap();
    Bed {
        topo,
        services,
        agent,
    }
}

fn traffic(bed: &Bed, n: usize) {
    let answers = in_netns(&bed.topo.client.name, move || {
        (0..n)
            .map(|_| http_get(SocketAddr::from((VIP, PORT)), Duration::from_secs(2)))
            .collect::<Vec<_>>()
    })
    .unwrap();
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
}

fn inspect_json(bed: &Bed, args: &[&str]) -> Value {
    let pin = bed.topo.pin_dir();
    let mut full = vec!["inspect"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--json", "--pin-dir", pin.to_str().unwrap()]);
    let (code, out, err) = xdp_lb_cli_in(&bed.topo.lb, &full).unwrap();
    assert_eq!(code, 0, "{full:?}: {err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{full:?} printed invalid JSON ({e}): {out}"))
}

#[test]
fn inspect_in_every_form_matches_the_traffic_sent() {
    require_root!();
    let mut bed = bed(None);
    traffic(&bed, CONNECTIONS);

    let vips = inspect_json(&bed, &["vips"]);
    let web = &vips[0];
    assert_eq!(
        (
            web["name"].as_str(),
            web["address"].as_str(),
            web["port"].as_u64()
        ),
        (Some("web"), Some("198.18.0.100"), Some(80))
    );
    assert_eq!(
        (
            web["backends"].as_u64(),
            web["backends_in_table"].as_u64(),
            web["table_size"].as_u64()
        ),
        (Some(3), Some(3), Some(4093))
    );
    assert_eq!(
        web["traffic"]["new_flows"].as_u64(),
        Some(CONNECTIONS as u64),
        "one new flow per connection"
    );
    let vip_packets = web["traffic"]["packets"].as_u64().unwrap();
    assert!(
        vip_packets >= 4 * CONNECTIONS as u64,
        "SYN, ACK, request, ACK/FIN per connection: {vip_packets}"
    );

    let backends = inspect_json(&bed, &["backends", "--vip", "web"]);
    let backends = backends.as_array().unwrap();
    assert_eq!(backends.len(), 3);
    let flows_sum: u64 = backends
        .iter()
        .map(|b| b["traffic"]["new_flows"].as_u64().unwrap())
        .sum();
    assert_eq!(flows_sum, CONNECTIONS as u64);
    let share_sum: f64 = backends
        .iter()
        .map(|b| b["table_share_pct"].as_f64().unwrap())
        .sum();
    assert!((share_sum - 100.0).abs() < 0.01, "{share_sum}");
    for (i, b) in backends.iter().enumerate() {
        let be = &bed
            .topo
            .backends
            .iter()
            .find(|ns| ns.name.ends_with(&format!("be{}", i + 1)))
            .unwrap();
        let link = be.ip(&["-j", "link", "show", "eth0"]).unwrap();
        let mac = serde_json::from_str::<Value>(&link).unwrap()[0]["address"]
            .as_str()
            .unwrap()
            .to_owned();
        let row = backends
            .iter()
            .find(|r| r["address"] == format!("198.18.0.{}", 11 + i))
            .unwrap();
        assert_eq!(row["mac"].as_str(), Some(mac.as_str()), "{b}");
        let name = if i == 1 {
            "be2".into()
        } else {
            format!("198.18.0.{}", 11 + i)
        };
        assert_eq!(row["name"].as_str(), Some(name.as_str()), "{row}");
        assert_eq!(
            (
                row["interface"].as_str(),
                row["weight"].as_u64(),
                row["forwarding"].as_bool()
            ),
            (Some("eth0"), Some(1), Some(true))
        );
    }

    let flows = inspect_json(&bed, &["flows", "--vip", "web", "--limit", "1000"]);
    let flows = flows.as_array().unwrap();
    assert_eq!(
        flows.len(),
        CONNECTIONS,
        "one flow-table entry per connection"
    );
    let clients: BTreeSet<&str> = flows
        .iter()
        .map(|f| f["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients.len(), CONNECTIONS);
    assert!(
        flows
            .iter()
            .all(|f| f["client"].as_str().unwrap().starts_with("198.18.0.1:")
                && f["vip"] == "198.18.0.100:80"
                && ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
                    .contains(&f["backend"].as_str().unwrap())
                && (f["backend"] == "198.18.0.12") == (f["backend_name"] == "be2")
                && f["age_seconds"].as_f64().unwrap() < 60.0)
    );
    assert_eq!(
        inspect_json(&bed, &["flows", "--limit", "7"])
            .as_array()
            .unwrap()
            .len(),
        7
    );

    let stats = inspect_json(&bed, &["stats"]);
    assert_eq!(
        stats["stats"]["counters"]["new_flow"].as_u64(),
        Some(CONNECTIONS as u64)
    );
    assert_eq!(stats["stats"]["counters"]["tx"].as_u64(), Some(vip_packets));
    assert_eq!(
        stats["stats"]["flow_table_entries"].as_u64(),
        Some(CONNECTIONS as u64)
    );

    let maglev = inspect_json(&bed, &["maglev", "--vip", "web"]);
    for b in maglev["backends"].as_array().unwrap() {
        let (share, want) = (
            b["share_pct"].as_f64().unwrap(),
            b["weight_share_pct"].as_f64().unwrap(),
        );
        assert!((share - want).abs() <= 1.0, "{b}");
    }

    // Text forms print tables.
    let pin = bed.topo.pin_dir();
    let pin = pin.to_str().unwrap();
    let (code, out, _) =
        xdp_lb_cli_in(&bed.topo.lb, &["inspect", "backends", "--pin-dir", pin]).unwrap();
    assert!(
        code == 0 && out.contains("BACKEND") && out.contains("198.18.0.12"),
        "{out}"
    );
    let (code, out, _) =
        xdp_lb_cli_in(&bed.topo.lb, &["inspect", "stats", "--pin-dir", pin]).unwrap();
    assert!(code == 0 && out.contains("new_flow"), "{out}");
    println!("$ xdp-lb inspect stats\n{out}");
    let (code, out, _) = xdp_lb_cli_in(
        &bed.topo.lb,
        &[
            "inspect",
            "stats",
            "--watch",
            "100ms",
            "--count",
            "2",
            "--pin-dir",
            pin,
        ],
    )
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(out.matches("COUNTER").count(), 2, "{out}");
    assert!(out.contains("PER SECOND"));

    // Errors are clear.
    let (code, _, err) = xdp_lb_cli_in(
        &bed.topo.lb,
        &["inspect", "maglev", "--vip", "nope", "--pin-dir", pin],
    )
    .unwrap();
    assert!(
        code != 0 && err.contains("no VIP named \"nope\" (there are: web)"),
        "{err}"
    );
    let (code, _, err) = xdp_lb_cli_in(
        &bed.topo.lb,
        &[
            "inspect",
            "vips",
            "--pin-dir",
            "/sys/fs/bpf/xlbt-nothing-here",
        ],
    )
    .unwrap();
    assert!(code != 0 && err.contains("is xdp-lb running?"), "{err}");

    // With the agent dead and the data plane kept, inspect still reads everything.
    bed.agent.kill9();
    let vips = inspect_json(&bed, &["vips"]);
    assert_eq!(
        vips[0]["traffic"]["new_flows"].as_u64(),
        Some(CONNECTIONS as u64)
    );
}

fn fetch(bed: &Bed, path: &'static str) -> (u16, String) {
    in_netns(&bed.topo.lb.name, move || {
        xdp_lb_tests::service::http_fetch(
            SocketAddr::from(([127, 0, 0, 1], 9100)),
            path,
            Duration::from_secs(5),
        )
    })
    .unwrap()
    .unwrap()
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{metrics}"))
}

fn promtool_check(metrics: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_pass_promtool_and_move_with_traffic_and_the_stats_page_renders() {
    require_root!();
    let mut bed = bed(None);
    let (code, before) = fetch(&bed, "/metrics");
    assert_eq!(code, 200, "{before}");
    promtool_check(&before);
    let key = "xdp_lb_vip_new_flows_total{vip=\"web\",address=\"198.18.0.100:80\"}";
    let flows_before = sample(&before, key);

    traffic(&bed, 30);
    let (_, after) = fetch(&bed, "/metrics");
    promtool_check(&after);
    assert_eq!(sample(&after, key) - flows_before, 30.0);
    assert!(
        sample(&after, "xdp_lb_vip_packets_total{vip=\"web\"")
            > sample(&before, "xdp_lb_vip_packets_total{vip=\"web\"")
    );
    for (name, b) in [
        ("198.18.0.11", "198.18.0.11"),
        ("be2", "198.18.0.12"),
        ("198.18.0.13", "198.18.0.13"),
    ] {
        assert_eq!(
            sample(
                &after,
                &format!("xdp_lb_backend_up{{vip=\"web\",backend=\"{name}\",address=\"{b}\"}}")
            ),
            1.0
        );
    }
    assert_eq!(
        sample(&after, "xdp_lb_flow_table_entries"),
        30.0 + flows_before
    );
    assert!(sample(&after, "xdp_lb_packets_total{verdict=\"tx\"}") > 0.0);

    let (code, body) = fetch(&bed, "/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));

    let (code, page) = fetch(&bed, "/stats");
    assert_eq!(code, 200);
    assert!(
        page.contains("web")
            && page.contains("198.18.0.12")
            && page.contains("be2</td>")
            && page.contains("http-equiv=\"refresh\"")
            && page.contains(">refused</th>")
            && page.contains("rate limited 0\">0</td>"),
        "{page}"
    );
    let socket = bed.topo.control_socket();
    let (code, out, err) = xdp_lb_cli_in(
        &bed.topo.lb,
        &["status", "--socket", socket.to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "  protection: deny 198.19.255.0/24; refused: denied 0, not allowed 0, rate limited 0\n"
        ),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("be2 ") && l.contains("198.18.0.12")),
        "status names the backend: {out}"
    );

    // Rates need a sample a second old (the history takes one when the agent starts); one
    // backend down, to see its state with its age and cause.
    std::thread::sleep(Duration::from_millis(1100));
    traffic(&bed, 10);
    bed.services.remove(2);
    bed.agent
        .wait_for_log("backend DOWN", Duration::from_secs(5))
        .unwrap();

    // Rendered by a real browser, inside the LB's namespace (the page is on its loopback).
    let shots = xdp_lb_tests::topology::target_dir().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("stats.png");
    let _ = std::fs::remove_file(&png);
    let profile = bed.topo.dir.join("chromium-profile");
    let chromium = |extra: &[&str]| {
        let mut args = vec![
            "netns",
            "exec",
            &bed.topo.lb.name,
            "timeout",
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--hide-scrollbars",
            "--window-size=1280,800",
        ];
        let profile_arg = format!("--user-data-dir={}", profile.display());
        args.push(&profile_arg);
        args.extend_from_slice(extra);
        args.push("http://127.0.0.1:9100/stats");
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .expect("chromium (Debian's chromium package)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, dom, err) = chromium(&["--dump-dom"]);
    assert!(ok, "chromium --dump-dom failed: {err}");
    for text in [
        "xdp-lb statistics",
        "web",
        "198.18.0.100:80/tcp",
        "198.18.0.11",
        "198.18.0.13",
        "UP",
        // The down backend: its state, how long (seconds), why.
        ">DOWN ",
        " s, connect refused</td>",
        // The counters at zero, folded.
        "counters at zero</summary>",
    ] {
        assert!(
            dom.contains(text),
            "the rendered page lacks {text:?}:\n{dom}"
        );
    }
    // The VIP's rates: numbers, not "–", and packets moving.
    let vip_row = dom
        .split("<tr class=\"vip\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap();
    let cells: Vec<&str> = vip_row
        .split("<td")
        .filter_map(|c| c.split('>').nth(1)?.split('<').next())
        .collect();
    let pps: f64 = cells[6]
        .parse()
        .unwrap_or_else(|_| panic!("pkt/s {:?} in {vip_row}", cells[6]));
    assert!(pps > 0.0, "{vip_row}");
    assert!(
        cells[7].parse::<f64>().is_ok() || cells[7].ends_with('k') || cells[7].ends_with('M'),
        "bit/s {:?}",
        cells[7]
    );
    let shot_arg = format!("--screenshot={}", png.display());
    let (ok, _, err) = chromium(&[&shot_arg]);
    assert!(ok && png.exists(), "no screenshot: {err}");
    assert!(
        std::fs::metadata(&png).unwrap().len() > 5_000,
        "the screenshot is suspiciously small"
    );
    println!("screenshot: {}", png.display());
}

#[test]
fn the_flow_log_reports_new_flows_and_drops_within_its_rate() {
    require_root!();
    let mut bed = bed(Some(5));
    traffic(&bed, 20);
    // Every new flow is either logged or counted as suppressed; wait (bounded) for the log.
    let maps = xdp_lb::dataplane::Maps::open_pinned(&bed.topo.pin_dir()).unwrap();
    let suppressed = || -> u32 { maps.flow_log_budgets().iter().map(|b| b.suppressed).sum() };
    let logged = |bed: &Bed| {
        bed.agent
            .log_text()
            .lines()
            .filter(|l| l.contains("flow new client=198.18.0.1:"))
            .count() as u32
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while logged(&bed) + suppressed() < 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = bed.agent.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("flow new client=198.18.0.1:"))
        .collect();
    let cpus = std::thread::available_parallelism().unwrap().get();
    println!(
        "{} flow-log lines for 20 connections, limit 5/s on each of {cpus} CPUs",
        lines.len()
    );
    assert!(!lines.is_empty(), "{log}");
    assert!(
        lines.len() <= 5 * cpus,
        "the rate limit must hold: {}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("vip=198.18.0.100:80 backend=198.18.0.1")),
        "{lines:?}"
    );
    // The named backend is named in the log; the others are their addresses alone.
    assert!(
        lines
            .iter()
            .all(|l| l.contains("backend=198.18.0.12 name=be2")
                == l.contains("backend=198.18.0.12")
                && (l.contains("name=") == l.contains("backend=198.18.0.12"))),
        "{lines:?}"
    );
    let suppressed: u32 = maps.flow_log_budgets().iter().map(|b| b.suppressed).sum();
    assert_eq!(
        lines.len() as u32 + suppressed,
        20,
        "every new flow is either logged or counted as suppressed"
    );

    // Drops are reported too: with every backend down, a new connection is dropped.
    bed.services.clear();
    bed.agent
        .wait_for_log("VIP has no usable backend", Duration::from_secs(5))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // a fresh rate window
    let r = in_netns(&bed.topo.client.name, || {
        http_get(SocketAddr::from((VIP, PORT)), Duration::from_millis(300))
    })
    .unwrap();
    assert!(r.is_err());
    bed.agent
        .wait_for_log("flow drop client=198.18.0.1:", Duration::from_secs(2))
        .unwrap();
    assert!(
        bed.agent
            .log_text()
            .contains("vip=198.18.0.100:80 reason=drop_no_backend")
    );
    // The first drop per source per second: five more dropped SYNs within half a second (the
    // budget, 5 a second per CPU, would take them all) add at most two lines (a second may
    // begin in between).
    let drop_lines = |bed: &Bed| {
        bed.agent
            .log_text()
            .matches("flow drop client=198.18.0.1:")
            .count()
    };
    std::thread::sleep(Duration::from_millis(1100));
    let before = drop_lines(&bed);
    in_netns(&bed.topo.client.name, || {
        for _ in 0..5 {
            let _ = http_get(SocketAddr::from((VIP, PORT)), Duration::from_millis(80));
        }
    })
    .unwrap();
    bed.agent
        .wait_for_log("reason=drop_no_backend", Duration::from_secs(2))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let added = drop_lines(&bed) - before;
    assert!((1..=2).contains(&added), "{added} drop lines for 5 drops");
}

/// `xdp-lb capture` with `args`, started before `traffic` runs and waited for (it stops at
/// its --count; bounded by --seconds): its exit code and stderr, and `tcpdump -r`'s reading of
/// the file (one line per frame, with MACs).
fn capture(
    bed: &Bed,
    name: &str,
    args: &[&str],
    traffic: impl FnOnce(),
) -> (i32, String, String, Vec<u8>) {
    use std::process::{Command, Stdio};
    let file = bed.topo.dir.join(format!("{name}.pcapng"));
    let pin = bed.topo.pin_dir();
    // The pins are on the bpf filesystem, the same from every namespace: run it from here.
    let child = Command::new(xdp_lb_tests::topology::xdp_lb_binary().unwrap())
        .args([
            "capture",
            "-w",
            file.to_str().unwrap(),
            "--pin-dir",
            pin.to_str().unwrap(),
            "--seconds",
            "10",
        ])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Started once its config is in the map (bounded wait).
    let config_pin = pin.join(xdp_lb_common::map_names::CAPTURE_CONFIG);
    let on = || -> bool {
        let Ok(data) = aya::maps::MapData::from_pin(&config_pin) else {
            return false;
        };
        let Ok(map) = aya::maps::Array::<_, xdp_lb_common::CaptureConfig>::try_from(
            aya::maps::Map::Array(data),
        ) else {
            return false;
        };
        map.get(&0, 0).is_ok_and(|c| c.every != 0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !on() {
        assert!(
            std::time::Instant::now() < deadline,
            "the capture never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    traffic();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let read = std::process::Command::new("tcpdump")
        .args(["-r", file.to_str().unwrap(), "-nn", "-e"])
        .output()
        .expect("tcpdump (Debian's tcpdump package; cargo xtask setup)");
    assert!(
        read.status.success(),
        "tcpdump -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&read.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        err,
        String::from_utf8_lossy(&read.stdout).into_owned(),
        std::fs::read(&file).unwrap(),
    )
}

/// The MAC of `eth0` in a backend's namespace.
fn backend_mac(bed: &Bed, i: usize) -> String {
    let link = bed.topo.backends[i]
        .ip(&["-j", "link", "show", "eth0"])
        .unwrap();
    serde_json::from_str::<Value>(&link).unwrap()[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn capture_records_the_rewritten_frames_and_the_drops_with_their_verdict() {
    require_root!();
    let mut bed = bed(None);
    let macs: Vec<String> = (0..3).map(|i| backend_mac(&bed, i)).collect();

    // Every frame the program sent to a VIP's backend: the MACs rewritten (DSR), the VIP kept.
    let (code, err, read, raw) = capture(&bed, "all", &["--vip", "web", "--count", "12"], || {
        traffic(&bed, 5);
    });
    assert_eq!(code, 0, "{err}");
    println!("{err}{read}");
    let lines: Vec<&str> = read.lines().collect();
    assert_eq!(lines.len(), 12, "--count 12: {read}");
    for l in &lines {
        assert!(l.contains("> 198.18.0.100.80:"), "to the VIP: {l}");
        assert!(
            macs.iter().any(|m| l.contains(&format!("> {m}"))),
            "to a backend's MAC: {l}"
        );
    }
    assert!(
        err.contains("12 frame(s) written (12 sent, 0 dropped)"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("xdp-lb: tx vip=web backend="),
        "the verdict in each frame's comment"
    );

    // One backend by its name: only frames to its MAC.
    let (code, err, read, raw) =
        capture(&bed, "be2", &["--backend", "be2", "--count", "4"], || {
            traffic(&bed, 20);
        });
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = read.lines().collect();
    assert_eq!(lines.len(), 4, "{read}");
    assert!(
        lines.iter().all(|l| l.contains(&format!("> {}", macs[1]))),
        "only be2's: {read}"
    );
    assert!(String::from_utf8_lossy(&raw).contains("backend=be2"));

    // A name that is not there is refused with the names that are.
    let (code, _, err) = xdp_lb_tests::topology::xdp_lb_cli(&[
        "capture",
        "-w",
        "/dev/null",
        "--backend",
        "nope",
        "--pin-dir",
        bed.topo.pin_dir().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("no backend named \"nope\"") && err.contains("be2"),
        "{err}"
    );

    // Drops, with the reason: every backend down, a SYN to the VIP is dropped.
    bed.services.clear();
    bed.agent
        .wait_for_log("VIP has no usable backend", Duration::from_secs(5))
        .unwrap();
    let (code, err, read, raw) = capture(&bed, "drops", &["--drops-only", "--count", "1"], || {
        let r = in_netns(&bed.topo.client.name, || {
            http_get(SocketAddr::from((VIP, PORT)), Duration::from_millis(300))
        })
        .unwrap();
        assert!(r.is_err());
    });
    assert_eq!(code, 0, "{err}");
    assert_eq!(read.lines().count(), 1, "{read}");
    assert!(
        read.contains("> 198.18.0.100.80: Flags [S]"),
        "the client's SYN as it came: {read}"
    );
    assert!(String::from_utf8_lossy(&raw).contains("xdp-lb: drop reason=drop_no_backend"));
}
