//! The training loop's optimiser state, shared by one-shot tuning and by the toy world's training from
//! scratch: AdamW over a chosen set of parameters with float32 master copies (for half-precision models),
//! joint gradient-norm clipping, and an optional linear warm-up. The caller computes the loss; [`Trainer`]
//! does the backward pass and the update.

use crate::error::{Error, Result};
use tch::{Kind, Tensor};
use vidtune_kernels::optim::{clip_grad_norm, AdamW};

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
}

impl Trainer {
    /// Trains `params` (named, for messages and saving). Each parameter gets storage of its own (so a
    /// frozen model sharing the tensor keeps its values) and starts requiring gradients.
    pub fn new(params: Vec<(String, Tensor)>, adam: AdamW, max_grad_norm: f64) -> Result<Trainer> {
        if params.is_empty() {
            return Err(Error::Invalid("nothing to train: no parameters selected".into()));
        }
        let (names, mut params): (Vec<String>, Vec<Tensor>) = params.into_iter().unzip();
        tch::no_grad(|| {
            for p in params.iter_mut() {
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
        Ok(Trainer { names, params, master, m, v, adam, max_grad_norm, warmup: 0, step: 0 })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Back-propagates `loss`, clips the gradients, and updates every parameter. Returns the loss value and
    /// the gradient norm before clipping. A non-finite loss is an error (the parameters are left as they were).
    pub fn step(&mut self, loss: &Tensor) -> Result<(f64, f64)> {
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            for p in self.params.iter_mut() {
                p.zero_grad();
            }
            return Err(Error::Invalid(format!("training diverged: the loss is {value} at step {}", self.step + 1)));
        }
        loss.backward();
        self.step += 1;
        let mut grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g.to_kind(Kind::Float)
                } else {
                    Tensor::zeros_like(p).to_kind(Kind::Float)
                }
            })
            .collect();
        let norm = clip_grad_norm(&mut grads, self.max_grad_norm);
        let mut adam = self.adam;
        if self.warmup > 0 && self.step <= self.warmup {
            adam.lr *= self.step as f64 / self.warmup as f64;
        }
        for (i, g) in grads.iter().enumerate() {
            match self.master.as_mut() {
                Some(master) => {
                    adam.step(&mut master[i], g, &mut self.m[i], &mut self.v[i], self.step);
                    let kind = self.params[i].kind();
                    tch::no_grad(|| self.params[i].copy_(&master[i].to_kind(kind)));
                }
                None => adam.step(&mut self.params[i], g, &mut self.m[i], &mut self.v[i], self.step),
            }
            self.params[i].zero_grad();
        }
        Ok((value, norm))
    }

    /// Stops gradients on the trained parameters (they keep their values); returns their names.
    pub fn finish(mut self) -> Vec<String> {
        for p in self.params.iter_mut() {
            let _ = p.set_requires_grad(false);
        }
        self.names
    }
}
