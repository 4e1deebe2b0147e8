//! The VAE's encoder and decoder (diffusers `autoencoders/vae.py`: `Encoder`, `Decoder`,
//! `DownEncoderBlock2D`, `UpDecoderBlock2D`, `UNetMidBlock2D`).

use super::attention_processor::{Attention, AttnContext};
use super::nn::{silu, Builder, Conv2d, GroupNorm};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::config::AutoencoderKLConfig;
use crate::error::Result;
use tch::Tensor;

const EPS: f64 = 1e-6;

/// `UNetMidBlock2D` of the VAE: ResNet, single-head attention, ResNet.
#[derive(Debug)]
struct VaeMidBlock {
    resnets: Vec<ResnetBlock2D>,
    attention: Option<Attention>,
}

impl VaeMidBlock {
    fn new(b: &Builder, c: i64, groups: i64, attention: bool) -> Self {
        VaeMidBlock {
            resnets: (0..2)
                .map(|j| ResnetBlock2D::new(&b.sub("resnets").sub(j), c, c, None, groups, EPS, 1.0))
                .collect(),
            attention: attention.then(|| Attention::new_vae(&b.sub("attentions").sub(0), c, groups, EPS)),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, None, 1);
        if let Some(a) = &self.attention {
            h = a.forward_image(&h, &AttnContext::default())?;
        }
        Ok(self.resnets[1].forward(&h, None, 1))
    }
}

#[derive(Debug)]
struct Resample<T> {
    resnets: Vec<ResnetBlock2D>,
    sampler: Option<T>,
}

/// The encoder: image `[B, 3, H, W]` → moments `[B, 2·latent, H/8, W/8]` (before `quant_conv`).
#[derive(Debug)]
pub struct Encoder {
    pub(crate) conv_in: Conv2d,
    down_blocks: Vec<Resample<Downsample2D>>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(b: &Builder, c: &AutoencoderKLConfig) -> Self {
        let ch = &c.block_out_channels;
        let g = c.norm_num_groups;
        let mut out_c = ch[0];
        let down_blocks = (0..ch.len())
            .map(|i| {
                let in_c = out_c;
                out_c = ch[i];
                let bb = b.sub("down_blocks").sub(i);
                Resample {
                    resnets: (0..c.layers_per_block)
                        .map(|j| {
                            ResnetBlock2D::new(
                                &bb.sub("resnets").sub(j),
                                if j == 0 { in_c } else { out_c },
                                out_c,
                                None,
                                g,
                                EPS,
                                1.0,
                            )
                        })
                        .collect(),
                    sampler: (i + 1 < ch.len()).then(|| Downsample2D::new(&bb.sub("downsamplers").sub(0), out_c, 0)),
                }
            })
            .collect();
        let last = *ch.last().unwrap_or(&64);
        Encoder {
            conv_in: Conv2d::new(&b.sub("conv_in"), c.in_channels, ch[0], 3, 1, 1),
            down_blocks,
            mid_block: VaeMidBlock::new(&b.sub("mid_block"), last, g, c.mid_block_add_attention),
            conv_norm_out: GroupNorm::new(&b.sub("conv_norm_out"), g, last, EPS),
            conv_out: Conv2d::new(&b.sub("conv_out"), last, 2 * c.latent_channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x);
        for block in &self.down_blocks {
            for r in &block.resnets {
                h = r.forward(&h, None, 1);
            }
            if let Some(d) = &block.sampler {
                h = d.forward(&h);
            }
        }
        h = self.mid_block.forward(&h)?;
        Ok(self.conv_out.forward(&silu(&self.conv_norm_out.forward(&h))))
    }
}

/// The decoder: latents `[B, latent, h, w]` (after `post_quant_conv`) → image `[B, 3, 8h, 8w]`.
#[derive(Debug)]
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<Resample<Upsample2D>>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(b: &Builder, c: &AutoencoderKLConfig) -> Self {
        let rev: Vec<i64> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let mut out_c = rev[0];
        let up_blocks = (0..rev.len())
            .map(|i| {
                let in_c = out_c;
                out_c = rev[i];
                let bb = b.sub("up_blocks").sub(i);
                Resample {
                    resnets: (0..c.layers_per_block + 1)
                        .map(|j| {
                            ResnetBlock2D::new(
                                &bb.sub("resnets").sub(j),
                                if j == 0 { in_c } else { out_c },
                                out_c,
                                None,
                                g,
                                EPS,
                                1.0,
                            )
                        })
                        .collect(),
                    sampler: (i + 1 < rev.len()).then(|| Upsample2D::new(&bb.sub("upsamplers").sub(0), out_c)),
                }
            })
            .collect();
        let first = c.block_out_channels[0];
        Decoder {
            conv_in: Conv2d::new(&b.sub("conv_in"), c.latent_channels, rev[0], 3, 1, 1),
            mid_block: VaeMidBlock::new(&b.sub("mid_block"), rev[0], g, c.mid_block_add_attention),
            up_blocks,
            conv_norm_out: GroupNorm::new(&b.sub("conv_norm_out"), g, first, EPS),
            conv_out: Conv2d::new(&b.sub("conv_out"), first, c.out_channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z);
        h = self.mid_block.forward(&h)?;
        for block in &self.up_blocks {
            for r in &block.resnets {
                h = r.forward(&h, None, 1);
            }
            if let Some(u) = &block.sampler {
                h = u.forward(&h, None);
            }
        }
        Ok(self.conv_out.forward(&silu(&self.conv_norm_out.forward(&h))))
    }
}
