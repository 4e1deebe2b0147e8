//! Scoring functions: `load_clip`, `score`, `compare` and the `Table` type.

use super::state::Host;
use crate::docs::{FnDoc, OptDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use crate::values::{ScriptClip, Table};
use rhai::{Array, Dynamic, Map};
use std::path::Path;
use std::rc::Rc;
use vidtune_kernels::metrics::Pairs;
use vidtune_runtime::models::clip::ClipModel;
use vidtune_runtime::score::{score, Comparison, EditMetrics, Score, ScoreOptions};
use vidtune_runtime::toy::probe::check_frames_of;
use vidtune_runtime::{Masks, Video};

/// `score`'s and `compare`'s options.
pub const SCORE_OPTIONS: &[OptDoc] = &[
    OptDoc { opt: None, name: "clip", takes: "Clip (from load_clip)", doc: "the CLIP model that scores (required)" },
    OptDoc {
        opt: None,
        name: "pairs",
        takes: "\"all\" (default) | \"adjacent\"",
        doc: "frame pairs of frame consistency",
    },
    OptDoc {
        opt: None,
        name: "clamp",
        takes: "true | false (default)",
        doc: "clamp per-frame alignment at 0 (torchmetrics' CLIPScore)",
    },
];

/// `load_clip`'s options.
pub const LOAD_CLIP_OPTIONS: &[OptDoc] = &[
    OptDoc { opt: None, name: "device", takes: "\"auto\" (default) | \"cpu\" | \"cuda\" | \"cuda:N\"", doc: "" },
    OptDoc { opt: None, name: "dtype", takes: "\"fp32\" (default) | \"fp16\" | \"bf16\"", doc: "" },
];

fn score_options(opts: &Opts) -> RhaiResult<(ScriptClip, ScoreOptions)> {
    let clip = opts.custom::<ScriptClip>("clip", "a Clip (from load_clip)")?.ok_or_else(|| {
        script_error(format!("{}: needs #{{clip: load_clip(\"openai/clip-vit-large-patch14\")}}", opts.func()))
    })?;
    let pairs = match opts.string("pairs")? {
        Some(p) => rt(Pairs::parse(&p).map_err(Into::into))?,
        None => Pairs::All,
    };
    Ok((clip, ScoreOptions { pairs, clamp: opts.bool("clamp")?.unwrap_or(false), ..Default::default() }))
}

fn floats(v: &[f64]) -> Dynamic {
    v.iter().map(|&x| Dynamic::from(x)).collect::<Array>().into()
}

/// The script map of a score.
pub fn score_map(s: &Score) -> Map {
    let mut m = Map::new();
    m.insert("prompt".into(), s.prompt.clone().into());
    m.insert("frames".into(), (s.frames as i64).into());
    m.insert("text_alignment".into(), s.text_alignment.into());
    m.insert("frame_consistency".into(), s.frame_consistency.into());
    m.insert("temporal_flickering".into(), s.flicker.into());
    m.insert("pairs".into(), (if s.pairs == Pairs::All { "all" } else { "adjacent" }).into());
    m.insert("per_frame_alignment".into(), floats(&s.per_frame_alignment));
    m.insert("pair_similarity".into(), floats(&s.pair_similarity));
    m
}

fn do_score(video: &Video, prompt: &str, opts: Opts) -> RhaiResult<Map> {
    let (clip, o) = score_options(&opts)?;
    Ok(score_map(&rt(score(&clip.0, video, prompt, &o))?))
}

/// One value or an array of them, as a list (`what` names it in errors).
fn many<T: Clone + 'static>(row: &str, what: &str, label: &str, v: &Dynamic) -> RhaiResult<Vec<T>> {
    if let Some(x) = v.clone().try_cast::<T>() {
        return Ok(vec![x]);
    }
    let wrong = || script_error(format!("compare: row {row:?}: {what} must be {label} or an array of them"));
    v.clone().try_cast::<Array>().ok_or_else(wrong)?.into_iter().map(|x| x.try_cast::<T>().ok_or_else(wrong)).collect()
}

/// The keys of a `compare` row.
const ROW_KEYS: &[&str] = &["name", "video", "prompt", "source", "masks", "color"];

fn do_compare(rows: Array, opts: Opts) -> RhaiResult<Table> {
    let (clip, o) = score_options(&opts)?;
    if rows.is_empty() {
        return Err(script_error("compare: give at least one #{name, video, prompt}"));
    }
    let mut out = Comparison::default();
    for (i, row) in rows.into_iter().enumerate() {
        let map = row
            .try_cast::<Map>()
            .ok_or_else(|| script_error(format!("compare: row {i} must be #{{name, video, prompt}}")))?;
        let r = Opts::new("compare", map, ROW_KEYS)?;
        let name = r.string("name")?.unwrap_or_else(|| format!("#{i}"));
        let videos: Vec<Video> = match r.get("video") {
            Some(v) => many(&name, "video", "a Video", v)?,
            None => return Err(script_error(format!("compare: row {name:?} has no video"))),
        };
        let prompts: Vec<String> = match r.get("prompt") {
            Some(p) if p.is_string() => vec![p.to_string(); videos.len()],
            Some(p) => {
                many::<rhai::ImmutableString>(&name, "prompt", "a string", p)?.iter().map(|s| s.to_string()).collect()
            }
            None => return Err(script_error(format!("compare: row {name:?} has no prompt"))),
        };
        if prompts.len() != videos.len() {
            return Err(script_error(format!(
                "compare: row {name:?} has {} videos but {} prompts",
                videos.len(),
                prompts.len()
            )));
        }
        let scores = videos
            .iter()
            .zip(&prompts)
            .map(|(v, p)| rt(score(&clip.0, v, p, &o)))
            .collect::<RhaiResult<Vec<Score>>>()?;
        out.rows.push((name.clone(), Score::mean(&scores).expect("at least one video")));
        out.edits.push(edit_metrics(&name, &r, &videos)?);
    }
    Ok(Table::from(&out))
}

/// With `source`, `masks` and `color`, how each edit came out against its source (toy-world probes).
fn edit_metrics(name: &str, r: &Opts, edits: &[Video]) -> RhaiResult<Option<EditMetrics>> {
    let given = ["source", "masks", "color"].map(|k| r.get(k).is_some());
    if given == [false; 3] {
        return Ok(None);
    }
    if given != [true; 3] {
        return Err(script_error(format!(
            "compare: row {name:?}: the edit metrics need source, masks and color together (the source clip, its \
             subject's masks, and the colour the edit asked for)"
        )));
    }
    let sources: Vec<Video> = many(name, "source", "a Video", r.get("source").expect("given"))?;
    let masks: Vec<Masks> = many(name, "masks", "Masks", r.get("masks").expect("given"))?;
    let colors: Vec<String> = match r.get("color") {
        Some(c) if c.is_string() => vec![c.to_string(); edits.len()],
        Some(c) => many::<rhai::ImmutableString>(name, "color", "a string", c)?.iter().map(|s| s.to_string()).collect(),
        None => unreachable!(),
    };
    if sources.len() != edits.len() || masks.len() != edits.len() || colors.len() != edits.len() {
        return Err(script_error(format!(
            "compare: row {name:?}: {} videos, {} sources, {} masks and {} colours; give one of each per video",
            edits.len(),
            sources.len(),
            masks.len(),
            colors.len()
        )));
    }
    let mut all = vec![];
    for (((e, src), m), c) in edits.iter().zip(&sources).zip(&masks).zip(&colors) {
        let f = rt(check_frames_of(src, m, e, c, 3))
            .map_err(|err| script_error(format!("compare: row {name:?}: {err}")))?;
        all.push(EditMetrics { color_hit_rate: f.hit_rate, subject_iou: f.iou, background_psnr: f.background_psnr });
    }
    Ok(EditMetrics::mean(&all))
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    engine.register_type_with_name::<ScriptClip>("Clip");
    engine.register_type_with_name::<Table>("Table");
    let h = host.clone();
    let load = move |spec: &str, opts: Opts| -> RhaiResult<ScriptClip> {
        if Path::new(spec).exists() {
            h.record_read(Path::new(spec));
        }
        let device = opts.string("device")?.unwrap_or_else(|| "auto".into());
        let dtype = opts.string("dtype")?;
        Ok(ScriptClip(Rc::new(rt(ClipModel::load(spec, &device, dtype.as_deref()))?)))
    };
    let l = load.clone();
    engine.register_fn("load_clip", move |spec: &str| l(spec, Opts::empty("load_clip")));
    engine.register_fn("load_clip", move |spec: &str, opts: Map| {
        load(spec, Opts::declared("load_clip", opts, LOAD_CLIP_OPTIONS)?)
    });
    engine.register_fn("score", |v: Video, prompt: &str, opts: Map| {
        do_score(&v, prompt, Opts::declared("score", opts, SCORE_OPTIONS)?)
    });
    engine.register_fn("compare", |rows: Array, opts: Map| {
        do_compare(rows, Opts::declared("compare", opts, SCORE_OPTIONS)?)
    });
    engine.register_fn("to_string", |c: &mut ScriptClip| c.0.summary());
    engine.register_fn("to_debug", |c: &mut ScriptClip| c.0.summary());
    engine.register_fn("to_string", |t: &mut Table| t.table.to_pretty());
    engine.register_fn("to_debug", |t: &mut Table| t.table.to_pretty());
    engine.register_fn("markdown", |t: &mut Table| t.table.to_markdown());
    engine.register_fn("csv", |t: &mut Table| t.table.to_csv());
    let h = host.clone();
    let save = move |t: &Table, path: &str| {
        let path = h.output_path(path);
        rt(t.table.save(&path, Some(&t.json)))?;
        h.record_write(&path);
        Ok::<_, Box<rhai::EvalAltResult>>(path.display().to_string())
    };
    let s = save.clone();
    engine.register_fn("save", move |t: &mut Table, path: &str| s(t, path));
    engine.register_fn("save", move |t: &mut Table, path: &str, opts: Map| {
        crate::opts::Opts::saving("Table.save", opts, || save(t, path))
    });
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "load_clip",
        signatures: &[
            "load_clip(path_or_repo_id: string) -> Clip",
            "load_clip(path_or_repo_id: string, options: map) -> Clip",
        ],
        summary:
            "Loads a transformers CLIPModel (folder or Hugging Face cache id, safetensors only) with its tokenizer \
                  and image preprocessing, for scoring. \"toy\" is the built-in toy-world CLIP; \"random:tiny\" is a tiny CLIP with random weights, to \
                  try the workflow without weights (its scores mean nothing).",
        details: "",
        options: LOAD_CLIP_OPTIONS,
        example: r#"let clip = load_clip("openai/clip-vit-large-patch14");"#,
    },
    FnDoc {
        name: "score",
        signatures: &["score(video: Video, prompt: string, options: map) -> map"],
        summary: "CLIP scores of a clip, as the papers report them: text_alignment (mean over frames of 100 × cosine \
                  with the prompt), frame_consistency (100 × mean cosine over all pairs of frames), VBench's \
                  temporal_flickering, and the per-frame / per-pair values.",
        details: "",
        options: SCORE_OPTIONS,
        example: r#"let s = score(edit, "a jeep car is moving on the beach", #{clip: clip});
print(`${s.text_alignment} ${s.frame_consistency}`);"#,
    },
    FnDoc {
        name: "compare",
        signatures: &["compare(rows: array, options: map) -> Table"],
        summary: "Scores several results into one table, like the papers' ablations: a row is #{name, video, prompt}, \
                  or a setting tried on several clips (video and prompt arrays; the row shows the means). Prints as a \
                  table; table.save(\"x.md\" | \"x.csv\" | \"x.html\" | \"x.json\").",
        details: "Rows of edits whose subject is known add source (the clip edited), masks (its subject's) and color \
                  (the colour asked for), one per video: the table then shows the per-frame colour hit rate of the \
                  subject found in the edit, its IoU with the source masks, and the background PSNR.",
        options: SCORE_OPTIONS,
        example: r#"let t = compare([
    #{name: "sparse_causal", video: a, prompt: p},
    #{name: "ffam:2", video: b, prompt: p},
], #{clip: clip});
print(t);
t.save("out/ablation.md");"#,
    },
    FnDoc {
        name: "Table.save",
        signatures: &["table.save(path: string) -> string", "table.save(path: string, options: map) -> string"],
        summary: "Writes the table as Markdown (.md), CSV (.csv), HTML (.html) or JSON (.json), atomically.",
        details: "",
        options: crate::docs::SAVE_FILE_OPTIONS,
        example: r#"t.save("out/scores.csv");"#,
    },
    FnDoc {
        name: "Table.markdown",
        signatures: &["table.markdown() -> string"],
        summary: "The table as Markdown.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(t.markdown());"#,
    },
    FnDoc {
        name: "Table.csv",
        signatures: &["table.csv() -> string"],
        summary: "The table as CSV.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(t.csv());"#,
    },
];
