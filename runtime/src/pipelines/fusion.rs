//! Attention fusion (FateZero, Qi et al., ICCV 2023) and prompt-to-prompt's controls (Video-P2P): edits
//! that keep the clip's structure, from the maps an inversion stored ([`super::store`]) or from the source
//! prompt run beside the edit.
//!
//! **Fusion** (`sample(…, #{latents, fusion})`, FateZero §3.3): at step `i` of `N` the UNet call at
//! timestep `t_i` reads the maps the inversion stored at the same timestep (its step `N − 1 − i`) — or,
//! with `source_branch`, the source branch's maps of the same call. Only the edit's conditional rows are
//! touched.
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
//! - Local blend ([`LocalBlend`]) of the latents after each step.
//!
//! The maps reach the layers through a [`MapControl`] in the call's data: no processor changes, so
//! fusion composes with any model, tuned or not.

use super::reweight::{cond_rows, on_rows};
use super::store::{level_sides_of, AttentionStore, StoreOptions, StoredMap};
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::models::attention_processor::{MapControl, Site};
use crate::models::ClipTokenizer;
use crate::video::conditioning::MapsLoop;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels::fusion as kf;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
