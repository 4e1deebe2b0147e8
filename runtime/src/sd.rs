//! A Stable Diffusion 1.x model: UNet, VAE, CLIP text encoder, tokenizer and scheduler config, loaded from
//! a diffusers folder, a Hugging Face cache repo id, a single-file checkpoint, or built tiny and random
//! (`random:tiny`) for trying things without weights.

use crate::config::{read_config, AutoencoderKLConfig, ClipTextConfig, SchedulerConfig, UNet2DConditionConfig};
use crate::device::{default_dtype, device_name, dtype_name, parse_device, parse_dtype};
use crate::error::{Error, Result};
use crate::models::nn::{Builder, InitMode};
use crate::models::{AutoencoderKL, ClipTextTransformer, ClipTokenizer, UNet2DConditionModel};
use crate::weights::identity::Identity;
use crate::weights::{self, apply_weights, hub, single_file, LoadReport, TensorMap};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
}

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary())
    }
}

struct Configs {
    unet: UNet2DConditionConfig,
    vae: AutoencoderKLConfig,
    text: ClipTextConfig,
}

fn build<M>(device: Device, mode: InitMode, f: impl FnOnce(&Builder) -> Result<M>) -> Result<(M, VarStore)> {
    let vars = VarStore::new(device);
    let model = f(&Builder::new(vars.root(), mode))?;
    Ok((model, vars))
}

/// Loads `spec`: `toy` (the toy world's trained models, built in), `random:tiny`, a diffusers folder, a `.safetensors` single-file checkpoint, or a repo id
/// in the Hugging Face cache.
pub fn load_sd(spec: &str, opts: &SdLoadOptions) -> Result<StableDiffusion> {
    crate::memory::tune_allocator();
    let device = parse_device(&opts.device)?;
    let dtype = match &opts.dtype {
        Some(d) => parse_dtype(d)?,
        None => default_dtype(device),
    };
    let vae_dtype = match &opts.vae_dtype {
        Some(d) => parse_dtype(d)?,
        None => dtype,
    };
    if let Some(kind) = spec.strip_prefix("random:") {
        return random(kind, opts.seed, device, dtype, vae_dtype);
    }
    if let Some(dir) = weights::builtin::resolve(spec)? {
        return from_folder(&dir, spec, opts, device, dtype, vae_dtype);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return from_folder(path, spec, opts, device, dtype, vae_dtype);
    }
    if path.is_file() {
        return from_single_file(path, spec, opts, device, dtype, vae_dtype);
    }
    if path.exists() {
        crate::fsutil::check_readable(path, u64::MAX, "model")?;
    }
    if hub::is_repo_id(spec) {
        let dir = hub::snapshot_dir(spec, &opts.revision)?;
        return from_folder(&dir, spec, opts, device, dtype, vae_dtype);
    }
    Err(Error::NotFound(path.to_path_buf()))
}

fn read_component_config<T: serde::de::DeserializeOwned + crate::config::ExtraFields>(
    dir: &Path,
    component: &str,
    file: &str,
) -> Result<T> {
    let path = dir.join(component).join(file);
    if !path.exists() {
        return Err(Error::bad_file(
            dir,
            format!("is not a diffusers Stable Diffusion folder: {component}/{file} is missing (expected unet/, vae/, text_encoder/, tokenizer/, scheduler/)"),
        ));
    }
    read_config(&path)
}

fn from_folder(
    dir: &Path,
    source: &str,
    opts: &SdLoadOptions,
    device: Device,
    dtype: Kind,
    vae_dtype: Kind,
) -> Result<StableDiffusion> {
    let configs = Configs {
        unet: read_component_config(dir, "unet", "config.json")?,
        vae: read_component_config(dir, "vae", "config.json")?,
        text: read_component_config(dir, "text_encoder", "config.json")?,
    };
    let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
    let scheduler = if scheduler_path.exists() { read_config(&scheduler_path)? } else { SchedulerConfig::sd_default() };
    let variant = opts.variant.as_deref();
    let files = [
        weights::component_files(&dir.join("unet"), "diffusion_pytorch_model", variant)?,
        weights::component_files(&dir.join("vae"), "diffusion_pytorch_model", variant)?,
        weights::component_files(&dir.join("text_encoder"), "model", variant)?,
    ];
    let mut id = Identity::new("sd-folder");
    for component in ["unet", "vae", "text_encoder"] {
        id = id.file(&dir.join(component).join("config.json"))?;
    }
    id = id.optional_file("scheduler", &scheduler_path)?.folder(&dir.join("tokenizer"))?;
    for f in files.concat() {
        id = id.file(&f)?;
    }
    let identity = id.finish();
    let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
    let tensors = [weights::read_all(&files[0])?, weights::read_all(&files[1])?, weights::read_all(&files[2])?];
    assemble(configs, tensors, tokenizer, scheduler, source, identity, device, dtype, vae_dtype)
}

fn from_single_file(
    path: &Path,
    source: &str,
    opts: &SdLoadOptions,
    device: Device,
    dtype: Kind,
    vae_dtype: Kind,
) -> Result<StableDiffusion> {
    let tensors = weights::read_safetensors(path)?;
    if !single_file::is_single_file(&tensors) {
        return Err(Error::bad_file(
            path,
            "is not a single-file Stable Diffusion checkpoint (no model.diffusion_model.* tensors); give a diffusers folder for separate component files",
        ));
    }
    let mut id = Identity::new("sd-single-file").file(path)?;
    let (mut configs, scheduler, folder_tokenizer) = match &opts.config {
        Some(dir) => {
            let dir =
                if dir.is_dir() { dir.clone() } else { hub::snapshot_dir(&dir.to_string_lossy(), &opts.revision)? };
            let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
            for component in ["unet", "vae", "text_encoder"] {
                id = id.optional_file(component, &dir.join(component).join("config.json"))?;
            }
            id = id.optional_file("scheduler", &scheduler_path)?;
            let configs = Configs {
                unet: read_component_config(&dir, "unet", "config.json")?,
                vae: read_component_config(&dir, "vae", "config.json")?,
                text: read_component_config(&dir, "text_encoder", "config.json")?,
            };
            let scheduler =
                if scheduler_path.exists() { read_config(&scheduler_path)? } else { SchedulerConfig::sd_default() };
            let tok = dir.join("tokenizer");
            (configs, scheduler, tok.is_dir().then_some(tok))
        }
        None => (
            Configs {
                unet: serde_json::from_str(include_str!("../configs/sd-v1-4/unet/config.json"))
                    .expect("bundled config"),
                vae: serde_json::from_str(include_str!("../configs/sd-v1-4/vae/config.json")).expect("bundled config"),
                text: serde_json::from_str(include_str!("../configs/sd-v1-4/text_encoder/config.json"))
                    .expect("bundled config"),
            },
            SchedulerConfig::sd_default(),
            None,
        ),
    };
    // Variants of SD1.x (inpainting) change the input width; read it from the file.
    if let Some(w) = tensors.get("model.diffusion_model.input_blocks.0.0.weight") {
        configs.unet.in_channels = w.size()[1];
    }
    let tokenizer_dir = match opts.tokenizer.clone().or(folder_tokenizer) {
        Some(d) => d,
        None => find_clip_tokenizer().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: single-file checkpoints carry no tokenizer; pass #{{tokenizer: \"path/to/tokenizer\"}} (a folder with \
                 vocab.json and merges.txt, or tokenizer.json), or put openai/clip-vit-large-patch14 in the Hugging Face cache",
                path.display()
            ))
        })?,
    };
    let tokenizer = ClipTokenizer::from_dir(&tokenizer_dir)?;
    let id =
        id.text("configs", if opts.config.is_some() { "folder" } else { "bundled sd-v1-4" }).folder(&tokenizer_dir)?;
    let converted = single_file::convert(tensors, configs.unet.layers(0), configs.vae.block_out_channels.len() as i64)?;
    if !converted.unused.is_empty() {
        log::info!(
            "{}: {} tensors outside the UNet, VAE and text encoder ignored",
            path.display(),
            converted.unused.len()
        );
    }
    let identity = id.text("in_channels", &configs.unet.in_channels.to_string()).finish();
    assemble(
        configs,
        [converted.unet, converted.vae, converted.text_encoder],
        tokenizer,
        scheduler,
        source,
        identity,
        device,
        dtype,
        vae_dtype,
    )
}

/// A tokenizer folder of CLIP ViT-L/14 in the Hugging Face cache, if one is there.
fn find_clip_tokenizer() -> Option<PathBuf> {
    for repo in ["openai/clip-vit-large-patch14", "CompVis/stable-diffusion-v1-4", "runwayml/stable-diffusion-v1-5"] {
        if let Ok(snap) = hub::snapshot_dir(repo, "main") {
            for sub in ["tokenizer", ""] {
                let d = snap.join(sub);
                if d.join("vocab.json").exists() || d.join("tokenizer.json").exists() {
                    return Some(d);
                }
            }
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    configs: Configs,
    tensors: [TensorMap; 3],
    tokenizer: ClipTokenizer,
    scheduler: SchedulerConfig,
    source: &str,
    identity: String,
    device: Device,
    dtype: Kind,
    vae_dtype: Kind,
) -> Result<StableDiffusion> {
    let [unet_t, vae_t, text_t] = tensors;
    // Tune-A-Video's 3-D folders carry temporal layers.
    let stages = crate::video::stages_named(configs.unet.is_3d().then_some("temporal"))?;
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
    })
}

/// Configs of the tiny random model: SD1.x's architecture, narrow (UNet 32/64 channels, VAE with four levels
/// so latents are 1/8 of the image as in SD, a 2-layer text encoder over a byte-level vocabulary).
pub fn tiny_configs(vocab_size: i64) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    let unet = serde_json::from_value(serde_json::json!({
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "attention_head_dim": 4,
        "cross_attention_dim": 32,
        "norm_num_groups": 8,
        "sample_size": 8
    }))
    .expect("tiny unet config");
    let vae = serde_json::from_value(serde_json::json!({
        "block_out_channels": [16, 16, 32, 32],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 64
    }))
    .expect("tiny vae config");
    let text = serde_json::from_value(serde_json::json!({
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1
    }))
    .expect("tiny text config");
    (unet, vae, text)
}

/// Configs of a medium SD1.x shape (UNet 64-128-256-256, 2 layers a block, 8 heads, cross-attention 256;
/// a 4-layer 256-wide text tower; VAE 32-64-64-64 with factor 8): benchmarks where compute and overhead
/// both count.
pub fn medium_configs(vocab_size: i64) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    sd_shaped([64, 128, 256, 256], 8, 256, [32, 64, 64, 64], (256, 1024, 4, 4), 16, vocab_size)
}

/// Configs of Stable Diffusion 1.4's exact architecture (UNet 320-640-1280-1280, 859,520,964 parameters;
/// the 12-layer 768-wide text tower; the 128-256-512-512 VAE), for benchmarks with random weights.
pub fn sd14_configs(vocab_size: i64) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    sd_shaped([320, 640, 1280, 1280], 8, 768, [128, 256, 512, 512], (768, 3072, 12, 12), 64, vocab_size)
}

fn sd_shaped(
    unet_channels: [i64; 4],
    heads: i64,
    cross: i64,
    vae_channels: [i64; 4],
    (width, inner, layers, text_heads): (i64, i64, i64, i64),
    sample: i64,
    vocab_size: i64,
) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    let unet = serde_json::from_value(serde_json::json!({
        "block_out_channels": unet_channels,
        "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "attention_head_dim": heads,
        "cross_attention_dim": cross,
        "norm_num_groups": 32,
        "sample_size": sample
    }))
    .expect("SD-shaped unet config");
    let vae = serde_json::from_value(serde_json::json!({
        "block_out_channels": vae_channels,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": sample * 8
    }))
    .expect("SD-shaped vae config");
    let text = serde_json::from_value(serde_json::json!({
        "vocab_size": vocab_size,
        "hidden_size": width,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": text_heads,
        "max_position_embeddings": 77,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1
    }))
    .expect("SD-shaped text config");
    (unet, vae, text)
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
