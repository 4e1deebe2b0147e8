//! `UNet2DConditionModel` (diffusers `unet_2d_condition.py`) for Stable Diffusion 1.x, and the same
//! network inflated to video: with `frames > 1` in the context, tensors are `[B·F, C, H, W]`, convolutions
//! run per frame, ResNet GroupNorms (and `conv_norm_out`) take statistics over all frames, and each
//! transformer block may carry a temporal stage — Tune-A-Video's `UNet3DConditionModel`, from the same code.

use super::attention::Stages;
use super::attention_processor::{Attention, AttnContext};
use super::checkpoint::{Direct, Exec};
use super::controlnet::ControlResiduals;
use super::embeddings::{timestep_embedding, TimestepEmbedding};
use super::nn::{silu, Builder, Conv2d, GroupNorm};
use super::resnet::group_norm_frames;
use super::t2i_adapter::AdapterFeatures;
use super::transformer_2d::TransformerSpec;
use super::unet_2d_blocks::{DownBlock, MidBlock, ResnetSpec, UpBlock, UpChannels};
use crate::config::unet::{block_kind, BlockKind, UNet2DConditionConfig};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// The names of the stages video modules added to every transformer block (`["temporal"]` for a
    /// Tune-A-Video UNet), empty for an image UNet.
    pub stage_names: Vec<String>,
}

impl UNet2DConditionModel {
    /// Builds the network of `config` under `b` (the `unet` root); `stages` adds the stages of video modules
    /// (temporal, mask-guided attention) to every transformer block.
    pub fn new(b: &Builder, config: &UNet2DConditionConfig, stages: Option<Stages>) -> Result<Self> {
        config.check_supported()?;
        let specs = Specs { config, stages };
        let (down_blocks, mid_block) = build_encoder(b, &specs)?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let (rs, groups, temb_dim) = (specs.resnet(), config.groups(), ch[0] * 4);
        let rev: Vec<i64> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_c = rev[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let prev_out = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let heads_block = n - 1 - i;
            let attn = (block_kind(kind)? == BlockKind::CrossAttn).then(|| specs.transformer(out_c, heads_block));
            let layers = config.layers(heads_block) + 1;
            up_blocks.push(UpBlock::new(
                &b.sub("up_blocks").sub(i),
                UpChannels { in_c, prev_out, out_c },
                layers,
                rs,
                attn.as_ref(),
                i + 1 < n,
            )?);
        }
        let stage_names = mid_block.attentions[0].transformer_blocks[0].stages.iter().map(|s| s.name()).collect();
        Ok(UNet2DConditionModel {
            stage_names,
            config: config.clone(),
            conv_in: Conv2d::new(&b.sub("conv_in"), config.in_channels, ch[0], 3, 1, 1),
            time_embedding: TimestepEmbedding::new(&b.sub("time_embedding"), ch[0], temb_dim),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(&b.sub("conv_norm_out"), groups, ch[0], config.norm_eps),
            conv_out: Conv2d::new(&b.sub("conv_out"), ch[0], config.out_channels, 3, 1, 1),
        })
    }

    /// Predicts noise for `sample` `[N, C, H, W]` (`N = B·F` in video) at `timesteps` (`[N]`, or one value
    /// for all), conditioned on `context` `[N, L, cross_attention_dim]`.
    pub fn forward(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        self.forward_with(&mut Direct, sample, timesteps, context, ctx)
    }

    /// [`UNet2DConditionModel::forward`] over an executor: [`Direct`], or a checkpointing
    /// [`Tape`](super::checkpoint::Tape) that records every ResNet, transformer and resampler as a block.
    pub fn forward_with<'a, E: Exec<'a>>(
        &'a self,
        e: &mut E,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        ctx: &AttnContext,
    ) -> Result<E::V> {
        crate::cpu::settle_threads();
        self.check_inputs(sample, context, ctx)?;
        let temb = time_embed(&self.config, &self.time_embedding, timesteps, sample)?;
        let center = self.config.center_input_sample;
        let input = e.input(sample);
        let x = e.run(
            &[&input],
            Box::new(move |xs, _| {
                let x = if center { &xs[0] * 2.0 - 1.0 } else { xs[0].shallow_clone() };
                Ok(self.conv_in.forward(&x))
            }),
        )?;
        let features = ctx.data.get::<AdapterFeatures>();
        let (mut x, mut skips) = run_encoder(e, &self.down_blocks, &self.mid_block, x, &temb, context, ctx, features)?;
        if let Some(control) = ctx.data.get::<ControlResiduals>() {
            // A ControlNet's (or several, summed) residuals join every skip connection and the mid block's
            // output, as diffusers' `down_block_additional_residuals` / `mid_block_additional_residual`.
            control.check(&skips.iter().map(|s| e.size(s)).collect::<Vec<_>>(), &e.size(&x))?;
            for (skip, r) in skips.iter_mut().zip(&control.down) {
                let r = r.shallow_clone();
                *skip = e.run(&[skip], Box::new(move |xs, _| Ok(&xs[0] + &r)))?;
            }
            let mid = control.mid.shallow_clone();
            x = e.run(&[&x], Box::new(move |xs, _| Ok(&xs[0] + &mid)))?;
        }
        for block in &self.up_blocks {
            let mut own = skips.split_off(skips.len() - block.resnets.len());
            // Upsample to the size of the next skip connection, so odd latent sizes line up.
            let size = skips.last().map(|s| {
                let s = e.size(s);
                [s[2], s[3]]
            });
            x = block.forward(e, &x, &mut own, &temb, context, ctx, size)?;
        }
        let frames = ctx.frames;
        e.run(
            &[&x],
            Box::new(move |xs, _| {
                Ok(self.conv_out.forward(&silu(&group_norm_frames(&self.conv_norm_out, &xs[0], frames))))
            }),
        )
    }

    fn check_inputs(&self, sample: &Tensor, context: &Tensor, ctx: &AttnContext) -> Result<()> {
        let s = sample.size();
        if s.len() != 4 || s[1] != self.config.in_channels {
            return Err(Error::Invalid(format!(
                "UNet input: expected [N, {}, H, W], got {s:?}",
                self.config.in_channels
            )));
        }
        let c = context.size();
        if c.len() != 3 || c[0] != s[0] || c[2] != self.config.cross_dim() {
            return Err(Error::Invalid(format!(
                "UNet text context: expected [{}, L, {}], got {c:?}",
                s[0],
                self.config.cross_dim()
            )));
        }
        if ctx.frames < 1 || s[0] % ctx.frames != 0 {
            return Err(Error::Invalid(format!(
                "UNet input: batch {} is not a multiple of {} frames",
                s[0], ctx.frames
            )));
        }
        if sample.kind() != self.conv_in.weight.kind() {
            return Err(Error::Invalid(format!(
                "UNet input is {:?} but the UNet is {:?}",
                sample.kind(),
                self.conv_in.weight.kind()
            )));
        }
        Ok(())
    }

    /// Every attention layer with its name (`down_blocks.0.attentions.0.transformer_blocks.0.attn1`), in
    /// the order diffusers' `attn_processors` lists them.
    pub fn attention_layers(&self) -> Vec<(String, &Attention)> {
        fn visit<'a>(
            out: &mut Vec<(String, &'a Attention)>,
            prefix: String,
            ts: &'a [super::transformer_2d::Transformer2DModel],
        ) {
            for (j, t) in ts.iter().enumerate() {
                for (k, block) in t.transformer_blocks.iter().enumerate() {
                    let p = format!("{prefix}.attentions.{j}.transformer_blocks.{k}");
                    out.push((format!("{p}.attn1"), &block.attn1));
                    out.push((format!("{p}.attn2"), &block.attn2));
                    for stage in &block.stages {
                        for (name, attn) in stage.attentions() {
                            out.push((format!("{p}.{name}"), attn));
                        }
                    }
                }
            }
        }
        let mut out = vec![];
        for (i, b) in self.down_blocks.iter().enumerate() {
            visit(&mut out, format!("down_blocks.{i}"), &b.attentions);
        }
        for (i, b) in self.up_blocks.iter().enumerate() {
            visit(&mut out, format!("up_blocks.{i}"), &b.attentions);
        }
        visit(&mut out, "mid_block".into(), &self.mid_block.attentions);
        out
    }

    /// The dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.conv_in.weight.kind()
    }
}

/// What the UNet's blocks are built from: the config and the stages video modules add.
pub(crate) struct Specs<'c> {
    pub config: &'c UNet2DConditionConfig,
    pub stages: Option<Stages>,
}

impl Specs<'_> {
    pub fn resnet(&self) -> ResnetSpec {
        let c = self.config;
        ResnetSpec {
            temb: c.block_out_channels[0] * 4,
            groups: c.groups(),
            eps: c.norm_eps,
            output_scale: c.resnet_out_scale_factor,
        }
    }

    /// The transformers of the block whose heads are those of down block `block`.
    pub fn transformer(&self, channels: i64, block: usize) -> TransformerSpec {
        let c = self.config;
        TransformerSpec {
            channels,
            heads: c.heads(block),
            cross_dim: c.cross_dim(),
            groups: c.groups(),
            linear_projection: c.use_linear_projection,
            stages: self.stages.clone(),
        }
    }
}

/// The encoder half the UNet and a ControlNet share: the down blocks and the mid block.
pub(crate) fn build_encoder(b: &Builder, specs: &Specs) -> Result<(Vec<DownBlock>, MidBlock)> {
    let config = specs.config;
    let ch = &config.block_out_channels;
    let n = ch.len();
    let groups = config.groups();
    for (i, &c) in ch.iter().enumerate() {
        if c % groups != 0 || c % config.heads(i) != 0 {
            return Err(Error::Invalid(format!(
                "unet/config.json: block {i} has {c} channels, not divisible by norm_num_groups {groups} and {} heads",
                config.heads(i)
            )));
        }
    }
    let rs = specs.resnet();
    let mut down_blocks = Vec::with_capacity(n);
    let mut out_c = ch[0];
    for (i, kind) in config.down_block_types.iter().enumerate() {
        let in_c = out_c;
        out_c = ch[i];
        let attn = (block_kind(kind)? == BlockKind::CrossAttn).then(|| specs.transformer(out_c, i));
        let down = (i + 1 < n).then_some(config.downsample_padding);
        down_blocks.push(DownBlock::new(
            &b.sub("down_blocks").sub(i),
            in_c,
            out_c,
            config.layers(i),
            rs,
            attn.as_ref(),
            down,
        )?);
    }
    let mid_rs = ResnetSpec { output_scale: config.mid_block_scale_factor, ..rs };
    let mid_block = MidBlock::new(&b.sub("mid_block"), ch[n - 1], mid_rs, &specs.transformer(ch[n - 1], n - 1))?;
    Ok((down_blocks, mid_block))
}

/// The time embedding of `timesteps` (`[N]`, or one value for all `N` samples of `sample`), in the
/// sample's dtype.
pub(crate) fn time_embed(
    config: &UNet2DConditionConfig,
    embedding: &TimestepEmbedding,
    timesteps: &Tensor,
    sample: &Tensor,
) -> Result<Tensor> {
    let n = sample.size()[0];
    // Timesteps may come from anywhere (a scalar made on the CPU, a scheduler's table): like diffusers,
    // they follow the sample to its device.
    let timesteps = timesteps.to_device(sample.device());
    let t = if timesteps.numel() == 1 { timesteps.reshape([1]).expand([n], false) } else { timesteps.shallow_clone() };
    if t.size() != [n] {
        return Err(Error::Invalid(format!(
            "timesteps: expected one per sample ({n}), got shape {:?}",
            timesteps.size()
        )));
    }
    let t_emb = timestep_embedding(&t, config.block_out_channels[0], config.flip_sin_to_cos, config.freq_shift as f64);
    Ok(embedding.forward(&t_emb.to_kind(sample.kind())))
}

/// Runs the down blocks and the mid block from `x` (the first skip connection). Returns the mid
/// block's output and every skip connection, in order.
pub(crate) fn run_encoder<'a, E: Exec<'a>>(
    e: &mut E,
    down_blocks: &'a [DownBlock],
    mid_block: &'a MidBlock,
    mut x: E::V,
    temb: &Tensor,
    context: &Tensor,
    ctx: &AttnContext,
    features: Option<&AdapterFeatures>,
) -> Result<(E::V, Vec<E::V>)> {
    let mut skips = vec![E::dup(&x)];
    let mut pending = features.map(|f| f.features.as_slice()).unwrap_or_default().iter();
    for block in down_blocks {
        let (h, s) = block.forward(e, &x, temb, context, ctx, pending.next())?;
        x = h;
        skips.extend(s);
    }
    let mut x = mid_block.forward(e, &x, temb, context, ctx)?;
    // A feature left over (SDXL's adapters) joins the mid block's output when it has its shape.
    if let Some(f) = pending.next().filter(|f| f.size() == e.size(&x)) {
        x = super::unet_2d_blocks::add_feature(e, &x, f)?;
    }
    Ok((x, skips))
}
