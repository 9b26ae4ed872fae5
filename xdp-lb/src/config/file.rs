//! The file being validated: its path and text, so that each error names the file, line,
//! column and dotted key of the value that is wrong; and what validation collects besides
//! errors (warnings, the positions of values that later checks may complain about).

use std::{cell::RefCell, collections::BTreeMap, ops::Range, path::Path};

use toml::Spanned;

use super::ConfigError;

pub(super) struct ConfigFile<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    /// What is worth saying but does not stop the file from loading.
    pub(super) warnings: RefCell<Vec<ConfigError>>,
    /// Where some values stand, for checks made after validation (e.g. by `check-config`).
    pub(super) positions: RefCell<BTreeMap<String, (usize, usize)>>,
}

impl<'a> ConfigFile<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Self {
            path,
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
            file: self.path.to_owned(),
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
