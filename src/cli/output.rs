//! Human and JSON output of the operator commands: aligned tables that fit the terminal, colour
//! only where it helps and only on a terminal, and the time and size formats every command shares.
//!
//! Tables are hand-rolled rather than built with comfy-table: comfy-table wraps long cells over
//! several lines (we truncate with `…`, one line per row, so `grep` and eyes both work) and only
//! learns the terminal width through crossterm. Rules:
//!
//! - columns are separated by two spaces, the header is upper case, empty cells print `-`;
//! - the width limit is the terminal's when stdout is a terminal, `$COLUMNS` when set, else none
//!   (a pipe gets full values);
//! - when the table is too wide, the widest truncatable columns shrink first; columns marked
//!   `keep` (ids an operator copies) never shrink;
//! - colour (run and step states) only when stdout is a terminal and `NO_COLOR` is not set.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// How output is styled: whether colour is on, and the width limit.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
    /// Maximum line width in columns; `None` for no limit.
    pub width: Option<usize>,
}

impl Style {
    /// Decides from the environment: colour on a terminal unless `NO_COLOR` is set (to anything
    /// non-empty) or `TERM=dumb`; width from the terminal, else `$COLUMNS`.
    pub fn detect() -> Style {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|c| *c > 0);
        let width = columns.or_else(|| {
            tty.then(|| terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)))
                .flatten()
        });
        Style {
            color: tty && !no_color,
            width,
        }
    }

    /// `text` in the colour that suits a run or step state (green done, red failed, yellow
    /// attention), or unchanged when colour is off.
    pub fn state(&self, text: &str) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match text {
            "succeeded" | "done" | "active" | "published" | "stopped" => "32",
            "failed" | "invalid" | "lost" => "31",
            "needs_attention"
            | "in_doubt"
            | "succeeded_with_warnings"
            | "warning"
            | "waiting_retry"
            | "missed"
            | "skipped" => "33",
            "running" | "downloading" | "submitting" | "submitted" | "verifying" => "36",
            _ => return text.to_string(),
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// A warning marker (yellow on a terminal).
    pub fn warn(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[33m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A section heading (bold on a terminal).
    pub fn heading(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// One column of a [`Table`].
#[derive(Debug, Clone)]
struct Column {
    title: String,
    /// Never truncated (run ids, which operators copy).
    keep: bool,
    /// Right-aligned (numbers).
    right: bool,
}

/// An aligned text table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

/// The smallest width a truncatable column shrinks to (a few characters and `…`).
const MIN_COLUMN: usize = 6;
const GAP: &str = "  ";

impl Table {
    /// A table with the given column titles (upper-cased on output).
    pub fn new(titles: &[&str]) -> Table {
        Table {
            columns: titles
                .iter()
                .map(|t| Column {
                    title: t.to_uppercase(),
                    keep: false,
                    right: false,
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Marks column `i` as never truncated.
    pub fn keep(mut self, i: usize) -> Table {
        if let Some(c) = self.columns.get_mut(i) {
            c.keep = true;
        }
        self
    }

    /// Right-aligns column `i`.
    pub fn right(mut self, i: usize) -> Table {
        if let Some(c) = self.columns.get_mut(i) {
            c.right = true;
        }
        self
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table to lines (no trailing spaces, no trailing newline).
    ///
    /// `paint` may colour a cell after layout (column index, plain text): colour codes do not
    /// count towards widths because they are added after truncation and padding.
    pub fn render(&self, style: &Style, paint: impl Fn(usize, &str) -> String) -> Vec<String> {
        let cell = |s: &str| -> String {
            let s = s.replace(['\n', '\t'], " ");
            if s.trim().is_empty() { "-".into() } else { s }
        };
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| cell(c)).collect())
            .collect();
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                rows.iter()
                    .map(|r| r[i].width())
                    .chain([c.title.width()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        if let Some(limit) = style.width {
            shrink(&mut widths, &self.columns, limit);
        }
        let mut out = Vec::with_capacity(rows.len() + 1);
        let titles: Vec<String> = self.columns.iter().map(|c| c.title.clone()).collect();
        out.push(self.line(&titles, &widths, &|_, s| s.to_string()));
        for r in &rows {
            out.push(self.line(r, &widths, &paint));
        }
        out
    }

    fn line(
        &self,
        cells: &[String],
        widths: &[usize],
        paint: &dyn Fn(usize, &str) -> String,
    ) -> String {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, text) in cells.iter().enumerate() {
            let text = truncate(text, widths[i]);
            let pad = widths[i].saturating_sub(text.width());
            if i > 0 {
                line.push_str(GAP);
            }
            if self.columns[i].right {
                line.push_str(&" ".repeat(pad));
                line.push_str(&paint(i, &text));
            } else {
                line.push_str(&paint(i, &text));
                if i != last {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        line.trim_end().to_string()
    }

    /// Prints the table to `out`.
    pub fn print(
        &self,
        out: &mut impl Write,
        style: &Style,
        paint: impl Fn(usize, &str) -> String,
    ) -> std::io::Result<()> {
        for line in self.render(style, paint) {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// Shrinks the widest truncatable columns until the table fits `limit` (or nothing can shrink).
fn shrink(widths: &mut [usize], columns: &[Column], limit: usize) {
    let total = |w: &[usize]| w.iter().sum::<usize>() + GAP.len() * w.len().saturating_sub(1);
    while total(widths) > limit {
        let widest = widths
            .iter()
            .enumerate()
            .filter(|(i, w)| !columns[*i].keep && **w > MIN_COLUMN)
            .max_by_key(|(_, w)| **w)
            .map(|(i, _)| i);
        let Some(i) = widest else { break };
        let excess = total(widths) - limit;
        // Shrink in steps down to the next widest column so wide columns share the cut.
        let next = widths
            .iter()
            .enumerate()
            .filter(|(j, w)| *j != i && !columns[*j].keep && **w < widths[i])
            .map(|(_, w)| *w)
            .max()
            .unwrap_or(MIN_COLUMN)
            .max(MIN_COLUMN);
        let step = (widths[i] - next).clamp(1, excess);
        widths[i] -= step;
    }
}

/// `text` cut to `width` display columns, ending in `…` when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for ch in text.chars() {
        let w = ch.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        out.push(ch);
        used += w;
    }
    out.push('…');
    out
}

/// An instant for JSON: RFC 3339 in UTC with millisecond precision and a `Z` suffix.
pub fn json_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An optional instant for JSON.
pub fn json_time_opt(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(json_time)
}

/// An instant for a table: UTC to the second, `2026-03-29 01:00:00Z`.
pub fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// An optional instant for a table (`-` when absent).
pub fn human_time_opt(t: Option<DateTime<Utc>>) -> String {
    t.map(human_time).unwrap_or_default()
}

/// An instant in a job's zone for a table: `2026-03-29 03:00 CEST (+02:00)`.
pub fn zoned_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M %Z (%:z)")
        .to_string()
}

/// A duration between two instants for a table: `1h 2m 3s`, `45s`.
pub fn human_duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let secs = (to - from).num_seconds().max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// A byte count for a table: `1.5 GiB` (IEC units); exact counts are in `--json`.
pub fn human_bytes(bytes: i64) -> String {
    let b = u64::try_from(bytes).unwrap_or(0);
    bytesize::ByteSize::b(b).to_string()
}

/// Standard output, locked and buffered: stdout is line-buffered, and listings of 10,000 jobs,
/// runs or steps are hundreds of thousands of lines (one `write` each cost more than reading
/// them from the database). Call `flush` at the end to see a write error; dropping flushes too.
pub fn buffered_stdout() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

/// Writes `value` as pretty JSON followed by a newline.
pub fn print_json(out: &mut impl Write, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Renders a located error as stored by the watcher (`{file, line, column, code, message, …}`)
/// on one line; anything else as its JSON text.
pub fn error_line(error: &serde_json::Value) -> String {
    let get = |k: &str| error.get(k);
    match (
        get("message").and_then(|m| m.as_str()),
        get("file").and_then(|f| f.as_str()),
    ) {
        (Some(message), Some(file)) => {
            let line = get("line").and_then(|v| v.as_u64()).unwrap_or(0);
            let column = get("column").and_then(|v| v.as_u64()).unwrap_or(0);
            // The same line as `JobError`'s Display (validate, plan), so an error reads the
            // same whichever command shows it.
            let code = get("code")
                .and_then(|c| c.as_str())
                .map_or_else(String::new, |c| format!(" error[{c}]:"));
            let subject = match (
                get("job").and_then(|j| j.as_str()),
                get("field").and_then(|f| f.as_str()),
            ) {
                (Some(j), Some(k)) => format!("job `{j}`, field `{k}`: "),
                (Some(j), None) => format!("job `{j}`: "),
                (None, Some(k)) => format!("field `{k}`: "),
                (None, None) => String::new(),
            };
            format!("{file}:{line}:{column}:{code} {subject}{message}")
        }
        (Some(message), None) => message.to_string(),
        _ => match error {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(width: Option<usize>) -> Style {
        Style {
            color: false,
            width,
        }
    }

    #[test]
    fn truncates_by_display_width_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("日本語テキスト", 5), "日本…");
    }

    #[test]
    fn columns_align_and_empty_cells_print_a_dash() {
        let mut t = Table::new(&["name", "state"]);
        t.row(vec!["a".into(), "done".into()]);
        t.row(vec!["longer-name".into(), String::new()]);
        let lines = t.render(&plain(None), |_, s| s.to_string());
        assert_eq!(
            lines,
            ["NAME         STATE", "a            done", "longer-name  -"]
        );
    }

    #[test]
    fn wide_tables_shrink_truncatable_columns_only() {
        let mut t = Table::new(&["id", "message"]).keep(0);
        t.row(vec![
            "0190abcd-0000-7000-8000-000000000001".into(),
            "x".repeat(100),
        ]);
        let lines = t.render(&plain(Some(60)), |_, s| s.to_string());
        assert!(lines.iter().all(|l| l.width() <= 60), "{lines:#?}");
        assert!(lines[1].starts_with("0190abcd-0000-7000-8000-000000000001  xxx"));
        assert!(lines[1].ends_with('…'));
    }

    #[test]
    fn right_aligned_numbers() {
        let mut t = Table::new(&["n", "x"]).right(0);
        t.row(vec!["5".into(), "a".into()]);
        t.row(vec!["1234".into(), "b".into()]);
        let lines = t.render(&plain(None), |_, s| s.to_string());
        assert_eq!(lines, ["   N  X", "   5  a", "1234  b"]);
    }

    #[test]
    fn error_lines_from_stored_errors() {
        let e = serde_json::json!({"file": "jobs/a.yaml", "line": 3, "column": 7,
            "code": "bad-cron", "message": "bad cron"});
        assert_eq!(error_line(&e), "jobs/a.yaml:3:7: error[bad-cron]: bad cron");
        let e = serde_json::json!({"file": "jobs/a.yaml", "line": 3, "column": 7,
            "code": "bad-cron", "job": "a", "field": "spec.schedule.cron", "message": "bad cron"});
        assert_eq!(
            error_line(&e),
            "jobs/a.yaml:3:7: error[bad-cron]: job `a`, field `spec.schedule.cron`: bad cron"
        );
        let e = serde_json::json!({"file": "jobs/a.yaml", "line": 1, "column": 1,
            "field": "spec", "message": "no spec"});
        assert_eq!(error_line(&e), "jobs/a.yaml:1:1: field `spec`: no spec");
        assert_eq!(error_line(&serde_json::json!("plain")), "plain");
    }
}
