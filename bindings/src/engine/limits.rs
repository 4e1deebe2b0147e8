//! The size limits every session's engine runs under, and the variables that change them.

use rhai::Engine;

/// One size limit of scripts: far above what a workflow builds, so that a runaway `pad`, `blob` or doubling
/// loop is refused before it allocates, with an error naming the limit, instead of aborting the session.
pub struct ScriptLimit {
    /// What Rhai's error names ("string", "array", …).
    pub what: &'static str,
    /// The variable that changes it.
    pub env: &'static str,
    pub default: u64,
    pub unit: &'static str,
    pub(super) set: fn(&mut Engine, u64),
}

impl ScriptLimit {
    /// The limit in force: the variable's value when it is a positive integer, else the default.
    pub fn value(&self) -> u64 {
        match std::env::var(self.env).ok().map(|v| v.trim().parse::<u64>()) {
            Some(Ok(v)) if v > 0 => v,
            Some(_) => {
                eprintln!("warning: {} must be a positive integer; using {}", self.env, self.default);
                self.default
            }
            None => self.default,
        }
    }
}

/// The limits every session's engine runs under (`Engine::set_max_*`).
pub const LIMITS: [ScriptLimit; 4] = [
    ScriptLimit {
        what: "string",
        env: "VIDTUNE_MAX_STRING",
        default: 64 << 20,
        unit: "characters",
        set: |e, v| {
            e.set_max_string_size(v as usize);
        },
    },
    ScriptLimit {
        what: "array",
        env: "VIDTUNE_MAX_ARRAY",
        default: 16 << 20,
        unit: "elements (blobs: bytes)",
        set: |e, v| {
            e.set_max_array_size(v as usize);
        },
    },
    ScriptLimit {
        what: "map",
        env: "VIDTUNE_MAX_MAP",
        default: 1 << 20,
        unit: "entries",
        set: |e, v| {
            e.set_max_map_size(v as usize);
        },
    },
    ScriptLimit {
        what: "call depth",
        env: "VIDTUNE_MAX_CALL_DEPTH",
        default: 64,
        unit: "nested function calls",
        set: |e, v| {
            e.set_max_call_levels(v as usize);
        },
    },
];
