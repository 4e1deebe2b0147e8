//! Held-out figures of a toy model folder, measured through the ordinary loaders, and the tolerances
//! within which a retrained folder agrees with the committed one.

use super::world::frame_bank;
use super::{clip_pixels, round4, token_ids, Recipe};
use crate::error::{Error, Result};
use crate::load::load_sd;
use crate::models::clip::ClipModel;
use crate::progress::quietly;
use crate::rng::Noise;
use crate::sd::SdLoadOptions;
use serde_json::{json, Value};
use std::path::Path;
use tch::{Device, Kind, Tensor};
use vidtune_kernels::optim::mse;
use vidtune_kernels::schedulers::ddpm;

/// Figures of a toy model folder, measured on held-out clips.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// VAE reconstruction PSNR (dB, posterior mean, 8-bit frames).
    pub vae_psnr: f64,
    /// CLIP picks the true colour among the eight captions that differ only in it.
    pub clip_color_accuracy: f64,
    /// CLIP picks the true shape among the four captions that differ only in it.
    pub clip_shape_accuracy: f64,
    /// UNet ε-prediction MSE with the caption, averaged over fixed timesteps and noise.
    pub unet_loss: f64,
    /// The same with the empty prompt minus with the caption: how much the text helps.
    pub unet_text_gain: f64,
}

impl Metrics {
    pub fn to_json(&self) -> Value {
        json!({
            "vae_psnr": round4(self.vae_psnr),
            "clip_color_accuracy": round4(self.clip_color_accuracy),
            "clip_shape_accuracy": round4(self.clip_shape_accuracy),
            "unet_loss": round4(self.unet_loss),
            "unet_text_gain": round4(self.unet_text_gain),
        })
    }

    pub fn from_json(v: &Value) -> Result<Metrics> {
        let f = |k: &str| {
            v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| Error::Invalid(format!("metrics: {k} is missing")))
        };
        Ok(Metrics {
            vae_psnr: f("vae_psnr")?,
            clip_color_accuracy: f("clip_color_accuracy")?,
            clip_shape_accuracy: f("clip_shape_accuracy")?,
            unet_loss: f("unet_loss")?,
            unet_text_gain: f("unet_text_gain")?,
        })
    }

    /// The figures that differ from `other` by more than the stated tolerances (1 dB of PSNR, 0.1 of an
    /// accuracy, 20 % of the UNet loss, 0.01 of the text gain): empty when they agree.
    pub fn differences(&self, other: &Metrics) -> Vec<String> {
        let mut out = vec![];
        let mut check = |name: &str, a: f64, b: f64, tol: f64| {
            if (a - b).abs() > tol {
                out.push(format!("{name}: {a:.4} vs {b:.4} (tolerance {tol})"));
            }
        };
        check("vae_psnr", self.vae_psnr, other.vae_psnr, 1.0);
        check("clip_color_accuracy", self.clip_color_accuracy, other.clip_color_accuracy, 0.1);
        check("clip_shape_accuracy", self.clip_shape_accuracy, other.clip_shape_accuracy, 0.1);
        check("unet_loss", self.unet_loss, other.unet_loss, 0.2 * other.unet_loss.abs());
        check("unet_text_gain", self.unet_text_gain, other.unet_text_gain, 0.01);
        out
    }
}

/// Measures the model folder `dir` (loaded through the ordinary loaders) on the recipe's held-out clips.
pub fn evaluate(dir: &Path, recipe: &Recipe) -> Result<Metrics> {
    let bank = quietly(|| frame_bank(recipe.eval_clips, recipe.frames, recipe.size, recipe.seed + 100, true))?;
    let sd = load_sd(&dir.to_string_lossy(), &SdLoadOptions { device: "cpu".into(), ..Default::default() })?;
    let clip = ClipModel::load(&dir.join("clip").to_string_lossy(), "cpu", None)?;
    let n = bank.len() as i64;
    let all: Vec<i64> = (0..n).collect();
    // VAE: every frame encoded once; the posterior means serve the reconstruction and the UNet below.
    let x = bank.pixels(&all);
    let (means, rec) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
        let (mut means, mut recs) = (vec![], vec![]);
        for chunk in x.split(32, 0) {
            let mean = sd.vae.model.encode(&chunk)?.mean;
            recs.push(sd.vae.model.decode(&mean)?);
            means.push(mean);
        }
        Ok((Tensor::cat(&means, 0), Tensor::cat(&recs, 0)))
    })?;
    let q = |t: &Tensor| ((t + 1.0) * 127.5).round().clamp(0.0, 255.0);
    let mse_8bit = (q(&rec) - q(&x)).square().mean(Kind::Float).double_value(&[]);
    let vae_psnr = 10.0 * (255.0f64 * 255.0 / mse_8bit.max(1e-10)).log10();
    // CLIP: pick the attribute among captions that differ only in it.
    let pixels = clip_pixels(&clip, &bank)?;
    let img = tch::no_grad(|| clip.image_embeds(&pixels))?;
    let img = &img / img.norm_scalaropt_dim(2.0, [-1], true);
    let accuracy = |options: &[&str], pick: &dyn Fn(&str) -> Option<String>| -> Result<f64> {
        let mut right = 0usize;
        for (c, caption) in bank.clip_captions.iter().enumerate() {
            let words: Vec<&str> = caption.split(' ').collect();
            let Some(truth) = pick(caption) else { continue };
            let variants: Vec<String> = options
                .iter()
                .map(|o| words.iter().map(|w| if *w == truth { *o } else { w }).collect::<Vec<_>>().join(" "))
                .collect();
            let ids = token_ids(&clip.tokenizer, &variants)?;
            let txt = clip.text_embeds(&ids)?;
            let txt = &txt / txt.norm_scalaropt_dim(2.0, [-1], true);
            let frames = img.narrow(0, c as i64 * recipe.frames as i64, recipe.frames as i64);
            let sims = frames.matmul(&txt.tr()).mean_dim([0i64].as_slice(), false, Kind::Float);
            let best = sims.argmax(0, false).int64_value(&[]) as usize;
            right += (options[best] == truth) as usize;
        }
        Ok(right as f64 / bank.clip_captions.len() as f64)
    };
    let colors: Vec<&str> = crate::synthetic::COLORS.iter().map(|(n, _)| *n).collect();
    let shapes: Vec<&str> = crate::synthetic::Shape::ALL.iter().map(|s| s.name()).collect();
    // The subject's colour is the caption's second word; the shape its third.
    let clip_color_accuracy = accuracy(&colors, &|c: &str| c.split(' ').nth(1).map(String::from))?;
    let clip_shape_accuracy = accuracy(&shapes, &|c: &str| c.split(' ').nth(2).map(String::from))?;
    // UNet: fixed timesteps and noise.
    let schedule = sd.scheduler.noise_schedule()?;
    let sf = sd.vae.model.scaling_factor();
    let mut noise = Noise::new(recipe.seed + 200);
    let ctx = crate::models::attention_processor::AttnContext::default();
    let (mut cond, mut uncond) = (0.0, 0.0);
    let steps = [100i64, 300, 500, 700, 900];
    let z = means * sf;
    let text: Vec<Tensor> = bank.captions.iter().map(|c| sd.encode_prompt(c)).collect::<Result<_>>()?;
    let text = Tensor::cat(&text, 0);
    let empty = sd.encode_prompt("")?.expand_as(&text);
    for &t in &steps {
        let eps = noise.randn(&z.size(), Kind::Float, Device::Cpu);
        let tt = Tensor::from_slice(&vec![t; n as usize]);
        let noisy = ddpm::add_noise(&schedule, &z, &eps, &tt)?;
        let pc = tch::no_grad(|| sd.unet.model.forward(&noisy, &tt, &text, &ctx))?;
        let pu = tch::no_grad(|| sd.unet.model.forward(&noisy, &tt, &empty, &ctx))?;
        cond += mse(&pc, &eps).double_value(&[]);
        uncond += mse(&pu, &eps).double_value(&[]);
    }
    let k = steps.len() as f64;
    Ok(Metrics {
        vae_psnr,
        clip_color_accuracy,
        clip_shape_accuracy,
        unet_loss: cond / k,
        unet_text_gain: (uncond - cond) / k,
    })
}
