//! The LOVEU-TGVE-2023 layout, read as it ships and written as its evaluation reads it.
//!
//! A suite folder holds `LOVEU-TGVE-2023_Dataset.csv`: section rows (`DAVIS Videos:`, `Youtube Videos:`,
//! `Videvo Videos:`, each label in the first cell and the rest empty), a header row with `Video name`,
//! `Our GT caption` and the four `… Change Caption` columns, and a row per video. A section's videos are
//! frames at `<split>/480p_frames/<video>/00000.jpg…`, where the split folder is `DAVIS_480p`,
//! `youtube_480p` or `videvo_480p` (any other label's first word, lowercased, names its folder).
//!
//! Ours, all optional: a `Colour Change Caption` column; `Click X` / `Click Y` (a click on the subject
//! in frame 0, in the frames' own pixels); masks at `<split>/masks/<video>/00000.png…`; and
//! `vidtune-suite.json`, the toy world's ground truth of a written toy suite.
//!
//! Results go to `OUT/<split>/<video>/<type>/00000.jpg…`, the folders the challenge's `run_eval.py` reads,
//! with `OUT/<split>/<video>/<type>.gif` beside each.

use super::{Edit, EditType, Suite, SuiteVideo, ToyTruth};
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::{load_video, LoadOptions, Video};
use crate::synthetic::SyntheticSpec;
use crate::table::csv_field;
use std::path::{Path, PathBuf};

/// The suite table's file name.
pub const CSV_NAME: &str = "LOVEU-TGVE-2023_Dataset.csv";
/// The toy ground truth's file name.
pub const TRUTH_NAME: &str = "vidtune-suite.json";

/// The LOVEU-TGVE column order of the four edit captions, and ours after them.
const COLUMNS: [EditType; 5] =
    [EditType::Style, EditType::Object, EditType::Background, EditType::Multiple, EditType::Colour];

/// How the frames of a suite are read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Keep at most this many frames of each video.
    pub frames: Option<usize>,
    /// Keep one frame in `every` (default 1).
    pub every: Option<usize>,
    /// Resize to `size`² (default: the frames' size).
    pub size: Option<i64>,
}

/// Parses CSV text (RFC 4180: quoted fields with doubled quotes and line breaks; a byte-order mark and
/// `\r\n` line ends are accepted). `name` is for errors.
pub fn parse_csv(text: &str, name: &str) -> Result<Vec<Vec<String>>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (mut rows, mut row, mut field) = (vec![], vec![], String::new());
    let mut chars = text.chars().peekable();
    let (mut quoted, mut line) = (false, 1usize);
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(Error::Invalid(format!("{name}: a quoted field opened before line {line} is never closed")));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// The split folder of a section label (`DAVIS Videos:` → `DAVIS_480p`).
pub fn split_folder(label: &str) -> String {
    let first = label.split_whitespace().next().unwrap_or("").trim_end_matches(':').to_lowercase();
    match first.as_str() {
        "davis" => "DAVIS_480p".into(),
        "youtube" => "youtube_480p".into(),
        "videvo" => "videvo_480p".into(),
        _ => first,
    }
}

/// A plain relative name (no separators, no `..`): video and split names become folder names.
fn check_name(what: &str, name: &str, csv: &Path) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(|c| c.is_control());
    if bad {
        return Err(Error::bad_file(csv, format!("{what} {name:?} is not a plain folder name")));
    }
    Ok(())
}

/// Reads a suite folder in the LOVEU-TGVE layout (or the path of its CSV).
pub fn read_suite(path: &Path, opts: &ReadOptions) -> Result<Suite> {
    let (dir, csv) = if path.is_dir() {
        (path.to_path_buf(), path.join(CSV_NAME))
    } else {
        (path.parent().map(Path::to_path_buf).unwrap_or_default(), path.to_path_buf())
    };
    if !csv.is_file() {
        return Err(Error::bad_file(
            path,
            format!("is not a suite: expected {CSV_NAME} (LOVEU-TGVE-2023's table) in it, or toy:dev / toy:test"),
        ));
    }
    let text = crate::fsutil::read_text(&csv, "a suite table")?;
    let rows = parse_csv(&text, &csv.display().to_string())?;
    let header_at = rows
        .iter()
        .position(|r| r.iter().any(|c| c.trim() == "Video name"))
        .ok_or_else(|| Error::bad_file(&csv, "has no header row with a \"Video name\" column"))?;
    let header: Vec<String> = rows[header_at].iter().map(|c| c.trim().to_string()).collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let name_col = col("Video name").expect("found above");
    let caption_col = col("Our GT caption")
        .ok_or_else(|| Error::bad_file(&csv, "has no \"Our GT caption\" column (the source captions)"))?;
    let edit_cols: Vec<(EditType, usize)> = COLUMNS.iter().filter_map(|&t| col(t.column()).map(|i| (t, i))).collect();
    if edit_cols.is_empty() {
        return Err(Error::bad_file(&csv, "has none of the \"… Change Caption\" columns"));
    }
    let (click_x, click_y) = (col("Click X"), col("Click Y"));
    let truth = read_truth(&dir)?;
    // Rows before the header may hold a section label too (the first section).
    let mut split =
        rows[..header_at].iter().rev().find_map(|r| section_label(r)).map(|l| split_folder(&l)).unwrap_or_default();
    let mut videos = vec![];
    let get = |r: &[String], i: usize| r.get(i).map(|c| c.trim().to_string()).unwrap_or_default();
    for (i, r) in rows.iter().enumerate().skip(header_at + 1) {
        if let Some(label) = section_label(r) {
            split = split_folder(&label);
            continue;
        }
        let name = get(r, name_col);
        if name.is_empty() {
            continue;
        }
        let at = |what: &str| format!("row {} ({name}): {what}", i + 1);
        if split.is_empty() {
            return Err(Error::bad_file(&csv, at("comes before any section row (\"DAVIS Videos:\" …)")));
        }
        check_name("split", &split, &csv)?;
        check_name("video name", &name, &csv)?;
        let frames_dir = dir.join(&split).join("480p_frames").join(&name);
        let load = LoadOptions {
            frames: opts.frames,
            every: opts.every.unwrap_or(1),
            size: opts.size.map(|s| (s, s)),
            ..Default::default()
        };
        if !frames_dir.is_dir() {
            return Err(Error::bad_file(&frames_dir, format!("is missing: the frames of {name} ({})", at("video"))));
        }
        let video = load_video(&frames_dir, &load)?;
        let masks_dir = dir.join(&split).join("masks").join(&name);
        let masks = if masks_dir.is_dir() {
            let m = Masks::load(&masks_dir, &load)?;
            m.check_matches(&video).map_err(|e| Error::bad_file(&masks_dir, e.to_string()))?;
            Some(m)
        } else {
            None
        };
        let click = match (click_x.map(|c| get(r, c)), click_y.map(|c| get(r, c))) {
            (Some(x), Some(y)) if !x.is_empty() && !y.is_empty() => {
                let parse = |s: &str, what: &str| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| Error::bad_file(&csv, at(&format!("{what} {s:?} is not a number"))))
                };
                // Clicks are in the frames' own pixels; the loaded frames may be resized.
                let (w0, h0) = source_size(&frames_dir)?;
                let (sx, sy) = (video.width() as f64 / w0 as f64, video.height() as f64 / h0 as f64);
                Some((parse(&x, "Click X")? * sx, parse(&y, "Click Y")? * sy))
            }
            _ => None,
        };
        let key = format!("{split}/{name}");
        let toy = truth.as_ref().and_then(|t| t.get(&key));
        let mut edits = vec![];
        for &(kind, c) in &edit_cols {
            let prompt = get(r, c);
            // pandas reads an empty cell as NaN, and the challenge's scripts write str(NaN): both mean none.
            if prompt.is_empty() || prompt == "nan" {
                continue;
            }
            let edit = toy.and_then(|t| t.edits.iter().find(|e| e.0 == kind));
            edits.push(Edit {
                kind,
                prompt,
                subject: edit.and_then(|e| e.2.clone()),
                target: edit.map(|e| e.1.clone()),
            });
        }
        videos.push(SuiteVideo {
            split: split.clone(),
            name,
            caption: get(r, caption_col),
            video,
            masks,
            click,
            edits,
            truth: toy.map(|t| ToyTruth { spec: t.spec.clone() }),
        });
    }
    if videos.is_empty() {
        return Err(Error::bad_file(&csv, "lists no videos"));
    }
    Ok(Suite { name: path.display().to_string(), videos })
}

/// The label of a section row (`DAVIS Videos:`): one filled cell, ending with a colon.
fn section_label(row: &[String]) -> Option<String> {
    let filled: Vec<&String> = row.iter().filter(|c| !c.trim().is_empty()).collect();
    (filled.len() == 1 && filled[0].trim().ends_with(':')).then(|| filled[0].trim().to_string())
}

/// The size of a video's first frame file.
fn source_size(dir: &Path) -> Result<(u32, u32)> {
    let first = crate::media::frames_dir::list_frames(dir)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::bad_file(dir, "contains no frames"))?;
    image::image_dimensions(&first).map_err(|e| Error::bad_file(&first, e.to_string()))
}

/// One toy video's ground truth as written: its spec and, per edit, the target spec and subject words.
struct TruthEntry {
    spec: SyntheticSpec,
    edits: Vec<(EditType, SyntheticSpec, Option<String>)>,
}

fn read_truth(dir: &Path) -> Result<Option<std::collections::BTreeMap<String, TruthEntry>>> {
    let path = dir.join(TRUTH_NAME);
    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::fsutil::read_text(&path, "a toy suite's ground truth")?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::bad_file(&path, format!("is not JSON: {e}")))?;
    let bad = |what: &str| Error::bad_file(&path, what.to_string());
    let mut out = std::collections::BTreeMap::new();
    for (key, entry) in v.get("videos").and_then(|v| v.as_object()).ok_or_else(|| bad("has no \"videos\" object"))? {
        let spec = super::toy_suite::spec_from_json(&entry["spec"]).map_err(|e| bad(&format!("{key}: {e}")))?;
        let mut edits = vec![];
        for e in entry.get("edits").and_then(|e| e.as_array()).into_iter().flatten() {
            let kind = EditType::parse(e["type"].as_str().unwrap_or_default())?;
            let target = super::toy_suite::spec_from_json(&e["target"]).map_err(|err| bad(&format!("{key}: {err}")))?;
            edits.push((kind, target, e["subject"].as_str().map(str::to_string)));
        }
        out.insert(key.clone(), TruthEntry { spec, edits });
    }
    Ok(Some(out))
}

/// Writes `suite` in the layout [`read_suite`] reads: the CSV (a section per split), JPEG frames, PNG
/// masks, and the toy ground truth. `dir` is a new folder (or one vidtune wrote: replaced whole).
pub fn write_suite(suite: &Suite, dir: &Path) -> Result<PathBuf> {
    crate::fsutil::write_dir_atomic(dir, false, |tmp| {
        let kinds: Vec<EditType> = COLUMNS
            .iter()
            .copied()
            .filter(|k| suite.videos.iter().any(|v| v.edits.iter().any(|e| e.kind == *k)))
            .collect();
        let mut header = vec!["Video name".to_string(), "Our GT caption".to_string()];
        header.extend(kinds.iter().map(|k| k.column().to_string()));
        header.extend(["Click X".to_string(), "Click Y".to_string()]);
        let mut csv = String::new();
        let mut truth = serde_json::Map::new();
        let mut split = String::new();
        let mut header_written = false;
        for v in &suite.videos {
            if v.split != split {
                split = v.split.clone();
                let mut row = vec![String::new(); header.len()];
                row[0] = format!("{} Videos:", v.split);
                csv.push_str(&(row.join(",") + "\n"));
                if !header_written {
                    csv.push_str(&(header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",") + "\n"));
                    header_written = true;
                }
            }
            let mut row = vec![v.name.clone(), v.caption.clone()];
            for k in &kinds {
                row.push(v.edits.iter().find(|e| e.kind == *k).map(|e| e.prompt.clone()).unwrap_or_default());
            }
            let (cx, cy) = v.click.map(|(x, y)| (format!("{x:.1}"), format!("{y:.1}"))).unwrap_or_default();
            row.extend([cx, cy]);
            csv.push_str(&(row.iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",") + "\n"));
            let frames = tmp.join(&v.split).join("480p_frames").join(&v.name);
            write_jpeg_frames(&v.video, &frames)?;
            if let Some(m) = &v.masks {
                m.save(&tmp.join(&v.split).join("masks").join(&v.name))?;
            }
            if let Some(t) = &v.truth {
                let edits: Vec<serde_json::Value> = v
                    .edits
                    .iter()
                    .filter_map(|e| {
                        e.target.as_ref().map(|s| {
                            serde_json::json!({"type": e.kind.name(), "target": super::toy_suite::spec_to_json(s),
                                               "subject": e.subject})
                        })
                    })
                    .collect();
                truth.insert(
                    format!("{}/{}", v.split, v.name),
                    serde_json::json!({"spec": super::toy_suite::spec_to_json(&t.spec), "edits": edits}),
                );
            }
        }
        std::fs::write(tmp.join(CSV_NAME), csv).map_err(|e| Error::io(tmp.join(CSV_NAME), e))?;
        if !truth.is_empty() {
            let text = serde_json::to_string_pretty(&serde_json::json!({"videos": truth})).unwrap_or_default();
            std::fs::write(tmp.join(TRUTH_NAME), text).map_err(|e| Error::io(tmp.join(TRUTH_NAME), e))?;
        }
        Ok(())
    })?;
    Ok(dir.to_path_buf())
}

/// Writes a clip's frames as `00000.jpg…` (quality 95) into `dir`, created if needed.
fn write_jpeg_frames(video: &Video, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for i in 0..video.len() as i64 {
        video.frame(i)?.save(dir.join(format!("{i:05}.jpg")))?;
    }
    Ok(())
}

/// The folder of a case's result frames, `OUT/<split>/<video>/<type>`.
pub fn result_dir(out: &Path, split: &str, video: &str, kind: EditType) -> PathBuf {
    out.join(split).join(video).join(kind.name())
}

/// Writes an edit in the result layout: `00000.jpg…` in [`result_dir`] (replacing that folder when
/// vidtune wrote it) and a GIF beside it. Returns the frames read back from the JPEGs, which are what the
/// challenge's evaluation reads.
pub fn write_result(out: &Path, split: &str, video: &str, kind: EditType, edit: &Video) -> Result<Video> {
    let dir = result_dir(out, split, video, kind);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    crate::fsutil::write_dir_atomic(&dir, false, |tmp| write_jpeg_frames(edit, tmp))?;
    crate::media::save_video(edit, dir.with_extension("gif"))?;
    read_result(&dir, edit.fps())
}

/// A result folder's JPEG frames, in order.
pub fn read_result(dir: &Path, fps: f64) -> Result<Video> {
    load_video(dir, &LoadOptions::default())?.with_fps(fps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{synthetic_clip, SyntheticSpec};

    #[test]
    fn csv_fields_quotes_and_line_ends() {
        let rows = parse_csv("\u{feff}a,\"b, \"\"c\"\"\",\r\n\"multi\nline\",x,\n", "t.csv").unwrap();
        assert_eq!(rows, vec![vec!["a", "b, \"c\"", ""], vec!["multi\nline", "x", ""]]);
        assert!(parse_csv("a,\"open\n", "t.csv").unwrap_err().to_string().contains("never closed"));
    }

    /// A fixture in the exact layout: the table as the dataset's CSV has it (a header row, section rows,
    /// blank rows, the four caption columns, a video without one caption), frames as JPEGs.
    fn fixture(dir: &Path) {
        let csv = "Video name,Our GT caption,Style Change Caption,Object Change Caption,Background Change Caption,Multiple Changes Caption,# frames\n\
                   DAVIS Videos:,,,,,,\n\
                   blackswan,\"a black swan swimming, in a pond\",a black swan in Van Gogh style,a white duck swimming in a pond,a black swan swimming in the ocean,a white duck swimming in the ocean in cartoon style,32\n\
                   ,,,,,,\n\
                   Youtube Videos:,,,,,,\n\
                   cat-dog-play,a cat and a dog playing,a cat and a dog playing in anime style,a fox and a dog playing,,a fox and a dog playing in snow,32\n\
                   ,,,,,,\n\
                   Videvo Videos:,,,,,,\n\
                   lotus,a lotus flower,a lotus flower watercolor,a rose,a lotus flower in the desert,a rose in the desert watercolor,32\n";
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(CSV_NAME), csv).unwrap();
        for (split, name, n) in
            [("DAVIS_480p", "blackswan", 3), ("youtube_480p", "cat-dog-play", 4), ("videvo_480p", "lotus", 2)]
        {
            let c = synthetic_clip(&SyntheticSpec { frames: n, width: 48, height: 40, seed: 3, ..Default::default() })
                .unwrap();
            write_jpeg_frames(&c.video, &dir.join(split).join("480p_frames").join(name)).unwrap();
        }
    }

    #[test]
    fn the_dataset_layout_is_read_as_it_ships() {
        let tmp = tempfile::tempdir().unwrap();
        fixture(tmp.path());
        let suite = read_suite(tmp.path(), &ReadOptions::default()).unwrap();
        let names: Vec<(&str, &str, usize)> =
            suite.videos.iter().map(|v| (v.split.as_str(), v.name.as_str(), v.video.len())).collect();
        assert_eq!(
            names,
            vec![("DAVIS_480p", "blackswan", 3), ("youtube_480p", "cat-dog-play", 4), ("videvo_480p", "lotus", 2)]
        );
        let swan = &suite.videos[0];
        assert_eq!(swan.caption, "a black swan swimming, in a pond");
        let kinds: Vec<&str> = swan.edits.iter().map(|e| e.kind.name()).collect();
        assert_eq!(kinds, ["style", "object", "background", "multiple"]);
        assert_eq!(swan.edits[1].prompt, "a white duck swimming in a pond");
        assert!(swan.masks.is_none() && swan.truth.is_none() && swan.click.is_none());
        // The empty caption is no edit.
        assert_eq!(suite.videos[1].edits.len(), 3);
        assert_eq!((swan.video.width(), swan.video.height()), (48, 40));
        let cases = suite.cases(&Default::default()).unwrap();
        assert_eq!(cases.len(), 11);
        assert_eq!(suite.case_id(cases[4]), "youtube_480p/cat-dog-play/style");
        let sel = crate::eval::Selection { types: vec![EditType::Object], limit: Some(2), ..Default::default() };
        let ids: Vec<String> = suite.cases(&sel).unwrap().into_iter().map(|c| suite.case_id(c)).collect();
        assert_eq!(ids, ["DAVIS_480p/blackswan/object", "youtube_480p/cat-dog-play/object"]);
        let sel = crate::eval::Selection { cases: vec!["nothing".into()], ..Default::default() };
        assert!(suite.cases(&sel).unwrap_err().to_string().contains("no case matches"));
        // Resized and shortened on reading.
        let small = read_suite(tmp.path(), &ReadOptions { frames: Some(2), size: Some(32), every: None }).unwrap();
        assert_eq!((small.videos[1].video.len(), small.videos[1].video.width()), (2, 32));
    }

    #[test]
    fn a_broken_suite_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = read_suite(tmp.path(), &ReadOptions::default()).unwrap_err().to_string();
        assert!(err.contains(CSV_NAME), "{err}");
        fixture(tmp.path());
        std::fs::remove_dir_all(tmp.path().join("videvo_480p")).unwrap();
        let err = read_suite(tmp.path(), &ReadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("videvo_480p/480p_frames/lotus") && err.contains("is missing"), "{err}");
        std::fs::write(tmp.path().join(CSV_NAME), "Video name,Our GT caption,Style Change Caption\nx/../..,a,b\n")
            .unwrap();
        let err = read_suite(tmp.path(), &ReadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("before any section row"), "{err}");
        std::fs::write(
            tmp.path().join(CSV_NAME),
            "Video name,Our GT caption,Style Change Caption\nA Videos:,,\n../x,a,b\n",
        )
        .unwrap();
        let err = read_suite(tmp.path(), &ReadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("not a plain folder name"), "{err}");
    }

    #[test]
    fn a_written_toy_suite_reads_back_with_its_truth_and_results_go_where_the_challenge_looks() {
        let tmp = tempfile::tempdir().unwrap();
        let suite = crate::eval::toy_suite::toy_suite(crate::eval::toy_suite::Split::Dev, Some(2)).unwrap();
        let dir = tmp.path().join("suite");
        write_suite(&suite, &dir).unwrap();
        let back = read_suite(&dir, &ReadOptions::default()).unwrap();
        assert_eq!(back.videos.len(), 2);
        for (a, b) in suite.videos.iter().zip(&back.videos) {
            assert_eq!((&a.split, &a.name, &a.caption), (&b.split, &b.name, &b.caption));
            assert_eq!(a.truth.as_ref().unwrap().spec, b.truth.as_ref().unwrap().spec);
            assert_eq!(a.masks.as_ref().unwrap().tensor(), b.masks.as_ref().unwrap().tensor());
            let kinds = |v: &SuiteVideo| {
                v.edits.iter().map(|e| (e.kind, e.prompt.clone(), e.target.clone())).collect::<Vec<_>>()
            };
            let mut ka = kinds(a);
            ka.sort_by_key(|k| k.0);
            let mut kb = kinds(b);
            kb.sort_by_key(|k| k.0);
            assert_eq!(ka, kb);
            let (ca, cb) = (a.click.unwrap(), b.click.unwrap());
            assert!((ca.0 - cb.0).abs() < 0.06 && (ca.1 - cb.1).abs() < 0.06);
            // JPEG at quality 95 (chroma subsampled, on 64² textures): close to the exact frames.
            let psnr = vidtune_kernels::image::psnr(a.video.frames(), b.video.frames()).unwrap();
            assert!(psnr > 25.0, "{psnr}");
        }
        let out = tmp.path().join("out");
        let v = &suite.videos[0];
        let read = write_result(&out, "dev", &v.name, EditType::Style, &v.video).unwrap();
        let files = crate::media::frames_dir::list_frames(&out.join("dev").join(&v.name).join("style")).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().to_string()).collect();
        assert_eq!(names, (0..8).map(|i| format!("{i:05}.jpg")).collect::<Vec<_>>());
        assert!(out.join("dev").join(&v.name).join("style.gif").is_file());
        assert_eq!(read.len(), 8);
        // A rerun replaces what vidtune wrote.
        write_result(&out, "dev", &v.name, EditType::Style, &v.video).unwrap();
    }
}
