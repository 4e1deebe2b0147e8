//! The attention layer and its pluggable processors (diffusers `attention_processor.py`).
//!
//! The [`Attention`] layer owns the weights (`to_q`, `to_k`, `to_v`, `to_out.0`, and for the VAE a
//! `group_norm`); a per-layer [`AttnProcessor`] owns the algorithm. Processors are chosen by layer name
//! (`down_blocks.0.attentions.0.transformer_blocks.0.attn1`), so video modules (sparse-causal, fine-coarse,
//! temporal, mask-guided, …) plug in without touching the UNet. Per-call data travels in [`AttnContext`]:
//! what an image UNet needs, and a [`CallData`] of values the modules' own hooks prepared; the kernel (fused SDPA or explicit math) is a separate switch in the context.

use super::nn::{Builder, GroupNorm, Linear};
use crate::error::Result;
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels::attention::{self as katt, Backend};

/// Per-call data of modules the image model does not know, one value per type: each module's hook puts
/// in what its processors and stages read (video modules: the clip's masks, the anchor frame, mask
/// features, …), and they read it back by type. Cloning shares the values.
#[derive(Clone, Default)]
pub struct CallData(HashMap<TypeId, Rc<dyn Any>>);

impl CallData {
    /// Puts in `value`, replacing the value of the same type.
    pub fn insert<T: Any>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Rc::new(value));
    }

    /// The value of type `T`, if a hook put one in.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref::<T>())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for CallData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallData({} values)", self.0.len())
    }
}

/// Which attention of a transformer block a layer is: only a block's `attn1` and `attn2` show their
/// probabilities to a [`MapControl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Self-attention of a frame (`attn1`, whatever keys its processor gathers).
    SelfAttn,
    /// Attention to the text (`attn2`).
    Cross,
    /// Any other attention (temporal stages, mask-guided stages, the VAE's).
    Other,
}

/// A control over a call's attention probabilities, in the way of prompt-to-prompt's `AttentionControl`:
/// attention stores record them, fusion rewrites them. It sees the probabilities `[N, heads, S, T]` (after
/// the softmax) of every `attn1` and `attn2` it [wants](MapControl::wants), in call order, and returns the
/// ones the layer then uses. The UNet's processors are untouched: a layer whose maps a control wants is
/// computed explicitly (scores, softmax, the control, the product with the values) instead of by the fused
/// kernel. It lives in the call's [`CallData`] as [`Maps`].
pub trait MapControl: std::fmt::Debug {
    /// Whether the maps of `site` at the spatial size `(h, w)` go through [`MapControl::edit`].
    fn wants(&self, site: Site, spatial: (i64, i64)) -> bool;
    /// The probabilities the layer uses in place of `probs`.
    fn edit(&self, site: Site, spatial: (i64, i64), probs: Tensor) -> Result<Tensor>;
}

/// The call data entry of a [`MapControl`].
#[derive(Debug, Clone)]
pub struct Maps(pub Rc<dyn MapControl>);

/// Data of one forward call that processors may use.
#[derive(Debug, Clone)]
pub struct AttnContext {
    /// Frames per clip: hidden states are `[B·F, L, C]`; 1 for images.
    pub frames: i64,
    /// The diffusion timestep of this call, when known.
    pub timestep: Option<f64>,
    /// Spatial size `(H, W)` of the tokens of this call (set by the transformer before its blocks).
    pub spatial: Option<(i64, i64)>,
    /// The attention kernel.
    pub backend: Backend,
    /// A training step (processors with running state, like spectral normalisation, update it).
    pub training: bool,
    /// The text context of a video call, whose rows repeat each clip's text once per frame: cross-
    /// attention projects it once per clip (see [`Attention::key_value`]). The promise is about this one
    /// tensor; any other source of keys and values (a mask-guided stage's video features) is projected
    /// row by row.
    pub repeated_text: Option<Rc<RepeatedRows>>,
    /// What the modules' hooks prepared for this call ([`CallData`]).
    pub data: CallData,
}

/// A tensor `[N·r, L, C]` whose rows come in runs of `repeats` equal rows: a video call's text, each
/// clip's embedding repeated for each of its frames.
#[derive(Debug)]
pub struct RepeatedRows {
    pub tensor: Tensor,
    pub repeats: i64,
}

impl RepeatedRows {
    /// Whether `source` is this tensor (the same storage, shape and strides), not merely one of its shape.
    pub fn is(&self, source: &Tensor) -> bool {
        source.data_ptr() == self.tensor.data_ptr()
            && source.size() == self.tensor.size()
            && source.stride() == self.tensor.stride()
            && source.kind() == self.tensor.kind()
            && source.device() == self.tensor.device()
    }
}

impl Default for AttnContext {
    fn default() -> Self {
        AttnContext {
            frames: 1,
            timestep: None,
            spatial: None,
            backend: Backend::Auto,
            training: false,
            repeated_text: None,
            data: CallData::default(),
        }
    }
}

/// An attention algorithm for one layer. `hidden` is `[N, L, C]`; `context` (`[N, Lk, Ck]`) is the text
/// for cross-attention and `None` for self-attention.
pub trait AttnProcessor: std::fmt::Debug + Send {
    /// The module name shown in summaries and saved in tuned files (`"self"`, `"sparse_causal"`, …).
    fn name(&self) -> String;

    fn forward(&self, attn: &Attention, hidden: &Tensor, context: Option<&Tensor>, ctx: &AttnContext)
        -> Result<Tensor>;

    /// Sets up state the processor keeps for `attn` (called once when the processor is installed).
    fn prepare(&self, _attn: &Attention) {}

    /// Persistent state to save with tuned weights (e.g. spectral-norm singular vectors), by short name.
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![]
    }

    /// Restores state saved by [`AttnProcessor::state`].
    fn load_state(&self, _state: &[(String, Tensor)]) -> Result<()> {
        Ok(())
    }
}

/// Plain scaled dot-product attention (diffusers `AttnProcessor2_0`): each sample attends to itself (or
/// to its context). For video this is per-frame self-attention, "self" in the module library.
#[derive(Debug, Default, Clone)]
pub struct PlainAttention;

impl AttnProcessor for PlainAttention {
    fn name(&self) -> String {
        "self".into()
    }

    fn forward(
        &self,
        attn: &Attention,
        hidden: &Tensor,
        context: Option<&Tensor>,
        ctx: &AttnContext,
    ) -> Result<Tensor> {
        let (k, v) = attn.key_value(hidden, context, ctx);
        attn.attend(&attn.to_q.forward(hidden), &k, &v, None, ctx)
    }
}

/// `Attention`: projections, heads, and the processor that combines them.
#[derive(Debug)]
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    /// The VAE's attention normalises its input (`group_norm`) and adds a residual.
    pub group_norm: Option<GroupNorm>,
    pub heads: i64,
    /// Which attention of its block this is (a block's `attn1` and `attn2` are marked by the block).
    pub site: Site,
    processor: RefCell<Box<dyn AttnProcessor>>,
}

impl Attention {
    /// Keys and values of `context` (cross-attention) or of `hidden` (self-attention). When `context`
    /// is the call's repeated text ([`AttnContext::repeated_text`], each clip's rows once per frame),
    /// each clip's rows are projected once and repeated: the same values for `1/F` of the work. Any other
    /// context (video features, whose rows differ frame by frame) is projected row by row.
    pub fn key_value(&self, hidden: &Tensor, context: Option<&Tensor>, ctx: &AttnContext) -> (Tensor, Tensor) {
        let Some(source) = context else { return (self.to_k.forward(hidden), self.to_v.forward(hidden)) };
        if let Some(text) = ctx.repeated_text.as_deref().filter(|t| t.repeats > 1 && t.is(source)) {
            let r = text.repeats;
            if source.size()[0] % r == 0 {
                let unique = source.slice(0, 0, None, r);
                let k = self.to_k.forward(&unique).repeat_interleave_self_int(r, 0, None);
                let v = self.to_v.forward(&unique).repeat_interleave_self_int(r, 0, None);
                return (k, v);
            }
        }
        (self.to_k.forward(source), self.to_v.forward(source))
    }

    /// `query_dim` wide, attending to `context_dim` (itself when `None`), `heads × dim_head` inner width.
    pub fn new(
        b: &Builder,
        query_dim: i64,
        context_dim: Option<i64>,
        heads: i64,
        dim_head: i64,
        qkv_bias: bool,
    ) -> Self {
        Attention::with_output(b, query_dim, context_dim, heads, dim_head, qkv_bias, query_dim)
    }

    /// An attention whose output projection maps to `out_dim` instead of back to `query_dim` (queries from
    /// one feature space, the result added to another: mask-guided cross-attention).
    pub fn with_output(
        b: &Builder,
        query_dim: i64,
        context_dim: Option<i64>,
        heads: i64,
        dim_head: i64,
        qkv_bias: bool,
        out_dim: i64,
    ) -> Self {
        let inner = heads * dim_head;
        let kv_in = context_dim.unwrap_or(query_dim);
        Attention {
            to_q: Linear::new(&b.sub("to_q"), query_dim, inner, qkv_bias),
            to_k: Linear::new(&b.sub("to_k"), kv_in, inner, qkv_bias),
            to_v: Linear::new(&b.sub("to_v"), kv_in, inner, qkv_bias),
            to_out: Linear::new(&b.sub("to_out").sub(0), inner, out_dim, true),
            group_norm: None,
            heads,
            site: Site::Other,
            processor: RefCell::new(Box::new(PlainAttention)),
        }
    }

    /// The same attention marked as `site` of its block.
    pub fn at(mut self, site: Site) -> Self {
        self.site = site;
        self
    }

    /// The VAE mid-block attention: one head, biases, a GroupNorm on its input, and a residual.
    pub fn new_vae(b: &Builder, channels: i64, groups: i64, eps: f64) -> Self {
        let mut a = Attention::new(b, channels, None, 1, channels, true);
        a.group_norm = Some(GroupNorm::new(&b.sub("group_norm"), groups, channels, eps));
        a
    }

    pub fn dim_head(&self) -> i64 {
        self.to_q.out_dim() / self.heads
    }

    /// Multi-head attention of projected `q` `[N, Lq, inner]`, `k`, `v` `[N, Lk, inner]` (with an additive
    /// score `mask`), then `to_out`. When the call holds a [`MapControl`] that wants this layer's maps, they
    /// are computed explicitly and go through it.
    pub fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        ctx: &AttnContext,
    ) -> Result<Tensor> {
        let (q, k, v) =
            (katt::split_heads(q, self.heads), katt::split_heads(k, self.heads), katt::split_heads(v, self.heads));
        let (qs, ks) = (q.size(), k.size());
        let (lq, d, lk) = (qs[qs.len() - 2], qs[qs.len() - 1], ks[ks.len() - 2]);
        crate::flops::add(crate::flops::attention(q.numel() as i64 / (lq * d).max(1), lq, lk, d));
        let out = match self.control(ctx) {
            Some((control, spatial)) => {
                let mut scores = q.matmul(&k.transpose(-2, -1)).to_kind(Kind::Float) / (d as f64).sqrt();
                if let Some(m) = mask {
                    scores = scores + m.to_kind(Kind::Float);
                }
                let probs = control.edit(self.site, spatial, scores.softmax(-1, Kind::Float))?;
                probs.to_kind(v.kind()).matmul(&v)
            }
            None => crate::flops::timed(crate::flops::Work::Attention, || {
                katt::attention(&q.contiguous(), &k.contiguous(), &v.contiguous(), mask, false, None, ctx.backend)
            }),
        };
        Ok(self.to_out.forward(&katt::merge_heads(&out)))
    }

    /// The call's [`MapControl`] and the layer's spatial size, when the control wants this layer's maps.
    fn control<'a>(&self, ctx: &'a AttnContext) -> Option<(&'a dyn MapControl, (i64, i64))> {
        if self.site == Site::Other {
            return None;
        }
        let (Some(Maps(control)), Some(spatial)) = (ctx.data.get::<Maps>(), ctx.spatial) else { return None };
        control.wants(self.site, spatial).then_some((control.as_ref(), spatial))
    }

    /// `probs` `[N, heads, S, T]` of a processor that computes its own (mask cross-attention), through the
    /// call's [`MapControl`] when it wants this layer's maps.
    pub fn control_probs(&self, probs: Tensor, ctx: &AttnContext) -> Result<Tensor> {
        match self.control(ctx) {
            Some((control, spatial)) => control.edit(self.site, spatial, probs),
            None => Ok(probs),
        }
    }

    /// Runs the layer's processor.
    pub fn forward(&self, hidden: &Tensor, context: Option<&Tensor>, ctx: &AttnContext) -> Result<Tensor> {
        self.processor.borrow().forward(self, hidden, context, ctx)
    }

    /// The VAE form: `[B, C, H, W]` in and out, normalised, attended, residual added.
    pub fn forward_image(&self, x: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let s = x.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let normed = match &self.group_norm {
            Some(gn) => gn.forward(x),
            None => x.shallow_clone(),
        };
        let tokens = normed.view([b, c, h * w]).transpose(1, 2);
        let out = self.forward(&tokens, None, ctx)?;
        Ok(out.transpose(1, 2).reshape([b, c, h, w]) + x)
    }

    /// Replaces the processor (and lets it prepare its state); returns the previous one.
    pub fn set_processor(&self, processor: Box<dyn AttnProcessor>) -> Box<dyn AttnProcessor> {
        processor.prepare(self);
        self.processor.replace(processor)
    }

    /// The current processor's name.
    pub fn processor_name(&self) -> String {
        self.processor.borrow().name()
    }

    /// The current processor's persistent state.
    pub fn processor_state(&self) -> Vec<(String, Tensor)> {
        self.processor.borrow().state()
    }

    /// Restores the current processor's persistent state.
    pub fn load_processor_state(&self, state: &[(String, Tensor)]) -> Result<()> {
        self.processor.borrow().load_state(state)
    }
}
