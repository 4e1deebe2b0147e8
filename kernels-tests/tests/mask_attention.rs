//! The mask-aware attention kernels against naive loops: DenseDiffusion's score modulation (mask
//! cross-attention) and the first-frame mask bias (mask-aware attention).

use tch::{Kind, Tensor};
use vidtune_kernels::attention::{first_frame_mask_bias, modulate_scores};

fn opts() -> (Kind, tch::Device) {
    (Kind::Float, tch::Device::Cpu)
}

#[test]
fn score_modulation_equals_a_naive_loop() {
    tch::manual_seed(11);
    let (n, heads, lq, lk) = (3, 2, 5, 7);
    let scores = Tensor::randn([n, heads, lq, lk], opts());
    let region = Tensor::rand([n, lq], opts());
    let mut sel = vec![0f32; (n * lk) as usize];
    for (row, tok) in [(0, 2), (0, 3), (2, 6)] {
        sel[row * lk as usize + tok] = 1.0;
    }
    let tokens = Tensor::from_slice(&sel).view([n, lk]);
    let w = 0.7;
    let got = modulate_scores(&scores, &region, &tokens, w);
    for b in 0..n {
        for h in 0..heads {
            for q in 0..lq {
                let row: Vec<f64> = (0..lk).map(|k| scores.double_value(&[b, h, q, k])).collect();
                let (max, min) = row.iter().fold((f64::MIN, f64::MAX), |(a, c), &x| (a.max(x), c.min(x)));
                let m = region.double_value(&[b, q]);
                for k in 0..lk {
                    let s = row[k as usize];
                    let want = if sel[(b * lk + k) as usize] == 1.0 {
                        s + w * (m * (max - s) - (1.0 - m) * (s - min))
                    } else {
                        s
                    };
                    let have = got.double_value(&[b, h, q, k]);
                    assert!((have - want).abs() < 1e-5, "[{b},{h},{q},{k}]: {have} vs {want}");
                }
            }
        }
    }
    // Inside a full mask a subject token reaches its row's maximum; outside an empty one, its minimum.
    let one = modulate_scores(&scores, &Tensor::ones([n, lq], opts()), &tokens, 1.0);
    let zero = modulate_scores(&scores, &Tensor::zeros([n, lq], opts()), &tokens, 1.0);
    let (rowmax, _) = scores.max_dim(-1, false);
    let (rowmin, _) = scores.min_dim(-1, false);
    assert!((one.select(3, 2).get(0) - rowmax.get(0)).abs().max().double_value(&[]) < 1e-6);
    assert!((zero.select(3, 2).get(0) - rowmin.get(0)).abs().max().double_value(&[]) < 1e-6);
    // Without subject tokens nothing changes.
    assert!(modulate_scores(&scores, &region, &tokens.zeros_like(), w).equal(&scores));
}

#[test]
fn first_frame_mask_bias_equals_a_naive_loop() {
    tch::manual_seed(12);
    let (b, f, l) = (2, 3, 4);
    let m = Tensor::rand([b * f, l], opts());
    let strength = 2.5;
    let got = first_frame_mask_bias(&m, f, strength);
    assert_eq!(got.size(), [b * f, 1, l, l]);
    for clip in 0..b {
        for frame in 0..f {
            let row = clip * f + frame;
            for q in 0..l {
                for k in 0..l {
                    let want = -strength * (m.double_value(&[row, q]) - m.double_value(&[clip * f, k])).abs();
                    let have = got.double_value(&[row, 0, q, k]);
                    assert!((have - want).abs() < 1e-6, "[{row},{q},{k}]: {have} vs {want}");
                }
            }
        }
    }
}

#[test]
fn anchored_mask_bias_compares_with_the_given_first_frame() {
    use vidtune_kernels::attention::{first_frame_mask_bias_from, first_frames};
    tch::manual_seed(13);
    let (b, f, l) = (2, 3, 4);
    let m = Tensor::rand([b * f, l], opts());
    let anchor = Tensor::rand([b, l], opts());
    let got = first_frame_mask_bias_from(&m, f, &anchor, 1.5);
    for row in 0..b * f {
        for q in 0..l {
            for k in 0..l {
                let want = -1.5 * (m.double_value(&[row, q]) - anchor.double_value(&[row / f, k])).abs();
                assert!((got.double_value(&[row, 0, q, k]) - want).abs() < 1e-6);
            }
        }
    }
    let own = first_frame_mask_bias_from(&m, f, &first_frames(&m, f), 1.5);
    assert!(own.equal(&first_frame_mask_bias(&m, f, 1.5)));
}
