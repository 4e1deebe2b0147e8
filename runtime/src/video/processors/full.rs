//! Full spatio-temporal attention: each frame's queries attend to the tokens of every frame of the clip
//! (`F·H·W` keys; memory grows with the square of the clip, so use it on short clips or low resolution).

use super::{Build, Entry, Role, NO_PARAMS};
use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use tch::Tensor;
use vidtune_kernels::attention::gather_all_frames;

#[derive(Debug, Clone, Default)]
pub struct FullFrames;

impl AttnProcessor for FullFrames {
    fn name(&self) -> String {
        "full".into()
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
        let k = gather_all_frames(&attn.to_k.forward(source), ctx.frames);
        let v = gather_all_frames(&attn.to_v.forward(source), ctx.frames);
        attn.attend(&q, &k, &v, None, ctx)
    }
}

/// The `full` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Spatial,
    name: "full",
    summary: "keys and values of every frame",
    params: NO_PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Processor(|_| Box::new(FullFrames)),
};
