//! CLIP's text transformer (transformers `modeling_clip.py`: `CLIPTextTransformer`), as Stable Diffusion
//! uses it: token + position embeddings, pre-LayerNorm encoder layers with causal self-attention and a
//! quick-GELU MLP, final LayerNorm. SD conditions on the last hidden state; CLIP scoring uses the pooled
//! end-of-text token.

use super::nn::{Builder, Embedding, LayerNorm, Linear};
use crate::config::clip::{Activation, ClipTextConfig};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};
use vidtune_kernels::attention::{self as katt, Backend};

#[derive(Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
}

impl ClipAttention {
    fn forward(&self, x: &Tensor, causal: bool, backend: Backend) -> Tensor {
        let q = katt::split_heads(&self.q_proj.forward(x), self.heads);
        let k = katt::split_heads(&self.k_proj.forward(x), self.heads);
        let v = katt::split_heads(&self.v_proj.forward(x), self.heads);
        let out = katt::attention(&q.contiguous(), &k.contiguous(), &v.contiguous(), None, causal, None, backend);
        self.out_proj.forward(&katt::merge_heads(&out))
    }
}

/// One pre-LayerNorm encoder layer, shared by CLIP's text and vision towers.
#[derive(Debug)]
pub struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipEncoderLayer {
    pub fn new(b: &Builder, hidden: i64, intermediate: i64, heads: i64, eps: f64, act: Activation) -> Self {
        let a = b.sub("self_attn");
        ClipEncoderLayer {
            layer_norm1: LayerNorm::new(&b.sub("layer_norm1"), hidden, eps),
            self_attn: ClipAttention {
                q_proj: Linear::new(&a.sub("q_proj"), hidden, hidden, true),
                k_proj: Linear::new(&a.sub("k_proj"), hidden, hidden, true),
                v_proj: Linear::new(&a.sub("v_proj"), hidden, hidden, true),
                out_proj: Linear::new(&a.sub("out_proj"), hidden, hidden, true),
                heads,
            },
            layer_norm2: LayerNorm::new(&b.sub("layer_norm2"), hidden, eps),
            fc1: Linear::new(&b.sub("mlp").sub("fc1"), hidden, intermediate, true),
            fc2: Linear::new(&b.sub("mlp").sub("fc2"), intermediate, hidden, true),
            act,
        }
    }

    pub fn forward(&self, x: &Tensor, causal: bool, backend: Backend) -> Tensor {
        let h = self.self_attn.forward(&self.layer_norm1.forward(x), causal, backend) + x;
        let m = self.fc1.forward(&self.layer_norm2.forward(&h));
        let m = match self.act {
            Activation::QuickGelu => &m * (&m * 1.702).sigmoid(),
            Activation::Gelu => m.gelu("none"),
        };
        self.fc2.forward(&m) + h
    }
}

/// `CLIPTextTransformer` (parameters under `text_model.`).
#[derive(Debug)]
pub struct ClipTextTransformer {
    pub config: ClipTextConfig,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
}

impl ClipTextTransformer {
    /// `b` is the model root; parameters go under `text_model.`.
    pub fn new(b: &Builder, config: &ClipTextConfig) -> Result<Self> {
        config.check_supported()?;
        let t = b.sub("text_model");
        let e = t.sub("embeddings");
        let act = config.activation()?;
        Ok(ClipTextTransformer {
            config: config.clone(),
            token_embedding: Embedding::new(&e.sub("token_embedding"), config.vocab_size, config.hidden_size),
            position_embedding: Embedding::new(
                &e.sub("position_embedding"),
                config.max_position_embeddings,
                config.hidden_size,
            ),
            layers: (0..config.num_hidden_layers)
                .map(|i| {
                    ClipEncoderLayer::new(
                        &t.sub("encoder").sub("layers").sub(i),
                        config.hidden_size,
                        config.intermediate_size,
                        config.num_attention_heads,
                        config.layer_norm_eps,
                        act,
                    )
                })
                .collect(),
            final_layer_norm: LayerNorm::new(&t.sub("final_layer_norm"), config.hidden_size, config.layer_norm_eps),
        })
    }

    /// Token ids `[B, L]` (int64) → last hidden state `[B, L, hidden]` (after the final LayerNorm).
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        crate::cpu::settle_threads();
        let s = input_ids.size();
        if s.len() != 2 || s[1] == 0 || s[1] > self.config.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "text encoder input: expected [B, L] token ids with 1 <= L <= {}, got {s:?}",
                self.config.max_position_embeddings
            )));
        }
        let vocab = self.config.vocab_size;
        let (lo, hi) = (input_ids.min().int64_value(&[]), input_ids.max().int64_value(&[]));
        if lo < 0 || hi >= vocab {
            return Err(Error::Invalid(format!("token ids must lie in 0..{vocab}, got {lo}..={hi}")));
        }
        let device = self.token_embedding.weight.device();
        let ids = input_ids.to_device(device).to_kind(Kind::Int64);
        let positions = Tensor::arange(s[1], (Kind::Int64, device)).unsqueeze(0);
        let mut h = self.token_embedding.forward(&ids) + self.position_embedding.forward(&positions);
        for layer in &self.layers {
            h = layer.forward(&h, true, Backend::Sdpa);
        }
        Ok(self.final_layer_norm.forward(&h))
    }

    /// The pooled output: the hidden state at each sequence's end-of-text token (the first `eos_token_id`,
    /// or the largest id for the legacy configs whose `eos_token_id` is 2).
    pub fn pooled(&self, last_hidden: &Tensor, input_ids: &Tensor) -> Tensor {
        let ids = input_ids.to_device(last_hidden.device());
        let positions = if self.config.eos_token_id == 2 {
            ids.argmax(-1, false)
        } else {
            ids.eq(self.config.eos_token_id).to_kind(Kind::Int).argmax(-1, false)
        };
        let batch = Tensor::arange(ids.size()[0], (Kind::Int64, ids.device()));
        last_hidden.index(&[Some(batch), Some(positions)])
    }

    pub fn kind(&self) -> Kind {
        self.token_embedding.weight.kind()
    }

    pub fn device(&self) -> tch::Device {
        self.token_embedding.weight.device()
    }
}
