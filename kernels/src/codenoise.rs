//! Temporal co-denoising of a long clip (Gen-L-Video, and long-video framework Eqs. 18–19): the clip is
//! cut into overlapping windows, each window is denoised as a short clip, and every frame's result is the
//! weighted mean of the windows that cover it.
//!
//! - [`plan`] places windows of `window` frames every `stride` frames and always ends with a window
//!   flush with the clip's end, so every frame is covered (Gen-L-Video's reference leaves the tail
//!   uncovered when `(L − W) mod S ≠ 0`; this does not).
//! - [`window_weights`] gives each position of a window a positive weight: `Uniform` is Eq. 19's plain
//!   mean; `Triangular` and `Gaussian` trust a window's middle more than its edges, which softens seams.
//! - [`merge`] forms the per-frame weighted mean. The weights are normalised per frame, so they sum to 1
//!   for every frame of every plan.
//!
//! Merging the noise predictions of one DDIM step is the same as merging the windows' next latents:
//! the step is affine in the prediction with coefficients shared by every frame.

use crate::error::{KernelError, Result};
use tch::{Kind, Tensor};

/// How a window weighs its frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weighting {
    /// Every frame 1 (Gen-L-Video's mean, Eq. 19).
    Uniform,
    /// `min(i + 1, W − i)`: rising to the middle of the window, falling after it.
    Triangular,
    /// `exp(−(i − c)² / 2σ²)` around the middle `c = (W − 1) / 2`, σ = `sigma` × W.
    Gaussian { sigma: f64 },
}

impl Weighting {
    /// `"uniform"`, `"triangular"`, `"gaussian"` (σ = W / 4) or `"gaussian:S"` (σ = S × W).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            KernelError::Invalid(format!(
                "weights: unknown weighting {s:?}; use \"uniform\", \"triangular\", \"gaussian\" or \"gaussian:S\""
            ))
        };
        match s {
            "uniform" => Ok(Weighting::Uniform),
            "triangular" => Ok(Weighting::Triangular),
            "gaussian" => Ok(Weighting::Gaussian { sigma: 0.25 }),
            _ => {
                let sigma: f64 = s.strip_prefix("gaussian:").ok_or_else(bad)?.parse().map_err(|_| bad())?;
                if !(sigma.is_finite() && sigma > 0.0) {
                    return Err(KernelError::Invalid(format!("weights: gaussian σ must be above 0, got {sigma}")));
                }
                Ok(Weighting::Gaussian { sigma })
            }
        }
    }
}

impl std::fmt::Display for Weighting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weighting::Uniform => write!(f, "uniform"),
            Weighting::Triangular => write!(f, "triangular"),
            Weighting::Gaussian { sigma } => write!(f, "gaussian:{sigma}"),
        }
    }
}

/// One window: frames `start..start + len` of the clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub len: i64,
}

/// Windows of `window` frames every `stride` frames over a clip of `frames`, the last flush with the end.
/// A clip no longer than a window is one window.
pub fn plan(frames: i64, window: i64, stride: i64) -> Result<Vec<Window>> {
    if frames < 1 {
        return Err(KernelError::Invalid(format!("co-denoise: a clip of {frames} frames")));
    }
    if window < 1 {
        return Err(KernelError::Invalid(format!("window must be at least 1 frame, got {window}")));
    }
    if stride < 1 || stride > window {
        return Err(KernelError::Invalid(format!(
            "stride must be between 1 and the window ({window}), got {stride}: a larger stride leaves frames out"
        )));
    }
    if frames <= window {
        return Ok(vec![Window { start: 0, len: frames }]);
    }
    let mut out = vec![];
    let mut start = 0;
    while start + window < frames {
        out.push(Window { start, len: window });
        start += stride;
    }
    out.push(Window { start: frames - window, len: window });
    Ok(out)
}

/// The weight of each of a window's `len` positions, `[len]` (float, all above 0).
pub fn window_weights(weighting: Weighting, len: i64) -> Tensor {
    let v: Vec<f32> = (0..len)
        .map(|i| match weighting {
            Weighting::Uniform => 1.0,
            Weighting::Triangular => (i + 1).min(len - i) as f32,
            Weighting::Gaussian { sigma } => {
                let c = (len - 1) as f64 / 2.0;
                let s = sigma * len as f64;
                (-(i as f64 - c).powi(2) / (2.0 * s * s)).exp().max(1e-6) as f32
            }
        })
        .collect();
    Tensor::from_slice(&v)
}

/// Per frame, the weight each window gives it after normalisation: `[n_windows, frames]`, each column
/// summing to 1 over the windows that cover the frame (0 for the others).
pub fn normalised_weights(windows: &[Window], weighting: Weighting, frames: i64) -> Result<Tensor> {
    let w = Tensor::zeros([windows.len() as i64, frames], (Kind::Float, tch::Device::Cpu));
    for (i, win) in windows.iter().enumerate() {
        if win.start < 0 || win.len < 1 || win.start + win.len > frames {
            return Err(KernelError::Invalid(format!(
                "co-denoise: window {}..{} lies outside a clip of {frames} frames",
                win.start,
                win.start + win.len
            )));
        }
        w.get(i as i64).narrow(0, win.start, win.len).copy_(&window_weights(weighting, win.len));
    }
    let total = w.sum_dim_intlist(0, true, Kind::Float);
    if total.min().double_value(&[]) <= 0.0 {
        return Err(KernelError::Invalid("co-denoise: the windows leave a frame uncovered".into()));
    }
    Ok(w / total)
}

/// Merges the windows' results `parts[i]` `[B, C, len_i, h, w]` into the clip `[B, C, frames, h, w]`:
/// every frame the weighted mean of the windows covering it.
pub fn merge(parts: &[Tensor], windows: &[Window], weighting: Weighting, frames: i64) -> Result<Tensor> {
    if parts.len() != windows.len() || parts.is_empty() {
        return Err(KernelError::Invalid(format!("co-denoise: {} results for {} windows", parts.len(), windows.len())));
    }
    let weights = normalised_weights(windows, weighting, frames)?.to_device(parts[0].device());
    let s = parts[0].size();
    if s.len() != 5 {
        return Err(KernelError::Shape {
            what: "co-denoise window result".into(),
            expected: "[B, C, F, h, w]".into(),
            got: s,
        });
    }
    let out = Tensor::zeros([s[0], s[1], frames, s[3], s[4]], (Kind::Float, parts[0].device()));
    for (i, (p, win)) in parts.iter().zip(windows).enumerate() {
        let ps = p.size();
        if ps.len() != 5 || ps[2] != win.len || ps[0] != s[0] || ps[1] != s[1] || ps[3] != s[3] || ps[4] != s[4] {
            return Err(KernelError::Shape {
                what: format!("co-denoise window {i} result"),
                expected: format!("[{}, {}, {}, {}, {}]", s[0], s[1], win.len, s[3], s[4]),
                got: ps,
            });
        }
        let w = weights.get(i as i64).narrow(0, win.start, win.len).view([1, 1, win.len, 1, 1]);
        let mut dst = out.narrow(2, win.start, win.len);
        dst += p.to_kind(Kind::Float) * w;
    }
    Ok(out.to_kind(parts[0].kind()))
}
