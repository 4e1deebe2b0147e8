//! `vae/config.json` of a diffusers `AutoencoderKL`.

use super::ExtraFields;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

fn d_3() -> i64 {
    3
}
fn d_4() -> i64 {
    4
}
fn d_1() -> i64 {
    1
}
fn d_32() -> i64 {
    32
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_channels() -> Vec<i64> {
    vec![64]
}
fn d_silu() -> String {
    "silu".into()
}
fn d_scale() -> f64 {
    0.18215
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct AutoencoderKLConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "d_3")]
    pub in_channels: i64,
    #[serde(default = "d_3")]
    pub out_channels: i64,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "d_1")]
    pub layers_per_block: i64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_4")]
    pub latent_channels: i64,
    #[serde(default = "d_32")]
    pub norm_num_groups: i64,
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
    #[serde(default = "d_scale")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_true")]
    pub force_upcast: bool,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for AutoencoderKLConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }

    fn validate(&self) -> std::result::Result<(), String> {
        use super::{check_count, check_counts, check_groups, check_positive_float, MAX_WIDTH};
        check_counts("block_out_channels", &self.block_out_channels, MAX_WIDTH)?;
        if self.block_out_channels.len() > 8 {
            return Err(format!("block_out_channels has {} levels; at most 8", self.block_out_channels.len()));
        }
        check_count("layers_per_block", self.layers_per_block, 16)?;
        check_count("in_channels", self.in_channels, 64)?;
        check_count("out_channels", self.out_channels, 64)?;
        check_count("latent_channels", self.latent_channels, 64)?;
        check_groups(self.norm_num_groups, "block_out_channels", &self.block_out_channels)?;
        check_positive_float("scaling_factor", self.scaling_factor)?;
        // SD1.x 0.18215, SDXL 0.13025, SD3 1.5305: a factor far outside turns latents into overflow.
        if !(1e-3..=1e3).contains(&self.scaling_factor) {
            return Err(format!(
                "scaling_factor must lie in [0.001, 1000] (SD1.x uses 0.18215), got {}",
                self.scaling_factor
            ));
        }
        if let Some(s) = self.shift_factor {
            if !s.is_finite() {
                return Err(format!("shift_factor must be finite, got {s}"));
            }
        }
        Ok(())
    }
}

impl AutoencoderKLConfig {
    pub fn check_supported(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::Invalid(format!(
                "vae/config.json: {} down and {} up block types for {n} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
            .or_else(|| self.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D"))
        {
            return Err(Error::Invalid(format!(
                "vae/config.json: block type {t:?} is not an AutoencoderKL block vidtune supports"
            )));
        }
        if self.act_fn != "silu" {
            return Err(Error::Invalid(format!("vae/config.json: act_fn {:?} is not supported (silu)", self.act_fn)));
        }
        Ok(())
    }
}
