//! The REPL's `:` commands.

use super::{print_error, ReplState};
use crate::help;
use crate::session::Session;
use std::path::Path;

/// Every command with what it does (for `:help` and completion).
pub const COMMANDS: &[(&str, &str)] = &[
    (":help [name]", "list functions, or show one function's or type's documentation"),
    (":vars", "list the session's variables"),
    (":reset", "forget every variable and function"),
    (":load FILE", "run a script file in this session (its variables stay)"),
    (":autopreview on|off", "preview every video, image or masks result"),
    (":cache [clear]", "show the memo of tune / invert (hits, entries, disk use), or empty it"),
    (":quit", "leave (also :q, :exit, Ctrl-D)"),
];

pub enum Outcome {
    Continue,
    Quit,
}

pub fn run(line: &str, session: &mut Session, state: &mut ReplState) -> Outcome {
    let (cmd, arg) = line.split_once(char::is_whitespace).map(|(c, a)| (c, a.trim())).unwrap_or((line, ""));
    match cmd {
        ":quit" | ":q" | ":exit" => return Outcome::Quit,
        ":help" | ":h" | ":?" => {
            if arg.is_empty() {
                print!("{}", help::overview(COMMANDS));
            } else {
                match help::lookup_in(arg, session.host()) {
                    Some(text) => print!("{text}"),
                    None => {
                        let near = help::near_names(arg);
                        let hint = if near.is_empty() {
                            String::new()
                        } else {
                            format!(" (did you mean {}?)", near.join(", "))
                        };
                        eprintln!("no function, method or type named {arg:?}{hint}; :help lists them")
                    }
                }
            }
        }
        ":vars" => {
            let vars = session.vars();
            if vars.is_empty() {
                println!("(no variables)");
            }
            let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
            for v in vars {
                let kind = if v.constant { "const " } else { "" };
                println!("{:<width$}  {kind}{:<8}  {}", v.name, v.type_name, v.value);
            }
        }
        ":reset" => {
            session.reset();
            println!("session reset: no variables, no functions");
        }
        ":load" => {
            if arg.is_empty() {
                eprintln!(":load needs a file: :load scripts/demo.rhai");
            } else if let Err(e) = session.run_file(Path::new(arg)) {
                print_error(&e);
            }
        }
        ":autopreview" => match arg {
            "on" => state.autopreview = true,
            "off" => state.autopreview = false,
            "" => println!("autopreview is {}", if state.autopreview { "on" } else { "off" }),
            other => eprintln!(":autopreview takes on or off, not {other:?}"),
        },
        ":cache" => match arg {
            "" => {
                let (c, in_memory, disk) = vidtune_runtime::pipelines::cached::memo_status();
                println!(
                    "memo: {} memory hits, {} disk hits, {} misses; {in_memory} entries in memory",
                    c.memory_hits, c.disk_hits, c.misses
                );
                println!(
                    "disk: {} entries, {:.1} MB of {:.1} GB in {}",
                    disk.entries,
                    disk.bytes as f64 / 1e6,
                    disk.max_bytes as f64 / 1e9,
                    disk.dir.display()
                );
            }
            "clear" => match vidtune_runtime::pipelines::cached::memo_clear() {
                Ok(n) => println!("cache cleared ({n} disk entries removed)"),
                Err(e) => eprintln!("cannot clear the cache: {e}"),
            },
            other => eprintln!(":cache takes nothing or `clear`, not {other:?}"),
        },
        other => eprintln!("unknown command {other}; :help lists the commands"),
    }
    Outcome::Continue
}
