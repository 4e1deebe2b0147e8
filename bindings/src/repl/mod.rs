//! The interactive REPL: rustyline editing with history and completion, `:` commands, results printed
//! (and previewed when `:autopreview` is on), errors printed with their position while the session keeps
//! all its state. Ctrl-C at the prompt clears the line; during a run it cancels the running primitive.

mod commands;
pub mod helper;

use crate::diagnostics::ScriptError;
use crate::engine::host;
use crate::preview::PreviewMode;
use crate::session::Session;
use crate::values::describe;
use helper::{ReplHelper, SessionNames};
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;
use std::cell::RefCell;
use std::io::{BufRead, IsTerminal, Read};
use std::path::PathBuf;
use std::rc::Rc;

/// REPL settings that `:` commands change.
pub struct ReplState {
    pub autopreview: bool,
}

/// Where the REPL keeps its history: `$XDG_DATA_HOME/vidtune/history.txt` (or the platform's data dir).
pub fn history_path() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("vidtune").join("history.txt"))
}

/// Prints a script error (red on a terminal).
pub fn print_error(err: &ScriptError) {
    let text = err.to_string();
    if std::io::stderr().is_terminal() {
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        eprintln!("\x1b[31m{first}\x1b[0m");
        if !rest.is_empty() {
            eprintln!("{rest}");
        }
    } else {
        eprintln!("{text}");
    }
}

/// Lines of piped input, checked before they reach the session; a statement may span lines while a
/// bracket is open, as at the prompt.
struct Piped<R> {
    reader: R,
    line: usize,
}

/// The longest piped line (a longer one is refused, not buffered).
const PIPED_LINE_MAX: usize = 1 << 20;

impl<R: std::io::BufRead> Piped<R> {
    fn new(reader: R) -> Self {
        Piped { reader, line: 0 }
    }

    /// The next entry: one line, or several while a bracket stays open. A bad line is reported on stderr
    /// and skipped (an entry in progress is dropped with it).
    fn next_entry(&mut self) -> Result<String, ReadlineError> {
        let mut entry = String::new();
        loop {
            let Some(line) = self.next_line()? else {
                return if entry.is_empty() { Err(ReadlineError::Eof) } else { Ok(entry) };
            };
            match line {
                Ok(text) => {
                    if !entry.is_empty() {
                        entry.push('\n');
                    }
                    entry.push_str(&text);
                    if entry.trim_start().starts_with(':') || !helper::needs_more(&entry) {
                        return Ok(entry);
                    }
                }
                Err(why) => {
                    eprintln!("<stdin>:{}: {why}; the line was skipped, the session goes on", self.line);
                    entry.clear();
                }
            }
        }
    }

    /// One raw line: `None` at the end, `Some(Err(why))` for a line that cannot be a statement.
    fn next_line(&mut self) -> Result<Option<Result<String, String>>, ReadlineError> {
        let mut bytes = Vec::new();
        let n = (&mut self.reader).take(PIPED_LINE_MAX as u64 + 1).read_until(b'\n', &mut bytes)?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if bytes.len() > PIPED_LINE_MAX && !bytes.ends_with(b"\n") {
            // Skip the rest of the overlong line without keeping it.
            loop {
                let buf = self.reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.reader.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = buf.len();
                        self.reader.consume(len);
                    }
                }
            }
            return Ok(Some(Err(format!("a line longer than {PIPED_LINE_MAX} bytes"))));
        }
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return Ok(Some(Err(format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to() + 1)))),
        };
        if let Some(i) = text.find(|c: char| c.is_control() && c != '\t') {
            let what = if text[i..].starts_with('\x1b') { "a terminal escape sequence" } else { "a control character" };
            return Ok(Some(Err(format!("{what} at column {}", text[..i].chars().count() + 1))));
        }
        Ok(Some(Ok(text)))
    }
}

/// Runs the REPL until `:quit` or Ctrl-D.
pub fn run() -> anyhow::Result<()> {
    let mut session = Session::new();
    let names = Rc::new(RefCell::new(SessionNames::default()));
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .bracketed_paste(true)
        .max_history_size(5000)?
        .build();
    let mut editor: Editor<ReplHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ReplHelper {
        names: names.clone(),
        commands: commands::COMMANDS.iter().map(|(c, _)| c.split(' ').next().unwrap_or(c)).collect(),
    }));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    // Ctrl-C while a primitive runs only raises the cancel flag; the loops stop at their next step.
    crate::signals::install(crate::signals::Mode::Repl);
    let mut state = ReplState { autopreview: session.host().previewer.borrow().mode == PreviewMode::Inline };
    println!("vidtune {} — :help lists functions, Tab completes, :quit or Ctrl-D leaves", vidtune_runtime::VERSION);
    // Piped input is read line by line here, not by the line editor: a line that is not UTF-8 or holds
    // terminal escapes becomes one error, and the session goes on.
    let mut piped = (!std::io::stdin().is_terminal()).then(|| Piped::new(std::io::stdin().lock()));
    loop {
        if crate::signals::quit_requested() {
            break;
        }
        let read = match piped.as_mut() {
            Some(p) => p.next_entry(),
            None => crate::signals::at_prompt(|| editor.readline("vidtune> ")),
        };
        match read {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line.as_str());
                // Whatever panics in a command or a preview ends that line, not the session.
                let outcome = crate::guard::contain(|| {
                    if line.trim_start().starts_with(':') {
                        commands::run(line.trim(), &mut session, &mut state)
                    } else {
                        eval_and_print(&mut session, &state, &line);
                        commands::Outcome::Continue
                    }
                });
                match outcome {
                    Ok(commands::Outcome::Quit) => break,
                    Ok(commands::Outcome::Continue) => {}
                    Err(message) => eprintln!("internal error: {message}; the session keeps its state"),
                }
                let mut n = names.borrow_mut();
                let vars = session.vars();
                n.types = vars.iter().map(|v| (v.name.clone(), v.type_name.clone())).collect();
                n.variables = vars.into_iter().map(|v| v.name).collect();
                n.functions = session.function_names();
            }
            Err(ReadlineError::Interrupted) => println!("(Ctrl-D or :quit to leave)"),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}

fn eval_and_print(session: &mut Session, state: &ReplState, code: &str) {
    match session.eval(code) {
        Ok(value) if value.is_unit() => {}
        Ok(value) => {
            println!("{}", describe(&value));
            if state.autopreview {
                if let Ok(Some(_)) = host::preview_image(&value) {
                    if let Err(e) = host::preview(session.host(), &value) {
                        eprintln!("preview failed: {e}");
                    }
                }
            }
        }
        Err(err) if err.cancelled => eprintln!("cancelled — the session keeps its state"),
        Err(err) => print_error(&err),
    }
}
