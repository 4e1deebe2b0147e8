//! Host functions: previews, script parameters (`--set`), and help from inside scripts.

use super::state::Host;
use crate::docs::{FnDoc, OptDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use rhai::{Array, Dynamic, Map};
use std::rc::Rc;
use vidtune_runtime::media::compose;
use vidtune_runtime::{Image, Masks, Video};

/// What a value is called in preview labels and file names: `video`, `image`, `masks`.
fn kind_label(value: &Dynamic) -> Option<&'static str> {
    match () {
        _ if value.is::<Masks>() => Some("masks"),
        _ if value.is::<Image>() => Some("image"),
        _ if value.is::<Video>() => Some("video"),
        _ => None,
    }
}

/// The image a value previews as: a contact sheet for videos, the image itself, masks tinted over their
/// clip (white on black when the clip is unknown).
pub fn preview_image(value: &Dynamic) -> RhaiResult<Option<(Image, &'static str)>> {
    let Some(label) = kind_label(value) else { return Ok(None) };
    let image = match viewable(value)? {
        Viewable::Clip(c) => rt(c.contact_sheet())?,
        Viewable::Still(i) => i,
    };
    Ok(Some((image, label)))
}

/// The `labels` option: one string per item (`count` of them).
fn labels(opts: &Opts, count: usize) -> RhaiResult<Option<Vec<String>>> {
    let Some(v) = opts.get("labels") else { return Ok(None) };
    let l: Vec<rhai::ImmutableString> = crate::opts::one_or_many(opts.func(), "option \"labels\"", "a string", v)?;
    if l.len() != count {
        return Err(script_error(format!(
            "{}: {} labels for {count} values; give one label each",
            opts.func(),
            l.len()
        )));
    }
    Ok(Some(l.iter().map(|s| s.to_string()).collect()))
}

/// `#1`, `#2`, … for `count` items.
fn numbered(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("#{i}")).collect()
}

/// The `columns` option of comparison sheets (default 8).
fn columns(opts: &Opts) -> RhaiResult<usize> {
    let columns = opts.int("columns")?.unwrap_or(8);
    if !(1..=64).contains(&columns) {
        return Err(script_error(format!("{}: columns must be between 1 and 64, got {columns}", opts.func())));
    }
    Ok(columns as usize)
}

/// `preview`'s options.
pub const PREVIEW_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "labels",
        takes: "[string, …]",
        doc: "one label per value (default #1, #2, … for several)",
    },
    OptDoc {
        opt: None,
        name: "width",
        takes: "integer (default: the terminal's width)",
        doc: "terminal columns the preview may take",
    },
    OptDoc {
        opt: None,
        name: "columns",
        takes: "integer (default 8)",
        doc: "frames per row of a comparison of clips (spread over the clip)",
    },
    OptDoc {
        opt: None,
        name: "play",
        takes: "true | integer (loops)",
        doc: "animate the clip(s): inline by cycling frames, a GIF in file mode and notebooks",
    },
];

/// A value as something to look at: a clip (masks over their clip) or an image.
enum Viewable {
    Clip(Video),
    Still(Image),
}

fn viewable(value: &Dynamic) -> RhaiResult<Viewable> {
    if let Some(v) = value.read_lock::<Video>() {
        return Ok(Viewable::Clip(v.clone()));
    }
    if let Some(i) = value.read_lock::<Image>() {
        return Ok(Viewable::Still(i.clone()));
    }
    if let Some(m) = value.read_lock::<Masks>() {
        return Ok(Viewable::Clip(match m.overlay_source() {
            Some(overlay) => rt(overlay)?,
            None => rt(m.as_video(8.0))?,
        }));
    }
    Err(script_error(format!(
        "preview: cannot show {}; expected Video, Image or Masks (or several, or an array of them)",
        crate::values::describe(value)
    )))
}

/// The values of a `preview(a, b, …)` call: arrays are spread, a map at the end is the options.
fn preview_args(args: Vec<Dynamic>) -> RhaiResult<(Vec<Dynamic>, Map)> {
    let mut values = vec![];
    let mut opts = Map::new();
    let n = args.len();
    for (i, a) in args.into_iter().enumerate() {
        if i == n - 1 && a.is_map() && n > 1 {
            opts = a.cast::<Map>();
        } else if a.is_array() {
            values.extend(a.cast::<Array>());
        } else {
            values.push(a);
        }
    }
    if values.is_empty() {
        return Err(script_error("preview: nothing to show; give a Video, Image or Masks"));
    }
    Ok((values, opts))
}

/// Previews one value or several side by side: clips as one comparison sheet (a labelled row each, frame
/// numbers above the columns), images and mixed values stacked with their labels.
pub fn preview_many(host: &Host, args: Vec<Dynamic>) -> RhaiResult<()> {
    let (values, map) = preview_args(args)?;
    let opts = Opts::declared("preview", map, PREVIEW_OPTIONS)?;
    let views = values.iter().map(viewable).collect::<RhaiResult<Vec<_>>>()?;
    let labels = match labels(&opts, views.len())? {
        None if views.len() > 1 => Some(numbered(views.len())),
        given => given,
    };
    let width = opts.int("width")?;
    if let Some(w) = width {
        if !(8..=1000).contains(&w) {
            return Err(script_error(format!("preview: width must be between 8 and 1000 columns, got {w}")));
        }
    }
    let columns = columns(&opts)?;
    let plays = match opts.get("play") {
        None => 0,
        Some(v) if v.is_bool() => u32::from(v.as_bool().unwrap_or(false)),
        Some(_) => opts.int("play")?.map(|n| n.clamp(0, 100) as u32).unwrap_or(0),
    };
    // On a half-block terminal, clips are drawn at the size the terminal shows them, so that labels and
    // frame numbers stay legible.
    let budget = host.previewer.borrow().pixel_budget(width.map(|w| w as u32));
    let views: Vec<Viewable> = match budget {
        None => views,
        Some(px) => {
            let count = views.len();
            let per_row = |v: &Video| match count {
                1 => v.sheet_columns(),
                _ => columns.min(v.len()) as i64,
            };
            views
                .into_iter()
                .map(|v| match v {
                    Viewable::Clip(c) => {
                        let n = per_row(&c).max(1);
                        let tile = ((px as i64 - (n + 1) * compose::GAP) / n).max(8);
                        if tile >= c.width() {
                            return Ok(Viewable::Clip(c));
                        }
                        let h = (c.height() * tile / c.width()).max(8);
                        rt(c.resize(tile, h, vidtune_kernels::image::Fit::Resize)).map(Viewable::Clip)
                    }
                    still => Ok(still),
                })
                .collect::<RhaiResult<_>>()?
        }
    };
    let clips: Vec<&Video> = views
        .iter()
        .filter_map(|v| match v {
            Viewable::Clip(c) => Some(c),
            Viewable::Still(_) => None,
        })
        .collect();
    let all_clips = clips.len() == views.len();
    let label = labels
        .as_ref()
        .map(|l| l.join(" vs "))
        .unwrap_or_else(|| kind_label(&values[0]).unwrap_or("video").to_string());
    let width = width.map(|w| w as u32);
    if plays > 0 {
        if !all_clips {
            return Err(script_error("preview: play animates clips; these values include an image"));
        }
        let clip = match (clips.len(), &labels) {
            (1, None) => clips[0].clone(),
            _ => rt(compose::stack_videos(&clips, labels.as_deref(), true))?,
        };
        rt(host.previewer.borrow_mut().play(&clip, &label, width, plays))?;
        return Ok(());
    }
    let image = match (&views[..], all_clips) {
        ([Viewable::Clip(c)], _) if labels.is_none() => rt(c.contact_sheet())?,
        ([Viewable::Still(i)], _) if labels.is_none() => i.clone(),
        (_, true) => rt(compose::comparison_sheet(&clips, labels.as_deref().unwrap_or(&[]), columns))?,
        _ => {
            let images = views
                .iter()
                .map(|v| match v {
                    Viewable::Clip(c) => rt(c.contact_sheet()),
                    Viewable::Still(i) => Ok(i.clone()),
                })
                .collect::<RhaiResult<Vec<_>>>()?;
            let refs: Vec<&Image> = images.iter().collect();
            rt(compose::vstack_images(&refs, labels.as_deref()))?
        }
    };
    rt(host.previewer.borrow_mut().show_sized(&image, &label, width))?;
    Ok(())
}

/// Previews `value` (video, image or masks); an error for other values.
pub fn preview(host: &Host, value: &Dynamic) -> RhaiResult<()> {
    preview_many(host, vec![value.clone()])
}

/// `hstack` / `vstack`: clips frame by frame, or images, with optional labels.
fn stack(func: &str, items: Array, opts: Opts, horizontal: bool) -> RhaiResult<Dynamic> {
    let labels = labels(&opts, items.len())?;
    if items.is_empty() {
        return Err(script_error(format!("{func}: the array is empty; give clips or images")));
    }
    if let Some(videos) = items.iter().map(|d| d.read_lock::<Video>().map(|v| v.clone())).collect::<Option<Vec<_>>>() {
        let refs: Vec<&Video> = videos.iter().collect();
        return rt(compose::stack_videos(&refs, labels.as_deref(), horizontal)).map(Dynamic::from);
    }
    if let Some(images) = items.iter().map(|d| d.read_lock::<Image>().map(|i| i.clone())).collect::<Option<Vec<_>>>() {
        let refs: Vec<&Image> = images.iter().collect();
        let stacked = if horizontal {
            compose::hstack_images(&refs, labels.as_deref())
        } else {
            compose::vstack_images(&refs, labels.as_deref())
        };
        return rt(stacked).map(Dynamic::from);
    }
    let kinds: Vec<String> = items.iter().map(crate::values::describe).collect();
    Err(script_error(format!("{func}: give all clips or all images, got {}", kinds.join(", "))))
}

/// `sheet([a, b], #{labels, columns})`: the comparison sheet `preview` shows, as an Image to save.
fn sheet(items: Array, opts: Opts) -> RhaiResult<Image> {
    let views = items.iter().map(viewable).collect::<RhaiResult<Vec<_>>>()?;
    let clips: Vec<Video> = views
        .into_iter()
        .map(|v| match v {
            Viewable::Clip(c) => Ok(c),
            Viewable::Still(_) => Err(script_error("sheet: compares clips (or masks); use vstack for images")),
        })
        .collect::<RhaiResult<_>>()?;
    if clips.is_empty() {
        return Err(script_error("sheet: the array is empty; give clips"));
    }
    let labels = labels(&opts, clips.len())?.unwrap_or_else(|| numbered(clips.len()));
    let refs: Vec<&Video> = clips.iter().collect();
    rt(compose::comparison_sheet(&refs, &labels, columns(&opts)?))
}

const STACK_OPTIONS: &[OptDoc] =
    &[OptDoc { opt: None, name: "labels", takes: "[string, …]", doc: "a label above each clip or image" }];
const SHEET_OPTIONS: &[OptDoc] = &[
    OptDoc { opt: None, name: "labels", takes: "[string, …] (default #1, #2, …)", doc: "a label above each row" },
    OptDoc {
        opt: None,
        name: "columns",
        takes: "integer (default 8)",
        doc: "frames per row, spread over the longest clip",
    },
];

fn param(host: &Host, name: &str, default: Dynamic) -> RhaiResult<Dynamic> {
    host.params_used.borrow_mut().insert(name.to_string());
    let Some(given) = host.params.borrow().get(name).cloned() else {
        return Ok(default);
    };
    // Follow the default's type, so `--set steps=10` gives an integer where the script expects one.
    let convert_err =
        |want: &str| script_error(format!("--set {name}={given}: expected {want} (the default is {default})"));
    Ok(if default.is_int() {
        Dynamic::from(given.as_int().map_err(|_| convert_err("an integer"))?)
    } else if default.is_float() {
        Dynamic::from(
            given.as_float().or_else(|_| given.as_int().map(|i| i as f64)).map_err(|_| convert_err("a number"))?,
        )
    } else if default.is_bool() {
        Dynamic::from(given.as_bool().map_err(|_| convert_err("true or false"))?)
    } else if default.is_string() && (given.is_string() || given.is_int() || given.is_float() || given.is_bool()) {
        Dynamic::from(given.to_string())
    } else {
        given
    })
}

/// `help` is what `help(name)` returns ([`crate::help::lookup_in`]): passed in, since the documentation
/// table it reads holds this area's `DOCS`.
pub fn register(engine: &mut Registrar, host: &Rc<Host>, help: fn(&str, &Host) -> Option<String>) {
    let h = host.clone();
    engine.register_fn("preview", move |a: Dynamic| preview_many(&h, vec![a]));
    let h = host.clone();
    engine.register_fn("preview", move |a: Dynamic, b: Dynamic| preview_many(&h, vec![a, b]));
    let h = host.clone();
    engine.register_fn("preview", move |a: Dynamic, b: Dynamic, c: Dynamic| preview_many(&h, vec![a, b, c]));
    let h = host.clone();
    engine.register_fn("preview", move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic| {
        preview_many(&h, vec![a, b, c, d])
    });
    let h = host.clone();
    engine.register_fn("preview", move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic, e: Dynamic| {
        preview_many(&h, vec![a, b, c, d, e])
    });
    engine.register_fn("hstack", |items: Array| stack("hstack", items, Opts::empty("hstack"), true));
    engine.register_fn("hstack", |items: Array, opts: Map| {
        stack("hstack", items, Opts::declared("hstack", opts, STACK_OPTIONS)?, true)
    });
    engine.register_fn("vstack", |items: Array| stack("vstack", items, Opts::empty("vstack"), false));
    engine.register_fn("vstack", |items: Array, opts: Map| {
        stack("vstack", items, Opts::declared("vstack", opts, STACK_OPTIONS)?, false)
    });
    engine.register_fn("sheet", |items: Array| sheet(items, Opts::empty("sheet")));
    engine.register_fn("sheet", |items: Array, opts: Map| sheet(items, Opts::declared("sheet", opts, SHEET_OPTIONS)?));
    let h = host.clone();
    engine.register_fn("param", move |name: &str, default: Dynamic| param(&h, name, default));
    let h = host.clone();
    engine.register_fn("help", move |name: &str| {
        help(name, &h).ok_or_else(|| script_error(format!("help: no function or type named {name:?}")))
    });
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "preview",
        signatures: &[
            "preview(value: Video | Image | Masks)",
            "preview(a, b, …, options: map)",
            "preview([a, b, …], options: map)",
        ],
        summary: "Shows a video (a contact sheet with frame numbers), an image or masks — or several side by side: \
                  clips as one comparison sheet, a labelled row each with the same frames in every column. Inline \
                  on a terminal (Kitty, iTerm, sixel or coloured half-blocks), else as a PNG under ./previews \
                  whose path is printed.",
        details: "`play: true` animates (inline by cycling frames; a GIF in file mode and notebooks). \
                  VIDTUNE_PREVIEW=auto|inline|file|off chooses; VIDTUNE_PREVIEW_DIR sets the folder.",
        options: PREVIEW_OPTIONS,
        example: r#"let c = synthetic_clip(#{frames: 8, size: 96});
preview(c.video);
preview(c.video, c.masks, #{labels: ["source", "masks"]});
preview([src, edit], #{labels: ["source", "edit"], play: true});"#,
    },
    FnDoc {
        name: "hstack",
        signatures: &["hstack(items: array) -> Video | Image", "hstack(items, options: map) -> Video | Image"],
        summary: "Clips side by side, frame by frame (a shorter clip holds its last frame), or images side by side.",
        details: "",
        options: STACK_OPTIONS,
        example: r#"save_video(hstack([src, edit], #{labels: ["source", "edit"]}), "out/side-by-side.gif");"#,
    },
    FnDoc {
        name: "vstack",
        signatures: &["vstack(items: array) -> Video | Image", "vstack(items, options: map) -> Video | Image"],
        summary: "Clips stacked top to bottom, frame by frame, or images stacked.",
        details: "",
        options: STACK_OPTIONS,
        example: r#"let both = vstack([src.frame(0), edit.frame(0)], #{labels: ["source", "edit"]});"#,
    },
    FnDoc {
        name: "sheet",
        signatures: &["sheet(clips: array) -> Image", "sheet(clips, options: map) -> Image"],
        summary: "A comparison sheet: one labelled row per clip (or masks), the same frames in every column, frame \
                  numbers above — what preview(a, b) shows, as an Image to save.",
        details: "",
        options: SHEET_OPTIONS,
        example: r#"save_image(sheet([src, edit], #{labels: ["source", "edit"]}), "out/compare.png");"#,
    },
    FnDoc {
        name: "param",
        signatures: &["param(name: string, default) -> value"],
        summary: "A script parameter: the value given with `vidtune run FILE --set name=value`, converted to the \
                  default's type, else the default.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let steps = param("steps", 500);
let prompt = param("prompt", "a red circle");"#,
    },
    FnDoc {
        name: "help",
        signatures: &["help(name: string) -> string"],
        summary: "The documentation of a function or type, as `:help name` prints it.",
        details: "",
        options: NO_OPTIONS,
        example: r#"print(help("load_video"));"#,
    },
];
