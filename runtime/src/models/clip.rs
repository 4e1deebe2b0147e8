//! A CLIP model (transformers `CLIPModel`): the text and vision towers with their projections, the
//! tokenizer, and the image preprocessing of `CLIPImageProcessor`. Built from tensors (`crate::load` reads
//! a transformers folder or a Hugging Face cache id); used to score edits.

use super::clip_text::ClipTextTransformer;
use super::clip_vision::ClipVisionTransformer;
use super::nn::{Builder, InitMode, Linear};
use super::tokenizer::ClipTokenizer;
use crate::config::clip::ClipConfig;
use crate::config::ExtraFields;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use vidtune_kernels::pil::{resize_u8, Filter};

fn d_mean() -> Vec<f64> {
    vec![0.48145466, 0.4578275, 0.40821073]
}
fn d_std() -> Vec<f64> {
    vec![0.26862954, 0.26130258, 0.27577711]
}
fn d_true() -> bool {
    true
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}

/// `preprocessor_config.json` of a `CLIPImageProcessor` (defaults: OpenAI CLIP's).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipImageProcessorConfig {
    #[serde(default)]
    pub size: Option<serde_json::Value>,
    #[serde(default)]
    pub crop_size: Option<serde_json::Value>,
    #[serde(default = "d_mean")]
    pub image_mean: Vec<f64>,
    #[serde(default = "d_std")]
    pub image_std: Vec<f64>,
    #[serde(default = "d_true")]
    pub do_center_crop: bool,
    #[serde(default = "d_true")]
    pub do_resize: bool,
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for ClipImageProcessorConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }
}

impl ClipImageProcessorConfig {
    pub fn default_for(image_size: i64) -> Self {
        let mut c: Self = serde_json::from_str("{}").expect("defaults parse");
        c.size = Some(serde_json::json!({"shortest_edge": image_size}));
        c.crop_size = Some(serde_json::json!({"height": image_size, "width": image_size}));
        c
    }

    fn shortest_edge(&self, fallback: i64) -> i64 {
        match &self.size {
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(fallback),
            Some(v) => v.get("shortest_edge").and_then(|x| x.as_i64()).unwrap_or(fallback),
            None => fallback,
        }
    }

    fn crop(&self, fallback: i64) -> (i64, i64) {
        match &self.crop_size {
            Some(serde_json::Value::Number(n)) => {
                let s = n.as_i64().unwrap_or(fallback);
                (s, s)
            }
            Some(v) => (
                v.get("height").and_then(|x| x.as_i64()).unwrap_or(fallback),
                v.get("width").and_then(|x| x.as_i64()).unwrap_or(fallback),
            ),
            None => (fallback, fallback),
        }
    }

    /// One 8-bit RGB image (`h × w × 3`) → pixel values `[3, S, S]` as `CLIPImageProcessor` (PIL backend)
    /// computes them: shortest side to `size` with Pillow's bicubic, centre crop, rescale, normalise.
    pub fn preprocess(&self, rgb: &[u8], width: usize, height: usize, image_size: i64) -> Result<Tensor> {
        let (mut w, mut h, mut px) = (width, height, rgb.to_vec());
        if self.do_resize {
            let edge = self.shortest_edge(image_size) as usize;
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            let new_long = (edge as f64 * long as f64 / short as f64) as usize;
            let (nw, nh) = if w <= h { (edge, new_long) } else { (new_long, edge) };
            if (nw, nh) != (w, h) {
                px = resize_u8(&px, w, h, 3, nw, nh, Filter::Bicubic);
                (w, h) = (nw, nh);
            }
        }
        let mut img = Tensor::from_slice(&px).view([h as i64, w as i64, 3]).permute([2, 0, 1]);
        if self.do_center_crop {
            let (ch, cw) = self.crop(image_size);
            if ch > h as i64 || cw > w as i64 {
                return Err(Error::Invalid(format!("image {w}x{h} is smaller than the CLIP crop {cw}x{ch}")));
            }
            let (top, left) = ((h as i64 - ch) / 2, (w as i64 - cw) / 2);
            img = img.narrow(1, top, ch).narrow(2, left, cw);
        }
        let scaled = (img.to_kind(Kind::Double) * self.rescale_factor).to_kind(Kind::Float);
        let mean = Tensor::from_slice(&self.image_mean).to_kind(Kind::Float).view([3, 1, 1]);
        let std = Tensor::from_slice(&self.image_std).to_kind(Kind::Float).view([3, 1, 1]);
        Ok((scaled - mean) / std)
    }
}

/// A CLIP model with its tokenizer and preprocessing.
pub struct ClipModel {
    pub config: ClipConfig,
    pub text: ClipTextTransformer,
    pub vision: ClipVisionTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    pub tokenizer: ClipTokenizer,
    pub processor: ClipImageProcessorConfig,
    pub vars: VarStore,
    pub device: Device,
    pub source: String,
    pub identity: String,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary())
    }
}

impl ClipModel {
    /// Builds the network of `config` under `b` (random in `Random` mode).
    fn build(b: &Builder, config: &ClipConfig) -> Result<(ClipTextTransformer, ClipVisionTransformer, Linear, Linear)> {
        config.check_supported()?;
        let p = config.projection_dim;
        let text = ClipTextTransformer::new(b, &config.text_config)?;
        let vision = ClipVisionTransformer::new(b, &config.vision_config)?;
        let visual_projection = Linear::new(&b.sub("visual_projection"), config.vision_config.hidden_size, p, false);
        let text_projection = Linear::new(&b.sub("text_projection"), config.text_config.hidden_size, p, false);
        let _ = b.param("logit_scale", &[], tch::nn::Init::Const(2.6592));
        Ok((text, vision, visual_projection, text_projection))
    }

    /// The network of `config` with empty parameters on `device`, to be filled from a weight file
    /// (`source`: where they come from; `identity`: what they compute).
    pub fn empty(
        config: ClipConfig,
        tokenizer: ClipTokenizer,
        processor: ClipImageProcessorConfig,
        device: Device,
        source: &str,
        identity: String,
    ) -> Result<ClipModel> {
        let vars = VarStore::new(device);
        let (text, vision, visual_projection, text_projection) =
            Self::build(&Builder::new(vars.root(), InitMode::Empty), &config)?;
        Ok(ClipModel {
            identity,
            config,
            text,
            vision,
            visual_projection,
            text_projection,
            tokenizer,
            processor,
            vars,
            device,
            source: source.to_string(),
        })
    }

    /// `random:tiny`: a narrow CLIP (2 layers, 32 wide, 32-pixel images) over a byte-level vocabulary, with
    /// random weights — for trying the scoring workflow without weights; its scores mean nothing.
    pub fn random_named(kind: &str) -> Result<ClipModel> {
        if kind != "tiny" {
            return Err(Error::Invalid(format!("unknown random model \"random:{kind}\"; expected \"random:tiny\"")));
        }
        let tokenizer = ClipTokenizer::bytes_only();
        let v = tokenizer.vocab_size() as i64;
        let layers = serde_json::json!({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2});
        let mut text = layers.clone();
        text.as_object_mut().expect("object").extend(
            serde_json::json!({
                "vocab_size": v, "max_position_embeddings": 77,
                "bos_token_id": v - 2, "eos_token_id": v - 1, "pad_token_id": v - 1
            })
            .as_object()
            .expect("object")
            .clone(),
        );
        let mut vision = layers;
        vision
            .as_object_mut()
            .expect("object")
            .extend(serde_json::json!({"image_size": 32, "patch_size": 8}).as_object().expect("object").clone());
        let config: ClipConfig = serde_json::from_value(serde_json::json!({
            "model_type": "clip", "projection_dim": 16, "text_config": text, "vision_config": vision
        }))
        .map_err(|e| Error::Invalid(format!("tiny CLIP config: {e}")))?;
        let mut m = Self::random(&config, tokenizer, 0)?;
        m.source = "random:tiny".into();
        m.identity = "random-clip-tiny".into();
        Ok(m)
    }

    /// A CLIP architecture with random weights (for tests and trying the workflow).
    pub fn random(config: &ClipConfig, tokenizer: ClipTokenizer, seed: u64) -> Result<ClipModel> {
        tch::manual_seed(seed as i64);
        let mut vars = VarStore::new(Device::Cpu);
        let (text, vision, visual_projection, text_projection) =
            Self::build(&Builder::new(vars.root(), InitMode::Random), config)?;
        vars.freeze();
        Ok(ClipModel {
            config: config.clone(),
            text,
            vision,
            visual_projection,
            text_projection,
            tokenizer,
            processor: ClipImageProcessorConfig::default_for(config.vision_config.image_size),
            vars,
            device: Device::Cpu,
            source: format!("random:{seed}"),
            identity: format!("random-clip-{seed}"),
        })
    }

    /// CLIP's similarity logits `[N_images, N_texts]` (cosine similarity times `exp(logit_scale)`), with
    /// gradients: what contrastive training differentiates.
    pub fn logits(&self, pixels: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let img = self.visual_projection.forward(&self.vision.forward(&pixels.to_device(self.device))?);
        let ids = ids.to_device(self.device);
        let hidden = self.text.forward(&ids)?;
        let txt = self.text_projection.forward(&self.text.pooled(&hidden, &ids));
        let unit = |x: &Tensor| x / x.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12);
        let scale = self
            .vars
            .variables()
            .get("logit_scale")
            .map(|t| t.exp())
            .ok_or_else(|| Error::Invalid("this CLIP model has no logit_scale parameter".into()))?;
        Ok(unit(&img).matmul(&unit(&txt).tr()) * scale)
    }

    /// `exp(logit_scale)`: what CLIP multiplies cosine similarities by (100 for OpenAI's models).
    pub fn logit_scale(&self) -> Result<f64> {
        self.vars
            .variables()
            .get("logit_scale")
            .map(|t| t.exp().double_value(&[]))
            .ok_or_else(|| Error::Invalid(format!("{}: this CLIP model has no logit_scale parameter", self.source)))
    }

    /// Image embeddings `[N, projection]` of preprocessed pixels `[N, 3, S, S]` (`get_image_features`).
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        let pooled = tch::no_grad(|| self.vision.forward(&pixels.to_device(self.device)))?;
        Ok(tch::no_grad(|| self.visual_projection.forward(&pooled)))
    }

    /// Text embeddings `[N, projection]` of token ids `[N, L]` (`get_text_features`).
    pub fn text_embeds(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.to_device(self.device);
        let hidden = tch::no_grad(|| self.text.forward(&ids))?;
        let pooled = self.text.pooled(&hidden, &ids);
        Ok(tch::no_grad(|| self.text_projection.forward(&pooled)))
    }

    /// The embedding of a prompt (truncated to 77 tokens with a warning, as transformers does).
    pub fn prompt_embed(&self, prompt: &str) -> Result<Tensor> {
        let enc = self.tokenizer.encode(prompt)?;
        if enc.truncated() {
            eprintln!(
                "warning: prompt truncated to {} tokens (it has {}): {prompt:?}",
                self.tokenizer.max_length, enc.full_len
            );
        }
        // CLIP's text model reads up to max_position_embeddings; SD-style padding to 77 is fine for it.
        let ids = Tensor::from_slice(&enc.ids).view([1, -1]);
        Ok(self.text_embeds(&ids)?.squeeze_dim(0))
    }

    pub fn summary(&self) -> String {
        let v = &self.config.vision_config;
        format!(
            "ClipModel({}; vision {}x{} patches of {}, width {}; text width {}; projection {})",
            self.source,
            v.image_size / v.patch_size,
            v.image_size / v.patch_size,
            v.patch_size,
            v.hidden_size,
            self.config.text_config.hidden_size,
            self.config.projection_dim
        )
    }
}
