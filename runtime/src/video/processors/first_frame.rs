//! First-frame attention (LAMP): every frame's queries attend to the keys and values of the first frame
//! only, anchoring appearance to it.

use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use tch::Tensor;
use vidtune_kernels::attention::gather_first_frame;

#[derive(Debug, Clone, Default)]
pub struct FirstFrame;

impl AttnProcessor for FirstFrame {
    fn name(&self) -> String {
        "first_frame".into()
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
        let k = gather_first_frame(&attn.to_k.forward(source), ctx.frames);
        let v = gather_first_frame(&attn.to_v.forward(source), ctx.frames);
        Ok(attn.attend(&q, &k, &v, None, ctx.backend))
    }
}
