//! Script functions for long clips: `co_denoise` (windows merged per frame, prompts along the clip),
//! `extend` (autoregressive extension) and `fuse` (average fusion). Their window options are parsed with
//! `invert`'s and `sample`'s in [`super::video_options`].

use super::call::{run_sample, video_model, SampleCall};
use super::state::Host;
use super::video_options::{check_sample_preset, latents_option, sample_options, CO_DENOISE_OPTIONS};
use crate::docs::{FnDoc, OptDoc};
use crate::guard::Registrar;
use crate::opts::{one_or_many, rt, script_error, Opts, RhaiResult};
use rhai::{Array, Dynamic, Map, NativeCallContext};
use std::rc::Rc;
use std::time::Instant;
use vidtune_runtime::options::{GUIDANCE, NEGATIVE, SAMPLE_STEPS, SEED};
use vidtune_runtime::pipelines::codenoise::{PromptSchedule, PromptSpan, WindowOptions};
use vidtune_runtime::pipelines::extend::extend;
use vidtune_runtime::pipelines::fuse::{fuse, FuseOptions};
use vidtune_runtime::pipelines::sample::SampleOptions;
use vidtune_runtime::video::VideoModel;
use vidtune_runtime::Video;

/// `extend`'s options.
pub const EXTEND_OPTIONS: &[OptDoc] = &[
    OptDoc { opt: None, name: "frames", takes: "integer (default 8)", doc: "how many frames to add" },
    OptDoc {
        opt: None,
        name: "masks",
        takes: "Masks",
        doc: "the subject's masks of the new frames (one per new frame, or one more: the last frame's first)",
    },
    OptDoc {
        opt: None,
        name: "subject",
        takes: "string",
        doc: "words of the prompt naming the subject (mask cross-attention)",
    },
    OptDoc {
        opt: None,
        name: "shared_noise",
        takes: "number α (default 0.2)",
        doc: "the last frame's latent in the new noise",
    },
    OptDoc {
        opt: None,
        name: "variance_preserving",
        takes: "true | false (default)",
        doc: "shared noise at unit variance",
    },
    OptDoc::declared(&SAMPLE_STEPS),
    OptDoc::declared(&GUIDANCE),
    OptDoc::declared(&NEGATIVE),
    OptDoc::declared(&SEED),
];

/// `fuse`'s options.
pub const FUSE_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "masks",
        takes: "Masks (required)",
        doc: "the subject's masks: foreground and background",
    },
    OptDoc {
        opt: None,
        name: "samples",
        takes: "integer (default 5)",
        doc: "samples whose backgrounds are averaged (n)",
    },
    OptDoc { opt: None, name: "at", takes: "integer (default 1)", doc: "DDIM steps run before fusing (k)" },
    OptDoc {
        opt: None,
        name: "weights",
        takes: "[w1, w2] (default [1, 1])",
        doc: "background and foreground weights (Eq. 11)",
    },
    OptDoc {
        opt: None,
        name: "subject",
        takes: "string",
        doc: "words of the prompt naming the subject (mask cross-attention)",
    },
    OptDoc { opt: None, name: "frames", takes: "integer (default: the masks' count)", doc: "" },
    OptDoc { opt: None, name: "size", takes: "integer | [w, h]", doc: "the clip's size (default the model's)" },
    OptDoc::declared(&SAMPLE_STEPS),
    OptDoc::declared(&GUIDANCE),
    OptDoc::declared(&NEGATIVE),
    OptDoc {
        opt: None,
        name: "seed",
        takes: "integer (default: random, printed)",
        doc: "sample i draws from seed + i",
    },
    super::control::CONTROL,
];

/// Prompts along a clip of `frames`: one string; one string per window of `windows`; or maps
/// `#{frames: [first, last], prompt}`.
fn prompt_schedule(prompts: &Dynamic, windows: &WindowOptions, frames: i64) -> RhaiResult<PromptSchedule> {
    if prompts.is_string() {
        return Ok(PromptSchedule::single(&prompts.to_string()));
    }
    let items: Array = prompts.clone().try_cast::<Array>().ok_or_else(|| {
        script_error(format!(
            "co_denoise: the prompts must be a string, an array of strings or #{{frames, prompt}} maps, got {}",
            crate::values::describe(prompts)
        ))
    })?;
    if items.is_empty() {
        return Err(script_error("co_denoise: the prompt list is empty; give a string or at least one prompt"));
    }
    if items.iter().all(|d| d.is_string()) {
        let plan = rt(windows.plan(frames))?;
        if plan.len() != items.len() {
            return Err(script_error(format!(
                "co_denoise: {} prompts for {} windows ({frames} frames, window {}, stride {}); give one per window \
                 or #{{frames: [first, last], prompt}} maps",
                items.len(),
                plan.len(),
                windows.window,
                windows.stride
            )));
        }
        let spans = plan
            .iter()
            .zip(&items)
            .map(|(w, p)| PromptSpan { first: w.start, last: w.start + w.len - 1, prompt: p.to_string() })
            .collect();
        return Ok(PromptSchedule(spans));
    }
    let mut spans = vec![];
    for (i, item) in items.into_iter().enumerate() {
        let what = format!("co_denoise: prompt {i}");
        let map = item
            .try_cast::<Map>()
            .ok_or_else(|| script_error(format!("{what} must be a string or #{{frames: [first, last], prompt}}")))?;
        let o = Opts::new("co_denoise", map, &["frames", "prompt"])?;
        let prompt = o.string("prompt")?.ok_or_else(|| script_error(format!("{what} has no \"prompt\"")))?;
        let range: Vec<i64> = match o.get("frames") {
            Some(v) => one_or_many("co_denoise", "option \"frames\" of a prompt", "an integer", v)?,
            None => return Err(script_error(format!("{what} has no \"frames\": [first, last]"))),
        };
        let [first, last] = range[..] else {
            return Err(script_error(format!("{what}: \"frames\" must be [first, last], got {} numbers", range.len())));
        };
        spans.push(PromptSpan { first, last, prompt });
    }
    Ok(PromptSchedule(spans))
}

/// Notes an `extend` or `fuse` call (not memoised) in the run record.
fn record(
    host: &Host,
    function: &'static str,
    opts: &Opts,
    resolved: serde_json::Value,
    seed: (u64, bool),
    model: &VideoModel,
    start: Instant,
) {
    host.record_call(super::state::CallRecord {
        function,
        given: opts.map().clone(),
        resolved,
        seed: Some(seed.0),
        seed_given: seed.1,
        model: Some(super::state::model_record(model)),
        source: Some("computed"),
        seconds: start.elapsed().as_secs_f64(),
    });
}

fn do_extend(host: &Host, model: &Dynamic, video: &Video, prompt: &str, opts: Opts) -> RhaiResult<Video> {
    let model = video_model("extend", model)?;
    let frames = opts.int("frames")?.unwrap_or(8);
    let mut o = SampleOptions { frames: None, ..sample_options(&opts, None)? };
    let seed_given = o.seed.is_some();
    o.seed = o.seed.or_else(|| host.replay_seed());
    let start = Instant::now();
    let (out, seed) = rt(extend(&model, video, prompt, frames, &o))?;
    record(
        host,
        "extend",
        &opts,
        {
            let mut r = o.to_json();
            (r["frames"], r["prompt"]) = (frames.into(), prompt.into());
            r
        },
        (seed, seed_given),
        &model,
        start,
    );
    if o.seed.is_none() {
        println!("seed: {seed}");
    }
    Ok(out)
}

fn do_fuse(host: &Host, model: &Dynamic, prompt: &str, opts: Opts) -> RhaiResult<Video> {
    let model = video_model("fuse", model)?;
    let d = FuseOptions::default();
    let (w_bg, w_fg) = match opts.get("weights") {
        None => (d.w_bg, d.w_fg),
        Some(v) => match one_or_many::<f64>("fuse", "option \"weights\"", "a number", v)?[..] {
            [a, b] => (a, b),
            _ => return Err(script_error(format!("fuse: option \"weights\" must be [w1, w2], got {v}"))),
        },
    };
    let f = FuseOptions {
        samples: opts.int("samples")?.unwrap_or(d.samples),
        at: opts.int("at")?.unwrap_or(d.at),
        w_bg,
        w_fg,
    };
    let mut o = sample_options(&opts, None)?;
    let seed_given = o.seed.is_some();
    o.seed = o.seed.or_else(|| host.replay_seed());
    let start = Instant::now();
    let (out, seed) = rt(fuse(&model, prompt, &o, &f))?;
    let mut resolved = o.to_json();
    (resolved["fuse"], resolved["prompt"]) = (f.to_json(), prompt.into());
    record(host, "fuse", &opts, resolved, (seed, seed_given), &model, start);
    if o.seed.is_none() {
        println!("seed: {seed}");
    }
    Ok(out)
}

fn do_co_denoise(
    ctx: Option<&NativeCallContext>,
    host: &Host,
    model: &Dynamic,
    prompts: &Dynamic,
    opts: Opts,
) -> RhaiResult<Video> {
    let model = video_model("co_denoise", model)?;
    let latents = latents_option(&opts, &model)?;
    let mut o = sample_options(&opts, Some(16))?;
    check_sample_preset(&opts, &o)?;
    let seed_given = o.seed.is_some();
    o.seed = o.seed.or_else(|| host.replay_seed());
    let windows = o.windows.clone().expect("co_denoise always has windows");
    let frames = match &latents {
        Some(l) => l.0.frames(),
        None => o.frames.or(o.masks.as_ref().map(|m| m.len() as i64)).unwrap_or(8),
    };
    let schedule = prompt_schedule(prompts, &windows, frames)?;
    let call = SampleCall { func: "co_denoise", opts: &opts, model: &model, seed_given, schedule: &schedule };
    run_sample(ctx, host, call, latents.as_ref().map(|l| &l.0), &o)
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    let h = host.clone();
    engine.register_fn("extend", move |m: Dynamic, v: Video, prompt: &str| {
        do_extend(&h, &m, &v, prompt, Opts::empty("extend"))
    });
    let h = host.clone();
    engine.register_fn("extend", move |m: Dynamic, v: Video, prompt: &str, opts: Map| {
        do_extend(&h, &m, &v, prompt, Opts::declared("extend", opts, EXTEND_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("fuse", move |m: Dynamic, prompt: &str, opts: Map| {
        do_fuse(&h, &m, prompt, Opts::declared("fuse", opts, FUSE_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("co_denoise", move |m: Dynamic, prompts: Dynamic| {
        do_co_denoise(None, &h, &m, &prompts, Opts::empty("co_denoise"))
    });
    let h = host.clone();
    engine.register_fn("co_denoise", move |ctx: NativeCallContext, m: Dynamic, prompts: Dynamic, opts: Map| {
        do_co_denoise(Some(&ctx), &h, &m, &prompts, Opts::declared("co_denoise", opts, CO_DENOISE_OPTIONS)?)
    });
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "co_denoise",
        signatures: &[
            "co_denoise(model: VideoModel, prompt: string) -> Video",
            "co_denoise(model, prompt | [prompt per window] | [#{frames: [first, last], prompt}], options: map) -> Video",
        ],
        summary: "Temporal co-denoising of a long clip (Gen-L-Video): every DDIM step denoises overlapping windows of \
                  the clip, with guidance, and merges them per frame by weights that sum to 1. Memory follows the \
                  window, not the clip; every frame is covered (the last window is flush with the end).",
        details: "Prompts may change along the clip: one per window, or over frame ranges that may overlap (their text \
                  embeddings cross-fade there). With window at least the clip's length it is sample. Windows with \
                  masks run one per UNet call; without, `batch` of them share one. Invert long clips with \
                  invert(model, clip, #{window, stride}). The anchor \"global\" (the default) lets every \
                  window's first-frame attention read the clip's first frame, recorded once per step by the first \
                  window. Memoised like sample.",
        options: CO_DENOISE_OPTIONS,
        example: r#"let inv = invert(tuned, long_clip, #{steps: 50, window: 16, stride: 8});
let edit = co_denoise(tuned, "a red jeep car is moving on the road", #{latents: inv, window: 16, stride: 8,
                      weights: "triangular", steps: 50, guidance: 9});
let story = co_denoise(tuned, [#{frames: [0, 47], prompt: "a car on the road"},
                               #{frames: [40, 95], prompt: "a car on the beach"}], #{frames: 96, window: 16});"#,
    },
    FnDoc {
        name: "extend",
        signatures: &[
            "extend(model: VideoModel, video: Video, prompt: string) -> Video",
            "extend(model, video, prompt, options: map) -> Video",
        ],
        summary: "Autoregressive extension (dynamic mask guidance): the clip followed by `frames` new frames, generated \
                  with its last frame held as the first frame and shared into their noise. Repeated calls make \
                  clips of any length; memory follows `frames`.",
        details: "Best with a model tuned with first_frame: true (the dynamic-mask preset). Masks of the new frames \
                  steer them as in sample.",
        options: EXTEND_OPTIONS,
        example: r#"let longer = extend(tuned, clip, "a yellow circle bouncing", #{frames: 8, masks: next_masks, steps: 20});
let longest = extend(tuned, longer, "a yellow circle bouncing", #{frames: 8, masks: later_masks, steps: 20});"#,
    },
    FnDoc {
        name: "fuse",
        signatures: &["fuse(model: VideoModel, prompt: string, options: map) -> Video"],
        summary: "Average fusion (long-video framework, Eq. 11): `samples` samples of the prompt denoised to step \
                  `at`, their backgrounds averaged and the first one's foreground kept (by the masks), then \
                  denoised to the end.",
        details: "With one sample and weights [1, 1] it is sample. The fused clip is what combined tuning trains on \
                  (tune with #{loss: #{all, fg, bg}}).",
        options: FUSE_OPTIONS,
        example: r#"let fused = fuse(tuned, "a red circle bouncing", #{masks: m, samples: 5, at: 1, steps: 20, seed: 1});"#,
    },
];
