//! The panic boundary of the scripting layer.
//!
//! Every script function is registered through [`Registrar::register_fn`], which runs it inside
//! `catch_unwind`: a panic anywhere below it (a libtorch assertion, an arithmetic bug, an index out of
//! range) becomes a script error that names the function — `sample: internal error: …` — and the REPL,
//! watch mode or notebook session that made the call keeps every variable. [`crate::Session`] adds a
//! second boundary around whole evaluations for what runs outside native functions (property getters,
//! Rhai itself).
//!
//! While a boundary is active, the process's panic hook records the message and location instead of
//! printing them; with `RUST_BACKTRACE` set it also prints Rust's usual report with its backtrace, for
//! developers. Panics outside every boundary are reported as Rust always does.

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, Module, NativeCallContext, Position, RhaiFunc, Shared};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many boundaries are active on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// What the hook saw of the last panic inside a boundary: message and location.
    static LAST: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Whether `RUST_BACKTRACE` asks for developer detail (C++ stack traces, panic backtraces).
pub fn backtraces_wanted() -> bool {
    std::env::var("RUST_BACKTRACE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Installs the hook that keeps panics inside a boundary quiet (once per process).
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) == 0 {
                return default(info);
            }
            let message = payload_text(info.payload());
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            LAST.with(|l| *l.borrow_mut() = Some((message, location)));
            if backtraces_wanted() {
                default(info);
            }
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `f` inside a boundary. A panic becomes `Err` with the panic's message (libtorch's C++ stack
/// trace trimmed unless `RUST_BACKTRACE` is set) and where it happened.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    outcome.map_err(|payload| {
        let (message, location) =
            LAST.with(|l| l.borrow_mut().take()).unwrap_or_else(|| (payload_text(payload.as_ref()), String::new()));
        let message = vidtune_runtime::error::trim_torch_message(&message);
        if location.is_empty() {
            message
        } else {
            format!("{message} (at {location})")
        }
    })
}

/// The script error for a panic in `function`.
pub fn internal_error(function: &str, message: &str) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(format!(
            "{function}: internal error: {message}. The session keeps its state; this is a bug in vidtune, please \
             report it with the script that triggered it"
        )),
        Position::NONE,
    ))
}

type NativeFn = dyn Fn(Option<NativeCallContext>, &mut [&mut Dynamic]) -> Result<Dynamic, Box<EvalAltResult>>;

fn guarded(name: &str, inner: Shared<NativeFn>) -> Shared<NativeFn> {
    let name = name.to_string();
    Shared::new(move |ctx: Option<NativeCallContext>, args: &mut [&mut Dynamic]| {
        contain(|| inner(ctx, args)).unwrap_or_else(|message| Err(internal_error(&name, &message)))
    })
}

/// Registers script functions with their panic boundary. Areas register through it exactly as through
/// an [`Engine`] (`engine.register_fn(name, closure)`); custom types and property getters go straight
/// to the engine. [`Registrar::finish`] installs the functions as one global module.
pub struct Registrar<'a> {
    engine: &'a mut Engine,
    module: Module,
}

impl<'a> Registrar<'a> {
    pub fn new(engine: &'a mut Engine) -> Self {
        Registrar { engine, module: Module::new() }
    }

    /// Registers `func` as the script function `name`, inside the panic boundary.
    pub fn register_fn<A: 'static, const N: usize, const X: bool, R, const F: bool, FUNC>(
        &mut self,
        name: &str,
        func: FUNC,
    ) -> &mut Self
    where
        R: rhai::Variant + Clone,
        FUNC: rhai::RhaiNativeFunc<A, N, X, R, F> + 'static,
    {
        let params: Vec<String> = FUNC::param_names().iter().map(|t| format!("_: {}", short_type(t))).collect();
        let wrapped = match func.into_rhai_function(true, false) {
            RhaiFunc::Pure { func, has_context, is_pure, is_volatile } => {
                RhaiFunc::Pure { func: guarded(name, func), has_context, is_pure, is_volatile }
            }
            RhaiFunc::Method { func, has_context, is_pure, is_volatile } => {
                RhaiFunc::Method { func: guarded(name, func), has_context, is_pure, is_volatile }
            }
            other => other,
        };
        FuncRegistration::new(name).in_global_namespace().with_params_info(params).set_into_module_raw(
            &mut self.module,
            FUNC::param_types(),
            wrapped,
        );
        self
    }

    /// The engine itself, for property getters (`clip.width`; the session's boundary covers them).
    pub fn engine(&mut self) -> &mut Engine {
        self.engine
    }

    /// Registers a custom type under its script name.
    pub fn register_type_with_name<T: rhai::Variant + Clone>(&mut self, name: &str) -> &mut Self {
        self.engine.register_type_with_name::<T>(name);
        self
    }

    /// Installs the registered functions in the engine.
    pub fn finish(self) {
        self.engine.register_global_module(self.module.into());
    }
}

/// `vidtune_runtime::media::video::Video` → `Video`, `&mut Masks` → `&mut Masks`.
fn short_type(t: &str) -> String {
    let (prefix, rest) = match t.strip_prefix("&mut ") {
        Some(r) => ("&mut ", r),
        None => ("", t),
    };
    let base = rest.split('<').next().unwrap_or(rest);
    format!("{prefix}{}", base.rsplit("::").next().unwrap_or(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_function() {
        let mut engine = Engine::new();
        let mut r = Registrar::new(&mut engine);
        r.register_fn("explode", |n: i64| -> i64 {
            let v: Vec<i64> = vec![];
            v[n as usize]
        });
        r.register_fn("fine", |n: i64| n + 1);
        r.finish();
        let err = engine.eval::<i64>("explode(3)").unwrap_err().to_string();
        assert!(err.contains("explode: internal error") && err.contains("index out of bounds"), "{err}");
        assert!(err.contains("guard.rs"), "the location is kept: {err}");
        assert_eq!(engine.eval::<i64>("fine(1)").unwrap(), 2);
    }

    #[test]
    fn methods_still_receive_their_value_by_reference() {
        #[derive(Clone)]
        struct Counter(i64);
        let mut engine = Engine::new();
        let mut r = Registrar::new(&mut engine);
        r.register_type_with_name::<Counter>("Counter");
        r.register_fn("counter", || Counter(0));
        r.register_fn("bump", |c: &mut Counter| c.0 += 1);
        r.register_fn("value", |c: &mut Counter| c.0);
        r.finish();
        assert_eq!(engine.eval::<i64>("let c = counter(); c.bump(); c.bump(); c.value()").unwrap(), 2);
    }
}
