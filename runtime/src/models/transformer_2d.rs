//! `Transformer2DModel` for continuous inputs (diffusers `transformer_2d.py`): GroupNorm, projection in
//! (1×1 conv or linear), transformer blocks over the `H·W` tokens, projection out, residual. In video the
//! GroupNorm is per frame, as in Tune-A-Video's `Transformer3DModel`.

use super::attention::{BasicTransformerBlock, BlockShape, Stages};
use super::attention_processor::AttnContext;
use super::nn::{Builder, Conv2d, GroupNorm, Linear};
use crate::error::Result;
use tch::Tensor;

#[derive(Debug)]
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Proj,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
}

/// The shape of one spatial transformer.
#[derive(Debug, Clone)]
pub struct TransformerSpec {
    pub channels: i64,
    pub heads: i64,
    pub cross_dim: i64,
    pub groups: i64,
    pub linear_projection: bool,
    /// The stages video modules add to every block.
    pub stages: Option<Stages>,
}

impl Transformer2DModel {
    pub fn new(b: &Builder, spec: &TransformerSpec) -> Result<Self> {
        let c = spec.channels;
        let dim_head = c / spec.heads;
        let inner = spec.heads * dim_head;
        let proj = |name: &str, i: i64, o: i64| {
            if spec.linear_projection {
                Proj::Linear(Linear::new(&b.sub(name), i, o, true))
            } else {
                Proj::Conv(Conv2d::new(&b.sub(name), i, o, 1, 1, 0))
            }
        };
        let shape = BlockShape { dim: inner, heads: spec.heads, dim_head, cross_dim: spec.cross_dim, eps: 1e-5 };
        Ok(Transformer2DModel {
            norm: GroupNorm::new(&b.sub("norm"), spec.groups, c, 1e-6),
            proj_in: proj("proj_in", c, inner),
            transformer_blocks: vec![BasicTransformerBlock::new(
                &b.sub("transformer_blocks").sub(0),
                &shape,
                spec.stages.as_ref(),
            )?],
            proj_out: proj("proj_out", inner, c),
        })
    }

    /// `x` `[N, C, H, W]`, `context` `[N, L, Ck]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let s = x.size();
        let (n, h, w) = (s[0], s[2], s[3]);
        let normed = self.norm.forward(x);
        let tokens = match &self.proj_in {
            Proj::Conv(c) => {
                let y = c.forward(&normed);
                let inner = y.size()[1];
                y.permute([0, 2, 3, 1]).reshape([n, h * w, inner])
            }
            Proj::Linear(l) => l.forward(&normed.permute([0, 2, 3, 1]).reshape([n, h * w, s[1]])),
        };
        let mut ctx = ctx.clone();
        ctx.spatial = Some((h, w));
        let mut hs = tokens;
        for block in &self.transformer_blocks {
            hs = block.forward(&hs, context, &ctx)?;
        }
        let inner = hs.size()[2];
        let out = match &self.proj_out {
            Proj::Conv(c) => c.forward(&hs.reshape([n, h, w, inner]).permute([0, 3, 1, 2]).contiguous()),
            Proj::Linear(l) => l.forward(&hs).reshape([n, h, w, -1]).permute([0, 3, 1, 2]).contiguous(),
        };
        Ok(out + x)
    }
}
