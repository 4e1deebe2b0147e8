//! The transformer block of the UNet (diffusers `attention.py`: `BasicTransformerBlock`, `FeedForward`,
//! `GEGLU`): self-attention, cross-attention to the text, feed-forward — each pre-normed and residual —
//! and, in an inflated video UNet, the stages its video modules add: mask-guided attention after the
//! cross-attention, temporal attention after the feed-forward (Tune-A-Video's block order).

use super::attention_processor::{Attention, AttnContext, Site};
use super::nn::{Builder, LayerNorm, Linear};
use crate::error::Result;
use std::rc::Rc;
use tch::Tensor;

/// `GEGLU` feed-forward: `proj` to twice the inner width, `hidden · gelu(gate)`, back to `dim`.
#[derive(Debug)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn new(b: &Builder, dim: i64, mult: i64) -> Self {
        let inner = dim * mult;
        FeedForward {
            proj: Linear::new(&b.sub("net").sub(0).sub("proj"), dim, inner * 2, true),
            out: Linear::new(&b.sub("net").sub(2), inner, dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.proj.forward(x);
        let parts = h.chunk(2, -1);
        self.out.forward(&(&parts[0] * parts[1].gelu("none")))
    }
}

/// The shape of one transformer block, for the stages video modules add to it.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape {
    pub dim: i64,
    pub heads: i64,
    pub dim_head: i64,
    pub cross_dim: i64,
    pub eps: f64,
}

/// Where a stage runs inside the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// After the text cross-attention, before the feed-forward (mask-guided cross-attention).
    AfterCrossAttention,
    /// After the feed-forward (Tune-A-Video's temporal attention).
    AfterFeedForward,
}

/// A stage a video module adds to every transformer block (temporal attention, mask-guided attention):
/// it owns its layers, created under the block's path, and maps the block's hidden states `[B·F, L, C]`
/// to new ones (residual included).
pub trait BlockStage: std::fmt::Debug {
    /// The module name (`"temporal"`, `"mca"`).
    fn name(&self) -> String;
    fn placement(&self) -> Placement;
    fn forward(&self, h: &Tensor, ctx: &AttnContext) -> Result<Tensor>;
    /// Its attention layers, by their name inside the block (`"attn_temp"`).
    fn attentions(&self) -> Vec<(&'static str, &Attention)>;
}

/// Builds the stages of one transformer block from its builder (the block's path) and shape.
#[derive(Clone)]
pub struct Stages(pub Rc<dyn Fn(&Builder, &BlockShape) -> Result<Vec<Box<dyn BlockStage>>>>);

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stages")
    }
}

/// `BasicTransformerBlock` with `norm_type="layer_norm"` and GEGLU, plus the stages of the video
/// modules of an inflated UNet.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
    /// Stages of video modules (temporal attention, mask-guided attention), in the order they run.
    pub stages: Vec<Box<dyn BlockStage>>,
}

impl BasicTransformerBlock {
    pub fn new(b: &Builder, shape: &BlockShape, stages: Option<&Stages>) -> Result<Self> {
        let BlockShape { dim, heads, dim_head, cross_dim, eps } = *shape;
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::new(&b.sub("norm1"), dim, eps),
            attn1: Attention::new(&b.sub("attn1"), dim, None, heads, dim_head, false).at(Site::SelfAttn),
            norm2: LayerNorm::new(&b.sub("norm2"), dim, eps),
            attn2: Attention::new(&b.sub("attn2"), dim, Some(cross_dim), heads, dim_head, false).at(Site::Cross),
            norm3: LayerNorm::new(&b.sub("norm3"), dim, eps),
            ff: FeedForward::new(&b.sub("ff"), dim, 4),
            stages: match stages {
                Some(s) => (s.0)(b, shape)?,
                None => vec![],
            },
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let mut h = self.attn1.forward(&self.norm1.forward(x), None, ctx)? + x;
        h = self.attn2.forward(&self.norm2.forward(&h), Some(context), ctx)? + &h;
        for stage in self.stages.iter().filter(|s| s.placement() == Placement::AfterCrossAttention) {
            h = stage.forward(&h, ctx)?;
        }
        h = self.ff.forward(&self.norm3.forward(&h)) + &h;
        for stage in self.stages.iter().filter(|s| s.placement() == Placement::AfterFeedForward) {
            h = stage.forward(&h, ctx)?;
        }
        Ok(h)
    }
}
