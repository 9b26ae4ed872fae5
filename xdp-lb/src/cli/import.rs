//! `xdp-lb import`: haproxy.cfg and keepalived.conf to an xdp-lb configuration, with a
//! report of what became of each directive.

use std::{path::Path, process::ExitCode};

use xdp_lb::config;

use super::EXIT_CONFIG;

pub(crate) fn import(
    haproxy: Option<&Path>,
    keepalived: Option<&Path>,
    output: Option<&Path>,
) -> ExitCode {
    let imported = match xdp_lb::import::import(haproxy, keepalived) {
        Ok(i) => i,
        Err(err) => {
            eprintln!("xdp-lb: import: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for line in &imported.report {
        eprintln!("{line}");
    }
    let (translated, approximated, ignored) = imported.counts();
    eprintln!(
        "xdp-lb: import: {translated} translated, {approximated} approximated, {ignored} ignored"
    );
    // haproxy.cfg is there to balance: a file with no VIP from it is a failed import (every
    // frontend was ignored, each said why above), not a success.
    if imported.vips == 0 && (haproxy.is_some() || imported.vrrp == 0) {
        eprintln!(
            "xdp-lb: import: no VIP: no frontend balances TCP to servers (the report above says why each was ignored); nothing written"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    // What the import wrote must load as it stands.
    let shown = output.unwrap_or(Path::new("imported.toml"));
    if let Err(err) = config::parse(shown, &imported.toml) {
        eprintln!("xdp-lb: import: the result does not validate ({err}); please report this");
        return ExitCode::FAILURE;
    }
    match output {
        Some(path) => {
            if let Err(err) = std::fs::write(path, &imported.toml) {
                eprintln!("xdp-lb: import: writing {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("xdp-lb: import: wrote {}", path.display());
        }
        None => print!("{}", imported.toml),
    }
    ExitCode::SUCCESS
}
