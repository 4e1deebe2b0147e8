//! `gated`: Tune-A-Video's temporal attention with a learned gate per frame position. Frame `p` of the
//! whole clip (a window's offset included) adds `gate[p] ·` the temporal attention's change, so tuning
//! can learn how much each frame follows the others; frames past the last gate share it. The gates
//! start at 1 (exactly Tune-A-Video's stage). Its hook prepares the call's frame positions.

use super::temporal::TemporalStage;
use super::{Build, Entry, ModuleSpec, Param, Role};
use crate::error::{Error, Result};
use crate::models::attention::{BlockShape, BlockStage, Placement};
use crate::models::attention_processor::{Attention, AttnContext, CallData};
use crate::models::nn::{Builder, InitMode};
use crate::video::call::VideoCall;
use tch::Tensor;

pub const PARAMS: &[Param] = &[Param {
    name: "positions",
    default: 24.0,
    doc: "frame positions with a gate of their own (later frames share the last)",
}];

/// The positions in the whole clip of a call's frames, one per row of the hidden states `[B·F]`.
#[derive(Debug)]
pub struct FramePositions(pub Tensor);

/// The hook: the positions of the call's frames, clip by clip.
fn prepare(_spec: &ModuleSpec, call: &VideoCall, data: &mut CallData) -> Result<()> {
    let positions: Vec<i64> = (0..call.batch).flat_map(|_| (0..call.frames).map(|i| call.frame_offset + i)).collect();
    data.insert(FramePositions(Tensor::from_slice(&positions).to_device(call.device)));
    Ok(())
}

/// Tune-A-Video's temporal stage and the gates `gate_temp.weight` `[positions]`.
#[derive(Debug)]
pub struct GatedTemporal {
    pub temporal: TemporalStage,
    pub gate: Tensor,
}

fn build(b: &Builder, shape: &BlockShape, spec: &ModuleSpec) -> Result<Box<dyn BlockStage>> {
    let positions = (spec.get("positions") as i64).max(1);
    let gate = b.with_mode(InitMode::Random).sub("gate_temp").param("weight", &[positions], tch::nn::Init::Const(1.0));
    Ok(Box::new(GatedTemporal { temporal: TemporalStage::new(b, shape, false), gate }))
}

impl BlockStage for GatedTemporal {
    fn name(&self) -> String {
        "gated".into()
    }

    fn placement(&self) -> Placement {
        Placement::AfterFeedForward
    }

    fn forward(&self, x: &Tensor, ctx: &AttnContext) -> Result<Tensor> {
        let positions = ctx.data.get::<FramePositions>().ok_or_else(|| {
            Error::Invalid("gated temporal attention runs in a video model's call (its hook numbers the frames)".into())
        })?;
        if positions.0.size()[0] != x.size()[0] {
            return Err(Error::Invalid(format!(
                "gated temporal attention: {} frame positions for {} rows",
                positions.0.size()[0],
                x.size()[0]
            )));
        }
        let last = self.gate.size()[0] - 1;
        let g = self.gate.index_select(0, &positions.0.clamp_max(last)).to_kind(x.kind()).view([-1, 1, 1]);
        let out = self.temporal.forward(x, ctx)?;
        Ok(x + (out - x) * g)
    }

    fn attentions(&self) -> Vec<(&'static str, &Attention)> {
        self.temporal.attentions()
    }
}

/// The `gated` module's entry in the registry.
pub const ENTRY: Entry = Entry {
    role: Role::Temporal,
    name: "gated",
    summary: "Tune-A-Video's temporal attention with a learned gate per frame position",
    params: PARAMS,
    needs_masks: false,
    trains: &["gate_temp"],
    prepare: Some(prepare),
    build: Build::Stage { block: build, model: None },
};
