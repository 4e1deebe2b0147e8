//! Mask-guided cross-attention (MCA), mask-guided-cross-attention.txt §III-B, Eqs. 5–7.
//!
//! The subject's mask sequence `M` (one mask per frame, from `segment`) is encoded by a ResNet mask
//! encoder `E^M` into features `F^M` at every resolution of the UNet. In every transformer block an extra
//! attention takes its queries from the mask features and its keys and values from the block's video
//! features of the same frame, `F^MG = softmax(F^M W^Q (F^V W^K)ᵀ / √d) F^V W^V` (Eqs. 6–7), and adds the
//! result to the video features. It runs after the text cross-attention (Fig. 1's dotted area sits on
//! the Tune-A-Video block), on LayerNorm-ed video features like every attention of the block.
//!
//! The paper gives no sizes ("the mask encoder simply adopts the ResNet architecture"). Here: a 3×3 stem
//! on the masks at latent resolution, then per UNet level a ResNet block (GroupNorm, SiLU, two 3×3
//! convolutions, residual) and a stride-2 convolution to the next level, so level `l` matches the UNet's
//! level `l` in size. Its width is `width` × the block's width (a quarter by default, at least 8),
//! which keeps the encoder to a few percent of the UNet. The paper says nothing of the layers' starting
//! values; our choice is an output projection at zero (weight and bias), so an untuned model computes
//! exactly what it would without MCA. Tuning trains the encoder and every MCA layer (`trains` in the
//! registry).
//!
//! The keys and values are each frame's own features: the video features are never taken for the call's
//! repeated text (see `Attention::key_value`), and a whole-UNet test checks every frame against a
//! per-frame reference.

use super::{Build, Entry, ModelStage, ModuleSpec, Param, Role};
use crate::config::UNet2DConditionConfig;
use crate::error::{Error, Result};
use crate::models::attention::{BlockShape, BlockStage, Placement};
use crate::models::attention_processor::{Attention, AttnContext, CallData};
use crate::models::nn::{Builder, Conv2d, InitMode, LayerNorm};
use crate::models::resnet::{Downsample2D, ResnetBlock2D};
use crate::video::call::{Pyramid, VideoCall};
use tch::Tensor;

pub const PARAMS: &[Param] = &[Param {
    name: "width",
    default: 0.25,
    doc: "width of the mask features, as a fraction of each block's width (at least 8 channels)",
}];

/// The mask features' width for a block of width `dim`.
pub fn feature_width(dim: i64, fraction: f64) -> i64 {
    (((dim as f64 * fraction) / 8.0).round() as i64 * 8).max(8)
}

/// The mask encoder `E^M`.
#[derive(Debug)]
pub struct MaskEncoder {
    stem: Conv2d,
    levels: Vec<(ResnetBlock2D, Option<Downsample2D>)>,
}

/// Builds the mask encoder under `mask_encoder.*` for the UNet of `config`.
pub fn build_encoder(b: &Builder, config: &UNet2DConditionConfig, spec: &ModuleSpec) -> Result<Box<dyn ModelStage>> {
    let b = b.with_mode(InitMode::Random).sub("mask_encoder");
    let fraction = spec.get("width");
    let widths: Vec<i64> = config.block_out_channels.iter().map(|&c| feature_width(c, fraction)).collect();
    let stem = Conv2d::new(&b.sub("conv_in"), 1, widths[0], 3, 1, 1);
    let n = widths.len();
    let levels = (0..n)
        .map(|l| {
            let input = if l == 0 { widths[0] } else { widths[l - 1] };
            let block = ResnetBlock2D::new(&b.sub("blocks").sub(l), input, widths[l], None, 8, 1e-6, 1.0);
            let down = (l + 1 < n)
                .then(|| Downsample2D::new(&b.sub("downsamplers").sub(l), widths[l], config.downsample_padding));
            (block, down)
        })
        .collect();
    Ok(Box::new(MaskEncoder { stem, levels }))
}

impl MaskEncoder {
    /// Features `[N, width_l, h_l, w_l]` of masks `[N, 1, h, w]` at every UNet level.
    pub fn encode(&self, masks: &Tensor) -> Vec<Tensor> {
        let mut x = self.stem.forward(masks);
        let mut out = vec![];
        for (block, down) in &self.levels {
            x = block.forward(&x, None, 1);
            out.push(x.shallow_clone());
            if let Some(d) = down {
                x = d.forward(&x);
            }
        }
        out
    }
}

impl ModelStage for MaskEncoder {
    fn prepare(&self, call: &VideoCall, data: &mut CallData) -> Result<()> {
        let masks = call.masks.as_ref().and_then(|p| p.levels.first()).ok_or_else(|| {
            Error::Invalid("mca (mask-guided cross-attention) needs the subject's masks: pass #{masks: …}".into())
        })?;
        let kind = self.stem.weight.kind();
        data.insert(MaskFeatures(Pyramid { levels: self.encode(&masks.to_kind(kind)) }));
        Ok(())
    }
}

/// The mask encoder's features `[B·F, C, h, w]` at every resolution of a call, which the MCA layers
/// query from.
#[derive(Debug)]
pub struct MaskFeatures(pub Pyramid);

/// The MCA layer of one block.
#[derive(Debug)]
pub struct MaskGuided {
    pub norm_mask: LayerNorm,
    pub attn_mask: Attention,
}

/// The `mca` module's stage: `norm_mask` and `attn_mask` (queries from the mask features, keys and values
/// from the normalised video features, output zero-initialised).
pub fn build(b: &Builder, shape: &BlockShape, spec: &ModuleSpec) -> Result<Box<dyn BlockStage>> {
    let b = b.with_mode(InitMode::Random);
    let width = feature_width(shape.dim, spec.get("width"));
    let mut attn_mask = Attention::with_output(
        &b.sub("attn_mask"),
        width,
        Some(shape.dim),
        shape.heads,
        shape.dim_head,
        false,
        shape.dim,
    );
    tch::no_grad(|| {
        let _ = attn_mask.to_out.weight.zero_();
        if let Some(bias) = attn_mask.to_out.bias.as_mut() {
            let _ = bias.zero_();
        }
    });
    Ok(Box::new(MaskGuided { norm_mask: LayerNorm::new(&b.sub("norm_mask"), shape.dim, shape.eps), attn_mask }))
}

impl BlockStage for MaskGuided {
    fn name(&self) -> String {
        "mca".into()
    }

    fn placement(&self) -> Placement {
        Placement::AfterCrossAttention
    }

    fn forward(&self, h: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let features = ctx.data.get::<MaskFeatures>().map(|f| &f.0).ok_or_else(|| {
            Error::Invalid("mca (mask-guided cross-attention) needs the subject's masks: pass #{masks: …}".into())
        })?;
        let queries = features.tokens(ctx, "mca")?.to_kind(h.kind());
        let video = self.norm_mask.forward(h);
        Ok(self.attn_mask.forward(&queries, Some(&video), ctx)? + h)
    }

    fn attentions(&self) -> Vec<(&'static str, &Attention)> {
        vec![("attn_mask", &self.attn_mask)]
    }
}

/// The `mca` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Mask,
    name: "mca",
    summary: "mask-guided cross-attention: mask features query the frame's video features (MCA)",
    params: PARAMS,
    needs_masks: true,
    trains: &["attn_mask", "mask_encoder"],
    prepare: None,
    build: Build::Stage { block: build, model: Some(build_encoder) },
};
