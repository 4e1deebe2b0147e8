//! Video models: the SD1.x UNet inflated to video (Tune-A-Video's pseudo-3-D UNet, from the same UNet
//! code), with attention modules chosen per layer from [`processors`], and the small files that hold
//! what tuning changed ([`tuned`]).
//!
//! **Invariant:** an inflated model shares the storage of every frozen tensor with its base model; only
//! new (temporal) and trained tensors have storage of their own, so inflating costs no copy of the UNet
//! and frozen weights stay bit-identical to the base.

pub mod call;
pub mod conditioning;
pub mod presets;
pub mod processors;
pub mod tuned;

use crate::error::{Error, Result};
use crate::models::attention::{BlockShape, BlockStage, Stages};
use crate::models::attention_processor::{AttnContext, CallData, RepeatedRows};
use crate::models::checkpoint::{Slot, Tape};
use crate::models::nn::{Builder, InitMode};
use crate::models::UNet2DConditionModel;
use crate::sd::StableDiffusion;
pub use conditioning::Conditioning;
use processors::{Build, ModelStage, ModuleSpec, Role};
use std::rc::Rc;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Which modules an inflated model uses.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSpec {
    /// The spatial module of every `attn1` layer, unless overridden.
    pub spatial: ModuleSpec,
    /// The module of every `attn2` layer (attention to the text).
    pub cross: ModuleSpec,
    /// The temporal stage of every transformer block (`None`: no temporal layers).
    pub temporal: Option<ModuleSpec>,
    /// The mask stage of every transformer block (`None`: no mask layers).
    pub mask: Option<ModuleSpec>,
    /// Overrides: `(pattern, module)`; a pattern matches `attn1` layer names (`*` wildcards; without one,
    /// a prefix). Later entries win.
    pub layers: Vec<(String, ModuleSpec)>,
}

impl Default for VideoSpec {
    /// Tune-A-Video: sparse-causal spatial attention and temporal attention.
    fn default() -> Self {
        VideoSpec {
            spatial: ModuleSpec::named(Role::Spatial, "sparse_causal").expect("registered"),
            cross: ModuleSpec::named(Role::Cross, "plain").expect("registered"),
            temporal: Some(ModuleSpec::named(Role::Temporal, "temporal").expect("registered")),
            mask: None,
            layers: vec![],
        }
    }
}

impl VideoSpec {
    /// Tune-A-Video's modules with the given spatial and temporal names (`"none"`: no temporal layers).
    pub fn with(spatial: &str, temporal: &str) -> Result<VideoSpec> {
        Ok(VideoSpec {
            spatial: ModuleSpec::parse(spatial)?,
            temporal: parse_optional(Role::Temporal, temporal)?,
            ..VideoSpec::default()
        })
    }

    /// The spatial module for an `attn1` layer.
    pub fn module_for(&self, layer: &str) -> &ModuleSpec {
        self.layers.iter().rev().find(|(p, _)| glob_match(p, layer)).map(|(_, m)| m).unwrap_or(&self.spatial)
    }

    /// A one-line description (`sparse_causal + temporal`, with the other roles and overrides).
    pub fn describe(&self) -> String {
        let temporal = self.temporal.as_ref().map(|t| t.to_string()).unwrap_or_else(|| "none".into());
        let mut s = format!("{} + {temporal}", self.spatial);
        if self.cross.name != "plain" {
            s.push_str(&format!(" + cross {}", self.cross));
        }
        if let Some(m) = &self.mask {
            s.push_str(&format!(" + mask {m}"));
        }
        for (p, m) in &self.layers {
            s.push_str(&format!(", {p} → {m}"));
        }
        s
    }

    /// Every module of the spec.
    pub fn modules(&self) -> Vec<&ModuleSpec> {
        let mut all = vec![&self.spatial, &self.cross];
        all.extend(self.temporal.iter());
        all.extend(self.mask.iter());
        all.extend(self.layers.iter().map(|(_, m)| m));
        all
    }

    /// Whether a module of the spec needs the subject's masks in every call.
    pub fn needs_masks(&self) -> Option<&ModuleSpec> {
        self.modules().into_iter().find(|m| m.entry().needs_masks)
    }

    /// The stages (temporal, mask) every transformer block gets. Each stage's new layers are drawn from a
    /// generator seeded by `seed`, the block and the module, so adding a module never changes another's
    /// initialisation.
    fn stages(&self, seed: u64) -> Option<Stages> {
        let specs: Vec<ModuleSpec> = self.mask.iter().chain(self.temporal.iter()).cloned().collect();
        if specs.is_empty() {
            return None;
        }
        Some(Stages(Rc::new(move |b: &Builder, shape: &BlockShape| {
            specs
                .iter()
                .filter_map(|spec| match &spec.entry().build {
                    Build::Stage { block, .. } => {
                        tch::manual_seed(init_seed(seed, &b.path_name(), &spec.name));
                        Some(block(b, shape, spec))
                    }
                    Build::Processor(_) => None,
                })
                .collect::<Result<Vec<Box<dyn BlockStage>>>>()
        })))
    }
}

/// The seed of one module's new layers at one place of the model.
pub fn init_seed(seed: u64, place: &str, module: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{seed}|{place}|{module}").as_bytes());
    (u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) >> 1) as i64
}

/// `"none"` is `None`.
pub fn parse_optional(role: Role, text: &str) -> Result<Option<ModuleSpec>> {
    if text.trim() == "none" {
        return Ok(None);
    }
    ModuleSpec::parse_role(role, text).map(Some)
}

/// The stages of a model given by name, for loaders (`["temporal"]` builds a Tune-A-Video UNet).
pub fn stages_named(temporal: Option<&str>) -> Result<Option<Stages>> {
    let spec = VideoSpec {
        temporal: temporal.map(|t| ModuleSpec::named(Role::Temporal, t)).transpose()?,
        ..VideoSpec::default()
    };
    Ok(spec.stages(0))
}

/// `*` matches any run of characters; a pattern without `*` matches names it prefixes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.starts_with(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// An inflated (and possibly tuned) video model over a base Stable Diffusion model.
pub struct VideoModel {
    pub base: Rc<StableDiffusion>,
    pub unet: UNet2DConditionModel,
    pub vars: VarStore,
    pub spec: VideoSpec,
    /// Model-level parts of the modules (the mask encoder of `mca`), run before the UNet.
    pub model_stages: Vec<Box<dyn ModelStage>>,
    /// Parameters changed by tuning (names), empty before.
    pub trained: Vec<String>,
    /// What tuning did, for tuned files and summaries.
    pub record: Option<tuned::TuneRecord>,
    /// A content hash of what this model computes (base weights, modules, tuning), for memoisation.
    pub identity: String,
}

impl std::fmt::Debug for VideoModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary())
    }
}

/// Inflates `base` to video with the modules of `spec`. New layers get their documented initialisation
/// (seeded by `seed`); every other tensor is shared with `base`.
pub fn inflate(base: Rc<StableDiffusion>, spec: &VideoSpec, seed: u64) -> Result<VideoModel> {
    let vars = VarStore::new(base.device);
    tch::manual_seed(seed as i64);
    let builder = Builder::new(vars.root(), InitMode::Empty);
    let unet = UNet2DConditionModel::new(&builder, &base.unet.model.config, spec.stages(seed))?;
    let mut model_stages = vec![];
    for m in spec.modules() {
        if let Build::Stage { model: Some(build), .. } = &m.entry().build {
            tch::manual_seed(init_seed(seed, "model", &m.name));
            model_stages.push(build(&builder, &base.unet.model.config, m)?);
        }
    }
    let base_vars = base.unet.vars.variables();
    let kind = base.unet.model.kind();
    tch::no_grad(|| {
        for (name, mut var) in vars.variables() {
            match base_vars.get(&name) {
                Some(shared) => var.set_data(shared),
                None => var.set_data(&var.to_kind(kind)),
            }
            let _ = var.set_requires_grad(false);
        }
    });
    let identity = crate::cache::KeyBuilder::new("inflate")
        .text(&base.identity)
        .text(&spec.describe())
        .text(&format!("seed {seed}"))
        .finish();
    let model =
        VideoModel { base, unet, vars, spec: spec.clone(), model_stages, trained: vec![], record: None, identity };
    model.check_layer_patterns()?;
    model.install_processors()?;
    Ok(model)
}

impl VideoModel {
    /// The video model of a base that already has temporal layers (a Tune-A-Video pipeline folder): its
    /// modules (sparse-causal + its temporal kind), every tensor shared. Errors for an image model.
    pub fn from_video_base(base: Rc<StableDiffusion>) -> Result<VideoModel> {
        let Some(kind) = base.unet.model.stage_names.first().cloned() else {
            return Err(Error::Invalid(format!(
                "{} is an image model; inflate it to video first: inflate(sd, #{{spatial: \"sparse_causal\", temporal: \"temporal\"}})",
                base.source
            )));
        };
        let spec = VideoSpec { temporal: Some(ModuleSpec::named(Role::Temporal, &kind)?), ..VideoSpec::default() };
        inflate(base, &spec, 0)
    }

    /// The device the video UNet runs on.
    pub fn device(&self) -> tch::Device {
        self.vars.device()
    }

    /// A copy of this model's video UNet on `device` — every tensor, the mask encoder and the modules'
    /// state (spectral norms) — to spread the windows of a long clip over several devices. Its `base`
    /// (text encoder, VAE, scheduler) stays this model's: only [`VideoModel::forward`] is meant to run on
    /// a replica, with its inputs on `device` ([`Conditioning::to_device`]). On the model's own device the
    /// (read-only) tensors are shared rather than copied.
    pub fn replica(&self, device: tch::Device) -> Result<VideoModel> {
        self.replica_as(device, None)
    }

    /// [`VideoModel::replica`] with its floating-point tensors (weights and modules' state) in `kind`:
    /// mixed-precision tuning trains a half-precision copy of a float32 model.
    pub fn replica_as(&self, device: tch::Device, kind: Option<Kind>) -> Result<VideoModel> {
        let convert = |t: &Tensor| {
            let t = t.to_device(device);
            match kind {
                Some(k) if t.is_floating_point() && t.kind() != k => t.to_kind(k),
                _ => t,
            }
        };
        let vars = VarStore::new(device);
        let builder = Builder::new(vars.root(), InitMode::Empty);
        let unet = UNet2DConditionModel::new(&builder, &self.unet.config, self.spec.stages(0))?;
        let mut model_stages = vec![];
        for m in self.spec.modules() {
            if let Build::Stage { model: Some(build), .. } = &m.entry().build {
                model_stages.push(build(&builder, &self.unet.config, m)?);
            }
        }
        let source = self.vars.variables();
        let copies = vars.variables();
        if copies.len() != source.len() {
            return Err(Error::Invalid(format!(
                "replica on {device:?}: {} tensors, but the model has {}",
                copies.len(),
                source.len()
            )));
        }
        tch::no_grad(|| {
            for (name, mut var) in copies {
                let from = source
                    .get(&name)
                    .ok_or_else(|| Error::Invalid(format!("replica on {device:?}: the model has no {name}")))?;
                var.set_data(&convert(from));
                let _ = var.set_requires_grad(false);
            }
            Ok::<(), Error>(())
        })?;
        let model = VideoModel {
            base: self.base.clone(),
            unet,
            vars,
            spec: self.spec.clone(),
            model_stages,
            trained: self.trained.clone(),
            record: self.record.clone(),
            identity: self.identity.clone(),
        };
        model.install_processors()?;
        model.load_processor_states(self, convert)?;
        Ok(model)
    }

    /// Refuses `layers` patterns that select no `attn1` layer (a typo would silently change nothing).
    fn check_layer_patterns(&self) -> Result<()> {
        let names: Vec<String> =
            self.unet.attention_layers().into_iter().map(|(n, _)| n).filter(|n| n.ends_with(".attn1")).collect();
        for (pattern, module) in &self.spec.layers {
            if !names.iter().any(|n| glob_match(pattern, n)) {
                let examples: Vec<&str> = names.iter().take(2).map(String::as_str).collect();
                return Err(Error::Invalid(format!(
                    "layers: the pattern {pattern:?} (for {module}) matches no attention layer of this model; layer \
                     names look like {}, and patterns may use * (\"up_blocks.*\", \"*.attentions.0.*\")",
                    examples.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Sets the processor of every `attn1` and `attn2` from the spec (stages set their own).
    pub fn install_processors(&self) -> Result<()> {
        for (name, attn) in self.unet.attention_layers() {
            if name.ends_with(".attn1") {
                attn.set_processor(processors::make(self.spec.module_for(&name))?);
            } else if name.ends_with(".attn2") {
                attn.set_processor(processors::make(&self.spec.cross)?);
            }
        }
        Ok(())
    }

    /// The parameter patterns tuning trains besides the chosen preset: what the modules add and declare
    /// trained (the mask encoder and the MCA layers).
    pub fn module_trainables(&self) -> Vec<String> {
        self.spec.modules().iter().flat_map(|m| m.entry().trains.iter().map(|t| t.to_string())).collect()
    }

    /// An independent copy: shares the frozen base tensors, copies the new and trained ones and the
    /// modules' state.
    pub fn fork(&self) -> Result<VideoModel> {
        let copy = inflate(self.base.clone(), &self.spec, 0)?;
        let mine = self.vars.variables();
        let theirs = copy.vars.variables();
        let mut own = self.new_parameters();
        own.extend(self.trained.iter().cloned());
        tch::no_grad(|| {
            for name in &own {
                if let (Some(src), Some(dst)) = (mine.get(name), theirs.get(name)) {
                    let mut dst = dst.shallow_clone();
                    dst.set_data(&src.detach().copy());
                }
            }
        });
        copy.load_processor_states(self, Tensor::copy)?;
        Ok(VideoModel {
            trained: self.trained.clone(),
            record: self.record.clone(),
            identity: self.identity.clone(),
            ..copy
        })
    }

    /// Gives every attention layer's processor the running state (spectral norms) of `other`'s
    /// layer at the same place, each tensor through `convert` (a copy, a move, a cast).
    pub fn load_processor_states(&self, other: &VideoModel, convert: impl Fn(&Tensor) -> Tensor) -> Result<()> {
        for ((_, theirs), (_, ours)) in other.unet.attention_layers().into_iter().zip(self.unet.attention_layers()) {
            let state: Vec<(String, Tensor)> =
                theirs.processor_state().into_iter().map(|(k, t)| (k, convert(&t))).collect();
            if !state.is_empty() {
                ours.load_processor_state(&state)?;
            }
        }
        Ok(())
    }

    /// Names of the parameters the inflation added (none of them in the base model).
    pub fn new_parameters(&self) -> Vec<String> {
        let base = self.base.unet.vars.variables();
        let mut names: Vec<String> = self.vars.variables().into_keys().filter(|n| !base.contains_key(n)).collect();
        names.sort();
        names
    }

    /// Predicts noise for video latents `[B, C, F, h, w]` at one timestep per clip (`[B]` or one value),
    /// under `cond` (text `[B, L, D]`, masks, subject tokens). Returns `[B, C, F, h, w]`.
    pub fn forward(&self, latents: &Tensor, timesteps: &Tensor, cond: &Conditioning, training: bool) -> Result<Tensor> {
        let call = self.unet_call(latents, timesteps, cond, training)?;
        let out = self.unet.forward(&call.flat, &call.t, &call.text, &call.ctx)?;
        Ok(call.unflatten(&out))
    }

    /// The training forward with gradient checkpointing: the UNet's blocks are recorded on `tape`, and
    /// only their inputs and outputs kept. Returns the prediction `[B, C, F, h, w]` (a leaf that needs a
    /// gradient when anything trainable made it) and the tape slot it came from; after the loss's
    /// backward, `tape.backward(slot, &leaf.grad(), params)` finishes it (see [`Checkpointed`]).
    pub fn forward_checkpointed<'a>(
        &'a self,
        latents: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
        tape: &mut Tape<'a>,
    ) -> Result<Checkpointed> {
        let call = self.unet_call(latents, timesteps, cond, true)?;
        let slot = self.unet.forward_with(tape, &call.flat, &call.t, &call.text, &call.ctx)?;
        let leaf = tape.value(slot).detach().set_requires_grad(tape.requires_grad(slot));
        Ok(Checkpointed { prediction: call.unflatten(&leaf), leaf, slot })
    }

    /// Checks a call and lays it out for the UNet: frames as a batch, timesteps and text per frame,
    /// the attention context. [`VideoModel::forward`] runs exactly this; tests run single layers under
    /// the same context.
    pub fn unet_call(
        &self,
        latents: &Tensor,
        timesteps: &Tensor,
        cond: &Conditioning,
        training: bool,
    ) -> Result<UNetCall> {
        let s = latents.size();
        if s.len() != 5 {
            return Err(Error::Invalid(format!("video latents are [B, C, F, h, w], got {s:?}")));
        }
        let (b, c, f, h, w) = (s[0], s[1], s[2], s[3], s[4]);
        if cond.batch() != b {
            return Err(Error::Invalid(format!("{} text embeddings for a batch of {b} clips", cond.batch())));
        }
        if let (Some(module), None) = (self.spec.needs_masks(), &cond.masks) {
            return Err(Error::Invalid(format!(
                "this model uses {} ({} module), which needs the subject's masks: pass #{{masks: …}} (from segment, \
                 load_masks or mask_sequence)",
                module.name,
                module.role.name()
            )));
        }
        let flat = latents.permute([0, 2, 1, 3, 4]).reshape([b * f, c, h, w]);
        let t =
            if timesteps.numel() == 1 { timesteps.reshape([1]).expand([b], false) } else { timesteps.shallow_clone() };
        let t = t.repeat_interleave_self_int(f, 0, None);
        let ctx_frames = cond.text.repeat_interleave_self_int(f, 0, None);
        let timestep = Some(cond.timestep.unwrap_or_else(|| t.double_value(&[0])));
        let levels = self.unet.config.block_out_channels.len();
        let video = cond.video_call(b, f, h, w, levels, latents.device())?;
        let mut data = CallData::default();
        for module in self.spec.modules() {
            if let Some(prepare) = module.entry().prepare {
                prepare(module, &video, &mut data)?;
            }
        }
        for stage in &self.model_stages {
            stage.prepare(&video, &mut data)?;
        }
        data.insert(video);
        cond.control_data(&flat, &t, &ctx_frames, f, &mut data)?;
        let ctx = AttnContext {
            frames: f,
            training,
            timestep,
            repeated_text: Some(Rc::new(RepeatedRows { tensor: ctx_frames.shallow_clone(), repeats: f })),
            data,
            ..Default::default()
        };
        Ok(UNetCall { flat, t, text: ctx_frames, ctx, shape: [b, f, c, h, w] })
    }

    /// The processor name of every attention layer.
    pub fn modules(&self) -> Vec<(String, String)> {
        self.unet.attention_layers().into_iter().map(|(n, a)| (n, a.processor_name())).collect()
    }

    pub fn kind(&self) -> Kind {
        self.unet.kind()
    }

    pub fn summary(&self) -> String {
        let tuned = match &self.record {
            Some(r) => format!(", tuned {} steps on {:?}", r.steps_done, r.prompt),
            None => String::new(),
        };
        format!("VideoModel({}; {}{tuned})", self.base.source, self.spec.describe())
    }
}

/// One UNet call of a video model, laid out.
pub struct UNetCall {
    /// The latents, frames as a batch: `[B·F, C, h, w]`.
    pub flat: Tensor,
    /// One timestep per frame.
    pub t: Tensor,
    /// The text per frame `[B·F, L, D]` (each clip's text repeated `F` times: the tensor
    /// `ctx.repeated_text` names).
    pub text: Tensor,
    /// The attention context, with the call's [`call::VideoCall`] and the modules' per-call data (mask
    /// features, …) prepared by their hooks.
    pub ctx: AttnContext,
    shape: [i64; 5],
}

impl UNetCall {
    /// `[B·F, C, h, w]` back to `[B, C, F, h, w]`.
    fn unflatten(&self, out: &Tensor) -> Tensor {
        let [b, f, c, h, w] = self.shape;
        out.reshape([b, f, c, h, w]).permute([0, 2, 1, 3, 4])
    }
}

/// What [`VideoModel::forward_checkpointed`] returns.
pub struct Checkpointed {
    /// The prediction `[B, C, F, h, w]`, for the loss.
    pub prediction: Tensor,
    /// The UNet output leaf the prediction is a view of: its `.grad()` after the loss's backward is
    /// what the tape carries back.
    pub leaf: Tensor,
    pub slot: Slot,
}

impl Checkpointed {
    /// Back-propagates `loss` through the prediction and then through the tape's blocks, leaving the
    /// gradients of `params` in their `.grad`.
    pub fn backward(&self, tape: Tape<'_>, loss: &Tensor, params: &[Tensor]) -> Result<()> {
        loss.f_backward()?;
        let grad = self.leaf.grad();
        if !grad.defined() {
            return Ok(());
        }
        tape.backward(self.slot, &grad, params)
    }

    /// [`Checkpointed::backward`] returning the gradients of `params` (an undefined tensor for one the
    /// loss does not reach) and leaving every `.grad` alone.
    pub fn gradients(&self, tape: Tape<'_>, loss: &Tensor, params: &[Tensor]) -> Result<Vec<Tensor>> {
        if !self.leaf.requires_grad() {
            return Ok(params.iter().map(|_| Tensor::new()).collect());
        }
        // The prediction's gradient, and any the loss sends to a parameter by another path.
        let mut wrt: Vec<&Tensor> = vec![&self.leaf];
        wrt.extend(params.iter().filter(|p| p.requires_grad()));
        let mut direct = Tensor::f_run_backward(&[loss], &wrt, false, false)?.into_iter();
        let grad = direct.next().unwrap_or_else(Tensor::new);
        let through = match grad.defined() {
            true => tape.gradients(self.slot, &grad, params)?,
            false => params.iter().map(|_| None).collect(),
        };
        Ok(params
            .iter()
            .zip(through)
            .map(|(p, t)| {
                let d = if p.requires_grad() { direct.next().filter(|d| d.defined()) } else { None };
                match (t, d) {
                    (Some(t), Some(d)) => t + d,
                    (Some(g), None) | (None, Some(g)) => g,
                    (None, None) => Tensor::new(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        let n = "up_blocks.1.attentions.0.transformer_blocks.0.attn1";
        assert!(glob_match("up_blocks", n));
        assert!(glob_match("up_blocks.*", n));
        assert!(glob_match("*.attn1", n));
        assert!(glob_match("up_blocks.*.attn1", n));
        assert!(!glob_match("down_blocks.*", n));
        assert!(!glob_match("*.attn2", n));
        assert!(glob_match("*attentions.0*", n));
    }
}
