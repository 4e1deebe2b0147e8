//! ControlNets as the pipelines use them: a loaded model ([`ControlNet`], [`load_controlnet`]) and a
//! [`Control`] — a model with its image or video, scale and the part of the schedule it acts on — that
//! the conditioning carries into every UNet call, where [`residuals`] turns the active ones into what the
//! UNet adds to its skip connections.

use crate::config::adapter::T2IAdapterConfig;
use crate::config::{read_config, ControlNetConfig};
use crate::error::{Error, Result};
use crate::models::nn::InitMode;
use crate::models::{AdapterFeatures, ControlNetModel, ControlResiduals, T2IAdapter};
use crate::sd::{build, placement, SdLoadOptions};
use crate::weights::source::ModelSource;
use crate::weights::{self, apply_weights, single_file, t2i_adapter_layout as adapter_layout};
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
            if !dir.join("config.json").exists() {
                return Err(Error::Invalid(format!(
                    "{spec:?}: this build's toy models have no ControlNet (train it with `vidtune toy train \
                     --controlnet-only --out runtime/models/toy` and rebuild); give a diffusers ControlNetModel \
                     folder, a repo id in the Hugging Face cache or a .safetensors file"
                )));
            }
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

/// A loaded T2I-Adapter.
#[derive(Debug)]
pub struct Adapter {
    pub model: T2IAdapter,
    pub vars: VarStore,
    pub device: Device,
    pub source: String,
    pub identity: String,
}

impl Adapter {
    /// One line for the REPL and `print`.
    pub fn summary(&self) -> String {
        let c = &self.model.config;
        let params: i64 = self.vars.variables().values().map(|t| t.numel() as i64).sum();
        format!(
            "T2IAdapter({}; {}; {} channels of control image at {}x the latents; features {:?}; {params} parameters, \
             {} on {})",
            self.source,
            c.adapter_type,
            c.in_channels,
            c.downscale_factor,
            c.feature_widths(),
            crate::device::dtype_name(self.model.kind()),
            crate::device::device_name(self.device)
        )
    }
}

/// Loads a T2I-Adapter: a diffusers `T2IAdapter` folder (`config.json`,
/// `diffusion_pytorch_model[.VARIANT].safetensors`), a repo id in the Hugging Face cache, or one
/// `.safetensors` file: with diffusers' names beside its `config.json` (or with `opts.config`), or in its
/// authors' layout (TencentARC's `t2iadapter_*_sd14v1`, converted from `.pth`), whose config is read
/// from the weights when none is given.
pub fn load_t2i_adapter(spec: &str, opts: &SdLoadOptions) -> Result<Adapter> {
    let (device, dtype, _) = placement(opts)?;
    let (config_path, files) = match ModelSource::resolve(spec, &opts.revision)? {
        ModelSource::Random(kind) => {
            return Err(Error::Invalid(format!(
                "\"random:{kind}\": there are no random T2I-Adapters; give a diffusers T2IAdapter folder or file"
            )))
        }
        ModelSource::Builtin(_) => {
            return Err(Error::Invalid(format!(
                "{spec:?}: the built-in models have no T2I-Adapter (their control model is a ControlNet: \
                 load_controlnet(\"toy\")); give a diffusers T2IAdapter folder, a repo id in the Hugging Face cache \
                 or a .safetensors file"
            )))
        }
        ModelSource::Folder(dir) | ModelSource::Hub { dir, .. } => {
            let config = dir.join("config.json");
            if !config.exists() {
                return Err(Error::bad_file(&dir, "is not a diffusers T2IAdapter folder: config.json is missing"));
            }
            (Some(config), weights::component_files(&dir, "diffusion_pytorch_model", opts.variant.as_deref())?)
        }
        ModelSource::File(path) => {
            let config = match &opts.config {
                Some(c) if c.is_dir() => Some(c.join("config.json")),
                Some(c) => Some(c.clone()),
                None => Some(path.with_file_name("config.json")).filter(|c| c.exists()),
            };
            (config, vec![path])
        }
    };
    let tensors = weights::read_all(&files)?;
    let original = adapter_layout::is_original(&tensors);
    let config: T2IAdapterConfig = match &config_path {
        Some(c) => read_config(c)?,
        None if original => adapter_layout::config(&tensors).map_err(|e| Error::bad_file(&files[0], e.to_string()))?,
        None => {
            return Err(Error::bad_file(
                &files[0],
                "a single-file T2I-Adapter with diffusers' names needs its config: none beside it (pass #{config: \
                 \"…/config.json\"})",
            ))
        }
    };
    if config.class_name.as_deref().is_some_and(|c| c != "T2IAdapter") {
        return Err(Error::bad_file(
            config_path.as_deref().unwrap_or(&files[0]),
            format!("describes a {}, not a T2IAdapter", config.class_name.as_deref().unwrap_or("?")),
        ));
    }
    let tensors = if original {
        adapter_layout::convert(tensors, &config).map_err(|e| Error::bad_file(&files[0], e.to_string()))?
    } else {
        tensors
    };
    let mut identity = crate::weights::identity::Identity::new("t2i-adapter");
    if let Some(c) = &config_path {
        identity = identity.file(c)?;
    }
    for f in &files {
        identity = identity.file(f)?;
    }
    let identity = identity.text("dtype", &format!("{dtype:?}")).finish();
    let (model, mut vars) = build(device, InitMode::Empty, |b| T2IAdapter::new(b, &config))?;
    apply_weights(&mut vars, tensors, "t2i_adapter", dtype, &|_| false, spec)?;
    Ok(Adapter { model, vars, device, source: spec.to_string(), identity })
}

/// What conditions a control: a ControlNet (residuals from a copy of the encoder) or a T2I-Adapter (features
/// added inside the down blocks).
#[derive(Debug, Clone)]
pub enum ControlModel {
    ControlNet(Rc<ControlNet>),
    Adapter(Rc<Adapter>),
}

impl From<Rc<ControlNet>> for ControlModel {
    fn from(net: Rc<ControlNet>) -> Self {
        ControlModel::ControlNet(net)
    }
}

impl From<Rc<Adapter>> for ControlModel {
    fn from(a: Rc<Adapter>) -> Self {
        ControlModel::Adapter(a)
    }
}

impl ControlModel {
    pub fn source(&self) -> &str {
        match self {
            ControlModel::ControlNet(n) => &n.source,
            ControlModel::Adapter(a) => &a.source,
        }
    }

    pub fn identity(&self) -> &str {
        match self {
            ControlModel::ControlNet(n) => &n.identity,
            ControlModel::Adapter(a) => &a.identity,
        }
    }

    /// Channels of its control images.
    pub fn channels(&self) -> i64 {
        match self {
            ControlModel::ControlNet(n) => n.model.config.conditioning_channels,
            ControlModel::Adapter(a) => a.model.config.in_channels,
        }
    }

    fn placement(&self) -> (Device, Kind) {
        match self {
            ControlModel::ControlNet(n) => (n.device, n.kind()),
            ControlModel::Adapter(a) => (a.device, a.model.kind()),
        }
    }
}

/// One ControlNet's or T2I-Adapter's conditioning of a run.
#[derive(Debug)]
pub struct Control {
    pub model: ControlModel,
    /// The control images `[K, channels, H, W]` in [0, 1] at the clip's pixel size: one (every frame
    /// gets it) or one per frame of the clip.
    pub images: Tensor,
    /// `controlnet_conditioning_scale` / `adapter_conditioning_scale`.
    pub scale: f64,
    /// The part of the schedule it acts on, as fractions of the steps (`control_guidance_start` / `end`;
    /// an adapter's `adapter_conditioning_factor` is `end`).
    pub start: f64,
    pub end: f64,
    /// ControlNets only: residuals for the conditional half of a guided batch only, log-spaced from
    /// 0.1 × scale.
    pub guess_mode: bool,
}

impl Clone for Control {
    fn clone(&self) -> Self {
        Control { model: self.model.clone(), images: self.images.shallow_clone(), ..*self }
    }
}

impl Control {
    /// `model` given `images` (`[K, C, H, W]` or one image `[C, H, W]`, values in [0, 1]) at the full scale,
    /// over the whole schedule.
    pub fn new(model: impl Into<ControlModel>, images: &Tensor) -> Result<Control> {
        let model = model.into();
        let given = images.size();
        let images = if images.dim() == 3 { images.unsqueeze(0) } else { images.shallow_clone() };
        let want = model.channels();
        if images.dim() != 4 || images.size()[1] != want {
            return Err(Error::Invalid(format!(
                "control image: {} takes {want} channels ([{want}, H, W], or [frames, {want}, H, W] for a video), \
                 got {given:?}",
                model.source()
            )));
        }
        Ok(Control { model, images, scale: 1.0, start: 0.0, end: 1.0, guess_mode: false })
    }

    /// Whether the control acts at step `step` of `steps` (diffusers' `controlnet_keep`).
    pub fn active(&self, step: usize, steps: usize) -> bool {
        let n = steps.max(1) as f64;
        !((step as f64) / n < self.start || (step as f64 + 1.0) / n > self.end)
    }

    /// Checks the control against a clip of `frames` frames of `height`×`width` pixels.
    pub fn check(&self, frames: i64, height: i64, width: i64) -> Result<()> {
        let s = self.images.size();
        let source = self.model.source();
        if s[0] != 1 && s[0] < frames {
            return Err(Error::Invalid(format!(
                "control video ({source}): {} frames for a clip of {frames}; give one image, or a video at least as long as the clip",
                s[0]
            )));
        }
        if (s[2], s[3]) != (height, width) {
            return Err(Error::Invalid(format!(
                "control image ({source}): {}x{} pixels for a clip of {width}x{height}; resize it to the clip's size",
                s[3], s[2]
            )));
        }
        if !(0.0..=1.0).contains(&self.start) || !(0.0..=1.0).contains(&self.end) || self.start >= self.end {
            return Err(Error::Invalid(format!(
                "control: start {} and end {} must be fractions of the schedule with start < end",
                self.start, self.end
            )));
        }
        if self.guess_mode && matches!(self.model, ControlModel::Adapter(_)) {
            return Err(Error::Invalid(format!("control ({source}): guess_mode is for ControlNets, not T2I-Adapters")));
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

    /// The images of a call on `frames` frames of `clips` clips, `[clips·frames, C, H, W]`, on `x`'s device
    /// and in its dtype.
    fn call_images(&self, frames: i64, clips: i64, x: &Tensor) -> Result<Tensor> {
        let k = self.images.size()[0];
        if k != 1 && k < frames {
            return Err(Error::Invalid(format!(
                "control video ({}): {k} frames for a call on {frames}; give one image, or a video at least as long \
                 as the clip",
                self.model.source()
            )));
        }
        let per_clip =
            if k == 1 { self.images.expand([frames, -1, -1, -1], false) } else { self.images.narrow(0, 0, frames) };
        Ok(per_clip.to_device(x.device()).to_kind(x.kind()).repeat([clips, 1, 1, 1]))
    }
}

/// Refuses a ControlNet or T2I-Adapter made for another base model than `sd`'s (its widths, layers and
/// text width must be the UNet's, an adapter's downscale factor the VAE's), and one on another device or
/// in another dtype.
pub fn check_control_fits(sd: &crate::StableDiffusion, control: &Control) -> Result<()> {
    let u = &sd.unet.model.config;
    let source = control.model.source();
    let what = |field: &str, a: String, b: String| {
        Error::Invalid(format!(
            "control: {source} has {field} {a} but the model has {b}: it was made for another base model"
        ))
    };
    match &control.model {
        ControlModel::ControlNet(net) => {
            let c = &net.model.config.unet;
            if c.cross_dim() != u.cross_dim() {
                return Err(what(
                    "text width (cross_attention_dim)",
                    c.cross_dim().to_string(),
                    u.cross_dim().to_string(),
                ));
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
        }
        ControlModel::Adapter(a) => {
            let c = &a.model.config;
            if c.downscale_factor != sd.vae_scale_factor() {
                return Err(what(
                    "downscale_factor",
                    c.downscale_factor.to_string(),
                    format!("a VAE that downscales {}x", sd.vae_scale_factor()),
                ));
            }
            let widths = c.feature_widths();
            let n = widths.len().min(u.block_out_channels.len());
            if widths[..n] != u.block_out_channels[..n] {
                return Err(what(
                    "feature widths",
                    format!("{widths:?}"),
                    format!("block_out_channels {:?}", u.block_out_channels),
                ));
            }
        }
    }
    let (device, kind) = control.model.placement();
    if device != sd.device || kind != sd.unet.model.kind() {
        return Err(Error::Invalid(format!(
            "control: {source} is {kind:?} on {device:?} but the model is {:?} on {:?}; load both with the same \
             device and dtype",
            sd.unet.model.kind(),
            sd.device
        )));
    }
    Ok(())
}

/// How much more activation memory a UNet call needs with `controls` beside it: a ControlNet runs an
/// encoder as wide as the UNet's (about half its activations), an adapter a few small convolutions.
pub fn memory_factor(controls: &[Control]) -> f64 {
    controls
        .iter()
        .map(|c| match c.model {
            ControlModel::ControlNet(_) => 0.5,
            ControlModel::Adapter(_) => 0.05,
        })
        .sum::<f64>()
        + 1.0
}

/// Where one UNet call stands: its step of the schedule (`steps` 0: not in a denoising loop — a training
/// step — where every control acts), and whether its batch is a guided one whose first half is the
/// unconditional prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStep {
    pub step: usize,
    pub steps: usize,
    pub guided: bool,
}

/// The summed residuals of the ControlNets among `controls` active at `at`, for a UNet call on `x`
/// `[B·F, C, h, w]` at timesteps `t` (`[B·F]`) under `text` (`[B·F, L, D]`); `None` when none acts.
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
        let ControlModel::ControlNet(net) = &c.model else { continue };
        let one = |x: &Tensor, t: &Tensor, text: &Tensor, clips: i64| -> Result<ControlResiduals> {
            let images = c.call_images(frames, clips, x)?;
            tch::no_grad(|| net.model.forward(x, t, text, &images, c.scale, c.guess_mode))
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

/// The summed features of the T2I-Adapters among `controls` active at `at`, for a UNet call on `x`
/// `[B·F, C, h, w]` (every clip of the batch, guided halves included, gets them, as diffusers does).
pub fn adapter_features(
    controls: &[Control],
    at: CallStep,
    x: &Tensor,
    frames: i64,
) -> Result<Option<AdapterFeatures>> {
    let mut total: Option<AdapterFeatures> = None;
    let batch = x.size()[0] / frames;
    for c in controls.iter().filter(|c| at.steps == 0 || c.active(at.step, at.steps)) {
        let ControlModel::Adapter(a) = &c.model else { continue };
        let images = c.call_images(frames, batch, x)?;
        let f = tch::no_grad(|| a.model.forward(&images, c.scale))?;
        let f = AdapterFeatures { features: f.features.iter().map(|t| t.to_kind(x.kind())).collect() };
        total = Some(match total {
            Some(sum) => sum.plus(f)?,
            None => f,
        });
    }
    Ok(total)
}

impl crate::cache::KeyBuilder {
    /// Adds `controls` by content: each model's identity, its images and settings.
    pub fn controls(self, controls: &[Control]) -> Self {
        controls.iter().fold(self.text(&format!("{} controls", controls.len())), |k, c| {
            k.text(c.model.identity())
                .text(&format!("{}|{}|{}|{}", c.scale, c.start, c.end, c.guess_mode))
                .tensor(&c.images)
        })
    }
}
