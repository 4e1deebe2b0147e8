//! `config.json` of a diffusers `ControlNetModel`: the fields of the UNet whose encoder it copies, and
//! those of its conditioning embedding.

use super::{ExtraFields, UNet2DConditionConfig};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

fn d_3() -> i64 {
    3
}
fn d_rgb() -> String {
    "rgb".into()
}
fn d_embedding() -> Vec<i64> {
    vec![16, 32, 96, 256]
}

/// The fields of `ControlNetModel.__init__`, with its defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct ControlNetConfig {
    /// Channels of the control image (3: RGB).
    #[serde(default = "d_3")]
    pub conditioning_channels: i64,
    /// `"rgb"`, or `"bgr"` for ControlNets trained on BGR images (the channels are flipped first).
    #[serde(default = "d_rgb")]
    pub controlnet_conditioning_channel_order: String,
    /// Widths of the conditioning embedding: each after the first halves the control image's size.
    #[serde(default = "d_embedding")]
    pub conditioning_embedding_out_channels: Vec<i64>,
    /// Residuals averaged over space (shuffle ControlNets).
    #[serde(default)]
    pub global_pool_conditions: bool,
    #[serde(flatten)]
    pub unet: UNet2DConditionConfig,
}

impl ExtraFields for ControlNetConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.unet.extra
    }

    fn validate(&self) -> std::result::Result<(), String> {
        use super::{check_count, check_counts, MAX_WIDTH};
        self.unet.validate()?;
        check_count("conditioning_channels", self.conditioning_channels, 16)?;
        check_counts("conditioning_embedding_out_channels", &self.conditioning_embedding_out_channels, MAX_WIDTH)?;
        if self.conditioning_embedding_out_channels.len() > 8 {
            return Err("conditioning_embedding_out_channels has more than 8 widths".into());
        }
        if !matches!(self.controlnet_conditioning_channel_order.as_str(), "rgb" | "bgr") {
            return Err(format!(
                "controlnet_conditioning_channel_order must be \"rgb\" or \"bgr\", got {:?}",
                self.controlnet_conditioning_channel_order
            ));
        }
        Ok(())
    }
}

impl ControlNetConfig {
    /// The UNet configuration the encoder copy is built from: the same fields, with the up blocks that
    /// mirror the down blocks (a ControlNet's config names none).
    pub fn encoder_config(&self) -> UNet2DConditionConfig {
        let mut c = self.unet.clone();
        c.up_block_types = c.down_block_types.iter().rev().map(|t| t.replacen("Down", "Up", 1)).collect();
        c
    }

    /// Refuses ControlNets outside the SD1.x family, naming the field.
    pub fn check_supported(&self) -> Result<()> {
        self.encoder_config()
            .check_supported()
            .map_err(|e| Error::Invalid(e.to_string().replace("unet/config.json", "the ControlNet's config.json")))
    }

    /// Takes the control image's channels, the hint convolutions' widths and the latent channels from a
    /// ControlNet's weights in its authors' layout (`input_hint_block.{0, 2, …}`, `input_blocks.0.0`).
    pub fn read_widths(&mut self, tensors: &crate::weights::TensorMap) {
        let weight = |name: &str| {
            tensors.get(&format!("control_model.{name}.weight")).or_else(|| tensors.get(&format!("{name}.weight")))
        };
        if let Some(w) = weight("input_hint_block.0") {
            self.conditioning_channels = w.size()[1];
        }
        let mut widths = vec![];
        let mut i = 0;
        while let Some(w) = weight(&format!("input_hint_block.{i}")) {
            widths.push(w.size()[0]);
            i += 2;
        }
        // The hint convolutions come in pairs (same width, then stride 2 to the next) after the first; the
        // last one projects to the UNet's width and is not one of them.
        widths.pop();
        let distinct: Vec<i64> = widths.iter().step_by(2).copied().collect();
        if !distinct.is_empty() {
            self.conditioning_embedding_out_channels = distinct;
        }
        if let Some(w) = weight("input_blocks.0.0") {
            self.unet.in_channels = w.size()[1];
        }
    }

    /// How many times smaller than the control image the latents are.
    pub fn downscale(&self) -> i64 {
        1 << (self.conditioning_embedding_out_channels.len() - 1)
    }
}
