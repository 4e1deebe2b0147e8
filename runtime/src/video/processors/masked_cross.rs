//! Mask cross-attention (dynamic mask guidance, §III-B, Eqs. 6–7) on `attn2`: the subject's masks enter
//! the scores of the attention to the text, so the subject's words attend inside its masks and not
//! outside.
//!
//! The design follows DenseDiffusion, which the paper cites, rather than equations of the paper's own
//! (see [`vidtune_kernels::attention::modulate_scores`]): for the subject's tokens — named by the user,
//! `subject: "red circle"`, and found in the prompt — a score inside the masks moves towards its row's
//! maximum and outside towards its row's minimum, by `strength`. It acts while the denoising is between
//! `start` and `end` (fractions: 0 is pure noise, 1 the clean result); DenseDiffusion found early steps
//! decide the layout, so late steps can be left alone. Without masks or a subject in the call (the
//! unconditional half of classifier-free guidance has none) it is plain cross-attention.

use super::{Build, Entry, ModuleSpec, Param, Role};
use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use crate::video::call::VideoCall;
use tch::{Kind, Tensor};
use vidtune_kernels::attention::{merge_heads, modulate_scores, split_heads};

pub const PARAMS: &[Param] = &[
    Param {
        name: "strength",
        default: 1.0,
        doc: "how far the subject's scores move (0: off, 1: to the row's max / min)",
    },
    Param { name: "start", default: 0.0, doc: "where it starts, as a fraction of the denoising (0: pure noise)" },
    Param { name: "end", default: 1.0, doc: "where it stops (1: the last step)" },
];

/// Training timesteps of the SD1.x schedule, for the fraction of the denoising a timestep is at.
const TRAIN_STEPS: f64 = 1000.0;

#[derive(Debug, Clone)]
pub struct MaskedCross {
    pub strength: f64,
    pub start: f64,
    pub end: f64,
}

impl MaskedCross {
    pub fn new(spec: &ModuleSpec) -> Self {
        MaskedCross { strength: spec.get("strength"), start: spec.get("start"), end: spec.get("end") }
    }

    /// The strength at timestep `t` (0 outside `start..=end`).
    pub fn weight(&self, t: Option<f64>) -> f64 {
        let progress = 1.0 - t.unwrap_or(0.0) / TRAIN_STEPS;
        if progress >= self.start && progress <= self.end {
            self.strength
        } else {
            0.0
        }
    }
}

impl AttnProcessor for MaskedCross {
    fn name(&self) -> String {
        "masked".into()
    }

    fn forward(
        &self,
        attn: &Attention,
        hidden: &Tensor,
        context: Option<&Tensor>,
        ctx: &AttnContext,
    ) -> Result<Tensor> {
        let (k, v) = attn.key_value(hidden, context, ctx);
        let q = attn.to_q.forward(hidden);
        let w = self.weight(ctx.timestep);
        let call = VideoCall::of(ctx);
        let (Some(masks), Some(subject)) =
            (call.and_then(|c| c.masks.as_deref()), call.and_then(|c| c.subject_tokens.as_deref()))
        else {
            return attn.attend(&q, &k, &v, None, ctx);
        };
        if w == 0.0 || subject.iter().all(|s| s.is_empty()) {
            return attn.attend(&q, &k, &v, None, ctx);
        }
        let region = masks.tokens(ctx, "mask cross-attention")?.squeeze_dim(-1);
        let (n, lk) = (hidden.size()[0], k.size()[1]);
        let per_clip = n / subject.len().max(1) as i64;
        let mut sel = vec![0f32; (n * lk) as usize];
        for row in 0..n {
            for &tok in subject.get((row / per_clip.max(1)) as usize).map(Vec::as_slice).unwrap_or(&[]) {
                if (0..lk).contains(&tok) {
                    sel[(row * lk + tok) as usize] = 1.0;
                }
            }
        }
        let tokens = Tensor::from_slice(&sel).view([n, lk]).to_device(hidden.device());
        let (qh, kh, vh) = (split_heads(&q, attn.heads), split_heads(&k, attn.heads), split_heads(&v, attn.heads));
        let d = *qh.size().last().unwrap_or(&1) as f64;
        let scores = qh.matmul(&kh.transpose(-2, -1)).to_kind(Kind::Float) / d.sqrt();
        let scores = modulate_scores(&scores, &region.to_kind(Kind::Float), &tokens, w);
        let probs = attn.control_probs(scores.softmax(-1, Kind::Float), ctx)?;
        let out = probs.to_kind(vh.kind()).matmul(&vh);
        Ok(attn.to_out.forward(&merge_heads(&out)))
    }
}

/// The `masked` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Cross,
    name: "masked",
    summary: "mask cross-attention: the subject's tokens attend inside its masks (dynamic mask guidance, \
              DenseDiffusion)",
    params: PARAMS,
    needs_masks: true,
    trains: &[],
    prepare: None,
    build: Build::Processor(|s| Box::new(MaskedCross::new(s))),
};
