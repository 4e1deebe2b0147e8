//! `vidtome`: cross-frame token merging in self-attention (VidToMe, Li et al., CVPR 2024, §3.2). The
//! frames of a clip are taken in chunks of `chunk`; in each, the tokens of the other frames are matched
//! to the tokens of the chunk's middle frame by cosine similarity, and the `ratio` of them that match
//! best are merged into their matches (bipartite soft matching, [`vidtune_kernels::merge`]). The chunk
//! attends over the merged tokens jointly — every frame sees the chunk's other frames — and each token
//! takes the output of the token it became. Merged tokens are computed once for all the frames that share
//! them: consistency and less work. VidToMe picks the chunk's destination frame at random each step;
//! here it is the middle frame, so a call is reproducible without a generator. No weights: it works on
//! untuned models (zero-shot) and tunes like the others.

use super::{Build, Entry, ModuleSpec, Param, Role};
use crate::error::Result;
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use tch::Tensor;
use vidtune_kernels::merge::{bipartite_merge, unmerge};

pub const PARAMS: &[Param] = &[
    Param { name: "ratio", default: 0.5, doc: "the share of the other frames' tokens merged (0: none, 1: all)" },
    Param { name: "chunk", default: 4.0, doc: "frames merged and attended together" },
];

#[derive(Debug, Clone)]
pub struct TokenMerging {
    pub ratio: f64,
    pub chunk: i64,
}

impl AttnProcessor for TokenMerging {
    fn name(&self) -> String {
        "vidtome".into()
    }

    fn forward(
        &self,
        attn: &Attention,
        hidden: &Tensor,
        _context: Option<&Tensor>,
        ctx: &AttnContext,
    ) -> Result<Tensor> {
        let (n, f) = (hidden.size()[0], ctx.frames.max(1));
        // A chunk's merged tokens are no one frame's, so attention stores and fusion, which read and
        // replace per-frame maps, leave these layers alone: the attention runs without the call's maps.
        let merged = AttnContext { spatial: None, ..ctx.clone() };
        let mut outs = vec![];
        for clip in 0..n / f {
            let mut start = 0;
            while start < f {
                let c = self.chunk.max(1).min(f - start);
                let x = hidden.narrow(0, clip * f + start, c);
                let l = x.size()[1];
                let r = (((c - 1) * l) as f64 * self.ratio).floor() as i64;
                let m = bipartite_merge(&x, c / 2, r)?;
                let tokens = m.tokens.unsqueeze(0);
                let (q, k, v) = (attn.to_q.forward(&tokens), attn.to_k.forward(&tokens), attn.to_v.forward(&tokens));
                let out = attn.attend(&q, &k, &v, None, &merged)?;
                outs.push(unmerge(&out.squeeze_dim(0), &m, c)?);
                start += c;
            }
        }
        Ok(Tensor::cat(&outs, 0))
    }
}

/// The `vidtome` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Spatial,
    name: "vidtome",
    summary: "cross-frame token merging: chunks of frames attend jointly over merged tokens (VidToMe)",
    params: PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Processor(|s: &ModuleSpec| {
        Box::new(TokenMerging { ratio: s.get("ratio"), chunk: s.get("chunk").max(1.0) as i64 })
    }),
};
