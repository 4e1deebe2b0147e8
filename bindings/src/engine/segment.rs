//! Segmentation with clicks in scripts: `click` / `box`, `load_sam`, `segment`. The masks it makes, their
//! methods, `load_masks` and `mask_sequence` are `masks.rs`'s.

use super::state::Host;
use crate::docs::{FnDoc, OptDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use crate::values::{describe, describe_click, ScriptSam};
use rhai::{Array, Dynamic, Map};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use vidtune_runtime::segment::sam::Sam;
use vidtune_runtime::segment::{segment, Builtin, Click, FrameSegmenter, SegmentOptions};
use vidtune_runtime::{Image, Masks, Video};

/// `segment`'s options.
pub const SEGMENT_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "model",
        takes: "Sam | folder | \"builtin\"",
        doc: "a Sam (load_sam), a folder of SAM ONNX files, or the built-in segmenter (default without a model: a \
              click-seeded graph cut on colour models, propagated by the moved previous mask; no weights)",
    },
    OptDoc { opt: None, name: "frame", takes: "integer (default 0)", doc: "the frame of clicks that name none" },
    OptDoc {
        opt: None,
        name: "propagate",
        takes: "true (default) | false",
        doc: "false: only the clicked frames get masks",
    },
];

/// `click`'s options.
pub const CLICK_OPTIONS: &[OptDoc] = &[
    OptDoc { opt: None, name: "frame", takes: "integer", doc: "the frame clicked (default: segment's `frame`, 0)" },
    OptDoc { opt: None, name: "positive", takes: "true (default) | false", doc: "false for a negative click" },
];

/// `box`'s options.
pub const BOX_OPTIONS: &[OptDoc] = &[OptDoc {
    opt: None,
    name: "frame",
    takes: "integer",
    doc: "the frame of the box (default: segment's `frame`, 0)",
}];

/// `load_sam`'s options.
pub const LOAD_SAM_OPTIONS: &[OptDoc] = &[OptDoc {
    opt: None,
    name: "device",
    takes: "\"cpu\" (default) | \"cuda\"",
    doc: "cuda opts into the CUDA execution provider",
}];

fn number(v: &Dynamic, func: &str, what: &str) -> RhaiResult<f64> {
    v.as_float()
        .or_else(|_| v.as_int().map(|i| i as f64))
        .map_err(|_| script_error(format!("{func}: {what} must be a number, got {}", describe(v))))
}

fn click(x: &Dynamic, y: &Dynamic, positive: bool, frame: Option<usize>) -> RhaiResult<Click> {
    Ok(Click::Point { x: number(x, "click", "x")?, y: number(y, "click", "y")?, positive, frame })
}

fn click_with(x: &Dynamic, y: &Dynamic, opts: Opts) -> RhaiResult<Click> {
    click(x, y, opts.bool("positive")?.unwrap_or(true), opts.count("frame")?)
}

fn make_box(c: [&Dynamic; 4], frame: Option<usize>) -> RhaiResult<Click> {
    let [x0, y0, x1, y1] = [("x0", c[0]), ("y0", c[1]), ("x1", c[2]), ("y1", c[3])];
    Ok(Click::Box {
        x0: number(x0.1, "box", x0.0)?,
        y0: number(y0.1, "box", y0.0)?,
        x1: number(x1.1, "box", x1.0)?,
        y1: number(y1.1, "box", y1.0)?,
        frame,
    })
}

/// The clicks of a `segment` call: one click or box, or an array of them.
fn clicks_of(value: &Dynamic) -> RhaiResult<Vec<Click>> {
    if let Some(c) = value.read_lock::<Click>() {
        return Ok(vec![*c]);
    }
    let Some(arr) = value.read_lock::<Array>() else {
        return Err(script_error(format!(
            "segment: clicks must be a click, a box or an array of them ([click(x, y), box(x0, y0, x1, y1)]), got {}",
            describe(value)
        )));
    };
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.read_lock::<Click>().map(|c| *c).ok_or_else(|| {
                script_error(format!(
                    "segment: clicks[{i}] is {}, not a click(x, y) or box(x0, y0, x1, y1)",
                    describe(v)
                ))
            })
        })
        .collect()
}

fn run_segment(host: &Host, video: &Video, clicks: &Dynamic, opts: Opts) -> RhaiResult<Masks> {
    let clicks = clicks_of(clicks)?;
    let options =
        SegmentOptions { frame: opts.count("frame")?.unwrap_or(0), propagate: opts.bool("propagate")?.unwrap_or(true) };
    let masks = match opts.get("model") {
        None => rt(segment(video, &clicks, &mut Builtin::default(), &options))?,
        Some(m) => {
            if let Some(sam) = m.read_lock::<ScriptSam>() {
                let mut s = sam.0.borrow_mut();
                rt(segment(video, &clicks, &mut *s as &mut dyn FrameSegmenter, &options))?
            } else {
                match m.clone().into_string().ok().as_deref() {
                    Some("builtin" | "built-in") => rt(segment(video, &clicks, &mut Builtin::default(), &options))?,
                    Some(dir) => {
                        host.record_read(Path::new(dir));
                        let mut sam = rt(Sam::load(Path::new(dir), false))?;
                        rt(segment(video, &clicks, &mut sam, &options))?
                    }
                    None => {
                        return Err(script_error(format!(
                            "segment: option \"model\" must be a Sam (load_sam(dir)), \"builtin\" or a folder of SAM \
                             ONNX files, got {}",
                            describe(m)
                        )))
                    }
                }
            }
        }
    };
    if let Some(p) = &masks.provenance {
        let flagged = if p.flagged.is_empty() {
            String::new()
        } else {
            format!("; frames to check (sanity check failed): {:?}", p.flagged)
        };
        *host.last_segment.borrow_mut() = Some(format!("{} on {} frames{flagged}", p.method, masks.len()));
    }
    Ok(masks)
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    engine.register_type_with_name::<Click>("Click");
    engine.register_type_with_name::<ScriptSam>("Sam");

    engine.register_fn("click", |x: Dynamic, y: Dynamic| click(&x, &y, true, None));
    engine.register_fn("click", |x: Dynamic, y: Dynamic, positive: bool| click(&x, &y, positive, None));
    engine.register_fn("click", |x: Dynamic, y: Dynamic, opts: Map| {
        click_with(&x, &y, Opts::declared("click", opts, CLICK_OPTIONS)?)
    });
    engine
        .register_fn("box", |x0: Dynamic, y0: Dynamic, x1: Dynamic, y1: Dynamic| make_box([&x0, &y0, &x1, &y1], None));
    engine.register_fn("box", |x0: Dynamic, y0: Dynamic, x1: Dynamic, y1: Dynamic, opts: Map| {
        let frame = Opts::declared("box", opts, BOX_OPTIONS)?.count("frame")?;
        make_box([&x0, &y0, &x1, &y1], frame)
    });
    engine.register_fn("to_string", |c: &mut Click| describe_click(c));
    engine.register_fn("to_debug", |c: &mut Click| describe_click(c));

    let h = host.clone();
    let load_sam = move |dir: &str, opts: Opts| -> RhaiResult<ScriptSam> {
        h.record_read(Path::new(dir));
        let cuda = match opts.string("device")?.as_deref() {
            None | Some("cpu") => false,
            Some("cuda") => true,
            Some(other) => {
                return Err(script_error(format!("load_sam: option \"device\" is \"cpu\" or \"cuda\", not {other:?}")))
            }
        };
        Ok(ScriptSam(Rc::new(RefCell::new(rt(Sam::load(Path::new(dir), cuda))?))))
    };
    let l = load_sam.clone();
    engine.register_fn("load_sam", move |dir: &str| l(dir, Opts::empty("load_sam")));
    engine.register_fn("load_sam", move |dir: &str, opts: Map| {
        load_sam(dir, Opts::declared("load_sam", opts, LOAD_SAM_OPTIONS)?)
    });
    engine.register_fn("to_string", |s: &mut ScriptSam| s.summary());
    engine.register_fn("to_debug", |s: &mut ScriptSam| s.summary());

    let h = host.clone();
    engine
        .register_fn("segment", move |v: Video, clicks: Dynamic| run_segment(&h, &v, &clicks, Opts::empty("segment")));
    let h = host.clone();
    engine.register_fn("segment", move |v: Video, clicks: Dynamic, opts: Map| {
        run_segment(&h, &v, &clicks, Opts::declared("segment", opts, SEGMENT_OPTIONS)?)
    });
    // An image is a clip of one frame (a generated first frame checked against its mask, say).
    let still = |img: &Image| rt(Video::new(img.tensor().unsqueeze(0), 1.0));
    let h = host.clone();
    engine.register_fn("segment", move |img: Image, clicks: Dynamic| {
        run_segment(&h, &still(&img)?, &clicks, Opts::empty("segment"))
    });
    let h = host.clone();
    engine.register_fn("segment", move |img: Image, clicks: Dynamic, opts: Map| {
        run_segment(&h, &still(&img)?, &clicks, Opts::declared("segment", opts, SEGMENT_OPTIONS)?)
    });
}

/// What `:help segment` adds in a session: which segmenter ran last, or which one would run.
pub fn session_note(host: &Host) -> String {
    match host.last_segment.borrow().as_ref() {
        Some(last) => format!("\n  in this session, segment last ran: {last}\n"),
        None => "\n  in this session, segment has not run yet; without a `model` it runs the built-in graph cut\n"
            .to_string(),
    }
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "click",
        signatures: &[
            "click(x: number, y: number) -> Click",
            "click(x: number, y: number, positive: bool) -> Click",
            "click(x: number, y: number, options: map) -> Click",
        ],
        summary: "A click on the subject (positive, the default) or on what is not the subject (false), in the \
                  clip's pixel coordinates (x right, y down, from the top-left corner).",
        details: "",
        options: CLICK_OPTIONS,
        example: r#"let clicks = [click(120, 80), click(40, 90, false), click(130, 70, #{frame: 7})];"#,
    },
    FnDoc {
        name: "box",
        signatures: &[
            "box(x0: number, y0: number, x1: number, y1: number) -> Click",
            "box(x0, y0, x1, y1, options: map) -> Click",
        ],
        summary: "A box around the subject (left, top, right, bottom in pixels); alone or with clicks.",
        details: "",
        options: BOX_OPTIONS,
        example: r#"let b = box(80, 40, 200, 150, #{frame: 0});"#,
    },
    FnDoc {
        name: "load_sam",
        signatures: &["load_sam(dir: string) -> Sam", "load_sam(dir: string, options: map) -> Sam"],
        summary: "Loads Segment Anything from a folder of ONNX files with the official export signature (SAM \
                  ViT-B/L/H, MobileSAM, SAM-HQ, EdgeSAM): an image encoder and a prompt-encoder/mask-decoder. \
                  Each frame's embedding is computed once and memoised.",
        details: "file names looked for, first found wins:
  encoder   encoder.onnx, image_encoder.onnx, vision_encoder.onnx, sam_image_encoder.onnx, *encoder*.onnx
  decoder   decoder.onnx, mask_decoder.onnx, prompt_encoder_mask_decoder.onnx, sam_mask_decoder.onnx,
            *decoder*.onnx
options:
  device    \"cpu\" (default) or \"cuda\": the CUDA execution provider; an error if it cannot be registered",
        options: NO_OPTIONS,
        example: r#"let sam = load_sam("models/sam-vit-b");
let m = segment(load_video("car-turn.mp4", #{frames: 8}), [click(300, 200)], #{model: sam});"#,
    },
    FnDoc {
        name: "segment",
        signatures: &[
            "segment(video: Video, clicks) -> Masks",
            "segment(video: Video, clicks, options: map) -> Masks",
            "segment(image: Image, clicks) -> Masks",
            "segment(image: Image, clicks, options: map) -> Masks",
        ],
        summary: "The subject's mask in every frame, from clicks and boxes on one or more frames: clicked frames \
                  are segmented from their clicks, the others by propagation from the nearest clicked frame \
                  (each frame prompted with the previous mask), with a sanity check per frame. `clicks` is one \
                  click / box or an array of them.",
        details:
            "results: masks.confidence() per frame, masks.flagged() frames that failed the check; `:help segment` \
                  says which segmenter ran last in the session.",
        options: SEGMENT_OPTIONS,
        example: r#"let c = synthetic_clip(#{kind: "circle", frames: 8, size: 96, seed: 2});
let m = segment(c.video, [click(48, 48)]);
print(m.iou(c.masks));
preview(m);"#,
    },
];
