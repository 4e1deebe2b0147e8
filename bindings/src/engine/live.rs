//! Live denoising: `#{preview_every: N}` decodes the step's prediction of the clean sample (x̂₀; for
//! inversion, the latents as they climb) every N steps into the preview, and `#{on_step: |step, t, x0| …}`
//! calls a script closure after every step — returning `false` stops the loop, which then returns what it
//! reached (diffusers' `callback_on_step_end` with its interrupt).

use super::state::Host;
use crate::docs::OptDoc;
use crate::opts::{rt, script_error, Opts, RhaiResult};
use crate::values::{describe, ScriptTensor};
use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext};
use std::cell::RefCell;
use vidtune_runtime::pipelines::decode_video;
use vidtune_runtime::pipelines::denoise::{observed, Flow, StepView};
use vidtune_runtime::sd::StableDiffusion;
use vidtune_runtime::Image;

pub const PREVIEW_EVERY: OptDoc = OptDoc {
    opt: None,
    name: "preview_every",
    takes: "integer N",
    doc: "decode the step's x̂₀ every N steps (and the last) into the preview: live denoising",
};
pub const ON_STEP: OptDoc = OptDoc {
    opt: None,
    name: "on_step",
    takes: "|step, t, x0| … (a closure)",
    doc: "called after every step with the step (from 1), the timestep and x̂₀ as a Tensor; returning false \
          stops the loop there",
};

/// The live options of one call.
pub struct Live {
    every: Option<usize>,
    on_step: Option<FnPtr>,
}

impl Live {
    pub fn from(opts: &Opts) -> RhaiResult<Live> {
        let every = match opts.int("preview_every")? {
            None => None,
            Some(n) if n >= 1 => Some(n as usize),
            Some(n) => {
                return Err(script_error(format!("{}: preview_every must be at least 1 step, got {n}", opts.func())))
            }
        };
        let on_step = match opts.get("on_step") {
            None => None,
            Some(v) => Some(v.clone().try_cast::<FnPtr>().ok_or_else(|| {
                script_error(format!(
                    "{}: option \"on_step\" must be a closure |step, t, x0| …, got {}",
                    opts.func(),
                    describe(v)
                ))
            })?),
        };
        Ok(Live { every, on_step })
    }

    /// Whether the call is observed (then it always runs: a memoised result would skip the steps).
    pub fn active(&self) -> bool {
        self.every.is_some() || self.on_step.is_some()
    }

    /// Runs `f` with the previews and the closure called after its steps. An error raised by the closure
    /// is the call's error.
    pub fn run<T>(
        &self,
        ctx: Option<&NativeCallContext>,
        host: &Host,
        base: &StableDiffusion,
        fps: f64,
        f: impl FnOnce() -> RhaiResult<T>,
    ) -> RhaiResult<T> {
        if !self.active() {
            return f();
        }
        let failure: RefCell<Option<Box<EvalAltResult>>> = RefCell::new(None);
        let fail = |e: Box<EvalAltResult>| {
            let message = e.to_string();
            *failure.borrow_mut() = Some(e);
            vidtune_runtime::Error::Invalid(message)
        };
        let mut observer = |v: &StepView| -> vidtune_runtime::Result<Flow> {
            let shown = v.x0.unwrap_or(v.x);
            if let Some(n) = self.every {
                if v.step % n == 0 || v.step == v.steps {
                    let image = preview_of(base, shown, fps).map_err(&fail)?;
                    let label = format!("{} step {} of {}", v.label, v.step, v.steps);
                    host.previewer.borrow_mut().show(&image, &label)?;
                }
            }
            if let Some(fp) = &self.on_step {
                let Some(ctx) = ctx else { return Ok(Flow::Continue) };
                let x0 = ScriptTensor(shown.detach().copy());
                let out: Dynamic =
                    fp.call_within_context(ctx, (v.step as i64, v.t, x0)).map_err(|e| fail(on_step_error(e)))?;
                match out.as_bool() {
                    Ok(false) => return Ok(Flow::Stop),
                    Ok(true) => {}
                    Err(_) if out.is_unit() => {}
                    Err(_) => {
                        return Err(fail(script_error(format!(
                            "on_step: the closure must return true / false (false stops) or nothing, got {}",
                            describe(&out)
                        ))))
                    }
                }
            }
            Ok(Flow::Continue)
        };
        let out = observed(&mut observer, f);
        match (out, failure.into_inner()) {
            (Err(_), Some(e)) => Err(e),
            (out, _) => out,
        }
    }
}

fn on_step_error(e: Box<EvalAltResult>) -> Box<EvalAltResult> {
    script_error(format!("on_step: {e}"))
}

/// The decoded latents to preview: a contact sheet for a clip, the image for one frame.
fn preview_of(base: &StableDiffusion, latents: &tch::Tensor, fps: f64) -> RhaiResult<Image> {
    let x = tch::no_grad(|| latents.detach().to_device(base.device));
    match x.dim() {
        5 => rt(rt(decode_video(base, &x, fps))?.contact_sheet()),
        4 => {
            let px = rt(vidtune_runtime::pipelines::common::decode_latents(base, &x))?;
            rt(Image::new(px.get(0)))
        }
        _ => Err(script_error(format!("preview_every: cannot decode latents of shape {:?}", x.size()))),
    }
}
