//! The rustyline helper: multi-line input while brackets are open, and tab completion of functions,
//! methods, variables, keywords and REPL commands.

use crate::help;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};
use std::cell::RefCell;
use std::rc::Rc;

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "for", "in", "while", "loop", "do", "until", "break", "continue", "return",
    "true", "false", "switch", "throw", "try", "catch", "import", "export", "as", "print", "debug", "type_of",
];

/// Names that change as the session runs (variables and script functions).
#[derive(Debug, Default)]
pub struct SessionNames {
    pub variables: Vec<String>,
    pub functions: Vec<String>,
}

pub struct ReplHelper {
    pub names: Rc<RefCell<SessionNames>>,
    pub commands: Vec<&'static str>,
}

impl Helper for ReplHelper {}
impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if input.trim_start().starts_with(':') || !needs_more(input) {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}

/// Whether `input` has an open bracket, block comment or back-tick string: the user is not done yet.
pub fn needs_more(input: &str) -> bool {
    let mut depth = 0i64;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '"' | '\'' => {
                // A quoted string or character ends on its line.
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        '\n' => break,
                        d if d == c => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == '`' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return true;
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut closed = false;
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        closed = true;
                        break;
                    }
                    prev = d;
                }
                if !closed {
                    return true;
                }
            }
            _ => {}
        }
    }
    depth > 0
}

impl ReplHelper {
    fn candidates(&self, before: &str, word: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let trimmed = before.trim_start();
        if trimmed.starts_with(':') && !trimmed.contains(' ') {
            out.extend(self.commands.iter().map(|c| c.to_string()));
        } else if trimmed.starts_with(":help ") || trimmed.starts_with(":h ") {
            out.extend(help::functions().iter().map(|f| f.call_name().to_string()));
            out.extend(help::types().iter().map(|t| t.name.to_string()));
        } else if before[..before.len() - word.len()].ends_with('.') {
            out.extend(help::functions().iter().filter(|f| f.owner().is_some()).map(|f| f.call_name().to_string()));
        } else {
            out.extend(help::functions().iter().filter(|f| f.owner().is_none()).map(|f| f.name.to_string()));
            let names = self.names.borrow();
            out.extend(names.variables.iter().cloned());
            out.extend(names.functions.iter().cloned());
            out.extend(KEYWORDS.iter().map(|k| k.to_string()));
        }
        out.retain(|c| c.starts_with(word) && c != word || (c == word && !word.is_empty()));
        out.sort();
        out.dedup();
        out
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == ':'))
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let word = &before[start..];
        let pairs =
            self.candidates(before, word).into_iter().map(|c| Pair { display: c.clone(), replacement: c }).collect();
        Ok((start, pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::needs_more;

    #[test]
    fn open_brackets_continue() {
        assert!(needs_more("fn f(x) {"));
        assert!(needs_more("let a = [1,\n2,"));
        assert!(!needs_more("let s = \"{\";"));
        assert!(!needs_more("// {\nlet a = 1;"));
        assert!(needs_more("let s = `multi\nline"));
        assert!(!needs_more("fn f() { 1 }"));
        assert!(needs_more("/* open comment"));
    }
}
