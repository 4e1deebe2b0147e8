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

/// Each frame's mask filled over its bounding box (the smallest axis-aligned rectangle holding it);
/// empty frames stay empty.
pub fn boxes(m: &Tensor) -> Result<Tensor> {
    let out = Tensor::zeros_like(m);
    for (i, b) in bboxes(m)?.into_iter().enumerate() {
        if let Some([x0, y0, x1, y1]) = b {
            let _ = out.get(i as i64).narrow(1, y0, y1 - y0).narrow(2, x0, x1 - x0).fill_(1.0);
        }
    }
    Ok(out)
}

/// Per-frame centroids `(row, col)` of binary masks, in pixels; `None` for empty frames.
pub fn centroids(m: &Tensor) -> Result<Vec<Option<(f64, f64)>>> {
    check(m)?;
    let on = m.gt(0.5).to_kind(Kind::Double).squeeze_dim(1);
    let (h, w) = (on.size()[1], on.size()[2]);
    let rows = Tensor::arange(h, (Kind::Double, on.device())).view([1, h, 1]);
    let cols = Tensor::arange(w, (Kind::Double, on.device())).view([1, 1, w]);
    let area = Vec::<f64>::try_from(on.sum_dim_intlist(&[1i64, 2][..], false, Kind::Double))?;
    let ys = Vec::<f64>::try_from((&on * rows).sum_dim_intlist(&[1i64, 2][..], false, Kind::Double))?;
    let xs = Vec::<f64>::try_from((&on * cols).sum_dim_intlist(&[1i64, 2][..], false, Kind::Double))?;
    Ok((0..area.len()).map(|i| (area[i] > 0.0).then(|| (ys[i] / area[i], xs[i] / area[i]))).collect())
}

/// `x` `[…, H, W]` moved `dy` rows down and `dx` columns right; what moves in from outside is 0.
pub fn translate(x: &Tensor, dy: i64, dx: i64) -> Tensor {
    let n = x.dim();
    let (h, w) = (x.size()[n - 2], x.size()[n - 1]);
    let out = x.zeros_like();
    let (hh, ww) = (h - dy.abs(), w - dx.abs());
    if hh <= 0 || ww <= 0 {
        return out;
    }
    let src = x.narrow(n as i64 - 2, (-dy).max(0), hh).narrow(n as i64 - 1, (-dx).max(0), ww);
    out.narrow(n as i64 - 2, dy.max(0), hh).narrow(n as i64 - 1, dx.max(0), ww).copy_(&src);
    out
}
