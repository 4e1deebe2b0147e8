//! Video-model functions: `inflate`, `tune`, `invert`, `sample`, `load_tuned`, the `VideoModel` and
//! `Latents` types, and the memo's `cache_info` / `pipeline_stats`.

use super::models::{ScriptTensor, SdModel};
use super::Host;
use crate::guard::Registrar;
use crate::help::FnDoc;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use rhai::{Array, Dynamic, Map};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use vidtune_runtime::models::temporal::TemporalKind;
use vidtune_runtime::pipelines::cached::{invert_cached, memo_status, tune_cached, Memoised};
use vidtune_runtime::pipelines::invert::{InvertOptions, Latents};
use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
use vidtune_runtime::pipelines::tune::{TuneOptions, TAV_TRAIN};
use vidtune_runtime::video::processors::ModuleSpec;
use vidtune_runtime::video::tuned::{load_tuned, save_tuned};
use vidtune_runtime::video::{inflate, VideoModel, VideoSpec};
use vidtune_runtime::Video;

/// A video model in scripts (shared, immutable: tuning returns a new one).
#[derive(Clone)]
pub struct ScriptVideoModel(pub Rc<VideoModel>);

/// Inverted latents in scripts.
#[derive(Clone)]
pub struct ScriptLatents(pub Latents);

const INFLATE_OPTIONS: &[&str] = &["spatial", "temporal", "layers", "seed"];
const TUNE_OPTIONS: &[&str] = &[
    "steps",
    "lr",
    "train",
    "seed",
    "max_grad_norm",
    "weight_decay",
    "betas",
    "checkpoint_every",
    "checkpoint",
    "cache",
];
const INVERT_OPTIONS: &[&str] = &["steps", "prompt", "cache"];
const SAMPLE_OPTIONS: &[&str] = &["latents", "steps", "guidance", "seed", "negative", "eta", "frames", "size", "fps"];

/// Trainable-parameter presets: Tune-A-Video's, and EI²'s (FFAM and cross-attention queries, all of STAM).
fn train_preset(name: &str) -> Option<Vec<String>> {
    match name {
        "tav" | "tune-a-video" | "ei2" => Some(TAV_TRAIN.iter().map(|s| s.to_string()).collect()),
        "all" => Some(vec!["*".into()]),
        _ => None,
    }
}

fn video_spec(opts: &Opts) -> RhaiResult<VideoSpec> {
    let d = VideoSpec::default();
    let spatial = match opts.string("spatial")? {
        Some(s) => rt(ModuleSpec::parse(&s))?,
        None => d.spatial,
    };
    let temporal = match opts.string("temporal")? {
        Some(t) => rt(TemporalKind::parse(&t))?,
        None => d.temporal,
    };
    let mut layers = vec![];
    if let Some(v) = opts.get("layers") {
        let map = v
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| script_error("inflate: option \"layers\" must be a map of layer pattern → module"))?;
        for (pattern, module) in map {
            let m = module
                .into_string()
                .map_err(|_| script_error(format!("inflate: layers[{pattern:?}] must be a module name")))?;
            layers.push((pattern.to_string(), rt(ModuleSpec::parse(&m))?));
        }
    }
    Ok(VideoSpec { spatial, temporal, layers })
}

fn do_inflate(sd: &SdModel, opts: Opts) -> RhaiResult<ScriptVideoModel> {
    let spec = video_spec(&opts)?;
    let seed = opts.int("seed")?.unwrap_or(0) as u64;
    Ok(ScriptVideoModel(Rc::new(rt(inflate(sd.0.clone(), &spec, seed))?)))
}

/// The video model of a script value: a VideoModel, or a StableDiffusion with temporal layers (a
/// Tune-A-Video folder).
fn video_model(func: &str, v: &Dynamic) -> RhaiResult<Rc<VideoModel>> {
    if let Some(m) = v.clone().try_cast::<ScriptVideoModel>() {
        return Ok(m.0);
    }
    if let Some(sd) = v.clone().try_cast::<SdModel>() {
        return rt(VideoModel::from_video_base(sd.0)).map(Rc::new).map_err(|e| script_error(format!("{func}: {e}")));
    }
    Err(script_error(format!(
        "{func}: the first argument must be a VideoModel (from inflate) or a Tune-A-Video StableDiffusion"
    )))
}

fn do_tune(model: &Dynamic, clip: &Video, prompt: &str, opts: Opts) -> RhaiResult<ScriptVideoModel> {
    let model = video_model("tune", model)?;
    let d = TuneOptions::default();
    let train = match opts.get("train") {
        None => d.train.clone(),
        Some(v) if v.is_string() => {
            let name = v.to_string();
            train_preset(&name).ok_or_else(|| {
                script_error(format!(
                    "tune: unknown train preset {name:?}; expected \"tav\", \"ei2\", \"all\" or an array of patterns"
                ))
            })?
        }
        Some(v) => v
            .clone()
            .try_cast::<Array>()
            .ok_or_else(|| script_error("tune: option \"train\" must be a preset name or an array of patterns"))?
            .into_iter()
            .map(|p| p.into_string().map_err(|_| script_error("tune: train patterns must be strings")))
            .collect::<RhaiResult<Vec<_>>>()?,
    };
    let betas = match opts.get("betas") {
        None => d.betas,
        Some(v) => {
            let number = |x: &Dynamic| x.as_float().ok().or_else(|| x.as_int().ok().map(|i| i as f64));
            match v.clone().try_cast::<Array>().as_deref() {
                Some([a, b]) => match (number(a), number(b)) {
                    (Some(a), Some(b)) => (a, b),
                    _ => return Err(script_error(format!("tune: option \"betas\" must be two numbers, got {v}"))),
                },
                _ => return Err(script_error("tune: option \"betas\" must be [beta1, beta2]")),
            }
        }
    };
    let o = TuneOptions {
        steps: opts.int("steps")?.unwrap_or(d.steps),
        lr: opts.float("lr")?.unwrap_or(d.lr),
        train,
        seed: opts.int("seed")?.map(|s| s as u64).unwrap_or(d.seed),
        max_grad_norm: opts.float("max_grad_norm")?.unwrap_or(d.max_grad_norm),
        betas,
        weight_decay: opts.float("weight_decay")?.unwrap_or(d.weight_decay),
        eps: d.eps,
        checkpoint_every: opts.int("checkpoint_every")?,
        checkpoint_path: opts.string("checkpoint")?.map(PathBuf::from),
    };
    if o.checkpoint_every.is_some() && o.checkpoint_path.is_none() {
        return Err(script_error(
            "tune: checkpoint_every needs a checkpoint path (checkpoint: \"out/ckpt.vidtune.safetensors\")",
        ));
    }
    let use_cache = opts.bool("cache")?.unwrap_or(true);
    let out = rt(tune_cached(&model, clip, prompt, &o, use_cache))?;
    report_memo(&out, "tune");
    Ok(ScriptVideoModel(out.value))
}

/// Says where a memoised result came from (a hit is otherwise invisible) and warns when it could not be
/// stored.
fn report_memo<T>(out: &Memoised<T>, what: &str) {
    if let Some(note) = out.hit_note(what) {
        println!("{note}");
    }
    if let Some(w) = &out.store_warning {
        eprintln!("warning: {w}");
    }
}

fn do_invert(model: &Dynamic, clip: &Video, opts: Opts) -> RhaiResult<ScriptLatents> {
    let model = video_model("invert", model)?;
    let o =
        InvertOptions { steps: opts.int("steps")?.unwrap_or(50), prompt: opts.string("prompt")?.unwrap_or_default() };
    let out = rt(invert_cached(&model, clip, &o, opts.bool("cache")?.unwrap_or(true)))?;
    report_memo(&out, "invert");
    Ok(ScriptLatents(out.value))
}

fn do_sample(model: &Dynamic, prompt: &str, opts: Opts) -> RhaiResult<Video> {
    let model = video_model("sample", model)?;
    let latents = opts.custom::<ScriptLatents>("latents", "Latents (from invert)")?;
    let d = SampleOptions::default();
    let size = opts.size("size")?;
    let o = SampleOptions {
        steps: opts.int("steps")?.unwrap_or(d.steps),
        guidance: opts.float("guidance")?.unwrap_or(d.guidance),
        seed: opts.int("seed")?.map(|s| s as u64),
        negative: opts.string("negative")?.unwrap_or_default(),
        eta: opts.float("eta")?.unwrap_or(0.0),
        frames: opts.int("frames")?,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        fps: opts.float("fps")?,
    };
    let (video, seed) = rt(sample(&model, prompt, latents.as_ref().map(|l| &l.0), &o))?;
    if o.seed.is_none() && latents.is_none() {
        println!("seed: {seed}");
    }
    Ok(video)
}

fn model_info(m: &ScriptVideoModel) -> Map {
    let v = &m.0;
    let mut map = Map::new();
    map.insert("base".into(), v.base.source.clone().into());
    map.insert("modules".into(), v.spec.describe().into());
    map.insert("new_params".into(), (v.new_parameters().len() as i64).into());
    let trained: i64 = v.trained.iter().filter_map(|n| v.vars.variables().get(n).map(|t| t.numel() as i64)).sum();
    map.insert("trained_tensors".into(), (v.trained.len() as i64).into());
    map.insert("trained_params".into(), trained.into());
    map.insert("identity".into(), v.identity.clone().into());
    if let Some(r) = &v.record {
        map.insert("prompt".into(), r.prompt.clone().into());
        map.insert("steps".into(), r.steps_done.into());
        map.insert("interrupted".into(), r.interrupted.into());
        map.insert("final_loss".into(), r.losses.last().copied().unwrap_or(f64::NAN).into());
    }
    let mut layers = Map::new();
    for (name, module) in v.modules() {
        layers.insert(name.into(), module.into());
    }
    map.insert("layers".into(), layers.into());
    map
}

fn save_model(host: &Host, m: &ScriptVideoModel, path: &str) -> RhaiResult<String> {
    let bytes = rt(save_tuned(&m.0, Path::new(path)))?;
    host.record_write(Path::new(path));
    println!("saved {path} ({:.1} MB)", bytes as f64 / 1e6);
    Ok(path.to_string())
}

fn cache_info() -> Map {
    let (c, in_memory, disk) = memo_status();
    let mut m = Map::new();
    m.insert("memory_hits".into(), (c.memory_hits as i64).into());
    m.insert("disk_hits".into(), (c.disk_hits as i64).into());
    m.insert("misses".into(), (c.misses as i64).into());
    m.insert("in_memory".into(), (in_memory as i64).into());
    m.insert("disk_entries".into(), (disk.entries as i64).into());
    m.insert("disk_bytes".into(), (disk.bytes as i64).into());
    m.insert("disk_dir".into(), disk.dir.display().to_string().into());
    m
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    engine.register_type_with_name::<ScriptVideoModel>("VideoModel");
    engine.register_type_with_name::<ScriptLatents>("Latents");
    engine.register_fn("inflate", |sd: SdModel| do_inflate(&sd, Opts::empty("inflate")));
    engine
        .register_fn("inflate", |sd: SdModel, opts: Map| do_inflate(&sd, Opts::new("inflate", opts, INFLATE_OPTIONS)?));
    engine.register_fn("tune", |m: Dynamic, clip: Video, prompt: &str| do_tune(&m, &clip, prompt, Opts::empty("tune")));
    engine.register_fn("tune", |m: Dynamic, clip: Video, prompt: &str, opts: Map| {
        do_tune(&m, &clip, prompt, Opts::new("tune", opts, TUNE_OPTIONS)?)
    });
    engine.register_fn("invert", |m: Dynamic, clip: Video| do_invert(&m, &clip, Opts::empty("invert")));
    engine.register_fn("invert", |m: Dynamic, clip: Video, opts: Map| {
        do_invert(&m, &clip, Opts::new("invert", opts, INVERT_OPTIONS)?)
    });
    engine.register_fn("sample", |m: Dynamic, prompt: &str| do_sample(&m, prompt, Opts::empty("sample")));
    engine.register_fn("sample", |m: Dynamic, prompt: &str, opts: Map| {
        do_sample(&m, prompt, Opts::new("sample", opts, SAMPLE_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("load_tuned", move |sd: SdModel, path: &str| {
        h.record_read(Path::new(path));
        rt(load_tuned(sd.0.clone(), Path::new(path))).map(|m| ScriptVideoModel(Rc::new(m)))
    });
    let h = host.clone();
    engine.register_fn("save", move |m: &mut ScriptVideoModel, path: &str| save_model(&h, m, path));
    engine.register_fn("info", |m: &mut ScriptVideoModel| model_info(m));
    engine.register_fn("losses", |m: &mut ScriptVideoModel| {
        m.0.record.as_ref().map(|r| r.losses.iter().map(|&l| Dynamic::from(l)).collect::<Array>()).unwrap_or_default()
    });
    engine.register_fn("to_string", |m: &mut ScriptVideoModel| m.0.summary());
    engine.register_fn("to_debug", |m: &mut ScriptVideoModel| m.0.summary());
    engine.register_fn("tensor", |l: &mut ScriptLatents| ScriptTensor(l.0.latents.shallow_clone()));
    engine.register_fn("to_string", |l: &mut ScriptLatents| l.0.to_string());
    engine.register_fn("to_debug", |l: &mut ScriptLatents| l.0.to_string());
    engine.register_fn("cache_info", cache_info);
    engine.register_fn("pipeline_stats", || {
        let s = vidtune_runtime::pipelines::stats();
        let mut m = Map::new();
        m.insert("tune_steps".into(), (s.tune_steps as i64).into());
        m.insert("invert_steps".into(), (s.invert_steps as i64).into());
        m.insert("sample_steps".into(), (s.sample_steps as i64).into());
        m
    });
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "inflate",
        signatures: &[
            "inflate(sd: StableDiffusion) -> VideoModel",
            "inflate(sd: StableDiffusion, options: map) -> VideoModel",
        ],
        summary: "Inflates an SD1.x model to video (Tune-A-Video's pseudo-3-D UNet): per-frame convolutions, \
                  frame-spanning GroupNorm, the chosen spatial attention module in every attn1 and a temporal \
                  module in every transformer block. Frozen weights are shared with sd, nothing is copied.",
        details: "options:
  spatial   \"sparse_causal\" (default, Tune-A-Video) | \"self\" | \"first_frame\" (LAMP) | \"full\" | \"ffam:R\" (EI²)
  temporal  \"temporal\" (default, Tune-A-Video) | \"stam\" (EI²) | \"none\"
  layers    #{pattern: module}: per-layer spatial modules; patterns match attn1 names with * wildcards
  seed      initialisation of the new temporal layers (default 0)",
        example: r#"let sd = load_sd("random:tiny");
let tav = inflate(sd, #{spatial: "sparse_causal", temporal: "temporal"});
let ei2 = inflate(sd, #{spatial: "ffam:2", temporal: "stam", layers: #{"up_blocks.*": "ffam:4"}});"#,
    },
    FnDoc {
        name: "tune",
        signatures: &[
            "tune(model: VideoModel, clip: Video, prompt: string) -> VideoModel",
            "tune(model, clip, prompt, options: map) -> VideoModel",
        ],
        summary: "One-shot tuning on a clip and its description. Returns the tuned model (the input is unchanged). \
                  Memoised: the same model, clip, prompt and options return the stored result without a step. \
                  Ctrl-C stops and returns the model tuned so far.",
        details: "options:
  steps          integer (default 500)          lr        number (default 3e-5)
  train          \"tav\" (default: attn1.to_q, attn2.to_q, attn_temp) | \"ei2\" | \"all\" | [patterns]
  seed           integer (default 33)           max_grad_norm   number (default 1.0)
  weight_decay   number (default 1e-2)          betas     [b1, b2] (default [0.9, 0.999])
  checkpoint     path of a tuned file written every `checkpoint_every` steps
  cache          false: always recompute",
        example: r#"let clip = load_video("car-turn.mp4", #{frames: 8, every: 2, size: 512});
let tuned = tune(model, clip, "a jeep car is moving on the road", #{steps: 300});"#,
    },
    FnDoc {
        name: "invert",
        signatures: &[
            "invert(model: VideoModel, clip: Video) -> Latents",
            "invert(model, clip, options: map) -> Latents",
        ],
        summary: "DDIM inversion of the clip (Tune-A-Video: null prompt, no guidance): the starting noise for edits \
                  that keep the clip's structure. Memoised like tune.",
        details: "options:
  steps   integer (default 50)
  prompt  string (default \"\": null-text inversion)
  cache   false: always recompute",
        example: r#"let inv = invert(tuned, clip, #{steps: 50});"#,
    },
    FnDoc {
        name: "sample",
        signatures: &[
            "sample(model: VideoModel, prompt: string) -> Video",
            "sample(model, prompt, options: map) -> Video",
        ],
        summary: "Generates a clip with DDIM and classifier-free guidance, from inverted latents (an edit of the \
                  tuned clip) or from seeded noise.",
        details: "options:
  latents   Latents from invert (default: seeded noise)
  steps     integer (default 50)      guidance  number (default 7.5)     eta  number (default 0)
  seed      integer (noise and eta)   negative  string
  frames, size, fps   without latents: clip length (default 8), size (default the model's), frame rate",
        example: r#"let edit = sample(tuned, "a Porsche car is moving on the beach", #{latents: inv, guidance: 12.5});
save_video(edit, "out/edit.mp4");"#,
    },
    FnDoc {
        name: "load_tuned",
        signatures: &["load_tuned(sd: StableDiffusion, path: string) -> VideoModel"],
        summary:
            "Loads a tuned file (written by model.save) onto its base model; a file tuned on another base is refused.",
        details: "",
        example: r#"let sd = load_sd("CompVis/stable-diffusion-v1-4");
let tuned = load_tuned(sd, "out/car-turn.vidtune.safetensors");"#,
    },
    FnDoc {
        name: "VideoModel.save",
        signatures: &["model.save(path: string) -> string"],
        summary: "Writes only what tuning changed (trained and new tensors, module state) with metadata naming the \
                  base model, the modules, options and seed; atomic.",
        details: "",
        example: r#"tuned.save("out/car-turn.vidtune.safetensors");"#,
    },
    FnDoc {
        name: "VideoModel.info",
        signatures: &["model.info() -> map"],
        summary: "Base model, modules per layer, new and trained parameter counts, tuning record.",
        details: "",
        example: r#"print(inflate(load_sd("random:tiny")).info().modules);"#,
    },
    FnDoc {
        name: "VideoModel.losses",
        signatures: &["model.losses() -> array"],
        summary: "The loss of every tuning step (empty before tuning).",
        details: "",
        example: r#"print(tuned.losses());"#,
    },
    FnDoc {
        name: "Latents.tensor",
        signatures: &["latents.tensor() -> Tensor"],
        summary: "The inverted latents [1, 4, F, h, w].",
        details: "",
        example: r#"print(invert(tuned, clip).tensor().shape());"#,
    },
    FnDoc {
        name: "cache_info",
        signatures: &["cache_info() -> map"],
        summary: "The memo of tune and invert: hits, misses, entries in memory and on disk, its folder.",
        details:
            "VIDTUNE_CACHE sets the folder (default ~/.cache/vidtune), VIDTUNE_CACHE_MAX_GB its size (default 20).",
        example: r#"print(cache_info());"#,
    },
    FnDoc {
        name: "pipeline_stats",
        signatures: &["pipeline_stats() -> map"],
        summary: "Tuning, inversion and sampling steps run so far in this process (a cache hit runs none).",
        details: "",
        example: r#"print(pipeline_stats().tune_steps);"#,
    },
];
