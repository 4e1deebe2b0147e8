//! `AutoencoderKL` (diffusers `autoencoder_kl.py`): images ↔ latents, with the diagonal Gaussian posterior.

use super::nn::{Builder, Conv2d};
use super::vae::{Decoder, Encoder};
use crate::config::AutoencoderKLConfig;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// The encoder's posterior: mean and log-variance (clamped to [−30, 20]) per latent.
#[derive(Debug)]
pub struct LatentDist {
    pub mean: Tensor,
    pub logvar: Tensor,
}

impl LatentDist {
    pub fn std(&self) -> Tensor {
        (&self.logvar * 0.5).exp()
    }

    /// `mean + std · noise` with standard-normal `noise` shaped like the mean (draw it seeded).
    pub fn sample_with(&self, noise: &Tensor) -> Tensor {
        &self.mean + self.std() * noise
    }
}

#[derive(Debug)]
pub struct AutoencoderKL {
    pub config: AutoencoderKLConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    /// One of the weights, for the model's dtype and device.
    probe: Tensor,
}

impl AutoencoderKL {
    pub fn new(b: &Builder, config: &AutoencoderKLConfig) -> Result<Self> {
        config.check_supported()?;
        let l2 = 2 * config.latent_channels;
        let encoder = Encoder::new(&b.sub("encoder"), config);
        let probe = encoder.conv_in.weight.shallow_clone();
        Ok(AutoencoderKL {
            config: config.clone(),
            probe,
            encoder,
            decoder: Decoder::new(&b.sub("decoder"), config),
            quant_conv: config.use_quant_conv.then(|| Conv2d::new(&b.sub("quant_conv"), l2, l2, 1, 1, 0)),
            post_quant_conv: config.use_post_quant_conv.then(|| {
                Conv2d::new(&b.sub("post_quant_conv"), config.latent_channels, config.latent_channels, 1, 1, 0)
            }),
        })
    }

    fn check(&self, x: &Tensor, channels: i64, what: &str) -> Result<()> {
        let s = x.size();
        if s.len() != 4 || s[1] != channels {
            return Err(Error::Invalid(format!("VAE {what}: expected [B, {channels}, H, W], got {s:?}")));
        }
        if x.kind() != self.kind() || x.device() != self.device() {
            return Err(Error::Invalid(format!(
                "VAE {what} is {:?} on {:?} but the VAE is {:?} on {:?}",
                x.kind(),
                x.device(),
                self.kind(),
                self.device()
            )));
        }
        Ok(())
    }

    /// Images `[B, 3, H, W]` in [−1, 1] → the latent posterior.
    pub fn encode(&self, x: &Tensor) -> Result<LatentDist> {
        crate::cpu::settle_threads();
        self.check(x, self.config.in_channels, "input")?;
        let h = self.encoder.forward(x)?;
        let moments = match &self.quant_conv {
            Some(q) => q.forward(&h),
            None => h,
        };
        let parts = moments.chunk(2, 1);
        Ok(LatentDist { mean: parts[0].shallow_clone(), logvar: parts[1].clamp(-30.0, 20.0) })
    }

    /// Latents `[B, latent, h, w]` (unscaled) → images in about [−1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        crate::cpu::settle_threads();
        self.check(z, self.config.latent_channels, "latents")?;
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z),
            None => z.shallow_clone(),
        };
        self.decoder.forward(&z)
    }

    /// The dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.probe.kind()
    }

    pub fn device(&self) -> tch::Device {
        self.probe.device()
    }

    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }
}
