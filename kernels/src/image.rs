//! Image tensor operations shared by video I/O, previews and the models.
//!
//! Convention: images are float tensors with values in **[−1, 1]**, laid out `[C, H, W]` for one image or
//! `[N, C, H, W]` for a batch (frames of a video). 8-bit pixels map to floats as `x / 127.5 − 1` and back
//! with rounding, which is exact for every byte value.

use crate::error::{expect_dims, KernelError, Result};
use tch::{Kind, Tensor};

/// How a frame is brought to a requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Stretch to the exact size (aspect ratio not kept), as Tune-A-Video's data loader does.
    Resize,
    /// Scale to cover the size, then centre-crop the overflow.
    Crop,
    /// Scale to fit inside the size, then centre it on black bars.
    Pad,
}

impl Fit {
    /// The names scripts use, in the order they are listed in messages.
    pub const NAMES: [&'static str; 3] = ["resize", "crop", "pad"];

    /// Parses `resize`, `crop` or `pad`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "resize" => Ok(Fit::Resize),
            "crop" => Ok(Fit::Crop),
            "pad" => Ok(Fit::Pad),
            other => Err(KernelError::Invalid(format!(
                "unknown fit {other:?}; expected one of \"resize\", \"crop\", \"pad\""
            ))),
        }
    }
}

/// Resizes a batch `[N, C, H, W]` to `height × width` with antialiased bilinear filtering (the
/// `antialias=True` filter of torchvision / PIL for down-scaling; plain bilinear when up-scaling).
pub fn resize(x: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    expect_dims(x, 4, "resize input", "[N, C, H, W]")?;
    if height <= 0 || width <= 0 {
        return Err(KernelError::Invalid(format!("resize to {width}x{height}: sizes must be positive")));
    }
    let (h, w) = (x.size()[2], x.size()[3]);
    if h == height && w == width {
        return Ok(x.shallow_clone());
    }
    let kind = x.kind();
    let y = x.to_kind(Kind::Float).f_internal_upsample_bilinear2d_aa([height, width], false, None, None)?;
    Ok(y.to_kind(kind))
}

/// Brings a batch `[N, C, H, W]` to exactly `height × width` following `fit`. Padding uses `pad_value`
/// (−1 is black in the [−1, 1] convention).
pub fn fit(x: &Tensor, height: i64, width: i64, fit: Fit, pad_value: f64) -> Result<Tensor> {
    expect_dims(x, 4, "fit input", "[N, C, H, W]")?;
    let (h, w) = (x.size()[2] as f64, x.size()[3] as f64);
    match fit {
        Fit::Resize => resize(x, height, width),
        Fit::Crop => {
            let scale = (height as f64 / h).max(width as f64 / w);
            let (sh, sw) = (((h * scale).round() as i64).max(height), ((w * scale).round() as i64).max(width));
            let y = resize(x, sh, sw)?;
            let (top, left) = ((sh - height) / 2, (sw - width) / 2);
            Ok(y.narrow(2, top, height).narrow(3, left, width))
        }
        Fit::Pad => {
            let scale = (height as f64 / h).min(width as f64 / w);
            let (sh, sw) =
                (((h * scale).round() as i64).clamp(1, height), ((w * scale).round() as i64).clamp(1, width));
            let y = resize(x, sh, sw)?;
            let (top, left) = ((height - sh) / 2, (width - sw) / 2);
            let size = x.size();
            let out = Tensor::full([size[0], size[1], height, width], pad_value, (x.kind(), x.device()));
            out.narrow(2, top, sh).narrow(3, left, sw).copy_(&y);
            Ok(out)
        }
    }
}

/// Converts interleaved 8-bit RGB (`H × W × 3`, row-major) into a `[3, H, W]` float tensor in [−1, 1].
pub fn from_rgb8(pixels: &[u8], height: i64, width: i64) -> Result<Tensor> {
    let expected = (height * width * 3) as usize;
    if pixels.len() != expected {
        return Err(KernelError::Invalid(format!(
            "{width}x{height} RGB image needs {expected} bytes, got {}",
            pixels.len()
        )));
    }
    Ok(Tensor::from_slice(pixels).view([height, width, 3]).permute([2, 0, 1]).to_kind(Kind::Float) / 127.5 - 1.0)
}

/// Quantises a `[3, H, W]` (or `[N, 3, H, W]`) float image in [−1, 1] to 8-bit, `[.., H, W, 3]` layout.
pub fn to_rgb8_tensor(x: &Tensor) -> Result<Tensor> {
    let dims = x.dim();
    if dims != 3 && dims != 4 {
        return Err(KernelError::Shape {
            what: "image".into(),
            expected: "[3, H, W] or [N, 3, H, W]".into(),
            got: x.size(),
        });
    }
    let perm: &[i64] = if dims == 3 { &[1, 2, 0] } else { &[0, 2, 3, 1] };
    Ok(((x.to_kind(Kind::Float).to_device(tch::Device::Cpu) + 1.0) * 127.5)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .permute(perm)
        .contiguous())
}

/// Quantises a `[3, H, W]` float image in [−1, 1] to interleaved 8-bit RGB bytes.
pub fn to_rgb8(x: &Tensor) -> Result<Vec<u8>> {
    expect_dims(x, 3, "image", "[3, H, W]")?;
    let t = to_rgb8_tensor(x)?;
    Ok(Vec::<u8>::try_from(t.flatten(0, -1))?)
}

/// Lays out `[N, C, H, W]` images as a contact sheet with `cols` columns and a `gap`-pixel border filled
/// with `fill`. Returns `[C, H', W']`.
pub fn grid(x: &Tensor, cols: i64, gap: i64, fill: f64) -> Result<Tensor> {
    expect_dims(x, 4, "grid input", "[N, C, H, W]")?;
    let size = x.size();
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    if n == 0 {
        return Err(KernelError::Invalid("grid of zero images".into()));
    }
    if cols <= 0 {
        return Err(KernelError::Invalid(format!("grid columns must be positive, got {cols}")));
    }
    let cols = cols.min(n);
    let rows = (n + cols - 1) / cols;
    let out = Tensor::full([c, rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap], fill, (x.kind(), x.device()));
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        out.narrow(1, gap + r * (h + gap), h).narrow(2, gap + col * (w + gap), w).copy_(&x.get(i));
    }
    Ok(out)
}

/// Peak signal-to-noise ratio in dB between two images in [−1, 1] (peak-to-peak range 2).
pub fn psnr(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.size() != b.size() {
        return Err(KernelError::Invalid(format!("psnr of shapes {:?} and {:?}", a.size(), b.size())));
    }
    let mse = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).square().mean(Kind::Double).double_value(&[]);
    Ok(if mse == 0.0 { f64::INFINITY } else { 10.0 * (4.0 / mse).log10() })
}
