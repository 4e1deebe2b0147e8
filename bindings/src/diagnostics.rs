//! Script errors as users read them: `file:line:col: message`, the source line and a caret.

use crate::help;
use crate::notebook::{Output, Show};
use rhai::{EvalAltResult, ParseError, Position};
use std::collections::HashMap;
use std::fmt;

/// An error from parsing or running a script, located in its source.
#[derive(Debug, Clone)]
pub struct ScriptError {
    pub message: String,
    /// The script's name: a file path, or `<repl:N>` / `<cell:N>` for typed input.
    pub source: String,
    /// 1-based line and column, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The text of that line.
    pub source_line: Option<String>,
    /// Where the error travelled through ("in call to function 'f' at <repl:2>:1:1").
    pub notes: Vec<String>,
    /// The user interrupted the run (Ctrl-C).
    pub cancelled: bool,
}

impl ScriptError {
    /// An error that is not tied to a position (e.g. a script file that cannot be read).
    pub fn plain(source: &str, message: impl Into<String>) -> Self {
        ScriptError {
            message: message.into(),
            source: source.to_string(),
            line: None,
            column: None,
            source_line: None,
            notes: vec![],
            cancelled: false,
        }
    }

    fn at(source: &str, pos: Position, message: String, sources: &HashMap<String, String>) -> Self {
        let mut e = ScriptError::plain(source, message);
        e.line = pos.line();
        e.column = pos.position();
        e.source_line =
            e.line.and_then(|l| sources.get(source).and_then(|text| text.lines().nth(l - 1)).map(str::to_string));
        e
    }

    /// From a parse error in `source`.
    pub fn from_parse(err: &ParseError, source: &str, sources: &HashMap<String, String>) -> Self {
        ScriptError::at(source, err.position(), format!("syntax error: {}", err.err_type()), sources)
    }

    /// From a run-time error of the top-level code of `source`, following calls to the innermost error.
    pub fn from_eval(err: &EvalAltResult, source: &str, sources: &HashMap<String, String>) -> Self {
        let mut notes = Vec::new();
        let (mut err, mut source) = (err, source.to_string());
        loop {
            match err {
                EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                    // A closure's generated name (anon$…) says nothing to its author.
                    let called =
                        if name.starts_with("anon$") { "a closure".to_string() } else { format!("function '{name}'") };
                    notes.push(format!("in call to {called} at {}", locate(&source, *pos)));
                    if !src.is_empty() {
                        source = src.clone();
                    }
                    err = inner;
                }
                EvalAltResult::ErrorInModule(name, inner, pos) => {
                    notes.push(format!("in module '{name}' imported at {}", locate(&source, *pos)));
                    source = name.clone();
                    err = inner;
                }
                _ => break,
            }
        }
        notes.reverse();
        let mut e = ScriptError::at(&source, err.position(), message(err), sources);
        e.notes = notes;
        e.cancelled = matches!(err, EvalAltResult::ErrorTerminated(..));
        e
    }
}

fn locate(source: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{source}:{l}:{c}"),
        (Some(l), None) => format!("{source}:{l}"),
        _ => source.to_string(),
    }
}

/// The message of an error without Rhai's position suffix, with our wording for the common cases.
fn message(err: &EvalAltResult) -> String {
    match err {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorTerminated(..) => "cancelled".to_string(),
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            let name = sig.split([' ', '(']).next().unwrap_or(sig);
            match help::usage(name) {
                Some(usage) => {
                    format!("wrong arguments for {name}: called as {sig}; usage:\n  {usage}")
                }
                None => {
                    let near = help::near_names(name);
                    match near.as_slice() {
                        [one] => format!("function not found: {sig} (did you mean {one:?}?)"),
                        _ => format!("function not found: {sig}"),
                    }
                }
            }
        }
        EvalAltResult::ErrorVariableNotFound(name, _) => format!("variable not found: {name}"),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let lower = what.to_lowercase();
            let kind = if lower.contains("string") {
                "string"
            } else if lower.contains("map") {
                "map"
            } else {
                "array"
            };
            limit_message(kind, &format!("{what} would exceed"))
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            limit_message("call depth", "too deep recursion: the calls would exceed")
        }
        other => {
            let text = other.to_string();
            let pos = other.position();
            let suffix = format!(" ({pos})");
            text.strip_suffix(&suffix).map(str::to_string).unwrap_or(text)
        }
    }
}

/// "… would exceed the script limit of N units (VAR raises it)".
fn limit_message(kind: &str, lead: &str) -> String {
    match crate::engine::limits::LIMITS.iter().find(|l| l.what == kind) {
        Some(l) => format!(
            "{lead} the script limit of {} {} (set {} to raise it); {}",
            l.value(),
            l.unit,
            l.env,
            if kind == "call depth" { "the call was not made" } else { "the value was not built" }
        ),
        None => lead.to_string(),
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", locate_lc(&self.source, self.line, self.column), self.message)?;
        if let (Some(line), Some(text)) = (self.line, &self.source_line) {
            let gutter = line.to_string().len();
            write!(f, "\n{line} | {text}")?;
            if let Some(col) = self.column {
                // The caret sits under the column, counting characters (tabs kept as tabs).
                let pad: String =
                    text.chars().take(col.saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
                write!(f, "\n{} | {pad}^", " ".repeat(gutter))?;
            }
        }
        for note in &self.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

fn locate_lc(source: &str, line: Option<usize>, col: Option<usize>) -> String {
    match (line, col) {
        (Some(l), Some(c)) => format!("{source}:{l}:{c}"),
        (Some(l), None) => format!("{source}:{l}"),
        _ => source.to_string(),
    }
}

impl std::error::Error for ScriptError {}

impl Show for ScriptError {
    fn outputs(&self) -> Vec<Output> {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let text = self.to_string();
        vec![
            Output::html(format!("<pre style=\"color: #b00020\">{}</pre>", esc(&text))),
            Output::text(format!("{text}\n(the session keeps its variables)")),
        ]
    }
}
