//! Segmentation with clicks in scripts: `click` / `box`, `load_sam`, `segment`, `load_masks`, and the
//! methods of `Masks` (morphology, set operations, boxes, IoU, latent-resolution resizing, overlays, save).

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
use vidtune_runtime::{Masks, Video};

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

/// `mask_sequence`'s options.
pub const MASK_SEQUENCE_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "shape",
        takes: "\"circle\" (default) | \"square\" | \"triangle\" | \"diamond\"",
        doc: "",
    },
    OptDoc {
        opt: None,
        name: "motion",
        takes: "\"right\" (default) | \"left\" | \"bounce\" | \"circle\" | \"grow\"",
        doc: "",
    },
    OptDoc { opt: None, name: "frames", takes: "integer (default 8)", doc: "" },
    OptDoc { opt: None, name: "size", takes: "integer | [w, h] (default 64)", doc: "" },
    OptDoc { opt: None, name: "seed", takes: "integer (default 0)", doc: "where the motion starts" },
];

fn mask_sequence(opts: Opts) -> RhaiResult<Masks> {
    use vidtune_runtime::synthetic::{self as syn, MaskSequenceSpec, Motion, Shape};
    fn named<T>(r: vidtune_runtime::Result<T>) -> RhaiResult<T> {
        r.map_err(|e| script_error(format!("mask_sequence: {e}")))
    }
    let shape = match opts.string("shape")? {
        Some(s) => named(Shape::parse(&s))?,
        None => Shape::Circle,
    };
    let motion = match opts.string("motion")? {
        Some(m) => named(Motion::parse(&m))?,
        None => Motion::Right,
    };
    let (width, height) = opts.size("size")?.unwrap_or((64, 64));
    let spec = MaskSequenceSpec {
        shape,
        motion,
        frames: opts.count("frames")?.unwrap_or(8),
        width,
        height,
        seed: opts.int("seed")?.unwrap_or(0) as u64,
    };
    named(syn::mask_sequence(&spec))
}

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

/// `masks.save`'s options.
pub const MASKS_SAVE_OPTIONS: &[OptDoc] = &[OptDoc {
    opt: None,
    name: "overwrite",
    takes: "true | false (default)",
    doc: "write into a folder that holds files vidtune did not write (they are kept); without it such a folder is \
          refused. A folder of masks vidtune wrote is replaced whole",
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

fn load_masks(host: &Host, path: &str, opts: Opts) -> RhaiResult<Masks> {
    let o = super::media::load_options(&opts)?;
    host.record_read(Path::new(path));
    rt(Masks::load(Path::new(path), &o))
}

fn size_arg(func: &str, size: Dynamic) -> RhaiResult<(i64, i64)> {
    let mut m = Map::new();
    m.insert("size".into(), size);
    Opts::new(func, m, &["size"])?.size("size")?.ok_or_else(|| script_error(format!("{func}: a size is needed")))
}

fn floats(v: Vec<f64>) -> Array {
    v.into_iter().map(Dynamic::from).collect()
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    engine.register_type_with_name::<Masks>("Masks");
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

    let h = host.clone();
    engine.register_fn("load_masks", move |path: &str| load_masks(&h, path, Opts::empty("load_masks")));
    let h = host.clone();
    engine.register_fn("load_masks", move |path: &str, opts: Map| {
        load_masks(&h, path, Opts::declared("load_masks", opts, super::media::LOAD_VIDEO_OPTIONS)?)
    });

    // Masks
    engine.register_fn("len", |m: &mut Masks| m.len() as i64);
    engine.register_fn("slice", |m: &mut Masks, a: i64, b: i64| {
        let n = m.len() as i64;
        if a < 0 || b > n || a >= b {
            return Err(crate::opts::script_error(format!(
                "slice({a}, {b}) is not a non-empty range inside the masks' {n} frames (0 <= a < b <= {n})"
            )));
        }
        rt(m.slice_frames(a, b - a))
    });
    engine.engine().register_get("width", |m: &mut Masks| m.width());
    engine.engine().register_get("height", |m: &mut Masks| m.height());
    engine.register_fn("width", |m: &mut Masks| m.width());
    engine.register_fn("height", |m: &mut Masks| m.height());
    engine.register_fn("area", |m: &mut Masks| floats(m.area()));
    engine.register_fn("overlay", |m: &mut Masks, v: Video| rt(m.overlay(&v)));
    engine.register_fn("overlay", |m: &mut Masks| match m.overlay_source() {
        Some(r) => rt(r),
        None => Err(script_error(
            "overlay: these masks do not know their clip (loaded or resized); use masks.overlay(video)",
        )),
    });
    engine.register_fn("dilate", |m: &mut Masks, r: i64| rt(m.dilate(r)));
    engine.register_fn("erode", |m: &mut Masks, r: i64| rt(m.erode(r)));
    engine.register_fn("union", |m: &mut Masks, o: Masks| rt(m.union(&o)));
    engine.register_fn("intersect", |m: &mut Masks, o: Masks| rt(m.intersect(&o)));
    engine.register_fn("invert", |m: &mut Masks| rt(m.invert()));
    engine.register_fn("bbox", |m: &mut Masks| -> RhaiResult<Array> {
        Ok(rt(m.bboxes())?
            .into_iter()
            .map(|b| match b {
                Some(b) => Dynamic::from(b.iter().map(|&v| Dynamic::from(v)).collect::<Array>()),
                None => Dynamic::UNIT,
            })
            .collect())
    });
    engine.register_fn("iou", |m: &mut Masks, o: Masks| rt(m.iou(&o)).map(|(mean, _)| mean));
    engine.register_fn("ious", |m: &mut Masks, o: Masks| rt(m.iou(&o)).map(|(_, per)| floats(per)));
    engine.register_fn("resize", |m: &mut Masks, size: Dynamic| {
        let (w, h) = size_arg("resize", size)?;
        rt(m.resize(w, h))
    });
    engine.register_fn("shift", |m: &mut Masks, dx: i64, dy: i64| rt(m.shift(dx, dy)));
    engine.register_fn("scale", |m: &mut Masks, s: Dynamic| {
        let s = s
            .as_float()
            .or_else(|_| s.as_int().map(|i| i as f64))
            .map_err(|_| script_error(format!("Masks.scale: the factor must be a number, got {}", describe(&s))))?;
        rt(m.scale(s))
    });
    engine.register_fn("mask_sequence", |opts: Map| {
        mask_sequence(Opts::declared("mask_sequence", opts, MASK_SEQUENCE_OPTIONS)?)
    });
    engine.register_fn("confidence", |m: &mut Masks| {
        m.provenance.as_ref().map(|p| floats(p.confidence.clone())).unwrap_or_default()
    });
    engine.register_fn("flagged", |m: &mut Masks| {
        m.provenance
            .as_ref()
            .map(|p| p.flagged.iter().map(|&f| Dynamic::from(f as i64)).collect::<Array>())
            .unwrap_or_default()
    });
    let h = host.clone();
    engine.register_fn("save", move |m: &mut Masks, path: &str| -> RhaiResult<String> {
        let out = rt(m.save(Path::new(path)))?;
        h.record_write(&out);
        Ok(out.display().to_string())
    });
    let h = host.clone();
    engine.register_fn("save", move |m: &mut Masks, path: &str, opts: Map| -> RhaiResult<String> {
        let opts = Opts::declared("Masks.save", opts, MASKS_SAVE_OPTIONS)?;
        let o = vidtune_runtime::media::SaveOptions {
            overwrite: opts.bool("overwrite")?.unwrap_or(false),
            ..Default::default()
        };
        let out = rt(m.save_with(Path::new(path), &o))?;
        h.record_write(&out);
        Ok(out.display().to_string())
    });
    engine.register_fn("to_string", |m: &mut Masks| m.to_string());
    engine.register_fn("to_debug", |m: &mut Masks| m.to_string());
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
        signatures: &["segment(video: Video, clicks) -> Masks", "segment(video: Video, clicks, options: map) -> Masks"],
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
    FnDoc {
        name: "load_masks",
        signatures: &["load_masks(path: string) -> Masks", "load_masks(path: string, options: map) -> Masks"],
        summary: "Loads masks drawn elsewhere: a directory of PNGs (natural order) or a video; a pixel is masked \
                  where the mean of its channels is above mid-grey.",
        details: "",
        options: super::media::LOAD_VIDEO_OPTIONS,
        example: r#"let drawn = load_masks("masks/", #{size: 512});"#,
    },
    FnDoc {
        name: "Masks.len",
        signatures: &["masks.len() -> int"],
        summary: "Number of frames.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().masks.len());"#,
    },
    FnDoc {
        name: "Masks.slice",
        signatures: &["masks.slice(a: int, b: int) -> Masks"],
        summary: "The masks of frames a..b (b excluded), as Video.slice.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let head = synthetic_clip(#{frames: 16}).masks.slice(0, 8);"#,
    },
    FnDoc {
        name: "Masks.width",
        signatures: &["masks.width -> int", "masks.width() -> int"],
        summary: "Mask width in pixels.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().masks.width);"#,
    },
    FnDoc {
        name: "Masks.height",
        signatures: &["masks.height -> int", "masks.height() -> int"],
        summary: "Mask height in pixels.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().masks.height);"#,
    },
    FnDoc {
        name: "Masks.area",
        signatures: &["masks.area() -> array"],
        summary: "Fraction of each frame covered by the mask.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().masks.area());"#,
    },
    FnDoc {
        name: "Masks.overlay",
        signatures: &["masks.overlay() -> Video", "masks.overlay(video: Video) -> Video"],
        summary: "The video with the masked region tinted green and the rest dimmed, to check a mask by eye; \
                  without an argument, on the clip the masks were segmented from.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip(#{occluder: true});
preview(c.masks.overlay(c.video));"#,
    },
    FnDoc {
        name: "Masks.dilate",
        signatures: &["masks.dilate(r: int) -> Masks"],
        summary: "Grows every mask by r pixels (square neighbourhood).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let m = synthetic_clip().masks.dilate(3);"#,
    },
    FnDoc {
        name: "Masks.erode",
        signatures: &["masks.erode(r: int) -> Masks"],
        summary: "Shrinks every mask by r pixels (the frame's edge does not erode).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let m = synthetic_clip().masks.erode(2);"#,
    },
    FnDoc {
        name: "Masks.union",
        signatures: &["masks.union(other: Masks) -> Masks"],
        summary: "Pixels in either mask (same frame count and size).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip();
let m = c.masks.union(c.masks.dilate(1));"#,
    },
    FnDoc {
        name: "Masks.intersect",
        signatures: &["masks.intersect(other: Masks) -> Masks"],
        summary: "Pixels in both masks (same frame count and size).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip();
let ring = c.masks.dilate(3).intersect(c.masks.erode(1).invert());"#,
    },
    FnDoc {
        name: "Masks.invert",
        signatures: &["masks.invert() -> Masks"],
        summary: "Everything but the mask: the background.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let background = synthetic_clip().masks.invert();"#,
    },
    FnDoc {
        name: "Masks.bbox",
        signatures: &["masks.bbox() -> array"],
        summary: "Per frame, the mask's box [x0, y0, x1, y1] in pixel edges, or () for an empty frame.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().masks.bbox()[0]);"#,
    },
    FnDoc {
        name: "Masks.iou",
        signatures: &["masks.iou(other: Masks) -> float"],
        summary: "Intersection over union with other masks, averaged over frames (1 for two empty frames).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip();
print(c.masks.iou(c.masks.dilate(1)));"#,
    },
    FnDoc {
        name: "Masks.ious",
        signatures: &["masks.ious(other: Masks) -> array"],
        summary: "Per-frame intersection over union with other masks.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip();
print(c.masks.ious(c.masks.erode(1)));"#,
    },
    FnDoc {
        name: "mask_sequence",
        signatures: &["mask_sequence(options: map) -> Masks"],
        summary: "A drawn mask motion sequence: a shape moving along a motion, one mask per frame — what dynamic mask \
                  guidance generates a clip from (sample(model, prompt, #{masks: seq, first_frame: img})).",
        details: "",
        options: MASK_SEQUENCE_OPTIONS,
        example: r#"let seq = mask_sequence(#{shape: "circle", motion: "bounce", frames: 8, size: 64});
let right = seq.shift(8, 0).scale(1.5);"#,
    },
    FnDoc {
        name: "Masks.shift",
        signatures: &["masks.shift(dx: int, dy: int) -> Masks"],
        summary: "The masks moved by dx, dy pixels (right, down); what leaves the frame is dropped.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let m = mask_sequence(#{frames: 4}).shift(10, -4);"#,
    },
    FnDoc {
        name: "Masks.scale",
        signatures: &["masks.scale(s: number) -> Masks"],
        summary: "Each frame's mask scaled by s about the centre of its box (a bigger or smaller subject).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let m = mask_sequence(#{frames: 4}).scale(1.5);"#,
    },
    FnDoc {
        name: "Masks.resize",
        signatures: &["masks.resize(size: int | [w, h]) -> Masks"],
        summary: "Resized masks: area-averaged when shrinking (each value is the covered fraction, as the models \
                  take masks at latent resolution, 1/8 of the frame), bilinear when growing.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let latent = synthetic_clip(#{size: 512}).masks.resize(64);"#,
    },
    FnDoc {
        name: "Masks.confidence",
        signatures: &["masks.confidence() -> array"],
        summary: "Per frame, how sure the segmenter was (SAM: its predicted IoU; built-in: overlap with the moved \
                  previous mask); empty for masks not made by segment.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip(#{kind: "square", size: 96});
print(segment(c.video, click(30, 30)).confidence());"#,
    },
    FnDoc {
        name: "Masks.flagged",
        signatures: &["masks.flagged() -> array"],
        summary: "Frames whose sanity check failed (empty mask, area jump): look at them, or click on them too.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip(#{kind: "square", size: 96});
print(segment(c.video, click(30, 30)).flagged());"#,
    },
    FnDoc {
        name: "Masks.save",
        signatures: &["masks.save(path: string) -> string", "masks.save(path: string, options: map) -> string"],
        summary: "Saves the masks as white-on-black frames: a path without extension is a directory of PNGs \
                  (lossless), else a video or GIF by extension. Written atomically; returns the path.",
        details: "",
        options: MASKS_SAVE_OPTIONS,
        example: r#"synthetic_clip().masks.save("out/masks");"#,
    },
];
