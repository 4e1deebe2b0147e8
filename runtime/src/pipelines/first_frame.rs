//! First-frame conditioning in sampling (LAMP, dynamic mask guidance): frame 0 held at a clean latent,
//! its latent shared into the other frames' starting noise (Eq. 8), and — beyond the papers — carried
//! along the subject's masks, into the shared noise (`shared_noise_follow`) and, for the first steps,
//! imposed inside the masks (`subject_guide`).

use super::common::to_video_latents;
use crate::error::Result;
use tch::Tensor;
use vidtune_kernels::masks as kmasks;
use vidtune_kernels::schedulers::NoiseSchedule;

/// Holds frame 0 at a clean latent: before the UNet sees the latents and after the scheduler moved them.
pub(super) struct HoldFirstFrame(pub(super) Tensor);

/// `x` `[B, C, F, h, w]` with frame 0 replaced by `z` `[1, C, 1, h, w]`.
pub(super) fn hold_first(x: &Tensor, z: &Tensor) -> Tensor {
    let f = x.size()[2];
    let b = x.size()[0];
    let first = z.to_kind(x.kind()).expand([b, -1, 1, -1, -1], false);
    if f == 1 {
        return first.contiguous();
    }
    Tensor::cat(&[first, x.narrow(2, 1, f - 1)], 2)
}

/// Mixes `z` `[1, C, 1, h, w]` into frames 1.. of `x` (dynamic mask guidance Eq. 8).
pub fn share_noise(x: &Tensor, z: &Tensor, alpha: f64, variance_preserving: bool) -> Tensor {
    let f = x.size()[2];
    if f == 1 {
        return x.shallow_clone();
    }
    let rest = x.narrow(2, 1, f - 1);
    let mut mixed = z.to_kind(x.kind()) * alpha + rest * (1.0 - alpha);
    if variance_preserving {
        mixed = mixed / (alpha * alpha + (1.0 - alpha) * (1.0 - alpha)).sqrt();
    }
    Tensor::cat(&[x.narrow(2, 0, 1), mixed], 2)
}

/// The first frame's latent `z` `[1, C, 1, h, w]` carried along the clip's masks `[F, 1, H, W]` (any
/// resolution): for each frame, `z` moved by the shift of the frame's mask centroid from frame 0's (the
/// subject's latent lands where the subject is), with the masks at latent resolution, 0/1, `[1, 1, F, h, w]`.
/// A frame with no mask, or a clip whose frame 0 has none, keeps `z` where it is.
pub struct Carried {
    pub moved: Tensor,
    pub masks: Tensor,
}

pub fn carry_along(z: &Tensor, masks: &Tensor, lh: i64, lw: i64) -> Result<Carried> {
    let f = masks.size()[0];
    let (mh, mw) = (masks.size()[2] as f64, masks.size()[3] as f64);
    let centres = kmasks::centroids(masks)?;
    let on = kmasks::resize(masks, lh, lw)?.gt(0.5).to_kind(z.kind()).to_device(z.device());
    let moved: Vec<Tensor> = (0..f as usize)
        .map(|i| match (centres[0], centres[i]) {
            (Some((y0, x0)), Some((yi, xi))) => {
                let dy = ((yi - y0) * lh as f64 / mh).round() as i64;
                let dx = ((xi - x0) * lw as f64 / mw).round() as i64;
                kmasks::translate(z, dy, dx)
            }
            _ => z.shallow_clone(),
        })
        .collect();
    Ok(Carried { moved: Tensor::cat(&moved, 2), masks: to_video_latents(&on) })
}

/// [`share_noise`] with the first frame's subject carried along the masks (`shared_noise_follow`): in frame
/// f, what is shared inside its mask is `z` moved with the subject ([`carry_along`]); outside both masks it
/// is `z` as it is; where frame 0's subject was and frame f's is not, nothing is shared (the noise stays
/// fresh).
pub fn share_noise_following(
    x: &Tensor,
    z: &Tensor,
    alpha: f64,
    variance_preserving: bool,
    masks: &Tensor,
) -> Result<Tensor> {
    let (f, lh, lw) = (x.size()[2], x.size()[3], x.size()[4]);
    if f == 1 {
        return Ok(x.shallow_clone());
    }
    let z = z.to_kind(x.kind());
    let c = carry_along(&z, masks, lh, lw)?;
    let (inside, first) = (&c.masks, c.masks.narrow(2, 0, 1));
    let outside = inside.ones_like() - inside;
    let shared = &c.moved * inside + &z * &outside;
    let a = (inside.ones_like() - &first * &outside) * alpha;
    let mut mixed = x + &a * (shared - x);
    if variance_preserving {
        let one = a.ones_like();
        mixed = mixed / (&a * &a + (&one - &a) * (&one - &a)).sqrt();
    }
    Ok(Tensor::cat(&[x.narrow(2, 0, 1), mixed.narrow(2, 1, f - 1)], 2))
}

/// `subject_guide`: for the first steps, inside each frame's mask the latents are the first frame's latent
/// carried along the masks ([`carry_along`]), noised to the step's level with the frame's starting noise.
/// `steps` counts from the top of the schedule (as the loop's step index does), so under `strength` < 1
/// the skipped steps use up their share. The starting noise is the loop's starting latents: pure noise when
/// sampling from seeded noise, and close to it from an inversion at full strength; from part-way down an
/// inversion it still holds some of the clip, so the guidance is meant for sampling from the top.
pub(super) struct GuideSubject {
    pub(super) carried: Carried,
    pub(super) noise: Tensor,
    pub(super) schedule: NoiseSchedule,
    pub(super) steps: usize,
}

impl GuideSubject {
    pub(super) fn apply(&self, step: usize, t: i64, x: &Tensor) -> Option<Tensor> {
        if step >= self.steps {
            return None;
        }
        let a = self.schedule.alpha_cumprod(t).double_value(&[]);
        let target = &self.carried.moved * a.sqrt() + &self.noise * (1.0 - a).sqrt();
        Some(x + &self.carried.masks * (target.to_kind(x.kind()) - x))
    }
}
