//! `text_encoder/config.json` of a transformers `CLIPTextModel` (and the text part of a `CLIPModel`).

use super::ExtraFields;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

fn d_vocab() -> i64 {
    49408
}
fn d_512() -> i64 {
    512
}
fn d_2048() -> i64 {
    2048
}
fn d_12() -> i64 {
    12
}
fn d_8() -> i64 {
    8
}
fn d_77() -> i64 {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_pad() -> i64 {
    1
}
fn d_bos() -> i64 {
    49406
}
fn d_eos() -> i64 {
    49407
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default = "d_vocab")]
    pub vocab_size: i64,
    #[serde(default = "d_512")]
    pub hidden_size: i64,
    #[serde(default = "d_2048")]
    pub intermediate_size: i64,
    #[serde(default = "d_512")]
    pub projection_dim: i64,
    #[serde(default = "d_12")]
    pub num_hidden_layers: i64,
    #[serde(default = "d_8")]
    pub num_attention_heads: i64,
    #[serde(default = "d_77")]
    pub max_position_embeddings: i64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_pad")]
    pub pad_token_id: i64,
    #[serde(default = "d_bos")]
    pub bos_token_id: i64,
    #[serde(default = "d_eos")]
    pub eos_token_id: i64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for ClipTextConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }

    fn validate(&self) -> std::result::Result<(), String> {
        use super::{check_count, check_positive_float, MAX_WIDTH};
        check_count("vocab_size", self.vocab_size, 10_000_000)?;
        check_count("hidden_size", self.hidden_size, MAX_WIDTH)?;
        check_count("intermediate_size", self.intermediate_size, 4 * MAX_WIDTH)?;
        check_count("projection_dim", self.projection_dim, MAX_WIDTH)?;
        check_count("num_hidden_layers", self.num_hidden_layers, 256)?;
        check_count("num_attention_heads", self.num_attention_heads, 1024)?;
        check_count("max_position_embeddings", self.max_position_embeddings, 65536)?;
        check_positive_float("layer_norm_eps", self.layer_norm_eps)?;
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (field, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if id < 0 || id >= self.vocab_size {
                return Err(format!("{field} {id} is outside the vocabulary (0..{})", self.vocab_size));
            }
        }
        Ok(())
    }
}

/// The activations CLIP text towers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    Gelu,
}

impl ClipTextConfig {
    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Invalid(format!(
                "text_encoder/config.json: hidden_act {other:?} is not supported (quick_gelu or gelu)"
            ))),
        }
    }

    pub fn check_supported(&self) -> Result<()> {
        if let Some(t) = &self.model_type {
            if t != "clip_text_model" && t != "clip" {
                return Err(Error::Invalid(format!(
                    "text_encoder/config.json: model_type {t:?} is not a CLIP text model (SD1.x uses CLIPTextModel)"
                )));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::Invalid(format!(
                "text_encoder/config.json: hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        self.activation().map(|_| ())
    }
}

fn d_768() -> i64 {
    768
}
fn d_3072() -> i64 {
    3072
}
fn d_224() -> i64 {
    224
}
fn d_32() -> i64 {
    32
}
fn d_3() -> i64 {
    3
}

/// `vision_config` of a transformers `CLIPConfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_768")]
    pub hidden_size: i64,
    #[serde(default = "d_3072")]
    pub intermediate_size: i64,
    #[serde(default = "d_12")]
    pub num_hidden_layers: i64,
    #[serde(default = "d_12")]
    pub num_attention_heads: i64,
    #[serde(default = "d_3")]
    pub num_channels: i64,
    #[serde(default = "d_224")]
    pub image_size: i64,
    #[serde(default = "d_32")]
    pub patch_size: i64,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ClipVisionConfig {
    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Invalid(format!("config.json: vision hidden_act {other:?} is not supported"))),
        }
    }
}

fn d_proj() -> i64 {
    512
}

fn empty_object<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_str("{}").expect("defaults parse")
}

/// `config.json` of a transformers `CLIPModel`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "empty_object")]
    pub text_config: ClipTextConfig,
    #[serde(default = "empty_object")]
    pub vision_config: ClipVisionConfig,
    #[serde(default = "d_proj")]
    pub projection_dim: i64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for ClipConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }

    fn validate(&self) -> std::result::Result<(), String> {
        use super::{check_count, check_positive_float, MAX_WIDTH};
        self.text_config.validate().map_err(|e| format!("text_config: {e}"))?;
        let v = &self.vision_config;
        let vision = |e: String| format!("vision_config: {e}");
        check_count("hidden_size", v.hidden_size, MAX_WIDTH).map_err(vision)?;
        check_count("intermediate_size", v.intermediate_size, 4 * MAX_WIDTH).map_err(vision)?;
        check_count("num_hidden_layers", v.num_hidden_layers, 256).map_err(vision)?;
        check_count("num_attention_heads", v.num_attention_heads, 1024).map_err(vision)?;
        check_count("patch_size", v.patch_size, 1024).map_err(vision)?;
        check_count("image_size", v.image_size, 4096).map_err(vision)?;
        check_positive_float("layer_norm_eps", v.layer_norm_eps).map_err(vision)?;
        if v.num_channels != 3 {
            return Err(vision(format!("num_channels must be 3 (RGB), got {}", v.num_channels)));
        }
        if v.hidden_size % v.num_attention_heads != 0 {
            return Err(vision(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                v.hidden_size, v.num_attention_heads
            )));
        }
        if v.patch_size > v.image_size {
            return Err(vision(format!("patch_size {} is larger than image_size {}", v.patch_size, v.image_size)));
        }
        check_count("projection_dim", self.projection_dim, MAX_WIDTH)
    }
}

impl ClipConfig {
    pub fn check_supported(&self) -> Result<()> {
        match self.model_type.as_deref() {
            Some("clip") => {}
            other => {
                return Err(Error::Invalid(format!(
                    "config.json: model_type {other:?} is not a CLIPModel (\"clip\"); score needs a transformers CLIPModel folder \
                     such as openai/clip-vit-large-patch14"
                )))
            }
        }
        self.vision_config.activation()?;
        self.text_config.activation()?;
        Ok(())
    }
}
