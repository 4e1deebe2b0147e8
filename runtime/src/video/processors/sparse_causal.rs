//! Sparse-causal attention (Tune-A-Video, §4.1): each frame's queries attend to the keys and values of the
//! first frame and of the previous frame (frame 0 uses itself twice), concatenated over tokens.

use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use tch::Tensor;
use vidtune_kernels::attention::gather_sparse_causal;

#[derive(Debug, Clone, Default)]
pub struct SparseCausal;

impl AttnProcessor for SparseCausal {
    fn name(&self) -> String {
        "sparse_causal".into()
    }

    fn forward(
        &self,
        attn: &Attention,
        hidden: &Tensor,
        context: Option<&Tensor>,
        ctx: &AttnContext,
    ) -> Result<Tensor> {
        let source = context.unwrap_or(hidden);
        let q = attn.to_q.forward(hidden);
        let k = gather_sparse_causal(&attn.to_k.forward(source), ctx.frames);
        let v = gather_sparse_causal(&attn.to_v.forward(source), ctx.frames);
        Ok(attn.attend(&q, &k, &v, None, ctx.backend))
    }
}
