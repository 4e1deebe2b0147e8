//! ResNet blocks and resamplers (diffusers `resnet.py`, `downsampling.py`, `upsampling.py`).
//!
//! Video: tensors stay `[B·F, C, H, W]` (convolutions per frame, as Tune-A-Video's pseudo-3-D
//! `InflatedConv3d`); with `frames > 1` the block's GroupNorms take their statistics over all frames of a
//! clip, as Tune-A-Video's `ResnetBlock3D` does on its 5-D tensor.

use super::nn::{silu, Builder, Conv2d, GroupNorm, Linear};
use tch::Tensor;

/// A GroupNorm over `[B·F, C, H, W]` whose statistics span the `frames` of each clip.
pub fn group_norm_frames(norm: &GroupNorm, x: &Tensor, frames: i64) -> Tensor {
    if frames <= 1 {
        return norm.forward(x);
    }
    let s = x.size();
    let (bf, c, h, w) = (s[0], s[1], s[2], s[3]);
    let clip = x.view([bf / frames, frames, c, h, w]).permute([0, 2, 1, 3, 4]);
    norm.forward(&clip).permute([0, 2, 1, 3, 4]).reshape([bf, c, h, w])
}

/// `ResnetBlock2D` with `time_embedding_norm="default"`.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(
        b: &Builder,
        in_c: i64,
        out_c: i64,
        temb: Option<i64>,
        groups: i64,
        eps: f64,
        output_scale_factor: f64,
    ) -> Self {
        ResnetBlock2D {
            norm1: GroupNorm::new(&b.sub("norm1"), groups, in_c, eps),
            conv1: Conv2d::new(&b.sub("conv1"), in_c, out_c, 3, 1, 1),
            time_emb_proj: temb.map(|t| Linear::new(&b.sub("time_emb_proj"), t, out_c, true)),
            norm2: GroupNorm::new(&b.sub("norm2"), groups, out_c, eps),
            conv2: Conv2d::new(&b.sub("conv2"), out_c, out_c, 3, 1, 1),
            conv_shortcut: (in_c != out_c).then(|| Conv2d::new(&b.sub("conv_shortcut"), in_c, out_c, 1, 1, 0)),
            output_scale_factor,
        }
    }

    /// `x` `[B·F, C, H, W]`, `temb` `[B·F, T]` (or none for the VAE).
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>, frames: i64) -> Tensor {
        let mut h = silu(&group_norm_frames(&self.norm1, x, frames));
        h = self.conv1.forward(&h);
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            h = h + proj.forward(&silu(t)).unsqueeze(-1).unsqueeze(-1);
        }
        h = silu(&group_norm_frames(&self.norm2, &h, frames));
        h = self.conv2.forward(&h);
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x.shallow_clone(),
        };
        let out = shortcut + h;
        if self.output_scale_factor != 1.0 {
            out / self.output_scale_factor
        } else {
            out
        }
    }
}

/// `Downsample2D` with a convolution (`downsamplers.0.conv`). Padding 0 pads right and bottom first,
/// as the VAE encoder does.
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(b: &Builder, channels: i64, padding: i64) -> Self {
        Downsample2D {
            conv: Conv2d::new(&b.sub("conv"), channels, channels, 3, 2, padding),
            pad_right_bottom: padding == 0,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.pad_right_bottom {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D` with a convolution: nearest-neighbour to `size` (2× by default), then a 3×3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(b: &Builder, channels: i64) -> Self {
        Upsample2D { conv: Conv2d::new(&b.sub("conv"), channels, channels, 3, 1, 1) }
    }

    /// `size`: the output `[H, W]`; the skip connection's size keeps odd sizes aligned.
    pub fn forward(&self, x: &Tensor, size: Option<[i64; 2]>) -> Tensor {
        let s = x.size();
        let up = match size {
            Some(size) => x.upsample_nearest2d(size, None, None),
            None => x.upsample_nearest2d([s[2] * 2, s[3] * 2], Some(2.0), Some(2.0)),
        };
        self.conv.forward(&up)
    }
}
