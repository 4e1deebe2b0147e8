//! Media functions: load and save videos and images, synthetic clips, and the methods of `Video` and
//! `Image`.

use super::state::Host;
use crate::docs::{FnDoc, OptDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use rhai::{Dynamic, Map};
use std::path::Path;
use std::rc::Rc;
use vidtune_runtime::media::SaveOptions;
use vidtune_runtime::synthetic::{self, Motion, Shape, SyntheticSpec, Texture};
use vidtune_runtime::{Fit, Image, LoadOptions, Video};

/// `load_video`'s (and `load_masks`') options.
pub const LOAD_VIDEO_OPTIONS: &[OptDoc] = &[
    OptDoc { opt: None, name: "frames", takes: "integer", doc: "frames to keep (default: all that remain)" },
    OptDoc { opt: None, name: "start", takes: "integer (default 0)", doc: "first source frame, 0-based" },
    OptDoc { opt: None, name: "every", takes: "integer (default 1)", doc: "keep one source frame in `every`" },
    OptDoc { opt: None, name: "size", takes: "integer | [w, h]", doc: "output size; models need multiples of 8" },
    OptDoc {
        opt: None,
        name: "fit",
        takes: "\"resize\" (default) | \"crop\" | \"pad\"",
        doc: "how frames reach `size` (resize as Tune-A-Video)",
    },
];

/// `save_video`'s options.
pub const SAVE_VIDEO_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "sidecar",
        takes: "map | true",
        doc: "a JSON file beside the video (out/edit.mp4 → out/edit.json) with this map (scores, notes) and the run \
              record: the script and its parameters, every pipeline call with its options after defaults, seeds, \
              models by content hash and timings, the versions. `vidtune run --from out/edit.json` reruns it",
    },
    OptDoc {
        opt: None,
        name: "overwrite",
        takes: "true | false (default)",
        doc:
            "true: write a folder of frames into a folder that holds files vidtune did not write (they are kept), and \
              replace such a sidecar; without it those are refused (vidtune never deletes a file it did not write). A \
              folder vidtune wrote itself is always replaced whole",
    },
];

/// `synthetic_clip`'s options.
pub const SYNTHETIC_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "kind",
        takes: "\"random\" (default) | \"counter\" | \"circle\" | \"square\" | \"triangle\" | \"diamond\"",
        doc: "counter draws the frame index as binary blocks",
    },
    OptDoc { opt: None, name: "frames", takes: "integer (default 8)", doc: "" },
    OptDoc { opt: None, name: "size", takes: "integer | [w, h] (default 64)", doc: "" },
    OptDoc { opt: None, name: "seed", takes: "integer (default 0)", doc: "" },
    OptDoc {
        opt: None,
        name: "color",
        takes: "\"red\" | \"green\" | \"blue\" | \"yellow\" | \"purple\" | \"orange\" | \"white\" | \"pink\"",
        doc: "the subject's",
    },
    OptDoc { opt: None, name: "background_color", takes: "a colour, as color", doc: "" },
    OptDoc { opt: None, name: "background", takes: "\"plain\" | \"stripes\" | \"gradient\" | \"noise\"", doc: "" },
    OptDoc { opt: None, name: "motion", takes: "\"right\" | \"left\" | \"bounce\" | \"circle\" | \"grow\"", doc: "" },
    OptDoc {
        opt: None,
        name: "occluder",
        takes: "true | false (default)",
        doc: "a grey bar passes in front (the masks keep the visible part)",
    },
    OptDoc { opt: None, name: "fps", takes: "number (default 8)", doc: "" },
];

pub(crate) fn load_options(opts: &Opts) -> RhaiResult<LoadOptions> {
    let fit = match opts.string("fit")? {
        Some(name) => Fit::parse(&name).map_err(|e| script_error(format!("load_video: {e}")))?,
        None => Fit::Resize,
    };
    let size = opts.size("size")?;
    if opts.get("fit").is_some() && size.is_none() {
        return Err(script_error(format!(
            "{}: option \"fit\" would be ignored without \"size\" (it says how frames reach that size)",
            opts.func()
        )));
    }
    if let Some((w, h)) = size {
        if w <= 0 || h <= 0 {
            return Err(script_error(format!("load_video: size must be positive, got {w}x{h}")));
        }
        if w % 8 != 0 || h % 8 != 0 {
            eprintln!("warning: size {w}x{h} is not a multiple of 8; the models will refuse these frames");
        }
    }
    let every = opts.count("every")?.unwrap_or(1);
    let frames = opts.count("frames")?;
    let o = LoadOptions { frames, start: opts.count("start")?.unwrap_or(0), every, size, fit };
    rt(o.validate())?;
    Ok(o)
}

fn load_video(host: &Host, path: &str, opts: Opts) -> RhaiResult<Video> {
    let o = load_options(&opts)?;
    let path = host.input_path(path);
    host.record_read(&path);
    rt(vidtune_runtime::load_video(&path, &o))
}

fn save_video(host: &Host, video: &Video, path: &str) -> RhaiResult<String> {
    let path = host.output_path(path);
    save_video_opts(host, video, &path, &SaveOptions { metadata: host.file_metadata(), ..Default::default() })
}

fn save_video_opts(host: &Host, video: &Video, path: &Path, o: &SaveOptions) -> RhaiResult<String> {
    let out = rt(vidtune_runtime::media::save_video_with(video, path, o))?;
    host.record_write(&out);
    Ok(out.display().to_string())
}

/// Saves a video and, with `sidecar`, a JSON file beside it (`clip.mp4` → `clip.json`) holding the video's
/// facts and the given map (scores, prompts, settings). `overwrite` writes a folder of frames into a folder
/// that holds other files (keeping them) and replaces a JSON file there that vidtune did not write.
fn save_video_with(host: &Host, video: &Video, path: &str, opts: Opts) -> RhaiResult<String> {
    let o = SaveOptions { overwrite: opts.bool("overwrite")?.unwrap_or(false), metadata: host.file_metadata() };
    let path = host.output_path(path);
    let sidecar_path = opts.get("sidecar").map(|_| {
        let p = path.as_path();
        if p.extension().is_some() {
            p.with_extension("json")
        } else {
            p.with_file_name(format!("{}.json", p.file_name().unwrap_or_default().to_string_lossy()))
        }
    });
    use vidtune_runtime::fsutil::{check_output, with_overwrite, write_output_bytes};
    if let Some(sidecar) = &sidecar_path {
        with_overwrite(o.overwrite, || check_output(sidecar))
            .map_err(|e| script_error(format!("save_video: the sidecar: {e}")))?;
    }
    let out = save_video_opts(host, video, &path, &o)?;
    if let (Some(extra), Some(sidecar)) = (opts.get("sidecar"), sidecar_path) {
        let mut json = serde_json::json!({
            "video": {"path": out, "frames": video.len(), "width": video.width(), "height": video.height(), "fps": video.fps()},
            "vidtune_version": vidtune_runtime::VERSION,
        });
        match crate::opts::to_json(extra) {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    json[k] = v;
                }
            }
            serde_json::Value::Bool(_) => {}
            other => json["data"] = other,
        }
        // How to make it again: `vidtune run --from this.json`.
        json["record"] = host.run_record();
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        rt(with_overwrite(o.overwrite, || write_output_bytes(&sidecar, text.as_bytes())))?;
        host.record_write(&sidecar);
    }
    Ok(out)
}

fn synthetic(opts: Opts) -> RhaiResult<Map> {
    let mut spec = SyntheticSpec::default();
    match opts.string("kind")?.as_deref() {
        None | Some("random") => {}
        Some("counter") => spec.counter = true,
        Some(name) => {
            spec.shape = Some(Shape::parse(name).map_err(|_| {
                script_error(format!(
                    "synthetic_clip: unknown kind {name:?}; expected \"random\", \"counter\" or a shape: {}",
                    Shape::ALL.iter().map(|s| format!("{:?}", s.name())).collect::<Vec<_>>().join(", ")
                ))
            })?)
        }
    }
    fn named<T>(r: vidtune_runtime::Result<T>) -> RhaiResult<T> {
        r.map_err(|e| script_error(format!("synthetic_clip: {e}")))
    }
    if let Some(m) = opts.string("motion")? {
        spec.motion = Some(named(Motion::parse(&m))?);
    }
    if let Some(b) = opts.string("background")? {
        spec.background = Some(named(Texture::parse(&b))?);
    }
    for (key, slot) in [("color", &mut spec.color), ("background_color", &mut spec.background_color)] {
        if let Some(c) = opts.string(key)? {
            named(synthetic::color_rgb(&c))?;
            *slot = Some(c);
        }
    }
    spec.frames = opts.count("frames")?.unwrap_or(8);
    if let Some((w, h)) = opts.size("size")? {
        (spec.width, spec.height) = (w, h);
    }
    spec.seed = opts.int("seed")?.unwrap_or(0) as u64;
    spec.occluder = opts.bool("occluder")?.unwrap_or(false);
    spec.fps = opts.float("fps")?.unwrap_or(8.0);
    let clip = named(synthetic::synthetic_clip(&spec))?;
    let mut map = Map::new();
    map.insert("video".into(), Dynamic::from(clip.video));
    map.insert("masks".into(), Dynamic::from(clip.masks));
    map.insert("caption".into(), Dynamic::from(clip.caption));
    Ok(map)
}

fn resize(video: &Video, size: Dynamic, fit: &str) -> RhaiResult<Video> {
    let mut m = Map::new();
    m.insert("size".into(), size);
    let (w, h) = Opts::new("resize", m, &["size"])?.size("size")?.unwrap_or((video.width(), video.height()));
    let fit = Fit::parse(fit).map_err(|e| script_error(format!("resize: {e}")))?;
    rt(video.resize(w, h, fit))
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    engine.register_type_with_name::<Video>("Video");
    engine.register_type_with_name::<Image>("Image");

    let h = host.clone();
    engine.register_fn("load_video", move |path: &str| load_video(&h, path, Opts::empty("load_video")));
    let h = host.clone();
    engine.register_fn("load_video", move |path: &str, opts: Map| {
        load_video(&h, path, Opts::declared("load_video", opts, LOAD_VIDEO_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("save_video", move |v: Video, path: &str| save_video(&h, &v, path));
    let h = host.clone();
    engine.register_fn("save_video", move |v: Video, path: &str, opts: Map| {
        save_video_with(&h, &v, path, Opts::declared("save_video", opts, SAVE_VIDEO_OPTIONS)?)
    });
    let h = host.clone();
    engine.register_fn("save", move |v: &mut Video, path: &str| save_video(&h, v, path));

    let h = host.clone();
    engine.register_fn("load_image", move |path: &str| {
        let path = h.input_path(path);
        h.record_read(&path);
        rt(Image::load(&path))
    });
    let h = host.clone();
    let save_image = move |img: &Image, path: &str| -> RhaiResult<String> {
        let path = h.output_path(path);
        rt(img.save_with_text(&path, &h.file_metadata()))?;
        h.record_write(&path);
        Ok(path.display().to_string())
    };
    let s = save_image.clone();
    engine.register_fn("save_image", move |img: Image, path: &str| s(&img, path));
    let s = save_image.clone();
    engine.register_fn("save_image", move |img: Image, path: &str, opts: Map| {
        Opts::saving("save_image", opts, || s(&img, path))
    });
    let s = save_image.clone();
    engine.register_fn("save", move |img: &mut Image, path: &str| s(img, path));
    engine.register_fn("save", move |img: &mut Image, path: &str, opts: Map| {
        Opts::saving("Image.save", opts, || save_image(img, path))
    });

    engine.register_fn("synthetic_clip", || synthetic(Opts::empty("synthetic_clip")));
    engine.register_fn("synthetic_clip", |opts: Map| {
        synthetic(Opts::declared("synthetic_clip", opts, SYNTHETIC_OPTIONS)?)
    });

    // Video
    engine.register_fn("len", |v: &mut Video| v.len() as i64);
    engine.engine().register_get("width", |v: &mut Video| v.width());
    engine.engine().register_get("height", |v: &mut Video| v.height());
    engine.engine().register_get("fps", |v: &mut Video| v.fps());
    engine.register_fn("width", |v: &mut Video| v.width());
    engine.register_fn("height", |v: &mut Video| v.height());
    engine.register_fn("fps", |v: &mut Video| v.fps());
    engine.register_fn("frame", |v: &mut Video, i: i64| rt(v.frame(i)));
    engine.register_fn("slice", |v: &mut Video, a: i64, b: i64| rt(v.slice(a, b)));
    engine.register_fn("grid", |v: &mut Video| rt(v.contact_sheet()));
    engine.register_fn("grid", |v: &mut Video, cols: i64| rt(v.grid(cols)));
    engine.register_fn("resize", |v: &mut Video, size: Dynamic| resize(v, size, "resize"));
    engine.register_fn("resize", |v: &mut Video, size: Dynamic, fit: &str| resize(v, size, fit));
    engine.register_fn("with_fps", |v: &mut Video, fps: f64| rt(v.with_fps(fps)));
    engine.register_fn("to_string", |v: &mut Video| v.to_string());
    engine.register_fn("to_debug", |v: &mut Video| v.to_string());

    // Image
    engine.engine().register_get("width", |i: &mut Image| i.width());
    engine.engine().register_get("height", |i: &mut Image| i.height());
    engine.register_fn("width", |i: &mut Image| i.width());
    engine.register_fn("height", |i: &mut Image| i.height());
    engine.register_fn("to_string", |i: &mut Image| i.to_string());
    engine.register_fn("to_debug", |i: &mut Image| i.to_string());
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "load_video",
        signatures: &["load_video(path: string) -> Video", "load_video(path: string, options: map) -> Video"],
        summary: "Loads a clip: mp4 / mov / webm / mkv (FFmpeg), an animated GIF, or a directory of png / jpg frames \
                  (natural order). Frames are sampled exactly: source frame start, start + every, … The frame \
                  rate becomes the source's divided by `every`, so the clip keeps its real-time speed.",
        details: "",
        options: LOAD_VIDEO_OPTIONS,
        example: r#"let clip = load_video("car-turn.mp4", #{frames: 8, every: 2, size: 512});
print(clip);   // Video(8 frames, 512x512, 5 fps)"#,
    },
    FnDoc {
        name: "save_video",
        signatures: &[
            "save_video(video: Video, path: string) -> string",
            "save_video(video: Video, path: string, options: map) -> string",
            "video.save(path: string) -> string",
        ],
        summary: "Saves a clip by extension: .mp4 (H.264, else MPEG-4), .mov, .mkv, .webm, .gif, or a path without \
                  extension as a directory of numbered PNGs. Written atomically; returns the path.",
        details: "",
        options: SAVE_VIDEO_OPTIONS,
        example: r#"let c = synthetic_clip(#{frames: 8, size: 64});
save_video(c.video, "out/clip.mp4");
c.video.save("out/clip.gif");"#,
    },
    FnDoc {
        name: "load_image",
        signatures: &["load_image(path: string) -> Image"],
        summary: "Loads a PNG, JPEG or GIF (first frame) as an RGB image.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let img = load_image("sheet.png");
print(img.width);"#,
    },
    FnDoc {
        name: "save_image",
        signatures: &[
            "save_image(image: Image, path: string) -> string",
            "save_image(image: Image, path: string, options: map) -> string",
            "image.save(path: string) -> string",
        ],
        summary: "Saves an image as .png or .jpg, atomically; returns the path.",
        details: "",
        options: crate::docs::SAVE_FILE_OPTIONS,
        example: r#"let c = synthetic_clip();
save_image(c.video.grid(4), "sheet.png");"#,
    },
    FnDoc {
        name: "synthetic_clip",
        signatures: &["synthetic_clip() -> map", "synthetic_clip(options: map) -> map"],
        summary: "Makes a deterministic clip of a coloured shape moving over a textured background. Returns \
                  #{video, masks, caption}: the clip, its exact ground-truth masks and a caption.",
        details: "",
        options: SYNTHETIC_OPTIONS,
        example: r#"let c = synthetic_clip(#{kind: "circle", frames: 16, size: 128, motion: "bounce", seed: 1});
print(c.caption);
preview(c.video);"#,
    },
    FnDoc {
        name: "Video.len",
        signatures: &["video.len() -> int"],
        summary: "Number of frames.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let v = synthetic_clip(#{frames: 12}).video;
print(v.len());   // 12"#,
    },
    FnDoc {
        name: "Video.width",
        signatures: &["video.width -> int", "video.width() -> int"],
        summary: "Frame width in pixels.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().video.width);"#,
    },
    FnDoc {
        name: "Video.height",
        signatures: &["video.height -> int", "video.height() -> int"],
        summary: "Frame height in pixels.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().video.height);"#,
    },
    FnDoc {
        name: "Video.fps",
        signatures: &["video.fps -> float", "video.fps() -> float"],
        summary: "Frames per second used when the clip is played or saved.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip(#{fps: 12}).video.fps);"#,
    },
    FnDoc {
        name: "Video.frame",
        signatures: &["video.frame(i: int) -> Image"],
        summary: "Frame i (0-based) as an image.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let first = synthetic_clip().video.frame(0);
first.save("first.png");"#,
    },
    FnDoc {
        name: "Video.slice",
        signatures: &["video.slice(a: int, b: int) -> Video"],
        summary: "Frames a..b (b excluded), at the same frame rate.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let v = synthetic_clip(#{frames: 16}).video;
let head = v.slice(0, 8);"#,
    },
    FnDoc {
        name: "Video.grid",
        signatures: &["video.grid() -> Image", "video.grid(cols: int) -> Image"],
        summary: "A contact sheet of every frame, in `cols` columns (about square by default).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let v = synthetic_clip(#{frames: 8}).video;
v.grid(4).save("sheet.png");"#,
    },
    FnDoc {
        name: "Video.resize",
        signatures: &["video.resize(size: int | [w, h]) -> Video", "video.resize(size, fit: string) -> Video"],
        summary: "Brings every frame to a size; fit is \"resize\" (stretch, default), \"crop\" or \"pad\".",
        details: "",
        options: NO_OPTIONS,
        example: r#"let v = synthetic_clip(#{size: [96, 64]}).video;
let square = v.resize(64, "crop");"#,
    },
    FnDoc {
        name: "Video.with_fps",
        signatures: &["video.with_fps(fps: float) -> Video"],
        summary: "The same frames at another frame rate.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let slow = synthetic_clip().video.with_fps(4.0);"#,
    },
    FnDoc {
        name: "Video.save",
        signatures: &["video.save(path: string) -> string"],
        summary: "Saves the clip by extension, as save_video does; returns the path.",
        details: "",
        options: NO_OPTIONS,
        example: r#"synthetic_clip().video.save("clip.gif");"#,
    },
    FnDoc {
        name: "Image.save",
        signatures: &["image.save(path: string) -> string", "image.save(path: string, options: map) -> string"],
        summary: "Saves the image as .png or .jpg, as save_image does; returns the path.",
        details: "",
        options: crate::docs::SAVE_FILE_OPTIONS,
        example: r#"synthetic_clip().video.grid(4).save("sheet.png");"#,
    },
    FnDoc {
        name: "Image.width",
        signatures: &["image.width -> int", "image.width() -> int"],
        summary: "Image width in pixels.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().video.frame(0).width);"#,
    },
    FnDoc {
        name: "Image.height",
        signatures: &["image.height -> int", "image.height() -> int"],
        summary: "Image height in pixels.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(synthetic_clip().video.frame(0).height);"#,
    },
];
