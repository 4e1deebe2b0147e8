//! ControlNets as the pipelines use them: a loaded model ([`ControlNet`], [`load_controlnet`]) and a
//! [`Control`] — a model with its image or video, scale and the part of the schedule it acts on — that
//! the conditioning carries into every UNet call, where [`residuals`] turns the active ones into what the
//! UNet adds to its skip connections.

use crate::config::{read_config, ControlNetConfig};
use crate::error::{Error, Result};
use crate::models::nn::InitMode;
use crate::models::{ControlNetModel, ControlResiduals};
use crate::sd::{build, placement, SdLoadOptions};
use crate::weights::source::ModelSource;
use crate::weights::{self, apply_weights, single_file};
use std::path::Path;
use std::rc::Rc;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// A loaded ControlNet.
#[derive(Debug)]
pub struct ControlNet {
    pub model: ControlNetModel,
    pub vars: VarStore,
    pub device: Device,
    /// Where it came from, as the user gave it.
    pub source: String,
    /// Its identity by content (config and weights), for memo keys.
    pub identity: String,
}

impl ControlNet {
    pub fn kind(&self) -> Kind {
        self.model.kind()
    }

    /// One line for the REPL and `print`.
    pub fn summary(&self) -> String {
        let c = &self.model.config;
        let params: i64 = self.vars.variables().values().map(|t| t.numel() as i64).sum();
        format!(
            "ControlNet({}; {} channels of control image at {}x the latents; widths {:?}; text width {}; {} \
             parameters, {} on {})",
            self.source,
            c.conditioning_channels,
            c.downscale(),
            c.unet.block_out_channels,
            c.unet.cross_dim(),
            if params >= 1_000_000 { format!("{:.1}M", params as f64 / 1e6) } else { params.to_string() },
            crate::device::dtype_name(self.kind()),
            crate::device::device_name(self.device)
        )
    }
}

/// Loads a ControlNet: a diffusers `ControlNetModel` folder (`config.json` and
/// `diffusion_pytorch_model[.VARIANT].safetensors`), a repo id in the Hugging Face cache, or one
/// `.safetensors` file with diffusers' names beside a `config.json` (or with `opts.config` naming one, or
/// its folder). The device, dtype, variant and revision come from `opts`, as for [`crate::load_sd`].
pub fn load_controlnet(spec: &str, opts: &SdLoadOptions) -> Result<ControlNet> {
    let (config_path, files) = match ModelSource::resolve(spec, &opts.revision)? {
        ModelSource::Random(kind) => {
            return Err(Error::Invalid(format!(
                "\"random:{kind}\": there are no random ControlNets; give a diffusers ControlNetModel folder or file"
            )))
        }
        ModelSource::Builtin(dir) => {
            let dir = dir.join("controlnet");
            (dir.join("config.json"), weights::component_files(&dir, "diffusion_pytorch_model", None)?)
        }
        ModelSource::Folder(dir) | ModelSource::Hub { dir, .. } => {
            let config = dir.join("config.json");
            if !config.exists() {
                return Err(Error::bad_file(
                    &dir,
                    "is not a diffusers ControlNet folder: config.json is missing (a whole Stable Diffusion folder is \
                     loaded with load_sd)",
                ));
            }
            (config, weights::component_files(&dir, "diffusion_pytorch_model", opts.variant.as_deref())?)
        }
        ModelSource::File(path) => return load_single_file(&path, spec, opts),
    };
    let config: ControlNetConfig = read_config(&config_path)?;
    if config.unet.class_name.as_deref().is_some_and(|c| c != "ControlNetModel") {
        return Err(Error::bad_file(
            &config_path,
            format!("describes a {}, not a ControlNetModel", config.unet.class_name.as_deref().unwrap_or("?")),
        ));
    }
    let tensors = weights::read_all(&files)?;
    let mut identity = crate::weights::identity::Identity::new("controlnet").file(&config_path)?;
    for f in &files {
        identity = identity.file(f)?;
    }
    build_controlnet(config, tensors, identity, spec, opts)
}

/// One `.safetensors` file: diffusers' names, or its authors' (`control_model.*`, mapped). The config is
/// `opts.config` (a `config.json` or its folder), else a `config.json` beside the file, else — for the
/// authors' layout only — SD 1.x's, with the hint convolutions' widths read from the file.
fn load_single_file(path: &Path, spec: &str, opts: &SdLoadOptions) -> Result<ControlNet> {
    let tensors = weights::read_safetensors(path)?;
    let config_path = match &opts.config {
        Some(c) if c.is_dir() => Some(c.join("config.json")),
        Some(c) => Some(c.clone()),
        None => Some(path.with_file_name("config.json")).filter(|c| c.exists()),
    };
    let original = single_file::is_original_controlnet(&tensors);
    let mut identity = crate::weights::identity::Identity::new("controlnet-single-file").file(path)?;
    let config: ControlNetConfig = match &config_path {
        Some(c) => {
            identity = identity.file(c)?;
            read_config(c)?
        }
        None if original => {
            let mut config: ControlNetConfig =
                serde_json::from_str(include_str!("../configs/sd-v1-4/unet/config.json")).expect("bundled config");
            config.read_widths(&tensors);
            config
        }
        None => {
            return Err(Error::bad_file(
                path,
                "a single-file ControlNet with diffusers' names needs its config: none beside it (pass #{config: \
                 \"…/config.json\"})",
            ))
        }
    };
    let tensors = if original {
        let (tensors, unused) = single_file::convert_controlnet(tensors, config.unet.layers(0))
            .map_err(|e| Error::bad_file(path, e.to_string()))?;
        if !unused.is_empty() {
            log::info!("{}: {} tensors besides the ControlNet's are left unused", path.display(), unused.len());
        }
        tensors
    } else {
        tensors
    };
    build_controlnet(config, tensors, identity, spec, opts)
}

fn build_controlnet(
    config: ControlNetConfig,
    tensors: weights::TensorMap,
    identity: crate::weights::identity::Identity,
    spec: &str,
    opts: &SdLoadOptions,
) -> Result<ControlNet> {
    let (device, dtype, _) = placement(opts)?;
    config.check_supported().map_err(|e| Error::Invalid(format!("{spec}: {e}")))?;
    let identity = identity.text("dtype", &format!("{dtype:?}")).finish();
    let (model, mut vars) = build(device, InitMode::Empty, |b| ControlNetModel::new(b, &config))?;
    apply_weights(&mut vars, tensors, "controlnet", dtype, &|_| false, spec)?;
    Ok(ControlNet { model, vars, device, source: spec.to_string(), identity })
}

/// Canny edges of every frame (OpenCV's `Canny` on OpenCV's grey, thresholds `low` / `high`), white on black:
/// the control clip of a canny ControlNet.
pub fn canny(video: &crate::Video, low: f64, high: f64) -> Result<crate::Video> {
    let edges =
        vidtune_kernels::edges::canny_frames(video.frames(), low, high).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::Video::new(edges, video.fps())
}

/// One ControlNet's conditioning of a run.
#[derive(Debug)]
pub struct Control {
    pub net: Rc<ControlNet>,
    /// The control images `[K, channels, H, W]` in [0, 1] at the clip's pixel size: one (every frame
    /// gets it) or one per frame of the clip.
    pub images: Tensor,
    /// `controlnet_conditioning_scale`.
    pub scale: f64,
    /// The part of the schedule it acts on, as fractions of the steps (`control_guidance_start` / `end`).
    pub start: f64,
    pub end: f64,
    /// Residuals for the conditional half of a guided batch only, log-spaced from 0.1 × scale.
    pub guess_mode: bool,
}

impl Clone for Control {
    fn clone(&self) -> Self {
        Control { net: self.net.clone(), images: self.images.shallow_clone(), ..*self }
    }
}

impl Control {
    /// `net` given `images` (`[K, C, H, W]` or one image `[C, H, W]`, values in [0, 1]) at the full scale, over
    /// the whole schedule.
    pub fn new(net: Rc<ControlNet>, images: &Tensor) -> Result<Control> {
        let given = images.size();
        let images = if images.dim() == 3 { images.unsqueeze(0) } else { images.shallow_clone() };
        let want = net.model.config.conditioning_channels;
        if images.dim() != 4 || images.size()[1] != want {
            return Err(Error::Invalid(format!(
                "control image: {} takes {want} channels ([{want}, H, W], or [frames, {want}, H, W] for a video), \
                 got {given:?}",
                net.source
            )));
        }
        Ok(Control { net, images, scale: 1.0, start: 0.0, end: 1.0, guess_mode: false })
    }

    /// Whether the control acts at step `step` of `steps` (diffusers' `controlnet_keep`).
    pub fn active(&self, step: usize, steps: usize) -> bool {
        let n = steps.max(1) as f64;
        !((step as f64) / n < self.start || (step as f64 + 1.0) / n > self.end)
    }

    /// Checks the control against a clip of `frames` frames of `height`×`width` pixels.
    pub fn check(&self, frames: i64, height: i64, width: i64) -> Result<()> {
        let s = self.images.size();
        if s[0] != 1 && s[0] < frames {
            return Err(Error::Invalid(format!(
                "control video ({}): {} frames for a clip of {frames}; give one image, or a video at least as long as the clip",
                self.net.source, s[0]
            )));
        }
        if (s[2], s[3]) != (height, width) {
            return Err(Error::Invalid(format!(
                "control image ({}): {}x{} pixels for a clip of {width}x{height}; resize it to the clip's size",
                self.net.source, s[3], s[2]
            )));
        }
        if !(0.0..=1.0).contains(&self.start) || !(0.0..=1.0).contains(&self.end) || self.start >= self.end {
            return Err(Error::Invalid(format!(
                "control: start {} and end {} must be fractions of the schedule with start < end",
                self.start, self.end
            )));
        }
        Ok(())
    }

    /// The frames `start..start + len` of a control video (an image stays as it is).
    pub fn window(&self, start: i64, len: i64) -> Control {
        let mut out = self.clone();
        if self.images.size()[0] > 1 {
            out.images = self.images.narrow(0, start, len);
        }
        out
    }
}

/// Refuses a ControlNet made for another base model than `sd`'s (its text width, block widths and
/// layers must be the UNet's), and one on another device or in another dtype.
pub fn check_control_fits(sd: &crate::StableDiffusion, control: &Control) -> Result<()> {
    let (c, u) = (&control.net.model.config.unet, &sd.unet.model.config);
    let what = |field: &str, a: String, b: String| {
        Error::Invalid(format!(
            "control: {} has {field} {a} but the model's UNet has {b}: it was made for another base model",
            control.net.source
        ))
    };
    if c.cross_dim() != u.cross_dim() {
        return Err(what("text width (cross_attention_dim)", c.cross_dim().to_string(), u.cross_dim().to_string()));
    }
    if c.block_out_channels != u.block_out_channels {
        return Err(what(
            "block_out_channels",
            format!("{:?}", c.block_out_channels),
            format!("{:?}", u.block_out_channels),
        ));
    }
    let layers = |x: &crate::config::UNet2DConditionConfig| {
        (0..x.block_out_channels.len()).map(|i| x.layers(i)).collect::<Vec<_>>()
    };
    if layers(c) != layers(u) {
        return Err(what("layers_per_block", format!("{:?}", layers(c)), format!("{:?}", layers(u))));
    }
    if c.in_channels != u.in_channels {
        return Err(what("in_channels", c.in_channels.to_string(), u.in_channels.to_string()));
    }
    if control.net.device != sd.device || control.net.kind() != sd.unet.model.kind() {
        return Err(Error::Invalid(format!(
            "control: {} is {:?} on {:?} but the model is {:?} on {:?}; load both with the same device and dtype",
            control.net.source,
            control.net.kind(),
            control.net.device,
            sd.unet.model.kind(),
            sd.device
        )));
    }
    Ok(())
}

/// Where one UNet call stands: its step of the schedule, and whether its batch is a guided one whose
/// first half is the unconditional prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStep {
    pub step: usize,
    pub steps: usize,
    pub guided: bool,
}

/// The summed residuals of the `controls` active at `at`, for a UNet call on `x` `[B·F, C, h, w]` at
/// timesteps `t` (`[B·F]`) under `text` (`[B·F, L, D]`); `None` when none acts.
pub fn residuals(
    controls: &[Control],
    at: CallStep,
    x: &Tensor,
    t: &Tensor,
    text: &Tensor,
    frames: i64,
) -> Result<Option<ControlResiduals>> {
    let mut total: Option<ControlResiduals> = None;
    let n = x.size()[0];
    let batch = n / frames;
    for c in controls.iter().filter(|c| at.steps == 0 || c.active(at.step, at.steps)) {
        let k = c.images.size()[0];
        if k != 1 && k < frames {
            c.check(frames, 0, 0)?;
        }
        let per_clip =
            if k == 1 { c.images.expand([frames, -1, -1, -1], false) } else { c.images.narrow(0, 0, frames) };
        let images = per_clip.to_device(x.device()).to_kind(x.kind());
        let one = |x: &Tensor, t: &Tensor, text: &Tensor, clips: i64| -> Result<ControlResiduals> {
            let images = images.repeat([clips, 1, 1, 1]);
            tch::no_grad(|| c.net.model.forward(x, t, text, &images, c.scale, c.guess_mode))
        };
        let r = if c.guess_mode && at.guided && batch >= 2 {
            // Only the conditional half sees the control; the unconditional half gets nothing.
            let half = n / 2;
            let r = one(&x.narrow(0, half, half), &t.narrow(0, half, half), &text.narrow(0, half, half), batch / 2)?;
            let pad = |r: &Tensor| Tensor::cat(&[&r.zeros_like(), r], 0);
            ControlResiduals { down: r.down.iter().map(pad).collect(), mid: pad(&r.mid) }
        } else {
            one(x, t, text, batch)?
        };
        total = Some(match total {
            Some(sum) => sum.plus(r)?,
            None => r,
        });
    }
    Ok(total)
}

impl crate::cache::KeyBuilder {
    /// Adds `controls` by content: each model's identity, its images and settings.
    pub fn controls(self, controls: &[Control]) -> Self {
        controls.iter().fold(self.text(&format!("{} controls", controls.len())), |k, c| {
            k.text(&c.net.identity)
                .text(&format!("{}|{}|{}|{}", c.scale, c.start, c.end, c.guess_mode))
                .tensor(&c.images)
        })
    }
}
