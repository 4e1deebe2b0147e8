//! Fine-coarse Frame Attention (EI², §4.4, Eq. 10): each frame's queries attend to its own tokens at full
//! resolution and to every other frame's tokens average-pooled by `r` per side (`downsample(·, r)` keeps
//! `1/r²` of the tokens). `r = 1` is full attention. Pooling commutes with the key / value projections
//! (both linear), so frames are pooled before projecting, which saves work.

use super::{Build, Entry, Role};
use crate::error::{Error, Result};
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use tch::Tensor;
use vidtune_kernels::attention::{gather_fine_coarse, pool_tokens};

/// `ffam:R`: the pooling ratio per side.
pub const PARAMS: &[super::Param] =
    &[super::Param { name: "ratio", default: 2.0, doc: "other frames are average-pooled by this factor per side" }];

#[derive(Debug, Clone)]
pub struct FineCoarse {
    pub ratio: i64,
}

impl FineCoarse {
    pub fn new(ratio: i64) -> Self {
        FineCoarse { ratio: ratio.max(1) }
    }
}

impl AttnProcessor for FineCoarse {
    fn name(&self) -> String {
        format!("ffam:{}", self.ratio)
    }

    fn forward(
        &self,
        attn: &Attention,
        hidden: &Tensor,
        context: Option<&Tensor>,
        ctx: &AttnContext,
    ) -> Result<Tensor> {
        let source = context.unwrap_or(hidden);
        let (h, w) = ctx.spatial.ok_or_else(|| {
            Error::Invalid("ffam needs the spatial size of its tokens (it runs inside a spatial transformer)".into())
        })?;
        let coarse = pool_tokens(source, h, w, self.ratio);
        let q = attn.to_q.forward(hidden);
        let k = gather_fine_coarse(&attn.to_k.forward(source), &attn.to_k.forward(&coarse), ctx.frames);
        let v = gather_fine_coarse(&attn.to_v.forward(source), &attn.to_v.forward(&coarse), ctx.frames);
        attn.attend(&q, &k, &v, None, ctx)
    }
}

/// The `ffam` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Spatial,
    name: "ffam",
    summary: "fine-coarse frame attention: the own frame in full, the others pooled by ratio (EI²)",
    params: PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Processor(|s| Box::new(FineCoarse::new(s.get("ratio") as i64))),
};
