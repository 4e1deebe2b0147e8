//! The files of a Stable Diffusion 1.x model, read into configs, tensors, a tokenizer and a scheduler
//! config with the model's identity: from a diffusers folder (`unet/`, `vae/`, `text_encoder/`,
//! `tokenizer/`, `scheduler/`) or from a single-file checkpoint with configs from a folder or bundled
//! (SD 1.4's). Building the model from them is `crate::sd`'s.

use super::identity::Identity;
use super::{component_files, hub, read_all, read_safetensors, single_file, TensorMap};
use crate::config::{read_config, AutoencoderKLConfig, ClipTextConfig, SchedulerConfig, UNet2DConditionConfig};
use crate::error::{Error, Result};
use crate::models::ClipTokenizer;
use std::path::{Path, PathBuf};

/// The configs of the three networks.
pub struct SdConfigs {
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub text: ClipTextConfig,
}

/// Everything a Stable Diffusion model is built from.
pub struct SdFiles {
    pub configs: SdConfigs,
    /// The UNet's, VAE's and text encoder's tensors, under diffusers' names.
    pub tensors: [TensorMap; 3],
    pub tokenizer: ClipTokenizer,
    pub scheduler: SchedulerConfig,
    /// What the files compute, by content ([`super::identity`]).
    pub identity: String,
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

/// Reads a diffusers Stable Diffusion folder (`variant` picks `*.VARIANT.safetensors`).
pub fn read_folder(dir: &Path, variant: Option<&str>) -> Result<SdFiles> {
    let configs = SdConfigs {
        unet: read_component_config(dir, "unet", "config.json")?,
        vae: read_component_config(dir, "vae", "config.json")?,
        text: read_component_config(dir, "text_encoder", "config.json")?,
    };
    let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
    let scheduler = if scheduler_path.exists() { read_config(&scheduler_path)? } else { SchedulerConfig::sd_default() };
    let files = [
        component_files(&dir.join("unet"), "diffusion_pytorch_model", variant)?,
        component_files(&dir.join("vae"), "diffusion_pytorch_model", variant)?,
        component_files(&dir.join("text_encoder"), "model", variant)?,
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
    let tensors = [read_all(&files[0])?, read_all(&files[1])?, read_all(&files[2])?];
    Ok(SdFiles { configs, tensors, tokenizer, scheduler, identity })
}

/// Reads a single-file SD1.x checkpoint (converted by key mapping). It carries no configs: `config` is
/// a diffusers folder or cache repo id (at `revision`) whose configs (and tokenizer, scheduler) describe
/// it, else SD 1.4's bundled configs; `tokenizer` a tokenizer folder, else the config folder's, else
/// CLIP ViT-L/14's from the Hugging Face cache.
pub fn read_single_file(
    path: &Path,
    config: Option<&Path>,
    tokenizer: Option<&Path>,
    revision: &str,
) -> Result<SdFiles> {
    let tensors = read_safetensors(path)?;
    if !single_file::is_single_file(&tensors) {
        return Err(Error::bad_file(
            path,
            "is not a single-file Stable Diffusion checkpoint (no model.diffusion_model.* tensors); give a diffusers folder for separate component files",
        ));
    }
    let mut id = Identity::new("sd-single-file").file(path)?;
    let (mut configs, scheduler, folder_tokenizer) = match config {
        Some(dir) => {
            let dir =
                if dir.is_dir() { dir.to_path_buf() } else { hub::snapshot_dir(&dir.to_string_lossy(), revision)? };
            let scheduler_path = dir.join("scheduler").join("scheduler_config.json");
            for component in ["unet", "vae", "text_encoder"] {
                id = id.optional_file(component, &dir.join(component).join("config.json"))?;
            }
            id = id.optional_file("scheduler", &scheduler_path)?;
            let configs = SdConfigs {
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
            SdConfigs {
                unet: serde_json::from_str(include_str!("../../configs/sd-v1-4/unet/config.json"))
                    .expect("bundled config"),
                vae: serde_json::from_str(include_str!("../../configs/sd-v1-4/vae/config.json"))
                    .expect("bundled config"),
                text: serde_json::from_str(include_str!("../../configs/sd-v1-4/text_encoder/config.json"))
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
    let tokenizer_dir = match tokenizer.map(Path::to_path_buf).or(folder_tokenizer) {
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
    let id = id.text("configs", if config.is_some() { "folder" } else { "bundled sd-v1-4" }).folder(&tokenizer_dir)?;
    let converted = single_file::convert(tensors, configs.unet.layers(0), configs.vae.block_out_channels.len() as i64)?;
    if !converted.unused.is_empty() {
        log::info!(
            "{}: {} tensors outside the UNet, VAE and text encoder ignored",
            path.display(),
            converted.unused.len()
        );
    }
    let identity = id.text("in_channels", &configs.unet.in_channels.to_string()).finish();
    Ok(SdFiles {
        configs,
        tensors: [converted.unet, converted.vae, converted.text_encoder],
        tokenizer,
        scheduler,
        identity,
    })
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
