//! One module per subcommand of the `xdp-lb` binary, and what they share.

pub(crate) mod capture;
pub(crate) mod check_config;
pub(crate) mod control;
pub(crate) mod decap;
pub(crate) mod import;
pub(crate) mod inspect;
pub(crate) mod run;

/// Exit status for a configuration that does not parse or validate (and for a reload the
/// agent refused).
pub(crate) const EXIT_CONFIG: u8 = 2;
