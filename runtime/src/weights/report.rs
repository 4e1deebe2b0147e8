//! Putting loaded tensors into a model's parameters, and reporting what did not fit.

use super::TensorMap;
use crate::error::{Error, Result};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// What loading one component found.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub component: String,
    /// Parameters filled from the files.
    pub loaded: usize,
    /// Parameters the model needs and the files lack (an error unless expected).
    pub missing: Vec<String>,
    /// Missing parameters that are expected to be new (e.g. temporal layers of an inflated UNet); they keep
    /// their initialisation.
    pub new_params: Vec<String>,
    /// Tensors in the files that the model does not use.
    pub unused: Vec<String>,
    /// `name: file shape vs model shape`.
    pub mismatched: Vec<String>,
}

fn list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
    let more = if names.len() > 8 { format!(" … and {} more", names.len() - 8) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

impl LoadReport {
    /// An error when anything needed is missing or wrongly shaped.
    pub fn check(&self, source: &str) -> Result<()> {
        let mut problems = vec![];
        if !self.missing.is_empty() {
            problems.push(format!("{} missing tensor(s): {}", self.missing.len(), list(&self.missing)));
        }
        if !self.mismatched.is_empty() {
            problems.push(format!(
                "{} tensor(s) of the wrong shape: {}",
                self.mismatched.len(),
                list(&self.mismatched)
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "{source}: the {} weights do not fit its config: {}",
            self.component,
            problems.join("; ")
        )))
    }
}

/// Renames tensors that older or other savers name differently, per component.
fn normalize(component: &str, tensors: TensorMap) -> TensorMap {
    let mut out = TensorMap::with_capacity(tensors.len());
    for (k, v) in tensors {
        let (k, v) = match component {
            "vae" => legacy_vae_attention(k, v),
            "text_encoder"
                if !k.starts_with("text_model.") && !k.starts_with("vision_model.") && !k.contains("projection") =>
            {
                (format!("text_model.{k}"), v)
            }
            _ => (k, v),
        };
        out.insert(k, v);
    }
    out
}

/// Older diffusers VAEs name the mid-block attention `query/key/value/proj_attn` (sometimes as 1×1
/// convolutions); current ones `to_q/to_k/to_v/to_out.0`.
fn legacy_vae_attention(k: String, v: Tensor) -> (String, Tensor) {
    if !k.contains(".attentions.") {
        return (k, v);
    }
    let mut name = k;
    for (old, new) in [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")]
    {
        name = name.replace(old, new);
    }
    let v = if name.ends_with(".weight")
        && ["to_q", "to_k", "to_v", "to_out.0"].iter().any(|p| name.contains(&format!(".{p}.")))
        && v.dim() > 2
    {
        v.flatten(1, -1)
    } else {
        v
    };
    (name, v)
}

/// Buffers some checkpoints carry that are not parameters.
fn ignorable(name: &str) -> bool {
    name.ends_with("position_ids") || name.ends_with(".num_batches_tracked")
}

/// Copies `tensors` into the variables of `vs` (cast to `kind`); `allow_missing` names parameters that may
/// stay at their initialisation. Fails on missing or wrongly-shaped tensors; the variables are frozen.
pub fn apply_weights(
    vs: &mut VarStore,
    tensors: TensorMap,
    component: &str,
    kind: Kind,
    allow_missing: &dyn Fn(&str) -> bool,
    source: &str,
) -> Result<LoadReport> {
    let mut tensors = normalize(component, tensors);
    let mut report = LoadReport { component: component.to_string(), ..Default::default() };
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut var) in vars {
            match tensors.remove(&name) {
                Some(src) if src.size() == var.size() => {
                    var.set_data(&src.to_device(var.device()).to_kind(kind));
                    report.loaded += 1;
                }
                Some(src) => report.mismatched.push(format!("{name}: file {:?} vs model {:?}", src.size(), var.size())),
                None if allow_missing(&name) => {
                    var.set_data(&var.to_kind(kind));
                    report.new_params.push(name);
                }
                None => report.missing.push(name),
            }
        }
    });
    report.unused = tensors.into_keys().filter(|k| !ignorable(k)).collect();
    report.unused.sort();
    vs.freeze();
    report.check(source)?;
    if !report.unused.is_empty() {
        log::warn!(
            "{source}: {} unused tensor(s) in the {component} weights: {}",
            report.unused.len(),
            list(&report.unused)
        );
    }
    Ok(report)
}
