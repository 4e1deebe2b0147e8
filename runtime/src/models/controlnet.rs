//! `ControlNetModel` (diffusers `controlnet.py`): a copy of the UNet's encoder that reads a control image
//! (edges, depth, a segmentation map, a pose) through a small conv stack, and returns one residual per
//! skip connection and one for the mid block, each through a zero-initialised 1×1 convolution. The UNet
//! adds them ([`ControlResiduals`] in its call data).

use super::attention_processor::AttnContext;
use super::checkpoint::Direct;
use super::embeddings::TimestepEmbedding;
use super::nn::{silu, Builder, Conv2d};
use super::unet_2d_blocks::{DownBlock, MidBlock};
use super::unet_2d_condition::{build_encoder, run_encoder, time_embed, Specs};
use crate::config::ControlNetConfig;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// `ControlNetConditioningEmbedding`: conv, then pairs of (conv, stride-2 conv) down to the latents' size,
/// then a zero-initialised conv to the UNet's first width.
#[derive(Debug)]
struct CondEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl CondEmbedding {
    fn new(b: &Builder, in_c: i64, widths: &[i64], out_c: i64) -> Self {
        let mut blocks = vec![];
        for pair in widths.windows(2) {
            blocks.push(Conv2d::new(&b.sub("blocks").sub(blocks.len()), pair[0], pair[0], 3, 1, 1));
            blocks.push(Conv2d::new(&b.sub("blocks").sub(blocks.len()), pair[0], pair[1], 3, 2, 1));
        }
        CondEmbedding {
            conv_in: Conv2d::new(&b.sub("conv_in"), in_c, widths[0], 3, 1, 1),
            blocks,
            conv_out: Conv2d::new(&b.sub("conv_out"), widths[widths.len() - 1], out_c, 3, 1, 1),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = silu(&self.conv_in.forward(x));
        for block in &self.blocks {
            h = silu(&block.forward(&h));
        }
        self.conv_out.forward(&h)
    }
}

/// What ControlNets add to one UNet call: a residual per skip connection (in the order the down pass
/// makes them) and one for the mid block's output.
#[derive(Debug)]
pub struct ControlResiduals {
    pub down: Vec<Tensor>,
    pub mid: Tensor,
}

impl ControlResiduals {
    /// The sum of two ControlNets' residuals (MultiControlNet).
    pub fn plus(self, other: ControlResiduals) -> Result<ControlResiduals> {
        let sizes: Vec<Vec<i64>> = self.down.iter().map(Tensor::size).collect();
        other.check(&sizes, &self.mid.size())?;
        Ok(ControlResiduals {
            down: self.down.iter().zip(&other.down).map(|(a, b)| a + b).collect(),
            mid: &self.mid + &other.mid,
        })
    }

    /// Checks the residuals against the skip connections' and the mid block's sizes.
    pub fn check(&self, skips: &[Vec<i64>], mid: &[i64]) -> Result<()> {
        let another = "(a ControlNet made for another base model: its block widths and layers must be the UNet's)";
        if self.down.len() != skips.len() {
            return Err(Error::Invalid(format!(
                "control: {} down residuals for a UNet with {} skip connections {another}",
                self.down.len(),
                skips.len()
            )));
        }
        for (i, (r, s)) in self.down.iter().zip(skips).enumerate() {
            if r.size() != *s {
                return Err(Error::Invalid(format!(
                    "control: residual {i} is {:?} but the UNet's skip connection is {s:?} {another}",
                    r.size()
                )));
            }
        }
        if self.mid.size() != mid {
            return Err(Error::Invalid(format!(
                "control: the mid residual is {:?} but the UNet's mid block gives {mid:?} {another}",
                self.mid.size()
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct ControlNetModel {
    pub config: ControlNetConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    cond_embedding: CondEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    controlnet_down_blocks: Vec<Conv2d>,
    controlnet_mid_block: Conv2d,
}

impl ControlNetModel {
    /// Builds the network of `config` under `b` (the root of the ControlNet's weights).
    pub fn new(b: &Builder, config: &ControlNetConfig) -> Result<Self> {
        config.check_supported()?;
        let unet = config.encoder_config();
        let specs = Specs { config: &unet, stages: None };
        let (down_blocks, mid_block) = build_encoder(b, &specs)?;
        let ch = &unet.block_out_channels;
        let n = ch.len();
        // One zero convolution per skip connection: conv_in's output, each layer's, each downsampler's.
        let mut widths = vec![ch[0]];
        for (i, &c) in ch.iter().enumerate() {
            widths.extend(std::iter::repeat_n(c, unet.layers(i) as usize));
            if i + 1 < n {
                widths.push(c);
            }
        }
        let zero = b.sub("controlnet_down_blocks");
        let controlnet_down_blocks =
            widths.iter().enumerate().map(|(i, &c)| Conv2d::new(&zero.sub(i), c, c, 1, 1, 0)).collect();
        Ok(ControlNetModel {
            conv_in: Conv2d::new(&b.sub("conv_in"), unet.in_channels, ch[0], 3, 1, 1),
            time_embedding: TimestepEmbedding::new(&b.sub("time_embedding"), ch[0], ch[0] * 4),
            cond_embedding: CondEmbedding::new(
                &b.sub("controlnet_cond_embedding"),
                config.conditioning_channels,
                &config.conditioning_embedding_out_channels,
                ch[0],
            ),
            down_blocks,
            mid_block,
            controlnet_down_blocks,
            controlnet_mid_block: Conv2d::new(&b.sub("controlnet_mid_block"), ch[n - 1], ch[n - 1], 1, 1, 0),
            config: config.clone(),
        })
    }

    /// The residuals for `sample` `[N, C, h, w]` at `timesteps` under `context` `[N, L, D]`, given the
    /// control `image` `[N, channels, h·s, w·s]` in [0, 1] (`s`: [`ControlNetConfig::downscale`]), scaled
    /// by `scale`. In `guess_mode` the residuals grow from 0.1 × `scale` at the first skip connection to
    /// `scale` at the mid block (diffusers' log-spaced scales, for a ControlNet without text guidance).
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        image: &Tensor,
        scale: f64,
        guess_mode: bool,
    ) -> Result<ControlResiduals> {
        crate::cpu::settle_threads();
        self.check_inputs(sample, context, image)?;
        let unet = &self.config.unet;
        let temb = time_embed(unet, &self.time_embedding, timesteps, sample)?;
        let image = image.to_kind(sample.kind());
        let image = if self.config.controlnet_conditioning_channel_order == "bgr" { image.flip([1]) } else { image };
        let x = self.conv_in.forward(sample) + self.cond_embedding.forward(&image);
        let ctx = AttnContext::default();
        let (mid, skips) = run_encoder(&mut Direct, &self.down_blocks, &self.mid_block, x, &temb, context, &ctx, None)?;
        let n = skips.len();
        let scales: Vec<f64> = if guess_mode && !self.config.global_pool_conditions {
            (0..=n).map(|i| 10f64.powf(-1.0 + i as f64 / n as f64) * scale).collect()
        } else {
            vec![scale; n + 1]
        };
        let pool = |x: Tensor| {
            if self.config.global_pool_conditions {
                x.mean_dim([2i64, 3].as_slice(), true, x.kind())
            } else {
                x
            }
        };
        let down = skips
            .iter()
            .zip(&self.controlnet_down_blocks)
            .zip(&scales)
            .map(|((s, conv), k)| pool(conv.forward(s) * *k))
            .collect();
        let mid = pool(self.controlnet_mid_block.forward(&mid) * scales[n]);
        Ok(ControlResiduals { down, mid })
    }

    fn check_inputs(&self, sample: &Tensor, context: &Tensor, image: &Tensor) -> Result<()> {
        let unet = &self.config.unet;
        let s = sample.size();
        if s.len() != 4 || s[1] != unet.in_channels {
            return Err(Error::Invalid(format!(
                "ControlNet input: expected [N, {}, h, w], got {s:?}",
                unet.in_channels
            )));
        }
        let c = context.size();
        if c.len() != 3 || c[0] != s[0] || c[2] != unet.cross_dim() {
            return Err(Error::Invalid(format!(
                "ControlNet text: expected [{}, L, {}], got {c:?} (a ControlNet for a base model with {}-wide text \
                 embeddings)",
                s[0],
                unet.cross_dim(),
                unet.cross_dim()
            )));
        }
        let k = self.config.downscale();
        let want = [s[0], self.config.conditioning_channels, s[2] * k, s[3] * k];
        if image.size() != want {
            return Err(Error::Invalid(format!(
                "control image: expected {want:?} ({} channels at {}× the latents' {}x{}), got {:?}",
                want[1],
                k,
                s[3],
                s[2],
                image.size()
            )));
        }
        if sample.kind() != self.kind() {
            return Err(Error::Invalid(format!(
                "ControlNet input is {:?} but the ControlNet is {:?}",
                sample.kind(),
                self.kind()
            )));
        }
        Ok(())
    }

    /// The dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.conv_in.weight.kind()
    }
}
