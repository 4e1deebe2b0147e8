//! Edit benchmarks: suites of videos with edits of several kinds, read from and written in the
//! LOVEU-TGVE-2023 layout (`loveu.rs`), the built-in toy suite with its ground truth (`toy_suite.rs`),
//! the metrics per kind of edit (`metrics.rs`) and the run over every case, with its report
//! (`run.rs`). Running a recipe is the caller's: the runner takes it as a function of a [`CaseInput`].

pub mod loveu;
pub mod metrics;
pub mod run;
pub mod toy_suite;

use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use crate::synthetic::SyntheticSpec;

/// The kinds of edit: LOVEU-TGVE's four, and a colour change of the subject (an extra column of ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EditType {
    Colour,
    Object,
    Background,
    Style,
    Multiple,
}

impl EditType {
    pub const ALL: [EditType; 5] =
        [EditType::Colour, EditType::Object, EditType::Background, EditType::Style, EditType::Multiple];

    /// The name in the result layout and on the command line (LOVEU-TGVE's: the column's first word).
    pub fn name(self) -> &'static str {
        match self {
            EditType::Colour => "colour",
            EditType::Object => "object",
            EditType::Background => "background",
            EditType::Style => "style",
            EditType::Multiple => "multiple",
        }
    }

    /// The suite CSV's column.
    pub fn column(self) -> &'static str {
        match self {
            EditType::Colour => "Colour Change Caption",
            EditType::Object => "Object Change Caption",
            EditType::Background => "Background Change Caption",
            EditType::Style => "Style Change Caption",
            EditType::Multiple => "Multiple Changes Caption",
        }
    }

    pub fn parse(s: &str) -> Result<EditType> {
        let s = s.trim().to_lowercase();
        let s = if s == "color" { "colour".to_string() } else { s };
        EditType::ALL.iter().copied().find(|t| t.name() == s).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown edit type {s:?}; expected one of {}",
                EditType::ALL.map(|t| format!("{:?}", t.name())).join(", ")
            ))
        })
    }
}

/// What the toy world knows of a suite video: the spec it was rendered from.
#[derive(Debug, Clone)]
pub struct ToyTruth {
    pub spec: SyntheticSpec,
}

/// One edit of a video.
#[derive(Debug, Clone)]
pub struct Edit {
    pub kind: EditType,
    pub prompt: String,
    /// The words naming the subject after the edit, where the suite knows them (mask-guided recipes tie
    /// them to the masks).
    pub subject: Option<String>,
    /// The toy world's target: the source spec with the edit applied (same seed and path).
    pub target: Option<SyntheticSpec>,
}

/// One video of a suite.
#[derive(Debug, Clone)]
pub struct SuiteVideo {
    /// LOVEU-TGVE's sub-folder (`DAVIS_480p`, …) or the toy split (`dev`, `test`).
    pub split: String,
    pub name: String,
    /// The source caption (`Our GT caption`).
    pub caption: String,
    pub video: Video,
    pub masks: Option<Masks>,
    /// A click on the subject in frame 0, where known.
    pub click: Option<(f64, f64)>,
    pub edits: Vec<Edit>,
    pub truth: Option<ToyTruth>,
}

/// A suite: videos with their edits.
#[derive(Debug, Clone)]
pub struct Suite {
    /// How the user named it (`toy:test`, a folder).
    pub name: String,
    pub videos: Vec<SuiteVideo>,
}

/// One (video, edit) pair, by index into the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseRef {
    pub video: usize,
    pub edit: usize,
}

/// Which cases to run: `--cases` (names `video` or `video/type`, or substrings of them), `--types`,
/// `--limit`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub cases: Vec<String>,
    pub types: Vec<EditType>,
    pub limit: Option<usize>,
}

impl Suite {
    /// The cases in order: video by video, edits in the suite's order.
    pub fn cases(&self, sel: &Selection) -> Result<Vec<CaseRef>> {
        let mut out = vec![];
        for (vi, v) in self.videos.iter().enumerate() {
            for (ei, e) in v.edits.iter().enumerate() {
                if !sel.types.is_empty() && !sel.types.contains(&e.kind) {
                    continue;
                }
                let id = format!("{}/{}/{}", v.split, v.name, e.kind.name());
                if !sel.cases.is_empty() && !sel.cases.iter().any(|c| id.contains(c.as_str())) {
                    continue;
                }
                out.push(CaseRef { video: vi, edit: ei });
            }
        }
        if out.is_empty() && (!sel.cases.is_empty() || !sel.types.is_empty()) {
            return Err(Error::Invalid(format!(
                "{}: no case matches --cases {:?} --types {:?} (cases are named split/video/type, e.g. {})",
                self.name,
                sel.cases,
                sel.types.iter().map(|t| t.name()).collect::<Vec<_>>(),
                self.videos
                    .first()
                    .and_then(|v| v.edits.first().map(|e| format!("{}/{}/{}", v.split, v.name, e.kind.name())))
                    .unwrap_or_else(|| "–".into())
            )));
        }
        if let Some(n) = sel.limit {
            out.truncate(n);
        }
        Ok(out)
    }

    /// The case's id, `split/video/type`.
    pub fn case_id(&self, c: CaseRef) -> String {
        let v = &self.videos[c.video];
        format!("{}/{}/{}", v.split, v.name, v.edits[c.edit].kind.name())
    }
}

/// What a recipe gets for one case.
#[derive(Debug, Clone)]
pub struct CaseInput<'a> {
    pub id: String,
    pub video: &'a SuiteVideo,
    pub edit: &'a Edit,
    /// The folder the recipe may write its own files in.
    pub out: std::path::PathBuf,
}
