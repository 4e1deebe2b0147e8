//! Running recipes over a suite: every selected case through the recipe, its frames written in the
//! result layout, judged, and summed up per kind of edit.
//!
//! A case that fails is recorded with its error and the others go on; an interruption (Ctrl-C) stops the
//! run after writing what is done. `results.json` is rewritten after every case, atomically.

use super::loveu;
use super::metrics::{clip_metrics, judge, loveu_frames, pick_score, ClipMetrics, Judgement};
use super::{CaseInput, EditType, Selection, Suite};
use crate::error::{Error, Result};
use crate::media::Video;
use crate::models::clip::ClipModel;
use crate::score::Table;
use crate::synthetic::synthetic_clip;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a run needs besides the suite and the recipe.
pub struct RunOptions<'a> {
    /// The folder results go under (`<split>/<video>/<type>/…`, sheets, `results.json`).
    pub out: PathBuf,
    pub selection: Selection,
    /// CLIP model for CLIP-T / CLIP-F, and a PickScore model, where given.
    pub clip: Option<&'a ClipModel>,
    pub pick: Option<&'a ClipModel>,
    /// Save the table after every case (worker processes leave that to the process that merges).
    pub save: bool,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub kind: EditType,
    pub prompt: String,
    pub judgement: Option<Judgement>,
    pub clip: Option<ClipMetrics>,
    pub pick: Option<f64>,
    pub seconds: f64,
    pub error: Option<String>,
}

impl CaseResult {
    /// A case not judged (yet): its id and edit, and the error if it failed.
    pub fn new(id: String, edit: &super::Edit, error: Option<String>) -> CaseResult {
        CaseResult {
            id,
            kind: edit.kind,
            prompt: edit.prompt.clone(),
            judgement: None,
            clip: None,
            pick: None,
            seconds: 0.0,
            error,
        }
    }

    pub fn to_json(&self) -> Value {
        let j = self.judgement.as_ref();
        json!({
            "case": self.id,
            "type": self.kind.name(),
            "prompt": self.prompt,
            "hit_rate": j.map(|j| j.hit_rate),
            "frames_right": j.map(|j| j.frames.clone()),
            "kept": j.and_then(|j| j.kept).map(|(what, psnr)| json!({"part": what, "psnr": finite(psnr)})),
            "flicker": j.map(|j| j.flicker),
            "clip_t": self.clip.map(|c| c.clip_t),
            "clip_f": self.clip.map(|c| c.clip_f),
            "pick_score": self.pick,
            "seconds": self.seconds,
            "error": self.error,
        })
    }
}

/// JSON has no infinity: a perfect PSNR is written as 99 dB (above anything an edit reaches).
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        99.0
    }
}

/// One recipe's results on a suite.
#[derive(Debug, Clone)]
pub struct Report {
    pub suite: String,
    pub recipe: String,
    pub cases: Vec<CaseResult>,
}

/// The mean of some values, `None` when there are none.
fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl Report {
    fn judged(&self) -> impl Iterator<Item = (&CaseResult, &Judgement)> {
        self.cases.iter().filter_map(|c| c.judgement.as_ref().map(|j| (c, j)))
    }

    /// Reads [`Report::to_json`]'s output back (worker processes hand their reports over this way).
    pub fn from_json(v: &Value) -> Result<Report> {
        let bad = |what: &str| Error::Invalid(format!("an evaluation report: {what} is missing or malformed"));
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| bad(k));
        let cases = v
            .get("cases")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("cases"))?
            .iter()
            .map(|c| {
                let judgement = match (c["hit_rate"].as_f64(), c["frames_right"].as_array()) {
                    (Some(hit_rate), Some(frames)) => Some(Judgement {
                        frames: frames.iter().map(|f| f.as_bool().unwrap_or(false)).collect(),
                        hit_rate,
                        kept: c["kept"]
                            .get("psnr")
                            .and_then(Value::as_f64)
                            .map(|p| (if c["kept"]["part"] == "subject" { "subject" } else { "background" }, p)),
                        flicker: c["flicker"].as_f64().unwrap_or(f64::NAN),
                    }),
                    _ => None,
                };
                let clip = match (c["clip_t"].as_f64(), c["clip_f"].as_f64()) {
                    (Some(clip_t), Some(clip_f)) => Some(ClipMetrics { clip_t, clip_f }),
                    _ => None,
                };
                Ok(CaseResult {
                    id: text(c, "case")?,
                    kind: EditType::parse(&text(c, "type")?)?,
                    prompt: text(c, "prompt")?,
                    judgement,
                    clip,
                    pick: c["pick_score"].as_f64(),
                    seconds: c["seconds"].as_f64().unwrap_or(0.0),
                    error: c["error"].as_str().map(str::to_string),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Report { suite: text(v, "suite")?, recipe: text(v, "recipe")?, cases })
    }

    /// The mean share of right frames over the cases of `kind` (all kinds: `None`).
    pub fn hit_rate(&self, kind: Option<EditType>) -> Option<f64> {
        mean(self.judged().filter(|(c, _)| kind.is_none_or(|k| c.kind == k)).map(|(_, j)| j.hit_rate))
    }

    /// The mean PSNR of the part left untouched (`"background"` or `"subject"`).
    pub fn kept(&self, part: &str) -> Option<f64> {
        mean(self.judged().filter_map(|(_, j)| j.kept.filter(|k| k.0 == part).map(|k| finite(k.1))))
    }

    pub fn summary(&self) -> Value {
        let per_type: serde_json::Map<String, Value> = EditType::ALL
            .iter()
            .filter(|k| self.cases.iter().any(|c| c.kind == **k))
            .map(|k| {
                let cases: Vec<&CaseResult> = self.cases.iter().filter(|c| c.kind == *k).collect();
                let kept = mean(cases.iter().filter_map(|c| c.judgement.as_ref()?.kept.map(|k| finite(k.1))));
                (
                    k.name().to_string(),
                    json!({"cases": cases.len(), "hit_rate": self.hit_rate(Some(*k)), "kept_psnr": kept,
                           "clip_t": mean(cases.iter().filter_map(|c| c.clip.map(|m| m.clip_t))),
                           "clip_f": mean(cases.iter().filter_map(|c| c.clip.map(|m| m.clip_f)))}),
                )
            })
            .collect();
        json!({
            "cases": self.cases.len(),
            "failed": self.cases.iter().filter(|c| c.error.is_some()).count(),
            "hit_rate": self.hit_rate(None),
            "background_psnr": self.kept("background"),
            "subject_psnr": self.kept("subject"),
            "flicker": mean(self.judged().map(|(_, j)| j.flicker)),
            "clip_t": mean(self.cases.iter().filter_map(|c| c.clip.map(|m| m.clip_t))),
            "clip_f": mean(self.cases.iter().filter_map(|c| c.clip.map(|m| m.clip_f))),
            "pick_score": mean(self.cases.iter().filter_map(|c| c.pick)),
            "per_type": per_type,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "suite": self.suite,
            "recipe": self.recipe,
            "summary": self.summary(),
            "cases": self.cases.iter().map(CaseResult::to_json).collect::<Vec<_>>(),
        })
    }
}

/// The table of several recipes' reports: a row each, with the share of right frames per kind of edit
/// and overall, what was kept, and the field's metrics where a CLIP model was given.
pub fn table(reports: &[Report]) -> Table {
    let kinds: Vec<EditType> = EditType::ALL
        .iter()
        .copied()
        .filter(|k| reports.iter().any(|r| r.cases.iter().any(|c| c.kind == *k)))
        .collect();
    let judged = reports.iter().any(|r| r.judged().next().is_some());
    let clip = reports.iter().any(|r| r.cases.iter().any(|c| c.clip.is_some()));
    let pick = reports.iter().any(|r| r.cases.iter().any(|c| c.pick.is_some()));
    let mut headers = vec!["recipe".to_string()];
    if judged {
        headers.extend(kinds.iter().map(|k| k.name().to_string()));
        headers.extend(["overall".into(), "background PSNR".into(), "subject PSNR".into(), "flicker".into()]);
    }
    if clip {
        headers.extend(["CLIP-T".into(), "CLIP-F".into()]);
    }
    if pick {
        headers.push("PickScore".into());
    }
    headers.extend(["cases".into(), "failed".into()]);
    let pct = |x: Option<f64>| x.map(|x| format!("{:.0} %", 100.0 * x)).unwrap_or_else(|| "–".into());
    let num = |x: Option<f64>, d: usize, unit: &str| x.map(|x| format!("{x:.d$}{unit}")).unwrap_or_else(|| "–".into());
    let rows = reports
        .iter()
        .map(|r| {
            let s = r.summary();
            let f = |k: &str| s[k].as_f64();
            let mut row = vec![r.recipe.clone()];
            if judged {
                row.extend(kinds.iter().map(|k| pct(r.hit_rate(Some(*k)))));
                row.extend([
                    pct(r.hit_rate(None)),
                    num(f("background_psnr"), 1, " dB"),
                    num(f("subject_psnr"), 1, " dB"),
                    num(f("flicker"), 4, ""),
                ]);
            }
            if clip {
                row.extend([num(f("clip_t"), 2, ""), num(f("clip_f"), 4, "")]);
            }
            if pick {
                row.push(num(f("pick_score"), 2, ""));
            }
            row.extend([r.cases.len().to_string(), s["failed"].to_string()]);
            row
        })
        .collect();
    let numeric = (0..headers.len()).map(|i| i > 0).collect();
    Table { headers, rows, numeric }
}

/// Saves the reports' table as `results.{md,csv,html}` and `results.json` (every case) under `out`.
pub fn save_reports(reports: &[Report], out: &Path) -> Result<()> {
    let t = table(reports);
    let json = json!({"recipes": reports.iter().map(Report::to_json).collect::<Vec<_>>()});
    for ext in ["md", "csv", "html", "json"] {
        t.save(&out.join(format!("results.{ext}")), Some(&json))?;
    }
    Ok(())
}

/// Runs `recipe` over the selected cases of `suite`. `previous` are the other recipes' reports of this
/// run, saved with this one after every case.
pub fn run_suite(
    suite: &Suite,
    name: &str,
    opts: &RunOptions,
    previous: &[Report],
    recipe: &mut dyn FnMut(&CaseInput) -> Result<Video>,
) -> Result<Report> {
    let cases = suite.cases(&opts.selection)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut report = Report { suite: suite.name.clone(), recipe: name.to_string(), cases: vec![] };
    let mut progress = crate::progress::Progress::new(format!("eval {name}"), cases.len() as u64).unit("cases");
    for c in cases {
        let (v, e) = (&suite.videos[c.video], &suite.videos[c.video].edits[c.edit]);
        let id = suite.case_id(c);
        progress.set_message(id.clone());
        let input =
            CaseInput { id: id.clone(), video: v, edit: e, out: opts.out.join("work").join(&v.split).join(&v.name) };
        let start = Instant::now();
        let mut result = CaseResult::new(id.clone(), e, None);
        match run_case(&input, opts, recipe) {
            Ok((judgement, clip, pick)) => {
                result.judgement = judgement;
                result.clip = clip;
                result.pick = pick;
            }
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(err) => {
                crate::progress::warn(format!("{id}: failed: {err}"));
                result.error = Some(err.to_string());
            }
        }
        result.seconds = start.elapsed().as_secs_f64();
        report.cases.push(result);
        if opts.save {
            let mut all = previous.to_vec();
            all.push(report.clone());
            save_reports(&all, &opts.out)?;
        }
        progress.step()?;
    }
    progress.finish();
    Ok(report)
}

type Measured = (Option<Judgement>, Option<ClipMetrics>, Option<f64>);

fn run_case(
    input: &CaseInput,
    opts: &RunOptions,
    recipe: &mut dyn FnMut(&CaseInput) -> Result<Video>,
) -> Result<Measured> {
    let (v, e) = (input.video, input.edit);
    let edit = recipe(input)?;
    if edit.len() != v.video.len() {
        return Err(Error::Invalid(format!(
            "the recipe returned {} frames for a clip of {}: an edit keeps the clip's frames",
            edit.len(),
            v.video.len()
        )));
    }
    let written = loveu::write_result(&opts.out, &v.split, &v.name, e.kind, &edit)?;
    let sheet = crate::media::compose::comparison_sheet(
        &[&v.video, &edit],
        &[format!("source: {}", v.caption), format!("{}: {}", e.kind.name(), e.prompt)],
        8,
    )?;
    sheet.save(opts.out.join("sheets").join(format!("{}-{}-{}.png", v.split, v.name, e.kind.name())))?;
    // The toy world judges the edit as made; the field's metrics read the JPEGs, as the challenge does.
    let judgement = match (&v.truth, &e.target) {
        (Some(t), Some(target)) => {
            let (source, target) = (synthetic_clip(&t.spec)?, synthetic_clip(target)?);
            let edit = if (edit.width(), edit.height()) == (source.video.width(), source.video.height()) {
                edit.clone()
            } else {
                edit.resize(source.video.width(), source.video.height(), vidtune_kernels::image::Fit::Resize)?
            };
            Some(judge(e.kind, &source, &target, &edit)?)
        }
        _ => None,
    };
    let frames = if opts.clip.is_some() || opts.pick.is_some() { Some(loveu_frames(&written)?) } else { None };
    let clip = match (opts.clip, &frames) {
        (Some(m), Some(f)) => Some(clip_metrics(m, f, &e.prompt)?),
        _ => None,
    };
    let pick = match (opts.pick, &frames) {
        (Some(m), Some(f)) => Some(pick_score(m, f, &e.prompt)?),
        _ => None,
    };
    Ok((judgement, clip, pick))
}
