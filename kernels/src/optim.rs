//! Optimisation arithmetic: AdamW (PyTorch's `torch.optim.AdamW`, step for step), gradient-norm
//! clipping (`clip_grad_norm_`), spectral normalisation by power iteration (Miyato et al. 2018, as
//! `torch.nn.utils.spectral_norm`), and the float32 MSE loss.

use tch::{Kind, Tensor};

/// AdamW hyper-parameters (defaults: Tune-A-Video's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { lr: 3e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

impl AdamW {
    /// One step (1-based `step`): updates `param` and its moments `m`, `v` (zero-initialised, same shape) in
    /// place. Decoupled weight decay, bias-corrected moments, as `torch.optim.AdamW` — and in place as its
    /// single-tensor path is: two temporaries (the scaled gradient and the denominator) instead of a new
    /// tensor per operation.
    pub fn step(&self, param: &mut Tensor, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, step: i64) {
        self.step_scaled(param, grad, 1.0, m, v, step)
    }

    /// [`AdamW::step`] with the gradient multiplied by `grad_scale` first (the factor of gradient
    /// clipping), as `step(param, &(grad * grad_scale), …)` — without the scaled copy. Contiguous float32
    /// tensors on the CPU take one fused pass over the four tensors (the op-by-op path reads and writes
    /// them about 25 times: the update is memory-bound, and tuning's trainable set is 300 MB on SD1.x),
    /// the same operations in the same order (see `adamw_pass` for the rounding); anything else takes the
    /// op-by-op path.
    pub fn step_scaled(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        grad_scale: f64,
        m: &mut Tensor,
        v: &mut Tensor,
        step: i64,
    ) {
        if fusable(&[&*param, grad, &*m, &*v]) {
            return self.step_fused(param, grad, grad_scale, m, v, step);
        }
        if grad_scale != 1.0 {
            let scaled = tch::no_grad(|| grad * grad_scale);
            return self.step_ops(param, &scaled, m, v, step);
        }
        self.step_ops(param, grad, m, v, step)
    }

    /// The update as libtorch operations (any dtype, any device).
    pub fn step_ops(&self, param: &mut Tensor, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, step: i64) {
        tch::no_grad(|| {
            let _ = param.g_mul_scalar_(1.0 - self.lr * self.weight_decay);
            let _ = m.lerp_(grad, 1.0 - self.beta1);
            let _ = v.g_mul_scalar_(self.beta2).addcmul_(grad, &(grad * (1.0 - self.beta2)));
            let bias1 = 1.0 - self.beta1.powi(step as i32);
            let bias2_sqrt = (1.0 - self.beta2.powi(step as i32)).sqrt();
            let mut denom = v.sqrt();
            let _ = denom.g_div_scalar_(bias2_sqrt).g_add_scalar_(self.eps);
            let _ = param.addcdiv_(m, &denom.g_mul_scalar_(-bias1 / self.lr));
        });
    }

    /// The fused pass (see [`AdamW::step_scaled`]); the caller has checked [`fusable`].
    fn step_fused(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        grad_scale: f64,
        m: &mut Tensor,
        v: &mut Tensor,
        step: i64,
    ) {
        let n = param.numel();
        // libtorch computes a float tensor's operation with a scalar in float32: the scalars as it rounds them.
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let w1 = (1.0 - self.beta1) as f32;
        let (b2, one_minus_b2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let bias1 = 1.0 - self.beta1.powi(step as i32);
        let bias2_sqrt = ((1.0 - self.beta2.powi(step as i32)).sqrt()) as f32;
        let (eps, to_step) = (self.eps as f32, (-bias1 / self.lr) as f32);
        // A factor of one multiplies exactly, so the pass always multiplies.
        let k = Constants { scale: grad_scale as f32, decay, w1, b2, one_minus_b2, bias2_sqrt, eps, to_step };
        // SAFETY: `fusable` checked that the four tensors are contiguous float32 on the CPU, of the same
        // number of elements, in four distinct storages; the slices live only within this call, which holds
        // `param`, `m` and `v` mutably.
        let (p, g, m, v) = unsafe {
            (
                std::slice::from_raw_parts_mut(param.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts(grad.data_ptr() as *const f32, n),
                std::slice::from_raw_parts_mut(m.data_ptr() as *mut f32, n),
                std::slice::from_raw_parts_mut(v.data_ptr() as *mut f32, n),
            )
        };
        let update = move |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { adamw_pass_avx2(&k, p, g, m, v) };
                }
                // Without FMA instructions `mul_add` would be a slow library call.
                adamw_pass::<false>(&k, p, g, m, v)
            }
            #[cfg(not(target_arch = "x86_64"))]
            adamw_pass::<true>(&k, p, g, m, v)
        };
        // Memory-bound: one chunk per thread libtorch would use, for tensors worth splitting.
        let threads = (tch::get_num_threads().max(1) as usize).min(n / (1 << 15)).max(1);
        if threads == 1 {
            return update(p, g, m, v);
        }
        let chunk = n.div_ceil(threads);
        std::thread::scope(|scope| {
            let parts = p.chunks_mut(chunk).zip(g.chunks(chunk)).zip(m.chunks_mut(chunk)).zip(v.chunks_mut(chunk));
            for (((p, g), m), v) in parts {
                scope.spawn(move || update(p, g, m, v));
            }
        });
    }
}

/// The float32 scalars of one fused AdamW pass.
#[derive(Clone, Copy)]
struct Constants {
    scale: f32,
    decay: f32,
    w1: f32,
    b2: f32,
    one_minus_b2: f32,
    bias2_sqrt: f32,
    eps: f32,
    to_step: f32,
}

/// The fused update, element by element, written for the compiler to vectorise. With `FMA`, the moments
/// are libtorch's to the bit (its `lerp_` and `addcmul_` kernels use fused multiply-adds where the CPU has
/// them) and the parameter within a float32 rounding of it; without, each operation is rounded on its own.
/// Rust never fuses a multiply and an add by itself.
#[inline(always)]
fn adamw_pass<const FMA: bool>(k: &Constants, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = g * k.scale;
        let pi = *p * k.decay;
        // `lerp_` with a weight below one half: m + w (g − m); then `mul_` and `addcmul_(g, g · (1 − β₂))`.
        let (mi, vi) = if FMA {
            (k.w1.mul_add(g - *m, *m), g.mul_add(g * k.one_minus_b2, *v * k.b2))
        } else {
            (*m + k.w1 * (g - *m), *v * k.b2 + g * (g * k.one_minus_b2))
        };
        let denom = (vi.sqrt() / k.bias2_sqrt + k.eps) * k.to_step;
        (*p, *m, *v) = (pi + mi / denom, mi, vi);
    }
}

/// [`adamw_pass`] compiled for AVX2 with FMA (eight lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adamw_pass_avx2(k: &Constants, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    adamw_pass::<true>(k, p, g, m, v)
}

/// Whether tensors can be updated by a fused pass over their memory: float32, on the CPU, contiguous,
/// of the same size, none sharing another's storage.
fn fusable(ts: &[&Tensor]) -> bool {
    let n = ts[0].numel();
    let ok = ts.iter().all(|t| {
        t.defined() && t.kind() == Kind::Float && t.device() == tch::Device::Cpu && t.is_contiguous() && t.numel() == n
    });
    if !ok || n == 0 {
        return false;
    }
    let ranges: Vec<(usize, usize)> =
        ts.iter().map(|t| (t.data_ptr() as usize, t.data_ptr() as usize + 4 * n)).collect();
    ranges.iter().enumerate().all(|(i, a)| ranges[i + 1..].iter().all(|b| a.1 <= b.0 || b.1 <= a.0))
}

/// The joint L2 norm of non-empty `grads` in float32, as `clip_grad_norm_` computes it: the norm of the
/// per-tensor norms (a 0-dim tensor on their device).
fn total_norm(grads: &[Tensor]) -> Tensor {
    let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).norm()).collect();
    Tensor::stack(&norms, 0).norm()
}

/// Scales `grads` in place so that their joint L2 norm is at most `max_norm`; returns the norm before
/// clipping (`torch.nn.utils.clip_grad_norm_`).
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    let total = total_norm(grads).double_value(&[]);
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        tch::no_grad(|| {
            for g in grads.iter_mut() {
                let scaled = &*g * coef;
                g.copy_(&scaled);
            }
        });
    }
    total
}

/// Gradient clipping's norm and factor, without scaling: the norm before clipping (a 0-dim float32
/// tensor) and `min(1, max_norm / (norm + 1e-6))` in float64, the factor [`clip_grad_norm_on_device`]
/// multiplies by, to the bit. For an update that applies the factor itself ([`AdamW::step_scaled`]).
pub fn clip_factor(grads: &[Tensor], max_norm: f64) -> (Tensor, f64) {
    if grads.is_empty() {
        return (Tensor::zeros([], (Kind::Float, tch::Device::Cpu)), 1.0);
    }
    let total = total_norm(grads);
    let coef = (max_norm / (total.double_value(&[]) + 1e-6)).min(1.0);
    (total, coef)
}

/// [`clip_grad_norm`] without reading the norm back: the factor `min(1, max_norm / (norm + 1e-6))` is
/// computed on the device (in float64, as the host version does) and every gradient multiplied by it, so
/// the results are the same bits. Returns the norm before clipping, a 0-dim float32 tensor.
pub fn clip_grad_norm_on_device(grads: &mut [Tensor], max_norm: f64) -> Tensor {
    if grads.is_empty() {
        return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
    }
    let total = total_norm(grads);
    let max = Tensor::full([], max_norm, (Kind::Double, total.device()));
    let coef = (max / (total.to_kind(Kind::Double) + 1e-6)).clamp_max(1.0);
    tch::no_grad(|| {
        for g in grads.iter_mut() {
            let scaled = &*g * &coef;
            g.copy_(&scaled);
        }
    });
    total
}

fn normalize(x: &Tensor) -> Tensor {
    x / x.norm().clamp_min(1e-12)
}

/// Spectral normalisation state of one weight: the left and right singular-vector estimates.
#[derive(Debug)]
pub struct PowerIteration {
    pub u: Tensor,
    pub v: Tensor,
}

impl PowerIteration {
    /// Fresh estimates for `weight` (`[out, …]`), refined by `warmup` iterations (PyTorch's
    /// parametrization does 15), from standard-normal draws `u0` `[out]`, `v0` `[in]`.
    pub fn new(weight: &Tensor, u0: &Tensor, v0: &Tensor, warmup: usize) -> Self {
        let mut state = PowerIteration { u: normalize(u0), v: normalize(v0) };
        state.iterate(weight, warmup);
        state
    }

    /// `n` power iterations (no gradient).
    pub fn iterate(&mut self, weight: &Tensor, n: usize) {
        tch::no_grad(|| {
            let w = weight.reshape([weight.size()[0], -1]).detach();
            for _ in 0..n {
                self.v = normalize(&w.transpose(0, 1).mv(&self.u));
                self.u = normalize(&w.mv(&self.v));
            }
        });
    }

    /// `σ = uᵀ W v` (differentiable in `W`) and `W / σ`.
    pub fn normalized(&self, weight: &Tensor) -> (Tensor, Tensor) {
        let w = weight.reshape([weight.size()[0], -1]);
        let sigma = self.u.to_kind(w.kind()).dot(&w.mv(&self.v.to_kind(w.kind())));
        (weight / &sigma, sigma)
    }
}

/// Mean squared error in float32 (the loss of every tuning step).
pub fn mse(a: &Tensor, b: &Tensor) -> Tensor {
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).square().mean(Kind::Float)
}
