//! vidtune in evcxr Jupyter notebooks. A notebook starts with
//!
//! ```text
//! :dep vidtune-notebook = { path = "path/to/vidtune/notebook" }
//! use vidtune_notebook::prelude::*;
//! ```
//!
//! and then has the whole workbench: the runtime's Rust API, script sessions (`Session`), and rich
//! displays of clips, images, masks, tables and tensors (see `vidtune::notebook`). This crate only
//! re-exports `vidtune`; it exists so that notebooks link one shared copy of it.

pub use vidtune::*;
