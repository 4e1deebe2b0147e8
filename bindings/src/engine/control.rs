//! ControlNet functions: `load_controlnet`, the `ControlNet` type, and the `control` option the
//! generating functions share (`#{control: [#{model, image | video, scale, start, end, guess_mode}]}`).

use crate::docs::{FnDoc, OptDoc, NO_OPTIONS};
use crate::guard::Registrar;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use rhai::{Dynamic, Map};
use std::path::PathBuf;
use std::rc::Rc;
use vidtune_runtime::{
    load_controlnet, load_t2i_adapter, Adapter, Control, ControlModel, ControlNet, Image, Masks, SdLoadOptions, Video,
};

/// A loaded ControlNet, shared by the controls that use it.
#[derive(Debug, Clone)]
pub struct ScriptControlNet(pub Rc<ControlNet>);

/// A loaded T2I-Adapter, shared likewise.
#[derive(Debug, Clone)]
pub struct ScriptAdapter(pub Rc<Adapter>);

/// `load_controlnet`'s options.
pub const LOAD_CONTROLNET_OPTIONS: &[OptDoc] = &[
    OptDoc {
        opt: None,
        name: "device",
        takes: "\"auto\" | \"cpu\" | \"cuda\" | \"cuda:N\"",
        doc: "the model's (default auto)",
    },
    OptDoc {
        opt: None,
        name: "dtype",
        takes: "\"fp32\" | \"fp16\" | \"bf16\"",
        doc: "the model's (default as load_sd)",
    },
    OptDoc { opt: None, name: "variant", takes: "\"fp16\"", doc: "read diffusion_pytorch_model.fp16.safetensors" },
    OptDoc {
        opt: None,
        name: "revision",
        takes: "string (default \"main\")",
        doc: "branch or commit of a cached repo",
    },
    OptDoc {
        opt: None,
        name: "config",
        takes: "path",
        doc: "for single files: the ControlNet's config.json (or its folder); default: one beside the file, else \
              SD 1.x's for files in the ControlNet authors' layout",
    },
];

/// The `control` option of the generating functions.
pub const CONTROL: OptDoc = OptDoc {
    opt: None,
    name: "control",
    takes: "map or array of maps",
    doc:
        "ControlNet or T2I-Adapter conditioning: #{model: ControlNet | T2IAdapter, image: Image (or video: Video, one \
          control frame per frame), scale: 1.0, start: 0.0, end: 1.0, guess_mode: false (ControlNets)}; several add up",
};

const CONTROL_KEYS: &[&str] = &["model", "image", "video", "scale", "start", "end", "guess_mode"];

fn load_options(opts: &Opts) -> RhaiResult<SdLoadOptions> {
    Ok(SdLoadOptions {
        device: opts.string("device")?.unwrap_or_else(|| "auto".into()),
        dtype: opts.string("dtype")?,
        variant: opts.string("variant")?,
        revision: opts.string("revision")?.unwrap_or_else(|| "main".into()),
        config: opts.string("config")?.map(PathBuf::from),
        ..SdLoadOptions::default()
    })
}

fn load(spec: &str, opts: Opts) -> RhaiResult<ScriptControlNet> {
    Ok(ScriptControlNet(Rc::new(rt(load_controlnet(spec, &load_options(&opts)?))?)))
}

fn load_adapter(spec: &str, opts: Opts) -> RhaiResult<ScriptAdapter> {
    Ok(ScriptAdapter(Rc::new(rt(load_t2i_adapter(spec, &load_options(&opts)?))?)))
}

/// The controls of `opts`' `control` option (none when it is absent).
pub fn controls(opts: &Opts) -> RhaiResult<Vec<Control>> {
    let Some(value) = opts.get("control") else { return Ok(vec![]) };
    let func = opts.func();
    let items: Vec<Dynamic> = match value.clone().try_cast::<rhai::Array>() {
        Some(a) => a,
        None => vec![value.clone()],
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let label = format!("{func} control {i}");
        let map = item.clone().try_cast::<Map>().ok_or_else(|| {
            script_error(format!(
                "{label}: expected #{{model: ControlNet, image: Image, …}}, got {}",
                crate::values::describe(&item)
            ))
        })?;
        let o = Opts::new(&label, map, CONTROL_KEYS)?;
        let model: ControlModel = match o.get("model") {
            None => {
                return Err(script_error(format!(
                    "{label}: needs model: load_controlnet(\"…\") or load_t2i_adapter(\"…\")"
                )))
            }
            Some(m) => match (m.clone().try_cast::<ScriptControlNet>(), m.clone().try_cast::<ScriptAdapter>()) {
                (Some(n), _) => n.0.into(),
                (_, Some(a)) => a.0.into(),
                _ => {
                    return Err(script_error(format!(
                        "{label}: model must be a ControlNet (from load_controlnet) or a T2IAdapter (from \
                         load_t2i_adapter), got {}",
                        crate::values::describe(m)
                    )))
                }
            },
        };
        let images = match (o.custom::<Image>("image", "an Image")?, o.custom::<Video>("video", "a Video")?) {
            (Some(img), None) => (img.tensor() + 1.0) / 2.0,
            (None, Some(v)) => (v.frames() + 1.0) / 2.0,
            (Some(_), Some(_)) => return Err(script_error(format!("{label}: give image or video, not both"))),
            (None, None) => return Err(script_error(format!("{label}: needs image: Image or video: Video"))),
        };
        let base = rt(Control::new(model, &images))?;
        out.push(Control {
            scale: o.float("scale")?.unwrap_or(1.0),
            start: o.float("start")?.unwrap_or(0.0),
            end: o.float("end")?.unwrap_or(1.0),
            guess_mode: o.bool("guess_mode")?.unwrap_or(false),
            ..base
        });
    }
    Ok(out)
}

fn number(func: &str, what: &str, v: &Dynamic) -> RhaiResult<f64> {
    v.as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|i| i as f64))
        .ok_or_else(|| script_error(format!("{func}: {what} must be a number, got {}", crate::values::describe(v))))
}

fn canny_of(v: &Video, low: &Dynamic, high: &Dynamic) -> RhaiResult<Video> {
    rt(vidtune_runtime::control::canny(v, number("canny", "low", low)?, number("canny", "high", high)?))
}

fn fps_of(m: &Masks) -> f64 {
    m.source.as_ref().map_or(8.0, Video::fps)
}

fn colour(v: &Dynamic) -> RhaiResult<[u8; 3]> {
    let wrong = || {
        script_error(format!(
            "segmentation_map: the colour must be [r, g, b] from 0 to 255, got {}",
            crate::values::describe(v)
        ))
    };
    let a = v.clone().try_cast::<rhai::Array>().ok_or_else(wrong)?;
    let c: Vec<i64> =
        a.iter().map(|x| x.as_int().ok().filter(|i| (0..=255).contains(i))).collect::<Option<_>>().ok_or_else(wrong)?;
    match c[..] {
        [r, g, b] => Ok([r as u8, g as u8, b as u8]),
        _ => Err(wrong()),
    }
}

pub fn register(engine: &mut Registrar) {
    engine.register_fn("canny", |v: Video, low: Dynamic, high: Dynamic| canny_of(&v, &low, &high));
    engine.register_fn("canny", |img: Image, low: Dynamic, high: Dynamic| -> RhaiResult<Image> {
        let v = rt(Video::new(img.tensor().unsqueeze(0), 8.0))?;
        rt(canny_of(&v, &low, &high)?.frame(0))
    });
    engine.register_fn("segmentation_map", |m: &mut Masks| rt(m.segmentation_map([255, 255, 255], fps_of(m))));
    engine.register_fn("segmentation_map", |m: &mut Masks, c: Dynamic| rt(m.segmentation_map(colour(&c)?, fps_of(m))));
    engine.register_fn("edge_map", |m: &mut Masks| rt(m.edge_map(3, fps_of(m))));
    engine.register_fn("edge_map", |m: &mut Masks, width: i64| rt(m.edge_map(width, fps_of(m))));
    engine.register_type_with_name::<ScriptControlNet>("ControlNet");
    engine.register_fn("load_controlnet", |spec: &str| load(spec, Opts::empty("load_controlnet")));
    engine.register_fn("load_controlnet", |spec: &str, opts: Map| {
        load(spec, Opts::declared("load_controlnet", opts, LOAD_CONTROLNET_OPTIONS)?)
    });
    engine.register_type_with_name::<ScriptAdapter>("T2IAdapter");
    engine.register_fn("load_t2i_adapter", |spec: &str| load_adapter(spec, Opts::empty("load_t2i_adapter")));
    engine.register_fn("load_t2i_adapter", |spec: &str, opts: Map| {
        load_adapter(spec, Opts::declared("load_t2i_adapter", opts, LOAD_CONTROLNET_OPTIONS)?)
    });
    engine.register_fn("to_string", |m: &mut ScriptAdapter| m.0.summary());
    engine.register_fn("to_debug", |m: &mut ScriptAdapter| m.0.summary());
    engine.register_fn("to_string", |m: &mut ScriptControlNet| m.0.summary());
    engine.register_fn("to_debug", |m: &mut ScriptControlNet| m.0.summary());
}

pub const DOCS: &[FnDoc] = &[
    FnDoc {
        name: "load_controlnet",
        signatures: &[
            "load_controlnet(path_or_repo_id: string) -> ControlNet",
            "load_controlnet(path_or_repo_id: string, options: map) -> ControlNet",
        ],
        summary:
            "Loads a ControlNet for SD 1.x: a diffusers ControlNetModel folder, a repo id in the Hugging Face cache \
              (lllyasviel/sd-controlnet-canny; never downloaded), or one .safetensors file (the ControlNet authors' \
              control_model.* layout, or diffusers' names with its config.json). Give it to t2i, sample, co_denoise \
              or tune as #{control: …}.",
        details: "The control image is at the generated image's size, values as an Image's; a Video gives each \
              frame its own. scale multiplies the residuals; start and end are the part of the schedule it acts \
              on (fractions); guess_mode conditions only the guided half, as diffusers' guess_mode. Several \
              controls add their residuals (MultiControlNet).",
        options: LOAD_CONTROLNET_OPTIONS,
        example: r#"let sd = load_sd("runwayml/stable-diffusion-v1-5");
let canny = load_controlnet("lllyasviel/sd-controlnet-canny");
let edges = load_image("edges.png");
let img = t2i(sd, "a red car", #{control: #{model: canny, image: edges, scale: 0.8}});"#,
    },
    FnDoc {
        name: "load_t2i_adapter",
        signatures: &[
            "load_t2i_adapter(path_or_repo_id: string) -> T2IAdapter",
            "load_t2i_adapter(path_or_repo_id: string, options: map) -> T2IAdapter",
        ],
        summary: "Loads a T2I-Adapter for SD 1.x (full or light): a diffusers T2IAdapter folder, a repo id in the \
                  Hugging Face cache (TencentARC/t2iadapter_canny_sd15v2; never downloaded), or one .safetensors \
                  file with its config.json. Give it to t2i, sample, co_denoise or tune as #{control: …}, like a \
                  ControlNet: its features join the UNet's down blocks, scaled by scale.",
        details: "",
        options: LOAD_CONTROLNET_OPTIONS,
        example: r#"let sd = load_sd("runwayml/stable-diffusion-v1-5");
let sketch = load_t2i_adapter("TencentARC/t2iadapter_sketch_sd15v2");
let img = t2i(sd, "a house", #{control: #{model: sketch, image: load_image("sketch.png"), scale: 0.9}});"#,
    },
    FnDoc {
        name: "canny",
        signatures: &[
            "canny(clip: Video, low: number, high: number) -> Video",
            "canny(image: Image, low: number, high: number) -> Image",
        ],
        summary: "Canny edges, white on black: the control images of canny ControlNets. Pixel for pixel OpenCV's \
                  cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), low, high) on each frame.",
        details: "low / high are thresholds on the L1 gradient magnitude (100 / 200 are the usual ones); pixels above \
                  high start edges, pixels above low continue them.",
        options: NO_OPTIONS,
        example: r#"let c = synthetic_clip(#{frames: 4, size: 64});
let edges = canny(c.video, 100, 200);
save_video(edges, "edges.gif");"#,
    },
    FnDoc {
        name: "Masks.segmentation_map",
        signatures: &["masks.segmentation_map() -> Video", "masks.segmentation_map(colour: [r, g, b]) -> Video"],
        summary:
            "The subject in a colour (white unless given, 0–255 values) on black, one frame per mask: the control \
                  clip of a segmentation ControlNet (give the colour its training palette uses for the class).",
        details: "",
        options: NO_OPTIONS,
        example: r#"let seg = synthetic_clip().masks.segmentation_map([150, 5, 61]);"#,
    },
    FnDoc {
        name: "Masks.edge_map",
        signatures: &["masks.edge_map() -> Video", "masks.edge_map(width: int) -> Video"],
        summary: "The masks' outlines, width pixels wide (3 unless given), white on black: the control clip of a \
                  scribble or edge ControlNet.",
        details: "",
        options: NO_OPTIONS,
        example: r#"let scribble = synthetic_clip().masks.edge_map(5);"#,
    },
];
