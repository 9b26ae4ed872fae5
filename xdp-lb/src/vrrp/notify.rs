//! The operator's notify hook (keepalived's `notify`, e.g. a cloud API call that moves a
//! floating address): run on every transition with the new state.

use std::time::Duration;

use super::machine::State;

/// Runs the notify hook directly (no shell) with `STATE VRID NAME`; failure is logged only.
pub(super) fn notify(program: std::path::PathBuf, state: State, vrid: u8, name: String) {
    tokio::spawn(async move {
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(&program)
                .args([state.name(), &vrid.to_string(), &name])
                .stdin(std::process::Stdio::null())
                .status(),
        )
        .await;
        match result {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => {
                tracing::warn!(instance = %name, program = %program.display(), status = %s, "notify hook failed");
            }
            Ok(Err(e)) => {
                tracing::warn!(instance = %name, program = %program.display(), error = %e, "notify hook could not run");
            }
            Err(_) => {
                tracing::warn!(instance = %name, program = %program.display(), "notify hook still running after 30 s; not waited for");
            }
        }
    });
}
