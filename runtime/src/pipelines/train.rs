//! The training loop's optimiser state, shared by one-shot tuning and by the toy world's training from
//! scratch: AdamW over a chosen set of parameters with float32 master copies (for half-precision models),
//! joint gradient-norm clipping, an optional linear warm-up, and for float16 models dynamic loss scaling
//! (as PyTorch's `GradScaler`: the loss is scaled up before the backward pass so small gradients survive
//! float16, a step whose gradients overflow is skipped and the scale halved, and the scale doubles after a
//! run of good steps). The caller computes the loss; [`Trainer`] does the backward pass and the update.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};
use vidtune_kernels::optim::{clip_factor, clip_grad_norm_on_device, AdamW};

/// AdamW on a set of parameters.
pub struct Trainer {
    names: Vec<String>,
    params: Vec<Tensor>,
    master: Option<Vec<Tensor>>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub adam: AdamW,
    pub max_grad_norm: f64,
    /// Steps of linear learning-rate warm-up (0: none).
    pub warmup: i64,
    step: i64,
    /// Dynamic loss scaling (float16 parameters).
    pub scaler: Option<LossScaler>,
    /// Losses of [`Trainer::step_deferred`] not read yet, with their step numbers.
    pending: Vec<(i64, Tensor)>,
}

/// Dynamic loss scaling, as PyTorch's `GradScaler` with its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    /// Good steps in a row before the scale grows.
    pub growth_interval: i64,
    good: i64,
    /// Steps skipped because their gradients overflowed.
    pub skipped: i64,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            good: 0,
            skipped: 0,
        }
    }
}

impl LossScaler {
    /// After a step's gradients were checked: backs off and counts a skip on overflow, else grows the
    /// scale after `growth_interval` good steps. Returns whether the step may be applied.
    fn update(&mut self, finite: bool) -> bool {
        if !finite {
            self.scale *= self.backoff_factor;
            self.good = 0;
            self.skipped += 1;
            return false;
        }
        self.good += 1;
        if self.good >= self.growth_interval {
            self.scale *= self.growth_factor;
            self.good = 0;
        }
        true
    }
}

/// What one [`Trainer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepOutcome {
    /// The parameters were updated.
    Applied,
    /// The scaled gradients overflowed float16: nothing was updated and the loss scale backed off.
    Skipped,
}

/// The gradients of `loss` with respect to `params` (every one needing a gradient), without touching
/// their `.grad`: the backward a plain (not checkpointed) [`Trainer`] step takes.
pub fn gradients(loss: &Tensor, params: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(Tensor::f_run_backward(&[loss], params, false, false)?)
}

impl Trainer {
    /// Trains `params` (named, for messages and saving). Each parameter gets storage of its own (so a
    /// frozen model sharing the tensor keeps its values) and starts requiring gradients.
    pub fn new(params: Vec<(String, Tensor)>, adam: AdamW, max_grad_norm: f64) -> Result<Trainer> {
        let all = vec![true; params.len()];
        Trainer::new_copying(params, &all, adam, max_grad_norm)
    }

    /// [`Trainer::new`] giving storage of its own only to the parameters flagged in `copy`: the others
    /// are the caller's alone and train in place, without a second copy alive while the moments are
    /// allocated.
    pub fn new_copying(
        params: Vec<(String, Tensor)>,
        copy: &[bool],
        adam: AdamW,
        max_grad_norm: f64,
    ) -> Result<Trainer> {
        if params.is_empty() {
            return Err(Error::Invalid("nothing to train: no parameters selected".into()));
        }
        if copy.len() != params.len() {
            return Err(Error::Invalid(format!("{} copy flags for {} parameters", copy.len(), params.len())));
        }
        let (names, mut params): (Vec<String>, Vec<Tensor>) = params.into_iter().unzip();
        tch::no_grad(|| {
            for (p, _) in params.iter_mut().zip(copy).filter(|(_, c)| **c) {
                p.set_data(&p.copy());
            }
        });
        for p in params.iter_mut() {
            let _ = p.set_requires_grad(true);
        }
        let kind = params[0].kind();
        let master = (kind != Kind::Float).then(|| params.iter().map(|p| p.detach().to_kind(Kind::Float)).collect());
        let m: Vec<Tensor> = params.iter().map(|p| Tensor::zeros_like(p).to_kind(Kind::Float)).collect();
        let v = m.iter().map(|t| t.zeros_like()).collect();
        let scaler = (kind == Kind::Half).then(LossScaler::default);
        Ok(Trainer { names, params, master, m, v, adam, max_grad_norm, warmup: 0, step: 0, scaler, pending: vec![] })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Starts the float32 master copies of a half-precision set from `values` (the same parameters at
    /// full precision, when a half-precision copy of a float32 model trains), so the trained values
    /// lose nothing to the copy's rounding.
    pub fn load_masters(&mut self, values: &[Tensor]) -> Result<()> {
        let Some(master) = self.master.as_mut() else { return Ok(()) };
        if values.len() != master.len() {
            return Err(Error::Invalid(format!("{} master values for {} parameters", values.len(), master.len())));
        }
        for (m, v) in master.iter_mut().zip(values) {
            if m.size() != v.size() {
                return Err(Error::Invalid(format!("master value of shape {:?} for {:?}", v.size(), m.size())));
            }
            *m = v.detach().to_kind(Kind::Float).copy();
        }
        Ok(())
    }

    /// The trained values, in float32 for a half-precision model (its master copies).
    pub fn values(&self) -> Vec<Tensor> {
        match &self.master {
            Some(m) => m.iter().map(Tensor::detach).collect(),
            None => self.params.iter().map(Tensor::detach).collect(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Back-propagates `loss`, clips the gradients, and updates every parameter. Returns the loss value and
    /// the gradient norm before clipping. A non-finite loss is an error (the parameters are left as they were).
    pub fn step(&mut self, loss: &Tensor) -> Result<(f64, f64)> {
        self.step_scaled(loss).map(|(l, n, _)| (l, n))
    }

    /// [`Trainer::step`], also saying whether the update was applied or skipped (loss scaling).
    pub fn step_scaled(&mut self, loss: &Tensor) -> Result<(f64, f64, StepOutcome)> {
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(Error::Invalid(format!("training diverged: the loss is {value} at step {}", self.step + 1)));
        }
        let (norm, outcome) = self.update(loss, gradients)?;
        let norm = match norm {
            Some(n) => n.double_value(&[]),
            None => f64::INFINITY,
        };
        Ok((value, norm, outcome))
    }

    /// A step that reads nothing back from the device (unless float16 loss scaling must check the
    /// gradients, as PyTorch's `GradScaler` does): `backward(scaled_loss, params)` returns the gradients
    /// of the parameters ([`gradients`], or a checkpointed backward's; an undefined tensor where none
    /// flows), then the gradients are clipped and the parameters updated on the device. No `.grad` is
    /// kept: the gradients live from the backward to the update, not through the next forward, whose
    /// activations are tuning's peak of memory. The loss is kept; read it with
    /// [`Trainer::flush`], which also reports a diverged (non-finite) loss.
    pub fn step_deferred(
        &mut self,
        loss: &Tensor,
        backward: impl FnOnce(&Tensor, &[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<StepOutcome> {
        self.pending.push((self.step + 1, loss.detach()));
        Ok(self.update(loss, backward)?.1)
    }

    /// The losses of the deferred steps since the last flush, read in one transfer. A non-finite one is
    /// the error "training diverged" naming its step.
    pub fn flush(&mut self) -> Result<Vec<f64>> {
        if self.pending.is_empty() {
            return Ok(vec![]);
        }
        let (steps, losses): (Vec<i64>, Vec<Tensor>) = self.pending.drain(..).unzip();
        let all = Tensor::stack(&losses.iter().map(|l| l.to_kind(Kind::Double).reshape([1])).collect::<Vec<_>>(), 0)
            .to_device(tch::Device::Cpu);
        let values = Vec::<f64>::try_from(all.reshape([-1]))?;
        if let Some((step, v)) = steps.iter().zip(&values).find(|(_, v)| !v.is_finite()) {
            return Err(Error::Invalid(format!("training diverged: the loss is {v} at step {step}")));
        }
        Ok(values)
    }

    /// Backward, unscaling, the overflow check of loss scaling, clipping and the AdamW update. Returns
    /// the gradient norm before clipping (on the device; none for a skipped step).
    fn update(
        &mut self,
        loss: &Tensor,
        backward: impl FnOnce(&Tensor, &[Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<(Option<Tensor>, StepOutcome)> {
        let scale = self.scaler.map(|s| s.scale).unwrap_or(1.0);
        let grads = crate::flops::timed(crate::flops::Work::Backward, || {
            if scale != 1.0 {
                backward(&(loss * scale), &self.params)
            } else {
                backward(loss, &self.params)
            }
        })?;
        if grads.len() != self.params.len() {
            return Err(Error::Invalid(format!(
                "the backward returned {} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        crate::flops::timed(crate::flops::Work::Optimizer, || self.apply(scale, grads))
    }

    /// Unscaling, the overflow check of loss scaling, clipping and the AdamW update, after the backward.
    fn apply(&mut self, scale: f64, grads: Vec<Tensor>) -> Result<(Option<Tensor>, StepOutcome)> {
        let mut grads: Vec<Tensor> = self
            .params
            .iter()
            .zip(grads)
            .map(|(p, g)| {
                if !g.defined() {
                    Tensor::zeros_like(p).to_kind(Kind::Float)
                } else if scale == 1.0 && g.kind() == Kind::Float {
                    // The gradient itself: clipping may scale it in place.
                    g
                } else {
                    g.to_kind(Kind::Float) / scale
                }
            })
            .collect();
        if let Some(scaler) = self.scaler.as_mut() {
            let finite = grads.iter().all(|g| g.isfinite().all().int64_value(&[]) == 1);
            if !scaler.update(finite) {
                return Ok((None, StepOutcome::Skipped));
            }
        }
        self.step += 1;
        // On the CPU the factor is read here and applied inside the update's one pass; on a GPU the
        // gradients are scaled on the device, so that no step waits for the host. The same bits either way.
        let (norm, coef) = if grads.iter().all(|g| g.device() == tch::Device::Cpu) {
            clip_factor(&grads, self.max_grad_norm)
        } else {
            (clip_grad_norm_on_device(&mut grads, self.max_grad_norm), 1.0)
        };
        let mut adam = self.adam;
        if self.warmup > 0 && self.step <= self.warmup {
            adam.lr *= self.step as f64 / self.warmup as f64;
        }
        for (i, g) in grads.iter().enumerate() {
            match self.master.as_mut() {
                Some(master) => {
                    adam.step_scaled(&mut master[i], g, coef, &mut self.m[i], &mut self.v[i], self.step);
                    let kind = self.params[i].kind();
                    tch::no_grad(|| self.params[i].copy_(&master[i].to_kind(kind)));
                }
                None => adam.step_scaled(&mut self.params[i], g, coef, &mut self.m[i], &mut self.v[i], self.step),
            }
        }
        Ok((Some(norm), StepOutcome::Applied))
    }

    /// Stops gradients on the trained parameters (they keep their values); returns their names.
    pub fn finish(mut self) -> Vec<String> {
        for p in self.params.iter_mut() {
            let _ = p.set_requires_grad(false);
        }
        self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half_trainer() -> Trainer {
        let p = Tensor::full([4], 0.5, (Kind::Half, tch::Device::Cpu));
        Trainer::new(vec![("p".into(), p)], AdamW { lr: 1e-2, ..AdamW::default() }, 1.0).unwrap()
    }

    #[test]
    fn loss_scaling_skips_a_step_whose_gradients_overflow_and_backs_off() {
        let mut t = half_trainer();
        assert_eq!(t.scaler.unwrap().scale, 65536.0, "float16 parameters get a loss scaler");
        let before = t.params[0].copy();
        // d/dp of 1e3·p is 1e3; scaled by 65536 it is 6.6e7, beyond float16's 65504: an overflow.
        let loss = (&t.params[0] * 1e3).sum(Kind::Float);
        let (_, _, outcome) = t.step_scaled(&loss).unwrap();
        assert_eq!(outcome, StepOutcome::Skipped);
        assert!(t.params[0].equal(&before), "a skipped step leaves the parameters");
        assert_eq!((t.scaler.unwrap().scale, t.scaler.unwrap().skipped, t.steps()), (32768.0, 1, 0));
        // A loss whose scaled gradients fit is applied, and the gradients are unscaled first.
        let loss = (&t.params[0] * 1e-3).sum(Kind::Float);
        let (_, norm, outcome) = t.step_scaled(&loss).unwrap();
        assert_eq!(outcome, StepOutcome::Applied);
        assert!((norm - 2e-3).abs() < 1e-5, "unscaled gradient norm {norm}");
        assert!(!t.params[0].equal(&before));
        assert_eq!(t.steps(), 1);
    }

    #[test]
    fn the_scale_grows_after_a_run_of_good_steps() {
        let mut s = LossScaler { growth_interval: 3, ..LossScaler::default() };
        for _ in 0..3 {
            assert!(s.update(true));
        }
        assert_eq!(s.scale, 131072.0);
        assert!(!s.update(false));
        assert_eq!((s.scale, s.skipped), (65536.0, 1));
        // Float32 parameters train without a scaler.
        let p = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        assert!(Trainer::new(vec![("p".into(), p)], AdamW::default(), 1.0).unwrap().scaler.is_none());
    }
}
