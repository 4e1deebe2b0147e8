//! The options of the video-model functions: their tables (`inflate`, `tune`, `invert`, `sample`,
//! `co_denoise`), kept together, and how each is read into the runtime's options, presets included.

use crate::docs::{Declared, OptDoc};
use crate::opts::{one_or_many, rt, script_error, Opts, RhaiResult};
use crate::values::{ScriptLatents, ScriptTensor};
use rhai::{Array, Dynamic, Map};
use std::path::PathBuf;
use vidtune_kernels::codenoise::Weighting;
use vidtune_runtime::device::parse_device;
use vidtune_runtime::options::{
    CHECKPOINT_EVERY, ETA, FEATHER, FPS, FRAMES, GUIDANCE, INVERT_STEPS, LR, MAX_GRAD_NORM, NEGATIVE, RENOISE,
    SAMPLE_STEPS, SEED, STRENGTH, TUNE_SEED, TUNE_STEPS, TUNE_WINDOW, WEIGHT_DECAY,
};
use vidtune_runtime::pipelines::codenoise::{Anchor, WindowOptions};
use vidtune_runtime::pipelines::invert::Latents;
use vidtune_runtime::pipelines::presets;
use vidtune_runtime::pipelines::sample::{FirstFrame, SampleOptions, DEFAULT_FPS, SHARED_NOISE};
use vidtune_runtime::pipelines::tune::{train_preset, LossWeights, TuneOptions};
use vidtune_runtime::video::processors::{ModuleSpec, Role};
use vidtune_runtime::video::{parse_optional, VideoModel, VideoSpec};
use vidtune_runtime::{Image, Masks, Video};

/// `inflate`'s options.
pub const INFLATE_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: Some(Declared::Presets),
        name: "preset",
        takes: "",
        doc: "a combination of modules; the options below override its parts. mask-guided = sparse_causal + \
              temporal + mca + masked cross-attention (the project's recommendation for edits with masks); \
              dynamic-mask = first_frame:mask=4 + temporal + masked cross-attention (generation from a mask motion); \
              zero-shot = sparse_causal, no temporal layers (FateZero: edits without tuning); p2p = Tune-A-Video's \
              (Video-P2P)",
    },
    OptDoc {
        opt: Some(Declared::Modules(Role::Spatial)),
        name: "spatial",
        takes: "",
        doc: "the attn1 module: Tune-A-Video, per frame, LAMP (mask-aware with mask > 0, dynamic mask guidance), all \
              frames, EI²",
    },
    OptDoc {
        opt: Some(Declared::Modules(Role::Temporal)),
        name: "temporal",
        takes: "",
        doc: "Tune-A-Video, EI², Tune-A-Video with a learned gate per frame position, no temporal layers",
    },
    OptDoc {
        opt: Some(Declared::Modules(Role::Cross)),
        name: "cross",
        takes: "",
        doc: "the attn2 module; masked = mask cross-attention (dynamic mask guidance, DenseDiffusion): the \
              `subject` words attend inside the masks",
    },
    OptDoc { opt: Some(Declared::Modules(Role::Mask)), name: "mask", takes: "", doc: "mask-guided cross-attention (MCA): a mask encoder and an attention from mask features to video features in every block" },
    OptDoc { opt: None, name: "layers", takes: "#{pattern: module}", doc: "per-layer spatial modules; patterns match attn1 names with * wildcards" },
    OptDoc { opt: None, name: "seed", takes: "integer (default 0)", doc: "initialisation of the new layers" },
];

/// `tune`'s options.
pub const TUNE_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: Some(Declared::Presets),
        name: "preset",
        takes: "",
        doc: "the recipe's tuning (inflate's preset names); the options below override it. dynamic-mask: \
              first_frame, train \"dynamic-mask\" (attn1, attn2, attn_temp); zero-shot does not tune",
    },
    OptDoc::declared(&TUNE_STEPS),
    OptDoc::declared(&TUNE_WINDOW),
    OptDoc::declared(&LR),
    OptDoc { opt: None,
        name: "train",
        takes: "\"tav\" (default: attn1.to_q, attn2.to_q, attn_temp) | \"ei2\" | \"dynamic-mask\" | \"all\" | [patterns]",
        doc: "what tuning changes; the layers mask modules add (mask encoder, MCA) train too",
    },
    OptDoc::declared(&TUNE_SEED),
    OptDoc::declared(&MAX_GRAD_NORM),
    OptDoc::declared(&WEIGHT_DECAY),
    OptDoc { opt: None, name: "betas", takes: "[b1, b2] (default [0.9, 0.999])", doc: "" },
    OptDoc { opt: None,
        name: "masks",
        takes: "Masks | [Masks]",
        doc: "the subject's masks of each clip: for mask modules and the fg / bg losses",
    },
    OptDoc { opt: None,
        name: "loss",
        takes: "#{all: λ1, fg: λ2, bg: λ3} (default #{all: 1})",
        doc: "λ1·L + λ2·L_fg + λ3·L_bg (long-video Eq. 20)",
    },
    OptDoc { opt: None,
        name: "first_frame",
        takes: "true | false (default)",
        doc: "keep the first latent clean and train on frames 2..N (LAMP)",
    },
    OptDoc { opt: None,
        name: "subject",
        takes: "string",
        doc: "the words of the prompt naming the subject, for mask cross-attention",
    },
    OptDoc { opt: None,
        name: "precision",
        takes: "\"fp32\" | \"bf16\" | \"fp16\" (default: the model's)",
        doc: "mixed precision: the forward and backward in this precision, float32 master weights (fp16 with loss scaling)",
    },
    OptDoc { opt: None,
        name: "checkpointing",
        takes: "true | false (default: on CUDA; on the CPU when a step without it would not fit in memory)",
        doc: "gradient checkpointing: recompute each block in the backward (less memory, ~1/3 more compute)",
    },
    OptDoc { opt: None, name: "checkpoint", takes: "path", doc: "a tuned file written every `checkpoint_every` steps" },
    OptDoc::declared(&CHECKPOINT_EVERY),
    OptDoc { opt: None, name: "cache", takes: "true (default) | false", doc: "false: always recompute" },
    super::control::CONTROL,
];

/// `invert`'s options.
pub const INVERT_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: Some(Declared::Presets),
        name: "preset",
        takes: "",
        doc: "the recipe's inversion (inflate's preset names); the options below override it. zero-shot: store; \
              p2p: null_text",
    },
    OptDoc::declared(&INVERT_STEPS),
    OptDoc {
        opt: None,
        name: "prompt",
        takes: "string (default \"\")",
        doc: "the empty prompt is Tune-A-Video's null-text inversion",
    },
    OptDoc {
        opt: None,
        name: "masks",
        takes: "Masks",
        doc: "the subject's masks: needed by mask modules; the trajectory is kept for keep_background",
    },
    OptDoc { opt: None, name: "cache", takes: "true (default) | false", doc: "false: always recompute" },
    OptDoc {
        opt: None,
        name: "null_text",
        takes: "true | #{inner_steps: 1–100 (10), lr: (0, 1] (0.01), guidance: 1–30 (7.5), epsilon: ≥ 0 (1e-5)}",
        doc: "null-text inversion (Mokady et al.): per-step null embeddings optimised so that guided sampling \
              retraces the clip; `sample` uses them (with no negative prompt) — give the source description as \
              `prompt`",
    },
    OptDoc {
        opt: None,
        name: "store",
        takes: "true | #{self: true, cross: true, resolutions: [sides] (default: every level but the largest), disk: \
                false}",
        doc:
            "keep the inversion's attention maps (half precision, on the CPU or with disk in files; refused when they \
              would not fit) \
              for sample's fusion (FateZero) — give the source description as `prompt`",
    },
    super::live::PREVIEW_EVERY,
    super::live::ON_STEP,
    WINDOW,
    STRIDE,
    WEIGHTS,
    BATCH,
    ANCHOR,
    DEVICES,
];

/// `sample`'s options, followed by `$extra` ones (co_denoise adds its windows).
macro_rules! sample_options {
    ($($extra:expr),*) => {
        &[
            OptDoc { opt: None,
                name: "latents",
                takes: "Latents (from invert)",
                doc: "the starting noise of an edit (default: seeded noise)",
            },
            OptDoc { opt: Some(Declared::Presets),
                name: "preset",
                takes: "",
                doc: "the recipe's sampling (inflate's preset names); the options below override it. dynamic-mask: \
                      shared_noise 0.2, and first_frame and masks are required; zero-shot: fusion (cross_replace 0.2, \
                      self_replace 1); p2p: fusion with the source branch (cross_replace 0.2, self_replace 0.5) and \
                      a local blend of the words the edit adds",
            },
            OptDoc::declared(&SAMPLE_STEPS),
            OptDoc::declared(&GUIDANCE),
            OptDoc::declared(&SEED),
            OptDoc::declared(&NEGATIVE),
            OptDoc::declared(&ETA),
            OptDoc::declared(&FRAMES),
            OptDoc { opt: None, name: "size", takes: "integer | [w, h]", doc: "without latents: the clip's size (default the model's)" },
            OptDoc::declared(&FPS),
            OptDoc { opt: None,
                name: "masks",
                takes: "Masks",
                doc: "the subject's masks, one per frame (from segment, load_masks or mask_sequence)",
            },
            OptDoc { opt: None,
                name: "subject",
                takes: "string",
                doc: "words of the prompt naming the subject, for mask cross-attention (\"yellow triangle\")",
            },
            OptDoc { opt: None,
                name: "keep_background",
                takes: "true | false (default)",
                doc: "outside the masks, the latents follow the inversion at every step",
            },
            OptDoc::declared(&FEATHER),
            OptDoc { opt: None,
                name: "first_frame",
                takes: "\"source\" | \"edit\" | Image | Video",
                doc: "hold frame 0 at this first frame and denoise frames 2..N (edit: frame 0 is sampled first on its own)",
            },
            OptDoc { opt: None,
                name: "shared_noise",
                takes: "true (α = 0.2) | number α",
                doc: "mix the first frame's latent into the other frames' noise (dynamic mask guidance Eq. 8)",
            },
            OptDoc { opt: None,
                name: "shared_noise_follow",
                takes: "true | false (default)",
                doc: "with masks, the shared first frame's subject moves along them (its latent lands where each frame's subject is)",
            },
            OptDoc { opt: None,
                name: "subject_guide",
                takes: "number in [0, 1] (default 0: off)",
                doc: "with masks and a first frame: for this share of the steps, the subject's latents inside the masks are the first frame's carried along them, noised to the step",
            },
            OptDoc { opt: None,
                name: "variance_preserving",
                takes: "true | false (default)",
                doc: "shared noise rescaled to unit variance",
            },
            OptDoc::declared(&STRENGTH),
            OptDoc::declared(&RENOISE),
            super::control::CONTROL,
            OptDoc { opt: None,
                name: "cache",
                takes: "true (default) | false",
                doc: "false: always recompute (results with a seed, or from latents without fresh noise, are memoised)",
            },
            super::live::PREVIEW_EVERY,
            super::live::ON_STEP,
            OptDoc { opt: None,
                name: "scorer",
                takes: "Clip (from load_clip)",
                doc: "after sampling, warn about frames whose CLIP alignment with the prompt falls below the others' \
                      (with masks and inverted latents, frames whose change inside the masks stands out are named \
                      anyway)",
            },
            $($extra),*
        ]
    };
}

/// `sample`'s options.
pub const SAMPLE_OPTIONS: &[OptDoc] = sample_options!(FUSION);

/// `sample`'s `fusion` option.
const FUSION: OptDoc = OptDoc {
    opt: None,
    name: "fusion",
    takes:
        "true | #{cross_replace: 0–1 (0.8), self_replace: 0–1 | [start, end] (0.6), blend_words: string | [strings], \
            blend_threshold: 0–1 (0.3), blend_masks: bool, source_branch: bool, local_blend: true | #{source, target, \
            threshold, start}}",
    doc: "attention fusion (FateZero) with the maps of latents from invert(…, #{store: true}): for the first \
          cross_replace of the steps the source's cross-attention (mapped word for word, or aligned when the word \
          counts differ), for the self_replace window the source's self-attention outside the blend mask (from \
          the source words blend_words, or the masks) and the edit's inside; source_branch runs the source beside \
          the edit and fuses its maps (Video-P2P); local_blend keeps the source's latents outside the words' \
          attention (prompt-to-prompt)",
};

const WINDOW: OptDoc = OptDoc {
    opt: None,
    name: "window",
    takes: "integer",
    doc: "co-denoise in windows of this many frames, so memory follows the window, not the clip (co_denoise: \
          default 16; invert: the whole clip at once)",
};
const STRIDE: OptDoc = OptDoc {
    opt: None,
    name: "stride",
    takes: "integer (default window / 2)",
    doc: "frames between window starts; the last window is flush with the clip's end",
};
const WEIGHTS: OptDoc = OptDoc {
    opt: None,
    name: "weights",
    takes: "\"uniform\" (default) | \"triangular\" | \"gaussian\" | \"gaussian:S\"",
    doc: "how windows weigh their frames in the per-frame merge (uniform: Gen-L-Video's mean; the others soften seams)",
};
const BATCH: OptDoc =
    OptDoc { opt: None, name: "batch", takes: "integer (default 1)", doc: "windows per UNet call (without masks)" };
const ANCHOR: OptDoc = OptDoc {
    opt: None,
    name: "anchor",
    takes: "\"global\" (default) | \"window\"",
    doc: "the first frame a window's first-frame attention reads: the clip's (its keys and values recorded once \
          per step by the first window), or the window's own",
};

/// `co_denoise`'s options: `sample`'s and the windows'.
const DEVICES: OptDoc = OptDoc {
    opt: None,
    name: "devices",
    takes: "device | [device, …] (default: the model's)",
    doc: "spread the windows' UNet calls round-robin over these devices (\"cuda:0\", \"cuda:1\", …); each gets a \
          replica of the video UNet",
};
pub const CO_DENOISE_OPTIONS: &[OptDoc] = sample_options!(WINDOW, STRIDE, WEIGHTS, BATCH, ANCHOR, DEVICES);

pub(super) fn video_spec(opts: &Opts) -> RhaiResult<VideoSpec> {
    let mut spec = match opts.string("preset")? {
        Some(p) => VideoSpec::preset(&p).map_err(|e| script_error(format!("inflate: {e}")))?,
        None => VideoSpec::default(),
    };
    if let Some(s) = opts.string("spatial")? {
        spec.spatial = rt(ModuleSpec::parse(&s))?;
    }
    if let Some(t) = opts.string("temporal")? {
        spec.temporal = rt(parse_optional(Role::Temporal, &t))?;
    }
    if let Some(c) = opts.string("cross")? {
        spec.cross = rt(ModuleSpec::parse_role(Role::Cross, &c))?;
    }
    if let Some(m) = opts.string("mask")? {
        spec.mask = rt(parse_optional(Role::Mask, &m))?;
    }
    if let Some(v) = opts.get("layers") {
        let map = v
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| script_error("inflate: option \"layers\" must be a map of layer pattern → module"))?;
        for (pattern, module) in map {
            let m = module
                .into_string()
                .map_err(|_| script_error(format!("inflate: layers[{pattern:?}] must be a module name")))?;
            spec.layers.push((pattern.to_string(), rt(ModuleSpec::parse(&m))?));
        }
    }
    Ok(spec)
}

/// `output_path` places the checkpoint (a rerun writes under its own folder).
pub(super) fn tune_options(opts: &Opts, output_path: &dyn Fn(&str) -> PathBuf) -> RhaiResult<TuneOptions> {
    let d = match opts.string("preset")? {
        Some(p) => presets::tune(&p).map_err(|e| script_error(format!("tune: {e}")))?,
        None => TuneOptions::default(),
    };
    let train = match opts.get("train") {
        None => d.train.clone(),
        Some(v) if v.is_string() => {
            let name = v.to_string();
            train_preset(&name).ok_or_else(|| {
                script_error(format!(
                    "tune: unknown train preset {name:?}; expected \"tav\", \"ei2\", \"dynamic-mask\", \"all\" or an array \
                     of patterns"
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
    let number = |x: &Dynamic| x.as_float().ok().or_else(|| x.as_int().ok().map(|i| i as f64));
    let betas = match opts.get("betas") {
        None => d.betas,
        Some(v) => match v.clone().try_cast::<Array>().as_deref() {
            Some([a, b]) => match (number(a), number(b)) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(script_error(format!("tune: option \"betas\" must be two numbers, got {v}"))),
            },
            _ => return Err(script_error("tune: option \"betas\" must be [beta1, beta2]")),
        },
    };
    let loss = match opts.get("loss") {
        None => d.loss,
        Some(v) => {
            let map = v.clone().try_cast::<Map>().ok_or_else(|| {
                script_error(format!("tune: option \"loss\" must be a map #{{all: λ1, fg: λ2, bg: λ3}}, got {v}"))
            })?;
            let l = Opts::new("tune: loss", map, &["all", "fg", "bg"])?;
            LossWeights {
                all: l.float("all")?.unwrap_or(if l.get("fg").is_some() || l.get("bg").is_some() { 0.0 } else { 1.0 }),
                fg: l.float("fg")?.unwrap_or(0.0),
                bg: l.float("bg")?.unwrap_or(0.0),
            }
        }
    };
    let o = TuneOptions {
        steps: opts.int(TUNE_STEPS.name)?.unwrap_or(d.steps),
        lr: opts.float(LR.name)?.unwrap_or(d.lr),
        train,
        seed: opts.int(TUNE_SEED.name)?.map(|s| s as u64).unwrap_or(d.seed),
        max_grad_norm: opts.float(MAX_GRAD_NORM.name)?.unwrap_or(d.max_grad_norm),
        betas,
        weight_decay: opts.float(WEIGHT_DECAY.name)?.unwrap_or(d.weight_decay),
        eps: d.eps,
        checkpoint_every: opts.int(CHECKPOINT_EVERY.name)?,
        checkpoint_path: opts.string("checkpoint")?.map(|p| output_path(&p)),
        first_frame: opts.bool("first_frame")?.unwrap_or(d.first_frame),
        loss,
        subject: opts.string("subject")?,
        window: opts.int(TUNE_WINDOW.name)?,
        precision: opts
            .string("precision")?
            .map(|p| vidtune_runtime::device::parse_dtype(&p))
            .transpose()
            .map_err(|e| script_error(format!("tune: option \"precision\": {e}")))?,
        checkpointing: opts.bool("checkpointing")?,
        sync_every: None,
    };
    if o.checkpoint_every.is_some() && o.checkpoint_path.is_none() {
        return Err(script_error(
            "tune: checkpoint_every needs a checkpoint path (checkpoint: \"out/ckpt.vidtune.safetensors\")",
        ));
    }
    if let Some(path) = &o.checkpoint_path {
        vidtune_runtime::fsutil::check_output(path)
            .map_err(|e| script_error(format!("tune: option \"checkpoint\": {e}")))?;
    }
    Ok(o)
}

/// The options of `sample` (and `co_denoise`, whose windows default to `window` frames).
pub(super) fn sample_options(opts: &Opts, window: Option<i64>) -> RhaiResult<SampleOptions> {
    let d = match opts.string("preset")? {
        Some(p) => presets::sample(&p).map_err(|e| script_error(format!("{}: {e}", opts.func())))?,
        None => SampleOptions::default(),
    };
    let size = opts.size("size")?;
    let shared_noise = match opts.get("shared_noise") {
        None => d.shared_noise,
        Some(v) if v.is_bool() => v.as_bool().ok().filter(|b| *b).map(|_| SHARED_NOISE),
        Some(_) => opts.float("shared_noise")?,
    };
    Ok(SampleOptions {
        steps: opts.int(SAMPLE_STEPS.name)?.unwrap_or(d.steps),
        guidance: opts.float(GUIDANCE.name)?.unwrap_or(d.guidance),
        seed: opts.int(SEED.name)?.map(|s| s as u64),
        negative: opts.string(NEGATIVE.name)?.unwrap_or_else(|| d.negative.clone()),
        eta: opts.float(ETA.name)?.unwrap_or(d.eta),
        frames: opts.int(FRAMES.name)?,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        fps: opts.float(FPS.name)?,
        masks: opts.custom::<Masks>("masks", "Masks")?,
        subject: opts.string("subject")?,
        keep_background: opts.bool("keep_background")?.unwrap_or(false),
        feather: opts.int(FEATHER.name)?.unwrap_or(d.feather),
        first_frame: first_frame(opts)?,
        shared_noise,
        variance_preserving: opts.bool("variance_preserving")?.unwrap_or(false),
        shared_noise_follow: opts.bool("shared_noise_follow")?.unwrap_or(false),
        subject_guide: opts.float("subject_guide")?.unwrap_or(0.0),
        strength: opts.float(STRENGTH.name)?.unwrap_or(d.strength),
        renoise: opts.float(RENOISE.name)?.unwrap_or(d.renoise),
        windows: match window {
            Some(_) => window_options(opts, window)?,
            None => None,
        },
        until: None,
        controls: super::control::controls(opts)?,
        fusion: match opts.get("fusion") {
            None => d.fusion.clone(),
            Some(_) => fusion_options(opts, d.fusion.as_ref())?,
        },
    })
}

/// Refuses a `sample` or `co_denoise` call without what its recipe preset samples from (`extend` and
/// `fuse` make their own first frames).
pub(super) fn check_sample_preset(opts: &Opts, o: &SampleOptions) -> RhaiResult<()> {
    match opts.string("preset")? {
        Some(p) => rt(presets::check_sample(&p, o, opts.func())),
        None => Ok(()),
    }
}

fn first_frame(opts: &Opts) -> RhaiResult<Option<FirstFrame>> {
    let Some(v) = opts.get("first_frame") else { return Ok(None) };
    if let Some(img) = v.clone().try_cast::<Image>() {
        return Ok(Some(FirstFrame::Image(img)));
    }
    if let Some(video) = v.clone().try_cast::<Video>() {
        return Ok(Some(FirstFrame::Image(rt(video.frame(0))?)));
    }
    match v.clone().into_string().ok().as_deref() {
        Some("source") => Ok(Some(FirstFrame::Source)),
        Some("edit") => Ok(Some(FirstFrame::Edit)),
        _ => Err(script_error(format!(
            "sample: option \"first_frame\" must be \"source\", \"edit\", an Image or a Video, got {}",
            crate::values::describe(v)
        ))),
    }
}

/// The windows of a co-denoised call: `None` without a `window` option unless `default` gives one.
pub(super) fn window_options(opts: &Opts, default: Option<i64>) -> RhaiResult<Option<WindowOptions>> {
    let Some(window) = opts.int("window")?.or(default) else {
        for key in WindowOptions::WINDOW_ONLY {
            if opts.get(key).is_some() {
                return Err(script_error(format!(
                    "{}: option {key:?} would be ignored without \"window\"; give #{{window: frames}}",
                    opts.func()
                )));
            }
        }
        return Ok(None);
    };
    let mut w = WindowOptions::new(window);
    w.stride = opts.int("stride")?.unwrap_or(w.stride);
    if let Some(s) = opts.string("weights")? {
        w.weights = Weighting::parse(&s).map_err(|e| script_error(format!("{}: {e}", opts.func())))?;
    }
    w.batch = opts.int("batch")?.unwrap_or(w.batch);
    if let Some(a) = opts.string("anchor")? {
        w.anchor = Anchor::parse(&a).map_err(|e| script_error(format!("{}: {e}", opts.func())))?;
    }
    if let Some(v) = opts.get("devices") {
        let names: Vec<rhai::ImmutableString> = one_or_many(opts.func(), "option \"devices\"", "a device name", v)?;
        if names.is_empty() {
            return Err(script_error(format!(
                "{}: option \"devices\" is empty; name at least one device",
                opts.func()
            )));
        }
        w.devices = names
            .iter()
            .map(|n| parse_device(n).map_err(|e| script_error(format!("{}: devices: {e}", opts.func()))))
            .collect::<RhaiResult<_>>()?;
    }
    w.validate().map_err(|e| script_error(format!("{}: {e}", opts.func())))?;
    Ok(Some(w))
}

/// The `latents` option of `sample` and `co_denoise`: `Latents` from invert, or a plain tensor
/// `[1, C, F, h, w]` checked against the model.
pub(super) fn latents_option(opts: &Opts, model: &VideoModel) -> RhaiResult<Option<ScriptLatents>> {
    let Some(v) = opts.get("latents") else { return Ok(None) };
    if let Some(l) = v.clone().try_cast::<ScriptLatents>() {
        return Ok(Some(l));
    }
    if let Some(t) = v.clone().try_cast::<ScriptTensor>() {
        let fps = opts.float("fps")?.unwrap_or(DEFAULT_FPS);
        return Latents::given(model, &t.0, fps)
            .map(|l| Some(ScriptLatents(l)))
            .map_err(|e| script_error(format!("{}: {e}", opts.func())));
    }
    Err(script_error(format!(
        "{}: option \"latents\" must be Latents (from invert) or a Tensor [1, 4, F, h, w] (from load_tensors), got {}",
        opts.func(),
        crate::values::describe(v)
    )))
}

/// An option that is `true` (its defaults), `false` (off) or a map of `keys`: `None` when absent or false,
/// `Some(None)` for true, `Some(Some(map))` for a map, checked against `keys` under the name `func`.
fn flag_or_map<'a>(opts: &Opts, name: &str, func: &'a str, keys: &[OptDoc]) -> RhaiResult<Option<Option<Opts<'a>>>> {
    let Some(v) = opts.get(name) else { return Ok(None) };
    if let Ok(b) = v.as_bool() {
        return Ok(b.then_some(None));
    }
    let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
    let map = v.clone().try_cast::<Map>().ok_or_else(|| {
        script_error(format!("{}: {name} must be true or a map #{{{}}}", opts.func(), names.join(", ")))
    })?;
    Ok(Some(Some(Opts::declared(func, map, keys)?)))
}

/// The keys of `invert`'s `null_text` map.
const NULL_TEXT_KEYS: &[OptDoc] = &[
    OptDoc { opt: None, name: "inner_steps", takes: "integer 1–100 (default 10)", doc: "Adam steps per timestep" },
    OptDoc { opt: None, name: "lr", takes: "number in (0, 1] (default 0.01)", doc: "Adam's first learning rate" },
    OptDoc { opt: None, name: "guidance", takes: "number 1–30 (default 7.5)", doc: "the guidance to retrace at" },
    OptDoc { opt: None, name: "epsilon", takes: "number ≥ 0 (default 1e-5)", doc: "the early-stop loss" },
];

/// `invert`'s `null_text` option: `true`, `false`, or a map of [`NULL_TEXT_KEYS`], each checked against
/// its range.
pub fn null_text_options(opts: &Opts) -> RhaiResult<Option<vidtune_runtime::pipelines::null_text::NullTextOptions>> {
    use vidtune_runtime::pipelines::null_text::NullTextOptions;
    let func = format!("{} null_text", opts.func());
    let o = match flag_or_map(opts, "null_text", &func, NULL_TEXT_KEYS)? {
        None => return Ok(None),
        Some(None) => return Ok(Some(NullTextOptions::default())),
        Some(Some(o)) => o,
    };
    let d = NullTextOptions::default();
    let out = NullTextOptions {
        inner_steps: o.count("inner_steps")?.unwrap_or(d.inner_steps),
        lr: o.float("lr")?.unwrap_or(d.lr),
        guidance: o.float("guidance")?.unwrap_or(d.guidance),
        epsilon: o.float("epsilon")?.unwrap_or(d.epsilon),
    };
    let bad =
        |what: &str, range: &str, got: String| Err(script_error(format!("{func}: {what} must be {range}, got {got}")));
    if !(1..=100).contains(&out.inner_steps) {
        return bad("inner_steps", "1–100", out.inner_steps.to_string());
    }
    if out.lr.is_nan() || out.lr <= 0.0 || out.lr > 1.0 {
        return bad("lr", "in (0, 1]", out.lr.to_string());
    }
    if !(1.0..=30.0).contains(&out.guidance) {
        return bad("guidance", "1–30", out.guidance.to_string());
    }
    if !out.epsilon.is_finite() || out.epsilon < 0.0 {
        return bad("epsilon", "≥ 0", out.epsilon.to_string());
    }
    Ok(Some(out))
}

/// The keys of `invert`'s `store` map.
const STORE_KEYS: &[OptDoc] = &[
    OptDoc { opt: None, name: "self", takes: "bool (default true)", doc: "keep the self-attention (attn1) maps" },
    OptDoc { opt: None, name: "cross", takes: "bool (default true)", doc: "keep the cross-attention (attn2) maps" },
    OptDoc {
        opt: None,
        name: "resolutions",
        takes: "[integers] (default: every level but the largest)",
        doc: "the latent sides whose layers are kept (at 512²: 64, 32, 16, 8)",
    },
    OptDoc {
        opt: None,
        name: "disk",
        takes: "bool (default false)",
        doc: "keep the maps on disk in vidtune's cache, a file per step read back one step at a time (bounded by \
              the free disk space, not memory; removed with the latents, not memoised)",
    },
];

/// `invert`'s `store` option: `true`, `false` or a map of [`STORE_KEYS`].
pub fn store_options(opts: &Opts) -> RhaiResult<Option<vidtune_runtime::pipelines::store::StoreOptions>> {
    use vidtune_runtime::pipelines::store::StoreOptions;
    let func = format!("{} store", opts.func());
    let o = match flag_or_map(opts, "store", &func, STORE_KEYS)? {
        None => return Ok(None),
        Some(None) => return Ok(Some(StoreOptions::default())),
        Some(Some(o)) => o,
    };
    let resolutions = match o.get("resolutions") {
        None => None,
        Some(v) => {
            let sides: Vec<i64> = one_or_many(&func, "resolutions", "an integer", v)?;
            if let Some(bad) = sides.iter().find(|&&s| s < 1) {
                return Err(script_error(format!("{func}: resolutions must be positive sides, got {bad}")));
            }
            Some(sides)
        }
    };
    Ok(Some(StoreOptions {
        self_attn: o.bool("self")?.unwrap_or(true),
        cross: o.bool("cross")?.unwrap_or(true),
        resolutions,
        disk: o.bool("disk")?.unwrap_or(false),
    }))
}

/// The keys of `sample`'s `fusion` map.
const FUSION_KEYS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "cross_replace",
        takes: "number 0–1 (default 0.8)",
        doc: "the share of the steps, from the first, that use the source's cross-attention",
    },
    OptDoc {
        opt: None,
        name: "self_replace",
        takes: "number 0–1 | [start, end] (default 0.6)",
        doc: "the steps (shares) whose self-attention is the source's outside the blend mask",
    },
    OptDoc {
        opt: None,
        name: "blend_words",
        takes: "string | [strings]",
        doc: "words of the source prompt whose cross-attention marks where the edit keeps its own self-attention",
    },
    OptDoc {
        opt: None,
        name: "blend_threshold",
        takes: "number 0–1 (default 0.3)",
        doc: "the blend mask: where the words' attention is above this share of each frame's maximum",
    },
    OptDoc {
        opt: None,
        name: "blend_masks",
        takes: "bool (default false)",
        doc: "the blend mask from the sample's masks instead of words",
    },
    OptDoc {
        opt: None,
        name: "source_branch",
        takes: "bool (default false)",
        doc: "run the source prompt beside the edit, on null-text inversion's embeddings when the latents have them \
              (Video-P2P's decoupled guidance), and fuse its maps of the same step instead of the stored ones",
    },
    OptDoc {
        opt: None,
        name: "local_blend",
        takes:
            "true | #{source: string | [strings], target: string | [strings], threshold: 0–1 (0.3), start: 0–1 (0.2)}",
        doc: "prompt-to-prompt's local blend: after each step from start on, the edit's latents are the source's \
              outside where the source words (default blend_words) or the edit's words (default: those it adds) \
              attend",
    },
];

/// The keys of `fusion`'s `local_blend` map.
const LOCAL_BLEND_KEYS: &[OptDoc] = &[
    OptDoc { opt: None, name: "source", takes: "string | [strings]", doc: "words of the source prompt" },
    OptDoc { opt: None, name: "target", takes: "string | [strings]", doc: "words of the edit's prompt" },
    OptDoc { opt: None, name: "threshold", takes: "number 0–1 (default 0.3)", doc: "of each frame's maximum" },
    OptDoc {
        opt: None,
        name: "start",
        takes: "number 0–1 (default 0.2)",
        doc: "the share of the steps before the first blend",
    },
];

/// `sample`'s `fusion` option: `true`, `false` or a map of [`FUSION_KEYS`], checked against their ranges;
/// what the map leaves out is `base`'s (a preset's fusion), else the defaults.
pub fn fusion_options(
    opts: &Opts,
    base: Option<&vidtune_runtime::pipelines::fusion::FusionOptions>,
) -> RhaiResult<Option<vidtune_runtime::pipelines::fusion::FusionOptions>> {
    use vidtune_runtime::pipelines::fusion::{FusionOptions, LocalBlend};
    let func = format!("{} fusion", opts.func());
    let d = base.cloned().unwrap_or_default();
    let o = match flag_or_map(opts, "fusion", &func, FUSION_KEYS)? {
        None => return Ok(None),
        Some(None) => return Ok(Some(d)),
        Some(Some(o)) => o,
    };
    let self_replace = match o.get("self_replace") {
        None => d.self_replace,
        Some(v) if v.is_array() => {
            let w: Vec<f64> = v
                .clone()
                .into_array()
                .unwrap_or_default()
                .iter()
                .map(|x| x.as_float().or_else(|_| x.as_int().map(|i| i as f64)))
                .collect::<Result<_, _>>()
                .map_err(|_| script_error(format!("{func}: self_replace must be a number or [start, end]")))?;
            match w.as_slice() {
                [a, b] => (*a, *b),
                _ => return Err(script_error(format!("{func}: self_replace must be a number or [start, end]"))),
            }
        }
        Some(_) => (0.0, o.float("self_replace")?.unwrap_or(d.self_replace.1)),
    };
    let words = |o: &Opts, func: &str, key: &str| -> RhaiResult<Vec<String>> {
        match o.get(key) {
            None => Ok(vec![]),
            Some(v) => Ok(one_or_many::<rhai::ImmutableString>(func, key, "a string", v)?
                .into_iter()
                .map(|s| s.to_string())
                .collect()),
        }
    };
    let blend_words = match o.get("blend_words") {
        None => d.blend_words.clone(),
        Some(_) => words(&o, &func, "blend_words")?,
    };
    let local_func = format!("{func} local_blend");
    let local_blend = match flag_or_map(&o, "local_blend", &local_func, LOCAL_BLEND_KEYS)? {
        None if o.get("local_blend").is_none() => d.local_blend.clone(),
        None => None,
        Some(None) => Some(LocalBlend::default()),
        Some(Some(l)) => {
            let ld = LocalBlend::default();
            Some(LocalBlend {
                source_words: words(&l, &local_func, "source")?,
                target_words: words(&l, &local_func, "target")?,
                threshold: l.float("threshold")?.unwrap_or(ld.threshold),
                start: l.float("start")?.unwrap_or(ld.start),
            })
        }
    };
    let out = FusionOptions {
        cross_replace: o.float("cross_replace")?.unwrap_or(d.cross_replace),
        self_replace,
        blend_words,
        blend_threshold: o.float("blend_threshold")?.unwrap_or(d.blend_threshold),
        blend_masks: o.bool("blend_masks")?.unwrap_or(d.blend_masks),
        source_branch: o.bool("source_branch")?.unwrap_or(d.source_branch),
        local_blend,
    };
    out.validate().map_err(|e| {
        script_error(format!("{}: {}", opts.func(), e.to_string().replace("sample fusion: ", "fusion: ")))
    })?;
    Ok(Some(out))
}
