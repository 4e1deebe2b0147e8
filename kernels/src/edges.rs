//! Edge maps for ControlNet conditioning: OpenCV's `cvtColor(RGB2GRAY)` and `Canny` (3×3 Sobel with
//! replicated borders, L1 gradient magnitude, non-maximum suppression in four directions, hysteresis over
//! 8-connected pixels), reproduced pixel for pixel on 8-bit images. Neither the `image` crate nor
//! `imageproc` matches it: `imageproc`'s `canny` blurs first (σ = 1.4) and compares angles in floating
//! point, so its edges are not the ones ControlNet's canny models were trained on.

use crate::error::{KernelError, Result};
use tch::{Kind, Tensor};

/// OpenCV's RGB → grey on 8-bit pixels: `(9798 R + 19235 G + 3735 B + 2^14) >> 15`.
pub fn rgb_to_gray(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| ((9798 * p[0] as u32 + 19235 * p[1] as u32 + 3735 * p[2] as u32 + (1 << 14)) >> 15) as u8)
        .collect()
}

/// `cv2.Canny(gray, low, high)` on a `width × height` grey image: 255 on edges, 0 elsewhere. `low` and
/// `high` are swapped when given the other way round, as OpenCV does.
pub fn canny(gray: &[u8], width: usize, height: usize, low: f64, high: f64) -> Result<Vec<u8>> {
    if gray.len() != width * height || width == 0 || height == 0 {
        return Err(KernelError::Invalid(format!("canny: {} pixels for a {width}x{height} image", gray.len())));
    }
    if !(low.is_finite() && high.is_finite()) || low < 0.0 || high < 0.0 {
        return Err(KernelError::Invalid(format!("canny: thresholds must be numbers ≥ 0, got {low} and {high}")));
    }
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    let (low, high) = (low.floor() as i32, high.floor() as i32);
    let (w, h) = (width as isize, height as isize);
    let px = |x: isize, y: isize| gray[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize] as i32;
    let mut dx = vec![0i32; width * height];
    let mut dy = vec![0i32; width * height];
    let mut mag = vec![0i32; width * height];
    for y in 0..h {
        for x in 0..w {
            let gx = px(x + 1, y - 1) + 2 * px(x + 1, y) + px(x + 1, y + 1)
                - px(x - 1, y - 1)
                - 2 * px(x - 1, y)
                - px(x - 1, y + 1);
            let gy = px(x - 1, y + 1) + 2 * px(x, y + 1) + px(x + 1, y + 1)
                - px(x - 1, y - 1)
                - 2 * px(x, y - 1)
                - px(x + 1, y - 1);
            let i = (y * w + x) as usize;
            (dx[i], dy[i], mag[i]) = (gx, gy, gx.abs() + gy.abs());
        }
    }
    // Magnitudes outside the image are 0.
    let m_at = |x: isize, y: isize| if x < 0 || y < 0 || x >= w || y >= h { 0 } else { mag[(y * w + x) as usize] };
    // tan(22.5°) in fixed point (OpenCV's CANNY_SHIFT = 15).
    const SHIFT: i64 = 15;
    const TG22: i64 = 13573;
    // 0: a candidate (a local maximum above `low`), 2: an edge, 1: neither.
    let mut map = vec![1u8; width * height];
    let mut stack = vec![];
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) as usize;
            let m = mag[i];
            if m <= low {
                continue;
            }
            let (xs, ys) = (dx[i] as i64, dy[i] as i64);
            let ax = xs.abs();
            let ay = ys.abs() << SHIFT;
            let tg22x = ax * TG22;
            let maximum = if ay < tg22x {
                m > m_at(x - 1, y) && m >= m_at(x + 1, y)
            } else if ay > tg22x + (ax << (SHIFT + 1)) {
                m > m_at(x, y - 1) && m >= m_at(x, y + 1)
            } else {
                let s = if (xs ^ ys) < 0 { -1 } else { 1 };
                m > m_at(x - s, y - 1) && m > m_at(x + s, y + 1)
            };
            if !maximum {
                continue;
            }
            if m > high {
                map[i] = 2;
                stack.push((x, y));
            } else {
                map[i] = 0;
            }
        }
    }
    // Hysteresis: candidates 8-connected to an edge become edges.
    while let Some((x, y)) = stack.pop() {
        for (ox, oy) in [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
            let (nx, ny) = (x + ox, y + oy);
            if nx < 0 || ny < 0 || nx >= w || ny >= h {
                continue;
            }
            let j = (ny * w + nx) as usize;
            if map[j] == 0 {
                map[j] = 2;
                stack.push((nx, ny));
            }
        }
    }
    Ok(map.into_iter().map(|v| if v == 2 { 255 } else { 0 }).collect())
}

/// Canny edges of every frame of `frames` (`[N, 3, H, W]` in [−1, 1], or one image `[3, H, W]`): each
/// frame rounded to 8 bits, turned grey and run through [`canny`]; white edges on black, 3 channels, in
/// [−1, 1] (the shape it was given).
pub fn canny_frames(frames: &Tensor, low: f64, high: f64) -> Result<Tensor> {
    let single = frames.dim() == 3;
    let x = if single { frames.unsqueeze(0) } else { frames.shallow_clone() };
    let s = x.size();
    if s.len() != 4 || s[1] != 3 {
        return Err(KernelError::Shape {
            what: "canny".into(),
            expected: "[3, H, W] or [N, 3, H, W]".into(),
            got: frames.size(),
        });
    }
    let (h, w) = (s[2] as usize, s[3] as usize);
    let rgb = crate::image::to_rgb8_tensor(&x)?;
    let mut out = Vec::with_capacity(s[0] as usize);
    for i in 0..s[0] {
        let bytes = Vec::<u8>::try_from(rgb.get(i).flatten(0, -1))?;
        let edges = canny(&rgb_to_gray(&bytes), w, h, low, high)?;
        out.push(Tensor::from_slice(&edges).view([1, 1, h as i64, w as i64]));
    }
    let edges = (Tensor::cat(&out, 0).to_kind(Kind::Float) / 127.5 - 1.0).expand([-1, 3, -1, -1], false).contiguous();
    Ok(if single { edges.squeeze_dim(0) } else { edges })
}
