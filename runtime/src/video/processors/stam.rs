//! STAM, EI²'s Shift-restricted Temporal Attention (§4.3, Eqs. 8–9): the temporal stage with Instance
//! Centering over time instead of the LayerNorm (no rescaling) and an output bias starting at zero, and on
//! its `attn_temp` this processor: queries and keys as usual, the value and output projections spectrally
//! normalised (`W̄ = W / σ_max(W)`), σ estimated by persistent power iteration — one iteration per
//! training step, as `torch.nn.utils.spectral_norm` does, none at inference.

use super::temporal::TemporalStage;
use super::{Build, Entry, ModuleSpec, Role, NO_PARAMS};
use crate::error::{Error, Result};
use crate::models::attention::{BlockShape, BlockStage};
use crate::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use crate::models::nn::Builder;
use std::cell::RefCell;
use tch::Tensor;
use vidtune_kernels::attention as katt;
use vidtune_kernels::optim::PowerIteration;

/// Power iterations when the state is created (PyTorch's parametrization does 15; 50 bring σ within
/// 1e-3 of the largest singular value even for nearly degenerate spectra).
const WARMUP: usize = 50;

#[derive(Debug, Default)]
pub struct Stam {
    state: RefCell<Option<[PowerIteration; 2]>>,
}

impl Stam {
    fn ensure_state(&self, attn: &Attention) {
        let mut state = self.state.borrow_mut();
        if state.is_none() {
            let init = |w: &Tensor| {
                let (o, i) = (w.size()[0], w.size()[1]);
                let opts = (w.kind(), w.device());
                PowerIteration::new(w, &Tensor::randn([o], opts), &Tensor::randn([i], opts), WARMUP)
            };
            *state = Some([init(&attn.to_v.weight), init(&attn.to_out.weight)]);
        }
    }

    /// The normalised value and output weights (updating the estimates when training).
    pub fn normalized_weights(&self, attn: &Attention, training: bool) -> (Tensor, Tensor) {
        self.ensure_state(attn);
        let mut state = self.state.borrow_mut();
        let [sv, so] = state.as_mut().expect("state initialised");
        if training {
            sv.iterate(&attn.to_v.weight, 1);
            so.iterate(&attn.to_out.weight, 1);
        }
        (sv.normalized(&attn.to_v.weight).0, so.normalized(&attn.to_out.weight).0)
    }
}

impl AttnProcessor for Stam {
    fn name(&self) -> String {
        "stam".into()
    }

    fn forward(
        &self,
        attn: &Attention,
        hidden: &Tensor,
        context: Option<&Tensor>,
        ctx: &AttnContext,
    ) -> Result<Tensor> {
        let source = context.unwrap_or(hidden);
        let (wv, wo) = self.normalized_weights(attn, ctx.training);
        let q = katt::split_heads(&attn.to_q.forward(hidden), attn.heads);
        let k = katt::split_heads(&attn.to_k.forward(source), attn.heads);
        let v = katt::split_heads(&source.linear(&wv, attn.to_v.bias.as_ref()), attn.heads);
        let out = katt::attention(&q.contiguous(), &k.contiguous(), &v.contiguous(), None, false, None, ctx.backend);
        Ok(katt::merge_heads(&out).linear(&wo, attn.to_out.bias.as_ref()))
    }

    fn prepare(&self, attn: &Attention) {
        self.ensure_state(attn);
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        match &*self.state.borrow() {
            Some([v, o]) => vec![
                ("to_v.weight_u".into(), v.u.shallow_clone()),
                ("to_v.weight_v".into(), v.v.shallow_clone()),
                ("to_out.0.weight_u".into(), o.u.shallow_clone()),
                ("to_out.0.weight_v".into(), o.v.shallow_clone()),
            ],
            None => vec![],
        }
    }

    fn load_state(&self, state: &[(String, Tensor)]) -> Result<()> {
        let get = |k: &str| {
            state
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::Invalid(format!("STAM state lacks {k}")))
        };
        *self.state.borrow_mut() = Some([
            PowerIteration { u: get("to_v.weight_u")?, v: get("to_v.weight_v")? },
            PowerIteration { u: get("to_out.0.weight_u")?, v: get("to_out.0.weight_v")? },
        ]);
        Ok(())
    }
}

/// The `stam` module's stage: the temporal stage, instance-centred, with this processor.
pub fn build(b: &Builder, shape: &BlockShape, _spec: &ModuleSpec) -> Result<Box<dyn BlockStage>> {
    let stage = TemporalStage::new(b, shape, true);
    stage.attn_temp.set_processor(Box::new(Stam::default()));
    Ok(Box::new(stage))
}

/// The `stam` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Temporal,
    name: "stam",
    summary: "shift-restricted temporal attention: instance centering, spectral norms (EI²)",
    params: NO_PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Stage { block: build, model: None },
};
