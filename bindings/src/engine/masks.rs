//! Masks in scripts: the `Masks` type and its methods (morphology, set operations, boxes, IoU,
//! latent-resolution resizing, overlays, save), `load_masks` and `mask_sequence`. Segmenting a clip into
//! masks is `segment.rs`'s.

use super::state::Host;
use crate::docs::{FnDoc, OptDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use crate::values::describe;
use rhai::{Array, Dynamic, Map};
use std::rc::Rc;
use vidtune_runtime::{Masks, Video};

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

/// `masks.save`'s options.
pub const MASKS_SAVE_OPTIONS: &[OptDoc] = &[OptDoc {
    opt: None,
    name: "overwrite",
    takes: "true | false (default)",
    doc: "write into a folder that holds files vidtune did not write (they are kept); without it such a folder is \
          refused. A folder of masks vidtune wrote is replaced whole",
}];

fn load_masks(host: &Host, path: &str, opts: Opts) -> RhaiResult<Masks> {
    let o = super::media::load_options(&opts)?;
    let path = host.input_path(path);
    host.record_read(&path);
    rt(Masks::load(&path, &o))
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
    engine.register_fn("composite", |m: &mut Masks, inside: Video, outside: Video| rt(m.composite(&inside, &outside)));
    engine.register_fn("dilate", |m: &mut Masks, r: i64| rt(m.dilate(r)));
    engine.register_fn("erode", |m: &mut Masks, r: i64| rt(m.erode(r)));
    engine.register_fn("union", |m: &mut Masks, o: Masks| rt(m.union(&o)));
    engine.register_fn("intersect", |m: &mut Masks, o: Masks| rt(m.intersect(&o)));
    engine.register_fn("invert", |m: &mut Masks| rt(m.invert()));
    engine.register_fn("boxes", |m: &mut Masks| rt(m.boxes()));
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
    engine.register_fn("color_masks", |v: Video, color: &str| rt(vidtune_runtime::toy::probe::color_masks(&v, color)));
    engine.register_fn("color_masks", |img: vidtune_runtime::Image, color: &str| {
        let v = rt(Video::new(img.tensor().unsqueeze(0), 8.0))?;
        rt(vidtune_runtime::toy::probe::color_masks(&v, color))
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
        let out = rt(m.save(&h.output_path(path)))?;
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
        let out = rt(m.save_with(&h.output_path(path), &o))?;
        h.record_write(&out);
        Ok(out.display().to_string())
    });
    engine.register_fn("to_string", |m: &mut Masks| m.to_string());
    engine.register_fn("to_debug", |m: &mut Masks| m.to_string());
}

pub const DOCS: &[FnDoc] = &[
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
        name: "Masks.composite",
        signatures: &["masks.composite(inside: Video, outside: Video) -> Video"],
        summary: "inside's pixels where the masks are set, outside's elsewhere (soft masks blend): the \
                  source's subject kept in a background edit, an edit pasted into its clip.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip();
let swapped = c.masks.composite(c.video, synthetic_clip(#{seed: 2}).video);"#,
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
        name: "Masks.boxes",
        signatures: &["masks.boxes() -> Masks"],
        summary: "Each frame's mask filled over its box: room for any shape of the subject's size (what an object \
                  edit redraws); an empty frame stays empty.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let room = synthetic_clip(#{kind: "triangle"}).masks.boxes();"#,
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
        name: "color_masks",
        signatures: &[
            "color_masks(video: Video, colour: string) -> Masks",
            "color_masks(image: Image, colour: string) -> Masks",
        ],
        summary: "The pixels of a toy-world video that have one of its eight named colours (nearest to it and within \
                  100 RGB units): where a generated subject of that colour is, found without looking where it \
                  should be.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip(#{color: "red", background_color: "blue"});
print(color_masks(c.video, "red").iou(c.masks));"#,
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
