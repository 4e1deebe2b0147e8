//! What `vidtune sweep status` and `collect` show: the points counted by status, and the table of every
//! point.

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

/// The table of a sweep's points: parameters, status, seconds, outputs and error.
pub fn table(dir: &Path) -> anyhow::Result<Table> {
    let points = read_sweep(dir)?.points;
    let names: Vec<String> =
        points.first().map(|p| p.params.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
    let mut headers = names.clone();
    headers.extend(["status", "seconds", "outputs", "error"].map(String::from));
    let mut numeric = vec![false; names.len()];
    numeric.extend([false, true, false, false]);
    let rows = points
        .iter()
        .map(|p| {
            let s = read_state(dir, p);
            let mut row: Vec<String> = p.params.iter().map(|(_, v)| v.clone()).collect();
            let folder = p.folder(dir);
            let mut outputs: Vec<String> = std::fs::read_dir(&folder)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && n != "point.json" && n != "log.txt")
                .collect();
            outputs.sort();
            row.push(s.status);
            row.push(s.seconds.map(|t| format!("{t:.1}")).unwrap_or_default());
            row.push(outputs.join(" "));
            // The error's first line: its message (the lines after it show the script's code).
            row.push(s.error.map(|e| e.lines().next().unwrap_or_default().to_string()).unwrap_or_default());
            row
        })
        .collect();
    Ok(Table { headers, rows, numeric })
}

pub(super) fn status(dir: &Path) -> anyhow::Result<()> {
    let sweep = read_sweep(dir)?;
    print!("{}", table(dir)?.to_pretty());
    println!(
        "{} points of {}: {}",
        sweep.points.len(),
        sweep.record["script"].as_str().unwrap_or("?"),
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
    write("results.md", t.to_markdown())?;
    write("results.csv", t.to_csv())?;
    write(
        "results.html",
        format!("<!doctype html>\n<meta charset=\"utf-8\">\n<title>vidtune sweep</title>\n{}\n", t.to_html()),
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
    for p in sweep.stages.iter().chain(&sweep.points) {
        let s = read_state(dir, p);
        if s.status == "failed" {
            println!("failed: {}: {}", describe(p), s.error.unwrap_or_default());
        }
    }
    println!("results: {}", dir.join("results.md").display());
    Ok(())
}
