//! Pillow's resampling of 8-bit images (`Image.resize`), reproduced exactly: separable convolution with
//! filter support scaled by the reduction factor, coefficients normalised then converted to 22-bit fixed
//! point, the horizontal pass rounded to 8 bits before the vertical pass (Pillow `libImaging/Resample.c`).
//!
//! CLIP's image processor resizes with it, so CLIP scores computed here see the same pixels.

/// Resampling filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Keys' cubic with `a = −0.5` (Pillow `BICUBIC`).
    Bicubic,
    /// Triangle (Pillow `BILINEAR`).
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output index: first input index, count, fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i32>>,
}

fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // Pillow truncates `center ± support + 0.5` towards zero (C int conversion).
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..count).map(|x| filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            for w in k.iter_mut() {
                *w /= ww;
            }
        }
        let fixed = k
            .iter()
            .map(|&w| {
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                }
            })
            .collect();
        bounds.push((xmin, count));
        weights.push(fixed);
    }
    Coeffs { bounds, weights }
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved 8-bit pixels (`height × width × channels`) to `new_width × new_height`.
pub fn resize_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    new_width: usize,
    new_height: usize,
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(src.len(), width * height * channels, "pixel buffer size");
    let round = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass over the rows the vertical pass will read.
    let need_h = new_width != width;
    let need_v = new_height != height;
    let vert = precompute(height, new_height, filter);
    let (row0, rows) = if need_v {
        let first = vert.bounds[0].0;
        let (lo, n) = vert.bounds[new_height - 1];
        (first, lo + n - first)
    } else {
        (0, height)
    };
    let mut tmp: Vec<u8>;
    let (tw, th, tsrc): (usize, usize, &[u8]) = if need_h {
        let horiz = precompute(width, new_width, filter);
        tmp = vec![0u8; new_width * rows * channels];
        for y in 0..rows {
            let src_row = &src[(row0 + y) * width * channels..(row0 + y + 1) * width * channels];
            for (xx, ((xmin, count), k)) in horiz.bounds.iter().zip(&horiz.weights).enumerate() {
                for c in 0..channels {
                    let mut ss = round;
                    for x in 0..*count {
                        ss += src_row[(xmin + x) * channels + c] as i64 * k[x] as i64;
                    }
                    tmp[(y * new_width + xx) * channels + c] = clip8(ss);
                }
            }
        }
        (new_width, rows, &tmp[..])
    } else {
        (width, height, &src[row0 * width * channels..(row0 + rows) * width * channels])
    };
    if !need_v {
        return tsrc[..tw * th * channels].to_vec();
    }
    let mut out = vec![0u8; tw * new_height * channels];
    for (yy, ((ymin, count), k)) in vert.bounds.iter().zip(&vert.weights).enumerate() {
        let ymin = ymin - row0;
        for x in 0..tw {
            for c in 0..channels {
                let mut ss = round;
                for y in 0..*count {
                    ss += tsrc[((ymin + y) * tw + x) * channels + c] as i64 * k[y] as i64;
                }
                out[(yy * tw + x) * channels + c] = clip8(ss);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_u8(&src, 4, 3, 3, 4, 3, Filter::Bicubic), src);
        let flat = vec![77u8; 10 * 6 * 3];
        assert!(resize_u8(&flat, 10, 6, 3, 4, 9, Filter::Bicubic).iter().all(|&v| v == 77));
    }
}
