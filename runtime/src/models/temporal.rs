//! The temporal stage an inflated video UNet adds to every transformer block: attention across the frames
//! of each spatial position, pre-normed, residual (Tune-A-Video `attn_temp` / `norm_temp`).

use super::attention_processor::{Attention, AttnContext};
use super::nn::{Builder, LayerNorm};
use crate::error::{Error, Result};
use tch::Tensor;

/// Which temporal module a block carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporalKind {
    /// Tune-A-Video: LayerNorm, then self-attention over frames; `to_out.0.weight` starts at zero so the
    /// inflated model first behaves like the image model, its bias keeps PyTorch's default init.
    Temporal,
}

impl TemporalKind {
    pub fn name(&self) -> &'static str {
        match self {
            TemporalKind::Temporal => "temporal",
        }
    }
}

/// `norm_temp` + `attn_temp`.
#[derive(Debug)]
pub struct TemporalStage {
    pub norm_temp: LayerNorm,
    pub attn_temp: Attention,
    pub kind: TemporalKind,
}

impl TemporalStage {
    pub fn new(
        b: &Builder,
        dim: i64,
        heads: i64,
        dim_head: i64,
        eps: f64,
        kind: &TemporalKind,
    ) -> Self {
        let mut attn_temp = Attention::new(&b.sub("attn_temp"), dim, None, heads, dim_head, false);
        if b.mode() == super::nn::InitMode::Random {
            let _ = tch::no_grad(|| attn_temp.to_out.weight.zero_());
        }
        TemporalStage {
            norm_temp: LayerNorm::new(&b.sub("norm_temp"), dim, eps),
            attn_temp,
            kind: kind.clone(),
        }
    }

    /// `x` `[B·F, L, C]` → same shape; attention runs over the `F` frames of each of the `L` positions.
    pub fn forward(&self, x: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let f = ctx.frames.max(1);
        let s = x.size();
        let (bf, l, c) = (s[0], s[1], s[2]);
        if bf % f != 0 {
            return Err(Error::Invalid(format!(
                "temporal attention: batch {bf} is not a multiple of {f} frames"
            )));
        }
        let b = bf / f;
        // (b f) l c -> (b l) f c
        let seq = x
            .view([b, f, l, c])
            .permute([0, 2, 1, 3])
            .reshape([b * l, f, c]);
        let mut frame_ctx = ctx.clone();
        frame_ctx.frames = 1;
        let out = self
            .attn_temp
            .forward(&self.norm_temp.forward(&seq), None, &frame_ctx)?
            + &seq;
        Ok(out
            .view([b, l, f, c])
            .permute([0, 2, 1, 3])
            .reshape([bf, l, c]))
    }
}
