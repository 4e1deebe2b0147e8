//! The attention layer and its pluggable processors (diffusers `attention_processor.py`).
//!
//! The [`Attention`] layer owns the weights (`to_q`, `to_k`, `to_v`, `to_out.0`, and for the VAE a
//! `group_norm`); a per-layer [`AttnProcessor`] owns the algorithm. Processors are chosen by layer name
//! (`down_blocks.0.attentions.0.transformer_blocks.0.attn1`), so video modules (sparse-causal, fine-coarse,
//! temporal, mask-guided, …) plug in without touching the UNet. Per-call data travels in [`AttnContext`];
//! the kernel (fused SDPA or explicit math) is a separate switch in the context.

use super::nn::{Builder, GroupNorm, Linear};
use crate::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tch::Tensor;
use vidtune_kernels::attention::{self as katt, Backend};

/// Tensors `[N, C, h, w]` at every resolution a UNet call visits, looked up by their spatial size: the
/// subject's masks (`C = 1`, area-averaged once per call) or the mask encoder's features.
#[derive(Debug, Default)]
pub struct Pyramid {
    pub levels: Vec<Tensor>,
}

impl Pyramid {
    /// The level of spatial size `h × w`.
    pub fn at(&self, h: i64, w: i64) -> Option<&Tensor> {
        self.levels.iter().find(|t| {
            let s = t.size();
            s[2] == h && s[3] == w
        })
    }

    /// The level of the current tokens (`ctx.spatial`), as tokens `[N, h·w, C]`; an error naming `what`
    /// when it is missing.
    pub fn tokens(&self, ctx: &AttnContext, what: &str) -> Result<Tensor> {
        let (h, w) = ctx.spatial.ok_or_else(|| Error::Invalid(format!("{what}: runs inside a spatial transformer")))?;
        let t = self.at(h, w).ok_or_else(|| Error::Invalid(format!("{what}: nothing at {h}x{w}")))?;
        let s = t.size();
        Ok(t.view([s[0], s[1], h * w]).transpose(1, 2))
    }
}

/// What first-frame attention (`sparse_causal`, `first_frame`) reads of a clip's first frame, shared by
/// the windows of a long clip so that every window attends to the clip's first frame without running it
/// again: the call that holds the first frame **records**, attention layer by attention layer in call
/// order, the tensors a processor takes from its first frame (keys, values, mask shares, each `[B, …]`);
/// later calls **replay** them in place of their own first frame, repeated over a batch of several
/// windows. Once per denoising step.
#[derive(Debug, Default)]
pub struct AnchorFrame {
    recorded: RefCell<Vec<Vec<Tensor>>>,
    replaying: Cell<bool>,
    next: Cell<usize>,
}

impl AnchorFrame {
    /// An empty store that records the next call.
    pub fn recording() -> Self {
        AnchorFrame::default()
    }

    /// Ends the recording (or rewinds a replay): the next call reads from the first layer on.
    pub fn replay(&self) {
        self.replaying.set(true);
        self.next.set(0);
    }

    /// Layers recorded.
    pub fn len(&self) -> usize {
        self.recorded.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first-frame tensors of the next layer: when recording, `own` (this call's first frame, kept);
    /// when replaying, the recorded ones, repeated to `own`'s batch.
    pub fn first_frame(&self, own: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if !self.replaying.get() {
            self.recorded.borrow_mut().push(own.iter().map(Tensor::shallow_clone).collect());
            return Ok(own);
        }
        let i = self.next.get();
        self.next.set(i + 1);
        let recorded = self.recorded.borrow();
        let entry = recorded.get(i).filter(|e| e.len() == own.len()).ok_or_else(|| {
            Error::Invalid(format!(
                "anchor frame: layer {i} of this call has no recorded first frame ({} layers recorded); the anchor's \
                 call and the window's must run the same modules",
                recorded.len()
            ))
        })?;
        entry
            .iter()
            .zip(&own)
            .map(|(r, o)| {
                let (rb, ob) = (r.size()[0], o.size()[0]);
                if ob % rb != 0 || r.size()[1..] != o.size()[1..] {
                    return Err(Error::Invalid(format!(
                        "anchor frame: recorded {:?} does not fit a call of {:?}",
                        r.size(),
                        o.size()
                    )));
                }
                let mut reps = vec![1i64; r.dim()];
                reps[0] = ob / rb;
                // A window on another device (a replica) reads a copy.
                let r = r.to_device(o.device());
                Ok(if ob == rb { r } else { r.repeat(reps.as_slice()) })
            })
            .collect()
    }
}

/// Data of one forward call that processors may use.
#[derive(Debug, Clone)]
pub struct AttnContext {
    /// Frames per clip: hidden states are `[B·F, L, C]`; 1 for images.
    pub frames: i64,
    /// The diffusion timestep of this call, when known.
    pub timestep: Option<f64>,
    /// The subject's masks `[B·F, 1, h, w]` at every resolution of the call, for mask-aware modules.
    pub masks: Option<Rc<Pyramid>>,
    /// The mask encoder's features `[B·F, C, h, w]` at every resolution (mask-guided cross-attention).
    pub mask_features: Option<Rc<Pyramid>>,
    /// Per clip of the batch, the positions of the subject's tokens in its text (mask cross-attention).
    pub subject_tokens: Option<Rc<Vec<Vec<i64>>>>,
    /// Index of the first frame of this call in the whole clip (windows of a long clip).
    pub frame_offset: i64,
    /// Spatial size `(H, W)` of the tokens of this call (set by the transformer before its blocks).
    pub spatial: Option<(i64, i64)>,
    /// The first frame that first-frame attention reads, when it is not the call's own (windows of a
    /// long clip anchored on the clip's first frame).
    pub anchor: Option<Rc<AnchorFrame>>,
    /// The attention kernel.
    pub backend: Backend,
    /// A training step (processors with running state, like spectral normalisation, update it).
    pub training: bool,
    /// The text context of a video call, whose rows repeat each clip's text once per frame: cross-
    /// attention projects it once per clip (see [`Attention::key_value`]). The promise is about this one
    /// tensor; any other source of keys and values (a mask-guided stage's video features) is projected
    /// row by row.
    pub repeated_text: Option<Rc<RepeatedRows>>,
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
            masks: None,
            mask_features: None,
            subject_tokens: None,
            frame_offset: 0,
            spatial: None,
            anchor: None,
            backend: Backend::Auto,
            training: false,
            repeated_text: None,
        }
    }
}

impl AttnContext {
    /// The first frame's tensors a first-frame processor reads (`own`: this call's, `[B, …]` each): its
    /// own, or the anchor's (see [`AnchorFrame`]).
    pub fn first_frame(&self, own: Vec<Tensor>) -> Result<Vec<Tensor>> {
        match &self.anchor {
            Some(a) => a.first_frame(own),
            None => Ok(own),
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
        Ok(attn.attend(&attn.to_q.forward(hidden), &k, &v, None, ctx.backend))
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
            processor: RefCell::new(Box::new(PlainAttention)),
        }
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

    /// Multi-head attention of projected `q` `[N, Lq, inner]`, `k`, `v` `[N, Lk, inner]`, then `to_out`.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, backend: Backend) -> Tensor {
        let (q, k, v) =
            (katt::split_heads(q, self.heads), katt::split_heads(k, self.heads), katt::split_heads(v, self.heads));
        let (qs, ks) = (q.size(), k.size());
        let (lq, d, lk) = (qs[qs.len() - 2], qs[qs.len() - 1], ks[ks.len() - 2]);
        crate::flops::add(crate::flops::attention(q.numel() as i64 / (lq * d).max(1), lq, lk, d));
        let out = katt::attention(&q.contiguous(), &k.contiguous(), &v.contiguous(), mask, false, None, backend);
        self.to_out.forward(&katt::merge_heads(&out))
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
