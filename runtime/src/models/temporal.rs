//! The temporal stage an inflated video UNet adds to every transformer block: attention across the frames
//! of each spatial position, residual. Two modules:
//!
//! - `temporal` (Tune-A-Video `attn_temp` / `norm_temp`): LayerNorm, then self-attention over frames;
//!   `to_out.0.weight` starts at zero so the inflated model first behaves like the image model, its bias
//!   keeps PyTorch's default initialisation (as the reference code does).
//! - `stam` (EI², Shift-restricted Temporal Attention): Instance Centering over time instead of the
//!   LayerNorm (no rescaling), spectrally normalised value and output projections (the processor
//!   [`crate::video::processors::stam`]), output bias initialised to zero.

use super::attention_processor::{Attention, AttnContext};
use super::nn::{Builder, InitMode, LayerNorm};
use crate::error::{Error, Result};
use tch::Tensor;
use vidtune_kernels::attention::instance_center;

/// Which temporal module a block carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemporalKind {
    Temporal,
    Stam,
}

impl TemporalKind {
    pub fn name(&self) -> &'static str {
        match self {
            TemporalKind::Temporal => "temporal",
            TemporalKind::Stam => "stam",
        }
    }

    /// `"none"` is `None`.
    pub fn parse(name: &str) -> Result<Option<Self>> {
        match name {
            "none" => Ok(None),
            "temporal" => Ok(Some(TemporalKind::Temporal)),
            "stam" => Ok(Some(TemporalKind::Stam)),
            other => Err(Error::Invalid(format!(
                "unknown temporal module {other:?}; expected \"none\", \"temporal\" or \"stam\""
            ))),
        }
    }
}

/// `norm_temp` (Tune-A-Video only) + `attn_temp`.
#[derive(Debug)]
pub struct TemporalStage {
    pub norm_temp: Option<LayerNorm>,
    pub attn_temp: Attention,
    pub kind: TemporalKind,
}

impl TemporalStage {
    pub fn new(b: &Builder, dim: i64, heads: i64, dim_head: i64, eps: f64, kind: &TemporalKind) -> Self {
        let mut attn_temp = Attention::new(&b.sub("attn_temp"), dim, None, heads, dim_head, false);
        if b.mode() == InitMode::Random {
            tch::no_grad(|| {
                let _ = match kind {
                    TemporalKind::Temporal => attn_temp.to_out.weight.zero_(),
                    TemporalKind::Stam => attn_temp.to_out.bias.as_mut().expect("to_out has a bias").zero_(),
                };
            });
        }
        let norm_temp = (*kind == TemporalKind::Temporal).then(|| LayerNorm::new(&b.sub("norm_temp"), dim, eps));
        TemporalStage { norm_temp, attn_temp, kind: kind.clone() }
    }

    /// `x` `[B·F, L, C]` → same shape; attention runs over the `F` frames of each of the `L` positions.
    pub fn forward(&self, x: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let f = ctx.frames.max(1);
        let s = x.size();
        let (bf, l, c) = (s[0], s[1], s[2]);
        if bf % f != 0 {
            return Err(Error::Invalid(format!("temporal attention: batch {bf} is not a multiple of {f} frames")));
        }
        let b = bf / f;
        // (b f) l c -> (b l) f c
        let seq = x.view([b, f, l, c]).permute([0, 2, 1, 3]).reshape([b * l, f, c]);
        let normed = match &self.norm_temp {
            Some(norm) => norm.forward(&seq),
            None => instance_center(&seq),
        };
        let mut frame_ctx = ctx.clone();
        frame_ctx.frames = 1;
        frame_ctx.spatial = None;
        let out = self.attn_temp.forward(&normed, None, &frame_ctx)? + &seq;
        Ok(out.view([b, l, f, c]).permute([0, 2, 1, 3]).reshape([bf, l, c]))
    }
}
