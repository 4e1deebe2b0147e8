//! 2-D convolution with the algorithm picked by shape: libtorch's own kernels, or, on the CPU for the
//! small feature maps of a UNet's deepest levels, one matrix product over the unfolded patches.
//!
//! At 8 frames of 128² (latents of 16²), SD 1.x's 1280-channel levels are 4×4 and 2×2. There oneDNN's
//! direct convolution is slow, its backward most of all: on a 2-core Xeon (fp32, 2 threads, forward and
//! backward of 8 samples) a 2560→1280 3×3 convolution took 350 ms at 4×4 and 220–270 ms at 2×2, against 138
//! and 77 ms as `unfold` + one GEMM; 1280→1280 took 114–161 against 70 ms at 4×4 and 70–114 against 37 ms at
//! 2×2. At 8×8 and above, and below 1024 input channels, libtorch's kernel was as fast or faster (640→640 at
//! 8×8: 40–51 against 50–53 ms), so those keep it. The result is the same convolution to float rounding.

use tch::{Device, Kind, Tensor};

/// Output maps up to this many pixels (H·W) go through the GEMM path on the CPU.
pub const SMALL_MAP: i64 = 16;
/// … when the convolution reads at least this many channels.
pub const WIDE_INPUT: i64 = 1024;

/// Whether [`conv2d`] takes the unfold + GEMM path for input `x` and `weight` `[O, C, k, k]`.
pub fn unfolds(x: &Tensor, weight: &Tensor, stride: i64, padding: i64) -> bool {
    let (s, w) = (x.size(), weight.size());
    s.len() == 4
        && w.len() == 4
        && x.device() == Device::Cpu
        && matches!(x.kind(), Kind::Float | Kind::Double)
        && stride == 1
        && w[2] == w[3]
        && w[2] % 2 == 1
        && padding == w[2] / 2
        && s[1] >= WIDE_INPUT
        && s[2] * s[3] <= SMALL_MAP
}

/// `x.conv2d(weight, bias, stride, padding)` with dilation 1 and one group, for `x` `[N, C, H, W]`.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: i64, padding: i64) -> Tensor {
    if !unfolds(x, weight, stride, padding) {
        return x.conv2d(weight, bias, [stride; 2], [padding; 2], [1, 1], 1);
    }
    let (s, w) = (x.size(), weight.size());
    let (n, h, wd, k, o) = (s[0], s[2], s[3], w[2], w[0]);
    // [N, C·k², H·W] → [C·k², N·H·W]: one product for the whole batch.
    let cols = if k == 1 { x.reshape([n, s[1], h * wd]) } else { x.im2col([k, k], [1, 1], [padding; 2], [1, 1]) };
    let cols = cols.transpose(0, 1).reshape([s[1] * k * k, n * h * wd]);
    let flat = weight.reshape([o, -1]);
    let y = match bias {
        Some(b) => b.unsqueeze(1).addmm(&flat, &cols),
        None => flat.mm(&cols),
    };
    y.view([o, n, h, wd]).transpose(0, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: i64, o: i64, hw: i64, k: i64, bias: bool) {
        tch::manual_seed(3);
        let opts = (Kind::Double, Device::Cpu);
        let x = Tensor::randn([3, c, hw, hw + 1], opts).set_requires_grad(true);
        let w = (Tensor::randn([o, c, k, k], opts) * 0.05).set_requires_grad(true);
        let b = bias.then(|| Tensor::randn([o], opts).set_requires_grad(true));
        let p = k / 2;
        let ours = conv2d(&x, &w, b.as_ref(), 1, p);
        let theirs = x.conv2d(&w, b.as_ref(), [1, 1], [p, p], [1, 1], 1);
        assert!(unfolds(&x, &w, 1, p) == (hw * (hw + 1) <= SMALL_MAP && c >= WIDE_INPUT));
        assert_eq!(ours.size(), theirs.size());
        assert!(ours.allclose(&theirs, 1e-10, 1e-10, false), "forward {c}->{o} {hw} k{k}");
        // Gradients of a weighted sum agree too (the GEMM path trains).
        let g = Tensor::randn(theirs.size(), opts);
        let grads = |y: &Tensor| {
            let mut inputs = vec![&x, &w];
            inputs.extend(b.as_ref());
            Tensor::run_backward(&[(y * &g).sum(Kind::Double)], &inputs, false, false)
        };
        for (a, b) in grads(&ours).iter().zip(grads(&theirs).iter()) {
            assert!(a.allclose(b, 1e-10, 1e-10, false), "backward {c}->{o} {hw} k{k}");
        }
    }

    #[test]
    fn the_gemm_path_is_the_same_convolution_forward_and_backward() {
        check(1024, 8, 3, 3, true); // 3×4 = 12 pixels: unfolded
        check(1024, 8, 2, 1, false); // 1×1, no bias: unfolded
        check(1024, 8, 4, 3, true); // 4×5 = 20 pixels: libtorch's
        check(16, 8, 2, 3, true); // narrow: libtorch's
    }
}
