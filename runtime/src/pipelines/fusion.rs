//! Attention stores and attention fusion (FateZero, Qi et al., ICCV 2023): edits with no tuning that keep
//! the clip's structure.
//!
//! **Store** (`invert(…, #{store})`, FateZero §3.2): during the DDIM inversion with the source prompt,
//! every UNet call keeps the probabilities of the chosen self-attention (`attn1`, whatever keys its
//! module gathers: sparse-causal, first-frame, …) and cross-attention (`attn2`) layers at the chosen
//! resolutions, per head, in half precision on the CPU: `[F, heads, S, T]` per layer per step, in call
//! order. By default every resolution but the largest is kept — FateZero keeps the maps of at most 32²
//! queries at 512², whose 64² level would take most of the memory. The bytes are estimated before the
//! inversion starts and refused above the memory available ([`store_bytes`]).
//!
//! **Fusion** (`sample(…, #{latents, fusion})`, FateZero §3.3): the edit samples the target prompt alone
//! (the source branch is not run again); at step `i` of `N` the UNet call at timestep `t_i` reads the
//! maps the inversion stored at the same timestep (its step `N − 1 − i`). Only the conditional half of a
//! guided batch is touched.
//! - Cross-attention, for steps `i < ⌊cross_replace · (N + 1)⌋` (the reference's window): the edit's maps
//!   are replaced by the source's, mapped to the target's tokens — word for word when both prompts have
//!   as many words (prompt-to-prompt's word swap: a swapped word reads the map of the word it replaces),
//!   else by the global alignment of their tokens (refinement: a new word keeps its own map).
//! - Self-attention, for steps `⌊s₀ · N⌋ ≤ i < ⌊s₁ · N⌋` (`self_replace: s₁`, or `[s₀, s₁]`): the blend
//!   of Eq. 8, `M ⊙ edit + (1 − M) ⊙ source` per query row, with `M` from the stored cross-attention of
//!   the `blend_words` (of the source prompt) at this step — summed over their tokens, averaged over the
//!   layers and heads of the level nearest a quarter of the latent side (FateZero's five 16² layers at
//!   512²), max-pooled 3 × 3, resized to the layer, divided by each frame's maximum, above
//!   `blend_threshold` (Eq. 7) — or from the sample's `masks` (`blend_masks`); without either, the source's
//!   map everywhere.
//!
//! The maps reach the layers through a [`MapControl`] in the call's data: no processor changes, so
//! fusion composes with any model, tuned or not.

use super::reweight::{cond_rows, on_rows};
use crate::config::UNet2DConditionConfig;
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::models::attention_processor::{MapControl, Site};
use crate::models::ClipTokenizer;
use crate::video::conditioning::MapsLoop;
use crate::video::processors::ModuleSpec;
use crate::video::VideoModel;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};
use vidtune_kernels::fusion as kf;

/// What `invert` keeps of the attention maps.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Keep the `attn1` maps (the self-attention fusion blends them).
    pub self_attn: bool,
    /// Keep the `attn2` maps (the cross-attention fusion and the blend mask read them).
    pub cross: bool,
    /// The latent sides (tokens per side) whose layers are kept; `None`: every level but the largest.
    pub resolutions: Option<Vec<i64>>,
    /// Keep the maps on disk, a file per step (read back one step at a time), instead of in memory.
    pub disk: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { self_attn: true, cross: true, resolutions: None, disk: false }
    }
}

impl StoreOptions {
    /// The sides kept for a UNet whose levels have `sides` (largest first); an error naming the levels for a
    /// side that is not one of them.
    pub fn sides(&self, sides: &[i64]) -> Result<Vec<i64>> {
        if !self.self_attn && !self.cross {
            return Err(Error::Invalid("invert store: keeps nothing; set self or cross to true".into()));
        }
        match &self.resolutions {
            None if sides.len() > 1 => Ok(sides[1..].to_vec()),
            None => Ok(sides.to_vec()),
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::Invalid("invert store: resolutions is empty".into()));
                }
                for r in list {
                    if !sides.contains(r) {
                        let levels: Vec<String> = sides.iter().map(|s| s.to_string()).collect();
                        return Err(Error::Invalid(format!(
                            "invert store: resolution {r} is not a level of this UNet on this clip; its attention \
                             runs at {} tokens per side",
                            levels.join(", ")
                        )));
                    }
                }
                Ok(list.clone())
            }
        }
    }
}

/// One layer's maps at one step.
#[derive(Debug)]
pub struct StoredMap {
    pub site: Site,
    /// Spatial size of the queries.
    pub side: (i64, i64),
    /// `[F, heads, S, T]`, half precision, on the CPU.
    pub probs: Tensor,
}

/// The maps an inversion kept: `steps[j]` holds the layers of its `j`-th UNet call (timesteps ascending),
/// in call order — in memory, or with `disk` in a file per step.
#[derive(Debug)]
pub struct AttentionStore {
    pub options: StoreOptions,
    /// The latents' spatial size.
    pub latent: (i64, i64),
    /// The maps in memory (empty when they are on disk).
    pub steps: Vec<Vec<StoredMap>>,
    /// The maps on disk.
    pub disk: Option<DiskSteps>,
}

/// A store's steps on disk: `step-<j>.safetensors` in a folder of vidtune's cache, one tensor per layer;
/// the files (and the folder, once empty) are removed when the store is dropped.
#[derive(Debug)]
pub struct DiskSteps {
    pub dir: std::path::PathBuf,
    files: Vec<std::path::PathBuf>,
    /// Each layer's site and spatial size, in call order.
    layout: Vec<(Site, (i64, i64))>,
    bytes: i64,
    /// The folder recorded as a temporary: a killed process's is removed by a later run.
    _record: crate::fsutil::TempDirRecord,
}

impl DiskSteps {
    /// A new folder under `root` (`stores/` of the cache).
    fn new(root: &std::path::Path) -> Result<Self> {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = root.join(format!("{}-{nanos}-{n}", std::process::id()));
        let record = crate::fsutil::record_temp_dir(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(DiskSteps { dir, files: vec![], layout: vec![], bytes: 0, _record: record })
    }

    /// Writes step `j`'s maps.
    fn write(&mut self, j: usize, maps: Vec<StoredMap>) -> Result<()> {
        let layout: Vec<(Site, (i64, i64))> = maps.iter().map(|m| (m.site, m.side)).collect();
        if j == 0 || self.layout.is_empty() {
            self.layout = layout;
        } else if layout != self.layout {
            return Err(Error::Invalid(format!("invert store: step {j} ran other layers than step 0")));
        }
        let path = self.dir.join(format!("step-{j}.safetensors"));
        self.bytes += maps.iter().map(|m| m.probs.numel() as i64 * 2).sum::<i64>();
        let tensors: Vec<(String, Tensor)> =
            maps.into_iter().enumerate().map(|(k, m)| (k.to_string(), m.probs)).collect();
        crate::weights::safetensors_io::write(&path, &tensors, HashMap::new())?;
        self.files.truncate(j);
        self.files.push(path);
        Ok(())
    }

    /// Step `j`'s maps, read back.
    fn read(&self, j: usize) -> Result<Vec<StoredMap>> {
        let path = self.files.get(j).ok_or_else(|| Error::Invalid(format!("attention store: no step {j}")))?;
        let mut t = crate::weights::read_safetensors(path)?;
        self.layout
            .iter()
            .enumerate()
            .map(|(k, &(site, side))| {
                let probs = t.remove(&k.to_string()).ok_or_else(|| {
                    Error::Invalid(format!("attention store {}: layer {k} is missing", path.display()))
                })?;
                Ok(StoredMap { site, side, probs })
            })
            .collect()
    }
}

impl Drop for DiskSteps {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl AttentionStore {
    /// Bytes of the maps, in memory or on disk.
    pub fn bytes(&self) -> i64 {
        match &self.disk {
            Some(d) => d.bytes,
            None => self.steps.iter().flatten().map(|m| m.probs.numel() as i64 * 2).sum(),
        }
    }

    /// Steps kept.
    pub fn len(&self) -> usize {
        self.disk.as_ref().map_or(self.steps.len(), |d| d.files.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each layer's site and spatial size, in call order.
    pub fn layout(&self) -> Vec<(Site, (i64, i64))> {
        match &self.disk {
            Some(d) => d.layout.clone(),
            None => self.steps.first().map(|s| s.iter().map(|m| (m.site, m.side)).collect()).unwrap_or_default(),
        }
    }

    /// Layers per step.
    pub fn layers(&self) -> usize {
        self.layout().len()
    }

    /// Step `j`'s maps (read from disk when they are there).
    pub fn step(&self, j: usize) -> Result<Rc<Vec<StoredMap>>> {
        match &self.disk {
            Some(d) => Ok(Rc::new(d.read(j)?)),
            None => {
                let step = self.steps.get(j).ok_or_else(|| Error::Invalid(format!("attention store: no step {j}")))?;
                Ok(Rc::new(
                    step.iter()
                        .map(|m| StoredMap { site: m.site, side: m.side, probs: m.probs.shallow_clone() })
                        .collect(),
                ))
            }
        }
    }
}

/// Puts a store's maps in `tensors` (`store.<step>.<layer>`) and returns the metadata that reads them back
/// ([`store_from`]).
pub fn store_to(store: &AttentionStore, tensors: &mut Vec<(String, Tensor)>) -> String {
    let layers: Vec<serde_json::Value> =
        store.layout().iter().map(|(site, side)| serde_json::json!([*site == Site::Cross, side.0, side.1])).collect();
    for (j, step) in store.steps.iter().enumerate() {
        for (k, m) in step.iter().enumerate() {
            tensors.push((format!("store.{j}.{k}"), m.probs.shallow_clone()));
        }
    }
    serde_json::json!({
        "self": store.options.self_attn,
        "cross": store.options.cross,
        "resolutions": store.options.resolutions,
        "latent": [store.latent.0, store.latent.1],
        "steps": store.steps.len(),
        "layers": layers,
    })
    .to_string()
}

/// The store [`store_to`] wrote, taken out of `tensors`; `None` when anything is missing.
pub fn store_from(meta: &str, tensors: &mut HashMap<String, Tensor>) -> Option<AttentionStore> {
    let v: serde_json::Value = serde_json::from_str(meta).ok()?;
    let options = StoreOptions {
        self_attn: v["self"].as_bool()?,
        cross: v["cross"].as_bool()?,
        resolutions: v["resolutions"].as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).collect()),
        disk: false,
    };
    let latent = (v["latent"][0].as_i64()?, v["latent"][1].as_i64()?);
    let layers: Vec<(Site, (i64, i64))> = v["layers"]
        .as_array()?
        .iter()
        .map(|l| {
            let site = if l[0].as_bool()? { Site::Cross } else { Site::SelfAttn };
            Some((site, (l[1].as_i64()?, l[2].as_i64()?)))
        })
        .collect::<Option<_>>()?;
    let steps = (0..v["steps"].as_u64()? as usize)
        .map(|j| {
            layers
                .iter()
                .enumerate()
                .map(|(k, &(site, side))| {
                    Some(StoredMap { site, side, probs: tensors.remove(&format!("store.{j}.{k}"))? })
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect::<Option<Vec<_>>>()?;
    Some(AttentionStore { options, latent, steps, disk: None })
}

/// The spatial sides of a UNet's levels for latents of `h × w`, largest first.
pub fn level_sides(model: &VideoModel, h: i64, w: i64) -> Vec<(i64, i64)> {
    sides_of(model.base.unet.model.config.block_out_channels.len(), h, w)
}

fn sides_of(levels: usize, h: i64, w: i64) -> Vec<(i64, i64)> {
    let mut out = vec![];
    let (mut hh, mut ww) = (h, w);
    for _ in 0..levels {
        out.push((hh, ww));
        (hh, ww) = ((hh + 1) / 2, (ww + 1) / 2);
    }
    out
}

/// Keys per query of the self-attention module `spatial` at `side` in a clip of `frames` frames.
fn self_keys(spatial: &ModuleSpec, side: (i64, i64), frames: i64) -> i64 {
    let s = side.0 * side.1;
    match spatial.name.as_str() {
        "sparse_causal" => 2 * s,
        "full" => frames * s,
        "ffam" => {
            let r = spatial.get("ratio").max(1.0) as i64;
            s + (frames - 1) * ((side.0 + r - 1) / r) * ((side.1 + r - 1) / r)
        }
        // A chunk of `c` frames attends over its `M` merged tokens: `M²` values for `c · S` tokens.
        "vidtome" => {
            let c = (spatial.get("chunk").max(1.0) as i64).min(frames.max(1));
            let m = c * s - (((c - 1) * s) as f64 * spatial.get("ratio")).floor() as i64;
            m * m / (c * s)
        }
        _ => s,
    }
}

/// The bytes the attention store of `model` takes for `frames` frames at latents `h × w` over `steps`
/// steps ([`store_bytes_for`]).
pub fn store_bytes(model: &VideoModel, frames: i64, h: i64, w: i64, steps: i64, opts: &StoreOptions) -> Result<f64> {
    let text = model.base.tokenizer.max_length as i64;
    store_bytes_for(&model.base.unet.model.config, &model.spec.spatial, text, frames, (h, w), steps, opts)
}

/// The bytes of an attention store: per step and per kept layer `F · heads · S · T` half-precision values
/// (`T`: the keys `spatial` gathers per query, or the `text` tokens).
pub fn store_bytes_for(
    cfg: &UNet2DConditionConfig,
    spatial: &ModuleSpec,
    text: i64,
    frames: i64,
    (h, w): (i64, i64),
    steps: i64,
    opts: &StoreOptions,
) -> Result<f64> {
    let levels = sides_of(cfg.block_out_channels.len(), h, w);
    let kept = opts.sides(&levels.iter().map(|s| s.0).collect::<Vec<_>>())?;
    let n = levels.len();
    let mut per_step = 0f64;
    let mut add = |level: usize, layers: i64| {
        let side = levels[level];
        if !kept.contains(&side.0) || layers == 0 {
            return;
        }
        let (s, heads) = (side.0 * side.1, cfg.heads(level));
        let mut keys = 0;
        if opts.self_attn {
            keys += self_keys(spatial, side, frames);
        }
        if opts.cross {
            keys += text;
        }
        per_step += (layers * frames * heads * s * keys) as f64 * 2.0;
    };
    let cross = |name: &str| name.starts_with("CrossAttn");
    for (i, t) in cfg.down_block_types.iter().enumerate() {
        add(i, if cross(t) { cfg.layers(i) } else { 0 });
    }
    if cfg.mid_block_type.as_deref().is_none_or(|m| m.contains("CrossAttn")) {
        add(n - 1, 1);
    }
    for (u, t) in cfg.up_block_types.iter().enumerate() {
        let level = n - 1 - u;
        add(level, if cross(t) { cfg.layers(level) + 1 } else { 0 });
    }
    Ok(per_step * steps as f64)
}

/// Records an inversion's maps ([`MapsLoop`] of its conditioning).
#[derive(Debug)]
pub struct Recorder {
    sides: Vec<i64>,
    options: StoreOptions,
    steps: RefCell<Vec<Vec<StoredMap>>>,
    rows: Cell<(i64, i64)>,
    /// With `disk`: where finished steps go (their entries in `steps` are left empty).
    disk: RefCell<Option<DiskSteps>>,
}

/// Where stores on disk go: `stores/` in vidtune's cache.
pub fn stores_dir() -> std::path::PathBuf {
    crate::env::cache_dir().join("stores")
}

impl Recorder {
    pub fn new(options: StoreOptions, sides: Vec<i64>) -> Result<Self> {
        let disk = match options.disk {
            true => Some(DiskSteps::new(&stores_dir())?),
            false => None,
        };
        Ok(Recorder { sides, options, steps: RefCell::new(vec![]), rows: Cell::new((0, 0)), disk: RefCell::new(disk) })
    }

    /// Writes the recorded steps before `upto` that are still in memory to disk (with `disk`).
    fn flush(&self, upto: usize) -> Result<()> {
        let mut disk = self.disk.borrow_mut();
        let Some(d) = disk.as_mut() else { return Ok(()) };
        let mut steps = self.steps.borrow_mut();
        for j in d.files.len()..upto.min(steps.len()) {
            d.write(j, std::mem::take(&mut steps[j]))?;
        }
        Ok(())
    }

    /// The store recorded.
    pub fn finish(&self, latent: (i64, i64)) -> Result<AttentionStore> {
        self.flush(usize::MAX)?;
        let disk = self.disk.take();
        let steps = if disk.is_some() { vec![] } else { self.steps.take() };
        Ok(AttentionStore { options: self.options.clone(), latent, steps, disk })
    }
}

impl MapsLoop for Recorder {
    fn call(self: Rc<Self>, step: crate::control::CallStep, batch: i64, frames: i64) -> Result<Rc<dyn MapControl>> {
        // The steps before this one are done: on disk they leave memory.
        self.flush(step.step)?;
        if let Some(d) = self.disk.borrow_mut().as_mut() {
            if d.files.len() > step.step {
                for f in d.files.drain(step.step..) {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
        let mut steps = self.steps.borrow_mut();
        // One entry per step: a step's first call opens it (a call again at the same step starts it over).
        steps.truncate(step.step);
        while steps.len() <= step.step {
            steps.push(vec![]);
        }
        self.rows.set(cond_rows(step.guided, batch, frames));
        drop(steps);
        Ok(self)
    }
}

impl MapControl for Recorder {
    fn wants(&self, site: Site, spatial: (i64, i64)) -> bool {
        let kept = match site {
            Site::SelfAttn => self.options.self_attn,
            Site::Cross => self.options.cross,
            Site::Other => false,
        };
        kept && self.sides.contains(&spatial.0)
    }

    fn edit(&self, site: Site, spatial: (i64, i64), probs: Tensor) -> Result<Tensor> {
        let (start, len) = self.rows.get();
        let kept = probs.narrow(0, start, len).to_kind(Kind::Half).to_device(Device::Cpu);
        if let Some(step) = self.steps.borrow_mut().last_mut() {
            step.push(StoredMap { site, side: spatial, probs: kept });
        }
        Ok(probs)
    }
}

/// `sample`'s fusion settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FusionOptions {
    /// The share of the steps, from the first, whose cross-attention maps are the source's.
    pub cross_replace: f64,
    /// The window `[s₀, s₁)` of steps (as shares) whose self-attention maps are blended with the source's.
    pub self_replace: (f64, f64),
    /// Words of the source prompt whose stored cross-attention makes the blend mask.
    pub blend_words: Vec<String>,
    /// The blend mask's threshold (of each frame's maximum).
    pub blend_threshold: f64,
    /// The blend mask from the sample's masks instead of words.
    pub blend_masks: bool,
    /// Run the source branch beside the edit (Video-P2P's decoupled guidance) and fuse its maps of the same
    /// call, instead of the inversion's stored maps.
    pub source_branch: bool,
    /// Prompt-to-prompt's local blend of the latents.
    pub local_blend: Option<LocalBlend>,
}

impl Default for FusionOptions {
    /// FateZero's attribute edits: cross 0.8, self 0.6, threshold 0.3.
    fn default() -> Self {
        FusionOptions {
            cross_replace: 0.8,
            self_replace: (0.0, 0.6),
            blend_words: vec![],
            blend_threshold: 0.3,
            blend_masks: false,
            source_branch: false,
            local_blend: None,
        }
    }
}

/// Prompt-to-prompt's local blend (Hertz et al. §3.2, Video-P2P §3.3): after each step from `start` on,
/// the edit's latents are kept only where the source's words (in the source's maps) or the edit's words
/// (in the edit's own maps) attend, and are the source's elsewhere: `x = x_src + M ⊙ (x − x_src)`.
/// `M` is the union of the two words' masks, each made as the blend mask is (Σ over the words' tokens,
/// the mean of the heads and layers of the level nearest a quarter of the latent side, max-pooled 3 × 3,
/// resized, divided by each frame's maximum, above `threshold`), from the maps summed over the steps so
/// far (the reference's running attention store). `x_src` is the source branch's latents, or the
/// inversion's at the same noise level when the source is not run.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalBlend {
    /// Words of the source prompt (empty: the fusion's `blend_words`).
    pub source_words: Vec<String>,
    /// Words of the edit's prompt (empty: the edit's words that the source lacks, and the source words it
    /// keeps).
    pub target_words: Vec<String>,
    pub threshold: f64,
    /// The share of the steps, from the first, before the first blend (Video-P2P's 0.2).
    pub start: f64,
}

impl Default for LocalBlend {
    fn default() -> Self {
        LocalBlend { source_words: vec![], target_words: vec![], threshold: 0.3, start: 0.2 }
    }
}

impl FusionOptions {
    /// Refuses values out of range.
    pub fn validate(&self) -> Result<()> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::Invalid(format!(
                    "sample fusion: {name} must be between 0 and 1 (a share of the steps), got {v}"
                )))
            }
        };
        share("cross_replace", self.cross_replace)?;
        share("self_replace", self.self_replace.0)?;
        share("self_replace", self.self_replace.1)?;
        if self.self_replace.0 > self.self_replace.1 {
            return Err(Error::Invalid(format!(
                "sample fusion: self_replace [{}, {}] starts after it ends",
                self.self_replace.0, self.self_replace.1
            )));
        }
        if !(0.0..=1.0).contains(&self.blend_threshold) {
            return Err(Error::Invalid(format!(
                "sample fusion: blend_threshold must be between 0 and 1 (of each frame's maximum), got {}",
                self.blend_threshold
            )));
        }
        if self.blend_masks && !self.blend_words.is_empty() {
            return Err(Error::Invalid(
                "sample fusion: blend_words and blend_masks both make the mask; give one".into(),
            ));
        }
        if let Some(l) = &self.local_blend {
            if !(0.0..=1.0).contains(&l.threshold) {
                return Err(Error::Invalid(format!(
                    "sample fusion: local_blend threshold must be between 0 and 1 (of each frame's maximum), got {}",
                    l.threshold
                )));
            }
            share("local_blend start", l.start)?;
        }
        Ok(())
    }
}

/// How the source's cross-attention reaches the target's tokens.
#[derive(Debug)]
enum TokenMap {
    /// Word swap: `[T, T]`.
    Swap(Tensor),
    /// Refinement: the source position of each target token and its alpha.
    Refine(Vec<i64>, Vec<f32>),
}

/// The token map from the `source` prompt to the `target` prompt: word for word when they have as many
/// words, else by alignment.
fn token_map(tokenizer: &ClipTokenizer, source: &str, target: &str) -> Result<TokenMap> {
    let len = tokenizer.max_length as i64;
    let (ws, wt): (Vec<&str>, Vec<&str>) = (source.split(' ').collect(), target.split(' ').collect());
    if ws.len() == wt.len() {
        let count = |w: &str| -> Result<i64> { Ok(tokenizer.encode_unpadded(w)?.len() as i64 - 2) };
        let cs: Vec<i64> = ws.iter().map(|w| count(w)).collect::<Result<_>>()?;
        let ct: Vec<i64> = wt.iter().map(|w| count(w)).collect::<Result<_>>()?;
        let differs: Vec<bool> = ws.iter().zip(&wt).map(|(a, b)| a != b).collect();
        return Ok(TokenMap::Swap(kf::replacement_mapper(&cs, &ct, &differs, len)?));
    }
    let (x, y) = (tokenizer.encode_unpadded(source)?, tokenizer.encode_unpadded(target)?);
    let (m, a) = kf::refinement_mapper(&x, &y, len)?;
    Ok(TokenMap::Refine(m, a))
}

/// The token positions of `words` in `prompt` (each a run of the prompt's tokens).
fn word_tokens(tokenizer: &ClipTokenizer, prompt: &str, words: &[String]) -> Result<Vec<i64>> {
    let mut out = vec![];
    for w in words {
        let found = crate::video::conditioning::subject_token_positions(tokenizer, prompt, w).map_err(|_| {
            Error::Invalid(format!(
                "sample fusion: blend word {w:?} is not in the inversion's prompt {prompt:?}; blend words name what \
                 the source prompt shows"
            ))
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// Where the source's maps come from.
#[derive(Debug)]
enum Source {
    /// The inversion's store, read at the same timestep.
    Stored(Rc<AttentionStore>),
    /// The source branch of the same UNet call: the first clip of each half of the batch.
    Branch,
}

/// The cross-attention of the blend level summed over heads, layers and steps (the reference's running
/// attention store), `[F, 1, S, T]`, per branch (0: source, 1: edit): through the previous step, and of
/// this step so far.
#[derive(Debug, Default)]
struct Running {
    step: Option<usize>,
    total: [Option<Tensor>; 2],
    current: [Option<Tensor>; 2],
}

impl Running {
    fn add(&mut self, branch: usize, maps: &Tensor) {
        let m = maps.to_kind(Kind::Float).sum_dim_intlist(1, true, Kind::Float);
        let slot = &mut self.current[branch];
        *slot = Some(match slot.take() {
            Some(s) => {
                let d = s.device();
                s + m.to_device(d)
            }
            None => m,
        });
    }

    /// Starts step `step`: what the previous one added joins the total.
    fn open(&mut self, step: usize) -> bool {
        if self.step == Some(step) {
            return false;
        }
        self.step = Some(step);
        for b in 0..2 {
            if let Some(c) = self.current[b].take() {
                self.total[b] = Some(match self.total[b].take() {
                    Some(t) => t + c,
                    None => c,
                });
            }
        }
        true
    }

    fn through_previous(&self, branch: usize) -> Option<Tensor> {
        self.total[branch].as_ref().map(Tensor::shallow_clone)
    }

    fn so_far(&self, branch: usize) -> Option<Tensor> {
        match (&self.total[branch], &self.current[branch]) {
            (Some(t), Some(c)) => Some(t + c),
            (Some(x), None) | (None, Some(x)) => Some(x.shallow_clone()),
            (None, None) => None,
        }
    }
}

/// The fusion of one sampling loop ([`MapsLoop`] of its conditioning).
#[derive(Debug)]
pub struct Fusion {
    source: Source,
    options: FusionOptions,
    map: TokenMap,
    blend_tokens: Vec<i64>,
    /// Local blend's token positions: in the source prompt, in the edit's.
    local: Option<(Vec<i64>, Vec<i64>)>,
    masks: Option<Tensor>,
    /// Word weights of the target prompt (`"a (red:1.5) car"`), applied inside the cross-attention window.
    weights: Option<Vec<f32>>,
    /// The latent sides whose layers are fused.
    sides: Vec<i64>,
    /// The level whose cross-attention makes the masks of words.
    blend_side: Option<(i64, i64)>,
    /// This call: the schedule step, the rows of the edit's and of the source branch's conditional clip,
    /// the layer counter, blend masks by size.
    step: Cell<usize>,
    steps: Cell<usize>,
    rows: Cell<(i64, i64)>,
    source_rows: Cell<(i64, i64)>,
    layer: Cell<usize>,
    blends: RefCell<HashMap<(i64, i64), Tensor>>,
    running: RefCell<Running>,
    /// The stored step read last (a store on disk is read a step at a time).
    read: RefCell<Option<(usize, Rc<Vec<StoredMap>>)>>,
}

/// The side of `sides` nearest a quarter of the latent side (FateZero's and prompt-to-prompt's 16² at 512²).
fn nearest_quarter(sides: &[(i64, i64)], latent: (i64, i64)) -> Option<(i64, i64)> {
    let target = latent.0 as f64 / 4.0;
    sides.iter().copied().min_by(|a, b| {
        let d = |s: &(i64, i64)| ((s.0 as f64 - target).abs(), -(s.0 as f64));
        d(a).partial_cmp(&d(b)).unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// Local blend's words of the edit by default: its words the source lacks, and `kept` words it keeps.
fn default_target_words(source: &str, target: &str, kept: &[String]) -> Vec<String> {
    let ws: Vec<&str> = source.split(' ').collect();
    let mut out: Vec<String> =
        target.split(' ').filter(|w| !w.is_empty() && !ws.contains(w)).map(String::from).collect();
    out.extend(kept.iter().filter(|k| format!(" {target} ").contains(&format!(" {k} "))).cloned());
    out
}

impl Fusion {
    /// Fusion of an edit to `target` (without weight markup) from an inversion of `source` that stored
    /// `store` (`None` with `source_branch`); `levels`: the UNet's level sides on these latents, largest
    /// first; `masks` for `blend_masks`; `weights` per token of the target.
    pub fn new(
        tokenizer: &ClipTokenizer,
        store: Option<Rc<AttentionStore>>,
        levels: &[(i64, i64)],
        (source, target): (&str, &str),
        options: &FusionOptions,
        masks: Option<&Masks>,
        weights: Option<Vec<f32>>,
    ) -> Result<Self> {
        options.validate()?;
        let (source_maps, sides, cross_sides, latent) = match (options.source_branch, store) {
            (true, _) => {
                let sides: Vec<i64> = StoreOptions::default().sides(&levels.iter().map(|s| s.0).collect::<Vec<_>>())?;
                let kept: Vec<(i64, i64)> = levels.iter().copied().filter(|s| sides.contains(&s.0)).collect();
                (Source::Branch, sides, kept, levels.first().copied().unwrap_or((0, 0)))
            }
            (false, None) => return Err(Error::Invalid(
                "fusion reads the attention maps of the inversion: pass latents from invert(…, #{store: true}), or \
                     run the source branch (source_branch: true)"
                    .into(),
            )),
            (false, Some(store)) => {
                let needs = |what: &str, needed: bool, kept: bool| match needed && !kept {
                    true => Err(Error::Invalid(format!("sample fusion: {what}"))),
                    false => Ok(()),
                };
                needs(
                    "cross_replace needs the inversion's cross-attention (invert with store: #{cross: true})",
                    options.cross_replace > 0.0,
                    store.options.cross,
                )?;
                needs(
                    "self_replace needs the inversion's self-attention (invert with store: #{self: true}), or \
                     self_replace: 0",
                    options.self_replace.1 > options.self_replace.0,
                    store.options.self_attn,
                )?;
                needs(
                    "blend_words read the inversion's cross-attention (invert with store: #{cross: true})",
                    !options.blend_words.is_empty(),
                    store.options.cross,
                )?;
                needs(
                    "local_blend reads the inversion's cross-attention (invert with store: #{cross: true}), or run \
                     the source branch (source_branch: true)",
                    options.local_blend.is_some(),
                    store.options.cross,
                )?;
                let mut cross: Vec<(i64, i64)> =
                    store.layout().into_iter().filter(|(site, _)| *site == Site::Cross).map(|(_, side)| side).collect();
                cross.dedup();
                (Source::Stored(store.clone()), level_sides_of(&store), cross, store.latent)
            }
        };
        let masks = match (options.blend_masks, masks) {
            (true, None) => {
                return Err(Error::Invalid(
                    "sample fusion: blend_masks blends inside the masks: pass #{masks: …}".into(),
                ))
            }
            (true, Some(m)) => Some(m.tensor().to_kind(Kind::Float)),
            _ => None,
        };
        let local = match &options.local_blend {
            None => None,
            Some(l) => {
                let src_words = if l.source_words.is_empty() { &options.blend_words } else { &l.source_words };
                let tgt_words = match l.target_words.is_empty() {
                    true => default_target_words(source, target, src_words),
                    false => l.target_words.clone(),
                };
                let src = word_tokens(tokenizer, source, src_words)?;
                let tgt = word_tokens(tokenizer, target, &tgt_words).map_err(|_| {
                    Error::Invalid(format!(
                        "sample fusion: local_blend target words {tgt_words:?} are not all in the edit's prompt \
                         {target:?}"
                    ))
                })?;
                if src.is_empty() && tgt.is_empty() {
                    return Err(Error::Invalid(
                        "sample fusion: local_blend has no words: give #{source: …, target: …}, or blend_words".into(),
                    ));
                }
                Some((src, tgt))
            }
        };
        let blend_side = nearest_quarter(&cross_sides, latent);
        if local.is_some() && blend_side.is_none() {
            return Err(Error::Invalid("sample fusion: no cross-attention level to blend by".into()));
        }
        Ok(Fusion {
            map: token_map(tokenizer, source, target)?,
            blend_tokens: word_tokens(tokenizer, source, &options.blend_words)?,
            local,
            sides,
            blend_side,
            source: source_maps,
            options: options.clone(),
            masks,
            weights,
            step: Cell::new(0),
            steps: Cell::new(0),
            rows: Cell::new((0, 0)),
            source_rows: Cell::new((0, 0)),
            layer: Cell::new(0),
            blends: RefCell::new(HashMap::new()),
            running: RefCell::new(Running::default()),
            read: RefCell::new(None),
        })
    }

    /// Whether the source runs as a branch of the batch.
    pub fn runs_source(&self) -> bool {
        matches!(self.source, Source::Branch)
    }

    /// The step (of `steps`) from which local blend acts, if it does.
    pub fn local_blend_from(&self, steps: usize) -> Option<usize> {
        self.options.local_blend.as_ref().map(|l| (l.start * steps as f64).floor() as usize)
    }

    /// The stored step at the timestep of schedule step `i`.
    fn stored(&self) -> Result<Option<Rc<Vec<StoredMap>>>> {
        let Source::Stored(store) = &self.source else { return Ok(None) };
        let (i, n) = (self.step.get(), self.steps.get());
        let kept = store.len();
        if n != kept {
            return Err(Error::Invalid(format!(
                "sample fusion: the inversion stored {kept} steps; sample with steps: {kept} (got {n})"
            )));
        }
        let j = n - 1 - i.min(n - 1);
        if let Some((at, maps)) = self.read.borrow().as_ref() {
            if *at == j {
                return Ok(Some(maps.clone()));
            }
        }
        let maps = store.step(j)?;
        *self.read.borrow_mut() = Some((j, maps.clone()));
        Ok(Some(maps))
    }

    fn cross_on(&self) -> bool {
        let (i, n) = (self.step.get(), self.steps.get());
        (i as f64) < (self.options.cross_replace * (n + 1) as f64).floor()
    }

    fn self_on(&self) -> bool {
        let (i, n) = (self.step.get() as f64, self.steps.get() as f64);
        let (s0, s1) = self.options.self_replace;
        (s0 * n).floor() <= i && i < (s1 * n).floor()
    }

    /// The blend mask `[F, h·w]` of a self-attention layer of `out` tokens at this step: from the masks,
    /// or from the source's cross-attention of the blend words (the stored maps of this step; with the
    /// source branch, its maps summed over the steps before this one — none at the first step).
    fn blend(&self, out: (i64, i64)) -> Result<Option<Tensor>> {
        if let Some(m) = self.blends.borrow().get(&out) {
            return Ok(Some(m.shallow_clone()));
        }
        let mask = if let Some(m) = &self.masks {
            let r = vidtune_kernels::masks::resize(m, out.0, out.1)?.gt(0.5).to_kind(Kind::Float);
            r.view([m.size()[0], out.0 * out.1])
        } else if !self.blend_tokens.is_empty() {
            let side = self.blend_side.ok_or_else(|| {
                Error::Invalid("sample fusion: the inversion stored no cross-attention to blend by".into())
            })?;
            let maps: Vec<Tensor> = match self.stored()? {
                Some(stored) => stored
                    .iter()
                    .filter(|m| m.site == Site::Cross && m.side == side)
                    .map(|m| m.probs.to_kind(Kind::Float))
                    .collect(),
                None => self.running.borrow().through_previous(0).into_iter().collect(),
            };
            if maps.is_empty() {
                return Ok(None);
            }
            kf::blend_mask(&maps, side, &self.blend_tokens, out, self.options.blend_threshold)?
        } else {
            return Ok(None);
        };
        self.blends.borrow_mut().insert(out, mask.shallow_clone());
        Ok(Some(mask))
    }

    /// Local blend's mask `[F, h·w]` for latents of `h × w` from the maps summed so far: the union of the
    /// source words' mask and the edit words' mask; `None` before any map was seen.
    pub fn local_mask(&self, (h, w): (i64, i64)) -> Result<Option<Tensor>> {
        let (Some((src, tgt)), Some(side), Some(l)) = (&self.local, self.blend_side, &self.options.local_blend) else {
            return Ok(None);
        };
        let running = self.running.borrow();
        let mut mask: Option<Tensor> = None;
        for (branch, tokens) in [(0, src), (1, tgt)] {
            let Some(maps) = running.so_far(branch).filter(|_| !tokens.is_empty()) else { continue };
            let m = kf::blend_mask(&[maps], side, tokens, (h, w), l.threshold)?;
            mask = Some(match mask {
                Some(a) => a.maximum(&m.to_device(a.device())),
                None => m,
            });
        }
        Ok(mask)
    }
}

impl MapsLoop for Fusion {
    fn call(self: Rc<Self>, step: crate::control::CallStep, batch: i64, frames: i64) -> Result<Rc<dyn MapControl>> {
        self.step.set(step.step);
        self.steps.set(step.steps);
        self.layer.set(0);
        self.blends.borrow_mut().clear();
        match &self.source {
            Source::Stored(_) => self.rows.set(cond_rows(step.guided, batch, frames)),
            Source::Branch => {
                let half = if step.guided { batch / 2 } else { batch };
                if half != 2 || batch % half != 0 {
                    return Err(Error::Invalid(format!(
                        "sample fusion: the source branch runs beside one edit, got a batch of {batch} clips"
                    )));
                }
                let first = (batch - half) * frames;
                self.source_rows.set((first, frames));
                self.rows.set((first + frames, frames));
            }
        }
        let new_step = self.running.borrow_mut().open(step.step);
        if let (Some(stored), true, Some(side)) = (self.stored()?, new_step && self.local.is_some(), self.blend_side) {
            let mut running = self.running.borrow_mut();
            for m in stored.iter().filter(|m| m.site == Site::Cross && m.side == side) {
                running.add(0, &m.probs);
            }
        }
        Ok(self)
    }
}

impl MapControl for Fusion {
    fn wants(&self, site: Site, spatial: (i64, i64)) -> bool {
        let kept = match (&self.source, site) {
            (_, Site::Other) => false,
            (Source::Branch, _) => true,
            (Source::Stored(s), Site::SelfAttn) => s.options.self_attn,
            (Source::Stored(s), Site::Cross) => s.options.cross,
        };
        kept && self.sides.contains(&spatial.0)
    }

    fn edit(&self, site: Site, spatial: (i64, i64), probs: Tensor) -> Result<Tensor> {
        let k = self.layer.get();
        self.layer.set(k + 1);
        let branch = self.runs_source();
        if site == Site::Cross && self.local.is_some() && Some(spatial) == self.blend_side {
            let mut running = self.running.borrow_mut();
            let (start, len) = self.rows.get();
            running.add(1, &probs.narrow(0, start, len));
            if branch {
                let (start, len) = self.source_rows.get();
                running.add(0, &probs.narrow(0, start, len));
            }
        }
        let on = match site {
            Site::Cross => self.cross_on(),
            Site::SelfAttn => self.self_on(),
            Site::Other => false,
        };
        if !on {
            return Ok(probs);
        }
        let source = match self.stored()? {
            Some(stored) => {
                let m = stored.get(k).filter(|m| m.site == site && m.side == spatial).ok_or_else(|| {
                    Error::Invalid(format!(
                        "sample fusion: layer {k} of the edit ({site:?} at {}x{}) is not the inversion's; invert and \
                         sample with the same model",
                        spatial.0, spatial.1
                    ))
                })?;
                m.probs.shallow_clone()
            }
            None => {
                let (start, len) = self.source_rows.get();
                probs.narrow(0, start, len)
            }
        };
        on_rows(probs, self.rows.get(), |edit| {
            let src = source.to_device(edit.device()).to_kind(edit.kind());
            if src.size() != edit.size() {
                return Err(Error::Invalid(format!(
                    "sample fusion: the edit's maps {:?} differ from the inversion's {:?} (the same clip, model and \
                     modules must run in both)",
                    edit.size(),
                    src.size()
                )));
            }
            match site {
                Site::Cross => {
                    let mapped = match &self.map {
                        TokenMap::Swap(m) => kf::replace_cross(&src, m)?,
                        TokenMap::Refine(m, a) => kf::refine_cross(&src, &edit, m, a)?,
                    };
                    match &self.weights {
                        Some(w) => Ok(kf::reweight(&mapped, w)?),
                        None => Ok(mapped),
                    }
                }
                _ => Ok(kf::fuse_self(&edit, &src, self.blend(spatial)?.as_ref())?),
            }
        })
    }
}

/// The sides a store kept.
fn level_sides_of(store: &AttentionStore) -> Vec<i64> {
    let mut sides: Vec<i64> = store.layout().iter().map(|(_, side)| side.0).collect();
    sides.sort_unstable();
    sides.dedup();
    sides
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::processors::Role;

    fn sd14() -> UNet2DConditionConfig {
        serde_json::from_str(include_str!("../../configs/sd-v1-4/unet/config.json")).unwrap()
    }

    #[test]
    fn the_store_of_24_frames_at_512_on_sd14_is_estimated_layer_by_layer() {
        let sparse = ModuleSpec::named(Role::Spatial, "sparse_causal").unwrap();
        let opts = StoreOptions::default();
        let bytes = store_bytes_for(&sd14(), &sparse, 77, 24, (64, 64), 50, &opts).unwrap();
        // Every level but 64²: at 32² five attn1 (down 2, up 3) over 2 · 1024 keys and five attn2 over 77
        // tokens; at 16² the same with 256 queries; at 8² the mid block's one of each. 8 heads, 24 frames.
        let level = |s: i64, layers: i64| (layers * 24 * 8 * s * (2 * s + 77)) as f64 * 2.0;
        let per_step = level(1024, 5) + level(256, 5) + level(64, 1);
        assert_eq!(bytes, per_step * 50.0);
        assert!((bytes / 1e9 - 223.6).abs() < 0.1, "{:.1} GB", bytes / 1e9);
        // The 64² level alone would be larger than all the rest: FateZero leaves it out.
        let all = StoreOptions { resolutions: Some(vec![64, 32, 16, 8]), ..opts.clone() };
        let with_64 = store_bytes_for(&sd14(), &sparse, 77, 24, (64, 64), 50, &all).unwrap();
        assert!(with_64 - bytes > bytes * 5.0);
        let cross_only = StoreOptions { self_attn: false, ..opts };
        let c = store_bytes_for(&sd14(), &sparse, 77, 24, (64, 64), 50, &cross_only).unwrap();
        assert_eq!(c, ((5 * 1024 + 5 * 256 + 64) * 24 * 8 * 77 * 2 * 50i64) as f64);
    }

    #[test]
    fn store_resolutions_must_be_levels_and_fusion_options_in_range() {
        let o = StoreOptions { resolutions: Some(vec![32, 24]), ..Default::default() };
        let e = o.sides(&[64, 32, 16, 8]).unwrap_err().to_string();
        assert!(e.contains("resolution 24 is not a level") && e.contains("64, 32, 16, 8"), "{e}");
        assert_eq!(StoreOptions::default().sides(&[16, 8]).unwrap(), [8]);
        let none = StoreOptions { self_attn: false, cross: false, resolutions: None, disk: false };
        assert!(none.sides(&[16, 8]).unwrap_err().to_string().contains("keeps nothing"));
        let bad = FusionOptions { cross_replace: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("cross_replace must be between 0 and 1"));
        let bad = FusionOptions { self_replace: (0.6, 0.2), ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("starts after it ends"));
        let bad = FusionOptions { blend_masks: true, blend_words: vec!["cat".into()], ..Default::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_store_round_trips_through_its_tensors_and_metadata() {
        let map = |site, side: i64, seed: f64| StoredMap {
            site,
            side: (side, side),
            probs: Tensor::full([2, 1, side * side, 3], seed, (Kind::Half, Device::Cpu)),
        };
        let store = AttentionStore {
            options: StoreOptions { resolutions: Some(vec![4, 2]), ..Default::default() },
            latent: (8, 8),
            steps: vec![
                vec![map(Site::SelfAttn, 4, 0.1), map(Site::Cross, 2, 0.2)],
                vec![map(Site::SelfAttn, 4, 0.3), map(Site::Cross, 2, 0.4)],
            ],
            disk: None,
        };
        let mut tensors = vec![];
        let meta = store_to(&store, &mut tensors);
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        let back = store_from(&meta, &mut by_name).unwrap();
        assert_eq!(
            (back.options.clone(), back.latent, back.steps.len(), back.layers()),
            (store.options.clone(), (8, 8), 2, 2)
        );
        for (a, b) in store.steps.iter().flatten().zip(back.steps.iter().flatten()) {
            assert_eq!((a.site, a.side), (b.site, b.side));
            assert!(a.probs.equal(&b.probs));
        }
        assert_eq!(back.bytes(), store.bytes());
        // A missing tensor: no store (the memo recomputes it).
        let mut none = HashMap::new();
        assert!(store_from(&meta, &mut none).is_none());
    }
}
