//! The transformer block of the UNet (diffusers `attention.py`: `BasicTransformerBlock`, `FeedForward`,
//! `GEGLU`): self-attention, cross-attention to the text, feed-forward — each pre-normed and residual —
//! and, in an inflated video UNet, a temporal stage after them (Tune-A-Video's block order).

use super::attention_processor::{Attention, AttnContext};
use super::nn::{Builder, LayerNorm, Linear};
use super::temporal::TemporalStage;
use crate::error::Result;
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

/// `BasicTransformerBlock` with `norm_type="layer_norm"` and GEGLU.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
    /// Temporal attention over frames (inflated video UNets only).
    pub temporal: Option<TemporalStage>,
}

impl BasicTransformerBlock {
    pub fn new(
        b: &Builder,
        dim: i64,
        heads: i64,
        dim_head: i64,
        cross_dim: i64,
        eps: f64,
        temporal: Option<&super::temporal::TemporalKind>,
    ) -> Self {
        BasicTransformerBlock {
            norm1: LayerNorm::new(&b.sub("norm1"), dim, eps),
            attn1: Attention::new(&b.sub("attn1"), dim, None, heads, dim_head, false),
            norm2: LayerNorm::new(&b.sub("norm2"), dim, eps),
            attn2: Attention::new(&b.sub("attn2"), dim, Some(cross_dim), heads, dim_head, false),
            norm3: LayerNorm::new(&b.sub("norm3"), dim, eps),
            ff: FeedForward::new(&b.sub("ff"), dim, 4),
            temporal: temporal.map(|kind| {
                TemporalStage::new(&b.with_mode(super::nn::InitMode::Random), dim, heads, dim_head, eps, kind)
            }),
        }
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let mut h = self.attn1.forward(&self.norm1.forward(x), None, ctx)? + x;
        h = self.attn2.forward(&self.norm2.forward(&h), Some(context), ctx)? + &h;
        h = self.ff.forward(&self.norm3.forward(&h)) + &h;
        if let Some(t) = &self.temporal {
            h = t.forward(&h, ctx)?;
        }
        Ok(h)
    }
}
