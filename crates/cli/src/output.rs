//! Rendering results: aligned tables for a terminal, pretty JSON for scripts.
//!
//! Tables are plain text with upper-case headers and columns padded to their widest cell, two
//! spaces apart, like `kubectl get`; the last column is never padded so lines carry no
//! trailing blanks. An absent value prints as `-`.

use std::io::Write;

use serde::Serialize;

/// The `--output` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a person.
    Table,
    /// JSON for scripts (one object, or one object per line for `consume`).
    Json,
}

/// A table being built row by row.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column headers.
    headers: Vec<String>,
    /// Rows; each has as many cells as there are headers.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells print as `-`, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), "-".to_owned());
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header line, each ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let last = line.len().saturating_sub(1);
            for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
                if i == last {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    let pad = width - cell.chars().count() + 2;
                    out.push_str(&" ".repeat(pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Prints text on stdout as is.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Prints a value as pretty JSON on stdout, followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print_text(&text)
}

/// Broker ids as `1,2,3` (`-` for none).
pub fn ids(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// An optional value, `-` when absent.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_lines_have_no_trailing_blanks() {
        let mut t = Table::new(&["ID", "ADDRESS", "STATE"]);
        t.row(vec!["1".into(), "127.0.0.1:9700".into(), "active".into()]);
        t.row(vec!["12".into(), "h:1".into()]);
        assert_eq!(
            t.render(),
            "ID  ADDRESS         STATE\n\
             1   127.0.0.1:9700  active\n\
             12  h:1             -\n"
        );
    }

    #[test]
    fn id_lists() {
        assert_eq!(ids(&[1, 2, 3]), "1,2,3");
        assert_eq!(ids(&[]), "-");
        assert_eq!(opt(Some(4)), "4");
        assert_eq!(opt::<u64>(None), "-");
    }
}
