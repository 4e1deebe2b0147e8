//! What video modules read in one UNet call, kept out of the image model's [`AttnContext`]: the
//! [`VideoCall`] (the clip's masks as a pyramid, the subject's tokens, where a window starts, the anchor
//! frame), built once per call by `conditioning.rs` and put in the context's [`CallData`], where each
//! module's registry hook adds its own values.

use crate::error::{Error, Result};
use crate::models::attention_processor::{AttnContext, CallData};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tch::{Device, Tensor};

/// The video data of one UNet call.
#[derive(Debug, Clone)]
pub struct VideoCall {
    /// Clips in the batch.
    pub batch: i64,
    /// Frames per clip.
    pub frames: i64,
    /// Index of the first frame of this call in the whole clip (windows of a long clip).
    pub frame_offset: i64,
    /// The device the call runs on.
    pub device: Device,
    /// The subject's masks `[B·F, 1, h, w]` at every resolution of the call, for mask-aware modules.
    pub masks: Option<Rc<Pyramid>>,
    /// Per clip of the batch, the positions of the subject's tokens in its text (mask cross-attention).
    pub subject_tokens: Option<Rc<Vec<Vec<i64>>>>,
    /// The first frame that first-frame attention reads, when it is not the call's own (windows of a
    /// long clip anchored on the clip's first frame).
    pub anchor: Option<Rc<AnchorFrame>>,
}

impl VideoCall {
    /// A call of `batch` clips of `frames` frames with nothing else.
    pub fn new(batch: i64, frames: i64, device: Device) -> Self {
        VideoCall { batch, frames, frame_offset: 0, device, masks: None, subject_tokens: None, anchor: None }
    }

    /// The call data holding this (and nothing else yet).
    pub fn into_data(self) -> CallData {
        let mut data = CallData::default();
        data.insert(self);
        data
    }

    /// The video data of the call `ctx` belongs to (`None` in an image model's call).
    pub fn of(ctx: &AttnContext) -> Option<&VideoCall> {
        ctx.data.get::<VideoCall>()
    }

    /// The masks of the call `ctx` belongs to.
    pub fn masks(ctx: &AttnContext) -> Option<&Pyramid> {
        Self::of(ctx).and_then(|c| c.masks.as_deref())
    }
}

/// The first frame's tensors a first-frame processor reads (`own`: this call's, `[B, …]` each): its own, or
/// the anchor's (see [`AnchorFrame`]).
pub fn first_frame(ctx: &AttnContext, own: Vec<Tensor>) -> Result<Vec<Tensor>> {
    match VideoCall::of(ctx).and_then(|c| c.anchor.as_ref()) {
        Some(a) => a.first_frame(own),
        None => Ok(own),
    }
}

/// Tensors `[N, C, h, w]` at every resolution a UNet call visits, looked up by their spatial size: the
/// subject's masks (`C = 1`, area-averaged once per call) or the mask encoder's features.
#[derive(Debug, Default)]
pub struct Pyramid {
    pub levels: Vec<Tensor>,
}

impl Pyramid {
    /// The level of spatial size `h × w`.
    pub fn at(&self, h: i64, w: i64) -> Option<&Tensor> {
        self.levels.iter().find(|t| {
            let s = t.size();
            s[2] == h && s[3] == w
        })
    }

    /// The level of the current tokens (`ctx.spatial`), as tokens `[N, h·w, C]`; an error naming `what`
    /// when it is missing.
    pub fn tokens(&self, ctx: &AttnContext, what: &str) -> Result<Tensor> {
        let (h, w) = ctx.spatial.ok_or_else(|| Error::Invalid(format!("{what}: runs inside a spatial transformer")))?;
        let t = self.at(h, w).ok_or_else(|| Error::Invalid(format!("{what}: nothing at {h}x{w}")))?;
        let s = t.size();
        Ok(t.view([s[0], s[1], h * w]).transpose(1, 2))
    }
}

/// What first-frame attention (`sparse_causal`, `first_frame`) reads of a clip's first frame, shared by
/// the windows of a long clip so that every window attends to the clip's first frame without running it
/// again: the call that holds the first frame **records**, attention layer by attention layer in call
/// order, the tensors a processor takes from its first frame (keys, values, mask shares, each `[B, …]`);
/// later calls **replay** them in place of their own first frame, repeated over a batch of several
/// windows. Once per denoising step.
#[derive(Debug, Default)]
pub struct AnchorFrame {
    recorded: RefCell<Vec<Vec<Tensor>>>,
    replaying: Cell<bool>,
    next: Cell<usize>,
}

impl AnchorFrame {
    /// An empty store that records the next call.
    pub fn recording() -> Self {
        AnchorFrame::default()
    }

    /// Ends the recording (or rewinds a replay): the next call reads from the first layer on.
    pub fn replay(&self) {
        self.replaying.set(true);
        self.next.set(0);
    }

    /// Layers recorded.
    pub fn len(&self) -> usize {
        self.recorded.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first-frame tensors of the next layer: when recording, `own` (this call's first frame, kept);
    /// when replaying, the recorded ones, repeated to `own`'s batch.
    pub fn first_frame(&self, own: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if !self.replaying.get() {
            self.recorded.borrow_mut().push(own.iter().map(Tensor::shallow_clone).collect());
            return Ok(own);
        }
        let i = self.next.get();
        self.next.set(i + 1);
        let recorded = self.recorded.borrow();
        let entry = recorded.get(i).filter(|e| e.len() == own.len()).ok_or_else(|| {
            Error::Invalid(format!(
                "anchor frame: layer {i} of this call has no recorded first frame ({} layers recorded); the anchor's \
                 call and the window's must run the same modules",
                recorded.len()
            ))
        })?;
        entry
            .iter()
            .zip(&own)
            .map(|(r, o)| {
                let (rb, ob) = (r.size()[0], o.size()[0]);
                if ob % rb != 0 || r.size()[1..] != o.size()[1..] {
                    return Err(Error::Invalid(format!(
                        "anchor frame: recorded {:?} does not fit a call of {:?}",
                        r.size(),
                        o.size()
                    )));
                }
                let mut reps = vec![1i64; r.dim()];
                reps[0] = ob / rb;
                // A window on another device (a replica) reads a copy.
                let r = r.to_device(o.device());
                Ok(if ob == rb { r } else { r.repeat(reps.as_slice()) })
            })
            .collect()
    }
}
