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
