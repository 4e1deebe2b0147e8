//! Optimiser arithmetic against PyTorch, and the key/value gathers of the video attention modules against
//! naive loops.

use tch::{Kind, Tensor};
use vidtune_kernels::attention::{
    gather_all_frames, gather_fine_coarse, gather_first_frame, gather_sparse_causal, instance_center, pool_tokens,
};
use vidtune_kernels::optim::{clip_grad_norm, clip_grad_norm_on_device, AdamW, PowerIteration};
use vidtune_kernels_tests::{assert_close, assert_close_rel, load_fixture};

#[test]
fn adamw_matches_torch() {
    let f = load_fixture("optim.safetensors");
    let adam = AdamW { lr: 1e-2, ..Default::default() };
    let mut p = f["p0"].copy();
    let mut m = p.zeros_like();
    let mut v = p.zeros_like();
    for i in 0..3 {
        adam.step(&mut p, &f[&format!("grad{i}")], &mut m, &mut v, i + 1);
        assert_close_rel(&p, &f[&format!("p{}", i + 1)], 1e-6, &format!("AdamW step {}", i + 1));
    }
}

#[test]
fn the_fused_adamw_pass_gives_the_operations_bits() {
    // Large enough to be split over threads; a clipping factor below one and none; a float64 set, which
    // takes the operations. The fused pass rounds as the operations do, but for the parameter's final
    // division and sum (within a float32 rounding of the values).
    tch::manual_seed(5);
    for (kind, n, scale) in [(Kind::Float, 300_001, 0.37), (Kind::Float, 1000, 1.0), (Kind::Double, 1000, 0.5)] {
        let adam = AdamW { lr: 1e-3, ..Default::default() };
        let p0 = Tensor::randn([n], (kind, tch::Device::Cpu));
        let (mut p1, mut m1, mut v1) = (p0.copy(), p0.zeros_like(), p0.zeros_like());
        let (mut p2, mut m2, mut v2) = (p0.copy(), p0.zeros_like(), p0.zeros_like());
        for step in 1..=3 {
            let g = Tensor::randn([n], (kind, tch::Device::Cpu)) * 1e-2;
            adam.step_scaled(&mut p1, &g, scale, &mut m1, &mut v1, step);
            adam.step_ops(&mut p2, &(&g * scale), &mut m2, &mut v2, step);
        }
        for (a, b, what) in [(&p1, &p2, "param"), (&m1, &m2, "first moment"), (&v1, &v2, "second moment")] {
            let ulps = (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]);
            assert!(ulps <= 2.0 * f32::EPSILON as f64, "{kind:?} {n} ×{scale}: {what} differs by {ulps:e}");
        }
        assert!(p1.not_equal_tensor(&p0).any().int64_value(&[]) == 1, "the update moved nothing");
    }
}

#[test]
fn the_clip_factor_is_the_one_clipping_multiplies_by() {
    let f = load_fixture("optim.safetensors");
    for max_norm in [1.0, 1e3] {
        let grads = vec![f["clip.g0"].copy(), f["clip.g1"].copy()];
        let (norm, coef) = vidtune_kernels::optim::clip_factor(&grads, max_norm);
        let mut clipped = vec![f["clip.g0"].copy(), f["clip.g1"].copy()];
        let device_norm = clip_grad_norm_on_device(&mut clipped, max_norm);
        assert_eq!(norm.double_value(&[]), device_norm.double_value(&[]));
        for (g, c) in grads.iter().zip(&clipped) {
            assert!(c.equal(&(g * coef)), "max_norm {max_norm}: factor {coef}");
        }
        assert_eq!(coef == 1.0, max_norm == 1e3, "factor {coef} at max_norm {max_norm}");
    }
}

#[test]
fn grad_clipping_matches_torch() {
    let f = load_fixture("optim.safetensors");
    let mut grads = vec![f["clip.g0"].copy(), f["clip.g1"].copy()];
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!((norm - f["clip.norm"].double_value(&[])).abs() < 1e-5);
    assert_close_rel(&grads[0], &f["clip.out0"], 1e-6, "clipped grad 0");
    assert_close_rel(&grads[1], &f["clip.out1"], 1e-6, "clipped grad 1");
}

#[test]
fn clipping_on_the_device_gives_the_host_versions_bits() {
    let f = load_fixture("optim.safetensors");
    for max_norm in [1.0, 1e3] {
        let mut host = vec![f["clip.g0"].copy(), f["clip.g1"].copy()];
        let mut device = vec![f["clip.g0"].copy(), f["clip.g1"].copy()];
        let n_host = clip_grad_norm(&mut host, max_norm);
        let n_device = clip_grad_norm_on_device(&mut device, max_norm);
        assert_eq!(n_host, n_device.double_value(&[]), "norm at max {max_norm}");
        for (a, b) in host.iter().zip(&device) {
            assert!(a.equal(b), "clipped gradients differ at max {max_norm}");
        }
    }
    // Below the limit nothing changes.
    let mut g = vec![f["clip.g0"].copy()];
    let _ = clip_grad_norm_on_device(&mut g, 1e9);
    assert!(g[0].equal(&f["clip.g0"]));
}

#[test]
fn spectral_normalisation_gives_unit_largest_singular_value() {
    tch::manual_seed(3);
    let w = Tensor::randn([12, 20], (Kind::Float, tch::Device::Cpu)) * 3.0;
    let state = PowerIteration::new(
        &w,
        &Tensor::randn([12], (Kind::Float, tch::Device::Cpu)),
        &Tensor::randn([20], (Kind::Float, tch::Device::Cpu)),
        50,
    );
    let (normed, sigma) = state.normalized(&w);
    // σ_max = sqrt(largest eigenvalue of WᵀW).
    let top_singular = |m: &Tensor| {
        Tensor::linalg_eigvalsh(&m.transpose(0, 1).matmul(m).to_kind(Kind::Double), "L").max().sqrt().double_value(&[])
    };
    let svals = Tensor::from(top_singular(&w));
    assert!((sigma.double_value(&[]) - svals.double_value(&[])).abs() / svals.double_value(&[]) < 1e-3);
    let top = top_singular(&normed);
    assert!((top - 1.0).abs() < 1e-3, "largest singular value {top}");
}

fn frames_of(x: &Tensor, f: i64) -> Vec<Tensor> {
    (0..f).map(|i| x.get(i)).collect()
}

#[test]
fn gathers_equal_naive_loops() {
    tch::manual_seed(1);
    let (f, l, c) = (4, 6, 3);
    let x = Tensor::randn([f, l, c], (Kind::Float, tch::Device::Cpu));
    let fr = frames_of(&x, f);
    let sc = gather_sparse_causal(&x, f);
    let fc = gather_first_frame(&x, f);
    let all = gather_all_frames(&x, f);
    for i in 0..f as usize {
        let prev = if i == 0 { 0 } else { i - 1 };
        assert_close(&sc.get(i as i64), &Tensor::cat(&[&fr[0], &fr[prev]], 0), 0.0, "sparse causal");
        assert_close(&fc.get(i as i64), &fr[0], 0.0, "first frame");
        assert_close(&all.get(i as i64), &Tensor::cat(&fr, 0), 0.0, "all frames");
    }
    // Fine-coarse: own tokens, then every other frame pooled by 2 on a 2x3 grid (a 1x2 coarse grid).
    let coarse = pool_tokens(&x, 2, 3, 2);
    assert_eq!(coarse.size(), vec![f, 2, c]);
    let naive_pool = |t: &Tensor| {
        let g = t.view([2, 3, c]);
        Tensor::stack(
            &[
                g.narrow(0, 0, 2).narrow(1, 0, 2).mean_dim([0i64, 1].as_slice(), false, Kind::Float),
                g.narrow(0, 0, 2).narrow(1, 2, 1).mean_dim([0i64, 1].as_slice(), false, Kind::Float),
            ],
            0,
        )
    };
    let fcg = gather_fine_coarse(&x, &coarse, f);
    for i in 0..f as usize {
        let mut parts = vec![fr[i].shallow_clone()];
        parts.extend((0..f as usize).filter(|&j| j != i).map(|j| naive_pool(&fr[j])));
        assert_close(&fcg.get(i as i64), &Tensor::cat(&parts, 0), 1e-6, "fine-coarse");
    }
    // Instance centering removes the temporal mean and keeps deviations.
    let seq = Tensor::randn([5, f, c], (Kind::Float, tch::Device::Cpu)) + 3.0;
    let centred = instance_center(&seq);
    assert!(centred.mean_dim(1, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
    assert_close(
        &(&seq - &centred).std_dim(1, false, false),
        &Tensor::zeros([5, c], (Kind::Float, tch::Device::Cpu)),
        1e-5,
        "only the mean is removed",
    );
}

#[test]
fn anchored_gathers_put_the_given_first_frame_in_frame_zeros_place() {
    use vidtune_kernels::attention::{first_frames, gather_first_frame_from, gather_sparse_causal_from};
    tch::manual_seed(2);
    let (b, f, l, c) = (2, 3, 5, 4);
    let x = Tensor::randn([b * f, l, c], (Kind::Float, tch::Device::Cpu));
    let anchor = Tensor::randn([b, l, c], (Kind::Float, tch::Device::Cpu));
    let sc = gather_sparse_causal_from(&x, f, &anchor);
    let fc = gather_first_frame_from(&anchor, f);
    assert_eq!(sc.size(), [b * f, 2 * l, c]);
    assert_eq!(fc.size(), [b * f, l, c]);
    for clip in 0..b {
        for i in 0..f {
            let row = clip * f + i;
            let prev = clip * f + (i - 1).max(0);
            let want = Tensor::cat(&[anchor.get(clip), x.get(prev)], 0);
            assert_close(&sc.get(row), &want, 0.0, "anchored sparse causal");
            assert_close(&fc.get(row), &anchor.get(clip), 0.0, "anchored first frame");
        }
    }
    // The clip's own first frame as the anchor is the plain gather.
    let own = first_frames(&x, f);
    assert_eq!(own.size(), [b, l, c]);
    assert_close(&gather_sparse_causal_from(&x, f, &own), &gather_sparse_causal(&x, f), 0.0, "own anchor");
    assert_close(&gather_first_frame_from(&own, f), &gather_first_frame(&x, f), 0.0, "own anchor");
}

/// `Backend::Auto` takes the explicit product for many queries over few keys on the CPU in float32, the
/// fused kernel elsewhere, and whichever it takes gives the naive softmax(q·kᵀ/√d)·v, forward and backward.
#[test]
fn automatic_attention_backend_picks_by_shape_and_keeps_the_values() {
    use vidtune_kernels::attention::{attention, Backend};
    tch::manual_seed(3);
    let opts = (Kind::Float, tch::Device::Cpu);
    let cases = [(256, 77, Backend::Math), (64, 128, Backend::Math), (256, 512, Backend::Sdpa), (8, 8, Backend::Sdpa)];
    for (lq, lk, expected) in cases {
        let q = Tensor::randn([2, 4, lq, 16], opts).set_requires_grad(true);
        let k = Tensor::randn([2, 4, lk, 16], opts).set_requires_grad(true);
        let v = Tensor::randn([2, 4, lk, 16], opts).set_requires_grad(true);
        assert_eq!(Backend::Auto.pick(&q, &k), expected, "Lq {lq}, Lk {lk}");
        let half = q.to_kind(Kind::BFloat16);
        assert_eq!(Backend::Auto.pick(&half, &k), Backend::Sdpa, "other precisions keep the fused kernel");
        let naive = (q.matmul(&k.transpose(-2, -1)) / 4.0).softmax(-1, Kind::Float).matmul(&v);
        let out = attention(&q, &k, &v, None, false, None, Backend::Auto);
        assert_close(&out, &naive, 1e-5, &format!("forward, Lq {lq}, Lk {lk}"));
        let g = Tensor::randn_like(&out);
        let grads = |y: &Tensor| Tensor::run_backward(&[y], &[&q, &k, &v], true, false);
        for (a, b) in grads(&(&out * &g).sum(Kind::Float)).iter().zip(grads(&(&naive * &g).sum(Kind::Float))) {
            assert_close(a, &b, 1e-4, &format!("backward, Lq {lq}, Lk {lk}"));
        }
    }
}
