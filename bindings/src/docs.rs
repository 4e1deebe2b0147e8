//! The documentation types every script function's table is made of: [`FnDoc`], its options' [`OptDoc`]s,
//! [`TypeDoc`], and the option tables shared by several functions.

use vidtune_runtime::options::Opt;
use vidtune_runtime::video::presets::PRESETS;
use vidtune_runtime::video::processors::Role;
use vidtune_runtime::video::VideoSpec;

/// One key of a script function's options map: its name, what it takes, and what it does.
#[derive(Debug, Clone, Copy)]
pub struct OptDoc {
    pub name: &'static str,
    /// What it takes, with the default (`integer (default 500)`, `"resize" | "crop" | "pad"`); see
    /// [`OptDoc::takes`].
    pub takes: &'static str,
    pub doc: &'static str,
    /// Where the runtime declares what it takes, when it does ([`Declared`]); `takes` is then unused.
    pub opt: Option<Declared>,
}

/// What the runtime declares of an option, written there once.
#[derive(Debug, Clone, Copy)]
pub enum Declared {
    /// A shared pipeline option: name, kind, default, range, aliases and doc.
    Opt(&'static Opt),
    /// A module choice of `inflate`: the registry's modules of that role.
    Modules(Role),
    /// `inflate`'s presets.
    Presets,
}

impl OptDoc {
    /// The row of an option the runtime declares.
    pub const fn declared(opt: &'static Opt) -> OptDoc {
        OptDoc { name: opt.name, takes: "", doc: opt.doc, opt: Some(Declared::Opt(opt)) }
    }

    /// What it takes, with the default.
    pub fn takes(&self) -> std::borrow::Cow<'static, str> {
        match self.opt {
            Some(Declared::Opt(o)) => o.takes().into(),
            Some(Declared::Modules(role)) => VideoSpec::choices(role).into(),
            Some(Declared::Presets) => {
                let names: Vec<String> = PRESETS.iter().map(|p| format!("{p:?}")).collect();
                format!("{} (default) | {}", names[0], names[1..].join(" | ")).into()
            }
            None => self.takes.into(),
        }
    }
}

/// A function without an options map.
pub const NO_OPTIONS: &[OptDoc] = &[];

/// The options of every single-file save (`save_tensors`, `save_image`, `table.save`, `model.save`).
pub const SAVE_FILE_OPTIONS: &[OptDoc] = &[OptDoc {
    opt: None,
    name: "overwrite",
    takes: "true | false (default)",
    doc: "replace a file of that name that vidtune did not write; without it such a file is refused (a file \
          vidtune wrote is replaced freely, a script never)",
}];

/// The names of an options table.
pub fn option_names(options: &[OptDoc]) -> Vec<&'static str> {
    options.iter().map(|o| o.name).collect()
}

/// Documentation of one script function or method.
#[derive(Debug, Clone, Copy)]
pub struct FnDoc {
    /// `load_video` for a function, `Video.grid` for a method (or property) of a type.
    pub name: &'static str,
    /// One line per accepted form, e.g. `load_video(path: string, options: map) -> Video`.
    pub signatures: &'static [&'static str],
    /// What it does, in a sentence or two.
    pub summary: &'static str,
    /// Notes, one per line (may be empty).
    pub details: &'static str,
    /// The keys of its options map, declared once: the map's checks, `:help` and completion read them.
    pub options: &'static [OptDoc],
    /// A runnable Rhai example.
    pub example: &'static str,
}

impl FnDoc {
    /// The name scripts call (`grid` for `Video.grid`).
    pub fn call_name(&self) -> &'static str {
        self.name.rsplit('.').next().unwrap_or(self.name)
    }

    /// The type a method belongs to, if it is one.
    pub fn owner(&self) -> Option<&'static str> {
        self.name.split_once('.').map(|(t, _)| t)
    }
}

/// Documentation of a script type (its methods are the `Type.method` entries).
#[derive(Debug, Clone, Copy)]
pub struct TypeDoc {
    pub name: &'static str,
    pub summary: &'static str,
}
