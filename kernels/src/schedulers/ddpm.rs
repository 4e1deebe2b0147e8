//! DDPM forward-process arithmetic (diffusers `DDPMScheduler.add_noise` / `get_velocity`), used by tuning.

use super::NoiseSchedule;
use crate::error::{KernelError, Result};
use tch::Tensor;

/// `sqrt(ᾱ_t)` and `sqrt(1 − ᾱ_t)` for each batch element, shaped to broadcast against `like`.
fn coefficients(schedule: &NoiseSchedule, timesteps: &Tensor, like: &Tensor) -> Result<(Tensor, Tensor)> {
    let n = schedule.num_train_timesteps();
    let (lo, hi) = (timesteps.min().int64_value(&[]), timesteps.max().int64_value(&[]));
    if lo < 0 || hi >= n {
        return Err(KernelError::Invalid(format!("timesteps must lie in 0..{n}, got {lo}..={hi}")));
    }
    let ac = schedule.alphas_cumprod.to_device(like.device()).to_kind(like.kind());
    let picked = ac.index_select(0, &timesteps.to_device(like.device()).flatten(0, -1));
    let mut sqrt_alpha = picked.pow_tensor_scalar(0.5);
    let mut sqrt_one_minus = (picked.ones_like() - &picked).pow_tensor_scalar(0.5);
    while sqrt_alpha.dim() < like.dim() {
        sqrt_alpha = sqrt_alpha.unsqueeze(-1);
        sqrt_one_minus = sqrt_one_minus.unsqueeze(-1);
    }
    Ok((sqrt_alpha, sqrt_one_minus))
}

/// `sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·noise`, one timestep per batch element.
pub fn add_noise(schedule: &NoiseSchedule, original: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
    let (a, b) = coefficients(schedule, timesteps, original)?;
    Ok(a * original + b * noise)
}

/// The v-prediction target `sqrt(ᾱ_t)·noise − sqrt(1 − ᾱ_t)·x0`.
pub fn get_velocity(schedule: &NoiseSchedule, sample: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
    let (a, b) = coefficients(schedule, timesteps, sample)?;
    Ok(a * noise - b * sample)
}
