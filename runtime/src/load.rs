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

/// Refuses options of [`load_sd`] that `spec`'s source would not read (`given` says which were given):
/// `seed` is for `random:*` models, `config` and `tokenizer` for single-file checkpoints, `revision` for
/// repo ids of the Hugging Face cache (and single files with a `config` repo). A spec that does not
/// resolve is left for the load to report.
pub fn check_source_options(spec: &str, revision: &str, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let source = ModelSource::resolve(spec, revision).ok();
    let random = matches!(source, Some(ModelSource::Random(_)));
    let file = matches!(source, Some(ModelSource::File(_)));
    let repo = matches!(source, Some(ModelSource::Hub { .. }))
        || (source.is_none() && !Path::new(spec).exists() && crate::weights::hub::is_repo_id(spec));
    let rules: [(&str, bool, &str); 4] = [
        ("seed", random, "random:tiny models"),
        ("config", file, "single-file checkpoints"),
        ("tokenizer", file, "single-file checkpoints"),
        ("revision", repo || (file && given("config")), "repo ids of the Hugging Face cache"),
    ];
    for (name, applies, what) in rules {
        if given(name) && !applies {
            return Err(Error::Invalid(format!(
                "option {name:?} would be ignored: it applies to {what}, and {spec:?} is not one"
            )));
        }
    }
    Ok(())
}

/// Models loaded in this process, kept for reuse (watch-mode reruns load nothing twice) while the files
/// behind them are unchanged: the key holds the spec, the options and a fingerprint of the files. The
/// `keep` most recent stay.
#[derive(Debug)]
pub struct LoadedModels<T> {
    keep: usize,
    entries: Vec<(String, T)>,
}

impl<T: Clone> LoadedModels<T> {
    pub const fn new(keep: usize) -> Self {
        LoadedModels { keep, entries: Vec::new() }
    }

    /// The key of `spec` loaded with `opts`, as the files are now (an edited config makes a new key).
    pub fn key(spec: &str, opts: &SdLoadOptions) -> String {
        let source = Path::new(spec);
        let fingerprint = if source.exists() {
            crate::weights::identity::fingerprint(source)
        } else {
            crate::weights::hub::snapshot_dir(spec, &opts.revision)
                .map(|d| crate::weights::identity::fingerprint(&d))
                .unwrap_or_default()
        };
        format!("{spec}|{opts:?}|{fingerprint}")
    }

    /// The model kept under `key`.
    pub fn get(&self, key: &str) -> Option<T> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, m)| m.clone())
    }

    /// Keeps `model` under `key`, dropping the oldest beyond `keep`.
    pub fn insert(&mut self, key: String, model: T) {
        self.entries.push((key, model));
        if self.entries.len() > self.keep {
            self.entries.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_a_source_would_not_read_are_refused() {
        let given = |names: &'static [&'static str]| move |n: &str| names.contains(&n);
        assert!(check_source_options("random:tiny", "main", &given(&["seed"])).is_ok());
        let e = check_source_options("random:tiny", "main", &given(&["config"])).unwrap_err().to_string();
        assert_eq!(
            e,
            "option \"config\" would be ignored: it applies to single-file checkpoints, and \"random:tiny\" is not one"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"x").unwrap();
        let f = file.to_string_lossy().to_string();
        assert!(check_source_options(&f, "main", &given(&["config", "tokenizer", "revision"])).is_ok());
        assert!(check_source_options(&f, "main", &given(&["revision"])).is_err());
        assert!(check_source_options("someone/missing-model", "main", &given(&["revision"])).is_ok());
        assert!(check_source_options("someone/missing-model", "main", &given(&["seed"])).is_err());
    }

    #[test]
    fn kept_models_follow_their_files_and_the_most_recent_stay() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, b"{}").unwrap();
        let spec = dir.path().to_string_lossy().to_string();
        let opts = SdLoadOptions::default();
        let key = LoadedModels::<u32>::key(&spec, &opts);
        assert_eq!(LoadedModels::<u32>::key(&spec, &opts), key, "unchanged files, the same key");
        std::fs::write(&config, b"{\"edited\": 1}").unwrap();
        assert_ne!(LoadedModels::<u32>::key(&spec, &opts), key, "an edited config is a new key");
        let seeded = SdLoadOptions { seed: 1, ..SdLoadOptions::default() };
        assert_ne!(LoadedModels::<u32>::key("random:tiny", &seeded), LoadedModels::<u32>::key("random:tiny", &opts));
        let mut kept = LoadedModels::new(2);
        kept.insert("a".into(), 1);
        kept.insert("b".into(), 2);
        assert_eq!(kept.get("a"), Some(1));
        kept.insert("c".into(), 3);
        assert_eq!((kept.get("a"), kept.get("b"), kept.get("c")), (None, Some(2), Some(3)));
    }
}
