//! The metrics the papers report (EI² Table 1, dynamic mask guidance Tables I–II): CLIP frame
//! consistency and text alignment on given embeddings, mask IoU, and VBench's temporal flickering.

use crate::error::{expect_dims, KernelError, Result};
use tch::{Kind, Tensor};

/// Which frame pairs frame consistency averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairs {
    /// Every pair of distinct frames (Tune-A-Video, EI², LOVEU-TGVE).
    All,
    /// Consecutive frames only.
    Adjacent,
}

impl Pairs {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Pairs::All),
            "adjacent" => Ok(Pairs::Adjacent),
            other => Err(KernelError::Invalid(format!("unknown pairs {other:?}; expected \"all\" or \"adjacent\""))),
        }
    }
}

fn unit(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Double);
    &x / x.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12)
}

/// Frame consistency of image embeddings `[F, D]`: 100 × the mean cosine similarity over the chosen
/// pairs. Returns the score and each pair's similarity (×100), in order (i < j).
pub fn frame_consistency(embeds: &Tensor, pairs: Pairs) -> Result<(f64, Vec<f64>)> {
    expect_dims(embeds, 2, "image embeddings", "[F, D]")?;
    let f = embeds.size()[0];
    if f < 2 {
        return Err(KernelError::Invalid(format!("frame consistency needs at least 2 frames, got {f}")));
    }
    let u = unit(embeds);
    let sim = u.matmul(&u.transpose(0, 1));
    let mut values = vec![];
    for i in 0..f {
        let js: Vec<i64> = match pairs {
            Pairs::All => ((i + 1)..f).collect(),
            Pairs::Adjacent => ((i + 1)..(i + 2).min(f)).collect(),
        };
        for j in js {
            values.push(100.0 * sim.double_value(&[i, j]));
        }
    }
    Ok((values.iter().sum::<f64>() / values.len() as f64, values))
}

/// Text alignment: 100 × cos(image, text) per frame (`[F, D]` against `[D]`), optionally clamped at 0 as
/// torchmetrics' CLIPScore does. Returns the mean and the per-frame values.
pub fn text_alignment(image_embeds: &Tensor, text_embed: &Tensor, clamp_at_zero: bool) -> Result<(f64, Vec<f64>)> {
    expect_dims(image_embeds, 2, "image embeddings", "[F, D]")?;
    let t = if text_embed.dim() == 2 { text_embed.squeeze_dim(0) } else { text_embed.shallow_clone() };
    expect_dims(&t, 1, "text embedding", "[D] or [1, D]")?;
    if t.size()[0] != image_embeds.size()[1] {
        return Err(KernelError::Invalid(format!(
            "text embedding width {} differs from image embedding width {}",
            t.size()[0],
            image_embeds.size()[1]
        )));
    }
    let cos = unit(image_embeds).matmul(&unit(&t));
    let mut per: Vec<f64> = Vec::<f64>::try_from(cos * 100.0)?;
    if clamp_at_zero {
        per.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    Ok((per.iter().sum::<f64>() / per.len().max(1) as f64, per))
}

/// IoU per frame of two mask sequences `[F, 1, H, W]` (thresholded at 0.5); two empty masks count as 1.
/// Returns the mean and the per-frame values.
pub fn mask_iou(a: &Tensor, b: &Tensor) -> Result<(f64, Vec<f64>)> {
    if a.size() != b.size() {
        return Err(KernelError::Invalid(format!("mask IoU of shapes {:?} and {:?}", a.size(), b.size())));
    }
    expect_dims(a, 4, "masks", "[F, 1, H, W]")?;
    let (a, b) = (a.gt(0.5), b.gt(0.5));
    let dims = [1i64, 2, 3];
    let inter = a.logical_and(&b).sum_dim_intlist(dims.as_slice(), false, Kind::Double);
    let union = a.logical_or(&b).sum_dim_intlist(dims.as_slice(), false, Kind::Double);
    let ratio = &inter / union.clamp_min(1.0);
    let iou = ratio.where_self(&union.gt(0.0), &ratio.ones_like());
    let per: Vec<f64> = Vec::<f64>::try_from(iou)?;
    Ok((per.iter().sum::<f64>() / per.len().max(1) as f64, per))
}

/// VBench temporal flickering: `(255 − mean over consecutive frames of the mean absolute pixel difference)
/// / 255`, on 8-bit frames. `frames` is `[F, 3, H, W]` in [−1, 1]; higher is steadier (1 = static).
pub fn temporal_flickering(frames: &Tensor) -> Result<f64> {
    expect_dims(frames, 4, "frames", "[F, 3, H, W]")?;
    let f = frames.size()[0];
    if f < 2 {
        return Err(KernelError::Invalid(format!("temporal flickering needs at least 2 frames, got {f}")));
    }
    let px = ((frames.to_kind(Kind::Double) + 1.0) * 127.5).round().clamp(0.0, 255.0);
    let diffs = (px.narrow(0, 1, f - 1) - px.narrow(0, 0, f - 1)).abs();
    let per_pair = diffs.mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double);
    let mae = per_pair.mean(Kind::Double).double_value(&[]);
    Ok((255.0 - mae) / 255.0)
}

/// Indices of the values that stand out from the rest: farther than `k` robust standard deviations
/// (1.4826 × the median absolute deviation) from the median, and by more than `min_gap` — so a uniform
/// series (MAD 0) flags nothing unless a value really differs. `low_only` flags only values below.
pub fn robust_outliers(values: &[f64], k: f64, min_gap: f64, low_only: bool) -> Vec<usize> {
    if values.len() < 3 {
        return vec![];
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let m = median(&mut values.to_vec());
    let mad = median(&mut values.iter().map(|v| (v - m).abs()).collect());
    let spread = (1.4826 * mad * k).max(min_gap);
    values
        .iter()
        .enumerate()
        .filter(|(_, &v)| if low_only { m - v > spread } else { (v - m).abs() > spread })
        .map(|(i, _)| i)
        .collect()
}

/// 8-bit levels of frames in [−1, 1], as doubles.
fn levels(frames: &Tensor) -> Tensor {
    ((frames.to_kind(Kind::Double) + 1.0) * 127.5).round().clamp(0.0, 255.0)
}

/// Per frame, the mean squared difference (8-bit levels) of `a` and `b` (`[F, 3, H, W]` in [−1, 1])
/// over the pixels of `region` (`[F, 1, H, W]`, thresholded at 0.5); `None` for a frame whose region is
/// empty.
pub fn region_mse(a: &Tensor, b: &Tensor, region: &Tensor) -> Result<Vec<Option<f64>>> {
    expect_dims(a, 4, "frames", "[F, 3, H, W]")?;
    expect_dims(region, 4, "region", "[F, 1, H, W]")?;
    let (sa, sr) = (a.size(), region.size());
    if a.size() != b.size() || sr[0] != sa[0] || sr[1] != 1 || sr[2..] != sa[2..] {
        return Err(KernelError::Invalid(format!(
            "region MSE of frames {:?} and {:?} over a region {:?}",
            sa,
            b.size(),
            sr
        )));
    }
    let m = region.gt(0.5).to_kind(Kind::Double);
    let dims = [1i64, 2, 3];
    let se = ((levels(a) - levels(b)).square() * &m).sum_dim_intlist(dims.as_slice(), false, Kind::Double);
    let n = m.sum_dim_intlist(dims.as_slice(), false, Kind::Double) * 3.0;
    let (se, n) = (Vec::<f64>::try_from(se)?, Vec::<f64>::try_from(n)?);
    Ok(se.iter().zip(&n).map(|(s, n)| (*n > 0.0).then(|| s / n)).collect())
}

/// PSNR (dB, 8-bit levels) of `a` against `b` over the pixels of `region`, pooled over every frame;
/// `None` when the region is empty, infinite when they agree there.
pub fn region_psnr(a: &Tensor, b: &Tensor, region: &Tensor) -> Result<Option<f64>> {
    let m = region.gt(0.5).to_kind(Kind::Double);
    let per = region_mse(a, b, region)?;
    let counts = Vec::<f64>::try_from(m.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Double))?;
    let (mut se, mut n) = (0.0, 0.0);
    for (mse, c) in per.iter().zip(&counts) {
        if let Some(mse) = mse {
            se += mse * c;
            n += c;
        }
    }
    if n == 0.0 {
        return Ok(None);
    }
    let mse = se / n;
    Ok(Some(if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64.powi(2) / mse).log10() }))
}

/// Per frame, the mean colour (8-bit levels) of `frames` over `region`; `None` where it is empty.
pub fn region_mean_rgb(frames: &Tensor, region: &Tensor) -> Result<Vec<Option<[f64; 3]>>> {
    expect_dims(frames, 4, "frames", "[F, 3, H, W]")?;
    let m = region.gt(0.5).to_kind(Kind::Double);
    let dims = [2i64, 3];
    let sum = (levels(frames) * &m).sum_dim_intlist(dims.as_slice(), false, Kind::Double);
    let n = m.sum_dim_intlist(dims.as_slice(), false, Kind::Double);
    let f = frames.size()[0];
    let (sum, n) = (Vec::<f64>::try_from(sum.reshape([f * 3]))?, Vec::<f64>::try_from(n.reshape([f]))?);
    Ok((0..f as usize)
        .map(|i| (n[i] > 0.0).then(|| [sum[3 * i] / n[i], sum[3 * i + 1] / n[i], sum[3 * i + 2] / n[i]]))
        .collect())
}

/// Per frame, the mean colour (8-bit levels) of the pixels of `region` that stand apart from the mean
/// colour of `surround` (`[F, 1, H, W]`, a ring around the region): those at least half as far from it as
/// the region's 90th percentile. A region larger than the subject in it (a bounding box around a new
/// shape) reads the subject's colour, not the background's; a region the subject fills reads all of it.
/// `None` where the region or the surround is empty.
pub fn subject_mean_rgb(frames: &Tensor, region: &Tensor, surround: &Tensor) -> Result<Vec<Option<[f64; 3]>>> {
    expect_dims(frames, 4, "frames", "[F, 3, H, W]")?;
    let px = levels(frames);
    let (f, h, w) = (px.size()[0], px.size()[2], px.size()[3]);
    let flat = |m: &Tensor| m.gt(0.5).reshape([f, h * w]);
    let (inside, ring) = (flat(region), flat(surround));
    let px = px.reshape([f, 3, h * w]);
    let mut out = Vec::with_capacity(f as usize);
    for i in 0..f {
        let (pi, ins, rg) = (px.get(i), inside.get(i), ring.get(i));
        if ins.sum(Kind::Int64).int64_value(&[]) == 0 || rg.sum(Kind::Int64).int64_value(&[]) == 0 {
            out.push(None);
            continue;
        }
        let around = pi.masked_select(&rg).reshape([3, -1]).mean_dim([1i64].as_slice(), true, Kind::Double);
        let own = pi.masked_select(&ins).reshape([3, -1]);
        let dist = (&own - around).square().sum_dim_intlist([0i64].as_slice(), false, Kind::Double).sqrt();
        let cut = dist.quantile_scalar(0.9, None, false, "linear").double_value(&[]) * 0.5;
        let apart = dist.ge(cut);
        let chosen = own.masked_select(&apart).reshape([3, -1]);
        let mean = Vec::<f64>::try_from(chosen.mean_dim([1i64].as_slice(), false, Kind::Double))?;
        out.push(Some([mean[0], mean[1], mean[2]]));
    }
    Ok(out)
}

#[cfg(test)]
mod region_tests {
    use super::*;

    #[test]
    fn region_measures_read_only_the_region() {
        let a = Tensor::zeros([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
        let b = a.copy();
        // Frame 0: one region pixel differs by 2/255·… (1.0 in [−1, 1] is 127.5 levels); frame 1: outside.
        let _ = b.get(0).narrow(1, 0, 1).narrow(2, 0, 1).fill_(1.0);
        let _ = b.get(1).narrow(1, 3, 1).narrow(2, 3, 1).fill_(1.0);
        let region = Tensor::zeros([2, 1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let _ = region.get(0).narrow(1, 0, 2).fill_(1.0);
        let _ = region.get(1).narrow(1, 0, 2).fill_(1.0);
        let mse = region_mse(&a, &b, &region).unwrap();
        // Levels 128 vs 255 (0 → 127.5 rounds to 128): (127²·3) / (8 pixels · 3).
        assert!((mse[0].unwrap() - 127.0f64.powi(2) / 8.0).abs() < 1e-9, "{mse:?}");
        assert_eq!(mse[1], Some(0.0));
        let psnr = region_psnr(&a, &b, &region).unwrap().unwrap();
        let want = 10.0 * (255.0f64.powi(2) / (127.0f64.powi(2) / 16.0)).log10();
        assert!((psnr - want).abs() < 1e-9, "{psnr} vs {want}");
        let empty = Tensor::zeros([2, 1, 4, 4], (Kind::Float, tch::Device::Cpu));
        assert_eq!(region_mse(&a, &b, &empty).unwrap(), vec![None, None]);
        assert_eq!(region_psnr(&a, &b, &empty).unwrap(), None);
        let rgb = region_mean_rgb(&b, &region).unwrap();
        assert_eq!(rgb[1], Some([128.0; 3]));
        assert!((rgb[0].unwrap()[0] - (128.0 * 7.0 + 255.0) / 8.0).abs() < 1e-9);
        assert!(region_mse(&a, &b, &region.narrow(0, 0, 1)).is_err());
    }

    /// A red triangle in a grey box: the box reads the triangle's colour; a box the subject fills reads
    /// all of it; an empty box reads nothing. Against values worked out by hand.
    #[test]
    fn subject_colour_reads_the_pixels_apart_from_the_surround() {
        let cpu = (Kind::Float, tch::Device::Cpu);
        let frames = Tensor::full([3, 3, 8, 8], -0.5, cpu);
        let region = Tensor::zeros([3, 1, 8, 8], cpu);
        let ring = Tensor::zeros([3, 1, 8, 8], cpu);
        for i in 0..3 {
            let _ = ring.get(i).narrow(1, 1, 6).narrow(2, 1, 6).fill_(1.0);
            if i < 2 {
                let _ = region.get(i).narrow(1, 2, 4).narrow(2, 2, 4).fill_(1.0);
                let _ = ring.get(i).narrow(1, 2, 4).narrow(2, 2, 4).fill_(0.0);
            }
        }
        let red = |i: i64, y: i64, x: i64| {
            for (c, v) in [1.0, -1.0, -1.0].iter().enumerate() {
                let _ = frames.get(i).get(c as i64).get(y).get(x).fill_(*v);
            }
        };
        // Frame 0: the triangle y ≥ x of the box (10 of its 16 pixels); frame 1: the whole box.
        for y in 2..6 {
            for x in 2..6 {
                if y >= x {
                    red(0, y, x);
                }
                red(1, y, x);
            }
        }
        let got = subject_mean_rgb(&frames, &region, &ring).unwrap();
        assert_eq!(got[0], Some([255.0, 0.0, 0.0]));
        assert_eq!(got[1], Some([255.0, 0.0, 0.0]));
        assert_eq!(got[2], None);
        // The plain mean over the box mixes in the grey: 10 red pixels and 6 at level 64.
        let plain = region_mean_rgb(&frames, &region).unwrap()[0].unwrap();
        assert!((plain[0] - (10.0 * 255.0 + 6.0 * 64.0) / 16.0).abs() < 1e-9, "{plain:?}");
    }
}
