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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { self_attn: true, cross: true, resolutions: None }
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
/// in call order.
#[derive(Debug)]
pub struct AttentionStore {
    pub options: StoreOptions,
    /// The latents' spatial size.
    pub latent: (i64, i64),
    pub steps: Vec<Vec<StoredMap>>,
}

impl AttentionStore {
    /// Bytes held.
    pub fn bytes(&self) -> i64 {
        self.steps.iter().flatten().map(|m| m.probs.numel() as i64 * 2).sum()
    }

    /// Layers per step.
    pub fn layers(&self) -> usize {
        self.steps.first().map_or(0, Vec::len)
    }
}

/// Puts a store's maps in `tensors` (`store.<step>.<layer>`) and returns the metadata that reads them back
/// ([`store_from`]).
pub fn store_to(store: &AttentionStore, tensors: &mut Vec<(String, Tensor)>) -> String {
    let layers: Vec<serde_json::Value> = store
        .steps
        .first()
        .map(|s| s.iter().map(|m| serde_json::json!([m.site == Site::Cross, m.side.0, m.side.1])).collect())
        .unwrap_or_default();
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
    Some(AttentionStore { options, latent, steps })
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
}

impl Recorder {
    pub fn new(options: StoreOptions, sides: Vec<i64>) -> Self {
        Recorder { sides, options, steps: RefCell::new(vec![]), rows: Cell::new((0, 0)) }
    }

    /// The store recorded.
    pub fn finish(&self, latent: (i64, i64)) -> AttentionStore {
        AttentionStore { options: self.options.clone(), latent, steps: self.steps.take() }
    }
}

impl MapsLoop for Recorder {
    fn call(self: Rc<Self>, step: crate::control::CallStep, batch: i64, frames: i64) -> Result<Rc<dyn MapControl>> {
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
        }
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

/// The fusion of one sampling loop ([`MapsLoop`] of its conditioning).
#[derive(Debug)]
pub struct Fusion {
    store: Rc<AttentionStore>,
    options: FusionOptions,
    map: TokenMap,
    blend_tokens: Vec<i64>,
    masks: Option<Tensor>,
    /// Word weights of the target prompt (`"a (red:1.5) car"`), applied inside the cross-attention window.
    weights: Option<Vec<f32>>,
    /// The latent sides whose layers the store kept.
    sides: Vec<i64>,
    /// This call: the schedule step, the conditional rows, the layer counter, blend masks by size.
    step: Cell<usize>,
    steps: Cell<usize>,
    rows: Cell<(i64, i64)>,
    layer: Cell<usize>,
    blends: RefCell<HashMap<(i64, i64), Tensor>>,
}

impl Fusion {
    /// Fusion of an edit to `target` (without weight markup) from an inversion of `source` that stored
    /// `store`; `masks` for `blend_masks`; `weights` per token of the target.
    pub fn new(
        tokenizer: &ClipTokenizer,
        store: Rc<AttentionStore>,
        (source, target): (&str, &str),
        options: &FusionOptions,
        masks: Option<&Masks>,
        weights: Option<Vec<f32>>,
    ) -> Result<Self> {
        options.validate()?;
        if options.cross_replace > 0.0 && !store.options.cross {
            return Err(Error::Invalid(
                "sample fusion: cross_replace needs the inversion's cross-attention (invert with store: #{cross: true})"
                    .into(),
            ));
        }
        if options.self_replace.1 > options.self_replace.0 && !store.options.self_attn {
            return Err(Error::Invalid(
                "sample fusion: self_replace needs the inversion's self-attention (invert with store: #{self: true}), \
                 or self_replace: 0"
                    .into(),
            ));
        }
        if !options.blend_words.is_empty() && !store.options.cross {
            return Err(Error::Invalid(
                "sample fusion: blend_words read the inversion's cross-attention (invert with store: #{cross: true})"
                    .into(),
            ));
        }
        let masks = match (options.blend_masks, masks) {
            (true, None) => {
                return Err(Error::Invalid(
                    "sample fusion: blend_masks blends inside the masks: pass #{masks: …}".into(),
                ))
            }
            (true, Some(m)) => Some(m.tensor().to_kind(Kind::Float)),
            _ => None,
        };
        Ok(Fusion {
            map: token_map(tokenizer, source, target)?,
            blend_tokens: word_tokens(tokenizer, source, &options.blend_words)?,
            sides: level_sides_of(&store),
            store,
            options: options.clone(),
            masks,
            weights,
            step: Cell::new(0),
            steps: Cell::new(0),
            rows: Cell::new((0, 0)),
            layer: Cell::new(0),
            blends: RefCell::new(HashMap::new()),
        })
    }

    /// The stored step at the timestep of schedule step `i`.
    fn stored(&self) -> Result<&Vec<StoredMap>> {
        let (i, n) = (self.step.get(), self.steps.get());
        let kept = self.store.steps.len();
        if n != kept {
            return Err(Error::Invalid(format!(
                "sample fusion: the inversion stored {kept} steps; sample with steps: {kept} (got {n})"
            )));
        }
        Ok(&self.store.steps[n - 1 - i.min(n - 1)])
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

    /// The blend mask `[F, h·w]` of a self-attention layer of `out` tokens at this step.
    fn blend(&self, out: (i64, i64)) -> Result<Option<Tensor>> {
        if let Some(m) = self.blends.borrow().get(&out) {
            return Ok(Some(m.shallow_clone()));
        }
        let mask = if let Some(m) = &self.masks {
            let r = vidtune_kernels::masks::resize(m, out.0, out.1)?.gt(0.5).to_kind(Kind::Float);
            r.view([m.size()[0], out.0 * out.1])
        } else if !self.blend_tokens.is_empty() {
            let stored = self.stored()?;
            let target = (self.store.latent.0 as f64 / 4.0, self.store.latent.1 as f64 / 4.0);
            let mut sides: Vec<(i64, i64)> = stored.iter().filter(|m| m.site == Site::Cross).map(|m| m.side).collect();
            sides.dedup();
            let side = sides
                .iter()
                .copied()
                .min_by(|a, b| {
                    let d = |s: &(i64, i64)| ((s.0 as f64 - target.0).abs(), -(s.0 as f64));
                    d(a).partial_cmp(&d(b)).unwrap_or(std::cmp::Ordering::Equal)
                })
                .ok_or_else(|| {
                    Error::Invalid("sample fusion: the inversion stored no cross-attention to blend by".into())
                })?;
            let maps: Vec<Tensor> = stored
                .iter()
                .filter(|m| m.site == Site::Cross && m.side == side)
                .map(|m| m.probs.to_kind(Kind::Float))
                .collect();
            kf::blend_mask(&maps, side, &self.blend_tokens, out, self.options.blend_threshold)?
        } else {
            return Ok(None);
        };
        self.blends.borrow_mut().insert(out, mask.shallow_clone());
        Ok(Some(mask))
    }
}

impl MapsLoop for Fusion {
    fn call(self: Rc<Self>, step: crate::control::CallStep, batch: i64, frames: i64) -> Result<Rc<dyn MapControl>> {
        self.step.set(step.step);
        self.steps.set(step.steps);
        self.rows.set(cond_rows(step.guided, batch, frames));
        self.layer.set(0);
        self.blends.borrow_mut().clear();
        self.stored()?;
        Ok(self)
    }
}

impl MapControl for Fusion {
    fn wants(&self, site: Site, spatial: (i64, i64)) -> bool {
        let kept = match site {
            Site::SelfAttn => self.store.options.self_attn,
            Site::Cross => self.store.options.cross,
            Site::Other => false,
        };
        kept && self.sides.contains(&spatial.0)
    }

    fn edit(&self, site: Site, spatial: (i64, i64), probs: Tensor) -> Result<Tensor> {
        let k = self.layer.get();
        self.layer.set(k + 1);
        let on = match site {
            Site::Cross => self.cross_on(),
            Site::SelfAttn => self.self_on(),
            Site::Other => false,
        };
        if !on {
            return Ok(probs);
        }
        let stored = self.stored()?;
        let source = stored.get(k).filter(|m| m.site == site && m.side == spatial).ok_or_else(|| {
            Error::Invalid(format!(
                "sample fusion: layer {k} of the edit ({site:?} at {}x{}) is not the inversion's; invert and sample with \
                 the same model",
                spatial.0, spatial.1
            ))
        })?;
        on_rows(probs, self.rows.get(), |edit| {
            let src = source.probs.to_device(edit.device()).to_kind(edit.kind());
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
    let mut sides: Vec<i64> = store.steps.first().map(|s| s.iter().map(|m| m.side.0).collect()).unwrap_or_default();
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
        let none = StoreOptions { self_attn: false, cross: false, resolutions: None };
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
