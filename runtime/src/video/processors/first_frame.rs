//! First-frame attention (LAMP): every frame's queries attend to the keys and values of the first frame
//! only, anchoring appearance to it.
//!
//! With `mask > 0` it is the mask-aware attention of dynamic mask guidance (§III-B, Eq. 5): the subject's
//! masks bias the scores so that foreground queries attend to the first frame's foreground and background
//! queries to its background. The design here is the simplest one the paper's text
//! describes, not an equation of its own: an additive score bias `−mask · |m_q − m₀,k|`, where `m_q` is the
//! share of query token `q` inside the subject (masks area-averaged to the layer's resolution) and
//! `m₀,k` the same for key token `k` of the first frame. Tokens of the same region keep their scores,
//! tokens across the boundary lose `mask` nats (`mask = 4` scales their weights by e⁻⁴). Without masks in
//! the call it is plain first-frame attention.

use super::{ModuleSpec, Param};
use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use tch::Tensor;
use vidtune_kernels::attention::{first_frame_mask_bias, gather_first_frame};

pub const PARAMS: &[Param] = &[Param {
    name: "mask",
    default: 0.0,
    doc: "strength of the mask-aware score bias (0: off; 2–8 restrict foreground and background to each other)",
}];

#[derive(Debug, Clone, Default)]
pub struct FirstFrame {
    pub mask_strength: f64,
}

impl FirstFrame {
    pub fn new(spec: &ModuleSpec) -> Self {
        FirstFrame { mask_strength: spec.get("mask") }
    }
}

impl AttnProcessor for FirstFrame {
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
        let k = gather_first_frame(&attn.to_k.forward(source), ctx.frames);
        let v = gather_first_frame(&attn.to_v.forward(source), ctx.frames);
        let bias = match (&ctx.masks, self.mask_strength > 0.0) {
            (Some(masks), true) => {
                let m = masks.tokens(ctx, "mask-aware first-frame attention")?.squeeze_dim(-1);
                Some(first_frame_mask_bias(&m, ctx.frames, self.mask_strength).to_kind(q.kind()))
            }
            _ => None,
        };
        Ok(attn.attend(&q, &k, &v, bias.as_ref(), ctx.backend))
    }
}
