//! Sparse-causal attention (Tune-A-Video, §4.1): each frame's queries attend to the keys and values of the
//! first frame and of the previous frame (frame 0 uses itself twice), concatenated over tokens. The first
//! frame is the call's own, or the long clip's anchor ([`AttnContext::first_frame`]).

use super::{Build, Entry, Role, NO_PARAMS};
use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use crate::video::call::first_frame;
use tch::Tensor;
use vidtune_kernels::attention::{first_frames, gather_sparse_causal_from};

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
        let (k, v) = (attn.to_k.forward(source), attn.to_v.forward(source));
        let first = first_frame(ctx, vec![first_frames(&k, ctx.frames), first_frames(&v, ctx.frames)])?;
        let k = gather_sparse_causal_from(&k, ctx.frames, &first[0]);
        let v = gather_sparse_causal_from(&v, ctx.frames, &first[1]);
        attn.attend(&q, &k, &v, None, ctx)
    }
}

/// The `sparse_causal` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Spatial,
    name: "sparse_causal",
    summary: "keys and values of the first and the previous frame (Tune-A-Video)",
    params: NO_PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Processor(|_| Box::new(SparseCausal)),
};
