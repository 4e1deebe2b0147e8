//! A scripting session: one Rhai engine with every vidtune package, a scope whose variables and
//! functions persist across evaluations, and the host state. The REPL, `vidtune run`, watch mode and
//! notebooks (`Session::eval` from a cell) all drive this type.

use crate::diagnostics::ScriptError;
use crate::engine::{self, Host};
use rhai::{Dynamic, Engine, Scope, AST};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Variables and functions that persist across `eval` calls.
pub struct Session {
    engine: Engine,
    scope: Scope<'static>,
    functions: AST,
    host: Rc<Host>,
    sources: HashMap<String, String>,
    counter: usize,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

/// One variable of the session, for `:vars`.
#[derive(Debug, Clone)]
pub struct VarInfo {
    pub name: String,
    pub type_name: String,
    pub value: String,
    pub constant: bool,
}

impl Session {
    pub fn new() -> Self {
        let host = Rc::new(Host::default());
        let engine = engine::build_engine(&host);
        Session { engine, scope: Scope::new(), functions: AST::empty(), host, sources: HashMap::new(), counter: 0 }
    }

    /// Evaluates code typed by a user (named `<cell:N>` in errors).
    pub fn eval(&mut self, code: &str) -> Result<Dynamic, ScriptError> {
        self.counter += 1;
        let name = format!("<cell:{}>", self.counter);
        self.eval_source(code, &name)
    }

    /// Evaluates `code` under the source name `name` (used in error positions). Variables it defines and
    /// functions it declares stay in the session, also when it fails part-way.
    pub fn eval_source(&mut self, code: &str, name: &str) -> Result<Dynamic, ScriptError> {
        if !crate::signals::quit_requested() {
            vidtune_runtime::progress::clear_cancel();
        }
        self.sources.insert(name.to_string(), code.to_string());
        let mut ast = self
            .engine
            .compile_with_scope(&self.scope, code)
            .map_err(|e| ScriptError::from_parse(&e, name, &self.sources))?;
        ast.set_source(name);
        let program = self.functions.merge(&ast);
        // The second panic boundary (each native function has its own, see `guard`): whatever panics
        // outside them leaves the session with its variables.
        let result = crate::guard::contain(|| self.engine.eval_ast_with_scope::<Dynamic>(&mut self.scope, &program));
        self.functions = program.clone_functions_only();
        match result {
            Ok(result) => result.map_err(|e| ScriptError::from_eval(&e, name, &self.sources)),
            Err(message) => Err(ScriptError::plain(name, format!("internal error: {message}"))),
        }
    }

    /// Runs a script file in this session.
    pub fn run_file(&mut self, path: impl AsRef<Path>) -> Result<Dynamic, ScriptError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        // A script piped in (`vidtune run -` or `/dev/stdin`) is read up to the same bound; any other
        // path must be a regular file (a FIFO or a device is refused, never read).
        let piped = path == Path::new("-") || path == Path::new("/dev/stdin");
        let read = if piped {
            vidtune_runtime::fsutil::read_text_from(std::io::stdin().lock(), path, "script")
        } else {
            vidtune_runtime::fsutil::read_text(path, "script")
        };
        let code = read.map_err(|e| {
            let why = match e {
                vidtune_runtime::Error::NotFound(_) => "no such file".to_string(),
                vidtune_runtime::Error::BadFile { message, .. } => message,
                other => other.to_string(),
            };
            ScriptError::plain(&name, format!("cannot read script: {why}"))
        })?;
        vidtune_runtime::fsutil::protect(path);
        self.host.record_read(path);
        self.run_source(&code, &name)
    }

    /// Runs a whole script (a file's text): its run record starts afresh.
    pub fn run_source(&mut self, code: &str, name: &str) -> Result<Dynamic, ScriptError> {
        *self.host.script.borrow_mut() = Some((name.to_string(), code.to_string()));
        self.host.calls.borrow_mut().clear();
        self.eval_source(code, name)
    }

    /// Makes `value` available to `param(name, default)` and as a variable `name`.
    pub fn set_param(&mut self, name: &str, value: impl Into<Dynamic>) {
        let value = value.into();
        self.host.params.borrow_mut().insert(name.to_string(), value.clone());
        self.scope.set_or_push(name.to_string(), value);
    }

    /// Parameters given with `set_param` that the script never asked for with `param`.
    pub fn unused_params(&self) -> Vec<String> {
        let used = self.host.params_used.borrow();
        self.host.params.borrow().keys().filter(|k| !used.contains(*k)).cloned().collect()
    }

    /// The value of a variable, if it holds a `T`.
    pub fn get<T: Clone + 'static>(&self, name: &str) -> Option<T> {
        self.scope.get_value::<T>(name)
    }

    /// Sets (or creates) a variable.
    pub fn set<T: Clone + 'static>(&mut self, name: &str, value: T) {
        self.scope.set_or_push(name.to_string(), Dynamic::from(value));
    }

    /// Every variable, newest last.
    pub fn vars(&self) -> Vec<VarInfo> {
        let mut seen = std::collections::HashSet::new();
        let all: Vec<_> = self.scope.iter_raw().collect();
        let mut out: Vec<VarInfo> = all
            .into_iter()
            .rev()
            .filter(|(name, ..)| seen.insert(name.to_string()))
            .map(|(name, constant, value)| VarInfo {
                name: name.to_string(),
                type_name: crate::values::type_label(&self.engine, value),
                value: crate::values::describe(value),
                constant,
            })
            .collect();
        out.reverse();
        out
    }

    /// Names of the script functions defined so far.
    pub fn function_names(&self) -> Vec<String> {
        self.functions.iter_functions().map(|f| f.name.to_string()).collect()
    }

    /// Forgets every variable and function.
    pub fn reset(&mut self) {
        self.scope.clear();
        self.functions = AST::empty();
        self.sources.clear();
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn host(&self) -> &Rc<Host> {
        &self.host
    }

    /// Files the session's scripts read and did not write themselves (watch mode follows these).
    pub fn dependencies(&self) -> Vec<PathBuf> {
        self.host.dependencies()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_persists_across_evals_and_errors() {
        let mut s = Session::new();
        let _ = s.eval("let clip = synthetic_clip(#{frames: 3, size: 32}).video; fn twice(x) { x * 2 }").unwrap();
        assert_eq!(s.eval("twice(clip.len())").unwrap().as_int().unwrap(), 6);
        let err = s.eval("let bad = load_video(\"nope.gif\");").unwrap_err();
        assert!(err.to_string().contains("nope.gif"));
        assert_eq!(s.eval("clip.len()").unwrap().as_int().unwrap(), 3);
        let v: vidtune_runtime::Video = s.get("clip").unwrap();
        assert_eq!(v.width(), 32);
        assert!(s.vars().iter().any(|v| v.name == "clip" && v.type_name == "Video"));
        s.reset();
        assert!(s.eval("clip").is_err());
        assert!(s.eval("twice(1)").is_err());
    }

    #[test]
    fn set_values_are_visible_to_scripts() {
        let mut s = Session::new();
        s.set("n", 5_i64);
        assert_eq!(s.eval("n + 1").unwrap().as_int().unwrap(), 6);
        s.set_param("steps", Dynamic::from(3_i64));
        assert_eq!(s.eval("param(\"steps\", 100)").unwrap().as_int().unwrap(), 3);
        assert_eq!(s.eval("param(\"other\", 100)").unwrap().as_int().unwrap(), 100);
        assert!(s.unused_params().is_empty());
    }
}
