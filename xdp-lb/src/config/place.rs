//! Where a value stands in the file, and the field checks every section shares: each error
//! names the file, line, column and dotted key of the value that is wrong.

use std::{cell::RefCell, collections::BTreeMap, ops::Range, path::Path, time::Duration};

use toml::Spanned;

use super::ConfigError;

pub(super) struct Place<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    /// What is worth saying but does not stop the file from loading.
    pub(super) warnings: RefCell<Vec<ConfigError>>,
    /// Where some values stand, for checks made after validation (e.g. by `check-config`).
    pub(super) positions: RefCell<BTreeMap<String, (usize, usize)>>,
}

impl<'a> Place<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            warnings: RefCell::default(),
            positions: RefCell::default(),
        }
    }

    /// A warning at `span` about `key`.
    pub(super) fn warn(&self, span: Range<usize>, key: String, message: String) {
        let w = self.error(Some(span), Some(key), message);
        self.warnings.borrow_mut().push(w);
    }

    /// Keeps the line and column of `key`'s value.
    pub(super) fn remember<T>(&self, key: String, value: &Spanned<T>) {
        let at = line_column(self.text, value.span().start);
        self.positions.borrow_mut().insert(key, at);
    }

    pub(super) fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = line_column(self.text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    pub(super) fn at<T>(
        &self,
        value: &Spanned<T>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(Some(value.span()), Some(key.into()), message.into())
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// A number within `range`, or an error naming the key and the range.
pub(super) fn ranged(
    place: &Place<'_>,
    value: &Spanned<i64>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
    let v = *value.get_ref();
    match u32::try_from(v) {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(place.at(
            value,
            key,
            format!(
                "{v} is out of range (allowed: {}..={})",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// "LOW-HIGH" (inclusive), e.g. "20000-59999".
pub(super) fn port_range(
    place: &Place<'_>,
    value: &Spanned<String>,
    key: &str,
) -> Result<(u16, u16), ConfigError> {
    let parsed = value.get_ref().split_once('-').and_then(|(lo, hi)| {
        Some((
            lo.trim().parse::<u16>().ok()?,
            hi.trim().parse::<u16>().ok()?,
        ))
    });
    match parsed {
        Some((lo, hi)) if lo >= 1 && lo <= hi => Ok((lo, hi)),
        _ => Err(place.at(
            value,
            key,
            format!(
                "{:?} is not a port range LOW-HIGH with 1 <= LOW <= HIGH <= 65535 (e.g. \"20000-59999\")",
                value.get_ref()
            ),
        )),
    }
}

/// A NAT timeout: 1s to 30 days.
pub(super) fn nat_timeout(
    place: &Place<'_>,
    value: &Option<Spanned<Duration>>,
    field: &str,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    match value {
        Some(d)
            if *d.get_ref() < Duration::from_secs(1)
                || *d.get_ref() > Duration::from_secs(30 * 86_400) =>
        {
            Err(place.at(
                d,
                format!("agent.{field}"),
                format!("{:?} is out of range (1s..=30d)", d.get_ref()),
            ))
        }
        Some(d) => Ok(*d.get_ref()),
        None => Ok(Duration::from_secs(default_secs)),
    }
}

/// A VIP or VRRP instance name: 1 to 64 of A-Z a-z 0-9 - _ . (it appears in logs and labels).
pub(super) fn valid_name(
    place: &Place<'_>,
    name: &Spanned<String>,
    key: String,
) -> Result<String, ConfigError> {
    let n = name.get_ref();
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(place.at(
            name,
            key,
            format!("{n:?} is not a valid name (1 to 64 of A-Z a-z 0-9 - _ .)"),
        ));
    }
    Ok(n.clone())
}

/// An interface name as the kernel accepts it: IFNAMSIZ is 16 including the NUL
/// (include/uapi/linux/if.h).
pub(super) fn valid_interface(
    place: &Place<'_>,
    name: &Spanned<String>,
    key: String,
) -> Result<String, ConfigError> {
    let n = name.get_ref();
    if n.is_empty() || n.len() > 15 || n.contains(['/', ' ']) {
        return Err(place.at(
            name,
            key,
            format!("{n:?} is not a valid interface name (1 to 15 characters, no '/' or spaces)"),
        ));
    }
    Ok(n.clone())
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n as u64 {
        if (n as u64).is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}
