//! Every configuration file the tests, the demo and the benches run xdp-lb with, written in one
//! place. A fixture is built, not pasted: [`config`] starts an `[agent]` section, [`vip`] and
//! [`vrrp`] add sections, and `to_string()` gives the TOML. A key the fixtures have not met yet
//! is one `.key()` away; its spelling and quoting live here only.
//!
//! ```
//! use xdp_lb_tests::fixtures::{config, vip};
//! let toml = config("eth0")
//!     .key("flow_table_size", 4096)
//!     .vip(vip("web", "198.18.0.100", 80).backend("198.18.0.11"))
//!     .to_string();
//! assert!(toml.contains("[[vip.backend]]\naddress = \"198.18.0.11\""));
//! ```

use std::fmt::{self, Display, Write as _};

/// A TOML value: numbers and booleans as they are, strings quoted.
pub trait Value {
    fn toml(self) -> String;
}

macro_rules! plain_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn toml(self) -> String {
                self.to_string()
            }
        }
    )*};
}
plain_value!(u8, u16, u32, u64, usize, i32, i64, bool);

impl Value for &str {
    fn toml(self) -> String {
        // Debug quoting escapes backslashes and quotes as TOML basic strings want.
        format!("{self:?}")
    }
}

impl Value for String {
    fn toml(self) -> String {
        self.as_str().toml()
    }
}

/// A TOML array of the values.
impl<T: Value> Value for Vec<T> {
    fn toml(self) -> String {
        let items: Vec<String> = self.into_iter().map(Value::toml).collect();
        format!("[{}]", items.join(", "))
    }
}

impl Value for std::net::Ipv4Addr {
    fn toml(self) -> String {
        self.to_string().toml()
    }
}

impl Value for std::net::Ipv6Addr {
    fn toml(self) -> String {
        self.to_string().toml()
    }
}

impl Value for std::net::IpAddr {
    fn toml(self) -> String {
        self.to_string().toml()
    }
}

impl Value for std::path::PathBuf {
    fn toml(self) -> String {
        self.display().to_string().toml()
    }
}

/// Key-value lines of one table.
#[derive(Debug, Clone, Default)]
struct Keys(Vec<(String, String)>);

impl Keys {
    fn set(&mut self, key: &str, value: impl Value) {
        let value = value.toml();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn write(&self, out: &mut String) {
        for (k, v) in &self.0 {
            let _ = writeln!(out, "{k} = {v}");
        }
    }
}

/// A whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    agent: Keys,
    vips: Vec<Vip>,
    vrrp: Vec<Vrrp>,
    /// `[announce]`: None, no section.
    announce: Option<Keys>,
}

/// An `[agent]` section on `interface`, nothing else yet.
pub fn config(interface: &str) -> Config {
    let mut agent = Keys::default();
    agent.set("interface", interface);
    Config {
        agent,
        vips: Vec::new(),
        vrrp: Vec::new(),
        announce: None,
    }
}

impl Config {
    /// Sets an `[agent]` key.
    pub fn key(mut self, key: &str, value: impl Value) -> Self {
        self.agent.set(key, value);
        self
    }

    /// Where a bed's agent pins its maps, with a small flow table and a few VIPs: the shape
    /// every namespace test bed shares.
    pub fn bed(self, pin_dir: impl Display, flow_table_size: u32, max_vips: u32) -> Self {
        self.key("pin_dir", pin_dir.to_string())
            .key("flow_table_size", flow_table_size)
            .key("max_vips", max_vips)
    }

    pub fn vip(mut self, vip: Vip) -> Self {
        self.vips.push(vip);
        self
    }

    pub fn vrrp(mut self, vrrp: Vrrp) -> Self {
        self.vrrp.push(vrrp);
        self
    }

    /// Sets an `[announce]` key (the section appears with its first key).
    pub fn announce(mut self, key: &str, value: impl Value) -> Self {
        self.announce
            .get_or_insert_with(Keys::default)
            .set(key, value);
        self
    }
}

impl Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::from("[agent]\n");
        self.agent.write(&mut out);
        for vip in &self.vips {
            out.push_str("\n[[vip]]\n");
            vip.keys.write(&mut out);
            if !vip.check.0.is_empty() {
                out.push_str("[vip.health_check]\n");
                vip.check.write(&mut out);
            }
            for b in &vip.backends {
                out.push_str("[[vip.backend]]\n");
                b.write(&mut out);
            }
        }
        for v in &self.vrrp {
            out.push_str("\n[[vrrp]]\n");
            v.0.write(&mut out);
        }
        if let Some(a) = &self.announce {
            out.push_str("\n[announce]\n");
            a.write(&mut out);
        }
        f.write_str(&out)
    }
}

/// A `[[vip]]` section with its health check and backends.
#[derive(Debug, Clone)]
pub struct Vip {
    keys: Keys,
    check: Keys,
    backends: Vec<Keys>,
}

pub fn vip(name: &str, address: impl Value, port: u16) -> Vip {
    let mut keys = Keys::default();
    keys.set("name", name);
    keys.set("address", address);
    keys.set("port", port);
    Vip {
        keys,
        check: Keys::default(),
        backends: Vec::new(),
    }
}

impl Vip {
    pub fn key(mut self, key: &str, value: impl Value) -> Self {
        self.keys.set(key, value);
        self
    }

    /// A list of strings (`allow = ["198.51.100.0/24", …]`).
    pub fn list(mut self, key: &str, items: &[&str]) -> Self {
        let items: Vec<String> = items.iter().copied().map(Value::toml).collect();
        self.keys
            .0
            .push((key.to_owned(), format!("[{}]", items.join(", "))));
        self
    }

    /// `forwarding = "nat"`.
    pub fn nat(self) -> Self {
        self.key("forwarding", "nat")
    }

    /// Sets a `[vip.health_check]` key.
    pub fn check(mut self, key: &str, value: impl Value) -> Self {
        self.check.set(key, value);
        self
    }

    pub fn backend(self, address: impl Value) -> Self {
        self.backend_with(address, &[])
    }

    /// Gives the `i`-th backend a `name`.
    pub fn backend_name(mut self, i: usize, name: &str) -> Self {
        self.backends[i].set("name", name);
        self
    }

    /// A backend with more keys (`port`, `weight`, `state`), each a TOML literal.
    pub fn backend_with(mut self, address: impl Value, keys: &[(&str, &str)]) -> Self {
        let mut b = Keys::default();
        b.set("address", address);
        for (k, v) in keys {
            b.0.push(((*k).to_owned(), (*v).to_owned()));
        }
        self.backends.push(b);
        self
    }
}

/// A `[[vrrp]]` section.
#[derive(Debug, Clone)]
pub struct Vrrp(Keys);

pub fn vrrp(name: &str, interface: &str, vrid: u8, priority: u8) -> Vrrp {
    let mut keys = Keys::default();
    keys.set("name", name);
    keys.set("interface", interface);
    keys.set("vrid", vrid);
    keys.set("priority", priority);
    Vrrp(keys)
}

impl Vrrp {
    pub fn key(mut self, key: &str, value: impl Value) -> Self {
        self.0.set(key, value);
        self
    }

    /// `virtual_addresses = ["A/32", …]`.
    pub fn addresses(mut self, addresses: &[&str]) -> Self {
        let list: Vec<String> = addresses.iter().copied().map(Value::toml).collect();
        self.0
            .0
            .push(("virtual_addresses".into(), format!("[{}]", list.join(", "))));
        self
    }

    /// `unicast_peers = [...]`.
    pub fn unicast_peers(mut self, peers: &[&str]) -> Self {
        let list: Vec<String> = peers.iter().copied().map(Value::toml).collect();
        self.0
            .0
            .push(("unicast_peers".into(), format!("[{}]", list.join(", "))));
        self
    }
}

/// The bench's and the packet tables' three-backend web VIP on 198.18.0.100:80.
pub fn three_backends(name: &str, port: u16) -> Vip {
    vip(name, "198.18.0.100", port)
        .backend("198.18.0.11")
        .backend("198.18.0.12")
        .backend("198.18.0.13")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_config_parses() {
        let text = config("eth0")
            .bed("/sys/fs/bpf/x", 4096, 4)
            .vip(
                three_backends("web", 80)
                    .nat()
                    .check("type", "http")
                    .backend_with("198.18.0.14", &[("port", "8080"), ("weight", "2")]),
            )
            .vrrp(vrrp("vi", "eth0", 51, 150).addresses(&["198.18.0.100/32"]))
            .to_string();
        let c = xdp_lb::config::parse(std::path::Path::new("t.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.vips[0].backends.len(), 4);
        assert_eq!(c.vips[0].backends[3].port, 8080);
        assert_eq!(c.vrrp[0].vrid, 51);
    }
}
