//! A Stable Diffusion 1.x model: UNet, VAE, CLIP text encoder, tokenizer and scheduler config, built from
//! the files `crate::weights` read (a diffusers folder, a Hugging Face cache repo id, a single-file
//! checkpoint) or tiny and random (`random:tiny`) for trying things without weights; its prompt cache.
//! Loading by name is `crate::load`'s.

use crate::config::SchedulerConfig;
use crate::device::{default_dtype, device_name, dtype_name, parse_device, parse_dtype};
use crate::error::{Error, Result};
use crate::models::attention::Stages;
use crate::models::autoencoder_kl::LatentDist;
use crate::models::nn::{Builder, InitMode};
use crate::models::{AutoencoderKL, ClipTextTransformer, ClipTokenizer, UNet2DConditionModel};
use crate::weights::random::{medium_configs, sd14_configs, tiny_configs};
use crate::weights::sd_files::{SdConfigs, SdFiles};
use crate::weights::{apply_weights, LoadReport, TensorMap};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct SdLoadOptions {
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `fp32`, `fp16`, `bf16`; default: fp32 on the CPU, bf16 or fp16 on CUDA.
    pub dtype: Option<String>,
    /// The VAE's dtype (default: the model's; fp32 keeps decoding exact while the UNet runs in half).
    pub vae_dtype: Option<String>,
    /// Weight file variant (`fp16` reads `*.fp16.safetensors`).
    pub variant: Option<String>,
    /// Revision of a Hugging Face cache repo (`main` by default).
    pub revision: String,
    /// For single-file checkpoints (which carry no configs): a diffusers folder whose `unet/`, `vae/`,
    /// `text_encoder/` configs (and tokenizer, scheduler) describe it. Default: SD 1.4's configs.
    pub config: Option<PathBuf>,
    /// A tokenizer folder, for single-file checkpoints (which carry none).
    pub tokenizer: Option<PathBuf>,
    /// Seed of `random:*` models.
    pub seed: u64,
}

impl Default for SdLoadOptions {
    fn default() -> Self {
        SdLoadOptions {
            device: "auto".into(),
            dtype: None,
            vae_dtype: None,
            variant: None,
            revision: "main".into(),
            config: None,
            tokenizer: None,
            seed: 0,
        }
    }
}

/// One component's parameters and how they were loaded.
pub struct Component<M> {
    pub model: M,
    pub vars: VarStore,
    pub report: LoadReport,
}

/// A loaded Stable Diffusion 1.x model.
pub struct StableDiffusion {
    pub unet: Component<UNet2DConditionModel>,
    pub vae: Component<AutoencoderKL>,
    pub text_encoder: Component<ClipTextTransformer>,
    pub tokenizer: ClipTokenizer,
    pub scheduler: SchedulerConfig,
    pub device: Device,
    pub dtype: Kind,
    /// Where it came from, as the user gave it.
    pub source: String,
    /// What the model computes, by content: configs, tokenizer, scheduler config and weights (or the
    /// random seed); see [`crate::weights::identity`]. Tuned files record it. Memo keys add the dtype
    /// and device ([`StableDiffusion::memo_identity`]).
    pub identity: String,
    /// Built with random weights (say so in outputs).
    pub random: bool,
    prompt_cache: RefCell<HashMap<String, Tensor>>,
    /// The VAE's posteriors of the last clips encoded, by content ([`StableDiffusion::encoded`]).
    latent_cache: RefCell<Vec<(String, LatentDist)>>,
}

/// How many encoded clips a model keeps (a tune and an inversion of the same clip, an edit of a second).
const LATENT_CACHE: usize = 4;

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary())
    }
}

pub(crate) fn build<M>(device: Device, mode: InitMode, f: impl FnOnce(&Builder) -> Result<M>) -> Result<(M, VarStore)> {
    let vars = VarStore::new(device);
    let model = f(&Builder::new(vars.root(), mode))?;
    Ok((model, vars))
}

/// The device and dtypes of `opts`, parsed.
pub fn placement(opts: &SdLoadOptions) -> Result<(Device, Kind, Kind)> {
    let device = parse_device(&opts.device)?;
    let dtype = match &opts.dtype {
        Some(d) => parse_dtype(d)?,
        None => default_dtype(device),
    };
    let vae_dtype = match &opts.vae_dtype {
        Some(d) => parse_dtype(d)?,
        None => dtype,
    };
    Ok((device, dtype, vae_dtype))
}

impl StableDiffusion {
    /// The VAE's posterior of the frames `key` names (a content key of the frames), computed by `encode`
    /// when it is not among the last [`LATENT_CACHE`] encoded: tuning and inverting a clip encode it
    /// once. The VAE is frozen, so its posterior of the same frames is the same.
    pub fn encoded(&self, key: String, encode: impl FnOnce() -> Result<LatentDist>) -> Result<LatentDist> {
        let copy = |d: &LatentDist| LatentDist { mean: d.mean.shallow_clone(), logvar: d.logvar.shallow_clone() };
        {
            let mut cache = self.latent_cache.borrow_mut();
            if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
                let entry = cache.remove(i);
                let out = copy(&entry.1);
                cache.push(entry);
                return Ok(out);
            }
        }
        let dist = encode()?;
        let mut cache = self.latent_cache.borrow_mut();
        if cache.len() >= LATENT_CACHE {
            cache.remove(0);
        }
        cache.push((key, copy(&dist)));
        Ok(dist)
    }

    /// Builds the model from its files (`source`: where they came from, as the user gave it), on the device
    /// and in the dtypes of `opts`. `temporal` builds the stages of a 3-D (Tune-A-Video) UNet's temporal
    /// layers; it is called only when the UNet's config is 3-D.
    pub fn from_files(
        files: SdFiles,
        source: &str,
        opts: &SdLoadOptions,
        temporal: impl FnOnce() -> Result<Option<Stages>>,
    ) -> Result<StableDiffusion> {
        let (device, dtype, vae_dtype) = placement(opts)?;
        let SdFiles { configs, tensors, tokenizer, scheduler, identity } = files;
        let stages = if configs.unet.is_3d() { temporal()? } else { None };
        assemble(configs, tensors, tokenizer, scheduler, source, identity, (device, dtype, vae_dtype), stages)
    }

    /// A model of `random:KIND` (`tiny`, `medium`, `sd14`) with random weights drawn from `opts.seed`.
    pub fn random(kind: &str, opts: &SdLoadOptions) -> Result<StableDiffusion> {
        let (device, dtype, vae_dtype) = placement(opts)?;
        random(kind, opts.seed, device, dtype, vae_dtype)
    }
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    configs: SdConfigs,
    tensors: [TensorMap; 3],
    tokenizer: ClipTokenizer,
    scheduler: SchedulerConfig,
    source: &str,
    identity: String,
    (device, dtype, vae_dtype): (Device, Kind, Kind),
    stages: Option<Stages>,
) -> Result<StableDiffusion> {
    let [unet_t, vae_t, text_t] = tensors;
    let (unet, mut unet_vars) =
        build(device, InitMode::Empty, |b| UNet2DConditionModel::new(b, &configs.unet, stages))?;
    let unet_report = apply_weights(&mut unet_vars, unet_t, "unet", dtype, &|_| false, source)?;
    let (vae, mut vae_vars) = build(device, InitMode::Empty, |b| AutoencoderKL::new(b, &configs.vae))?;
    let vae_report = apply_weights(&mut vae_vars, vae_t, "vae", vae_dtype, &|_| false, source)?;
    let (text, mut text_vars) = build(device, InitMode::Empty, |b| ClipTextTransformer::new(b, &configs.text))?;
    let text_report = apply_weights(&mut text_vars, text_t, "text_encoder", dtype, &|_| false, source)?;
    if tokenizer.max_length as i64 > configs.text.max_position_embeddings {
        return Err(Error::Invalid(format!(
            "{source}: the tokenizer makes sequences of {} tokens but the text encoder has only {} positions \
             (max_position_embeddings)",
            tokenizer.max_length, configs.text.max_position_embeddings
        )));
    }
    if tokenizer.vocab_size() as i64 > configs.text.vocab_size {
        return Err(Error::Invalid(format!(
            "{source}: the tokenizer has {} tokens but the text encoder only {}",
            tokenizer.vocab_size(),
            configs.text.vocab_size
        )));
    }
    Ok(StableDiffusion {
        unet: Component { model: unet, vars: unet_vars, report: unet_report },
        vae: Component { model: vae, vars: vae_vars, report: vae_report },
        text_encoder: Component { model: text, vars: text_vars, report: text_report },
        tokenizer,
        scheduler,
        device,
        dtype,
        source: source.to_string(),
        identity,
        random: false,
        prompt_cache: RefCell::new(HashMap::new()),
        latent_cache: RefCell::new(Vec::new()),
    })
}

fn random(kind: &str, seed: u64, device: Device, dtype: Kind, vae_dtype: Kind) -> Result<StableDiffusion> {
    let tokenizer = ClipTokenizer::bytes_only();
    let vocab = tokenizer.vocab_size() as i64;
    let (unet_c, vae_c, text_c) = match kind {
        "tiny" => tiny_configs(vocab),
        "medium" => medium_configs(vocab),
        "sd14" => sd14_configs(vocab),
        _ => {
            return Err(Error::Invalid(format!(
            "unknown random model \"random:{kind}\"; expected \"random:tiny\", \"random:medium\" or \"random:sd14\" \
                 (SD1.4's architecture)"
        )))
        }
    };
    tch::manual_seed(seed as i64);
    let (unet, mut unet_vars) = build(device, InitMode::Random, |b| UNet2DConditionModel::new(b, &unet_c, None))?;
    let (vae, mut vae_vars) = build(device, InitMode::Random, |b| AutoencoderKL::new(b, &vae_c))?;
    let (text, mut text_vars) = build(device, InitMode::Random, |b| ClipTextTransformer::new(b, &text_c))?;
    for (vars, kind) in [(&mut unet_vars, dtype), (&mut vae_vars, vae_dtype), (&mut text_vars, dtype)] {
        vars.set_kind(kind);
        vars.freeze();
    }
    let report = |c: &str, vs: &VarStore| LoadReport {
        component: c.into(),
        new_params: vs.variables().into_keys().collect(),
        ..Default::default()
    };
    Ok(StableDiffusion {
        unet: Component { report: report("unet", &unet_vars), model: unet, vars: unet_vars },
        vae: Component { report: report("vae", &vae_vars), model: vae, vars: vae_vars },
        text_encoder: Component { report: report("text_encoder", &text_vars), model: text, vars: text_vars },
        tokenizer,
        scheduler: SchedulerConfig::sd_default(),
        device,
        dtype,
        source: format!("random:{kind}"),
        identity: format!("random-{kind}-{seed}"),
        random: true,
        prompt_cache: RefCell::new(HashMap::new()),
        latent_cache: RefCell::new(Vec::new()),
    })
}

impl StableDiffusion {
    /// The identity plus everything else that changes results: the dtypes and the device.
    pub fn memo_identity(&self) -> String {
        format!(
            "{} {} vae {} text {} on {}",
            self.identity,
            dtype_name(self.dtype),
            dtype_name(self.vae.model.kind()),
            dtype_name(self.text_encoder.model.kind()),
            device_name(self.device)
        )
    }

    /// Latent size factor (8 for SD1.x).
    pub fn vae_scale_factor(&self) -> i64 {
        1 << (self.vae.model.config.block_out_channels.len() as i64 - 1)
    }

    /// The image size the UNet was trained at (`sample_size · 8`), else 512.
    pub fn default_size(&self) -> i64 {
        match self
            .unet
            .model
            .config
            .sample_size
            .as_ref()
            .and_then(|v| v.as_i64().or_else(|| v.get(0).and_then(|x| x.as_i64())))
        {
            Some(s) => s * self.vae_scale_factor(),
            None => 512,
        }
    }

    /// The text embeddings of `prompt`, `[1, 77, D]` in the UNet's dtype on its device; cached per prompt.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Tensor> {
        if let Some(t) = self.prompt_cache.borrow().get(prompt) {
            return Ok(t.shallow_clone());
        }
        let enc = self.tokenizer.encode(prompt)?;
        if enc.truncated() {
            log::warn!(
                "the prompt is {} tokens; CLIP reads {}, so it was truncated: {:?}",
                enc.full_len,
                self.tokenizer.max_length,
                prompt
            );
            eprintln!(
                "warning: prompt truncated to {} tokens (it has {}): {prompt:?}",
                self.tokenizer.max_length, enc.full_len
            );
        }
        let ids = Tensor::from_slice(&enc.ids).view([1, -1]).to_device(self.device);
        let emb = tch::no_grad(|| self.text_encoder.model.forward(&ids))?.to_kind(self.unet.model.kind());
        self.prompt_cache.borrow_mut().insert(prompt.to_string(), emb.shallow_clone());
        Ok(emb)
    }

    /// Parameter counts of the UNet, VAE and text encoder.
    pub fn parameter_counts(&self) -> [i64; 3] {
        let count = |vs: &VarStore| vs.variables().values().map(|t| t.numel() as i64).sum::<i64>();
        [count(&self.unet.vars), count(&self.vae.vars), count(&self.text_encoder.vars)]
    }

    /// A one-paragraph description.
    pub fn summary(&self) -> String {
        let [u, v, t] = self.parameter_counts();
        let c = &self.unet.model.config;
        format!(
            "StableDiffusion({}{}; {} on {}; UNet {:.1} M params, channels {:?}, {} text width; VAE {:.1} M; text encoder {:.1} M; \
             {}x{} default)",
            self.source,
            if self.random { ", RANDOM WEIGHTS" } else { "" },
            dtype_name(self.dtype),
            device_name(self.device),
            u as f64 / 1e6,
            c.block_out_channels,
            c.cross_dim(),
            v as f64 / 1e6,
            t as f64 / 1e6,
            self.default_size(),
            self.default_size()
        )
    }
}
