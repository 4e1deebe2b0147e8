//! Noise-schedule arithmetic of the diffusers schedulers, step for step in the same float32 tensor
//! operations (so results match to the bit where libtorch is the same): the beta schedules, DDPM
//! `add_noise` / `get_velocity` and DDIM `set_timesteps` / `step`, plus DDIM inversion as Tune-A-Video
//! defines it.

pub mod ddim;
pub mod ddpm;

use crate::error::{KernelError, Result};
use tch::{Kind, Tensor};

/// `beta_schedule` of a scheduler config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

impl BetaSchedule {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "linear" => Ok(BetaSchedule::Linear),
            "scaled_linear" => Ok(BetaSchedule::ScaledLinear),
            "squaredcos_cap_v2" => Ok(BetaSchedule::SquaredCosCapV2),
            other => Err(KernelError::Invalid(format!(
                "unknown beta_schedule {other:?}; expected \"linear\", \"scaled_linear\" or \"squaredcos_cap_v2\""
            ))),
        }
    }
}

/// What the model predicts (`prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    Sample,
}

impl Prediction {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::VPrediction),
            "sample" => Ok(Prediction::Sample),
            other => Err(KernelError::Invalid(format!(
                "unknown prediction_type {other:?}; expected \"epsilon\", \"v_prediction\" or \"sample\""
            ))),
        }
    }
}

/// How inference timesteps are spread over the training ones (`timestep_spacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl Spacing {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            other => Err(KernelError::Invalid(format!(
                "unknown timestep_spacing {other:?}; expected \"leading\", \"trailing\" or \"linspace\""
            ))),
        }
    }
}

/// The training noise schedule: `betas` and `alphas_cumprod` (float32, CPU), as diffusers builds them.
#[derive(Debug)]
pub struct NoiseSchedule {
    pub betas: Tensor,
    pub alphas_cumprod: Tensor,
}

impl Clone for NoiseSchedule {
    fn clone(&self) -> Self {
        NoiseSchedule { betas: self.betas.shallow_clone(), alphas_cumprod: self.alphas_cumprod.shallow_clone() }
    }
}

impl NoiseSchedule {
    /// `trained_betas` overrides the schedule; `rescale_zero_snr` applies `rescale_zero_terminal_snr`.
    pub fn new(
        num_train_timesteps: i64,
        beta_start: f64,
        beta_end: f64,
        schedule: BetaSchedule,
        trained_betas: Option<&[f64]>,
        rescale_zero_snr: bool,
    ) -> Result<Self> {
        if num_train_timesteps <= 0 {
            return Err(KernelError::Invalid(format!(
                "num_train_timesteps must be positive, got {num_train_timesteps}"
            )));
        }
        let opts = (Kind::Float, tch::Device::Cpu);
        let mut betas = match (trained_betas, schedule) {
            (Some(b), _) => Tensor::from_slice(b).to_kind(Kind::Float),
            (None, BetaSchedule::Linear) => Tensor::linspace(beta_start, beta_end, num_train_timesteps, opts),
            (None, BetaSchedule::ScaledLinear) => {
                Tensor::linspace(beta_start.sqrt(), beta_end.sqrt(), num_train_timesteps, opts).pow_tensor_scalar(2)
            }
            (None, BetaSchedule::SquaredCosCapV2) => cosine_betas(num_train_timesteps, 0.999),
        };
        if rescale_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas = betas.ones_like() - &betas;
        let alphas_cumprod = alphas.cumprod(0, Kind::Float);
        Ok(NoiseSchedule { betas, alphas_cumprod })
    }

    pub fn num_train_timesteps(&self) -> i64 {
        self.alphas_cumprod.size()[0]
    }

    /// `alphas_cumprod[t]` as a 0-dim float32 tensor.
    pub fn alpha_cumprod(&self, t: i64) -> Tensor {
        self.alphas_cumprod.get(t)
    }
}

/// The cosine schedule (`betas_for_alpha_bar`), in f64 then cast to float32 as diffusers does.
fn cosine_betas(n: i64, max_beta: f64) -> Tensor {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    let betas: Vec<f64> = (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect();
    Tensor::from_slice(&betas).to_kind(Kind::Float)
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023, Algorithm 1), as diffusers does.
fn rescale_zero_terminal_snr(betas: &Tensor) -> Tensor {
    let alphas = betas.ones_like() - betas;
    let cumprod = alphas.cumprod(0, Kind::Float);
    let sqrt = cumprod.sqrt();
    let n = sqrt.size()[0];
    let (first, last) = (sqrt.get(0).copy(), sqrt.get(n - 1).copy());
    let shifted = (&sqrt - &last) * (&first / (&first - &last));
    let bar = shifted.pow_tensor_scalar(2);
    let ratios = bar.narrow(0, 1, n - 1) / bar.narrow(0, 0, n - 1);
    let alphas = Tensor::cat(&[bar.narrow(0, 0, 1), ratios], 0);
    alphas.ones_like() - alphas
}
