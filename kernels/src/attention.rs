//! Attention kernels: head splitting and scaled dot-product attention with a switchable backend.
//!
//! `Sdpa` calls libtorch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels on
//! CUDA); `Math` computes `softmax(q·kᵀ·scale + mask)·v` explicitly (float32 softmax), the reference the
//! fused path is tested against.

use tch::{Kind, Tensor};

/// Which kernel computes attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    Sdpa,
    Math,
}

/// `[B, L, heads·d]` → `[B, heads, L, d]`.
pub fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let s = x.size();
    x.view([s[0], s[1], heads, s[2] / heads]).transpose(1, 2)
}

/// `[B, heads, L, d]` → `[B, L, heads·d]`.
pub fn merge_heads(x: &Tensor) -> Tensor {
    let s = x.size();
    x.transpose(1, 2).reshape([s[0], s[2], s[1] * s[3]])
}

/// Attention over `[B, heads, Lq, d]` queries and `[B, heads, Lk, d]` keys / values, with an optional
/// additive mask broadcastable to `[B, heads, Lq, Lk]` (or `causal`). `scale` defaults to `1/√d`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: Option<f64>,
    backend: Backend,
) -> Tensor {
    match backend {
        Backend::Sdpa => Tensor::scaled_dot_product_attention(
            q,
            k,
            v,
            mask,
            0.0,
            causal && mask.is_none(),
            scale,
            false,
        ),
        Backend::Math => {
            let d = *q.size().last().unwrap_or(&1);
            let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
            let mut scores = q.matmul(&k.transpose(-2, -1)).to_kind(Kind::Float) * scale;
            if let Some(m) = mask {
                scores = scores + m.to_kind(Kind::Float);
            } else if causal {
                let (lq, lk) = (q.size()[2], k.size()[2]);
                let upper = Tensor::ones([lq, lk], (Kind::Bool, q.device())).triu(1);
                scores = scores.masked_fill(&upper, f64::NEG_INFINITY);
            }
            scores.softmax(-1, Kind::Float).to_kind(v.kind()).matmul(v)
        }
    }
}

/// An additive causal mask `[L, L]` (0 on and below the diagonal, the dtype's lowest value above), as
/// transformers builds it for CLIP's text encoder.
pub fn causal_mask(len: i64, kind: Kind, device: tch::Device) -> Tensor {
    let lowest = match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.389_531_389_251_535e38,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    };
    Tensor::full([len, len], lowest, (kind, device)).triu(1)
}
