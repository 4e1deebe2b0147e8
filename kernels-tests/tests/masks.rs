//! Mask kernels against naive per-pixel references.

use tch::{Kind, Tensor};
use vidtune_kernels::masks::{bboxes, centroids, dilate, erode, resize, translate};
use vidtune_kernels_tests::assert_close;

/// A deterministic binary mask `[F, 1, H, W]` with blobs and isolated pixels.
fn blobs(f: i64, h: i64, w: i64) -> Tensor {
    let mut v = vec![0f32; (f * h * w) as usize];
    let mut state = 12345u64;
    for (i, x) in v.iter_mut().enumerate() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (yy, xx) = (((i as i64) / w) % h, (i as i64) % w);
        let in_blob = (xx - w / 3).pow(2) + (yy - h / 2).pow(2) < (h / 4).pow(2);
        *x = if in_blob || (state >> 60) == 0 { 1.0 } else { 0.0 };
    }
    Tensor::from_slice(&v).view([f, 1, h, w])
}

/// Naive morphology: each output pixel is the max (dilate) or min (erode) over the square window of
/// radius `r` clipped to the frame.
fn naive(m: &Tensor, r: i64, dilate: bool) -> Tensor {
    let s = m.size();
    let (f, h, w) = (s[0], s[2], s[3]);
    let v = Vec::<f32>::try_from(m.flatten(0, -1)).unwrap();
    let mut out = vec![0f32; v.len()];
    for k in 0..f {
        for y in 0..h {
            for x in 0..w {
                let mut acc = if dilate { 0.0f32 } else { 1.0 };
                for yy in (y - r).max(0)..=(y + r).min(h - 1) {
                    for xx in (x - r).max(0)..=(x + r).min(w - 1) {
                        let p = v[((k * h + yy) * w + xx) as usize];
                        acc = if dilate { acc.max(p) } else { acc.min(p) };
                    }
                }
                out[((k * h + y) * w + x) as usize] = acc;
            }
        }
    }
    Tensor::from_slice(&out).view([f, 1, h, w])
}

#[test]
fn dilate_and_erode_equal_window_max_and_min() {
    let m = blobs(2, 23, 31);
    for r in [0, 1, 2, 4] {
        assert_close(&dilate(&m, r).unwrap(), &naive(&m, r, true), 0.0, &format!("dilate r={r}"));
        assert_close(&erode(&m, r).unwrap(), &naive(&m, r, false), 0.0, &format!("erode r={r}"));
    }
    // A full frame does not erode at its borders.
    let full = Tensor::ones([1, 1, 5, 7], (Kind::Float, tch::Device::Cpu));
    assert_eq!(erode(&full, 2).unwrap().sum(Kind::Float).double_value(&[]), 35.0);
}

#[test]
fn resize_to_latent_resolution_is_the_covered_fraction() {
    let m = blobs(1, 64, 48);
    let small = resize(&m, 8, 6).unwrap();
    assert_eq!(small.size(), vec![1, 1, 8, 6]);
    let v = Vec::<f32>::try_from(m.flatten(0, -1)).unwrap();
    for y in 0..8i64 {
        for x in 0..6i64 {
            let mut sum = 0.0;
            for yy in 0..8i64 {
                for xx in 0..8i64 {
                    sum += v[((y * 8 + yy) * 48 + x * 8 + xx) as usize];
                }
            }
            let got = small.double_value(&[0, 0, y, x]);
            assert!((got - sum as f64 / 64.0).abs() < 1e-6, "cell ({x}, {y}): {got} vs {}", sum / 64.0);
        }
    }
    let e = resize(&m, 0, 6).unwrap_err().to_string();
    assert!(e.contains("positive"), "{e}");
    let e = resize(&Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu)), 2, 2).unwrap_err().to_string();
    assert!(e.contains("[F, 1, H, W]"), "{e}");
}

#[test]
fn bboxes_are_pixel_edges_and_empty_frames_have_none() {
    let mut m = Tensor::zeros([3, 1, 10, 12], (Kind::Float, tch::Device::Cpu));
    let _ = m.get(0).get(0).narrow(0, 2, 3).narrow(1, 4, 5).fill_(1.0);
    let _ = m.get(2).get(0).get(9).get(11).fill_(1.0);
    let b = bboxes(&m).unwrap();
    assert_eq!(b, vec![Some([4, 2, 9, 5]), None, Some([11, 9, 12, 10])]);
    m = m.zero_();
    assert_eq!(bboxes(&m).unwrap(), vec![None, None, None]);
}

#[test]
fn centroids_are_the_mean_pixel_of_each_mask() {
    let m = blobs(3, 12, 17);
    let got = centroids(&m).unwrap();
    let v = Vec::<f32>::try_from(m.flatten(0, -1)).unwrap();
    for (k, c) in got.iter().enumerate() {
        let (mut n, mut sy, mut sx) = (0.0, 0.0, 0.0);
        for y in 0..12 {
            for x in 0..17 {
                if v[(k * 12 * 17) + y * 17 + x] > 0.5 {
                    n += 1.0;
                    sy += y as f64;
                    sx += x as f64;
                }
            }
        }
        let (cy, cx) = c.expect("a non-empty mask");
        assert!((cy - sy / n).abs() < 1e-9 && (cx - sx / n).abs() < 1e-9, "frame {k}: {c:?}");
    }
    assert_eq!(centroids(&Tensor::zeros([2, 1, 4, 4], (Kind::Float, tch::Device::Cpu))).unwrap(), vec![None, None]);
    assert!(centroids(&Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu))).is_err());
}

#[test]
fn translate_moves_pixels_and_fills_with_zero() {
    let x = Tensor::arange(2 * 5 * 6, (Kind::Float, tch::Device::Cpu)).view([2, 5, 6]) + 1.0;
    for (dy, dx) in [(0, 0), (2, -1), (-3, 4), (1, 1), (5, 0), (0, -7)] {
        let got = Vec::<f32>::try_from(translate(&x, dy, dx).flatten(0, -1)).unwrap();
        let src = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();
        for c in 0..2i64 {
            for y in 0..5i64 {
                for xx in 0..6i64 {
                    let (sy, sx) = (y - dy, xx - dx);
                    let want = if (0..5).contains(&sy) && (0..6).contains(&sx) {
                        src[(c * 30 + sy * 6 + sx) as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(got[(c * 30 + y * 6 + xx) as usize], want, "shift ({dy}, {dx}) at {c},{y},{xx}");
                }
            }
        }
    }
}
