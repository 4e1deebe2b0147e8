//! The Rhai engine of a session: [`build_engine`] registers one package of script functions per area
//! (`media`, `segment`, `models`, `video`, `long`, `score`, `suites`, `sweep`, `host`) over the [`Host`] state they share
//! ([`state`]), under the script size [`limits`].
//!
//! To add a script function: register it in its area's `register`, and add its
//! [`FnDoc`](crate::docs::FnDoc) to that area's `DOCS` table (a test fails when the two disagree); a new
//! area's `DOCS` joins [`crate::help::DOC_TABLES`].

pub mod call;
pub mod control;
pub mod host;
pub mod limits;
pub mod live;
pub mod long;
pub mod masks;
pub mod media;
pub mod models;
pub mod score;
pub mod segment;
pub mod state;
pub mod suites;
pub mod sweep;
pub mod video;
pub mod video_options;

pub use limits::{ScriptLimit, LIMITS};
pub use state::{model_record, CallRecord, Host};

use crate::guard::Registrar;
use rhai::{Dynamic, Engine};
use std::rc::Rc;

/// Rhai's file resolver, reading a module only from a regular file of bounded size (an `import` of a FIFO
/// or a device is refused, never read).
struct CheckedResolver(rhai::module_resolvers::FileModuleResolver);

impl CheckedResolver {
    fn check(&self, source: Option<&str>, path: &str, pos: rhai::Position) -> Result<(), Box<rhai::EvalAltResult>> {
        let file = self.0.get_file_path(path, source.and_then(|s| std::path::Path::new(s).parent()));
        if !file.exists() {
            return Ok(()); // Rhai's own "module not found"
        }
        vidtune_runtime::fsutil::check_readable(&file, vidtune_runtime::fsutil::TEXT_MAX_BYTES, "script module")
            .map(|_| ())
            .map_err(|e| Box::new(rhai::EvalAltResult::ErrorRuntime(format!("import {path:?}: {e}").into(), pos)))
    }
}

impl rhai::ModuleResolver for CheckedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: rhai::Position,
    ) -> Result<std::rc::Rc<rhai::Module>, Box<rhai::EvalAltResult>> {
        self.check(source, path, pos)?;
        self.0.resolve(engine, source, path, pos)
    }

    fn resolve_raw(
        &self,
        engine: &Engine,
        global: &mut rhai::GlobalRuntimeState,
        scope: &mut rhai::Scope,
        path: &str,
        pos: rhai::Position,
    ) -> Result<std::rc::Rc<rhai::Module>, Box<rhai::EvalAltResult>> {
        self.check(global.source(), path, pos)?;
        self.0.resolve_raw(engine, global, scope, path, pos)
    }
}

/// Builds the engine for a session: standard library, every vidtune package, cancellation on Ctrl-C.
pub fn build_engine(host: &Rc<Host>) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_expr_depths(256, 256);
    for limit in LIMITS {
        (limit.set)(&mut engine, limit.value());
    }
    engine.on_progress(|_| vidtune_runtime::progress::cancel_requested().then(|| Dynamic::from("cancelled")));
    let mut resolver = rhai::module_resolvers::FileModuleResolver::new();
    resolver.enable_cache(false); // watch mode must see edited modules
    engine.set_module_resolver(CheckedResolver(resolver));
    let mut functions = Registrar::new(&mut engine);
    media::register(&mut functions, host);
    segment::register(&mut functions, host);
    masks::register(&mut functions, host);
    control::register(&mut functions);
    models::register(&mut functions, host);
    video::register(&mut functions, host);
    long::register(&mut functions, host);
    score::register(&mut functions, host);
    suites::register(&mut functions, host);
    sweep::register(&mut functions, host);
    host::register(&mut functions, host, crate::help::lookup_in);
    functions.finish();
    engine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::help;
    use std::collections::BTreeSet;

    /// The names scripts can call, from the engine itself (the standard library, operators and accessors
    /// left out).
    fn registered_names(engine: &Engine) -> BTreeSet<String> {
        let standard: BTreeSet<String> = Engine::new().gen_fn_signatures(true).into_iter().collect();
        engine
            .gen_fn_signatures(true)
            .iter()
            .filter(|s| !standard.contains(*s))
            .map(|s| s.split('(').next().unwrap_or(s).trim().to_string())
            .filter(|n| !n.starts_with("get$") && !n.starts_with("set$") && n != "to_string" && n != "to_debug")
            .collect()
    }

    #[test]
    fn every_script_function_is_documented_and_every_doc_registered() {
        let engine = build_engine(&Rc::new(Host::default()));
        let registered = registered_names(&engine);
        let documented: BTreeSet<String> = help::functions().iter().map(|f| f.call_name().to_string()).collect();
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let unregistered: Vec<_> = documented.difference(&registered).collect();
        assert!(undocumented.is_empty(), "script functions without a FnDoc: {undocumented:?}");
        assert!(unregistered.is_empty(), "FnDocs of functions that do not exist: {unregistered:?}");
    }

    #[test]
    fn every_example_compiles() {
        let engine = build_engine(&Rc::new(Host::default()));
        for f in help::functions() {
            if let Err(e) = engine.compile(f.example) {
                panic!("example of {} does not parse: {e}\n{}", f.name, f.example);
            }
            assert!(!f.signatures.is_empty() && !f.summary.is_empty(), "{} lacks a signature or summary", f.name);
        }
    }

    #[test]
    fn methods_belong_to_documented_types() {
        for f in help::functions() {
            if let Some(owner) = f.owner() {
                assert!(help::types().iter().any(|t| t.name == owner), "{} belongs to an undocumented type", f.name);
            }
        }
    }
}
