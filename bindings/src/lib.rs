//! # vidtune (bindings)
//!
//! The workbench host: the Rhai scripting layer over `vidtune-runtime`, the REPL, watch mode, previews
//! and the `vidtune` command line. [`Session`] is the entry point for notebooks and embedders: it keeps
//! variables and functions across `eval` calls, exactly as the REPL does; [`notebook`] shows values in
//! evcxr Jupyter, and [`prelude`] is what a notebook imports.
//!
//! **Architecture invariant:** this is the only crate that knows Rhai, rustyline, viuer, notify and clap.

pub mod bench;
pub mod cli;
pub mod diagnostics;
pub mod docs;
pub mod doctor;
pub mod engine;
pub mod eval;
pub mod guard;
pub mod help;
pub mod notebook;
pub mod opts;
pub mod preview;
pub mod repl;
pub mod session;
pub mod signals;
pub mod sweep;
pub mod values;
pub mod watch;

pub use diagnostics::ScriptError;
pub use session::Session;
pub use vidtune_runtime as runtime;

/// What a notebook (or any embedder) imports: the session, the runtime's main types and functions, and
/// the display traits.
pub mod prelude {
    pub use crate::notebook::{EvcxrDisplay, Output, Show};
    pub use crate::{ScriptError, Session};
    pub use vidtune_runtime::score::{score, Comparison, Score};
    pub use vidtune_runtime::segment::{segment, Builtin, Click, SegmentOptions};
    pub use vidtune_runtime::synthetic::{synthetic_clip, SyntheticSpec};
    pub use vidtune_runtime::{load_sd, load_video, save_video, Fit, Image, LoadOptions, Masks, Video};
}
