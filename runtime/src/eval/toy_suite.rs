//! The built-in toy suite (`toy:dev`, `toy:test`): held-out toy-world clips, each with five edits in the
//! world's grammar, and the ground truth to judge them — every edit's target is the source clip with the
//! edit applied, rendered on the same path.
//!
//! - **colour**: the subject's colour changes;
//! - **object**: the subject's shape changes (triangle → square, …);
//! - **background**: the background's colour changes, the subject stays;
//! - **style**: the background's texture changes (striped → gradient → textured → striped);
//! - **multiple**: the subject's colour and the background's colour at once.
//!
//! The videos are the toy models' held-out (shape, colour, motion) combinations, each on its own
//! background; alternate ones go to `dev` and `test`, so the two share no (shape, colour, motion,
//! background) and neither holds anything the models were trained on. Settings are chosen on `dev`;
//! what the README reports comes from `test`.

use super::{Edit, EditType, Suite, SuiteVideo, ToyTruth};
use crate::error::{Error, Result};
use crate::synthetic::{caption, synthetic_clip, Motion, Shape, SyntheticSpec, Texture, COLORS};
use crate::toy::world::held_out_combinations;

/// Videos per split by default.
pub const DEV_VIDEOS: usize = 4;
pub const TEST_VIDEOS: usize = 6;
/// Frames and size of the toy suite's clips.
pub const FRAMES: usize = 8;
pub const SIZE: i64 = 64;

/// The toy splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Dev,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }

    /// `toy:dev` / `toy:test`, with an optional video count: `toy:dev:8`, or `toy:dev:all` for every video
    /// of the split (an error for other `toy:` names; `None` for anything else).
    pub fn parse_suite(name: &str) -> Option<Result<(Split, Option<usize>)>> {
        let rest = name.strip_prefix("toy:")?;
        let (split, count) = match rest.split_once(':') {
            Some((s, c)) => (s, Some(c)),
            None => (rest, None),
        };
        let split = match split {
            "dev" => Split::Dev,
            "test" => Split::Test,
            other => {
                return Some(Err(Error::Invalid(format!(
                    "unknown toy suite \"toy:{other}\"; expected toy:dev or toy:test (toy:dev:N or toy:dev:all for \
                     more videos)"
                ))))
            }
        };
        let all = videos_of(split).len();
        let count = match count {
            None => None,
            Some("all") => Some(all),
            Some(c) => match c.parse::<usize>() {
                Ok(n) if (1..=all).contains(&n) => Some(n),
                _ => {
                    return Some(Err(Error::Invalid(format!(
                        "toy suite \"{name}\": expected a video count from 1 to {all}, or all, after toy:{}:",
                        split.name()
                    ))))
                }
            },
        };
        Some(Ok((split, count)))
    }
}

/// The (shape, colour, motion, background colour, texture) of every toy suite video, in order, with its
/// split: the held-out combinations, alternately `dev` and `test`.
pub fn videos() -> Vec<(Split, SyntheticSpec)> {
    let textures = [Texture::Stripes, Texture::Gradient, Texture::Noise];
    held_out_combinations()
        .into_iter()
        .enumerate()
        .map(|(i, (shape, color, motion))| {
            let bg = nth_other(i * 3 + 1, &[color]);
            let spec = SyntheticSpec {
                shape: Some(shape),
                color: Some(color.to_string()),
                motion: Some(motion),
                background: Some(textures[i % textures.len()]),
                background_color: Some(bg.to_string()),
                frames: FRAMES,
                width: SIZE,
                height: SIZE,
                seed: 100 + i as u64,
                ..Default::default()
            };
            (if i % 2 == 0 { Split::Dev } else { Split::Test }, spec)
        })
        .collect()
}

/// The first colour from `start` on (cyclically) that is none of `avoid`.
fn nth_other(start: usize, avoid: &[&str]) -> &'static str {
    (0..COLORS.len()).map(|k| COLORS[(start + k) % COLORS.len()].0).find(|c| !avoid.contains(c)).unwrap_or("white")
}

/// The next colour after `c` that is none of `avoid`.
fn next_color(c: &str, avoid: &[&str]) -> &'static str {
    let i = COLORS.iter().position(|(n, _)| *n == c).unwrap_or(0);
    nth_other(i + 1, &[avoid, &[c]].concat())
}

/// The shape an object edit asks for.
pub fn other_shape(s: Shape) -> Shape {
    match s {
        Shape::Circle => Shape::Triangle,
        Shape::Square => Shape::Triangle,
        Shape::Triangle => Shape::Square,
        Shape::Diamond => Shape::Circle,
    }
}

/// The texture a style edit asks for.
pub fn other_texture(t: Texture) -> Texture {
    match t {
        Texture::Stripes => Texture::Gradient,
        Texture::Gradient => Texture::Noise,
        Texture::Noise | Texture::Plain => Texture::Stripes,
    }
}

/// The edits of a resolved spec: (kind, target spec, subject words).
pub fn edits_of(spec: &SyntheticSpec) -> Vec<(EditType, SyntheticSpec)> {
    let color = spec.color.clone().unwrap_or_default();
    let bg = spec.background_color.clone().unwrap_or_default();
    let new_color = next_color(&color, &[&bg]);
    let new_bg = next_color(&bg, &[&color, new_color]);
    let with = |f: &dyn Fn(&mut SyntheticSpec)| {
        let mut s = spec.clone();
        f(&mut s);
        s
    };
    vec![
        (EditType::Colour, with(&|s| s.color = Some(new_color.into()))),
        (EditType::Object, with(&|s| s.shape = s.shape.map(other_shape))),
        (EditType::Background, with(&|s| s.background_color = Some(new_bg.into()))),
        (EditType::Style, with(&|s| s.background = s.background.map(other_texture))),
        (
            EditType::Multiple,
            with(&|s| {
                s.color = Some(new_color.into());
                s.background_color = Some(new_bg.into());
            }),
        ),
    ]
}

/// The subject words of a resolved spec: its colour and shape ("red triangle").
fn subject_of(s: &SyntheticSpec) -> String {
    format!("{} {}", s.color.as_deref().unwrap_or(""), s.shape.map(Shape::name).unwrap_or(""))
}

/// The caption of a resolved spec.
pub fn caption_of(s: &SyntheticSpec) -> String {
    caption(
        s.shape.unwrap_or(Shape::Circle),
        s.color.as_deref().unwrap_or(""),
        s.motion.unwrap_or(Motion::Right),
        s.background.unwrap_or(Texture::Plain),
        s.background_color.as_deref().unwrap_or(""),
    )
}

/// The toy suite of `split`: its first `count` videos (`None`: the default count), rendered, with their
/// exact masks, a click at the subject's centre in frame 0, and five edits each.
pub fn toy_suite(split: Split, count: Option<usize>) -> Result<Suite> {
    let count = count.unwrap_or(match split {
        Split::Dev => DEV_VIDEOS,
        Split::Test => TEST_VIDEOS,
    });
    let mut videos = vec![];
    for (i, (_, spec)) in videos_of(split).into_iter().enumerate().take(count) {
        let clip = synthetic_clip(&spec)?;
        let resolved = clip.spec.clone();
        let edits = edits_of(&resolved)
            .into_iter()
            .map(|(kind, target)| Edit {
                kind,
                prompt: caption_of(&target),
                subject: Some(subject_of(&target)),
                target: Some(target),
            })
            .collect();
        let click = crate::toy::probe::centroids(&clip.masks).first().copied().filter(|(x, _)| x.is_finite());
        videos.push(SuiteVideo {
            split: split.name().into(),
            name: format!("toy-{:02}", i),
            caption: clip.caption.clone(),
            video: clip.video,
            masks: Some(clip.masks),
            click,
            edits,
            truth: Some(ToyTruth { spec: resolved }),
        });
    }
    Ok(Suite { name: format!("toy:{}", split.name()), videos })
}

/// A toy suite widened to more edits of one kind per clip (`toy:dev:all+colours`, `toy:dev:all+shapes`):
/// a wider set to choose that kind's recipe on, as dev's one edit of a kind per clip soon leaves nothing
/// to choose between. Each edit is a video of its own named `<video>-to-<colour or shape>` (the first is
/// the suite's own edit of that kind), on the same clip, so a tuned model is shared by a clip's edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Widen {
    /// Colour edits to the three colours after the subject's own (never its background's).
    Colours,
    /// Object edits to each of the other three shapes.
    Shapes,
}

impl Widen {
    pub const ALL: [Widen; 2] = [Widen::Colours, Widen::Shapes];
    /// Target colours per clip of [`Widen::Colours`].
    pub const COLOURS: usize = 3;

    /// The suffix of the suite's name: `+colours`, `+shapes`.
    pub fn suffix(self) -> &'static str {
        match self {
            Widen::Colours => "+colours",
            Widen::Shapes => "+shapes",
        }
    }

    /// The kind of edit it widens.
    pub fn kind(self) -> EditType {
        match self {
            Widen::Colours => EditType::Colour,
            Widen::Shapes => EditType::Object,
        }
    }

    /// `name` without a widening suffix, and the widening it asked for.
    pub fn strip(name: &str) -> (&str, Option<Widen>) {
        Widen::ALL
            .iter()
            .find_map(|w| name.strip_suffix(w.suffix()).map(|base| (base, Some(*w))))
            .unwrap_or((name, None))
    }

    /// `suite` with only this kind of edit, several per clip.
    pub fn apply(self, suite: Suite) -> Result<Suite> {
        let mut videos = vec![];
        for v in &suite.videos {
            let Some(truth) = &v.truth else {
                return Err(Error::Invalid(format!(
                    "{}{}: video {} has no toy ground truth to widen",
                    suite.name,
                    self.suffix(),
                    v.name
                )));
            };
            for (to, target) in self.targets(&truth.spec) {
                let edit = Edit {
                    kind: self.kind(),
                    prompt: caption_of(&target),
                    subject: Some(subject_of(&target)),
                    target: Some(target),
                };
                videos.push(SuiteVideo { name: format!("{}-to-{to}", v.name), edits: vec![edit], ..v.clone() });
            }
        }
        Ok(Suite { name: format!("{}{}", suite.name, self.suffix()), videos })
    }

    /// The targets of a clip's edits, named, in order: the suite's own edit of this kind first.
    fn targets(self, src: &SyntheticSpec) -> Vec<(&'static str, SyntheticSpec)> {
        match self {
            Widen::Colours => {
                let color = src.color.clone().unwrap_or_default();
                let mut avoid = vec![color.clone(), src.background_color.clone().unwrap_or_default()];
                let mut out = vec![];
                let mut from = color;
                while out.len() < Widen::COLOURS {
                    let refs: Vec<&str> = avoid.iter().map(String::as_str).collect();
                    let to = next_color(&from, &refs);
                    if avoid.iter().any(|a| a == to) {
                        break;
                    }
                    out.push((to, SyntheticSpec { color: Some(to.into()), ..src.clone() }));
                    avoid.push(to.into());
                    from = to.into();
                }
                out
            }
            Widen::Shapes => {
                let own = src.shape.unwrap_or(Shape::Circle);
                let first = other_shape(own);
                let rest = Shape::ALL.iter().copied().filter(|&s| s != own && s != first);
                std::iter::once(first)
                    .chain(rest)
                    .map(|s| (s.name(), SyntheticSpec { shape: Some(s), ..src.clone() }))
                    .collect()
            }
        }
    }
}

fn videos_of(split: Split) -> Vec<(Split, SyntheticSpec)> {
    videos().into_iter().filter(|(s, _)| *s == split).collect()
}

/// A spec as JSON (the toy ground truth of a written suite).
pub fn spec_to_json(s: &SyntheticSpec) -> serde_json::Value {
    serde_json::json!({
        "shape": s.shape.map(Shape::name),
        "color": s.color,
        "background": s.background.map(Texture::name),
        "background_color": s.background_color,
        "motion": s.motion.map(Motion::name),
        "frames": s.frames,
        "width": s.width,
        "height": s.height,
        "seed": s.seed,
        "occluder": s.occluder,
        "counter": s.counter,
        "fps": s.fps,
        "phase": s.phase,
    })
}

/// Reads [`spec_to_json`]'s output.
pub fn spec_from_json(v: &serde_json::Value) -> Result<SyntheticSpec> {
    let text = |k: &str| v.get(k).and_then(|x| x.as_str());
    let bad = |k: &str| Error::Invalid(format!("toy spec: {k:?} is missing or malformed"));
    let d = SyntheticSpec::default();
    Ok(SyntheticSpec {
        shape: text("shape").map(Shape::parse).transpose()?,
        color: text("color").map(str::to_string),
        background: text("background").map(Texture::parse).transpose()?,
        background_color: text("background_color").map(str::to_string),
        motion: text("motion").map(Motion::parse).transpose()?,
        frames: v.get("frames").and_then(|x| x.as_u64()).ok_or_else(|| bad("frames"))? as usize,
        width: v.get("width").and_then(|x| x.as_i64()).ok_or_else(|| bad("width"))?,
        height: v.get("height").and_then(|x| x.as_i64()).ok_or_else(|| bad("height"))?,
        seed: v.get("seed").and_then(|x| x.as_u64()).ok_or_else(|| bad("seed"))?,
        occluder: v.get("occluder").and_then(|x| x.as_bool()).unwrap_or(d.occluder),
        counter: v.get("counter").and_then(|x| x.as_bool()).unwrap_or(d.counter),
        fps: v.get("fps").and_then(|x| x.as_f64()).unwrap_or(d.fps),
        phase: v.get("phase").and_then(|x| x.as_f64()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_take_a_video_count() {
        let all = videos_of(Split::Dev).len();
        assert_eq!(Split::parse_suite("toy:dev").unwrap().unwrap(), (Split::Dev, None));
        assert_eq!(Split::parse_suite("toy:test:2").unwrap().unwrap(), (Split::Test, Some(2)));
        assert_eq!(Split::parse_suite("toy:dev:all").unwrap().unwrap(), (Split::Dev, Some(all)));
        assert!(Split::parse_suite("some/folder").is_none());
        let err = Split::parse_suite("toy:dev:0").unwrap().unwrap_err().to_string();
        assert!(err.contains("toy:dev:0") && err.contains(&format!("from 1 to {all}")), "{err}");
        let err = Split::parse_suite("toy:train").unwrap().unwrap_err().to_string();
        assert!(err.contains("toy:train") && err.contains("expected toy:dev or toy:test"), "{err}");
        assert_eq!(toy_suite(Split::Dev, Some(all)).unwrap().videos.len(), all);
    }

    #[test]
    fn a_widened_suite_gives_each_clip_distinct_targets_of_one_kind() {
        let suite = toy_suite(Split::Dev, Some(2)).unwrap();
        for (how, kind, per) in
            [(Widen::Colours, EditType::Colour, Widen::COLOURS), (Widen::Shapes, EditType::Object, 3)]
        {
            let wide = how.apply(suite.clone()).unwrap();
            assert_eq!(wide.name, format!("toy:dev{}", how.suffix()));
            assert_eq!(Widen::strip(&wide.name), ("toy:dev", Some(how)));
            assert_eq!(wide.videos.len(), 2 * per);
            for (i, v) in suite.videos.iter().enumerate() {
                let src = &v.truth.as_ref().unwrap().spec;
                let group = &wide.videos[i * per..(i + 1) * per];
                // The first is the suite's own edit of this kind; every target differs from the clip only
                // where the kind says, and from the others.
                let own = v.edits.iter().find(|e| e.kind == kind).unwrap();
                assert_eq!(group[0].edits[0].prompt, own.prompt);
                let mut seen = vec![];
                for w in group {
                    assert_eq!(w.edits.len(), 1);
                    let e = &w.edits[0];
                    let t = e.target.as_ref().unwrap();
                    assert_eq!(e.kind, kind);
                    let to = match how {
                        Widen::Colours => {
                            let c = t.color.clone().unwrap();
                            assert!(Some(&c) != src.color.as_ref() && Some(&c) != src.background_color.as_ref());
                            assert_eq!(SyntheticSpec { color: src.color.clone(), ..t.clone() }, *src);
                            c
                        }
                        Widen::Shapes => {
                            assert_ne!(t.shape, src.shape);
                            assert_eq!(SyntheticSpec { shape: src.shape, ..t.clone() }, *src);
                            t.shape.unwrap().name().to_string()
                        }
                    };
                    assert_eq!(w.name, format!("{}-to-{to}", v.name));
                    assert!(!seen.contains(&to), "{to} twice");
                    let subject = format!("{} {}", t.color.as_deref().unwrap(), t.shape.unwrap().name());
                    assert_eq!(e.subject.as_deref(), Some(subject.as_str()));
                    assert!(w.video.frames().equal(v.video.frames()));
                    seen.push(to);
                }
            }
        }
        assert_eq!(Widen::strip("toy:test:3"), ("toy:test:3", None));
        let mut loveu = suite;
        loveu.videos[0].truth = None;
        let err = Widen::Shapes.apply(loveu).unwrap_err().to_string();
        assert!(
            err.contains("toy:dev+shapes") && err.contains("toy-00") && err.contains("no toy ground truth"),
            "{err}"
        );
    }

    #[test]
    fn dev_and_test_are_disjoint_and_held_out() {
        let all = videos();
        let key = |s: &SyntheticSpec| (s.shape, s.color.clone(), s.motion, s.background_color.clone(), s.background);
        let dev: Vec<_> = all.iter().filter(|(p, _)| *p == Split::Dev).map(|(_, s)| key(s)).collect();
        let test: Vec<_> = all.iter().filter(|(p, _)| *p == Split::Test).map(|(_, s)| key(s)).collect();
        assert!(dev.len() >= DEV_VIDEOS && test.len() >= TEST_VIDEOS, "{} {}", dev.len(), test.len());
        for k in &test {
            assert!(!dev.contains(k), "{k:?} is in both splits");
        }
        for (_, s) in &all {
            let (shape, color, motion) = (s.shape.unwrap(), s.color.as_deref().unwrap(), s.motion.unwrap());
            assert!(crate::toy::world::is_held_out(shape, color, motion), "{s:?} was seen in training");
            assert_ne!(s.color, s.background_color);
        }
    }

    #[test]
    fn every_edit_changes_what_its_kind_says_and_keeps_the_path() {
        let suite = toy_suite(Split::Test, Some(1)).unwrap();
        let v = &suite.videos[0];
        let src = &v.truth.as_ref().unwrap().spec;
        assert_eq!(v.edits.len(), 5);
        assert_eq!(v.caption, caption_of(src));
        for e in &v.edits {
            let t = e.target.as_ref().unwrap();
            assert_eq!(t.phase, src.phase, "{:?}", e.kind);
            assert_ne!(t.color, t.background_color, "{:?}", e.kind);
            let changed = [
                t.shape != src.shape,
                t.color != src.color,
                t.background_color != src.background_color,
                t.background != src.background,
            ];
            let want = match e.kind {
                EditType::Colour => [false, true, false, false],
                EditType::Object => [true, false, false, false],
                EditType::Background => [false, false, true, false],
                EditType::Style => [false, false, false, true],
                EditType::Multiple => [false, true, true, false],
            };
            assert_eq!(changed, want, "{:?}", e.kind);
            assert_ne!(e.prompt, v.caption);
            // The target moves on the source's path: same centroids where the shape is the same.
            let target = synthetic_clip(t).unwrap();
            let (a, b) =
                (crate::toy::probe::centroids(&target.masks), crate::toy::probe::centroids(&v.masks.clone().unwrap()));
            for (p, q) in a.iter().zip(&b) {
                assert!((p.0 - q.0).abs() < 1.5 && (p.1 - q.1).abs() < 1.5, "{:?}: {p:?} vs {q:?}", e.kind);
            }
        }
        let json = spec_to_json(src);
        assert_eq!(&spec_from_json(&json).unwrap(), src);
    }
}
