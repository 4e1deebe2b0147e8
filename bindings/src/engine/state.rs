//! The host state a session's script functions share: files read and written (watch mode), previews,
//! `--set` parameters, and the run record of every pipeline call.

use crate::preview::Previewer;
use rhai::Dynamic;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One pipeline call, for [`Host::record_call`].
pub struct CallRecord {
    pub function: &'static str,
    /// The options map as the script gave it.
    pub given: rhai::Map,
    /// Every option after defaults: the runtime's options as JSON with typed fields.
    pub resolved: serde_json::Value,
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
    /// Where a rerun writes (`vidtune run --from … --out DIR`): every output path goes under it, so the
    /// run it came from is never written over.
    pub out_root: RefCell<Option<PathBuf>>,
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

    /// Where the script's output `path` is written: itself, or under the rerun's folder (an absolute path
    /// too, as a path inside that folder).
    pub fn output_path(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match &*self.out_root.borrow() {
            None => p.to_path_buf(),
            Some(root) => {
                let inside: PathBuf = p.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect();
                root.join(inside)
            }
        }
    }

    /// Where the script reads `path` from: in a rerun, a file this run wrote is read where it was written
    /// (under the rerun's folder); anything else is read where it is.
    pub fn input_path(&self, path: &str) -> PathBuf {
        if self.out_root.borrow().is_some() {
            let mapped = self.output_path(path);
            if self.writes.borrow().contains(&absolute(&mapped)) {
                return mapped;
            }
        }
        PathBuf::from(path)
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
            "threads": vidtune_runtime::cpu::threads().map(|t| t.count),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rerun_writes_under_its_folder_and_reads_back_what_it_wrote() {
        let host = Host::default();
        assert_eq!(host.output_path("out/a.gif"), PathBuf::from("out/a.gif"), "a plain run writes where it says");
        *host.out_root.borrow_mut() = Some(PathBuf::from("rerun-1"));
        assert_eq!(host.output_path("out/a.gif"), PathBuf::from("rerun-1/out/a.gif"));
        assert_eq!(host.output_path("/tmp/x/a.gif"), PathBuf::from("rerun-1/tmp/x/a.gif"), "absolute paths too");
        assert_eq!(host.output_path("../a.gif"), PathBuf::from("rerun-1/a.gif"), "never outside the folder");
        assert_eq!(host.input_path("out/a.gif"), PathBuf::from("out/a.gif"), "inputs are read where they are");
        host.record_write(&host.output_path("out/a.gif"));
        assert_eq!(host.input_path("out/a.gif"), PathBuf::from("rerun-1/out/a.gif"), "…unless this run wrote them");
    }
}
