//! Timestep embeddings (diffusers `embeddings.py`: `get_timestep_embedding`, `TimestepEmbedding`).

use super::nn::{silu, Builder, Linear};
use tch::{Kind, Tensor};

/// Sinusoidal embedding of `timesteps` `[B]` into `[B, dim]` (DDPM / "Attention is all you need"),
/// following diffusers' `get_timestep_embedding` operation for operation.
pub fn timestep_embedding(timesteps: &Tensor, dim: i64, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Tensor {
    let half = dim / 2;
    let device = timesteps.device();
    let exponent = Tensor::arange(half, (Kind::Float, device)) * (-(10000f64).ln());
    let exponent = exponent / (half as f64 - downscale_freq_shift);
    let freqs = exponent.exp();
    let args = timesteps.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    let mut emb = Tensor::cat(&[args.sin(), args.cos()], -1);
    if flip_sin_to_cos {
        emb = Tensor::cat(&[emb.narrow(1, half, half), emb.narrow(1, 0, half)], -1);
    }
    if dim % 2 == 1 {
        emb = emb.constant_pad_nd([0, 1, 0, 0]);
    }
    emb
}

/// `TimestepEmbedding`: linear → SiLU → linear.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(b: &Builder, in_dim: i64, dim: i64) -> Self {
        TimestepEmbedding {
            linear_1: Linear::new(&b.sub("linear_1"), in_dim, dim, true),
            linear_2: Linear::new(&b.sub("linear_2"), dim, dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.linear_2.forward(&silu(&self.linear_1.forward(x)))
    }
}
