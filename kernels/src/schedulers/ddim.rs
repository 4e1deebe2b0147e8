//! DDIM (Song et al. 2021) as diffusers' `DDIMScheduler` computes it, and the DDIM inversion step of
//! Tune-A-Video (`tuneavideo/util.py::next_step`).

use super::{NoiseSchedule, Prediction, Spacing};
use crate::error::{KernelError, Result};
use tch::{Kind, Tensor};

/// The DDIM options of a scheduler config (diffusers' names and defaults in `runtime`'s config).
#[derive(Debug, Clone, PartialEq)]
pub struct DdimParams {
    pub prediction: Prediction,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub set_alpha_to_one: bool,
    pub steps_offset: i64,
    pub spacing: Spacing,
}

/// The result of one DDIM step.
#[derive(Debug)]
pub struct DdimStep {
    pub prev_sample: Tensor,
    pub pred_original_sample: Tensor,
}

/// A DDIM scheduler with its inference timesteps.
#[derive(Debug)]
pub struct Ddim {
    pub schedule: NoiseSchedule,
    pub params: DdimParams,
    final_alpha_cumprod: Tensor,
    timesteps: Vec<i64>,
    num_inference_steps: i64,
}

impl Clone for Ddim {
    fn clone(&self) -> Self {
        Ddim {
            schedule: self.schedule.clone(),
            params: self.params.clone(),
            final_alpha_cumprod: self.final_alpha_cumprod.shallow_clone(),
            timesteps: self.timesteps.clone(),
            num_inference_steps: self.num_inference_steps,
        }
    }
}

impl Ddim {
    pub fn new(schedule: NoiseSchedule, params: DdimParams) -> Self {
        let final_alpha_cumprod =
            if params.set_alpha_to_one { Tensor::from(1.0f32) } else { schedule.alpha_cumprod(0).copy() };
        Ddim { schedule, params, final_alpha_cumprod, timesteps: vec![], num_inference_steps: 0 }
    }

    /// Chooses `n` inference timesteps (descending), following `timestep_spacing` and `steps_offset`.
    pub fn set_timesteps(&mut self, n: i64) -> Result<()> {
        let train = self.schedule.num_train_timesteps();
        if n <= 0 || n > train {
            return Err(KernelError::Invalid(format!("steps must be in 1..={train}, got {n}")));
        }
        self.timesteps = match self.params.spacing {
            Spacing::Leading => {
                let ratio = train / n;
                (0..n).rev().map(|i| i * ratio + self.params.steps_offset).collect()
            }
            Spacing::Trailing => {
                let ratio = train as f64 / n as f64;
                // np.round(np.arange(train, 0, -ratio)) - 1
                let mut out = vec![];
                let mut x = train as f64;
                let mut k = 0;
                while x > 0.0 {
                    out.push(round_half_even(x) as i64 - 1);
                    k += 1;
                    x = train as f64 - k as f64 * ratio;
                }
                out
            }
            Spacing::Linspace => (0..n)
                .rev()
                .map(|i| {
                    let x = if n == 1 { 0.0 } else { i as f64 * (train - 1) as f64 / (n - 1) as f64 };
                    round_half_even(x) as i64
                })
                .collect(),
        };
        self.num_inference_steps = n;
        Ok(())
    }

    /// The inference timesteps, descending (noisiest first).
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    pub fn num_inference_steps(&self) -> i64 {
        self.num_inference_steps
    }

    fn step_ratio(&self) -> Result<i64> {
        if self.num_inference_steps == 0 {
            return Err(KernelError::Invalid("set_timesteps must be called before step".into()));
        }
        Ok(self.schedule.num_train_timesteps() / self.num_inference_steps)
    }

    fn alpha_at(&self, t: i64) -> Tensor {
        if t >= 0 {
            self.schedule.alpha_cumprod(t)
        } else {
            self.final_alpha_cumprod.shallow_clone()
        }
    }

    fn check_t(&self, t: i64) -> Result<()> {
        let n = self.schedule.num_train_timesteps();
        if !(0..n).contains(&t) {
            return Err(KernelError::Invalid(format!("timestep {t} outside 0..{n}")));
        }
        Ok(())
    }

    /// `x0` and `ε` predicted from the model output at timestep alpha `alpha_t`.
    fn predictions(&self, model_output: &Tensor, sample: &Tensor, alpha_t: &Tensor) -> (Tensor, Tensor) {
        let beta_t = alpha_t.ones_like() - alpha_t;
        let (sa, sb) = (alpha_t.pow_tensor_scalar(0.5), beta_t.pow_tensor_scalar(0.5));
        match self.params.prediction {
            Prediction::Epsilon => ((sample - &sb * model_output) / &sa, model_output.shallow_clone()),
            Prediction::Sample => {
                let eps = (sample - &sa * model_output) / &sb;
                (model_output.shallow_clone(), eps)
            }
            Prediction::VPrediction => (&sa * sample - &sb * model_output, &sa * model_output + &sb * sample),
        }
    }

    /// One denoising step from `t` to `t − train/steps`. With `eta > 0`, `variance_noise` (standard normal,
    /// shaped like `model_output`) is required — draw it from the caller's seeded generator.
    pub fn step(
        &self,
        model_output: &Tensor,
        t: i64,
        sample: &Tensor,
        eta: f64,
        variance_noise: Option<&Tensor>,
        use_clipped_model_output: bool,
    ) -> Result<DdimStep> {
        self.check_t(t)?;
        let prev_t = t - self.step_ratio()?;
        let alpha_t = self.schedule.alpha_cumprod(t);
        let alpha_prev = self.alpha_at(prev_t);
        let beta_t = alpha_t.ones_like() - &alpha_t;
        let (mut x0, mut eps) = self.predictions(model_output, sample, &alpha_t);
        if self.params.thresholding {
            x0 = self.threshold(&x0);
        } else if self.params.clip_sample {
            let r = self.params.clip_sample_range;
            x0 = x0.clamp(-r, r);
        }
        let beta_prev = alpha_prev.ones_like() - &alpha_prev;
        let variance = (&beta_prev / &beta_t) * (alpha_t.ones_like() - &alpha_t / &alpha_prev);
        let std_dev = variance.pow_tensor_scalar(0.5) * eta;
        if use_clipped_model_output {
            eps = (sample - alpha_t.pow_tensor_scalar(0.5) * &x0) / beta_t.pow_tensor_scalar(0.5);
        }
        let direction =
            (alpha_prev.ones_like() - &alpha_prev - std_dev.pow_tensor_scalar(2)).pow_tensor_scalar(0.5) * &eps;
        let mut prev = alpha_prev.pow_tensor_scalar(0.5) * &x0 + direction;
        if eta > 0.0 {
            let noise =
                variance_noise.ok_or_else(|| KernelError::Invalid("DDIM with eta > 0 needs variance noise".into()))?;
            if noise.size() != model_output.size() {
                return Err(KernelError::Shape {
                    what: "variance noise".into(),
                    expected: format!("{:?}", model_output.size()),
                    got: noise.size(),
                });
            }
            prev = prev + std_dev * noise;
        }
        Ok(DdimStep { prev_sample: prev, pred_original_sample: x0 })
    }

    /// Tune-A-Video's DDIM inversion step: from the sample at noise level `t − train/steps` (the final
    /// alpha below 0) up to `t`, with the ε predicted at `t`.
    pub fn inversion_step(&self, model_output: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        self.check_t(t)?;
        let current = (t - self.step_ratio()?).min(self.schedule.num_train_timesteps() - 1);
        let alpha_t = self.alpha_at(current);
        let alpha_next = self.schedule.alpha_cumprod(t);
        let beta_t = alpha_t.ones_like() - &alpha_t;
        let x0 = (sample - beta_t.pow_tensor_scalar(0.5) * model_output) / alpha_t.pow_tensor_scalar(0.5);
        let direction = (alpha_next.ones_like() - &alpha_next).pow_tensor_scalar(0.5) * model_output;
        Ok(alpha_next.pow_tensor_scalar(0.5) * x0 + direction)
    }

    /// Dynamic thresholding (Imagen): clamp each sample to its `ratio` quantile of |x0|, then rescale.
    fn threshold(&self, sample: &Tensor) -> Tensor {
        let kind = sample.kind();
        let size = sample.size();
        let flat = sample.to_kind(Kind::Float).reshape([size[0], -1]);
        let s = flat
            .abs()
            .quantile_scalar(self.params.dynamic_thresholding_ratio, Some(1), false, "linear")
            .clamp(1.0, self.params.sample_max_value)
            .unsqueeze(1);
        let neg = -&s;
        flat.clamp_tensor(Some(&neg), Some(&s)).divide(&s).reshape(size.as_slice()).to_kind(kind)
    }
}

/// numpy's `round` (half to even).
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::BetaSchedule;

    fn sd_ddim(spacing: Spacing) -> Ddim {
        let schedule = NoiseSchedule::new(1000, 0.00085, 0.012, BetaSchedule::ScaledLinear, None, false).unwrap();
        Ddim::new(
            schedule,
            DdimParams {
                prediction: Prediction::Epsilon,
                clip_sample: false,
                clip_sample_range: 1.0,
                thresholding: false,
                dynamic_thresholding_ratio: 0.995,
                sample_max_value: 1.0,
                set_alpha_to_one: false,
                steps_offset: 1,
                spacing,
            },
        )
    }

    #[test]
    fn timesteps_follow_spacing() {
        let mut d = sd_ddim(Spacing::Leading);
        d.set_timesteps(50).unwrap();
        assert_eq!(&d.timesteps()[..3], &[981, 961, 941]);
        assert_eq!(*d.timesteps().last().unwrap(), 1);
        let mut t = sd_ddim(Spacing::Trailing);
        t.set_timesteps(3).unwrap();
        assert_eq!(t.timesteps(), &[999, 666, 332]);
        let mut l = sd_ddim(Spacing::Linspace);
        l.set_timesteps(4).unwrap();
        assert_eq!(l.timesteps(), &[999, 666, 333, 0]);
    }

    #[test]
    fn round_half_even_like_numpy() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(332.5), 332.0);
        assert_eq!(round_half_even(1.2), 1.0);
    }
}
