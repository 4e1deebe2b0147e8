//! The one denoising loop: DDIM down the schedule (text-to-image, sampling a clip) or up it (inversion),
//! with classifier-free guidance as one batch, progress, cancellation and step counters — shared by
//! `t2i`, `sample`, `invert` (and, window by window, by co-denoising).
//!
//! What differs between the callers is the noise predictor (the image UNet or a video model), the
//! [`Conditioning`], and what happens around each step: [`StepHooks`] can fix latents before the UNet
//! sees them (first-frame conditioning keeps frame 0 clean) and after the scheduler moved them (keeping
//! the background, resetting frame 0), and the loop can record the trajectory it walks (inversion keeps
//! it for `keep_background`).

use super::{count, Loop};
use crate::error::Result;
use crate::models::AttnContext;
use crate::progress::Progress;
use crate::rng::Noise;
use crate::sd::StableDiffusion;
use crate::video::{Conditioning, VideoModel};
use tch::{Device, Tensor};

/// What predicts noise for latents at a timestep under a conditioning.
pub trait NoisePredictor {
    fn predict(&self, x: &Tensor, t: &Tensor, cond: &Conditioning) -> Result<Tensor>;
    fn device(&self) -> Device;
    fn sd(&self) -> &StableDiffusion;
}

/// The image UNet on `[B, C, h, w]` (the text of the conditioning only).
impl NoisePredictor for StableDiffusion {
    fn predict(&self, x: &Tensor, t: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let mut ctx = AttnContext::default();
        let n = x.size()[0];
        let ts = if t.numel() == 1 { t.reshape([1]).expand([n], false) } else { t.shallow_clone() };
        cond.control_data(x, &ts, &cond.text, 1, &mut ctx.data)?;
        self.unet.model.forward(x, t, &cond.text, &ctx)
    }

    fn device(&self) -> Device {
        self.device
    }

    fn sd(&self) -> &StableDiffusion {
        self
    }
}

/// A video model on `[B, C, F, h, w]`.
impl NoisePredictor for VideoModel {
    fn predict(&self, x: &Tensor, t: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        self.forward(x, t, cond, false)
    }

    fn device(&self) -> Device {
        VideoModel::device(self)
    }

    fn sd(&self) -> &StableDiffusion {
        &self.base
    }
}

/// Which way the loop walks the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// From noise to a sample (DDIM steps).
    Down,
    /// From a sample to noise (Tune-A-Video's DDIM inversion).
    Up,
}

/// One loop's settings.
#[derive(Debug)]
pub struct DenoiseSpec {
    /// The progress label (`"sample"`, `"invert"`, `"t2i"`).
    pub label: String,
    pub steps: i64,
    pub walk: Walk,
    /// Classifier-free guidance scale; `<= 1` (or no `uncond`) runs the conditional prediction alone.
    pub guidance: f64,
    /// The unconditional (negative prompt) text `[1, L, D]` for guidance.
    pub uncond: Option<Tensor>,
    /// One unconditional text per step of the schedule, in place of `uncond` (null-text inversion's).
    pub uncond_steps: Option<std::rc::Rc<Vec<Tensor>>>,
    /// DDIM's η (down only); its noise comes from the loop's generator.
    pub eta: f64,
    /// Keep the latent after every step (and the start) as the trajectory.
    pub record: bool,
    /// Steps of the schedule to skip at its start (down: start part-way, at a lower noise level, as
    /// img2img's `strength` does).
    pub skip: usize,
    /// Stop after this many steps of the schedule (`None`: run to its end) — average fusion stops part-way.
    pub until: Option<usize>,
    /// Progress units per step (co-denoising counts windows × steps; 1 otherwise).
    pub units: u64,
    pub counter: Loop,
}

impl DenoiseSpec {
    /// `steps` DDIM steps from noise towards a sample: unguided, η = 0, nothing recorded, the whole
    /// schedule, one progress unit a step, counted as `counter`.
    pub fn down(label: impl Into<String>, steps: i64, counter: Loop) -> Self {
        DenoiseSpec {
            label: label.into(),
            steps,
            walk: Walk::Down,
            guidance: 1.0,
            uncond: None,
            uncond_steps: None,
            eta: 0.0,
            record: false,
            skip: 0,
            until: None,
            units: 1,
            counter,
        }
    }

    /// `steps` steps up the schedule (DDIM inversion), the trajectory recorded.
    pub fn up(label: impl Into<String>, steps: i64, counter: Loop) -> Self {
        DenoiseSpec { walk: Walk::Up, record: true, ..DenoiseSpec::down(label, steps, counter) }
    }

    /// Classifier-free guidance at `guidance` against `uncond` (`None`: no guidance).
    pub fn guided(self, guidance: f64, uncond: Option<Tensor>) -> Self {
        DenoiseSpec { guidance, uncond, ..self }
    }

    /// DDIM's η.
    pub fn eta(self, eta: f64) -> Self {
        DenoiseSpec { eta, ..self }
    }

    /// Skips the first `skip` steps of the schedule and stops after step `until` of it.
    pub fn part(self, skip: usize, until: Option<usize>) -> Self {
        DenoiseSpec { skip, until, ..self }
    }

    /// `units` progress units a step (co-denoising counts its windows).
    pub fn units(self, units: u64) -> Self {
        DenoiseSpec { units, ..self }
    }
}

/// What to do around each step. `step` counts from 0; `level` is the index of the noise level the
/// latents are at after the step in the ascending trajectory of the same schedule (0: clean).
pub trait StepHooks {
    /// Before the UNet sees `x` at timestep `t`.
    fn before(&mut self, _step: usize, _t: i64, _x: &mut Tensor) -> Result<()> {
        Ok(())
    }
    /// After the scheduler moved `x`; `x0` is the step's prediction of the clean sample (down only).
    fn after(&mut self, _step: usize, _level: usize, _x: &mut Tensor, _x0: Option<&Tensor>) -> Result<()> {
        Ok(())
    }
}

/// What an observer of the loop sees after each step.
pub struct StepView<'a> {
    /// The loop's label (`"sample"`, `"invert"`, `"co-denoise (6 windows)"`, `"t2i"`).
    pub label: &'a str,
    /// Steps done in this loop (1 after the first) and its steps in all.
    pub step: usize,
    pub steps: usize,
    /// The timestep just run.
    pub t: i64,
    /// The latents after the step.
    pub x: &'a Tensor,
    /// The step's prediction of the clean latents (walking down; `None` for inversion).
    pub x0: Option<&'a Tensor>,
}

/// Whether an observed loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// End the loop here and return the latents reached so far (as diffusers' interrupt does).
    Stop,
}

/// The installed observer: the closure's address and the function that calls a closure of its type
/// there (a scoped slot, as `scoped-tls` keeps one; no lifetime is forged).
#[derive(Clone, Copy)]
struct Slot {
    observer: *mut (),
    call: unsafe fn(*mut (), &StepView) -> Result<Flow>,
}

thread_local! {
    static OBSERVER: std::cell::Cell<Option<Slot>> = const { std::cell::Cell::new(None) };
}

/// Calls the closure of type `F` at `observer`.
///
/// # Safety
/// `observer` must point to a live `F` that nothing else borrows during the call.
unsafe fn call_observer<F: FnMut(&StepView) -> Result<Flow>>(observer: *mut (), view: &StepView) -> Result<Flow> {
    // SAFETY: the caller's promise.
    unsafe { (*observer.cast::<F>())(view) }
}

/// Runs `run` with `observer` called after every step of every denoising loop it starts (live
/// previews, script callbacks). While the observer runs it is not installed, so loops it starts itself
/// are not observed.
pub fn observed<F: FnMut(&StepView) -> Result<Flow>, T>(observer: &mut F, run: impl FnOnce() -> T) -> T {
    struct Restore(Option<Slot>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OBSERVER.with(|o| o.set(self.0));
        }
    }
    let slot = Slot { observer: (observer as *mut F).cast::<()>(), call: call_observer::<F> };
    // The slot holds the observer only while `run` runs (the guard puts the previous one back, also on
    // unwinding), and this frame borrows `observer` mutably all that time.
    let _restore = Restore(OBSERVER.with(|o| o.replace(Some(slot))));
    run()
}

/// Calls the installed observer, if any.
fn notify(view: &StepView) -> Result<Flow> {
    let Some(slot) = OBSERVER.with(|o| o.take()) else { return Ok(Flow::Continue) };
    struct Reinstall(Slot);
    impl Drop for Reinstall {
        fn drop(&mut self) {
            OBSERVER.with(|o| o.set(Some(self.0)));
        }
    }
    let _back = Reinstall(slot);
    // SAFETY: `observed` installed the slot for a closure of the type `call` expects, which outlives the
    // scope that installed it; the slot was taken out while it runs, so this is the only live reference.
    unsafe { (slot.call)(slot.observer, view) }
}

/// No hooks.
pub struct NoHooks;
impl StepHooks for NoHooks {}

/// The result of a loop.
#[derive(Debug)]
pub struct Denoised {
    pub latents: Tensor,
    /// The start and the latent after every step (with `record`), in the order walked.
    pub trajectory: Vec<Tensor>,
}

/// Runs the loop from `x` under `cond`.
pub fn denoise(
    model: &dyn NoisePredictor,
    mut x: Tensor,
    cond: &Conditioning,
    spec: &DenoiseSpec,
    mut noise: Option<&mut Noise>,
    hooks: &mut dyn StepHooks,
) -> Result<Denoised> {
    if spec.eta > 0.0 && noise.is_none() {
        return Err(crate::error::Error::Invalid("eta > 0 draws noise: the loop needs a seeded generator".into()));
    }
    let mut ddim = model.sd().scheduler.ddim()?;
    ddim.set_timesteps(spec.steps)?;
    let all: Vec<i64> = match spec.walk {
        Walk::Down => ddim.timesteps().to_vec(),
        Walk::Up => ddim.timesteps().iter().rev().copied().collect(),
    };
    let n = all.len();
    let skip = spec.skip.min(n);
    let end = spec.until.unwrap_or(n).clamp(skip, n);
    let cfg = spec.guidance > 1.0 && spec.uncond.is_some();
    let batch_cond = match (&spec.uncond, cfg) {
        (Some(u), true) => cond.with_unconditional(u),
        _ => cond.clone(),
    };
    let mut trajectory = if spec.record { vec![x.shallow_clone()] } else { vec![] };
    let units = spec.units.max(1);
    let mut progress = Progress::new(spec.label.clone(), (end - skip) as u64 * units).unit(if units > 1 {
        "window steps"
    } else {
        "steps"
    });
    if let Some(u) = spec.uncond_steps.as_ref().filter(|u| u.len() != n) {
        return Err(crate::error::Error::Invalid(format!(
            "{} null-text embeddings for a schedule of {n} steps: sample with the inversion's steps",
            u.len()
        )));
    }
    for (i, &t) in all.iter().enumerate().take(end).skip(skip) {
        hooks.before(i, t, &mut x)?;
        let step_cond = match (&spec.uncond_steps, cfg) {
            (Some(u), true) => Some(cond.with_unconditional(&u[i])),
            _ => None,
        };
        let batch_cond = step_cond.as_ref().unwrap_or(&batch_cond);
        let input = if cfg { Tensor::cat(&[&x, &x], 0) } else { x.shallow_clone() };
        let ts = Tensor::from(t).to_device(model.device());
        let eps = tch::no_grad(|| model.predict(&input, &ts, &batch_cond.at_step(t as f64, i, n)))?;
        let eps = if cfg {
            let parts = eps.chunk(2, 0);
            &parts[0] + (&parts[1] - &parts[0]) * spec.guidance
        } else {
            eps
        };
        let (next, x0, level) = match spec.walk {
            Walk::Down => {
                let variance = match (&mut noise, spec.eta > 0.0) {
                    (Some(n), true) => Some(n.randn(&eps.size(), eps.kind(), model.device())),
                    _ => None,
                };
                let out = ddim.step(&eps, t, &x, spec.eta, variance.as_ref(), false)?;
                (out.prev_sample, Some(out.pred_original_sample), n - 1 - i)
            }
            Walk::Up => (ddim.inversion_step(&eps, t, &x)?, None, i + 1),
        };
        x = next;
        hooks.after(i, level, &mut x, x0.as_ref())?;
        if spec.record {
            trajectory.push(x.shallow_clone());
        }
        count(spec.counter);
        progress.inc(units - 1);
        progress.step()?;
        let view = StepView { label: &spec.label, step: i + 1 - skip, steps: end - skip, t, x: &x, x0: x0.as_ref() };
        if notify(&view)? == Flow::Stop {
            progress.set_message("stopped by on_step");
            break;
        }
    }
    progress.finish();
    Ok(Denoised { latents: x, trajectory })
}
