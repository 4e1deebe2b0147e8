//! `sweep(axes, |p| …)`: a closure run over the grid of parameters, in the script's own session (its
//! models and memo shared by every point). An error in a point — a thrown one, or a panic below a
//! script function — is that point's record, and the grid goes on. With `#{dir}` the points are recorded
//! as `vidtune sweep` records them, so `vidtune sweep status` / `collect` table them (scores and sheet).

use super::Host;
use crate::docs::{FnDoc, OptDoc};
use crate::guard::Registrar;
use crate::opts::{script_error, to_json, Opts, RhaiResult};
use crate::sweep::{point_key, write_point, write_script_record, Point};
use crate::values::describe;
use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext};
use std::path::PathBuf;
use std::rc::Rc;
use vidtune_runtime::media::Video;

pub const SWEEP_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "filter",
        takes: "|p| … (a closure returning true / false)",
        doc: "runs only the points for which it returns true",
    },
    OptDoc {
        opt: None,
        name: "dir",
        takes: "string",
        doc: "records each point in DIR/points/<key>/ (point.json; value.json for data, video.gif for a Video) \
              and DIR/sweep.json, for `vidtune sweep status DIR` and `vidtune sweep collect DIR`",
    },
];

/// The grid of `axes` (each entry one value or an array of them), axes in name order, the last varying
/// fastest; each point a map from axis name to value.
fn grid(axes: &Map) -> RhaiResult<Vec<Map>> {
    let mut points = vec![Map::new()];
    for (name, values) in axes {
        let values = match values.clone().try_cast::<Array>() {
            Some(a) if a.is_empty() => {
                return Err(script_error(format!("sweep: axis {name} has no values; give at least one")))
            }
            Some(a) => a,
            None => vec![values.clone()],
        };
        points = points
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.insert(name.clone(), v.clone());
                    q
                })
            })
            .collect();
    }
    Ok(points)
}

/// A point's parameters as text, for its key and records: a string as it is, a map with an `id` (a suite
/// case) by its id, anything else as it prints.
fn params_text(p: &Map) -> Vec<(String, String)> {
    let text = |v: &Dynamic| {
        if v.is_string() {
            return v.to_string();
        }
        let id = v.read_lock::<Map>().and_then(|m| m.get("id").filter(|i| i.is_string()).map(|i| i.to_string()));
        id.unwrap_or_else(|| describe(v))
    };
    p.iter().map(|(k, v)| (k.to_string(), text(v))).collect()
}

fn do_sweep(ctx: &NativeCallContext, host: &Host, axes: Map, f: FnPtr, opts: Opts) -> RhaiResult<Array> {
    let filter = match opts.get("filter") {
        None => None,
        Some(v) => Some(v.clone().try_cast::<FnPtr>().ok_or_else(|| {
            script_error(format!("sweep: option \"filter\" must be a closure |p| …, got {}", describe(v)))
        })?),
    };
    let dir = opts.string("dir")?.map(|d| host.output_path(&d));
    let mut points = vec![];
    for p in grid(&axes)? {
        let keep = match &filter {
            None => true,
            Some(fp) => {
                let out: Dynamic = fp.call_within_context(ctx, (Dynamic::from(p.clone()),))?;
                out.as_bool().map_err(|_| {
                    script_error(format!("sweep: the filter must return true or false, got {}", describe(&out)))
                })?
            }
        };
        if keep {
            points.push(p);
        }
    }
    let records: Vec<Point> = points
        .iter()
        .map(|p| {
            let params = params_text(p);
            Point { key: point_key(&params), params, stage: false }
        })
        .collect();
    if let Some(d) = &dir {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(r) = records.iter().find(|r| !seen.insert(r.key.clone())) {
            return Err(script_error(format!("sweep: two points share the folder {:?}: give distinct values", r.key)));
        }
        let script = host.script.borrow().as_ref().map(|(name, _)| name.clone()).unwrap_or_else(|| "(session)".into());
        write_script_record(d, &script, &records).map_err(|e| script_error(format!("sweep: {e:#}")))?;
    }
    let mut results = Array::new();
    for (p, record) in points.into_iter().zip(&records) {
        let started = std::time::Instant::now();
        if let Some(d) = &dir {
            write_point(d, record, serde_json::json!({"status": "running"}))
                .map_err(|e| script_error(format!("{e:#}")))?;
        }
        let outcome: Result<Dynamic, _> = f.call_within_context(ctx, (Dynamic::from(p.clone()),));
        let seconds = started.elapsed().as_secs_f64();
        if vidtune_runtime::progress::cancel_requested() {
            if let Some(d) = &dir {
                let _ = write_point(d, record, serde_json::json!({"status": "cancelled", "error": "interrupted"}));
            }
            return Err(outcome.err().unwrap_or_else(|| script_error("sweep: interrupted")));
        }
        let mut row = Map::new();
        row.insert("params".into(), Dynamic::from(p));
        row.insert("seconds".into(), Dynamic::from(seconds));
        let (status, error) = match &outcome {
            Ok(_) => ("done", None),
            Err(e) => ("failed", Some(point_error(host, e))),
        };
        println!(
            "{status:<9} {} ({seconds:.1} s){}",
            record.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        );
        if let Some(d) = &dir {
            record_point(d, record, outcome.as_ref().map_err(|_| error.clone().unwrap_or_default()), seconds)
                .map_err(|e| script_error(format!("sweep: {e:#}")))?;
        }
        row.insert("status".into(), Dynamic::from(status.to_string()));
        row.insert("value".into(), outcome.unwrap_or(Dynamic::UNIT));
        row.insert("error".into(), error.map(Dynamic::from).unwrap_or(Dynamic::UNIT));
        results.push(Dynamic::from(row));
    }
    Ok(results)
}

/// A point's error as script errors read (`edit.rhai:4:9: message`, the line, the calls it came through).
fn point_error(host: &Host, e: &rhai::EvalAltResult) -> String {
    let script = host.script.borrow().clone();
    let name = script.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
    let sources: std::collections::HashMap<String, String> = script.into_iter().collect();
    crate::diagnostics::ScriptError::from_eval(e, &name, &sources).to_string()
}

/// A point's record under `dir`: its value (data as value.json, a Video as video.gif), then point.json.
fn record_point(
    dir: &std::path::Path,
    record: &Point,
    outcome: Result<&Dynamic, String>,
    seconds: f64,
) -> anyhow::Result<()> {
    let folder: PathBuf = record.folder(dir);
    std::fs::create_dir_all(&folder)?;
    let fields = match outcome {
        Ok(value) => {
            if let Some(v) = value.clone().try_cast::<Video>() {
                vidtune_runtime::media::save_video(&v, folder.join("video.gif"))?;
            } else if !value.is_unit() {
                let text = serde_json::to_string_pretty(&to_json(value))?;
                vidtune_runtime::fsutil::write_output_bytes(&folder.join("value.json"), text.as_bytes())?;
            }
            serde_json::json!({"status": "done", "seconds": seconds})
        }
        Err(e) => serde_json::json!({"status": "failed", "seconds": seconds, "error": e}),
    };
    write_point(dir, record, fields)
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    let h = host.clone();
    engine.register_fn("sweep", move |ctx: NativeCallContext, axes: Map, f: FnPtr| {
        do_sweep(&ctx, &h, axes, f, Opts::empty("sweep"))
    });
    let h = host.clone();
    engine.register_fn("sweep", move |ctx: NativeCallContext, axes: Map, f: FnPtr, opts: Map| {
        do_sweep(&ctx, &h, axes, f, Opts::declared("sweep", opts, SWEEP_OPTIONS)?)
    });
}

pub const DOCS: &[FnDoc] = &[FnDoc {
    name: "sweep",
    signatures: &["sweep(axes: map, f: |p| …) -> array", "sweep(axes, f, options: map) -> array"],
    summary: "Runs the closure once per point of the grid of `axes` (each entry a value or an array of values; the \
              grid is their product, axes in name order, the last varying fastest) and returns a row per point: \
              #{params, status, value, error, seconds}.",
    details: "Points run one after another in this session: they share its models, and tuning, inversion and \
              sampling come from the memo when an earlier point (or run) computed them. An error in a point — \
              thrown, or a failure inside a function — is that point's status \"failed\" and its error; the \
              other points run. With #{dir} the points are recorded as `vidtune sweep` records them: `vidtune \
              sweep collect DIR` tables the values (a map of scores gives a column each) and sheets the Videos. \
              To spread points over processes or a Slurm cluster, run a script with `vidtune sweep SCRIPT --axis …`.",
    options: SWEEP_OPTIONS,
    example: r#"let rows = sweep(#{seed: [1, 2], colour: ["red", "blue"]}, |p| {
    synthetic_clip(#{frames: 4, size: 32, seed: p.seed, color: p.colour}).video
}, #{filter: |p| p.seed == 1 || p.colour == "red", dir: "out/colours"});
for r in rows { print(`${r.params}: ${r.status}`); }"#,
}];
