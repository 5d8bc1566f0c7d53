//! Positions of keys and values in a job file, for errors that serde cannot locate (semantic
//! checks, duplicate keys).
//!
//! serde_yaml exposes a location only in its own errors, so the file is read a second time with
//! the pure-Rust `saphyr-parser` event parser and every node is indexed by its key path, written
//! the way serde_yaml writes paths in its messages (`spec.mailboxes[2].match`). The index is built
//! only when a document has an error, so valid files pay nothing. If the event parser stops
//! early (a construct it rejects but libyaml accepted), what it indexed so far is kept and
//! lookups fall back to the nearest indexed ancestor.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// Line 1, column 1: where errors go that cannot be located more precisely.
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_span(span: &Span) -> Pos {
        Pos {
            line: span.start.line().max(1),
            column: span.start.col() + 1,
        }
    }
}

/// Where one node sits: its key (for mapping entries; the node itself for sequence items and
/// the root) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: Pos,
    pub value: Pos,
}

/// The index of one document.
#[derive(Debug, Default)]
pub struct DocIndex {
    /// Where the document's first node starts.
    pub start: Pos,
    entries: HashMap<String, Entry>,
    /// Second occurrences of keys already present in the same mapping.
    duplicates: HashMap<String, Entry>,
}

impl DocIndex {
    /// The entry at `path`, or at its nearest indexed ancestor.
    pub fn nearest(&self, path: &str) -> Entry {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.get(p) {
                return *e;
            }
            match parent(p) {
                Some(up) => p = up,
                None => {
                    return Entry {
                        key: self.start,
                        value: self.start,
                    };
                }
            }
        }
    }

    /// The entry at exactly `path`.
    pub fn get(&self, path: &str) -> Option<Entry> {
        self.entries.get(path).copied()
    }

    /// Where a key that appears twice at `path` appears the second time.
    pub fn duplicate(&self, path: &str) -> Option<Entry> {
        self.duplicates.get(path).copied()
    }
}

/// `spec.a[1].b` → `spec.a[1]` → `spec.a` → `spec` → `` (the root) → None.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return Some(&path[..i]);
    }
    match path.rfind('.') {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

/// Joins a mapping key onto a path the way serde_yaml does.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Positions of every document of one file.
#[derive(Debug, Default)]
pub struct Locator {
    docs: Vec<DocIndex>,
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, Pos)>,
    },
    Seq {
        path: String,
        next: usize,
    },
    /// A complex (non-scalar) mapping key being skipped; counts nested containers.
    KeyNode {
        depth: usize,
        start: Pos,
    },
}

impl Locator {
    /// Indexes `text`. Never fails: a parse error ends the index where it occurred.
    pub fn new(text: &str) -> Locator {
        let mut docs: Vec<DocIndex> = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut current: Option<DocIndex> = None;
        // Anchors are indexed once where they are defined; aliases only mark a position.
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = Pos::from_span(&span);
            match event {
                Event::DocumentStart(_) => {
                    stack.clear();
                    current = Some(DocIndex {
                        start: pos,
                        ..DocIndex::default()
                    });
                }
                Event::DocumentEnd => {
                    if let Some(d) = current.take() {
                        docs.push(d);
                    }
                    stack.clear();
                }
                Event::Scalar(value, ..) => {
                    let Some(doc) = current.as_mut() else {
                        continue;
                    };
                    if let Some(Frame::KeyNode { .. }) = stack.last() {
                        continue;
                    }
                    if let Some(Frame::Map { key, .. }) = stack.last_mut()
                        && key.is_none()
                    {
                        *key = Some((value.into_owned(), pos));
                        continue;
                    }
                    node(doc, &mut stack, pos);
                }
                Event::Alias(_) => {
                    let Some(doc) = current.as_mut() else {
                        continue;
                    };
                    if let Some(Frame::KeyNode { .. }) = stack.last() {
                        continue;
                    }
                    if let Some(Frame::Map { key, .. }) = stack.last_mut()
                        && key.is_none()
                    {
                        *key = Some(("*alias".into(), pos));
                        continue;
                    }
                    node(doc, &mut stack, pos);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    let Some(doc) = current.as_mut() else {
                        continue;
                    };
                    if let Some(Frame::KeyNode { depth, .. }) = stack.last_mut() {
                        *depth += 1;
                        continue;
                    }
                    if let Some(Frame::Map { key: None, .. }) = stack.last() {
                        stack.push(Frame::KeyNode {
                            depth: 0,
                            start: pos,
                        });
                        continue;
                    }
                    let path = node(doc, &mut stack, pos);
                    stack.push(if is_map {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::KeyNode { depth, start }) = stack.last_mut() {
                        if *depth > 0 {
                            *depth -= 1;
                            continue;
                        }
                        let start = *start;
                        stack.pop();
                        if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                            *key = Some(("?complex".into(), start));
                        }
                        continue;
                    }
                    stack.pop();
                }
                Event::StreamEnd => break,
                _ => {}
            }
        }
        if let Some(d) = current.take() {
            docs.push(d);
        }
        Locator { docs }
    }

    /// The index of document `i` (0-based), if the event parser reached it.
    pub fn doc(&self, i: usize) -> Option<&DocIndex> {
        self.docs.get(i)
    }
}

/// Records a node starting at `pos` in the current container and returns its path.
fn node(doc: &mut DocIndex, stack: &mut [Frame], pos: Pos) -> String {
    let (path, key_pos) = match stack.last_mut() {
        None => (String::new(), pos),
        Some(Frame::Seq { path, next }) => {
            let p = format!("{path}[{next}]");
            *next += 1;
            (p, pos)
        }
        Some(Frame::Map { path, key }) => match key.take() {
            Some((k, kpos)) => (join_key(path, &k), kpos),
            None => (join_key(path, "?"), pos),
        },
        Some(Frame::KeyNode { .. }) => return String::new(),
    };
    let entry = Entry {
        key: key_pos,
        value: pos,
    };
    if doc.entries.contains_key(&path) {
        doc.duplicates.entry(path.clone()).or_insert(entry);
    } else {
        doc.entries.insert(path.clone(), entry);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
apiVersion: restorectl/v1
kind: ExportPst
metadata:
  name: a
spec:
  mailboxes:
    - alice@contoso.com
    - { match: \"*@x\" }
  schedule:
    cron: \"0 2 * * SUN\"
    cron: again
---
kind: Search
spec: {search: {query: q}}
";

    #[test]
    fn keys_and_values_are_indexed_by_serde_style_paths() {
        let loc = Locator::new(TEXT);
        let d = loc.doc(0).unwrap();
        assert_eq!(d.get("kind").unwrap().value, Pos { line: 2, column: 7 });
        assert_eq!(
            d.get("metadata.name").unwrap().key,
            Pos { line: 4, column: 3 }
        );
        assert_eq!(d.get("spec.mailboxes[1]").unwrap().value.line, 8);
        assert_eq!(d.get("spec.mailboxes[1].match").unwrap().key.line, 8);
        assert_eq!(
            d.get("spec.schedule.cron").unwrap().value,
            Pos {
                line: 10,
                column: 11
            }
        );
        assert_eq!(d.duplicate("spec.schedule.cron").unwrap().key.line, 11);
        assert_eq!(d.nearest("spec.schedule.timezone").key.line, 9);
        let d1 = loc.doc(1).unwrap();
        assert_eq!(d1.get("spec.search.query").unwrap().value.line, 14);
    }

    #[test]
    fn parent_walks_up_to_the_root() {
        assert_eq!(parent("spec.a[1].b"), Some("spec.a[1]"));
        assert_eq!(parent("spec.a[1]"), Some("spec.a"));
        assert_eq!(parent("spec"), Some(""));
        assert_eq!(parent(""), None);
    }

    #[test]
    fn broken_yaml_keeps_what_was_indexed() {
        let loc = Locator::new("a: 1\nb: [\n");
        assert_eq!(loc.doc(0).unwrap().get("a").unwrap().key.line, 1);
    }
}
