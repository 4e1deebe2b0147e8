//! The Rhai engine of a session: one package of script functions per area, custom types, and the host
//! state those functions share (files read and written, previews, `--set` parameters).
//!
//! To add a script function: register it in its area's `register`, and add its [`FnDoc`] to that area's
//! `DOCS` table (a test fails when the two disagree).

pub mod host;
pub mod live;
pub mod long;
pub mod media;
pub mod models;
pub mod score;
pub mod segment;
pub mod video;

use crate::docs::{FnDoc, TypeDoc};
use crate::guard::Registrar;
use crate::preview::Previewer;
use rhai::{Dynamic, Engine};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Every area's documentation table, in the order `:help` lists them.
pub const DOC_TABLES: &[&[FnDoc]] =
    &[media::DOCS, segment::DOCS, models::DOCS, video::DOCS, long::DOCS, score::DOCS, host::DOCS];

/// The script types.
pub const TYPE_DOCS: &[TypeDoc] = &[
    TypeDoc { name: "Video", summary: "A clip: frames [F, 3, H, W] in [-1, 1] and a frame rate. Cheap to copy." },
    TypeDoc { name: "Image", summary: "One RGB image [3, H, W] in [-1, 1]." },
    TypeDoc {
        name: "Masks",
        summary: "One mask per frame, [F, 1, H, W] in [0, 1]; remembers the clip it was segmented from.",
    },
    TypeDoc { name: "Click", summary: "A click (positive or negative) or a box on a frame, for segment." },
    TypeDoc { name: "Sam", summary: "Segment Anything loaded from ONNX files, with memoised frame embeddings." },
    TypeDoc {
        name: "StableDiffusion",
        summary: "A loaded SD1.x model: UNet, VAE, CLIP text encoder, tokenizer, scheduler.",
    },
    TypeDoc {
        name: "VideoModel",
        summary: "An SD1.x model inflated to video with chosen attention modules; tuned or not.",
    },
    TypeDoc { name: "Latents", summary: "Inverted latents of a clip, the starting noise of an edit." },
    TypeDoc { name: "Clip", summary: "A CLIP model (vision and text towers) for scoring edits." },
    TypeDoc { name: "Table", summary: "Scores of several results side by side; saves as md / csv / html / json." },
    TypeDoc { name: "Tensor", summary: "A tensor (shape, dtype, device): embeddings, latents." },
];

/// One pipeline call, for [`Host::record_call`].
pub struct CallRecord {
    pub function: &'static str,
    /// The options map as the script gave it.
    pub given: rhai::Map,
    /// Every option after defaults (the runtime's options, as text).
    pub resolved: String,
    pub seed: Option<u64>,
    pub seed_given: bool,
    /// `{source, identity, modules, dtype, device}`.
    pub model: Option<serde_json::Value>,
    /// `computed`, `memo`, `memo on disk`.
    pub source: Option<&'static str>,
    pub seconds: f64,
}

/// The model part of a call record.
pub fn model_record(m: &vidtune_runtime::video::VideoModel) -> serde_json::Value {
    serde_json::json!({
        "source": m.base.source,
        "identity": m.identity,
        "base_identity": m.base.identity,
        "modules": m.spec.describe(),
        "dtype": format!("{:?}", m.kind()),
        "device": format!("{:?}", m.device()),
    })
}

/// State shared by the registered functions of one session.
#[derive(Debug, Default)]
pub struct Host {
    reads: RefCell<BTreeSet<PathBuf>>,
    writes: RefCell<BTreeSet<PathBuf>>,
    pub previewer: RefCell<Previewer>,
    pub params: RefCell<BTreeMap<String, Dynamic>>,
    pub params_used: RefCell<BTreeSet<String>>,
    /// Which segmenter `segment` ran last, on how many frames, and what it flagged.
    pub last_segment: RefCell<Option<String>>,
    /// The script being run (its path and text), for run records.
    pub script: RefCell<Option<(String, String)>>,
    /// The pipeline calls of this run, in order, as run records list them.
    pub calls: RefCell<Vec<serde_json::Value>>,
    /// Seeds to use, in order, where a call draws a random one (`vidtune run --from` replays a run).
    pub replay_seeds: RefCell<std::collections::VecDeque<u64>>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Host {
    /// Notes that the script read `path` (watch mode reruns when it changes).
    pub fn record_read(&self, path: &Path) {
        self.reads.borrow_mut().insert(absolute(path));
    }

    /// Notes that the script wrote `path` (never a reason to rerun).
    pub fn record_write(&self, path: &Path) {
        self.writes.borrow_mut().insert(absolute(path));
    }

    /// Files read and not written by the script since the last [`Host::clear_files`].
    pub fn dependencies(&self) -> Vec<PathBuf> {
        let writes = self.writes.borrow();
        self.reads.borrow().iter().filter(|p| !writes.contains(*p)).cloned().collect()
    }

    /// The seed a call without one uses: the next replayed seed, else `None` (a fresh one is drawn).
    pub fn replay_seed(&self) -> Option<u64> {
        self.replay_seeds.borrow_mut().pop_front()
    }

    /// Notes a pipeline call for the run record: the function, the options as given and after defaults,
    /// the seed it used (and whether the script gave it), the model, where the result came from and the
    /// time it took.
    pub fn record_call(&self, call: CallRecord) {
        let mut json = serde_json::json!({
            "function": call.function,
            "options": crate::opts::to_json(&rhai::Dynamic::from(call.given)),
            "resolved": call.resolved,
            "seconds": (call.seconds * 1000.0).round() / 1000.0,
        });
        if let Some(seed) = call.seed {
            json["seed"] = seed.into();
            json["seed_given"] = call.seed_given.into();
        }
        if let Some(m) = call.model {
            json["model"] = m;
        }
        if let Some(source) = call.source {
            json["result"] = source.into();
        }
        self.calls.borrow_mut().push(json);
    }

    /// Everything needed to rebuild this run's results: the script and its parameters, every pipeline
    /// call so far (options after defaults, seeds, models by content hash, timings), the versions and the
    /// device.
    pub fn run_record(&self) -> serde_json::Value {
        let script = self.script.borrow();
        let params: serde_json::Map<String, serde_json::Value> =
            self.params.borrow().iter().map(|(k, v)| (k.clone(), crate::opts::to_json(v))).collect();
        serde_json::json!({
            "script": script.as_ref().map(|(path, text)| serde_json::json!({"path": path, "text": text})),
            "params": params,
            "calls": self.calls.borrow().clone(),
            "vidtune_version": vidtune_runtime::VERSION,
            "libtorch_version": vidtune_runtime::env::libtorch_version(),
            "cuda_devices": if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 },
        })
    }

    /// What saved results carry in their files (PNG text chunks, container metadata): the run record,
    /// once the run has made something with a pipeline.
    pub fn file_metadata(&self) -> Vec<(String, String)> {
        if self.calls.borrow().is_empty() {
            return vec![];
        }
        vec![("vidtune".to_string(), self.run_record().to_string())]
    }

    pub fn clear_files(&self) {
        self.reads.borrow_mut().clear();
        self.writes.borrow_mut().clear();
    }
}

/// One size limit of scripts: far above what a workflow builds, so that a runaway `pad`, `blob` or doubling
/// loop is refused before it allocates, with an error naming the limit, instead of aborting the session.
pub struct ScriptLimit {
    /// What Rhai's error names ("string", "array", …).
    pub what: &'static str,
    /// The variable that changes it.
    pub env: &'static str,
    pub default: u64,
    pub unit: &'static str,
    set: fn(&mut Engine, u64),
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
    models::register(&mut functions, host);
    video::register(&mut functions, host);
    long::register(&mut functions, host);
    score::register(&mut functions, host);
    host::register(&mut functions, host);
    functions.finish();
    engine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::help;

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
                assert!(TYPE_DOCS.iter().any(|t| t.name == owner), "{} belongs to an undocumented type", f.name);
            }
        }
    }
}
