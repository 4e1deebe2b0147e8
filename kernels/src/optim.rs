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
}

/// Scales `grads` in place so that their joint L2 norm is at most `max_norm`; returns the norm before
/// clipping (`torch.nn.utils.clip_grad_norm_`).
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).norm()).collect();
    let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
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

/// [`clip_grad_norm`] without reading the norm back: the factor `min(1, max_norm / (norm + 1e-6))` is
/// computed on the device (in float64, as the host version does) and every gradient multiplied by it, so
/// the results are the same bits. Returns the norm before clipping, a 0-dim float32 tensor.
pub fn clip_grad_norm_on_device(grads: &mut [Tensor], max_norm: f64) -> Tensor {
    if grads.is_empty() {
        return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
    }
    let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).norm()).collect();
    let total = Tensor::stack(&norms, 0).norm();
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
