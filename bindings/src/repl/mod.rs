//! The interactive REPL: rustyline editing with history and completion, `:` commands, results printed
//! (and previewed when `:autopreview` is on), errors printed with their position while the session keeps
//! all its state. Ctrl-C at the prompt clears the line; during a run it cancels the running primitive.

mod commands;
pub mod helper;

use crate::diagnostics::ScriptError;
use crate::engine::{describe, host};
use crate::preview::PreviewMode;
use crate::session::Session;
use helper::{ReplHelper, SessionNames};
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;
use std::cell::RefCell;
use std::io::IsTerminal;
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
    let _ = ctrlc::set_handler(vidtune_runtime::progress::request_cancel);
    let mut state = ReplState { autopreview: session.host().previewer.borrow().mode == PreviewMode::Inline };
    println!("vidtune {} — :help lists functions, Tab completes, :quit or Ctrl-D leaves", vidtune_runtime::VERSION);
    loop {
        match editor.readline("vidtune> ") {
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
