//! The rustyline helper: multi-line input while brackets are open or a line ends in an operator, and tab
//! completion of functions, methods, variables, keywords, REPL commands, and file paths inside strings.

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

/// Names that change as the session runs (variables with their types, and script functions).
#[derive(Debug, Default)]
pub struct SessionNames {
    pub variables: Vec<String>,
    /// Each variable's type as scripts name it (`Video`, `Masks`, `VideoModel`, …).
    pub types: std::collections::HashMap<String, String>,
    pub functions: Vec<String>,
}

/// When the cursor is at a key of an options map (`f(…, #{ke`), the function the map is given to.
pub fn options_call(before: &str) -> Option<String> {
    // The innermost `#{` still open before the cursor.
    let bytes = before.as_bytes();
    let (mut depth, mut open_at) = (0i32, None);
    let mut in_str = false;
    for (i, &c) in bytes.iter().enumerate().rev() {
        match c {
            b'"' | b'`' => in_str = !in_str,
            _ if in_str => {}
            b'}' => depth += 1,
            b'{' if depth > 0 => depth -= 1,
            b'{' if i > 0 && bytes[i - 1] == b'#' => {
                open_at = Some(i - 1);
                break;
            }
            b'{' => return None,
            _ => {}
        }
    }
    let open_at = open_at?;
    // The key position: right after `#{` or a `,` at the map's own level (not after `key:`).
    let inside = &before[open_at + 2..];
    let (mut level, mut last) = (0i32, None::<char>);
    for ch in inside.chars() {
        match ch {
            '[' | '(' | '{' => level += 1,
            ']' | ')' | '}' => level -= 1,
            ',' | ':' if level == 0 => last = Some(ch),
            _ => {}
        }
    }
    if last == Some(':') {
        return None;
    }
    // The call the map is an argument of: the last `(` left open before it, and the name before that.
    let head = &before[..open_at];
    let mut level = 0i32;
    let paren = head.char_indices().rev().find_map(|(i, ch)| match ch {
        ')' | ']' | '}' => {
            level += 1;
            None
        }
        '(' | '[' | '{' if level > 0 => {
            level -= 1;
            None
        }
        '(' => Some(i),
        _ => None,
    })?;
    let name: String = head[..paren]
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The variable before a `.` at the end of `head` (`clip.` → `clip`).
fn receiver(head: &str) -> Option<&str> {
    let head = head.strip_suffix('.')?;
    let start = head.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map(|i| i + 1).unwrap_or(0);
    let name = &head[start..];
    (!name.is_empty()).then_some(name)
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

/// Binary operators a line may end in, the expression going on below (longest first).
const CONTINUING: &[&str] = &[
    "&&", "||", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "**", "??", "..", "+", "-", "*", "/", "%", "=", "<",
    ">", "&", "|", "^", ",", ".",
];

/// Whether `input` has an open bracket, block comment or back-tick string, or ends in a binary operator
/// (`let x = a +`): the user is not done yet.
pub fn needs_more(input: &str) -> bool {
    let mut depth = 0i64;
    // The code outside strings and comments, to see what the input ends in.
    let mut code = String::new();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        if !matches!(c, '"' | '\'' | '`' | '/') {
            code.push(c);
        }
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '"' | '\'' => {
                code.push('s');
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
                code.push('s');
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
            '/' => code.push('/'),
            _ => {}
        }
    }
    let tail = code.trim_end();
    depth > 0 || CONTINUING.iter().any(|op| tail.ends_with(op))
}

/// Where the string the cursor is in starts (just after its opening `"`), if it is in one.
fn open_string(before: &str) -> Option<usize> {
    let mut open = None;
    let mut chars = before.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (open, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(_), '"') => open = None,
            (None, '"') => open = Some(i + 1),
            (None, '/') if chars.peek().map(|p| p.1) == Some('/') => return None,
            _ => {}
        }
    }
    open
}

/// Completions of a partial path: the entries of its folder whose names start with its last part,
/// folders with a `/`; and where the last part starts in `partial`.
fn path_candidates(partial: &str) -> (usize, Vec<String>) {
    let cut = partial.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (dir, prefix) = partial.split_at(cut);
    let folder = if dir.is_empty() { std::path::Path::new(".") } else { std::path::Path::new(dir) };
    let mut out: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let hidden = name.starts_with('.') && !prefix.starts_with('.');
            (name.starts_with(prefix) && !hidden).then(|| if e.path().is_dir() { format!("{name}/") } else { name })
        })
        .collect();
    out.sort();
    (cut, out)
}

impl ReplHelper {
    /// Everything that fits where the cursor is, before filtering by the word typed.
    fn candidates_unfiltered(&self, before: &str, word: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let trimmed = before.trim_start();
        if trimmed.starts_with(':') && !trimmed.contains(' ') {
            out.extend(self.commands.iter().map(|c| c.to_string()));
        } else if trimmed.starts_with(":help ") || trimmed.starts_with(":h ") {
            out.extend(help::functions().iter().map(|f| f.call_name().to_string()));
            out.extend(help::types().iter().map(|t| t.name.to_string()));
        } else if let Some(func) = options_call(&before[..before.len() - word.len()]) {
            // Option names of the function the map goes to (and the aliases it accepts), as `key: `.
            let docs: Vec<&crate::docs::FnDoc> =
                help::functions().into_iter().filter(|f| f.call_name() == func && !f.options.is_empty()).collect();
            for d in docs {
                let names = crate::docs::option_names(d.options);
                out.extend(names.iter().map(|n| format!("{n}: ")));
                out.extend(crate::opts::aliases_for(&func, &names).into_iter().map(|(a, _)| format!("{a}: ")));
            }
        } else if before[..before.len() - word.len()].ends_with('.') {
            // Methods of the receiver's type when the receiver is a variable of a known type, else all.
            let head = &before[..before.len() - word.len()];
            let ty = receiver(head).and_then(|v| self.names.borrow().types.get(v).cloned());
            let methods = help::functions().into_iter().filter(|f| match (&ty, f.owner()) {
                (Some(t), Some(o)) => o == t,
                (None, Some(_)) => true,
                _ => false,
            });
            out.extend(methods.map(|f| f.call_name().to_string()));
        } else {
            out.extend(help::functions().iter().filter(|f| f.owner().is_none()).map(|f| f.name.to_string()));
            let names = self.names.borrow();
            out.extend(names.variables.iter().cloned());
            out.extend(names.functions.iter().cloned());
            out.extend(KEYWORDS.iter().map(|k| k.to_string()));
        }
        out
    }

    fn candidates(&self, before: &str, word: &str) -> Vec<String> {
        let mut out = self.candidates_unfiltered(before, word);
        out.retain(|c| c.starts_with(word) && c != word || (c == word && !word.is_empty()));
        if out.is_empty() && !word.is_empty() {
            // Nothing starts so: a suggestion by edit distance, as unknown options get.
            let all = self.candidates_unfiltered(before, word);
            let refs: Vec<&str> = all.iter().map(|c| c.trim_end_matches(": ")).collect();
            if let Some(best) = crate::opts::did_you_mean(word, &refs) {
                if let Some(full) = all.iter().find(|c| c.trim_end_matches(": ") == best) {
                    out.push(full.clone());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if let Some(start) = open_string(before) {
            // Inside a string: a file path (`load_video("in.g⇥`).
            let (cut, paths) = path_candidates(&before[start..]);
            return Ok((start + cut, paths.into_iter().map(|c| Pair { display: c.clone(), replacement: c }).collect()));
        }
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
    use super::{needs_more, options_call, ReplHelper, SessionNames};
    use std::cell::RefCell;
    use std::rc::Rc;

    fn helper() -> ReplHelper {
        let names = SessionNames {
            variables: vec!["clip".into(), "m".into()],
            types: [("clip".into(), "Video".into()), ("m".into(), "Masks".into())].into(),
            ..Default::default()
        };
        ReplHelper { names: Rc::new(RefCell::new(names)), commands: vec![":help"] }
    }

    #[test]
    fn the_call_an_options_map_belongs_to() {
        assert_eq!(options_call("sample(tuned, \"a car\", #{").as_deref(), Some("sample"));
        assert_eq!(options_call("let x = invert(t, clip, #{steps: 50, ").as_deref(), Some("invert"));
        assert_eq!(options_call("sample(t, \"x\", #{masks: segment(clip, [click(1, 2)]), ").as_deref(), Some("sample"));
        assert_eq!(options_call("sample(t, \"x\", #{steps: "), None, "a value, not a key");
        assert_eq!(options_call("sample(t, \"x\", #{steps: 5}, "), None, "the map is closed");
        assert_eq!(options_call("let a = #{"), None, "a map given to no call");
    }

    #[test]
    fn completion_knows_options_and_the_receivers_type() {
        let h = helper();
        assert_eq!(h.candidates("sample(t, \"x\", #{gui", "gui"), ["guidance: ", "guidance_scale: "]);
        assert_eq!(
            h.candidates("sample(t, \"x\", #{steps: 3, num_", "num_"),
            ["num_frames: ", "num_inference_steps: "]
        );
        // A slip still finds the option.
        assert_eq!(h.candidates("invert(t, c, #{stpes", "stpes"), ["steps: "]);
        let video = h.candidates("clip.", "");
        assert!(video.contains(&"frame".to_string()) && !video.contains(&"dilate".to_string()), "{video:?}");
        let masks = h.candidates("m.", "");
        assert!(masks.contains(&"dilate".to_string()) && !masks.contains(&"frame".to_string()), "{masks:?}");
    }

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

    #[test]
    fn a_line_ending_in_an_operator_continues() {
        assert!(needs_more("let x = 1 +"));
        assert!(needs_more("let ok = a &&  "));
        assert!(needs_more("let y ="));
        assert!(needs_more("let e = clip\n    ."));
        assert!(!needs_more("let x = 1 + 2;"));
        assert!(!needs_more("let s = \"a +\""), "inside a string");
        assert!(!needs_more("let x = 1; // and +"), "inside a comment");
    }

    #[test]
    fn commands_methods_and_paths_complete() {
        use rustyline::completion::Completer;
        let h = helper();
        assert_eq!(h.candidates(":he", ":he"), [":help"]);
        assert!(h.candidates("clip.", "").contains(&"grid".to_string()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.gif"), b"").unwrap();
        std::fs::create_dir(dir.path().join("input")).unwrap();
        std::fs::write(dir.path().join(".hidden"), b"").unwrap();
        let history = rustyline::history::DefaultHistory::new();
        let ctx = rustyline::Context::new(&history);
        let base = dir.path().display().to_string();
        let line = format!("let v = load_video(\"{base}/in");
        let (start, pairs) = h.complete(&line, line.len(), &ctx).unwrap();
        let got: Vec<_> = pairs.iter().map(|p| p.replacement.as_str()).collect();
        assert_eq!(got, ["in.gif", "input/"], "paths inside a string, not methods");
        assert_eq!(&line[start..], "in");
        let line = format!("load_video(\"{base}/in.g");
        let (start, pairs) = h.complete(&line, line.len(), &ctx).unwrap();
        assert_eq!(pairs.iter().map(|p| p.replacement.as_str()).collect::<Vec<_>>(), ["in.gif"]);
        assert_eq!(&line[start..], "in.g");
        // A closed string: back to names.
        let line = "load_video(\"a\").gr";
        let (_, pairs) = h.complete(line, line.len(), &ctx).unwrap();
        assert_eq!(pairs.iter().map(|p| p.replacement.as_str()).collect::<Vec<_>>(), ["grid"]);
    }
}
