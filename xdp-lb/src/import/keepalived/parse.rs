//! keepalived.conf as a tree: statements (`keyword args…`), blocks (`keyword args… { … }`),
//! comments from `#` or `!`, quoted strings; each statement with its line.

use std::path::Path;

use crate::import::{ImportError, Source};

/// One statement and, for a block, what is inside it.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) words: Vec<String>,
    pub(super) source: Source,
    pub(super) children: Option<Vec<Node>>,
}

impl Node {
    pub(super) fn keyword(&self) -> &str {
        &self.words[0]
    }

    pub(super) fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(String::as_str)
    }

    pub(super) fn text(&self) -> String {
        self.words.join(" ")
    }

    pub(super) fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
}

pub(super) fn err(source: &Source, message: impl Into<String>) -> ImportError {
    ImportError {
        place: source.clone(),
        message: message.into(),
    }
}

/// Tokens per line: words, quoted strings, and the braces (which may touch words).
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '#' | '!' if !quoted => break,
            '{' | '}' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Vec<Node>, ImportError> {
    // A stack of open blocks; the bottom one is the file.
    let mut stack: Vec<(Vec<Node>, Option<Source>)> = vec![(Vec::new(), None)];
    for (n, line) in text.lines().enumerate() {
        let source = Source {
            file: path.to_owned(),
            line: n + 1,
        };
        let mut words: Vec<String> = Vec::new();
        for t in tokens(line) {
            match t.as_str() {
                "{" => {
                    if words.is_empty() {
                        // `{` on a line of its own opens the previous statement's block.
                        let last = stack
                            .last_mut()
                            .and_then(|(nodes, _)| nodes.pop())
                            .ok_or_else(|| err(&source, "`{` without a keyword before it"))?;
                        words = last.words;
                    }
                    stack.push((Vec::new(), Some(source.clone())));
                    // Remember the statement that owns the block.
                    stack.last_mut().expect("just pushed").0.push(Node {
                        words: std::mem::take(&mut words),
                        source: source.clone(),
                        children: None,
                    });
                }
                "}" => {
                    if !words.is_empty() {
                        let top = &mut stack.last_mut().expect("the file").0;
                        top.push(Node {
                            words: std::mem::take(&mut words),
                            source: source.clone(),
                            children: None,
                        });
                    }
                    if stack.len() == 1 {
                        return Err(err(&source, "`}` without a block to close"));
                    }
                    let (mut nodes, _) = stack.pop().expect("checked");
                    let mut owner = nodes.remove(0);
                    owner.children = Some(nodes);
                    stack.last_mut().expect("the file").0.push(owner);
                }
                _ => words.push(t),
            }
        }
        if !words.is_empty() {
            stack.last_mut().expect("the file").0.push(Node {
                words,
                source,
                children: None,
            });
        }
    }
    if stack.len() > 1 {
        let opened = stack.last().and_then(|(_, s)| s.clone()).expect("a block");
        return Err(err(&opened, "this block is never closed (missing `}`)"));
    }
    Ok(stack.pop().expect("the file").0)
}
