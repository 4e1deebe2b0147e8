//! Loading models by name or path: the source is resolved once ([`ModelSource`]), its files are read by
//! `crate::weights`, and the model is built by `crate::sd` / `crate::models::clip`. 3-D (Tune-A-Video)
//! folders get the temporal stages of `crate::video`, which is why this sits above both.

use crate::config::clip::ClipConfig;
use crate::config::read_config;
use crate::device::{parse_device, parse_dtype};
use crate::error::{Error, Result};
use crate::models::clip::ClipImageProcessorConfig;
use crate::models::clip::ClipModel;
use crate::models::ClipTokenizer;
use crate::sd::{SdLoadOptions, StableDiffusion};
use crate::weights::source::ModelSource;
use crate::weights::{self, sd_files};
use std::path::Path;
use tch::Kind;

/// Loads `spec`: `toy` (the toy world's trained models, built in), `random:tiny`, a diffusers folder, a
/// `.safetensors` single-file checkpoint, or a repo id in the Hugging Face cache.
pub fn load_sd(spec: &str, opts: &SdLoadOptions) -> Result<StableDiffusion> {
    crate::memory::tune_allocator();
    crate::sd::placement(opts)?;
    let files = match ModelSource::resolve(spec, &opts.revision)? {
        ModelSource::Random(kind) => return StableDiffusion::random(&kind, opts),
        ModelSource::Builtin(dir) | ModelSource::Folder(dir) | ModelSource::Hub { dir, .. } => {
            sd_files::read_folder(&dir, opts.variant.as_deref())?
        }
        ModelSource::File(path) => {
            sd_files::read_single_file(&path, opts.config.as_deref(), opts.tokenizer.as_deref(), &opts.revision)?
        }
    };
    // Tune-A-Video's 3-D folders carry temporal layers.
    StableDiffusion::from_files(files, spec, opts, || crate::video::stages_named(Some("temporal")))
}

impl ClipModel {
    /// Loads a transformers `CLIPModel` folder, a Hugging Face cache id (safetensors only), or `toy` (the toy
    /// world's CLIP, built in).
    pub fn load(spec: &str, device: &str, dtype: Option<&str>) -> Result<ClipModel> {
        let device = parse_device(device)?;
        let kind = match dtype {
            Some(d) => parse_dtype(d)?,
            None => Kind::Float,
        };
        let dir = match ModelSource::resolve(spec, "main") {
            Ok(ModelSource::Random(kind)) => return ClipModel::random_named(&kind),
            Ok(ModelSource::Builtin(dir)) => dir.join("clip"),
            Ok(ModelSource::Folder(dir) | ModelSource::Hub { dir, .. }) => dir,
            Ok(ModelSource::File(_)) => return Err(not_a_folder(spec)),
            Err(Error::BadFile { .. }) if Path::new(spec).exists() => return Err(not_a_folder(spec)),
            Err(e) => return Err(e),
        };
        let cfg_path = dir.join("config.json");
        if !cfg_path.exists() {
            return Err(Error::bad_file(&dir, "is not a transformers model folder: config.json is missing"));
        }
        let config: ClipConfig = read_config(&cfg_path)?;
        config.check_supported().map_err(|e| Error::bad_file(&dir, e))?;
        let files = weights::component_files(&dir, "model", None)?;
        let tensors = weights::read_all(&files)?;
        let tokenizer = ClipTokenizer::from_dir(&dir)?;
        let pp = dir.join("preprocessor_config.json");
        let processor = if pp.exists() {
            read_config(&pp)?
        } else {
            ClipImageProcessorConfig::default_for(config.vision_config.image_size)
        };
        let identity = {
            let mut id = crate::weights::identity::Identity::new("clip")
                .file(&cfg_path)?
                .optional_file("preprocessor", &pp)?
                .folder(&dir.join("tokenizer"))?
                .text("dtype", &format!("{kind:?} on {device:?}"));
            for f in &files {
                id = id.file(f)?;
            }
            for f in ["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
            {
                id = id.optional_file(f, &dir.join(f))?;
            }
            id.finish()
        };
        let mut model = ClipModel::empty(config, tokenizer, processor, device, spec, identity)?;
        weights::apply_weights(&mut model.vars, tensors, "clip", kind, &|_| false, spec)?;
        Ok(model)
    }
}

fn not_a_folder(spec: &str) -> Error {
    Error::bad_file(
        Path::new(spec),
        "is not a folder; load_clip needs a transformers CLIPModel folder (config.json, model.safetensors, tokenizer)",
    )
}
