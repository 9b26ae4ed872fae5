//! `[vip.health_check]`, validated, with haproxy's defaults.

use std::time::Duration;

use toml::Spanned;

use super::{
    CheckType, ConfigError, HealthCheckConfig,
    place::{Place, ranged},
    raw::RawHealthCheck,
};

pub(super) fn health_check(
    place: &Place<'_>,
    h: &RawHealthCheck,
    key: &str,
) -> Result<HealthCheckConfig, ConfigError> {
    let k = |field: &str| format!("{key}.{field}");
    let d = HealthCheckConfig::default();
    let duration = |v: &Option<Spanned<Duration>>,
                    field: &str,
                    default: Duration|
     -> Result<Duration, ConfigError> {
        match v {
            Some(s)
                if *s.get_ref() < Duration::from_millis(10)
                    || *s.get_ref() > Duration::from_secs(3600) =>
            {
                Err(place.at(
                    s,
                    k(field),
                    format!("{:?} is out of range (10ms..=1h)", s.get_ref()),
                ))
            }
            Some(s) => Ok(*s.get_ref()),
            None => Ok(default),
        }
    };
    let interval = duration(&h.interval, "interval", d.interval)?;
    // haproxy: the check timeout defaults to the interval.
    let timeout = duration(&h.timeout, "timeout", interval)?;
    if let Some(t) = &h.timeout
        && timeout > interval
    {
        return Err(place.at(
            t,
            k("timeout"),
            format!("{timeout:?} is longer than the interval {interval:?}"),
        ));
    }
    let rise = match &h.rise {
        Some(v) => ranged(place, v, &k("rise"), 1..=100)?,
        None => d.rise,
    };
    let fall = match &h.fall {
        Some(v) => ranged(place, v, &k("fall"), 1..=100)?,
        None => d.fall,
    };
    let port = match &h.port {
        Some(v) => Some(ranged(place, v, &k("port"), 1..=65535)? as u16),
        None => None,
    };
    let http_path = match &h.http_path {
        Some(p)
            if !p.get_ref().starts_with('/')
                || p.get_ref()
                    .contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            return Err(place.at(
                p,
                k("http_path"),
                format!(
                    "{:?} must start with '/' and contain no spaces",
                    p.get_ref()
                ),
            ));
        }
        Some(p) => p.get_ref().clone(),
        None => d.http_path,
    };
    let http_expect_status = match &h.http_expect_status {
        Some(v) => ranged(place, v, &k("http_expect_status"), 100..=599)? as u16,
        None => d.http_expect_status,
    };
    Ok(HealthCheckConfig {
        kind: h.kind.unwrap_or(CheckType::Tcp),
        interval,
        timeout,
        rise,
        fall,
        port,
        http_path,
        http_expect_status,
        start_down: h.start_down.unwrap_or(false),
    })
}
