//! Script documentation: every registered function carries a [`FnDoc`] with its signatures, what it does,
//! its options and a Rhai example. `:help`, tab completion and the notebook helpers read this table; a test
//! checks that it and the engine's registered functions agree.

use crate::docs::{option_names, FnDoc, TypeDoc};
use crate::engine::state::Host;
use crate::engine::{control, host, long, masks, media, models, score, segment, suites, sweep, video};

/// Every area's documentation table, in the order `:help` lists them.
pub const DOC_TABLES: &[&[FnDoc]] = &[
    media::DOCS,
    segment::DOCS,
    masks::DOCS,
    models::DOCS,
    control::DOCS,
    video::DOCS,
    long::DOCS,
    score::DOCS,
    suites::DOCS,
    sweep::DOCS,
    host::DOCS,
];

/// The script types.
pub const TYPE_DOCS: &[TypeDoc] = &[
    TypeDoc { name: "Video", summary: "A clip: frames [F, 3, H, W] in [-1, 1] and a frame rate. Cheap to copy." },
    TypeDoc { name: "Image", summary: "One RGB image [3, H, W] in [-1, 1]." },
    TypeDoc {
        name: "Masks",
        summary: "One mask per frame, [F, 1, H, W] in [0, 1]; remembers the clip it was segmented from.",
    },
    TypeDoc { name: "Click", summary: "A click (positive or negative) or a box on a frame, for segment." },
    TypeDoc { name: "Sam", summary: "Segment Anything loaded from ONNX files, with memoised frame embeddings." },
    TypeDoc {
        name: "StableDiffusion",
        summary: "A loaded SD1.x model: UNet, VAE, CLIP text encoder, tokenizer, scheduler.",
    },
    TypeDoc {
        name: "ControlNet",
        summary: "A loaded ControlNet: conditions generation on an image (edges, depth, a segmentation map, a pose).",
    },
    TypeDoc {
        name: "T2IAdapter",
        summary: "A loaded T2I-Adapter: features from a control image added inside the UNet.",
    },
    TypeDoc {
        name: "VideoModel",
        summary: "An SD1.x model inflated to video with chosen attention modules; tuned or not.",
    },
    TypeDoc { name: "Latents", summary: "Inverted latents of a clip, the starting noise of an edit." },
    TypeDoc { name: "Clip", summary: "A CLIP model (vision and text towers) for scoring edits." },
    TypeDoc { name: "Table", summary: "Scores of several results side by side; saves as md / csv / html / json." },
    TypeDoc { name: "Tensor", summary: "A tensor (shape, dtype, device): embeddings, latents." },
];

/// The full help text printed by `:help name`.
fn render(f: &FnDoc) -> String {
    let mut out = String::new();
    for s in f.signatures {
        out.push_str(s);
        out.push('\n');
    }
    out.push('\n');
    for line in f.summary.lines() {
        out.push_str("  ");
        out.push_str(line.trim());
        out.push('\n');
    }
    if !f.options.is_empty() {
        out.push_str("\n  options:\n");
        let width = f.options.iter().map(|o| o.name.len()).max().unwrap_or(0);
        for o in f.options {
            out.push_str(&format!("    {:<width$}  {}", o.name, o.takes()));
            if !o.doc.is_empty() {
                out.push_str(&format!(": {}", o.doc));
            }
            out.push('\n');
        }
        let names = option_names(f.options);
        let aliases: Vec<String> =
            crate::opts::aliases_for(f.call_name(), &names).into_iter().map(|(a, n)| format!("{a} = {n}")).collect();
        if !aliases.is_empty() {
            out.push_str(&format!("    (also accepted: {})\n", aliases.join(", ")));
        }
    }
    if !f.details.trim().is_empty() {
        out.push('\n');
        for line in f.details.trim_matches('\n').lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("\n  example:\n");
    for line in f.example.trim_matches('\n').lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every documented function, in the order `:help` lists them.
pub fn functions() -> Vec<&'static FnDoc> {
    DOC_TABLES.iter().flat_map(|t| t.iter()).collect()
}

/// Every documented type.
pub fn types() -> &'static [TypeDoc] {
    TYPE_DOCS
}

/// Looks up `name` (a function, `Type.method`, a bare method name, or a type).
pub fn lookup(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches("()");
    if let Some(t) = types().iter().find(|t| t.name.eq_ignore_ascii_case(name)) {
        let mut out = format!("{}\n\n  {}\n\n  methods and properties:\n", t.name, t.summary);
        for f in functions().into_iter().filter(|f| f.owner() == Some(t.name)) {
            out.push_str(&format!("    .{:<14} {}\n", f.call_name(), first_sentence(f.summary)));
        }
        return Some(out);
    }
    let matches: Vec<_> =
        functions().into_iter().filter(|f| f.name == name || (f.owner().is_some() && f.call_name() == name)).collect();
    if matches.is_empty() {
        return None;
    }
    Some(matches.iter().map(|f| render(f)).collect::<Vec<_>>().join("\n"))
}

/// [`lookup`], with what the session knows added (`segment`: which segmenter ran last).
pub fn lookup_in(name: &str, host: &Host) -> Option<String> {
    let mut text = lookup(name)?;
    if name.trim().trim_end_matches("()") == "segment" {
        text.push_str(&segment::session_note(host));
    }
    Some(text)
}

/// The overview printed by a bare `:help`.
pub fn overview(commands: &[(&str, &str)]) -> String {
    let mut out = String::from("Script functions (`:help NAME` for details and an example):\n");
    for f in functions().into_iter().filter(|f| f.owner().is_none()) {
        out.push_str(&format!("  {:<16} {}\n", f.name, first_sentence(f.summary)));
    }
    out.push_str("\nTypes (`:help Video` lists methods):\n");
    for t in types() {
        out.push_str(&format!("  {:<16} {}\n", t.name, first_sentence(t.summary)));
    }
    if !commands.is_empty() {
        out.push_str("\nREPL commands:\n");
        for (c, what) in commands {
            out.push_str(&format!("  {c:<22} {what}\n"));
        }
    }
    out
}

/// The first sentence of a summary: up to the first ". " that ends a sentence, not an abbreviation
/// ("Eq. 3", "e.g. a", "Fig. 4").
fn first_sentence(s: &str) -> &str {
    const ABBREVIATIONS: &[&str] = &["eq", "e.g", "i.e", "fig", "figs", "sec", "vs", "cf", "etc", "no", "approx"];
    let s = s.trim();
    let mut from = 0;
    while let Some(i) = s[from..].find(". ").map(|i| i + from) {
        let word = s[..i].rsplit(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
        if !ABBREVIATIONS.contains(&word.to_lowercase().as_str()) {
            return &s[..=i];
        }
        from = i + 2;
    }
    s
}

/// The documented names closest to `name` (a typo of a function, method or type, or the start of one),
/// for "did you mean".
pub fn near_names(name: &str) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = functions().iter().map(|f| f.call_name()).collect();
    all.extend(types().iter().map(|t| t.name));
    all.sort_unstable();
    all.dedup();
    let starting: Vec<&'static str> = all.iter().copied().filter(|n| name.len() >= 2 && n.starts_with(name)).collect();
    if !starting.is_empty() {
        return starting.into_iter().take(6).collect();
    }
    crate::opts::did_you_mean(name, &all).into_iter().collect()
}

/// Usage lines for a function name, used to explain a wrong-argument call.
pub fn usage(name: &str) -> Option<String> {
    let sigs: Vec<_> =
        functions().into_iter().filter(|f| f.call_name() == name).flat_map(|f| f.signatures.iter().copied()).collect();
    (!sigs.is_empty()).then(|| sigs.join("\n  "))
}

#[cfg(test)]
mod tests {
    use super::{first_sentence, near_names};

    #[test]
    fn a_summary_is_cut_at_its_first_sentence_not_at_an_abbreviation() {
        assert_eq!(
            first_sentence("Fuses two models (Eq. 3 of the paper). Then more."),
            "Fuses two models (Eq. 3 of the paper)."
        );
        assert_eq!(first_sentence("Keeps e.g. masks. Rest."), "Keeps e.g. masks.");
        assert_eq!(first_sentence("One sentence only"), "One sentence only");
    }

    #[test]
    fn typed_names_get_the_documented_names_near_them() {
        assert!(near_names("samp").contains(&"sample"), "{:?}", near_names("samp"));
        assert_eq!(near_names("frmae"), ["frame"]);
        assert!(near_names("zzzzzz").is_empty());
    }
}
