//! What `vidtune sweep status` and `collect` show: the points counted by status, the table of every
//! point (with the scores each run returned) and the sheet of their clips.

use super::{describe, read_state, read_sweep, Point, Sweep};
use std::collections::BTreeMap;
use std::path::Path;
use vidtune_runtime::table::Table;

/// The points (and stage runs) counted by status: "3 done, 1 missing; stages: 1 done".
pub(super) fn counts(dir: &Path, sweep: &Sweep) -> String {
    let count = |list: &[Point]| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for p in list {
            *counts.entry(read_state(dir, p).status).or_default() += 1;
        }
        counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")
    };
    if sweep.stages.is_empty() {
        count(&sweep.points)
    } else {
        format!("{}; stages: {}", count(&sweep.points), count(&sweep.stages))
    }
}

/// A point's value (`value.json`, the script's value): its scalar entries as `(column, text, numeric)`;
/// one level of nested maps is flattened (`clip.t`), and a value that is not a map is the column `value`.
fn point_values(folder: &Path) -> Vec<(String, String, bool)> {
    let Ok(text) = std::fs::read_to_string(folder.join("value.json")) else { return vec![] };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return vec![] };
    fn cell(v: &serde_json::Value) -> Option<(String, bool)> {
        match v {
            serde_json::Value::Number(n) => Some((
                match n.as_f64() {
                    Some(f) if !n.is_i64() && !n.is_u64() => format!("{f:.4}"),
                    _ => n.to_string(),
                },
                true,
            )),
            serde_json::Value::String(s) => Some((s.clone(), false)),
            serde_json::Value::Bool(b) => Some((b.to_string(), false)),
            _ => None,
        }
    }
    let mut out = vec![];
    match &json {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::Object(inner) => out
                        .extend(inner.iter().filter_map(|(k2, v2)| cell(v2).map(|(t, n)| (format!("{k}.{k2}"), t, n)))),
                    _ => out.extend(cell(v).map(|(t, n)| (k.clone(), t, n))),
                }
            }
        }
        other => out.extend(cell(other).map(|(t, n)| ("value".to_string(), t, n))),
    }
    out
}

/// A point's output files (what the script wrote), sorted.
fn outputs(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && !["point.json", "log.txt", "value.json"].contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// The table of a sweep's points: parameters, status, seconds, the scores each run returned (its
/// `value.json`: one column per entry, in the order first seen), outputs and error.
pub fn table(dir: &Path) -> anyhow::Result<Table> {
    let points = read_sweep(dir)?.points;
    let names: Vec<String> =
        points.first().map(|p| p.params.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
    let values: Vec<Vec<(String, String, bool)>> = points.iter().map(|p| point_values(&p.folder(dir))).collect();
    let mut value_columns: Vec<(String, bool)> = vec![];
    for (name, _, numeric) in values.iter().flatten() {
        match value_columns.iter_mut().find(|(n, _)| n == name) {
            Some(c) => c.1 &= *numeric,
            None => value_columns.push((name.clone(), *numeric)),
        }
    }
    let mut headers = names.clone();
    headers.extend(["status", "seconds"].map(String::from));
    headers.extend(value_columns.iter().map(|(n, _)| n.clone()));
    headers.extend(["outputs", "error"].map(String::from));
    let mut numeric = vec![false; names.len()];
    numeric.extend([false, true]);
    numeric.extend(value_columns.iter().map(|(_, n)| *n));
    numeric.extend([false, false]);
    let rows = points
        .iter()
        .zip(&values)
        .map(|(p, vals)| {
            let s = read_state(dir, p);
            let mut row: Vec<String> = p.params.iter().map(|(_, v)| v.clone()).collect();
            row.push(s.status);
            row.push(s.seconds.map(|t| format!("{t:.1}")).unwrap_or_default());
            for (name, _) in &value_columns {
                row.push(vals.iter().find(|(n, _, _)| n == name).map(|(_, t, _)| t.clone()).unwrap_or_default());
            }
            row.push(outputs(&p.folder(dir)).join(" "));
            // The error's first line: its message (the lines after it show the script's code).
            row.push(s.error.map(|e| e.lines().next().unwrap_or_default().to_string()).unwrap_or_default());
            row
        })
        .collect();
    Ok(Table { headers, rows, numeric })
}

/// The first clip among a point's outputs (a GIF, a video file or a folder of frames) that loads.
fn first_clip(folder: &Path) -> Option<vidtune_runtime::media::Video> {
    const CLIPS: [&str; 6] = ["gif", "mp4", "mov", "mkv", "webm", ""];
    outputs(folder).into_iter().map(|n| folder.join(n)).find_map(|path| {
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        let frames = path.is_dir() || CLIPS.contains(&ext.as_str()) && !ext.is_empty();
        if !frames {
            return None;
        }
        vidtune_runtime::media::load_video(&path, &Default::default()).ok()
    })
}

/// `DIR/sheet.png`: a row per done point (labelled with its parameters) showing frames of the first clip
/// it wrote, the same frames in every column. The sheet's path, or `None` when no point wrote a clip.
fn sheet(dir: &Path, sweep: &Sweep) -> anyhow::Result<Option<std::path::PathBuf>> {
    let mut clips = vec![];
    let mut labels = vec![];
    for p in &sweep.points {
        if read_state(dir, p).status != "done" {
            continue;
        }
        if let Some(v) = first_clip(&p.folder(dir)) {
            clips.push(v);
            labels.push(describe(p));
        }
    }
    if clips.is_empty() {
        return Ok(None);
    }
    let refs: Vec<&vidtune_runtime::media::Video> = clips.iter().collect();
    let image = vidtune_runtime::media::compose::comparison_sheet(&refs, &labels, 8)?;
    let path = dir.join("sheet.png");
    image.save(&path)?;
    Ok(Some(path))
}

pub(super) fn status(dir: &Path) -> anyhow::Result<()> {
    let sweep = read_sweep(dir)?;
    print!("{}", table(dir)?.to_pretty());
    println!(
        "{} points of {}: {}",
        sweep.points.len(),
        sweep.record["script"].as_str().map(String::from).unwrap_or_else(|| format!(
            "vidtune {}",
            sweep.record["command"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        )),
        counts(dir, &sweep)
    );
    Ok(())
}

pub(super) fn collect(dir: &Path) -> anyhow::Result<()> {
    let sweep = read_sweep(dir)?;
    let t = table(dir)?;
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        vidtune_runtime::fsutil::write_bytes_atomic(&dir.join(name), text.as_bytes())?;
        Ok(())
    };
    let sheet = sheet(dir, &sweep)?;
    write("results.md", t.to_markdown())?;
    write("results.csv", t.to_csv())?;
    let img = if sheet.is_some() { "<p><img src=\"sheet.png\" alt=\"the points' clips\"></p>\n" } else { "" };
    write(
        "results.html",
        format!("<!doctype html>\n<meta charset=\"utf-8\">\n<title>vidtune sweep</title>\n{}\n{img}", t.to_html()),
    )?;
    let rows: Vec<serde_json::Value> = t
        .rows
        .iter()
        .map(|r| {
            serde_json::Value::Object(
                t.headers.iter().cloned().zip(r.iter().cloned().map(serde_json::Value::from)).collect(),
            )
        })
        .collect();
    write("results.json", serde_json::to_string_pretty(&rows)?)?;
    print!("{}", t.to_pretty());
    if let Some(path) = sheet {
        println!("sheet: {}", path.display());
    }
    for p in sweep.stages.iter().chain(&sweep.points) {
        let s = read_state(dir, p);
        if s.status == "failed" {
            println!("failed: {}: {}", describe(p), s.error.unwrap_or_default());
        }
    }
    println!("results: {}", dir.join("results.md").display());
    Ok(())
}
