//! `scheduler/scheduler_config.json`: the fields every diffusers scheduler of SD1.x shares, read with
//! `DDIMScheduler`'s defaults (so a PNDM or DDPM config yields the DDIM that `DDIMScheduler.from_config`
//! would build).

use super::ExtraFields;
use crate::error::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use vidtune_kernels::schedulers::ddim::{Ddim, DdimParams};
use vidtune_kernels::schedulers::{BetaSchedule, NoiseSchedule, Prediction, Spacing};

fn d_1000() -> i64 {
    1000
}
fn d_start() -> f64 {
    0.0001
}
fn d_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}
fn d_eps() -> String {
    "epsilon".into()
}
fn d_ratio() -> f64 {
    0.995
}
fn d_leading() -> String {
    "leading".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "d_1000")]
    pub num_train_timesteps: i64,
    #[serde(default = "d_start")]
    pub beta_start: f64,
    #[serde(default = "d_end")]
    pub beta_end: f64,
    #[serde(default = "d_linear")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "d_true")]
    pub clip_sample: bool,
    #[serde(default = "d_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: i64,
    #[serde(default = "d_eps")]
    pub prediction_type: String,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "d_ratio")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(default = "d_one")]
    pub clip_sample_range: f64,
    #[serde(default = "d_one")]
    pub sample_max_value: f64,
    #[serde(default = "d_leading")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for SchedulerConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }

    fn validate(&self) -> std::result::Result<(), String> {
        super::check_count("num_train_timesteps", self.num_train_timesteps, 100_000)?;
        let (a, b) = (self.beta_start, self.beta_end);
        if !(a.is_finite() && b.is_finite() && a > 0.0 && a <= b && b < 1.0) {
            return Err(format!("beta_start {a} and beta_end {b} must satisfy 0 < beta_start <= beta_end < 1"));
        }
        if let Some(betas) = &self.trained_betas {
            if betas.iter().any(|b| !(b.is_finite() && *b > 0.0 && *b < 1.0)) {
                return Err("trained_betas must all lie strictly between 0 and 1".into());
            }
            if betas.len() as i64 != self.num_train_timesteps {
                return Err(format!(
                    "trained_betas has {} values for {} num_train_timesteps",
                    betas.len(),
                    self.num_train_timesteps
                ));
            }
        }
        if self.steps_offset < 0 || self.steps_offset >= self.num_train_timesteps {
            return Err(format!("steps_offset must be in 0..{}, got {}", self.num_train_timesteps, self.steps_offset));
        }
        Ok(())
    }
}

impl SchedulerConfig {
    /// Stable Diffusion 1.x's scheduler settings.
    pub fn sd_default() -> Self {
        serde_json::from_str(include_str!("../../configs/sd-v1-4/scheduler/scheduler_config.json"))
            .expect("bundled config")
    }

    pub fn prediction(&self) -> Result<Prediction> {
        Ok(Prediction::parse(&self.prediction_type)?)
    }

    /// The training noise schedule.
    pub fn noise_schedule(&self) -> Result<NoiseSchedule> {
        Ok(NoiseSchedule::new(
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            BetaSchedule::parse(&self.beta_schedule)?,
            self.trained_betas.as_deref(),
            self.rescale_betas_zero_snr,
        )?)
    }

    /// The DDIM scheduler this config describes (timesteps not set yet).
    pub fn ddim(&self) -> Result<Ddim> {
        let params = DdimParams {
            prediction: self.prediction()?,
            clip_sample: self.clip_sample,
            clip_sample_range: self.clip_sample_range,
            thresholding: self.thresholding,
            dynamic_thresholding_ratio: self.dynamic_thresholding_ratio,
            sample_max_value: self.sample_max_value,
            set_alpha_to_one: self.set_alpha_to_one,
            steps_offset: self.steps_offset,
            spacing: Spacing::parse(&self.timestep_spacing)?,
        };
        Ok(Ddim::new(self.noise_schedule()?, params))
    }
}
