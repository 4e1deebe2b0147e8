//! Gradient checkpointing: a network's forward written once over an executor ([`Exec`]) that either runs
//! each block at once ([`Direct`]) or records it on a [`Tape`], keeping only the blocks' inputs and outputs.
//! The tape's backward recomputes each block, last first, with its input made a leaf, and carries the
//! gradient through it — what `torch.utils.checkpoint` does around diffusers' ResNet and transformer
//! blocks, without a custom autograd function.
//!
//! Invariants:
//! - A segment is a pure function of its inputs and of what it captured (weights, the time embedding,
//!   the text, the attention context); its recompute gets `recompute = true` so that processors with
//!   running state (spectral normalisation) do not step it twice.
//! - A value needs a gradient when its segment's output required one in the forward (it depends on a
//!   trainable parameter or on an input that does); other segments are never recomputed.
//! - Gradients of trainable parameters are summed over every segment's recompute and returned
//!   ([`Tape::gradients`]) or deposited into the parameters' `.grad` at the end, as one backward would
//!   have left them ([`Tape::backward`]). Tensors captured by several
//!   segments (a trained mask encoder's features) keep their graph until then.

use crate::error::Result;
use tch::{Kind, Tensor};

/// One block of a checkpointed network: maps its inputs to its output. The flag says it is the
/// recompute of the backward.
pub type SegmentFn<'a> = Box<dyn Fn(&[Tensor], bool) -> Result<Tensor> + 'a>;

/// How a network's forward runs its blocks.
pub trait Exec<'a> {
    /// What flows between blocks: tensors, or slots of a tape.
    type V;
    /// A tensor entering the network.
    fn input(&mut self, t: &Tensor) -> Self::V;
    /// Runs one block on `inputs`.
    fn run(&mut self, inputs: &[&Self::V], f: SegmentFn<'a>) -> Result<Self::V>;
    /// A second handle to a value (skip connections).
    fn dup(v: &Self::V) -> Self::V;
    /// The shape of a value.
    fn size(&self, v: &Self::V) -> Vec<i64>;
}

/// Runs every block at once: the plain forward.
pub struct Direct;

impl<'a> Exec<'a> for Direct {
    type V = Tensor;

    fn input(&mut self, t: &Tensor) -> Tensor {
        t.shallow_clone()
    }

    fn run(&mut self, inputs: &[&Tensor], f: SegmentFn<'a>) -> Result<Tensor> {
        let xs: Vec<Tensor> = inputs.iter().map(|t| t.shallow_clone()).collect();
        f(&xs, false)
    }

    fn dup(v: &Tensor) -> Tensor {
        v.shallow_clone()
    }

    fn size(&self, v: &Tensor) -> Vec<i64> {
        v.size()
    }
}

/// A value on a tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

struct Segment<'a> {
    inputs: Vec<usize>,
    output: usize,
    f: SegmentFn<'a>,
}

/// The recorded forward of a checkpointed network.
#[derive(Default)]
pub struct Tape<'a> {
    /// Every value (detached) and whether a gradient flows into it.
    values: Vec<(Tensor, bool)>,
    segments: Vec<Segment<'a>>,
}

impl<'a> Tape<'a> {
    pub fn new() -> Self {
        Tape { values: vec![], segments: vec![] }
    }

    /// The value in `slot` (detached).
    pub fn value(&self, slot: Slot) -> &Tensor {
        &self.values[slot.0].0
    }

    /// Whether a gradient flows into `slot`.
    pub fn requires_grad(&self, slot: Slot) -> bool {
        self.values[slot.0].1
    }

    /// Segments recorded so far.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn leaves(&self, ids: &[usize]) -> Vec<Tensor> {
        ids.iter()
            .map(|&i| {
                let (t, grad) = &self.values[i];
                let leaf = t.detach();
                if *grad {
                    leaf.set_requires_grad(true)
                } else {
                    leaf
                }
            })
            .collect()
    }

    /// Back-propagates `grad` (the gradient of the loss with respect to `output`) through every
    /// recorded segment, last first, and adds the gradients of `params` to their `.grad`.
    pub fn backward(self, output: Slot, grad: &Tensor, params: &[Tensor]) -> Result<()> {
        let acc = self.gradients(output, grad, params)?;
        // Deposit into `.grad` as a plain backward would: ∂/∂p Σ p·acc = acc.
        let mut total: Option<Tensor> = None;
        for (p, a) in params.iter().zip(acc) {
            if let Some(a) = a {
                let term = (p * a.detach().to_kind(p.kind())).sum(Kind::Float);
                total = Some(match total {
                    Some(t) => t + term,
                    None => term,
                });
            }
        }
        if let Some(t) = total {
            t.f_backward()?;
        }
        Ok(())
    }

    /// [`Tape::backward`] returning the gradients of `params` (none for a parameter no segment reached)
    /// instead of adding them to `.grad`: no `.grad` is kept between steps, and none is written twice.
    pub fn gradients(mut self, output: Slot, grad: &Tensor, params: &[Tensor]) -> Result<Vec<Option<Tensor>>> {
        let mut grads: Vec<Option<Tensor>> = (0..self.values.len()).map(|_| None).collect();
        grads[output.0] = Some(grad.shallow_clone());
        let mut acc: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
        let add = |slot: &mut Option<Tensor>, g: Tensor| {
            *slot = Some(match slot.take() {
                Some(s) => s + g,
                None => g,
            });
        };
        for seg in self.segments.iter().rev() {
            if let Some(g) = grads[seg.output].take().filter(|_| self.values[seg.output].1) {
                let xs = self.leaves(&seg.inputs);
                let y = (seg.f)(&xs, true)?;
                if y.requires_grad() {
                    let wanted: Vec<usize> = (0..xs.len()).filter(|&i| xs[i].requires_grad()).collect();
                    let mut wrt: Vec<&Tensor> = wanted.iter().map(|&i| &xs[i]).collect();
                    wrt.extend(params.iter());
                    // The root `y · g` has the gradient `g` at `y` (the engine seeds it with ones).
                    let root = &y * g.to_kind(y.kind());
                    let gs = Tensor::f_run_backward(&[&root], &wrt, true, false)?;
                    let (inputs, params_g) = gs.split_at(wanted.len());
                    for (&i, g) in wanted.iter().zip(inputs) {
                        if g.defined() {
                            add(&mut grads[seg.inputs[i]], g.shallow_clone());
                        }
                    }
                    for (a, g) in acc.iter_mut().zip(params_g) {
                        if g.defined() {
                            add(a, g.shallow_clone());
                        }
                    }
                }
            }
            // Every segment reading this value came after it and is done: the tape shrinks as the
            // gradients grow, so the backward's peak holds the two at their largest only once.
            self.values[seg.output].0 = Tensor::new();
        }
        Ok(acc)
    }
}

impl<'a> Exec<'a> for Tape<'a> {
    type V = Slot;

    fn input(&mut self, t: &Tensor) -> Slot {
        self.values.push((t.detach(), t.requires_grad()));
        Slot(self.values.len() - 1)
    }

    fn run(&mut self, inputs: &[&Slot], f: SegmentFn<'a>) -> Result<Slot> {
        let ids: Vec<usize> = inputs.iter().map(|s| s.0).collect();
        let xs = self.leaves(&ids);
        // Run with gradients on, to learn whether the output needs one; the graph and the
        // activations it saved go with `y`.
        let y = tch::with_grad(|| f(&xs, false))?;
        let grad = y.requires_grad();
        self.values.push((y.detach(), grad));
        let output = self.values.len() - 1;
        self.segments.push(Segment { inputs: ids, output, f });
        Ok(Slot(output))
    }

    fn dup(v: &Slot) -> Slot {
        *v
    }

    fn size(&self, v: &Slot) -> Vec<i64> {
        self.value(*v).size()
    }
}
