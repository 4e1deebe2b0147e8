//! Notebooks (evcxr Jupyter): rich displays of vidtune values, and script sessions whose results display.
//!
//! In a notebook's first cell:
//!
//! ```text
//! :dep vidtune-notebook = { path = "/path/to/vidtune/notebook" }
//! use vidtune_notebook::prelude::*;
//! ```
//!
//! The last expression of a cell is shown through `evcxr_display`: clips as animated GIFs (an HTML5
//! `<video>` for long clips; a contact sheet past the size cap), images as PNG, masks tinted over their
//! clip, score tables as HTML, tensors and models as one-line summaries. `Session::eval` results display
//! the same way, and script errors print with their caret, while the session keeps its variables.
//!
//! To display a new type: implement [`Show`] for it (one function returning its [`Output`]s).

use crate::values::{describe, tensor_summary, ScriptLatents, ScriptTensor, Table};
use base64::Engine as _;
use rhai::Dynamic;
use vidtune_runtime::score::{Comparison, Score};
use vidtune_runtime::{Image, Masks, Video};

/// Clips up to this many frames display as GIFs; longer ones as MP4 `<video>` (or a contact sheet).
pub const GIF_MAX_FRAMES: usize = 64;
/// Frames are scaled down to this longest side for display.
pub const DISPLAY_MAX_SIDE: i64 = 512;
/// Past this many bytes a display falls back to a contact sheet.
pub const MAX_BYTES: usize = 12 << 20;

/// One representation of a value for the notebook.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub mime: &'static str,
    pub data: Payload,
}

/// Text, or bytes sent base64-encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

impl Output {
    pub fn text(s: impl Into<String>) -> Output {
        Output { mime: "text/plain", data: Payload::Text(s.into()) }
    }

    pub fn html(s: impl Into<String>) -> Output {
        Output { mime: "text/html", data: Payload::Text(s.into()) }
    }

    pub fn binary(mime: &'static str, bytes: Vec<u8>) -> Output {
        Output { mime, data: Payload::Binary(bytes) }
    }
}

/// A value that knows how to show itself in a notebook. Give one rich output (frontends pick the richest
/// MIME type, so two rich ones would hide each other) plus a `text/plain` summary.
pub trait Show {
    fn outputs(&self) -> Vec<Output>;
}

/// What evcxr calls on a cell's last expression; implemented for every [`Show`] type.
pub trait EvcxrDisplay {
    fn evcxr_display(&self);
}

impl<T: Show + ?Sized> EvcxrDisplay for T {
    fn evcxr_display(&self) {
        print!("{}", protocol(&self.outputs()));
    }
}

/// The evcxr display protocol for `outputs`: `EVCXR_BEGIN_CONTENT mime`, the text or base64, `EVCXR_END_CONTENT`.
pub fn protocol(outputs: &[Output]) -> String {
    let mut out = String::new();
    for o in outputs {
        let body = match &o.data {
            Payload::Text(t) => t.clone(),
            Payload::Binary(b) => base64::engine::general_purpose::STANDARD.encode(b),
        };
        out.push_str(&format!("EVCXR_BEGIN_CONTENT {}\n{body}\nEVCXR_END_CONTENT\n", o.mime));
    }
    out
}

/// Whether this process runs notebook cells (evcxr's child process).
pub fn in_notebook() -> bool {
    std::env::var_os("EVCXR_IS_RUNTIME").is_some()
}

fn error(what: &str, e: impl std::fmt::Display) -> Vec<Output> {
    vec![Output::text(format!("{what}: cannot display: {e}"))]
}

/// `video` scaled so its longest side is at most [`DISPLAY_MAX_SIDE`].
fn display_size(video: &Video) -> vidtune_runtime::Result<Video> {
    let (w, h) = (video.width(), video.height());
    let side = w.max(h);
    if side <= DISPLAY_MAX_SIDE {
        return Ok(video.clone());
    }
    let s = DISPLAY_MAX_SIDE as f64 / side as f64;
    let (nw, nh) = (((w as f64 * s).round() as i64).max(2) & !1, ((h as f64 * s).round() as i64).max(2) & !1);
    video.resize(nw, nh, vidtune_runtime::Fit::Resize)
}

fn png(image: &Image) -> vidtune_runtime::Result<Output> {
    Ok(Output::binary("image/png", image.to_png_bytes()?))
}

/// A long clip as an MP4 in `<video>`, or why not.
#[cfg(feature = "ffmpeg")]
fn long_clip(small: &Video) -> vidtune_runtime::Result<Result<Output, String>> {
    let mp4 = small.to_mp4()?;
    if mp4.len() > MAX_BYTES {
        return Ok(Err(format!(" (MP4 of {} MB over the {} MB cap: contact sheet)", mp4.len() >> 20, MAX_BYTES >> 20)));
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&mp4);
    Ok(Ok(Output::html(format!(
        "<video controls loop autoplay muted playsinline width=\"{}\" src=\"data:video/mp4;base64,{b64}\"></video>",
        small.width()
    ))))
}

#[cfg(not(feature = "ffmpeg"))]
fn long_clip(_small: &Video) -> vidtune_runtime::Result<Result<Output, String>> {
    Ok(Err(" (long clip, no FFmpeg in this build: contact sheet)".to_string()))
}

/// A clip's display: GIF, else MP4 in `<video>`, else a contact sheet (with the reason in the text).
pub fn video_outputs(video: &Video, summary: String) -> vidtune_runtime::Result<Vec<Output>> {
    let small = display_size(video)?;
    let note = if video.len() <= GIF_MAX_FRAMES {
        let gif = small.to_gif()?;
        if gif.len() <= MAX_BYTES {
            return Ok(vec![Output::binary("image/gif", gif), Output::text(summary)]);
        }
        format!(" (GIF of {} MB over the {} MB cap: contact sheet)", gif.len() >> 20, MAX_BYTES >> 20)
    } else {
        match long_clip(&small)? {
            Ok(html) => return Ok(vec![html, Output::text(summary)]),
            Err(note) => note,
        }
    };
    // At most 16 frames, evenly spaced.
    let n = small.len() as i64;
    let picks: Vec<i64> = (0..n.min(16)).map(|i| i * n / n.min(16)).collect();
    let index = tch::Tensor::from_slice(&picks);
    let sheet = Video::new(small.frames().index_select(0, &index), small.fps())?.contact_sheet()?;
    Ok(vec![png(&sheet)?, Output::text(format!("{summary}{note}"))])
}

impl Show for Video {
    fn outputs(&self) -> Vec<Output> {
        video_outputs(self, self.to_string()).unwrap_or_else(|e| error("Video", e))
    }
}

impl Show for Image {
    fn outputs(&self) -> Vec<Output> {
        match png(self) {
            Ok(p) => vec![p, Output::text(self.to_string())],
            Err(e) => error("Image", e),
        }
    }
}

impl Show for Masks {
    /// Tinted over their clip when they know it, else white on black.
    fn outputs(&self) -> Vec<Output> {
        let shown = match self.overlay_source() {
            Some(v) => v,
            None => self.as_video(8.0),
        };
        shown.and_then(|v| video_outputs(&v, self.to_string())).unwrap_or_else(|e| error("Masks", e))
    }
}

impl Show for Comparison {
    fn outputs(&self) -> Vec<Output> {
        vec![Output::html(self.to_html()), Output::text(self.to_pretty())]
    }
}

impl Show for Score {
    fn outputs(&self) -> Vec<Output> {
        let mut t = Comparison::default();
        t.rows.push(("".into(), self.clone()));
        t.outputs()
    }
}

impl Show for vidtune_runtime::StableDiffusion {
    fn outputs(&self) -> Vec<Output> {
        vec![Output::text(self.summary())]
    }
}

impl Show for vidtune_runtime::video::VideoModel {
    fn outputs(&self) -> Vec<Output> {
        vec![Output::text(self.summary())]
    }
}

impl Show for vidtune_runtime::pipelines::invert::Latents {
    fn outputs(&self) -> Vec<Output> {
        vec![Output::text(self.to_string())]
    }
}

impl Show for vidtune_runtime::models::clip::ClipModel {
    fn outputs(&self) -> Vec<Output> {
        vec![Output::text(self.summary())]
    }
}

impl Show for tch::Tensor {
    fn outputs(&self) -> Vec<Output> {
        vec![Output::text(tensor_summary(self))]
    }
}

impl Show for Dynamic {
    /// Script values: clips, images, masks and tables richly; everything else as the REPL prints it;
    /// nothing for `()`.
    fn outputs(&self) -> Vec<Output> {
        if self.is_unit() {
            return vec![];
        }
        if let Some(v) = self.read_lock::<Video>() {
            return v.outputs();
        }
        if let Some(i) = self.read_lock::<Image>() {
            return i.outputs();
        }
        if let Some(m) = self.read_lock::<Masks>() {
            return m.outputs();
        }
        if let Some(t) = self.read_lock::<Table>() {
            return vec![Output::html(t.table.to_html()), Output::text(t.table.to_pretty())];
        }
        if let Some(t) = self.read_lock::<ScriptTensor>() {
            return t.0.outputs();
        }
        if let Some(l) = self.read_lock::<ScriptLatents>() {
            return vec![Output::text(l.0.to_string())];
        }
        vec![Output::text(describe(self))]
    }
}

impl<T: Show, E: Show> Show for Result<T, E> {
    fn outputs(&self) -> Vec<Output> {
        match self {
            Ok(v) => v.outputs(),
            Err(e) => e.outputs(),
        }
    }
}

impl Show for vidtune_runtime::Error {
    fn outputs(&self) -> Vec<Output> {
        vec![Output::text(format!("error: {self}"))]
    }
}

impl<T: Show> Show for Vec<T> {
    /// Each element's text summary (one rich output per cell is all a notebook shows).
    fn outputs(&self) -> Vec<Output> {
        let lines: Vec<String> = self
            .iter()
            .map(|v| {
                v.outputs()
                    .into_iter()
                    .find_map(|o| match (o.mime, o.data) {
                        ("text/plain", Payload::Text(t)) => Some(t),
                        _ => None,
                    })
                    .unwrap_or_default()
            })
            .collect();
        vec![Output::text(lines.join("\n"))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Session;

    fn mimes(outputs: &[Output]) -> Vec<&'static str> {
        outputs.iter().map(|o| o.mime).collect()
    }

    #[test]
    fn the_protocol_wraps_text_and_base64() {
        let p = protocol(&[Output::text("hi"), Output::binary("image/png", vec![0, 1, 2])]);
        assert_eq!(p, "EVCXR_BEGIN_CONTENT text/plain\nhi\nEVCXR_END_CONTENT\nEVCXR_BEGIN_CONTENT image/png\nAAEC\nEVCXR_END_CONTENT\n");
    }

    #[test]
    fn a_workflow_keeps_its_state_across_evals_and_errors_and_its_values_display() {
        let mut s = Session::new();
        // Parameters from Rust values, as notebooks give them.
        s.set_param("name", "a");
        s.set_param("other", String::from("b"));
        s.set_param("n", 3_i64);
        assert_eq!(s.eval("name + other + n").unwrap().into_string().unwrap(), "ab3");
        let masks = s
            .eval(
                r#"let c = synthetic_clip(#{kind: "square", frames: 6, size: 64, seed: 2});
                   let b = c.masks.bbox()[0];
                   segment(c.video, [click((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)])"#,
            )
            .unwrap();
        assert_eq!(mimes(&masks.outputs()), ["image/gif", "text/plain"]);
        // A second evaluation sees the first one's variables, also after a failing one.
        let err = s.eval("load_video(\"missing.mp4\")").unwrap_err();
        let shown = err.outputs();
        assert_eq!(mimes(&shown), ["text/html", "text/plain"]);
        assert!(
            matches!(&shown[1].data, Payload::Text(t) if t.contains("missing.mp4") && t.contains("keeps its variables"))
        );
        let len = s.eval("c.video.len() + b.len()").unwrap();
        assert_eq!(len.as_int().unwrap(), 10);
        assert_eq!(len.outputs(), [Output::text("10")]);
        assert_eq!(mimes(&s.eval("c.video").unwrap().outputs()), ["image/gif", "text/plain"]);
        assert_eq!(mimes(&s.eval("c.video.frame(0)").unwrap().outputs()), ["image/png", "text/plain"]);
        assert!(s.eval("let unit = 1;").unwrap().outputs().is_empty());
        let table = s
            .eval(r#"compare([#{name: "a", video: c.video, prompt: c.caption}], #{clip: load_clip("random:tiny")})"#)
            .unwrap()
            .outputs();
        assert!(matches!(&table[0], Output { mime: "text/html", data: Payload::Text(h) } if h.contains("<table")));
        let gif = match &masks.outputs()[0].data {
            Payload::Binary(b) => b.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(&gif[..6], b"GIF89a");
    }

    #[test]
    fn long_clips_play_as_video_and_big_frames_are_scaled_down() {
        let long = synthetic_clip_for_test(GIF_MAX_FRAMES + 1, 48);
        let shown = long.outputs();
        #[cfg(feature = "ffmpeg")]
        assert!(
            matches!(&shown[0], Output { mime: "text/html", data: Payload::Text(h) } if h.starts_with("<video") && h.contains("data:video/mp4;base64,"))
        );
        #[cfg(not(feature = "ffmpeg"))]
        assert_eq!(shown[0].mime, "image/png");
        let big = synthetic_clip_for_test(2, 1024);
        assert_eq!(display_size(&big).unwrap().width(), DISPLAY_MAX_SIDE);
    }

    fn synthetic_clip_for_test(frames: usize, size: i64) -> Video {
        let spec =
            vidtune_runtime::synthetic::SyntheticSpec { frames, width: size, height: size, ..Default::default() };
        vidtune_runtime::synthetic::synthetic_clip(&spec).unwrap().video
    }
}
