//! Video-model functions: `inflate`, `tune`, `invert`, `sample`, `load_tuned`, the `VideoModel` and
//! `Latents` types, and the memo's `cache_info` / `pipeline_stats`: their registration and documentation.
//! Their options are read in [`super::video_options`], their runs share [`super::call`].

use super::call::{note_call, report_memo, run_sample, video_model, SampleCall};
use super::live::Live;
use super::state::Host;
use super::video_options::{
    check_sample_preset, latents_option, null_text_options, sample_options, store_options, tune_options, video_spec,
    window_options, INFLATE_OPTIONS, INVERT_OPTIONS, SAMPLE_OPTIONS, TUNE_OPTIONS,
};
use crate::docs::{FnDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{one_or_many, rt, script_error, Opts, RhaiResult};
use crate::values::{ScriptLatents, ScriptTensor, ScriptVideoModel, SdModel};
use rhai::{Array, Dynamic, Map, NativeCallContext};
use std::rc::Rc;
use vidtune_runtime::options::INVERT_STEPS;
use vidtune_runtime::pipelines::cached::{invert_cached, memo_status, tune_clips_cached};
use vidtune_runtime::pipelines::codenoise::PromptSchedule;
use vidtune_runtime::pipelines::invert::InvertOptions;
use vidtune_runtime::pipelines::tune::TuneClip;
use vidtune_runtime::video::inflate;
use vidtune_runtime::video::tuned::{load_tuned, save_tuned_with};
use vidtune_runtime::{Masks, Video};

fn do_inflate(sd: &SdModel, opts: Opts) -> RhaiResult<ScriptVideoModel> {
    let spec = video_spec(&opts)?;
    let seed = opts.int("seed")?.unwrap_or(0) as u64;
    Ok(ScriptVideoModel(Rc::new(rt(inflate(sd.0.clone(), &spec, seed))?)))
}

/// `tune(model, clip | [clips], prompt | [prompts], options)`.
fn do_tune(
    host: &Host,
    model: &Dynamic,
    clips: &Dynamic,
    prompts: &Dynamic,
    opts: Opts,
) -> RhaiResult<ScriptVideoModel> {
    let model = video_model("tune", model)?;
    let videos: Vec<Video> = one_or_many("tune", "the clips", "a Video", clips)?;
    let texts: Vec<String> = if prompts.is_string() {
        vec![prompts.to_string(); videos.len()]
    } else {
        one_or_many::<rhai::ImmutableString>("tune", "the prompts", "a string", prompts)?
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    };
    if texts.len() != videos.len() {
        return Err(script_error(format!(
            "tune: {} clips but {} prompts; give one prompt per clip (or one string for all)",
            videos.len(),
            texts.len()
        )));
    }
    let masks: Vec<Option<Masks>> = match opts.get("masks") {
        None => vec![None; videos.len()],
        Some(v) => {
            let m: Vec<Masks> = one_or_many("tune", "option \"masks\"", "Masks", v)?;
            if m.len() != videos.len() {
                return Err(script_error(format!(
                    "tune: {} mask sequences for {} clips; give one per clip",
                    m.len(),
                    videos.len()
                )));
            }
            m.into_iter().map(Some).collect()
        }
    };
    let controls = super::control::controls(&opts)?;
    let clips: Vec<TuneClip> = videos
        .into_iter()
        .zip(texts)
        .zip(masks)
        .map(|((video, prompt), masks)| TuneClip { video, prompt, masks, controls: controls.clone() })
        .collect();
    let o = tune_options(&opts, &|p| host.output_path(p))?;
    let use_cache = opts.bool("cache")?.unwrap_or(true);
    let out = rt(tune_clips_cached(&model, &clips, &o, use_cache))?;
    report_memo(&out, "tune");
    note_call(host, "tune", &opts, o.to_json(), None, &model, &out);
    Ok(ScriptVideoModel(out.value))
}

fn do_invert(
    ctx: Option<&NativeCallContext>,
    host: &Host,
    model: &Dynamic,
    clip: &Video,
    opts: Opts,
) -> RhaiResult<ScriptLatents> {
    let model = video_model("invert", model)?;
    let d = match opts.string("preset")? {
        Some(p) => vidtune_runtime::pipelines::presets::invert(&p).map_err(|e| script_error(format!("invert: {e}")))?,
        None => InvertOptions::default(),
    };
    let o = InvertOptions {
        steps: opts.int(INVERT_STEPS.name)?.unwrap_or(d.steps),
        prompt: opts.string("prompt")?.unwrap_or_else(|| d.prompt.clone()),
        masks: opts.custom::<Masks>("masks", "Masks")?,
        windows: window_options(&opts, None)?,
        null_text: match opts.get("null_text") {
            None => d.null_text.clone(),
            Some(_) => null_text_options(&opts)?,
        },
        store: match opts.get("store") {
            None => d.store.clone(),
            Some(_) => store_options(&opts)?,
        },
    };
    let live = Live::from(&opts)?;
    let use_cache = opts.bool("cache")?.unwrap_or(true) && !live.active();
    let out = live.run(ctx, host, &model.base, clip.fps(), || rt(invert_cached(&model, clip, &o, use_cache)))?;
    report_memo(&out, "invert");
    note_call(host, "invert", &opts, o.to_json(), None, &model, &out);
    Ok(ScriptLatents(out.value))
}

fn do_sample(
    ctx: Option<&NativeCallContext>,
    host: &Host,
    model: &Dynamic,
    prompt: &str,
    opts: Opts,
) -> RhaiResult<Video> {
    let model = video_model("sample", model)?;
    let latents = latents_option(&opts, &model)?;
    let mut o = sample_options(&opts, None)?;
    check_sample_preset(&opts, &o)?;
    let seed_given = o.seed.is_some();
    o.seed = o.seed.or_else(|| host.replay_seed());
    let schedule = PromptSchedule::single(prompt);
    let call = SampleCall { func: "sample", opts: &opts, model: &model, seed_given, schedule: &schedule };
    run_sample(ctx, host, call, latents.as_ref().map(|l| &l.0), &o)
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
    let path = host.output_path(path);
    let bytes = rt(save_tuned_with(&m.0, &path, &host.file_metadata()))?;
    host.record_write(&path);
    println!("saved {} ({:.1} MB)", path.display(), bytes as f64 / 1e6);
    Ok(path.display().to_string())
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
    engine.register_fn("inflate", |sd: SdModel, opts: Map| {
        do_inflate(&sd, Opts::declared("inflate", opts, INFLATE_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("tune", move |m: Dynamic, clip: Dynamic, prompt: Dynamic| {
        do_tune(&h, &m, &clip, &prompt, Opts::empty("tune"))
    });
    let h = host.clone();
    engine.register_fn("tune", move |m: Dynamic, clip: Dynamic, prompt: Dynamic, opts: Map| {
        do_tune(&h, &m, &clip, &prompt, Opts::declared("tune", opts, TUNE_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("invert", move |m: Dynamic, clip: Video| do_invert(None, &h, &m, &clip, Opts::empty("invert")));
    let h = host.clone();
    engine.register_fn("invert", move |ctx: NativeCallContext, m: Dynamic, clip: Video, opts: Map| {
        do_invert(Some(&ctx), &h, &m, &clip, Opts::declared("invert", opts, INVERT_OPTIONS)?)
    });
    let h = host.clone();
    engine
        .register_fn("sample", move |m: Dynamic, prompt: &str| do_sample(None, &h, &m, prompt, Opts::empty("sample")));
    let h = host.clone();
    engine.register_fn("sample", move |ctx: NativeCallContext, m: Dynamic, prompt: &str, opts: Map| {
        do_sample(Some(&ctx), &h, &m, prompt, Opts::declared("sample", opts, SAMPLE_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("load_tuned", move |sd: SdModel, path: &str| {
        let path = h.input_path(path);
        h.record_read(&path);
        rt(load_tuned(sd.0.clone(), &path)).map(|m| ScriptVideoModel(Rc::new(m)))
    });
    let h = host.clone();
    engine.register_fn("save", move |m: &mut ScriptVideoModel, path: &str| save_model(&h, m, path));
    let h = host.clone();
    engine.register_fn("save", move |m: &mut ScriptVideoModel, path: &str, opts: Map| {
        Opts::saving("VideoModel.save", opts, || save_model(&h, m, path))
    });
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
        details: "",
        options: INFLATE_OPTIONS,
        example: r#"let sd = load_sd("random:tiny");
let tav = inflate(sd, #{spatial: "sparse_causal", temporal: "temporal"});
let ei2 = inflate(sd, #{spatial: "ffam:2", temporal: "stam", layers: #{"up_blocks.*": "ffam:4"}});
let guided = inflate(sd, #{preset: "mask-guided"});   // + MCA and mask cross-attention"#,
    },
    FnDoc {
        name: "tune",
        signatures: &[
            "tune(model: VideoModel, clip: Video, prompt: string) -> VideoModel",
            "tune(model, clip, prompt, options: map) -> VideoModel",
            "tune(model, clips: [Video], prompts: [string] | string, options: map) -> VideoModel",
        ],
        summary: "One-shot tuning on a clip and its description. Returns the tuned model (the input is unchanged). \
                  Memoised: the same model, clip, prompt and options return the stored result without a step. \
                  Ctrl-C stops and returns the model tuned so far.",
        details: "With several clips (few-shot tuning, as LAMP and dynamic mask guidance do with 5–8 clips of one \
                  motion) each step trains on one of them, drawn from the seed.",
        options: TUNE_OPTIONS,
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
        details: "",
        options: INVERT_OPTIONS,
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
        details: "A model with mask modules (mca, masked cross-attention) needs masks in every call. \
                  keep_background needs latents inverted with the masks and the inversion's step count. Word \
                  weights as A1111 writes them, \"a (red:1.5) car\" (0–10), scale those words' cross-attention \
                  (prompt-to-prompt's reweighting). Memoised when reproducible (a seed, or latents without fresh \
                  noise): a rerun returns the stored clip.",
        options: SAMPLE_OPTIONS,
        example: r#"let edit = sample(tuned, "a Porsche car is moving on the beach", #{latents: inv, guidance: 12.5});
save_video(edit, "out/edit.mp4");
let kept = sample(guided, "a yellow car is moving on the road",
                  #{latents: inv_masked, masks: m, subject: "yellow car", keep_background: true, steps: 50});"#,
    },
    FnDoc {
        name: "load_tuned",
        signatures: &["load_tuned(sd: StableDiffusion, path: string) -> VideoModel"],
        summary:
            "Loads a tuned file (written by model.save) onto its base model; a file tuned on another base is refused.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let sd = load_sd("CompVis/stable-diffusion-v1-4");
let tuned = load_tuned(sd, "out/car-turn.vidtune.safetensors");"#,
    },
    FnDoc {
        name: "VideoModel.save",
        signatures: &["model.save(path: string) -> string", "model.save(path: string, options: map) -> string"],
        summary: "Writes only what tuning changed (trained and new tensors, module state) with metadata naming the \
                  base model, the modules, options and seed; atomic.",
        details: "",
        options: crate::docs::SAVE_FILE_OPTIONS,
        example: r#"tuned.save("out/car-turn.vidtune.safetensors");"#,
    },
    FnDoc {
        name: "VideoModel.info",
        signatures: &["model.info() -> map"],
        summary: "Base model, modules per layer, new and trained parameter counts, tuning record.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(inflate(load_sd("random:tiny")).info().modules);"#,
    },
    FnDoc {
        name: "VideoModel.losses",
        signatures: &["model.losses() -> array"],
        summary: "The loss of every tuning step (empty before tuning).",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(tuned.losses());"#,
    },
    FnDoc {
        name: "Latents.tensor",
        signatures: &["latents.tensor() -> Tensor"],
        summary: "The inverted latents [1, 4, F, h, w].",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(invert(tuned, clip).tensor().shape());"#,
    },
    FnDoc {
        name: "cache_info",
        signatures: &["cache_info() -> map"],
        summary: "The memo of tune, invert and sample: hits, misses, entries in memory and on disk, its folder.",
        details:
            "VIDTUNE_CACHE sets the folder (default ~/.cache/vidtune), VIDTUNE_CACHE_MAX_GB its size (default 20).",
        options: NO_OPTIONS,
        example: r#"print(cache_info());"#,
    },
    FnDoc {
        name: "pipeline_stats",
        signatures: &["pipeline_stats() -> map"],
        summary: "Tuning, inversion and sampling steps run so far in this process (a cache hit runs none).",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(pipeline_stats().tune_steps);"#,
    },
];
