//! # vidtune (bindings)
//!
//! The workbench host: the Rhai scripting layer over `vidtune-runtime`, the REPL, watch mode, previews
//! and the `vidtune` command line. [`Session`] is the entry point for notebooks and embedders: it keeps
//! variables and functions across `eval` calls, exactly as the REPL does.
//!
//! **Architecture invariant:** this is the only crate that knows Rhai, rustyline, viuer, notify and clap.

pub mod cli;
pub mod diagnostics;
pub mod doctor;
pub mod engine;
pub mod help;
pub mod opts;
pub mod preview;
pub mod repl;
pub mod session;
pub mod watch;

pub use diagnostics::ScriptError;
pub use session::Session;
pub use vidtune_runtime as runtime;
