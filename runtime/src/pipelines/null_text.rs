//! Null-text inversion (Mokady et al., "Null-text Inversion for Editing Real Images using Guided Diffusion
//! Models", CVPR 2023, §3.2 and Algorithm 1). DDIM inversion retraces the clip only without guidance;
//! with classifier-free guidance at w the sampled trajectory drifts from the inverted one and the
//! reconstruction (and so every edit's kept part) loses the clip. After the inversion with the source
//! prompt C, the unconditional ("null") embedding is optimised step by step, the conditional one fixed:
//!
//! - start from z̄_T = z*_T and ∅_T = the empty prompt's embedding;
//! - at each timestep t, descending: minimise ‖z*_{t−1} − DDIM(z̄_t, ε̃)‖² over ∅_t, where
//!   ε̃ = ε(z̄_t, t, ∅_t) + w·(ε(z̄_t, t, C) − ε(z̄_t, t, ∅_t)) (Eq. 3), with Adam at lr·(1 − i/100) for at most
//!   N inner steps, stopping early once the loss is below ε + i·2·10⁻⁵ (the reference code's schedule);
//! - then z̄_{t−1} = DDIM(z̄_t, ε̃) with the optimised ∅_t, and ∅_{t−1} starts from ∅_t.
//!
//! The per-step embeddings travel with the inverted latents; `sample` uses them in place of the
//! negative prompt's, so guided sampling with the source prompt reconstructs the clip, and an edit
//! prompt keeps what it does not change.

use super::common::Latents;
use super::denoise::NoisePredictor;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::video::Conditioning;
use tch::{Kind, Tensor};

/// How the null embeddings are optimised.
#[derive(Debug, Clone, PartialEq)]
pub struct NullTextOptions {
    /// Adam steps per timestep at most (the paper's N = 10).
    pub inner_steps: usize,
    /// Adam's learning rate at the first timestep (decays linearly by 1 % a step, as in the reference).
    pub lr: f64,
    /// The guidance w the embeddings are optimised for (the paper's 7.5).
    pub guidance: f64,
    /// The early-stop threshold ε on the step's loss (grows by 2·10⁻⁵ a step).
    pub epsilon: f64,
}

impl Default for NullTextOptions {
    fn default() -> Self {
        NullTextOptions { inner_steps: 10, lr: 1e-2, guidance: 7.5, epsilon: 1e-5 }
    }
}

/// The optimised null embeddings of an inversion: one `[1, L, D]` per sampling step (in the order sampling
/// walks), and the guidance they were optimised for.
#[derive(Debug, Clone)]
pub struct NullText {
    pub embeddings: std::rc::Rc<Vec<Tensor>>,
    pub guidance: f64,
}

/// Adam on one tensor (β = 0.9, 0.999; ε = 10⁻⁸), its moments fresh for each timestep as in the reference.
struct Adam {
    m: Tensor,
    v: Tensor,
    t: i32,
    lr: f64,
}

impl Adam {
    fn new(like: &Tensor, lr: f64) -> Self {
        Adam { m: like.zeros_like(), v: like.zeros_like(), t: 0, lr }
    }

    /// The parameter after one step along `grad`.
    fn step(&mut self, param: &Tensor, grad: &Tensor) -> Tensor {
        let (b1, b2) = (0.9, 0.999);
        self.t += 1;
        self.m = &self.m * b1 + grad * (1.0 - b1);
        self.v = &self.v * b2 + grad.square() * (1.0 - b2);
        let m_hat = &self.m / (1.0 - f64::powi(b1, self.t));
        let v_hat = &self.v / (1.0 - f64::powi(b2, self.t));
        param - m_hat / (v_hat.sqrt() + 1e-8) * self.lr
    }
}

/// Optimises the null embeddings for `inv`, inverted by `model` under `cond` (the source prompt, with
/// the masks of the inversion), starting from `null` (the empty prompt's embedding).
pub fn optimise(
    model: &dyn NoisePredictor,
    inv: &Latents,
    cond: &Conditioning,
    null: &Tensor,
    opts: &NullTextOptions,
) -> Result<NullText> {
    let valid = opts.inner_steps > 0 && opts.lr > 0.0 && opts.guidance >= 1.0 && opts.epsilon >= 0.0;
    if !valid {
        return Err(Error::Invalid(format!(
            "null_text: inner_steps ≥ 1, lr > 0, guidance ≥ 1 and epsilon ≥ 0 (got {opts:?})"
        )));
    }
    let trajectory = inv.trajectory.as_ref().ok_or_else(|| {
        Error::Invalid("null-text inversion needs the inversion's trajectory (these latents have none)".into())
    })?;
    let n = trajectory.len() - 1;
    let mut ddim = model.sd().scheduler.ddim()?;
    ddim.set_timesteps(inv.steps)?;
    let timesteps = ddim.timesteps().to_vec();
    if timesteps.len() != n {
        return Err(Error::Invalid(format!("null-text: {} timesteps for a trajectory of {n} steps", timesteps.len())));
    }
    let device = model.device();
    let mut x = trajectory[n].shallow_clone();
    let mut uncond = null.detach().copy();
    let mut embeddings = Vec::with_capacity(n);
    let mut progress = Progress::new("null-text", n as u64).unit("steps");
    let guided = |eps_u: &Tensor, eps_c: &Tensor| eps_u + (eps_c - eps_u) * opts.guidance;
    for (i, &t) in timesteps.iter().enumerate() {
        let target = &trajectory[n - 1 - i];
        let ts = Tensor::from(t).to_device(device);
        let c = cond.at_step(t as f64, i, n);
        let with_text = |text: &Tensor| {
            let mut u = c.clone();
            u.text = text.shallow_clone();
            // The subject's words belong to the conditional prompt only.
            u.subject_tokens = vec![vec![]];
            u
        };
        let eps_c = tch::no_grad(|| model.predict(&x, &ts, &c))?;
        let mut adam = Adam::new(&uncond, opts.lr * (1.0 - i as f64 / 100.0).max(0.0));
        let threshold = opts.epsilon + i as f64 * 2e-5;
        for _ in 0..opts.inner_steps {
            let var = uncond.detach().set_requires_grad(true);
            let eps_u = model.predict(&x, &ts, &with_text(&var))?;
            let prev = ddim.step(&guided(&eps_u, &eps_c), t, &x, 0.0, None, false)?.prev_sample;
            let loss = (prev.to_kind(Kind::Float) - target.to_kind(Kind::Float)).square().mean(Kind::Float);
            let grad = Tensor::run_backward(&[&loss], &[&var], false, false).remove(0);
            uncond = tch::no_grad(|| adam.step(&uncond, &grad));
            if loss.double_value(&[]) < threshold {
                break;
            }
        }
        let eps_u = tch::no_grad(|| model.predict(&x, &ts, &with_text(&uncond)))?;
        x = tch::no_grad(|| ddim.step(&guided(&eps_u, &eps_c), t, &x, 0.0, None, false))?.prev_sample;
        embeddings.push(uncond.copy());
        progress.step()?;
    }
    progress.finish();
    Ok(NullText { embeddings: std::rc::Rc::new(embeddings), guidance: opts.guidance })
}
