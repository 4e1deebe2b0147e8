//! The UNet's down, mid and up blocks (diffusers `unet_2d_blocks.py`): `CrossAttnDownBlock2D` /
//! `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` / `UpBlock2D` (and Tune-A-Video's 3-D
//! forms, which differ only in running frames as a batch).

use super::attention_processor::AttnContext;
use super::checkpoint::Exec;
use super::nn::Builder;
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use super::transformer_2d::{Transformer2DModel, TransformerSpec};
use crate::error::Result;
use tch::Tensor;

/// What every ResNet of the UNet shares.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    pub temb: i64,
    pub groups: i64,
    pub eps: f64,
    pub output_scale: f64,
}

/// A down block: `layers` × (ResNet [+ transformer]), then an optional stride-2 conv.
#[derive(Debug)]
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn new(
        b: &Builder,
        in_c: i64,
        out_c: i64,
        layers: i64,
        rs: ResnetSpec,
        attn: Option<&TransformerSpec>,
        downsample: Option<i64>,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|j| {
                ResnetBlock2D::new(
                    &b.sub("resnets").sub(j),
                    if j == 0 { in_c } else { out_c },
                    out_c,
                    Some(rs.temb),
                    rs.groups,
                    rs.eps,
                    rs.output_scale,
                )
            })
            .collect();
        let attentions = match attn {
            Some(spec) => (0..layers)
                .map(|j| Transformer2DModel::new(&b.sub("attentions").sub(j), spec))
                .collect::<Result<Vec<_>>>()?,
            None => vec![],
        };
        let downsampler = downsample.map(|padding| Downsample2D::new(&b.sub("downsamplers").sub(0), out_c, padding));
        Ok(DownBlock { resnets, attentions, downsampler })
    }

    /// Returns the output and the skip connections it contributes. `extra` (a T2I-Adapter's feature) is
    /// added where diffusers adds it: after the last ResNet–transformer pair of a cross-attention block
    /// (before downsampling), to the output of a plain block; either way the last skip connection has it.
    pub fn forward<'a, E: Exec<'a>>(
        &'a self,
        e: &mut E,
        x: &E::V,
        temb: &Tensor,
        context: &Tensor,
        ctx: &AttnContext,
        extra: Option<&Tensor>,
    ) -> Result<(E::V, Vec<E::V>)> {
        let mut h = E::dup(x);
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        let cross = !self.attentions.is_empty();
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet_segment(e, resnet, &[&h], temb, ctx.frames)?;
            if let Some(attn) = self.attentions.get(j) {
                h = transformer_segment(e, attn, &h, context, ctx)?;
            }
            if let (true, true, Some(f)) = (cross, j + 1 == self.resnets.len(), extra) {
                h = add_feature(e, &h, f)?;
            }
            skips.push(E::dup(&h));
        }
        if let Some(down) = &self.downsampler {
            h = e.run(&[&h], Box::new(move |xs, _| Ok(down.forward(&xs[0]))))?;
            skips.push(E::dup(&h));
        }
        if let (false, Some(f)) = (cross, extra) {
            h = add_feature(e, &h, f)?;
            *skips.last_mut().expect("a block has a ResNet") = E::dup(&h);
        }
        Ok((h, skips))
    }
}

/// `h + feature`, refusing a feature of another shape (an adapter made for another base model).
pub fn add_feature<'a, E: Exec<'a>>(e: &mut E, h: &E::V, feature: &Tensor) -> Result<E::V> {
    let size = e.size(h);
    if feature.size() != size {
        return Err(crate::error::Error::Invalid(format!(
            "control: a T2I-Adapter feature of {:?} for a UNet block whose output is {size:?} (an adapter made for \
             another base model: its channels and downscale factor must follow the UNet's widths and the VAE)",
            feature.size()
        )));
    }
    let f = feature.shallow_clone();
    e.run(&[h], Box::new(move |xs, _| Ok(&xs[0] + &f)))
}

/// A ResNet as one block of the executor; two inputs are concatenated on channels first (an up
/// block's skip connection).
pub fn resnet_segment<'a, E: Exec<'a>>(
    e: &mut E,
    resnet: &'a ResnetBlock2D,
    inputs: &[&E::V],
    temb: &Tensor,
    frames: i64,
) -> Result<E::V> {
    let temb = temb.shallow_clone();
    e.run(
        inputs,
        Box::new(move |xs, _| {
            let x = if xs.len() == 1 { xs[0].shallow_clone() } else { Tensor::cat(xs, 1) };
            Ok(resnet.forward(&x, Some(&temb), frames))
        }),
    )
}

/// A spatial transformer as one block of the executor.
pub fn transformer_segment<'a, E: Exec<'a>>(
    e: &mut E,
    t: &'a Transformer2DModel,
    x: &E::V,
    context: &Tensor,
    ctx: &AttnContext,
) -> Result<E::V> {
    let context = context.shallow_clone();
    let ctx = ctx.clone();
    e.run(
        &[x],
        Box::new(move |xs, recompute| {
            if recompute && ctx.training {
                // Running state (spectral normalisation) stepped in the forward already.
                let ctx = AttnContext { training: false, ..ctx.clone() };
                t.forward(&xs[0], &context, &ctx)
            } else {
                t.forward(&xs[0], &context, &ctx)
            }
        }),
    )
}

/// `UNetMidBlock2DCrossAttn`: ResNet, transformer, ResNet.
#[derive(Debug)]
pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    pub fn new(b: &Builder, c: i64, rs: ResnetSpec, attn: &TransformerSpec) -> Result<Self> {
        Ok(MidBlock {
            resnets: (0..2)
                .map(|j| {
                    ResnetBlock2D::new(
                        &b.sub("resnets").sub(j),
                        c,
                        c,
                        Some(rs.temb),
                        rs.groups,
                        rs.eps,
                        rs.output_scale,
                    )
                })
                .collect(),
            attentions: vec![Transformer2DModel::new(&b.sub("attentions").sub(0), attn)?],
        })
    }

    pub fn forward<'a, E: Exec<'a>>(
        &'a self,
        e: &mut E,
        x: &E::V,
        temb: &Tensor,
        context: &Tensor,
        ctx: &AttnContext,
    ) -> Result<E::V> {
        let h = resnet_segment(e, &self.resnets[0], &[x], temb, ctx.frames)?;
        let h = transformer_segment(e, &self.attentions[0], &h, context, ctx)?;
        resnet_segment(e, &self.resnets[1], &[&h], temb, ctx.frames)
    }
}

/// An up block: `layers` × (concat skip, ResNet [+ transformer]), then an optional upsampler.
#[derive(Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

/// Channel widths of one up block.
#[derive(Debug, Clone, Copy)]
pub struct UpChannels {
    pub in_c: i64,
    pub prev_out: i64,
    pub out_c: i64,
}

impl UpBlock {
    pub fn new(
        b: &Builder,
        ch: UpChannels,
        layers: i64,
        rs: ResnetSpec,
        attn: Option<&TransformerSpec>,
        upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|j| {
                let skip = if j == layers - 1 { ch.in_c } else { ch.out_c };
                let input = if j == 0 { ch.prev_out } else { ch.out_c };
                ResnetBlock2D::new(
                    &b.sub("resnets").sub(j),
                    input + skip,
                    ch.out_c,
                    Some(rs.temb),
                    rs.groups,
                    rs.eps,
                    rs.output_scale,
                )
            })
            .collect();
        let attentions = match attn {
            Some(spec) => (0..layers)
                .map(|j| Transformer2DModel::new(&b.sub("attentions").sub(j), spec))
                .collect::<Result<Vec<_>>>()?,
            None => vec![],
        };
        let upsampler = upsample.then(|| Upsample2D::new(&b.sub("upsamplers").sub(0), ch.out_c));
        Ok(UpBlock { resnets, attentions, upsampler })
    }

    /// Consumes one skip connection per ResNet from the end of `skips`; upsamples to `size`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<'a, E: Exec<'a>>(
        &'a self,
        e: &mut E,
        x: &E::V,
        skips: &mut Vec<E::V>,
        temb: &Tensor,
        context: &Tensor,
        ctx: &AttnContext,
        size: Option<[i64; 2]>,
    ) -> Result<E::V> {
        let mut h = E::dup(x);
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("a skip connection per up-block ResNet");
            h = resnet_segment(e, resnet, &[&h, &skip], temb, ctx.frames)?;
            if let Some(attn) = self.attentions.get(j) {
                h = transformer_segment(e, attn, &h, context, ctx)?;
            }
        }
        if let Some(up) = &self.upsampler {
            h = e.run(&[&h], Box::new(move |xs, _| Ok(up.forward(&xs[0], size))))?;
        }
        Ok(h)
    }
}
