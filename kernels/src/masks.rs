//! Mask operations on `[F, 1, H, W]` float masks with values in [0, 1] (binary masks hold 0 and 1).

use crate::error::{expect_dims, KernelError, Result};
use tch::{Kind, Tensor};

fn check(m: &Tensor) -> Result<()> {
    expect_dims(m, 4, "masks", "[F, 1, H, W]")
}

/// Grows binary masks by `r` pixels (square structuring element).
pub fn dilate(m: &Tensor, r: i64) -> Result<Tensor> {
    check(m)?;
    if r <= 0 {
        return Ok(m.gt(0.5).to_kind(Kind::Float));
    }
    Ok(m.gt(0.5).to_kind(Kind::Float).max_pool2d([2 * r + 1, 2 * r + 1], [1, 1], [r, r], [1, 1], false))
}

/// Shrinks binary masks by `r` pixels (pixels outside the frame do not erode).
pub fn erode(m: &Tensor, r: i64) -> Result<Tensor> {
    let inv = m.gt(0.5).logical_not().to_kind(Kind::Float);
    Ok(dilate(&inv, r)?.neg() + 1.0)
}

/// Resizes to `height × width`: area averaging when shrinking (each output value is the fraction of its
/// input area covered, as the models' latent-resolution masks need), bilinear when growing.
pub fn resize(m: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    check(m)?;
    let (h, w) = (m.size()[2], m.size()[3]);
    if height <= 0 || width <= 0 {
        return Err(KernelError::Invalid(format!("mask size must be positive, got {width}x{height}")));
    }
    let x = m.to_kind(Kind::Float);
    Ok(if height <= h && width <= w {
        x.adaptive_avg_pool2d([height, width])
    } else {
        x.upsample_bilinear2d([height, width], false, None, None)
    })
}

/// Per-frame bounding boxes `[x0, y0, x1, y1]` (pixel edges) of binary masks; `None` for empty frames.
pub fn bboxes(m: &Tensor) -> Result<Vec<Option<[i64; 4]>>> {
    check(m)?;
    let f = m.size()[0];
    (0..f)
        .map(|i| {
            let on = m.get(i).squeeze_dim(0).gt(0.5);
            let rows = on.any_dim(1, false);
            let cols = on.any_dim(0, false);
            let ys = rows.nonzero();
            let xs = cols.nonzero();
            if ys.size()[0] == 0 {
                return Ok(None);
            }
            let (y0, y1) = (ys.min().int64_value(&[]), ys.max().int64_value(&[]) + 1);
            let (x0, x1) = (xs.min().int64_value(&[]), xs.max().int64_value(&[]) + 1);
            Ok(Some([x0, y0, x1, y1]))
        })
        .collect()
}
