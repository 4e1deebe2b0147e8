//! A table of text cells rendered for terminals, Markdown, CSV and HTML, each cell made safe for its
//! format: what `score::Comparison` and evaluation reports print and save.

use crate::error::{Error, Result};
use crate::fsutil::write_output_bytes;
use crate::score::{csv_safe, markdown_cell};
use std::path::Path;

/// A CSV field (RFC 4180), quoted when it holds a comma, a quote or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A table of text cells, rendered for terminals, Markdown, CSV and HTML with cells made safe for each
/// (what [`Comparison`] and evaluation reports print and save).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Per column: numbers (right-aligned).
    pub numeric: Vec<bool>,
}

impl Table {
    fn is_numeric(&self, i: usize) -> bool {
        self.numeric.get(i).copied().unwrap_or(false)
    }

    /// A boxed table for terminals.
    pub fn to_pretty(&self) -> String {
        let cells = &self.rows;
        let headers = &self.headers;
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |l: &str, m: &str, r: &str| {
            format!("{l}{}{r}\n", widths.iter().map(|w| "─".repeat(w + 2)).collect::<Vec<_>>().join(m))
        };
        let row = |r: &[String]| {
            let parts: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if self.is_numeric(i) {
                        format!(" {c:>w$} ", w = widths[i])
                    } else {
                        format!(" {c:<w$} ", w = widths[i])
                    }
                })
                .collect();
            format!("│{}│\n", parts.join("│"))
        };
        let mut out = line("┌", "┬", "┐");
        out.push_str(&row(headers));
        out.push_str(&line("├", "┼", "┤"));
        for r in cells {
            out.push_str(&row(r));
        }
        out.push_str(&line("└", "┴", "┘"));
        out
    }

    pub fn to_markdown(&self) -> String {
        let headers = &self.headers;
        let align: Vec<&str> = (0..headers.len()).map(|i| if self.is_numeric(i) { "---:" } else { "---" }).collect();
        let mut out = format!("| {} |\n|{}|\n", headers.join(" | "), align.join("|"));
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.iter().map(|c| markdown_cell(c)).collect::<Vec<_>>().join(" | ")));
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let quote = |c: &str| csv_field(&csv_safe(c));
        let mut out = self.headers.iter().map(|h| quote(h)).collect::<Vec<_>>().join(",") + "\n";
        for r in &self.rows {
            out.push_str(&(r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",") + "\n"));
        }
        out
    }

    pub fn to_html(&self) -> String {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut out = String::from("<table class=\"vidtune-scores\"><thead><tr>");
        for h in &self.headers {
            out.push_str(&format!("<th>{}</th>", esc(h)));
        }
        out.push_str("</tr></thead><tbody>");
        for r in &self.rows {
            out.push_str("<tr>");
            for c in r {
                out.push_str(&format!("<td>{}</td>", esc(c)));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        out
    }

    /// Saves as `.md`, `.csv` or `.html` by extension, atomically; `.json` as `json` when given.
    pub fn save(&self, path: &Path, json: Option<&serde_json::Value>) -> Result<()> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        let text = match (ext.as_str(), json) {
            ("md" | "markdown", _) => self.to_markdown(),
            ("csv", _) => self.to_csv(),
            ("html", _) => self.to_html(),
            ("json", Some(j)) => serde_json::to_string_pretty(j).unwrap_or_default(),
            (other, _) => {
                return Err(Error::Invalid(format!(
                    "{}: cannot save a table as .{other}; use .md, .csv, .html or .json",
                    path.display()
                )))
            }
        };
        write_output_bytes(path, text.as_bytes())
    }
}
