//! CLIP's vision transformer (transformers `modeling_clip.py`: `CLIPVisionTransformer`): patch embedding,
//! class token, position embedding, pre-LayerNorm, encoder, post-LayerNorm of the class token.

use super::clip_text::ClipEncoderLayer;
use super::nn::{Builder, Conv2d, Embedding, LayerNorm};
use crate::config::clip::ClipVisionConfig;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};
use vidtune_kernels::attention::Backend;

/// `CLIPVisionTransformer` (parameters under `vision_model.`).
#[derive(Debug)]
pub struct ClipVisionTransformer {
    pub config: ClipVisionConfig,
    class_embedding: Tensor,
    patch_embedding: Conv2d,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    layers: Vec<ClipEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl ClipVisionTransformer {
    pub fn new(b: &Builder, config: &ClipVisionConfig) -> Result<Self> {
        let v = b.sub("vision_model");
        let e = v.sub("embeddings");
        let d = config.hidden_size;
        let patches = (config.image_size / config.patch_size).pow(2);
        let patch_embedding = Conv2d::new_no_bias(
            &e.sub("patch_embedding"),
            config.num_channels,
            d,
            config.patch_size,
            config.patch_size,
            0,
        );
        let act = config.activation()?;
        Ok(ClipVisionTransformer {
            config: config.clone(),
            class_embedding: e.param("class_embedding", &[d], tch::nn::Init::Randn { mean: 0.0, stdev: 1.0 }),
            patch_embedding,
            position_embedding: Embedding::new(&e.sub("position_embedding"), patches + 1, d),
            pre_layrnorm: LayerNorm::new(&v.sub("pre_layrnorm"), d, config.layer_norm_eps),
            layers: (0..config.num_hidden_layers)
                .map(|i| {
                    ClipEncoderLayer::new(
                        &v.sub("encoder").sub("layers").sub(i),
                        d,
                        config.intermediate_size,
                        config.num_attention_heads,
                        config.layer_norm_eps,
                        act,
                    )
                })
                .collect(),
            post_layernorm: LayerNorm::new(&v.sub("post_layernorm"), d, config.layer_norm_eps),
        })
    }

    /// Pixel values `[N, 3, S, S]` (normalised) → the pooled output `[N, hidden]` (post-LayerNorm class token).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        crate::cpu::settle_threads();
        let s = pixels.size();
        let size = self.config.image_size;
        if s.len() != 4 || s[1] != self.config.num_channels || s[2] != size || s[3] != size {
            return Err(Error::Invalid(format!(
                "CLIP vision input: expected [N, {}, {size}, {size}], got {s:?}",
                self.config.num_channels
            )));
        }
        let n = s[0];
        let patches = self.patch_embedding.forward(&pixels.to_kind(self.kind())).flatten(2, -1).transpose(1, 2);
        let cls = self.class_embedding.view([1, 1, -1]).expand([n, 1, -1], false);
        let positions = Tensor::arange(patches.size()[1] + 1, (Kind::Int64, pixels.device())).unsqueeze(0);
        let mut h = Tensor::cat(&[cls, patches], 1) + self.position_embedding.forward(&positions);
        h = self.pre_layrnorm.forward(&h);
        for layer in &self.layers {
            h = layer.forward(&h, false, Backend::Sdpa);
        }
        Ok(self.post_layernorm.forward(&h.select(1, 0)))
    }

    pub fn kind(&self) -> Kind {
        self.class_embedding.kind()
    }
}
