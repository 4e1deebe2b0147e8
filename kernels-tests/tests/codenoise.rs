//! Co-denoise plans, weights and merges against naive per-frame references.

use tch::{Kind, Tensor};
use vidtune_kernels::codenoise::{merge, normalised_weights, plan, window_weights, Weighting, Window};
use vidtune_kernels_tests::assert_close;

const WEIGHTINGS: [Weighting; 3] = [Weighting::Uniform, Weighting::Triangular, Weighting::Gaussian { sigma: 0.25 }];

#[test]
fn every_plan_covers_every_frame_with_full_windows_and_ends_flush() {
    for frames in 1..40 {
        for window in 1..12 {
            for stride in 1..=window {
                let p = plan(frames, window, stride).unwrap();
                let mut covered = vec![0; frames as usize];
                for w in &p {
                    assert_eq!(w.len, window.min(frames), "L={frames} W={window} S={stride}: {p:?}");
                    assert!(w.start >= 0 && w.start + w.len <= frames);
                    for f in w.start..w.start + w.len {
                        covered[f as usize] += 1;
                    }
                }
                assert!(covered.iter().all(|&c| c > 0), "L={frames} W={window} S={stride}: {p:?}");
                assert_eq!(p.last().unwrap().start + p.last().unwrap().len, frames);
                // Windows start every `stride` frames but the last, which may be closer.
                for pair in p.windows(2) {
                    assert!(pair[1].start > pair[0].start && pair[1].start - pair[0].start <= stride);
                }
            }
        }
    }
    // Gen-L-Video's plan for L=10, W=4, S=4 stops at 0..4, 4..8 and leaves 8, 9 out; the last window here
    // is flush with the end.
    let p = plan(10, 4, 4).unwrap();
    assert_eq!(p, vec![Window { start: 0, len: 4 }, Window { start: 4, len: 4 }, Window { start: 6, len: 4 }]);
}

#[test]
fn bad_plans_are_refused_with_the_reason() {
    assert!(plan(10, 0, 1).unwrap_err().to_string().contains("window must be at least 1"));
    assert!(plan(10, 4, 5).unwrap_err().to_string().contains("stride must be between 1 and the window (4)"));
    assert!(plan(10, 4, 0).is_err());
    assert!(plan(0, 4, 2).is_err());
    assert!(Weighting::parse("cosine").unwrap_err().to_string().contains("unknown weighting"));
    assert!(Weighting::parse("gaussian:-1").is_err());
    assert_eq!(Weighting::parse("gaussian:0.5").unwrap(), Weighting::Gaussian { sigma: 0.5 });
}

#[test]
fn weights_sum_to_one_per_frame_for_every_plan() {
    for weighting in WEIGHTINGS {
        for (frames, window, stride) in [(48, 8, 4), (50, 8, 4), (13, 5, 3), (7, 8, 2), (31, 6, 6), (9, 3, 1)] {
            let p = plan(frames, window, stride).unwrap();
            let w = normalised_weights(&p, weighting, frames).unwrap();
            let sums = w.sum_dim_intlist(0, false, Kind::Float);
            assert_close(&sums, &Tensor::ones([frames], (Kind::Float, tch::Device::Cpu)), 1e-6, "per-frame sums");
            assert!(w.min().double_value(&[]) >= 0.0);
        }
        let ww = window_weights(weighting, 8);
        assert!(ww.min().double_value(&[]) > 0.0, "{weighting}: every position counts");
    }
    // Triangular and Gaussian trust the middle of a window more than its edges.
    let t = Vec::<f32>::try_from(window_weights(Weighting::Triangular, 6)).unwrap();
    assert_eq!(t, vec![1.0, 2.0, 3.0, 3.0, 2.0, 1.0]);
    let g = Vec::<f32>::try_from(window_weights(Weighting::Gaussian { sigma: 0.25 }, 5)).unwrap();
    assert!(g[2] > g[1] && g[1] > g[0] && (g[0] - g[4]).abs() < 1e-7);
}

/// Naive merge: per frame, per element, Σ w_i(f)·part_i / Σ w_i(f) over the windows covering f.
fn naive_merge(parts: &[Tensor], windows: &[Window], weighting: Weighting, frames: i64) -> Tensor {
    let s = parts[0].size();
    let per_frame = s[0] * s[1] * s[3] * s[4];
    let mut total = vec![0f64; frames as usize];
    let mut acc: Vec<Vec<f64>> = vec![vec![0.0; per_frame as usize]; frames as usize];
    for (p, win) in parts.iter().zip(windows) {
        let ww = Vec::<f32>::try_from(window_weights(weighting, win.len)).unwrap();
        for j in 0..win.len {
            let f = win.start + j;
            // Frame j of the window as a flat list (B, C, h, w order).
            let v = Vec::<f32>::try_from(p.narrow(2, j, 1).contiguous().flatten(0, -1)).unwrap();
            total[f as usize] += ww[j as usize] as f64;
            for (a, x) in acc[f as usize].iter_mut().zip(&v) {
                *a += ww[j as usize] as f64 * *x as f64;
            }
        }
    }
    let mut frames_out = vec![];
    for f in 0..frames as usize {
        let v: Vec<f32> = acc[f].iter().map(|a| (a / total[f]) as f32).collect();
        frames_out.push(Tensor::from_slice(&v).view([s[0], s[1], 1, s[3], s[4]]));
    }
    Tensor::cat(&frames_out, 2)
}

#[test]
fn merge_equals_a_naive_weighted_mean_per_frame() {
    tch::manual_seed(3);
    for weighting in WEIGHTINGS {
        for (frames, window, stride) in [(11, 4, 3), (12, 4, 4), (6, 8, 2), (9, 5, 1)] {
            let p = plan(frames, window, stride).unwrap();
            let parts: Vec<Tensor> =
                p.iter().map(|w| Tensor::randn([2, 3, w.len, 4, 5], (Kind::Float, tch::Device::Cpu))).collect();
            let got = merge(&parts, &p, weighting, frames).unwrap();
            let want = naive_merge(&parts, &p, weighting, frames);
            assert_close(&got, &want, 1e-5, &format!("{weighting} L={frames} W={window} S={stride}"));
        }
    }
}

#[test]
fn merging_windows_cut_from_one_clip_gives_the_clip_back() {
    tch::manual_seed(4);
    let clip = Tensor::randn([1, 4, 23, 3, 3], (Kind::Float, tch::Device::Cpu));
    for weighting in WEIGHTINGS {
        let p = plan(23, 8, 3).unwrap();
        let parts: Vec<Tensor> = p.iter().map(|w| clip.narrow(2, w.start, w.len)).collect();
        assert_close(&merge(&parts, &p, weighting, 23).unwrap(), &clip, 1e-6, "round trip");
    }
}

#[test]
fn merge_refuses_mismatched_results() {
    let p = plan(10, 4, 2).unwrap();
    let mut parts: Vec<Tensor> =
        p.iter().map(|w| Tensor::zeros([1, 4, w.len, 2, 2], (Kind::Float, tch::Device::Cpu))).collect();
    assert!(merge(&parts[1..], &p, Weighting::Uniform, 10).unwrap_err().to_string().contains("results for"));
    parts[1] = Tensor::zeros([1, 4, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
    assert!(merge(&parts, &p, Weighting::Uniform, 10).unwrap_err().to_string().contains("window 1 result"));
}
