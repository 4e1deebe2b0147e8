//! The toy world's data: the synthetic clips of [`crate::synthetic`], split into training and
//! held-out combinations of shape, colour and motion, rendered once into a frame bank with captions.

use crate::error::Result;
use crate::progress::Progress;
use crate::synthetic::{synthetic_clip, Motion, Shape, SyntheticClip, SyntheticSpec, Texture, COLORS};
use tch::{Kind, Tensor};

/// Whether the (shape, colour, motion) combination is held out of training (about one in seven of the 160
/// combinations; every shape, colour and motion still occurs in training with other partners).
pub fn is_held_out(shape: Shape, color: &str, motion: Motion) -> bool {
    let s = Shape::ALL.iter().position(|&x| x == shape).unwrap_or(0);
    let c = COLORS.iter().position(|(n, _)| *n == color).unwrap_or(0);
    let m = Motion::ALL.iter().position(|&x| x == motion).unwrap_or(0);
    (s + 3 * c + 5 * m) % 7 == 3
}

/// The held-out combinations, in a fixed order.
pub fn held_out_combinations() -> Vec<(Shape, &'static str, Motion)> {
    let mut out = vec![];
    for &s in Shape::ALL {
        for (c, _) in COLORS {
            for &m in Motion::ALL {
                if is_held_out(s, c, m) {
                    out.push((s, c, m));
                }
            }
        }
    }
    out
}

/// A held-out clip as the demo and the end-to-end checks use it: the combination on a striped `bg`
/// background, 8 frames at 64², seed 7. An error when the combination is in the training split.
pub fn held_out_clip(shape: Shape, color: &str, motion: Motion, bg: &str) -> Result<SyntheticClip> {
    held_out_clip_of(shape, color, motion, bg, 8)
}

/// [`held_out_clip`] with `frames` frames (long clips: the motion spans them all).
pub fn held_out_clip_of(shape: Shape, color: &str, motion: Motion, bg: &str, frames: usize) -> Result<SyntheticClip> {
    if !is_held_out(shape, color, motion) {
        return Err(crate::error::Error::Invalid(format!(
            "a {color} {} {motion:?} is in the toy world's training split, not held out",
            shape.name()
        )));
    }
    synthetic_clip(&SyntheticSpec {
        shape: Some(shape),
        color: Some(color.into()),
        motion: Some(motion),
        background: Some(Texture::Stripes),
        background_color: Some(bg.into()),
        frames,
        seed: 7,
        ..Default::default()
    })
}

/// Rendered frames with their captions.
pub struct FrameBank {
    /// `[N, 3, S, S]` 8-bit RGB.
    pub frames: Tensor,
    /// Caption of each frame (its clip's).
    pub captions: Vec<String>,
    /// Clip index of each frame.
    pub clip_of: Vec<usize>,
    /// The distinct captions, clip by clip.
    pub clip_captions: Vec<String>,
    /// `[N, 1, S, S]` 8-bit subject masks (1 inside), frame by frame.
    pub masks: Tensor,
    /// The resolved spec of each clip.
    pub specs: Vec<SyntheticSpec>,
}

impl FrameBank {
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Frames `idx` in [−1, 1], float.
    pub fn pixels(&self, idx: &[i64]) -> Tensor {
        let i = Tensor::from_slice(idx);
        self.frames.index_select(0, &i).to_kind(Kind::Float) / 127.5 - 1.0
    }
}

/// Renders `clips` training clips (`held_out == false`) or held-out clips (`true`) of `frames` frames at
/// `size`², from seeds `seed, seed + 1, …` (seeds whose draw falls in the other split are skipped).
pub fn frame_bank(clips: usize, frames: usize, size: i64, seed: u64, held_out: bool) -> Result<FrameBank> {
    let mut all = vec![];
    let (mut captions, mut clip_of, mut clip_captions) = (vec![], vec![], vec![]);
    let (mut masks, mut specs) = (vec![], vec![]);
    let mut progress =
        Progress::new(if held_out { "held-out clips" } else { "training clips" }, clips as u64).unit("clips");
    let mut s = seed;
    while clip_captions.len() < clips {
        let spec = SyntheticSpec { frames, width: size, height: size, seed: s, ..Default::default() };
        s += 1;
        let clip = crate::progress::quietly(|| synthetic_clip(&spec))?;
        let r = &clip.spec;
        let color = r.color.as_deref().unwrap_or("");
        if is_held_out(r.shape.expect("resolved"), color, r.motion.expect("resolved")) != held_out {
            continue;
        }
        let bytes = ((clip.video.frames() + 1.0) * 127.5).round().clamp(0.0, 255.0).to_kind(Kind::Uint8);
        all.push(bytes);
        masks.push(clip.masks.tensor().gt(0.5).to_kind(Kind::Uint8));
        specs.push(clip.spec.clone());
        for _ in 0..frames {
            captions.push(clip.caption.clone());
            clip_of.push(clip_captions.len());
        }
        clip_captions.push(clip.caption);
        progress.step()?;
    }
    progress.finish();
    Ok(FrameBank {
        frames: Tensor::cat(&all, 0),
        captions,
        clip_of,
        clip_captions,
        masks: Tensor::cat(&masks, 0),
        specs,
    })
}

/// A deterministic stream of batch indices: shuffled epochs from a SplitMix64 seed.
pub struct Batches {
    state: u64,
    order: Vec<i64>,
    pos: usize,
    n: usize,
}

impl Batches {
    pub fn new(n: usize, seed: u64) -> Self {
        Batches { state: seed ^ 0xB47C_4E5D, order: vec![], pos: n, n }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next `size` indices (a new shuffle when an epoch runs out).
    pub fn next(&mut self, size: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            if self.pos >= self.order.len() {
                self.order = (0..self.n as i64).collect();
                for i in (1..self.order.len()).rev() {
                    let j = (self.next_u64() % (i as u64 + 1)) as usize;
                    self.order.swap(i, j);
                }
                self.pos = 0;
            }
            out.push(self.order[self.pos]);
            self.pos += 1;
        }
        out
    }

    /// A uniform draw in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_and_covers_every_value() {
        let held = held_out_combinations();
        assert!(held.len() > 15 && held.len() < 35, "{}", held.len());
        for &s in Shape::ALL {
            assert!(COLORS.iter().any(|(c, _)| Motion::ALL.iter().any(|&m| !is_held_out(s, c, m))));
        }
        let bank = frame_bank(6, 2, 32, 0, true).unwrap();
        assert_eq!(bank.frames.size(), [12, 3, 32, 32]);
        assert_eq!(bank.clip_captions.len(), 6);
        let train = frame_bank(6, 2, 32, 0, false).unwrap();
        for c in &train.clip_captions {
            assert!(!bank.clip_captions.contains(c));
        }
    }

    #[test]
    fn batches_cover_epochs() {
        let mut b = Batches::new(10, 1);
        let mut first = b.next(10);
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert_eq!(Batches::new(10, 1).next(7), Batches::new(10, 1).next(7));
    }
}
