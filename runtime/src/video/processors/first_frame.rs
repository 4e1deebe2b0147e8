//! First-frame attention (LAMP): every frame's queries attend to the keys and values of the first frame
//! only, anchoring appearance to it (the call's own first frame, or a long clip's anchor:
//! [`AttnContext::first_frame`]).
//!
//! With `mask > 0` it is the mask-aware attention of dynamic mask guidance (§III-B, Eq. 5): the subject's
//! masks bias the scores so that foreground queries attend to the first frame's foreground and background
//! queries to its background. The design here is the simplest one the paper's text
//! describes, not an equation of its own: an additive score bias `−mask · |m_q − m₀,k|`, where `m_q` is the
//! share of query token `q` inside the subject (masks area-averaged to the layer's resolution) and
//! `m₀,k` the same for key token `k` of the first frame. Tokens of the same region keep their scores,
//! tokens across the boundary lose `mask` nats (`mask = 4` scales their weights by e⁻⁴). Without masks in
//! the call it is plain first-frame attention.

use super::{Build, Entry, ModuleSpec, Param, Role};
use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use crate::video::call::{first_frame, VideoCall};
use tch::Tensor;
use vidtune_kernels::attention::{first_frame_mask_bias_from, first_frames, gather_first_frame_from};

pub const PARAMS: &[Param] = &[Param {
    name: "mask",
    default: 0.0,
    doc: "strength of the mask-aware score bias (0: off; 2–8 restrict foreground and background to each other)",
}];

#[derive(Debug, Clone, Default)]
pub struct FirstFrameAttention {
    pub mask_strength: f64,
}

impl FirstFrameAttention {
    pub fn new(spec: &ModuleSpec) -> Self {
        FirstFrameAttention { mask_strength: spec.get("mask") }
    }
}

impl AttnProcessor for FirstFrameAttention {
    fn name(&self) -> String {
        if self.mask_strength > 0.0 {
            format!("first_frame:mask={}", self.mask_strength)
        } else {
            "first_frame".into()
        }
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
        let f = ctx.frames;
        // Only the first frame's keys and values are needed.
        let first_source = first_frames(source, f);
        let mut own = vec![attn.to_k.forward(&first_source), attn.to_v.forward(&first_source)];
        let m = match (VideoCall::masks(ctx), self.mask_strength > 0.0) {
            (Some(masks), true) => {
                let m = masks.tokens(ctx, "mask-aware first-frame attention")?.squeeze_dim(-1);
                own.push(first_frames(&m, f));
                Some(m)
            }
            _ => None,
        };
        let first = first_frame(ctx, own)?;
        let k = gather_first_frame_from(&first[0], f);
        let v = gather_first_frame_from(&first[1], f);
        let bias = m.map(|m| first_frame_mask_bias_from(&m, f, &first[2], self.mask_strength).to_kind(q.kind()));
        attn.attend(&q, &k, &v, bias.as_ref(), ctx)
    }
}

/// The `first_frame` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Spatial,
    name: "first_frame",
    summary: "keys and values of the first frame (LAMP); with mask > 0, mask-aware (dynamic mask guidance)",
    params: PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Processor(|s| Box::new(FirstFrameAttention::new(s))),
};
