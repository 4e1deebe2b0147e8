//! `config.json` of a diffusers `T2IAdapter`.

use super::ExtraFields;
use serde::Deserialize;
use std::collections::BTreeMap;

fn d_3() -> i64 {
    3
}
fn d_channels() -> Vec<i64> {
    vec![320, 640, 1280, 1280]
}
fn d_2() -> i64 {
    2
}
fn d_8() -> i64 {
    8
}
fn d_full() -> String {
    "full_adapter".into()
}

/// The fields of `T2IAdapter.__init__`, with its defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct T2IAdapterConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "d_3")]
    pub in_channels: i64,
    #[serde(default = "d_channels")]
    pub channels: Vec<i64>,
    #[serde(default = "d_2")]
    pub num_res_blocks: i64,
    /// The pixel unshuffle's factor: the control image is this many times the latents' size.
    #[serde(default = "d_8")]
    pub downscale_factor: i64,
    /// `"full_adapter"` or `"light_adapter"` (`"full_adapter_xl"` is SDXL's).
    #[serde(default = "d_full")]
    pub adapter_type: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for T2IAdapterConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }

    fn validate(&self) -> std::result::Result<(), String> {
        use super::{check_count, check_counts, MAX_WIDTH};
        check_count("in_channels", self.in_channels, 16)?;
        check_counts("channels", &self.channels, MAX_WIDTH)?;
        check_count("num_res_blocks", self.num_res_blocks, 16)?;
        check_count("downscale_factor", self.downscale_factor, 64)?;
        match self.adapter_type.as_str() {
            "full_adapter" => Ok(()),
            "light_adapter" if self.channels.iter().all(|c| c % 4 == 0) => Ok(()),
            "light_adapter" => {
                Err(format!("a light adapter's channels must be multiples of 4, got {:?}", self.channels))
            }
            "full_adapter_xl" => Err("adapter_type \"full_adapter_xl\" is an SDXL adapter; vidtune runs SD 1.x".into()),
            other => Err(format!("adapter_type must be \"full_adapter\" or \"light_adapter\", got {other:?}")),
        }
    }
}

impl T2IAdapterConfig {
    /// The widths of the features it makes, one per block, in order.
    pub fn feature_widths(&self) -> Vec<i64> {
        let mut w = self.channels.clone();
        if self.adapter_type == "light_adapter" {
            w.push(*self.channels.last().unwrap_or(&0));
        }
        w
    }
}
