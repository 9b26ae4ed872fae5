//! What `check-config` can tell only on the LB host itself: how the kernel there reaches each
//! DSR backend.

use std::path::Path;

use crate::{
    config::{self, Config, ConfigError},
    netlink::{self, Netlink},
};

/// For `check-config` on the LB host (when `agent.interface` is in this network namespace):
/// DSR backends the kernel does not reach on a directly connected subnet, each with its line.
pub fn route_warnings(path: &Path, config: &Config) -> Vec<ConfigError> {
    if netlink::ifindex(&config.agent.interface).is_none() {
        return Vec::new();
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        let Ok(nl) = Netlink::new() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, vip) in config.vips.iter().enumerate() {
            if vip.forwarding != config::Forwarding::Dsr {
                continue;
            }
            for (j, b) in vip.backends.iter().enumerate() {
                // The route only (nothing is sent; `check-config` resolves no neighbour).
                let why = match nl.route(b.address).await {
                    Ok(Some((_, Some(via)))) => format!(
                        "{} is routed via {via}: DSR needs the backend on a directly connected subnet (or forwarding = \"nat\")",
                        b.address
                    ),
                    Ok(None) => format!("no route to {}", b.address),
                    _ => continue,
                };
                let key = format!("vip[{i}].backend[{j}].address");
                out.push(config.warning_at(path, &key, why));
            }
        }
        out
    })
}
