//! Temporal attention (Tune-A-Video `attn_temp` / `norm_temp`), the stage an inflated UNet adds after the
//! feed-forward of every transformer block: LayerNorm, then self-attention across the frames of each
//! spatial position, residual, no positional encoding. `to_out.0.weight` starts at zero so the inflated
//! model first behaves like the image model; its bias keeps PyTorch's default initialisation, as the
//! reference code does. [`TemporalStage`] also carries EI²'s variant (`stam`).

use super::{Build, Entry, ModuleSpec, Role, NO_PARAMS};
use crate::error::{Error, Result};
use crate::models::attention::{BlockShape, BlockStage, Placement};
use crate::models::attention_processor::{Attention, AttnContext};
use crate::models::nn::{Builder, InitMode, LayerNorm};
use tch::Tensor;
use vidtune_kernels::attention::instance_center;

/// `norm_temp` (Tune-A-Video only) + `attn_temp`, attending over frames.
#[derive(Debug)]
pub struct TemporalStage {
    pub norm_temp: Option<LayerNorm>,
    pub attn_temp: Attention,
    name: &'static str,
}

impl TemporalStage {
    /// Tune-A-Video's stage (`centered: false`: LayerNorm; zero output weight) or EI²'s (`true`: instance
    /// centering, no norm parameters; zero output bias).
    pub fn new(b: &Builder, shape: &BlockShape, centered: bool) -> Self {
        // New layers are initialised even where the rest of the model is filled from a checkpoint; a
        // Tune-A-Video folder that has them overwrites them when it loads.
        let b = b.with_mode(InitMode::Random);
        let mut attn_temp = Attention::new(&b.sub("attn_temp"), shape.dim, None, shape.heads, shape.dim_head, false);
        tch::no_grad(|| {
            let _ = match centered {
                false => attn_temp.to_out.weight.zero_(),
                true => attn_temp.to_out.bias.as_mut().expect("to_out has a bias").zero_(),
            };
        });
        let norm_temp = (!centered).then(|| LayerNorm::new(&b.sub("norm_temp"), shape.dim, shape.eps));
        TemporalStage { norm_temp, attn_temp, name: if centered { "stam" } else { "temporal" } }
    }
}

impl BlockStage for TemporalStage {
    fn name(&self) -> String {
        self.name.into()
    }

    fn placement(&self) -> Placement {
        Placement::AfterFeedForward
    }

    /// `x` `[B·F, L, C]` → same shape; attention runs over the `F` frames of each of the `L` positions.
    fn forward(&self, x: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
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

    fn attentions(&self) -> Vec<(&'static str, &Attention)> {
        vec![("attn_temp", &self.attn_temp)]
    }
}

/// The `temporal` module's stage.
pub fn build(b: &Builder, shape: &BlockShape, _spec: &ModuleSpec) -> Result<Box<dyn BlockStage>> {
    Ok(Box::new(TemporalStage::new(b, shape, false)))
}

/// The `temporal` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Temporal,
    name: "temporal",
    summary: "attention over frames at each position (Tune-A-Video)",
    params: NO_PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Stage { block: build, model: None },
};
