//! `haproxy.cfg`: `frontend`/`listen` sections in `mode tcp` become VIPs, their backends' `server`
//! lines (with `default-server`) become backends, `option httpchk` & co. become the VIP's check,
//! and a stats listener becomes `agent.listen`. Everything else is reported as ignored, with why.

use std::{path::Path, time::Duration};

mod resolve;

use super::{Check, ImportError, Outcome, Plan, Source, duration, read_file};

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
pub(super) const VALUED: [&str; 34] = [
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
pub(super) struct Proxy {
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) from: Option<Source>,
    pub(super) mode: Option<String>,
    pub(super) binds: Vec<(String, Source)>,
    pub(super) default_backend: Option<String>,
    pub(super) use_backends: Vec<(String, bool, Source)>,
    pub(super) servers: Vec<(String, Source)>,
    pub(super) default_server: Vec<(String, Source)>,
    pub(super) check: Check,
    /// `http-check connect ssl` or `check-ssl` on `default-server`.
    pub(super) check_ssl: bool,
    /// `option ssl-hello-chk`: with `option httpchk`, kubeadm's way of saying "HTTPS".
    pub(super) ssl_hello: bool,
    pub(super) stats: bool,
}

pub(super) fn err(source: &Source, message: impl Into<String>) -> ImportError {
    ImportError {
        place: source.clone(),
        message: message.into(),
    }
}

pub(super) fn number<T: std::str::FromStr>(
    source: &Source,
    what: &str,
    text: &str,
) -> Result<T, ImportError> {
    text.parse()
        .map_err(|_| err(source, format!("{what}: {text:?} is not a number")))
}

pub(super) fn time(source: &Source, what: &str, text: &str) -> Result<Duration, ImportError> {
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
    resolve::resolve(&proxies, plan)
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
            p.mode = w.get(1).map(std::string::ToString::to_string);
            match w.get(1) {
                Some(&"tcp") => Outcome::Translated("xdp-lb balances TCP".into()),
                Some(&"http") => Outcome::Ignored(
                    "mode http: xdp-lb balances TCP connections (layer 4), it does not route HTTP requests".into(),
                ),
                _ => ignored("unknown mode"),
            }
        }
        (_, "bind") => bind(p, w, source)?,
        (_, "default_backend") => {
            p.default_backend = w.get(1).map(std::string::ToString::to_string);
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
        (_, "option") => option(p, w),
        (_, "http-check") => http_check(p, w, source)?,
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
        (_, "stats") => stats(p, w),
        (_, kw) => Outcome::Ignored(format!("`{kw}` has no counterpart in xdp-lb")),
    };
    plan.report(source, line, outcome);
    Ok(())
}

/// `option …`: the checks' kind (httpchk, ssl-hello-chk, tcp-check); other options are not
/// about balancing or checking.
fn option(p: &mut Proxy, w: &[&str]) -> Outcome {
    let ignored = |why: &str| Outcome::Ignored(why.to_owned());
    match w.get(1).copied() {
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
            // Decided with the section's other options (`vip_from`): after or before
            // `option httpchk` it makes that check HTTPS.
            p.ssl_hello = true;
            if p.check.kind.is_none() {
                p.check.kind = Some("tcp");
            }
            Outcome::Approximated(
                "the check speaks TLS: with option httpchk an HTTPS check of its path; alone a TCP connect check (xdp-lb's https check needs an HTTP answer)".into(),
            )
        }
        Some("tcp-check") => {
            p.check.kind = Some("tcp");
            Outcome::Approximated("tcp-check rules: a TCP connect check".into())
        }
        _ => ignored("not a balancing or checking option"),
    }
}

/// `http-check …`: the expected status, TLS, and the request's URI.
fn http_check(p: &mut Proxy, w: &[&str], source: &Source) -> Result<Outcome, ImportError> {
    let ignored = |why: &str| Outcome::Ignored(why.to_owned());
    Ok(match &w[1..] {
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
    })
}

/// `stats uri` / `stats enable`: a stats page, which `agent.listen` serves.
fn stats(p: &mut Proxy, w: &[&str]) -> Outcome {
    if w.get(1) == Some(&"uri") || w.get(1) == Some(&"enable") {
        p.stats = true;
        Outcome::Translated(
            "a stats page: agent.listen serves /stats, /metrics and /healthz".into(),
        )
    } else {
        Outcome::Ignored("xdp-lb's /stats page has no settings".into())
    }
}

/// `bind ADDR:PORT [options…]`: the VIP's address and port.
fn bind(p: &mut Proxy, w: &[&str], source: &Source) -> Result<Outcome, ImportError> {
    let spec = w
        .get(1)
        .ok_or_else(|| err(source, "bind needs ADDR:PORT"))?;
    p.binds.push((spec.to_string(), source.clone()));
    Ok(if w.len() > 2 {
        Outcome::Approximated(format!(
            "the address is a VIP; bind options {:?} do not apply to xdp-lb (TLS passes through untouched)",
            &w[2..]
        ))
    } else {
        Outcome::Translated("the VIP's address and port".into())
    })
}
