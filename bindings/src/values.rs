//! The script values vidtune adds to Rhai (shared handles on runtime models, tensors, tables and latents)
//! and how any script value reads in one line: results in the REPL, errors, notebook text.

use rhai::{Dynamic, Engine};
use std::cell::RefCell;
use std::rc::Rc;
use tch::Tensor;
use vidtune_runtime::device::{device_name, dtype_name};
use vidtune_runtime::models::clip::ClipModel;
use vidtune_runtime::pipelines::invert::Latents;
use vidtune_runtime::score::Comparison;
use vidtune_runtime::sd::StableDiffusion;
use vidtune_runtime::segment::sam::Sam;
use vidtune_runtime::segment::Click;
use vidtune_runtime::video::VideoModel;

/// A loaded model in scripts (shared, immutable).
#[derive(Clone)]
pub struct SdModel(pub Rc<StableDiffusion>);

/// A tensor in scripts (shares storage; never modified in place).
#[derive(Debug)]
pub struct ScriptTensor(pub Tensor);

impl Clone for ScriptTensor {
    fn clone(&self) -> Self {
        ScriptTensor(self.0.shallow_clone())
    }
}

impl std::fmt::Display for ScriptTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {}, {})", self.0.size(), dtype_name(self.0.kind()), device_name(self.0.device()))
    }
}

/// Shape, dtype and device of a tensor, and for floating-point values their range and mean.
pub fn tensor_summary(t: &Tensor) -> String {
    let head = ScriptTensor(t.shallow_clone()).to_string();
    if !t.is_floating_point() || t.numel() == 0 {
        return head;
    }
    let d = t.detach().to_kind(tch::Kind::Double);
    let (min, max, mean) =
        (d.min().double_value(&[]), d.max().double_value(&[]), d.mean(tch::Kind::Double).double_value(&[]));
    format!("{head}: min {min:.4}, max {max:.4}, mean {mean:.4}")
}

/// A loaded CLIP model in scripts.
#[derive(Clone)]
pub struct ScriptClip(pub Rc<ClipModel>);

/// A table in scripts (`compare`'s, `eval`'s): its cells, and what `.save("x.json")` writes.
#[derive(Clone)]
pub struct Table {
    pub table: Rc<vidtune_runtime::table::Table>,
    pub json: Rc<serde_json::Value>,
}

impl From<&Comparison> for Table {
    fn from(c: &Comparison) -> Table {
        Table { table: Rc::new(c.table()), json: Rc::new(c.to_json()) }
    }
}

/// A video model in scripts (shared, immutable: tuning returns a new one).
#[derive(Clone)]
pub struct ScriptVideoModel(pub Rc<VideoModel>);

/// Inverted latents in scripts.
#[derive(Clone)]
pub struct ScriptLatents(pub Latents);

/// A loaded Segment Anything, shared by the script values that hold it (its embeddings are memoised).
#[derive(Clone)]
pub struct ScriptSam(pub Rc<RefCell<Sam>>);

impl ScriptSam {
    pub fn summary(&self) -> String {
        let sam = self.0.borrow();
        format!(
            "Sam({}, {}, {} execution provider)",
            sam.files.0.display(),
            sam.files.1.file_name().unwrap_or_default().to_string_lossy(),
            sam.provider
        )
    }
}

/// A one-line description of a script value, as the REPL prints results.
pub fn describe(value: &Dynamic) -> String {
    if let Some(v) = value.read_lock::<vidtune_runtime::Video>() {
        return v.to_string();
    }
    if let Some(v) = value.read_lock::<vidtune_runtime::Image>() {
        return v.to_string();
    }
    if let Some(v) = value.read_lock::<vidtune_runtime::Masks>() {
        return v.to_string();
    }
    if let Some(v) = value.read_lock::<vidtune_runtime::segment::Click>() {
        return describe_click(&v);
    }
    if let Some(v) = value.read_lock::<SdModel>() {
        return v.0.summary();
    }
    if let Some(v) = value.read_lock::<ScriptTensor>() {
        return v.to_string();
    }
    if let Some(v) = value.read_lock::<Table>() {
        return v.table.to_pretty();
    }
    if let Some(v) = value.read_lock::<crate::engine::control::ScriptControlNet>() {
        return v.0.summary();
    }
    if let Some(v) = value.read_lock::<crate::engine::control::ScriptAdapter>() {
        return v.0.summary();
    }
    if let Some(v) = value.read_lock::<ScriptClip>() {
        return v.0.summary();
    }
    if let Some(v) = value.read_lock::<ScriptVideoModel>() {
        return v.0.summary();
    }
    if let Some(v) = value.read_lock::<ScriptLatents>() {
        return v.0.to_string();
    }
    if value.is_string() {
        return format!("{:?}", value.to_string());
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        let items: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {}", describe(v))).collect();
        return format!("#{{{}}}", items.join(", "));
    }
    if let Some(arr) = value.read_lock::<rhai::Array>() {
        let items: Vec<String> = arr.iter().take(16).map(describe).collect();
        let more = if arr.len() > 16 { format!(", … ({} items)", arr.len()) } else { String::new() };
        return format!("[{}{more}]", items.join(", "));
    }
    value.to_string()
}

/// The script type name of a value (`Video`, `StableDiffusion`, `i64`, …), for `:vars` and errors.
pub fn type_label(engine: &Engine, value: &Dynamic) -> String {
    let name = engine.map_type_name(value.type_name());
    name.rsplit("::").next().unwrap_or(name).to_string()
}

pub fn describe_click(c: &Click) -> String {
    let on = |f: &Option<usize>| f.map(|f| format!(" on frame {f}")).unwrap_or_default();
    match c {
        Click::Point { x, y, positive, frame } => {
            format!("click({x}, {y}{}){}", if *positive { "" } else { ", false" }, on(frame))
        }
        Click::Box { x0, y0, x1, y1, frame } => format!("box({x0}, {y0}, {x1}, {y1}){}", on(frame)),
    }
}
