//! Model functions: `load_sd`, `t2i`, `encode_prompt`, and the `Tensor` type with `save_tensors` /
//! `load_tensors`.

use super::state::Host;
use crate::docs::{FnDoc, OptDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use crate::values::{ScriptTensor, SdModel};
use rhai::{Array, Dynamic, Map, NativeCallContext};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use tch::Tensor;
use vidtune_runtime::device::{device_name, dtype_name};
use vidtune_runtime::load::{check_source_options, LoadedModels};
use vidtune_runtime::options::{ETA, GUIDANCE, NEGATIVE, SAMPLE_STEPS, SEED};
use vidtune_runtime::pipelines::t2i::{t2i, t2i_candidates, T2iOptions};
use vidtune_runtime::Image;
use vidtune_runtime::{load_sd, SdLoadOptions};

/// `load_sd`'s options.
pub const LOAD_SD_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "device",
        takes: "\"auto\" (default: first CUDA device, else CPU) | \"cpu\" | \"cuda\" | \"cuda:N\"",
        doc: "",
    },
    OptDoc {
        opt: None,
        name: "dtype",
        takes: "\"fp32\" | \"fp16\" | \"bf16\"",
        doc: "default: fp32 on CPU, bf16 or fp16 on CUDA",
    },
    OptDoc {
        opt: None,
        name: "vae_dtype",
        takes: "a dtype",
        doc: "the VAE's (e.g. \"fp32\" beside a half-precision UNet)",
    },
    OptDoc { opt: None, name: "variant", takes: "\"fp16\"", doc: "read *.fp16.safetensors" },
    OptDoc {
        opt: None,
        name: "revision",
        takes: "string (default \"main\")",
        doc: "branch or commit of a cached repo",
    },
    OptDoc {
        opt: None,
        name: "config",
        takes: "path or repo id",
        doc: "for single files: a diffusers folder with the matching configs",
    },
    OptDoc { opt: None, name: "tokenizer", takes: "path", doc: "for single files: a tokenizer folder" },
    OptDoc { opt: None, name: "seed", takes: "integer (default 0)", doc: "for random:tiny" },
];

/// `t2i`'s options.
pub const T2I_OPTIONS: &[OptDoc] = &[
    OptDoc::declared(&SAMPLE_STEPS),
    OptDoc::declared(&GUIDANCE),
    OptDoc::declared(&SEED),
    OptDoc::declared(&NEGATIVE),
    OptDoc::declared(&ETA),
    OptDoc {
        opt: None,
        name: "width",
        takes: "integer",
        doc: "a multiple of 8 (default: the model's size, 512 for SD1.x)",
    },
    OptDoc { opt: None, name: "height", takes: "integer", doc: "as width" },
    super::control::CONTROL,
    OptDoc {
        opt: None,
        name: "candidates",
        takes: "integer 1–64 (default 1)",
        doc: "make this many images (seeds seed, seed + 1, …) and keep the one whose CLIP text alignment with the \
              prompt is highest; needs clip. The record names the kept seed, which alone gives the same image",
    },
    OptDoc { opt: None, name: "clip", takes: "Clip", doc: "the CLIP model (load_clip) that ranks candidates" },
    super::live::PREVIEW_EVERY,
    super::live::ON_STEP,
];

thread_local! {
    /// Loaded models, reused by later sessions in this process (watch-mode reruns load nothing twice).
    static LOADED: RefCell<LoadedModels<SdModel>> = const { RefCell::new(LoadedModels::new(KEEP_MODELS)) };
}

/// How many loaded models the process keeps for reuse.
const KEEP_MODELS: usize = 2;

fn load(host: &Host, spec: &str, opts: Opts) -> RhaiResult<SdModel> {
    // Checked before the options' types, as the source alone decides what applies.
    let revision = opts.get("revision").and_then(|v| v.clone().into_string().ok()).unwrap_or_else(|| "main".into());
    check_source_options(spec, &revision, &|name| opts.get(name).is_some())
        .map_err(|e| script_error(format!("load_sd: {e}")))?;
    let o = SdLoadOptions {
        device: opts.string("device")?.unwrap_or_else(|| "auto".into()),
        dtype: opts.string("dtype")?,
        vae_dtype: opts.string("vae_dtype")?,
        variant: opts.string("variant")?,
        revision: opts.string("revision")?.unwrap_or_else(|| "main".into()),
        config: opts.string("config")?.map(PathBuf::from),
        tokenizer: opts.string("tokenizer")?.map(PathBuf::from),
        seed: opts.int("seed")?.unwrap_or(0) as u64,
    };
    // Reused only while the files behind it are unchanged (an edited config reloads).
    let key = LoadedModels::<SdModel>::key(spec, &o);
    if let Some(m) = LOADED.with(|l| l.borrow().get(&key)) {
        return Ok(m);
    }
    let path = std::path::Path::new(spec);
    if path.exists() {
        host.record_read(path);
    }
    let model = SdModel(Rc::new(rt(load_sd(spec, &o))?));
    if model.0.random {
        println!("note: {spec} has random weights: its images are noise, useful to try the workflow only");
    }
    LOADED.with(|l| l.borrow_mut().insert(key, model.clone()));
    Ok(model)
}

fn info(m: &SdModel) -> Map {
    let sd = &m.0;
    let [u, v, t] = sd.parameter_counts();
    let mut map = Map::new();
    let mut put = |k: &str, v: Dynamic| {
        map.insert(k.into(), v);
    };
    put("source", sd.source.clone().into());
    put("random", sd.random.into());
    put("identity", sd.identity.clone().into());
    put("device", device_name(sd.device).into());
    put("dtype", dtype_name(sd.dtype).into());
    put("vae_dtype", dtype_name(sd.vae.model.kind()).into());
    put("unet_params", u.into());
    put("vae_params", v.into());
    put("text_encoder_params", t.into());
    put(
        "block_out_channels",
        sd.unet.model.config.block_out_channels.iter().map(|&c| Dynamic::from(c)).collect::<Array>().into(),
    );
    put("cross_attention_dim", sd.unet.model.config.cross_dim().into());
    put("default_size", sd.default_size().into());
    put("vocab_size", (sd.tokenizer.vocab_size() as i64).into());
    put("prediction_type", sd.scheduler.prediction_type.clone().into());
    map
}

fn generate(ctx: Option<&NativeCallContext>, host: &Host, m: &SdModel, prompt: &str, opts: Opts) -> RhaiResult<Image> {
    let d = T2iOptions::default();
    let o = T2iOptions {
        steps: opts.int(SAMPLE_STEPS.name)?.unwrap_or(d.steps),
        guidance: opts.float(GUIDANCE.name)?.unwrap_or(d.guidance),
        seed: opts.int(SEED.name)?.map(|s| s as u64).or_else(|| host.replay_seed()),
        negative: opts.string(NEGATIVE.name)?.unwrap_or_else(|| d.negative.clone()),
        width: opts.int("width")?,
        height: opts.int("height")?,
        eta: opts.float(ETA.name)?.unwrap_or(d.eta),
        controls: super::control::controls(&opts)?,
    };
    let candidates = opts.int("candidates")?.unwrap_or(1);
    if !(1..=64).contains(&candidates) {
        return Err(script_error(format!("t2i: candidates must be 1 to 64, got {candidates}")));
    }
    let clip = opts.custom::<crate::values::ScriptClip>("clip", "a Clip (from load_clip)")?;
    match (&clip, candidates) {
        (None, 2..) => {
            return Err(script_error(format!(
                "t2i: candidates: {candidates} keeps the image CLIP ranks first: give #{{clip: load_clip(\"toy\")}} \
                 (or your CLIP's folder)"
            )))
        }
        (Some(_), 1) => {
            return Err(script_error("t2i: clip ranks candidates and would be ignored: add #{candidates: N} (N > 1)"))
        }
        _ => {}
    }
    let live = super::live::Live::from(&opts)?;
    let start = std::time::Instant::now();
    let (out, ranked) = live.run(ctx, host, &m.0, 8.0, || match &clip {
        Some(c) => {
            let r = rt(t2i_candidates(&m.0, prompt, &o, candidates as usize, &c.0))?;
            let others: Vec<String> =
                (0..r.alignments.len()).filter(|&i| i != r.kept).map(|i| format!("{:.1}", r.alignments[i])).collect();
            println!(
                "t2i: kept candidate {} of {candidates} (seed {}), CLIP text alignment {:.1} (the others: {})",
                r.kept + 1,
                r.best.seed,
                r.alignments[r.kept],
                others.join(", ")
            );
            Ok((r.best, Some((r.first_seed, r.alignments))))
        }
        None => Ok((rt(t2i(&m.0, prompt, &o))?, None)),
    })?;
    let record_seed = ranked.as_ref().map_or(out.seed, |r| r.0);
    host.record_call(super::state::CallRecord {
        function: "t2i",
        given: opts.map().clone(),
        resolved: {
            let mut r = o.to_json();
            r["prompt"] = prompt.into();
            r["candidates"] = candidates.into();
            if let Some((_, alignments)) = &ranked {
                r["kept_seed"] = out.seed.into();
                r["alignments"] = alignments.clone().into();
            }
            r
        },
        seed: Some(record_seed),
        seed_given: opts.get("seed").is_some(),
        model: Some(
            serde_json::json!({"source": m.0.source, "identity": m.0.identity, "dtype": format!("{:?}", m.0.dtype),
                                       "device": format!("{:?}", m.0.device)}),
        ),
        source: Some("computed"),
        seconds: start.elapsed().as_secs_f64(),
    });
    if o.seed.is_none() {
        println!("seed: {record_seed}");
    }
    Ok(out.image)
}

fn to_image(t: &ScriptTensor) -> RhaiResult<Image> {
    let x = if t.0.dim() == 4 && t.0.size()[0] == 1 { t.0.squeeze_dim(0) } else { t.0.shallow_clone() };
    rt(Image::new(x.to_kind(tch::Kind::Float).clamp(-1.0, 1.0)))
}

fn stat(t: &ScriptTensor, name: &str, f: impl Fn(&Tensor) -> Tensor) -> RhaiResult<f64> {
    if t.0.numel() == 0 {
        return Err(script_error(format!("Tensor.{name}: the tensor {t} has no elements")));
    }
    Ok(f(&t.0.to_kind(tch::Kind::Double)).double_value(&[]))
}

fn save_tensors(host: &Host, map: Map, path: &str) -> RhaiResult<String> {
    let mut named = Vec::with_capacity(map.len());
    for (k, v) in map {
        let t = v
            .try_cast::<ScriptTensor>()
            .ok_or_else(|| script_error(format!("save_tensors: value {k:?} is not a Tensor")))?;
        named.push((k.to_string(), t.0.to_device(tch::Device::Cpu).contiguous()));
    }
    let mapped = host.output_path(path);
    let p = mapped.as_path();
    rt(vidtune_runtime::fsutil::write_output(p, |tmp| {
        Tensor::write_safetensors(&named, tmp)
            .map_err(|e| vidtune_runtime::Error::bad_file(p, format!("cannot write: {e}")))
    }))?;
    host.record_write(p);
    Ok(p.display().to_string())
}

fn load_tensors(host: &Host, path: &str) -> RhaiResult<Map> {
    let path = host.input_path(path);
    host.record_read(&path);
    let tensors = rt(vidtune_runtime::weights::read_safetensors(&path))?;
    Ok(tensors.into_iter().map(|(k, v)| (k.into(), Dynamic::from(ScriptTensor(v)))).collect())
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    engine.register_type_with_name::<SdModel>("StableDiffusion");
    engine.register_type_with_name::<ScriptTensor>("Tensor");
    let h = host.clone();
    engine.register_fn("load_sd", move |spec: &str| load(&h, spec, Opts::empty("load_sd")));
    let h = host.clone();
    engine.register_fn("load_sd", move |spec: &str, opts: Map| {
        load(&h, spec, Opts::declared("load_sd", opts, LOAD_SD_OPTIONS)?)
    });
    engine.register_fn("info", |m: &mut SdModel| info(m));
    engine.register_fn("to_string", |m: &mut SdModel| m.0.summary());
    engine.register_fn("to_debug", |m: &mut SdModel| m.0.summary());
    engine.register_fn("encode_prompt", |m: SdModel, text: &str| rt(m.0.encode_prompt(text)).map(ScriptTensor));
    engine.register_fn("dropped_words", |from: &str, to: &str| vidtune_runtime::words::dropped_words(from, to));
    engine.register_fn("negative_prompt", |kind: &str, from: &str, to: &str, subject: &str| {
        rt(vidtune_runtime::words::negative_prompt(kind, from, to, subject))
    });
    engine.register_fn("surroundings", |from: &str, to: &str, subject: &str| {
        vidtune_runtime::words::surroundings(from, to, subject)
    });
    engine.register_fn("subject_prompt", |from: &str, to: &str, subject: &str| {
        vidtune_runtime::words::subject_prompt(from, to, subject)
    });
    let h = host.clone();
    engine.register_fn("t2i", move |m: SdModel, prompt: &str| generate(None, &h, &m, prompt, Opts::empty("t2i")));
    let h = host.clone();
    engine.register_fn("t2i", move |ctx: NativeCallContext, m: SdModel, prompt: &str, opts: Map| {
        generate(Some(&ctx), &h, &m, prompt, Opts::declared("t2i", opts, T2I_OPTIONS)?)
    });

    engine.register_fn("shape", |t: &mut ScriptTensor| t.0.size().into_iter().map(Dynamic::from).collect::<Array>());
    engine.register_fn("dtype", |t: &mut ScriptTensor| dtype_name(t.0.kind()).to_string());
    engine.register_fn("device", |t: &mut ScriptTensor| device_name(t.0.device()));
    engine.register_fn("mean", |t: &mut ScriptTensor| stat(t, "mean", |x| x.mean(tch::Kind::Double)));
    engine.register_fn("std", |t: &mut ScriptTensor| stat(t, "std", |x| x.std(true)));
    engine.register_fn("min", |t: &mut ScriptTensor| stat(t, "min", |x| x.min()));
    engine.register_fn("max", |t: &mut ScriptTensor| stat(t, "max", |x| x.max()));
    engine.register_fn("to_image", |t: &mut ScriptTensor| to_image(t));
    engine.register_fn("to_string", |t: &mut ScriptTensor| t.to_string());
    engine.register_fn("to_debug", |t: &mut ScriptTensor| t.to_string());
    let h = host.clone();
    engine.register_fn("save_tensors", move |map: Map, path: &str| save_tensors(&h, map, path));
    let h = host.clone();
    engine.register_fn("save_tensors", move |map: Map, path: &str, opts: Map| {
        Opts::saving("save_tensors", opts, || save_tensors(&h, map, path))
    });
    let h = host.clone();
    engine.register_fn("load_tensors", move |path: &str| load_tensors(&h, path));
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "load_sd",
        signatures: &[
            "load_sd(path_or_repo_id: string) -> StableDiffusion",
            "load_sd(path_or_repo_id: string, options: map) -> StableDiffusion",
        ],
        summary: "Loads a Stable Diffusion 1.x model: a diffusers folder, a repo id in the Hugging Face cache \
                  (CompVis/stable-diffusion-v1-4; never downloaded), a single-file .safetensors checkpoint, \
                  \"toy\" (the built-in toy-world models vidtune trained itself: real edits of synthetic clips), or \
                  \"random:tiny\" (tiny random weights, to try the workflow). Pickle files (.bin, .ckpt) are refused.",
        details: "",
        options: LOAD_SD_OPTIONS,
        example: r#"let sd = load_sd("CompVis/stable-diffusion-v1-4", #{dtype: "fp16"});
let tiny = load_sd("random:tiny", #{seed: 1});
print(tiny.info());"#,
    },
    FnDoc {
        name: "StableDiffusion.info",
        signatures: &["sd.info() -> map"],
        summary: "What was loaded: source, random or not, device, dtypes, parameter counts, widths, default size.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(load_sd("random:tiny").info().unet_params);"#,
    },
    FnDoc {
        name: "encode_prompt",
        signatures: &["encode_prompt(sd: StableDiffusion, text: string) -> Tensor"],
        summary: "The CLIP text embeddings SD conditions on, [1, 77, width]; cached per prompt. Prompts longer than \
                  77 tokens are truncated with a warning, as transformers does.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let sd = load_sd("random:tiny");
let e = encode_prompt(sd, "a red car");
print(e.shape());"#,
    },
    FnDoc {
        name: "dropped_words",
        signatures: &["dropped_words(source: string, edit: string) -> string"],
        summary: "The words of the source description that the edit prompt does not have, in order: what an edit \
                  should move away from (a negative prompt).",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(dropped_words("a red car on a road", "a blue car on a road"));   // red"#,
    },
    FnDoc {
        name: "negative_prompt",
        signatures: &["negative_prompt(kind: string, source: string, edit: string, subject: string) -> string"],
        summary: "The negative prompt a recipe draws with, by name: \"none\" (empty), \"source\" (the source \
                  description), \"changed\" (dropped_words) or \"surroundings\" (surroundings); any other name is \
                  refused.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(negative_prompt("changed", "a red car on a road", "a blue car on a road", "blue car"));   // red"#,
    },
    FnDoc {
        name: "surroundings",
        signatures: &["surroundings(source: string, edit: string, subject: string) -> string"],
        summary: "The source description's words that the edit keeps, less the subject's: what the subject must \
                  not fade into (a negative prompt for a subject whose new colour is near its background's).",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(surroundings("a silver jeep on a road", "a red jeep on a road", "red jeep"));   // a on a road"#,
    },
    FnDoc {
        name: "subject_prompt",
        signatures: &["subject_prompt(source: string, edit: string, subject: string) -> string"],
        summary: "The source description with only the edit's changes that name the subject (a word of `subject`), \
                  the words aligned by their longest common subsequence: the first stage of a multiple edit.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let first = subject_prompt("a silver jeep on a road", "a red jeep on a beach", "red jeep");
print(first);   // a red jeep on a road"#,
    },
    FnDoc {
        name: "t2i",
        signatures: &[
            "t2i(sd: StableDiffusion, prompt: string) -> Image",
            "t2i(sd: StableDiffusion, prompt: string, options: map) -> Image",
        ],
        summary: "Text to image with DDIM and classifier-free guidance. The same seed, prompt and settings give the \
                  same image as diffusers' StableDiffusionPipeline with torch.Generator(\"cpu\").manual_seed(seed).",
        details: "",
        options: T2I_OPTIONS,
        example: r#"let sd = load_sd("random:tiny");
let img = t2i(sd, "a red circle on a blue background", #{steps: 20, seed: 42});
img.save("t2i.png");"#,
    },
    FnDoc {
        name: "Tensor.shape",
        signatures: &["tensor.shape() -> array"],
        summary: "The tensor's dimensions.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(encode_prompt(load_sd("random:tiny"), "x").shape());"#,
    },
    FnDoc {
        name: "Tensor.dtype",
        signatures: &["tensor.dtype() -> string"],
        summary: "\"fp32\", \"fp16\", \"bf16\", …",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(encode_prompt(load_sd("random:tiny"), "x").dtype());"#,
    },
    FnDoc {
        name: "Tensor.device",
        signatures: &["tensor.device() -> string"],
        summary: "\"cpu\" or \"cuda:N\".",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(encode_prompt(load_sd("random:tiny"), "x").device());"#,
    },
    FnDoc {
        name: "Tensor.mean",
        signatures: &["tensor.mean() -> float"],
        summary: "Mean of all elements.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(encode_prompt(load_sd("random:tiny"), "x").mean());"#,
    },
    FnDoc {
        name: "Tensor.std",
        signatures: &["tensor.std() -> float"],
        summary: "Standard deviation of all elements (unbiased).",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(encode_prompt(load_sd("random:tiny"), "x").std());"#,
    },
    FnDoc {
        name: "Tensor.min",
        signatures: &["tensor.min() -> float"],
        summary: "Smallest element.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(encode_prompt(load_sd("random:tiny"), "x").min());"#,
    },
    FnDoc {
        name: "Tensor.max",
        signatures: &["tensor.max() -> float"],
        summary: "Largest element.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(encode_prompt(load_sd("random:tiny"), "x").max());"#,
    },
    FnDoc {
        name: "Tensor.to_image",
        signatures: &["tensor.to_image() -> Image"],
        summary: "A [3, H, W] (or [1, 3, H, W]) tensor with values in [-1, 1] as an image.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let t = load_tensors("decoded.safetensors");
t.image.to_image().save("decoded.png");"#,
    },
    FnDoc {
        name: "save_tensors",
        signatures: &[
            "save_tensors(tensors: map, path: string) -> string",
            "save_tensors(tensors: map, path: string, options: map) -> string",
        ],
        summary: "Writes named tensors to a .safetensors file, atomically; returns the path.",
        details: "",
        options: crate::docs::SAVE_FILE_OPTIONS,
        example: r#"let sd = load_sd("random:tiny");
save_tensors(#{prompt: encode_prompt(sd, "a cat")}, "emb.safetensors");"#,
    },
    FnDoc {
        name: "load_tensors",
        signatures: &["load_tensors(path: string) -> map"],
        summary: "Reads every tensor of a .safetensors file into a map by name.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let t = load_tensors("emb.safetensors");
print(t.prompt.shape());"#,
    },
];
