//! `suite_cases(suite)`: a suite's cases as maps, and `eval_suite(suite, recipe, options)`: `vidtune eval` from a script, a notebook or the REPL — recipes run over
//! an edit suite, written in the LOVEU-TGVE result layout, and the per-kind table returned. (Rhai keeps the name `eval` for its own eval of a string, whatever the
//! arguments.)

use super::Host;
use crate::docs::{FnDoc, OptDoc};
use crate::eval::{evaluate, load_suite, EvalOptions};
use crate::guard::Registrar;
use crate::opts::{script_error, Opts, RhaiResult};
use crate::values::Table;
use rhai::{Dynamic, Map};
use std::path::PathBuf;
use std::rc::Rc;
use vidtune_runtime::eval::run::table;
use vidtune_runtime::eval::{EditType, Selection};

const CASES: OptDoc = OptDoc {
    opt: None,
    name: "cases",
    takes: "string | array",
    doc: "only these cases: split/video/type names or parts of them",
};
const TYPES: OptDoc = OptDoc {
    opt: None,
    name: "types",
    takes: "string | array",
    doc: "only these kinds: colour, object, background, style, multiple",
};
const LIMIT: OptDoc = OptDoc { opt: None, name: "limit", takes: "integer", doc: "at most this many cases" };
const FRAMES: OptDoc =
    OptDoc { opt: None, name: "frames", takes: "integer", doc: "folders: at most this many frames per video" };
const EVERY: OptDoc = OptDoc { opt: None, name: "every", takes: "integer", doc: "folders: keep one frame in every N" };
const SIZE: OptDoc = OptDoc { opt: None, name: "size", takes: "integer", doc: "folders: resize videos to SIZE²" };

/// `eval_suite`'s options.
pub const EVAL_OPTIONS: &[OptDoc] = &[
    OptDoc { opt: None, name: "out", takes: "string (default out/eval/<suite>)", doc: "where results go" },
    OptDoc {
        opt: None,
        name: "model",
        takes: "string (default \"toy\")",
        doc: "the Stable Diffusion model recipes load",
    },
    OptDoc {
        opt: None,
        name: "clip",
        takes: "string",
        doc: "CLIP model for CLIP-T / CLIP-F (default: toy for toy suites); \"none\" skips them",
    },
    OptDoc { opt: None, name: "pickscore", takes: "string", doc: "PickScore model, for the PickScore column" },
    CASES,
    TYPES,
    LIMIT,
    FRAMES,
    EVERY,
    SIZE,
    OptDoc { opt: None, name: "jobs", takes: "integer (default 1)", doc: "worker processes" },
    OptDoc {
        opt: None,
        name: "params",
        takes: "map",
        doc: "recipe parameters (strings, numbers, booleans), as `vidtune eval --set`: #{steps: 300}",
    },
];

/// `suite_cases`' options: the selection and the reading of `eval_suite`.
pub const SUITE_CASES_OPTIONS: &[OptDoc] = &[CASES, TYPES, LIMIT, FRAMES, EVERY, SIZE];

/// A string or an array of strings, as the comma-separated list the command line takes.
fn list(opts: &Opts, key: &str) -> RhaiResult<Vec<String>> {
    let Some(v) = opts.get(key) else { return Ok(vec![]) };
    if let Some(s) = v.clone().try_cast::<String>() {
        return Ok(s.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    }
    let items = v.clone().try_cast::<rhai::Array>().ok_or_else(|| {
        script_error(format!("eval_suite: {key} is {}: expected a string or an array of strings", v.type_name()))
    })?;
    items
        .into_iter()
        .map(|i| {
            let t = i.type_name().to_string();
            i.try_cast::<String>()
                .ok_or_else(|| script_error(format!("eval_suite: {key} holds a {t}: expected strings")))
        })
        .collect()
}

fn do_eval(suite: &str, recipe: &str, opts: Opts) -> RhaiResult<Table> {
    let mut set = vec![];
    if let Some(p) = opts.get("params") {
        let map = p
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| script_error(format!("eval_suite: params is {}: expected a map", p.type_name())))?;
        for (k, v) in map {
            if !(v.is_string() || v.is_int() || v.is_float() || v.is_bool()) {
                return Err(script_error(format!(
                    "eval_suite: params.{k} is {}: expected a string, a number or a boolean",
                    v.type_name()
                )));
            }
            set.push(format!("{k}={v}"));
        }
    }
    let options = EvalOptions {
        suite: Some(suite.to_string()),
        recipe: recipe.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        out: opts.string("out")?.map(PathBuf::from),
        model: opts.string("model")?.unwrap_or_else(|| "toy".into()),
        clip: opts.string("clip")?,
        pickscore: opts.string("pickscore")?,
        cases: list(&opts, "cases")?,
        types: list(&opts, "types")?,
        limit: opts.count("limit")?,
        frames: opts.count("frames")?,
        every: opts.count("every")?,
        size: opts.int("size")?,
        set,
        jobs: opts.count("jobs")?,
        write_suite: None,
        backend: "local".into(),
        devices: vec![],
        slurm_args: None,
        report: None,
    };
    if options.recipe.is_empty() {
        return Err(script_error(
            "eval_suite: give a recipe (auto, mask-guided, tune-a-video, ei2, dynamic-mask or a .rhai)",
        ));
    }
    match evaluate(&options) {
        Ok(Some((reports, out))) => {
            println!("results: {}", out.join("results.md").display());
            let json = serde_json::json!({ "recipes": reports.iter().map(|r| r.to_json()).collect::<Vec<_>>() });
            Ok(Table { table: Rc::new(table(&reports)), json: Rc::new(json) })
        }
        Ok(None) => Err(script_error("eval_suite: a point's run has no table")),
        Err(e) => Err(script_error(format!("eval_suite {suite:?}: {e:#}"))),
    }
}

/// The cases of a suite as maps: what a recipe gets as parameters (`vidtune eval`'s), plus the case's
/// `id`, `split` and `name`.
fn do_suite_cases(suite: &str, opts: Opts) -> RhaiResult<rhai::Array> {
    let read = EvalOptions {
        suite: Some(suite.to_string()),
        recipe: vec![],
        out: None,
        model: "toy".into(),
        clip: None,
        pickscore: None,
        cases: vec![],
        types: vec![],
        limit: None,
        frames: opts.count("frames")?,
        every: opts.count("every")?,
        size: opts.int("size")?,
        set: vec![],
        jobs: None,
        write_suite: None,
        backend: "local".into(),
        devices: vec![],
        slurm_args: None,
        report: None,
    };
    let loaded = load_suite(suite, &read).map_err(|e| script_error(format!("suite_cases {suite:?}: {e:#}")))?;
    let types = list(&opts, "types")?
        .iter()
        .map(|t| EditType::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| script_error(format!("suite_cases: {e}")))?;
    let sel = Selection { cases: list(&opts, "cases")?, types, limit: opts.count("limit")? };
    let cases = loaded.cases(&sel).map_err(|e| script_error(format!("suite_cases: {e}")))?;
    Ok(cases
        .into_iter()
        .map(|c| {
            let (v, e) = (&loaded.videos[c.video], &loaded.videos[c.video].edits[c.edit]);
            let mut m = Map::new();
            m.insert("id".into(), Dynamic::from(loaded.case_id(c)));
            m.insert("split".into(), Dynamic::from(v.split.clone()));
            m.insert("name".into(), Dynamic::from(v.name.clone()));
            m.insert("video".into(), Dynamic::from(v.video.clone()));
            if let Some(masks) = &v.masks {
                m.insert("masks".into(), Dynamic::from(masks.clone()));
            }
            m.insert("prompt".into(), Dynamic::from(v.caption.clone()));
            m.insert("edit".into(), Dynamic::from(e.prompt.clone()));
            m.insert("edit_type".into(), Dynamic::from(e.kind.name().to_string()));
            if let Some(subject) = &e.subject {
                m.insert("subject".into(), Dynamic::from(subject.clone()));
            }
            if let Some((x, y)) = v.click {
                m.insert("click_x".into(), Dynamic::from(x.round() as i64));
                m.insert("click_y".into(), Dynamic::from(y.round() as i64));
            }
            Dynamic::from(m)
        })
        .collect())
}

pub fn register(engine: &mut Registrar, _host: &Rc<Host>) {
    engine.register_fn("suite_cases", |suite: &str| do_suite_cases(suite, Opts::empty("suite_cases")));
    engine.register_fn("suite_cases", |suite: &str, opts: Map| {
        do_suite_cases(suite, Opts::declared("suite_cases", opts, SUITE_CASES_OPTIONS)?)
    });
    engine.register_fn("eval_suite", |suite: &str, recipe: &str, opts: Map| {
        do_eval(suite, recipe, Opts::declared("eval_suite", opts, EVAL_OPTIONS)?)
    });
    engine.register_fn("eval_suite", |suite: &str, recipe: &str| do_eval(suite, recipe, Opts::empty("eval_suite")));
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "suite_cases",
        signatures: &["suite_cases(suite: string) -> array", "suite_cases(suite, options: map) -> array"],
        summary: "The cases of an edit suite (toy:dev, toy:test or a folder in the LOVEU-TGVE-2023 layout) as maps: \
                  id, split, name, video, masks (when the suite has them), prompt (the source caption), edit, \
                  edit_type, subject, click_x / click_y — what `vidtune eval` gives a recipe.",
        details:
            "With `sweep`, a grid over cases and settings in one script: `sweep(#{item: suite_cases(\"toy:dev\"), \
                  guidance: [7.5, 10]}, |p| …)` (a case's point is named by its id). The selection options are `eval_suite`'s.",
        options: SUITE_CASES_OPTIONS,
        example: r#"for c in suite_cases("toy:dev", #{types: "colour", limit: 2}) { print(`${c.id}: ${c.edit}`); }"#,
    },
    FnDoc {
        name: "eval_suite",
        signatures: &[
            "eval_suite(suite: string, recipe: string) -> Table",
            "eval_suite(suite, recipe, options: map) -> Table",
        ],
        summary:
            "Runs edit recipes over a suite and tables how each does per kind of edit, as `vidtune eval`: the suite \
              is toy:dev, toy:test (toy:dev:all for every video of the split) or a folder in the LOVEU-TGVE-2023 \
              layout; the recipe auto, mask-guided, tune-a-video, ei2, dynamic-mask or a .rhai script \
              (comma-separated for several rows).",
        details: "Writes the edited frames in the LOVEU-TGVE result layout, a sheet per case and results.md / .csv / \
              .html / .json under `out`, and returns the table (a row per recipe). Reruns take tuning, inversion \
              and sampling from the memo. A script recipe gets video, masks, prompt, edit, edit_type, subject, \
              click_x / click_y, frames, size, model and out as parameters and returns the edited Video. (Not `eval`: \
              Rhai keeps that name for its own eval of a string.)",
        options: EVAL_OPTIONS,
        example: r#"let t = eval_suite("toy:dev", "auto,mask-guided", #{types: "colour", params: #{guidance: 12.5}});
print(t);
t.save("out/dev-colour.md");"#,
    },
];
