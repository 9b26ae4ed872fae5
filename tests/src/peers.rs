//! Peer processes the tests and benches start in their namespaces (nginx backends, haproxy,
//! keepalived's kin): each a [`Proc`] that is stopped when dropped.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::NetNs;

/// A process in a namespace (`ip netns exec` execs it, so the pid is the program's own),
/// stopped when dropped: SIGTERM, then SIGKILL after 5 s.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_in(ns: &NetNs, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {args:?}"))?;
    Ok(Proc(child))
}

/// nginx on a backend: answers every request with its name; no logs, no temp files. One
/// process (`master_process off`), so that stopping the pid stops all of it.
pub fn nginx(ns: &NetNs, dir: &Path, name: &str) -> anyhow::Result<Proc> {
    nginx_with(
        ns,
        dir,
        name,
        &format!(
            "server {{ listen 80 reuseport backlog=4096; location / {{ return 200 \"{name}\\n\"; }} }}"
        ),
    )
}

/// nginx with `servers` (one or more `server { }` blocks) in its `http` block.
pub fn nginx_with(ns: &NetNs, dir: &Path, name: &str, servers: &str) -> anyhow::Result<Proc> {
    let conf = dir.join(format!("nginx-{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx-{name}.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir}/tmp-{name};\n\
               keepalive_requests 1000000;\n  {servers}\n}}\n",
            dir = dir.display()
        ),
    )?;
    spawn_in(
        ns,
        &[
            "nginx",
            "-c",
            conf.to_str().context("path")?,
            "-e",
            "stderr",
        ],
        &dir.join(format!("nginx-{name}.log")),
    )
}
