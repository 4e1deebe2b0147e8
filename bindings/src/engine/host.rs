//! Host functions: previews, script parameters (`--set`), and help from inside scripts.

use super::Host;
use crate::guard::Registrar;
use crate::help::{self, FnDoc, NO_OPTIONS};
use crate::opts::{rt, script_error, RhaiResult};
use rhai::Dynamic;
use std::rc::Rc;
use vidtune_runtime::{Image, Masks, Video};

/// The image a value previews as: a contact sheet for videos, the image itself, masks tinted over their
/// clip (white on black when the clip is unknown).
pub fn preview_image(value: &Dynamic) -> RhaiResult<Option<(Image, &'static str)>> {
    if let Some(v) = value.read_lock::<Video>() {
        return Ok(Some((rt(v.contact_sheet())?, "video")));
    }
    if let Some(i) = value.read_lock::<Image>() {
        return Ok(Some((i.clone(), "image")));
    }
    if let Some(m) = value.read_lock::<Masks>() {
        // On their clip when they know it, else white on black.
        if let Some(overlay) = m.overlay_source() {
            return Ok(Some((rt(rt(overlay)?.contact_sheet())?, "masks")));
        }
        return Ok(Some((rt(rt(m.as_video(8.0))?.contact_sheet())?, "masks")));
    }
    Ok(None)
}

/// Previews `value` (video, image or masks); an error for other values.
pub fn preview(host: &Host, value: &Dynamic) -> RhaiResult<()> {
    let Some((image, label)) = preview_image(value)? else {
        let name = value.type_name();
        return Err(script_error(format!(
            "preview: cannot show a value of type {}; expected Video, Image or Masks",
            name.rsplit("::").next().unwrap_or(name)
        )));
    };
    rt(host.previewer.borrow_mut().show(&image, label))?;
    Ok(())
}

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
    } else if default.is_string() {
        Dynamic::from(given.to_string())
    } else {
        given
    })
}

pub fn register(engine: &mut Registrar, host: &Rc<Host>) {
    let h = host.clone();
    engine.register_fn("preview", move |value: Dynamic| preview(&h, &value));
    let h = host.clone();
    engine.register_fn("param", move |name: &str, default: Dynamic| param(&h, name, default));
    let h = host.clone();
    engine.register_fn("help", move |name: &str| {
        help::lookup_in(name, &h).ok_or_else(|| script_error(format!("help: no function or type named {name:?}")))
    });
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "preview",
        signatures: &["preview(value: Video | Image | Masks)"],
        summary: "Shows a video (as a contact sheet), an image or masks: inline on a terminal (Kitty, iTerm, sixel \
                  or coloured half-blocks), else as a PNG under ./previews whose path is printed.",
        details: "VIDTUNE_PREVIEW=auto|inline|file|off chooses; VIDTUNE_PREVIEW_DIR sets the folder.",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip(#{frames: 8, size: 96});
preview(c.video);
preview(c.masks.overlay(c.video));"#,
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
