//! Attention kernels: head splitting and scaled dot-product attention with a switchable backend.
//!
//! `Sdpa` calls libtorch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels on
//! CUDA); `Math` computes `softmax(q·kᵀ·scale + mask)·v` explicitly (float32 softmax), the reference the
//! fused path is tested against; `Auto` (the default) picks one of them by shape (see [`Backend::pick`]).

use tch::{Kind, Tensor};

/// Which kernel computes attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// [`Backend::Math`] where it is the faster kernel, [`Backend::Sdpa`] elsewhere.
    #[default]
    Auto,
    Sdpa,
    Math,
}

impl Backend {
    /// The kernel `Auto` runs for queries `[…, Lq, d]` and keys `[…, Lk, d]`. libtorch's CPU flash kernel
    /// works in blocks of 64+ queries by 512 keys; with few keys (cross-attention's 77 text tokens,
    /// self-attention on the small maps) most of each block is overhead, and the explicit product runs
    /// 1.1–2.1× faster forward and 1.3–2.2× forward + backward in float32 (SD1.x shapes at 128², 2-core
    /// x86). Long key sequences (self-attention on the large maps, where the score matrix would be
    /// large) and short query sequences (temporal attention over 8 frames) stay on the fused kernel, as
    /// does every other device and precision.
    pub fn pick(self, q: &Tensor, k: &Tensor) -> Backend {
        match self {
            Backend::Auto => {
                let (qs, ks) = (q.size(), k.size());
                let lq = qs.get(qs.len().wrapping_sub(2)).copied().unwrap_or(0);
                let lk = ks.get(ks.len().wrapping_sub(2)).copied().unwrap_or(0);
                let cpu_f32 = q.device() == tch::Device::Cpu && q.kind() == Kind::Float;
                if cpu_f32 && lq >= 32 && lk <= 160 {
                    Backend::Math
                } else {
                    Backend::Sdpa
                }
            }
            chosen => chosen,
        }
    }
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
    match backend.pick(q, k) {
        Backend::Auto | Backend::Sdpa => {
            Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, causal && mask.is_none(), scale, false)
        }
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

/// `[B·F, L, C]` → `[B, F, L, C]`.
fn frames_view(x: &Tensor, frames: i64) -> Tensor {
    let s = x.size();
    x.view([s[0] / frames, frames, s[1], s[2]])
}

/// The first frame of each clip: `[B·F, L, C]` → `[B, L, C]` (or `[B·F, L]` → `[B, L]`).
pub fn first_frames(x: &Tensor, frames: i64) -> Tensor {
    let s = x.size();
    let mut shape = vec![s[0] / frames, frames];
    shape.extend_from_slice(&s[1..]);
    x.reshape(shape.as_slice()).select(1, 0)
}

/// Keys / values of sparse-causal attention (Tune-A-Video): for frame `i`, the tokens of frame 0 and of
/// frame `i − 1` (frame 0 uses itself twice). `[B·F, L, C]` → `[B·F, 2L, C]`.
pub fn gather_sparse_causal(kv: &Tensor, frames: i64) -> Tensor {
    gather_sparse_causal_from(kv, frames, &first_frames(kv, frames))
}

/// Sparse-causal keys / values with another first frame: `first` `[B, L, C]` (an anchor frame outside the
/// call, e.g. a long clip's first frame for every window) stands where frame 0's tokens stood; the
/// previous frame is still the call's own. `[B·F, L, C]` → `[B·F, 2L, C]`.
pub fn gather_sparse_causal_from(kv: &Tensor, frames: i64, first: &Tensor) -> Tensor {
    let v = frames_view(kv, frames);
    let first = first.unsqueeze(1).expand([-1, frames, -1, -1], false);
    let prev_idx: Vec<i64> = (0..frames).map(|i| (i - 1).max(0)).collect();
    let prev = v.index_select(1, &Tensor::from_slice(&prev_idx).to_device(kv.device()));
    let s = kv.size();
    Tensor::cat(&[first, prev], 2).reshape([s[0], 2 * s[1], s[2]])
}

/// Keys / values from the first frame only (LAMP). `[B·F, L, C]` → `[B·F, L, C]`.
pub fn gather_first_frame(kv: &Tensor, frames: i64) -> Tensor {
    gather_first_frame_from(&first_frames(kv, frames), frames)
}

/// Keys / values of first-frame attention from a given first frame `first` `[B, L, C]`, for every one of
/// `frames` frames: `[B·F, L, C]`.
pub fn gather_first_frame_from(first: &Tensor, frames: i64) -> Tensor {
    let s = first.size();
    first.unsqueeze(1).expand([-1, frames, -1, -1], false).reshape([s[0] * frames, s[1], s[2]])
}

/// The additive score bias of mask-aware first-frame attention: for frame `i`'s query token `q` and the
/// first frame's key token `k`, `−strength · |m[i, q] − m[0, k]|`, where `m` `[B·F, L]` is each token's
/// share inside the subject. Returns `[B·F, 1, L, L]` (broadcast over heads).
pub fn first_frame_mask_bias(m: &Tensor, frames: i64, strength: f64) -> Tensor {
    first_frame_mask_bias_from(m, frames, &first_frames(m, frames), strength)
}

/// [`first_frame_mask_bias`] against a given first frame's shares `first` `[B, L]`.
pub fn first_frame_mask_bias_from(m: &Tensor, frames: i64, first: &Tensor, strength: f64) -> Tensor {
    let s = m.size();
    let (bf, l) = (s[0], s[1]);
    let first = first.unsqueeze(1).expand([-1, frames, -1], false).reshape([bf, l]);
    let diff = (m.unsqueeze(2) - first.unsqueeze(1)).abs();
    (diff * -strength).unsqueeze(1)
}

/// DenseDiffusion's modulation of cross-attention scores, the mask cross-attention of dynamic mask
/// guidance. `scores` `[N, heads, Lq, Lk]` (pre-softmax), `region` `[N, Lq]` each query token's share
/// inside the subject's masks, `tokens` `[N, Lk]` 1 at the subject's text tokens, `weight` the strength.
/// For subject tokens: inside the region the score moves towards its row's maximum, outside towards its
/// row's minimum, `s + w·(m·(max − s) − (1 − m)·(s − min))`; other tokens keep their scores.
pub fn modulate_scores(scores: &Tensor, region: &Tensor, tokens: &Tensor, weight: f64) -> Tensor {
    let (max, _) = scores.max_dim(-1, true);
    let (min, _) = scores.min_dim(-1, true);
    let m = region.unsqueeze(1).unsqueeze(-1).to_kind(scores.kind());
    let sel = tokens.unsqueeze(1).unsqueeze(1).to_kind(scores.kind());
    let delta = (&m * (&max - scores) - (m.ones_like() - &m) * (scores - &min)) * weight;
    scores + sel * delta
}

/// Keys / values of every frame of the clip, for every frame. `[B·F, L, C]` → `[B·F, F·L, C]`.
pub fn gather_all_frames(kv: &Tensor, frames: i64) -> Tensor {
    let v = frames_view(kv, frames);
    let s = kv.size();
    let all = v.reshape([s[0] / frames, 1, frames * s[1], s[2]]);
    all.expand([-1, frames, -1, -1], false).reshape([s[0], frames * s[1], s[2]])
}

/// Average-pools each frame's tokens `[N, H·W, C]` on its `h × w` grid by `r` per side (a last partial
/// window averages what it covers). Returns `[N, ⌈h/r⌉·⌈w/r⌉, C]`.
pub fn pool_tokens(x: &Tensor, h: i64, w: i64, r: i64) -> Tensor {
    // A ratio beyond the frame pools the whole side into one token.
    let r = r.min(h.min(w)).max(1);
    if r <= 1 {
        return x.shallow_clone();
    }
    let s = x.size();
    let grid = x.transpose(1, 2).reshape([s[0], s[2], h, w]);
    let pooled = grid.avg_pool2d([r, r], [r, r], [0, 0], true, false, None::<i64>);
    let ps = pooled.size();
    pooled.reshape([s[0], s[2], ps[2] * ps[3]]).transpose(1, 2)
}

/// Keys / values of fine-coarse frame attention (EI² FFAM): for frame `i`, its own tokens at full
/// resolution followed by every other frame's tokens pooled by `r` per side. `full` is `[B·F, L, C]`,
/// `coarse` its pooled form `[B·F, L', C]`; returns `[B·F, L + (F − 1)·L', C]`.
pub fn gather_fine_coarse(full: &Tensor, coarse: &Tensor, frames: i64) -> Tensor {
    let s = full.size();
    if frames == 1 {
        return full.shallow_clone();
    }
    let c = frames_view(coarse, frames);
    let cs = coarse.size();
    // others[i] = [j for j in 0..F if j != i]
    let idx: Vec<i64> = (0..frames).flat_map(|i| (0..frames).filter(move |&j| j != i)).collect();
    let others = c.index_select(1, &Tensor::from_slice(&idx).to_device(full.device()));
    let others = others.reshape([s[0] / frames, frames, (frames - 1) * cs[1], cs[2]]).reshape([
        s[0],
        (frames - 1) * cs[1],
        cs[2],
    ]);
    Tensor::cat(&[full.shallow_clone(), others], 1)
}

/// Instance Centering (EI²): subtracts each sequence's mean over time. `x` is `[N, F, C]` (N = spatial
/// positions × clips); no rescaling, so the temporal variance is kept.
pub fn instance_center(x: &Tensor) -> Tensor {
    x - x.mean_dim(1, true, x.kind())
}
