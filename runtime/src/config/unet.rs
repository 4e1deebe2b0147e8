//! `unet/config.json` of a diffusers `UNet2DConditionModel` (and Tune-A-Video's `UNet3DConditionModel`,
//! whose config differs only in its block type names).

use super::{ExtraFields, OneOrMany};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

fn d_4() -> i64 {
    4
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<String> {
    ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_channels() -> Vec<i64> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> OneOrMany<i64> {
    OneOrMany::One(2)
}
fn d_one() -> i64 {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_silu() -> String {
    "silu".into()
}
fn d_groups() -> Option<i64> {
    Some(32)
}
fn d_eps() -> f64 {
    1e-5
}
fn d_cross() -> OneOrMany<i64> {
    OneOrMany::One(1280)
}
fn d_heads() -> OneOrMany<i64> {
    OneOrMany::One(8)
}
fn d_tlpb() -> OneOrMany<serde_json::Value> {
    OneOrMany::One(serde_json::Value::from(1))
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}
fn d_3() -> i64 {
    3
}
fn d_false_many() -> OneOrMany<bool> {
    OneOrMany::One(false)
}

/// The fields of `UNet2DConditionModel.__init__`, with its defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
    #[serde(default = "d_4")]
    pub in_channels: i64,
    #[serde(default = "d_4")]
    pub out_channels: i64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: i64,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_false_many")]
    pub only_cross_attention: OneOrMany<bool>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "d_layers")]
    pub layers_per_block: OneOrMany<i64>,
    #[serde(default = "d_one")]
    pub downsample_padding: i64,
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<i64>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_cross")]
    pub cross_attention_dim: OneOrMany<i64>,
    #[serde(default = "d_tlpb")]
    pub transformer_layers_per_block: OneOrMany<serde_json::Value>,
    #[serde(default)]
    pub encoder_hid_dim: Option<i64>,
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    #[serde(default = "d_heads")]
    pub attention_head_dim: OneOrMany<i64>,
    #[serde(default)]
    pub num_attention_heads: Option<OneOrMany<i64>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default = "d_one_f")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<i64>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<i64>,
    #[serde(default = "d_3")]
    pub conv_in_kernel: i64,
    #[serde(default = "d_3")]
    pub conv_out_kernel: i64,
    #[serde(default = "d_default")]
    pub attention_type: String,
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for UNet2DConditionConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }

    fn validate(&self) -> std::result::Result<(), String> {
        use super::{check_count, check_counts, check_groups, check_positive_float, MAX_WIDTH};
        let ch = &self.block_out_channels;
        check_counts("block_out_channels", ch, MAX_WIDTH)?;
        let n = ch.len();
        check_counts("layers_per_block", &self.layers_per_block.expand(n), 16)?;
        check_count("in_channels", self.in_channels, 64)?;
        check_count("out_channels", self.out_channels, 64)?;
        check_counts("cross_attention_dim", &self.cross_attention_dim.expand(1), MAX_WIDTH)?;
        if let Some(g) = self.norm_num_groups {
            check_groups(g, "block_out_channels", ch)?;
        }
        check_positive_float("norm_eps", self.norm_eps)?;
        if !(0..=8).contains(&self.downsample_padding) {
            return Err(format!("downsample_padding must be between 0 and 8, got {}", self.downsample_padding));
        }
        let (field, heads) = match &self.num_attention_heads {
            Some(h) => ("num_attention_heads", h),
            None => ("attention_head_dim", &self.attention_head_dim),
        };
        if let OneOrMany::Many(v) = heads {
            if v.len() != n {
                return Err(format!("{field} has {} values for {n} blocks", v.len()));
            }
        }
        let heads = heads.expand(n);
        check_counts(field, &heads, 1024)?;
        if let Some(i) = (0..n).find(|&i| ch[i] % heads[i] != 0) {
            return Err(format!(
                "block_out_channels[{i}] = {} is not divisible by {field}[{i}] = {} (heads must split the width evenly)",
                ch[i], heads[i]
            ));
        }
        if let Some(size) = &self.sample_size {
            let sizes: Vec<i64> = match size {
                serde_json::Value::Array(a) => a.iter().map(|v| v.as_i64().unwrap_or(0)).collect(),
                v => vec![v.as_i64().unwrap_or(0)],
            };
            check_counts("sample_size", &sizes, 4096)?;
        }
        Ok(())
    }
}

/// The kind of one UNet block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// ResNets only.
    Plain,
    /// ResNets each followed by a spatial transformer.
    CrossAttn,
}

impl UNet2DConditionConfig {
    /// The default configuration (SD1.x's UNet with diffusers' 1280-wide cross-attention default).
    pub fn sd_default() -> Self {
        serde_json::from_str("{}").expect("defaults parse")
    }

    fn refuse(&self, why: String) -> Error {
        Error::Invalid(format!(
            "unet/config.json describes a UNet vidtune cannot run: {why}. vidtune runs Stable Diffusion 1.x-style \
             UNets (SD 1.4/1.5, fine-tunes, 2.x-style variants); SDXL, SD3 and other families are not supported"
        ))
    }

    /// Refuses configurations outside the SD1.x family, naming the field.
    pub fn check_supported(&self) -> Result<()> {
        if let Some(kind) = &self.addition_embed_type {
            let family = if kind == "text_time" { " (an SDXL UNet)" } else { "" };
            return Err(self.refuse(format!("addition_embed_type is {kind:?}{family}")));
        }
        if let Some(kind) = &self.class_embed_type {
            return Err(self.refuse(format!("class_embed_type is {kind:?}")));
        }
        if self.transformer_layers_per_block.expand(1).iter().any(|v| v.as_i64() != Some(1)) {
            return Err(self.refuse("transformer_layers_per_block is not 1 (an SDXL-style UNet)".into()));
        }
        if self.cross_attention_dim.is_many() {
            return Err(self.refuse("cross_attention_dim differs per block".into()));
        }
        let checks: [(bool, &str); 10] = [
            (self.encoder_hid_dim.is_some(), "encoder_hid_dim is set"),
            (self.time_cond_proj_dim.is_some(), "time_cond_proj_dim is set (an LCM-distilled UNet)"),
            (self.dual_cross_attention, "dual_cross_attention is on"),
            (self.attention_type != "default", "attention_type is not \"default\""),
            (self.resnet_time_scale_shift != "default", "resnet_time_scale_shift is not \"default\""),
            (self.time_embedding_type != "positional", "time_embedding_type is not \"positional\""),
            (self.conv_in_kernel != 3 || self.conv_out_kernel != 3, "conv kernels are not 3x3"),
            (self.act_fn != "silu", "act_fn is not \"silu\""),
            (
                self.mid_block_type.as_deref().is_none_or(|m| !m.starts_with("UNetMidBlock")),
                "it has no cross-attention mid block",
            ),
            (
                self.time_embedding_dim.is_some()
                    || self.timestep_post_act.is_some()
                    || self.time_embedding_act_fn.is_some(),
                "its time embedding is customised",
            ),
        ];
        if let Some((_, why)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(self.refuse(why.to_string()));
        }
        if self.only_cross_attention.expand(self.down_block_types.len()).iter().any(|b| *b) {
            return Err(self.refuse("only_cross_attention is on".into()));
        }
        let n = self.block_out_channels.len();
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::Invalid(format!(
                "unet/config.json: {} down blocks and {} up blocks for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        for t in self.down_block_types.iter().chain(&self.up_block_types) {
            block_kind(t)?;
        }
        if self.norm_num_groups.is_none() {
            return Err(self.refuse("norm_num_groups is null".into()));
        }
        Ok(())
    }

    /// Whether the block types are Tune-A-Video's 3-D ones (`CrossAttnDownBlock3D`, …).
    pub fn is_3d(&self) -> bool {
        self.down_block_types.iter().any(|t| t.ends_with("3D"))
    }

    pub fn groups(&self) -> i64 {
        self.norm_num_groups.unwrap_or(32)
    }

    pub fn layers(&self, block: usize) -> i64 {
        self.layers_per_block.get(block).unwrap_or(2)
    }

    pub fn cross_dim(&self) -> i64 {
        self.cross_attention_dim.get(0).unwrap_or(1280)
    }

    /// Attention heads of down block `i` (diffusers' SD1.x quirk: `attention_head_dim` is the number of
    /// heads unless `num_attention_heads` is given).
    pub fn heads(&self, block: usize) -> i64 {
        match &self.num_attention_heads {
            Some(h) => h.get(block),
            None => self.attention_head_dim.get(block),
        }
        .unwrap_or(8)
    }
}

/// The kind of a down/up block type name (2-D or Tune-A-Video 3-D).
pub fn block_kind(name: &str) -> Result<BlockKind> {
    match name {
        "DownBlock2D" | "UpBlock2D" | "DownBlock3D" | "UpBlock3D" => Ok(BlockKind::Plain),
        "CrossAttnDownBlock2D" | "CrossAttnUpBlock2D" | "CrossAttnDownBlock3D" | "CrossAttnUpBlock3D" => {
            Ok(BlockKind::CrossAttn)
        }
        other => Err(Error::Invalid(format!(
            "unet/config.json: block type {other:?} is not supported (expected DownBlock2D, CrossAttnDownBlock2D, \
             UpBlock2D, CrossAttnUpBlock2D or their Tune-A-Video 3D forms)"
        ))),
    }
}
