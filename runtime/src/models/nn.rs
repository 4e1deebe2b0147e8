//! The layers every model is built from (Linear, Conv2d, GroupNorm, LayerNorm, Embedding) and the
//! [`Builder`] that creates their parameters under the exact safetensors key of each tensor.
//!
//! Parameters live in a tch `VarStore`, named by their path (`down_blocks.0.resnets.1.conv1.weight`).
//! Models that are about to receive loaded weights are built with [`InitMode::Empty`]: their tensors are
//! allocated but not initialised (no random fill of 860 M parameters that loading overwrites anyway).

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// How new parameters are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitMode {
    /// PyTorch's default initialisation of each layer type.
    Random,
    /// Allocated, not initialised: weights will be loaded.
    Empty,
}

/// Creates parameters under a path of the var store.
#[derive(Clone)]
pub struct Builder<'a> {
    path: Path<'a>,
    mode: InitMode,
}

impl<'a> Builder<'a> {
    pub fn new(path: Path<'a>, mode: InitMode) -> Self {
        Builder { path, mode }
    }

    /// The builder for a child module (`b.sub("resnets").sub(0)`).
    pub fn sub<T: ToString>(&self, name: T) -> Builder<'a> {
        Builder { path: self.path.sub(name.to_string()), mode: self.mode }
    }

    pub fn mode(&self) -> InitMode {
        self.mode
    }

    /// The same path with another initialisation mode (new layers of an inflated model are always
    /// initialised, even where the rest will be filled from a checkpoint).
    pub fn with_mode(&self, mode: InitMode) -> Builder<'a> {
        Builder { path: self.path.clone(), mode }
    }

    /// The dotted path of this builder (`down_blocks.0.attentions.0.transformer_blocks.0`).
    pub fn path_name(&self) -> String {
        self.path.components().collect::<Vec<_>>().join(".")
    }

    pub fn device(&self) -> tch::Device {
        self.path.device()
    }

    /// A parameter named `name` with PyTorch-style initialisation `init` (ignored in `Empty` mode).
    pub fn param(&self, name: &str, dims: &[i64], init: Init) -> Tensor {
        match self.mode {
            InitMode::Random => self.path.var(name, dims, init),
            InitMode::Empty => self.path.add(name, Tensor::empty(dims, (Kind::Float, self.path.device())), true),
        }
    }

    /// A parameter initialised to zero in `Random` mode (used for layers documented as zero-initialised).
    pub fn zeros(&self, name: &str, dims: &[i64]) -> Tensor {
        self.param(name, dims, Init::Const(0.0))
    }
}

fn uniform_bound(fan_in: i64) -> Init {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// `torch.nn.Linear`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(b: &Builder, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let init = uniform_bound(in_dim);
        let weight = b.param("weight", &[out_dim, in_dim], init);
        let bias = bias.then(|| b.param("bias", &[out_dim], init));
        Linear { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        crate::flops::add(crate::flops::linear(x.numel() as i64, self.in_dim(), self.out_dim()));
        crate::flops::timed(crate::flops::Work::Linear, || x.linear(&self.weight, self.bias.as_ref()))
    }

    pub fn in_dim(&self) -> i64 {
        self.weight.size()[1]
    }

    pub fn out_dim(&self) -> i64 {
        self.weight.size()[0]
    }
}

/// `torch.nn.Conv2d` with square kernels.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    pub fn new(b: &Builder, in_c: i64, out_c: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        let init = uniform_bound(in_c * kernel * kernel);
        let weight = b.param("weight", &[out_c, in_c, kernel, kernel], init);
        let bias = Some(b.param("bias", &[out_c], init));
        Conv2d { weight, bias, stride, padding }
    }

    /// A convolution without bias (CLIP's patch embedding).
    pub fn new_no_bias(b: &Builder, in_c: i64, out_c: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        let weight = b.param("weight", &[out_c, in_c, kernel, kernel], uniform_bound(in_c * kernel * kernel));
        Conv2d { weight, bias: None, stride, padding }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let out = crate::flops::timed(crate::flops::Work::Conv, || {
            vidtune_kernels::conv::conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
        });
        let k = self.weight.size()[2];
        crate::flops::add(crate::flops::conv(out.numel() as i64, self.weight.size()[1], k));
        out
    }

    pub fn out_channels(&self) -> i64 {
        self.weight.size()[0]
    }
}

/// `torch.nn.GroupNorm` (affine).
#[derive(Debug)]
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: i64,
    pub eps: f64,
}

impl GroupNorm {
    pub fn new(b: &Builder, groups: i64, channels: i64, eps: f64) -> Self {
        GroupNorm {
            weight: b.param("weight", &[channels], Init::Const(1.0)),
            bias: b.param("bias", &[channels], Init::Const(0.0)),
            groups,
            eps,
        }
    }

    /// Normalises `[N, C, *]`: statistics per sample and group, over every trailing dimension (so a
    /// `[B, C, F, H, W]` input is normalised over all frames at once).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// `torch.nn.LayerNorm` over the last dimension (affine).
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(b: &Builder, dim: i64, eps: f64) -> Self {
        LayerNorm {
            weight: b.param("weight", &[dim], Init::Const(1.0)),
            bias: b.param("bias", &[dim], Init::Const(0.0)),
            eps,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dim = self.weight.size()[0];
        x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

/// `torch.nn.Embedding`.
#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    pub fn new(b: &Builder, count: i64, dim: i64) -> Self {
        Embedding { weight: b.param("weight", &[count, dim], Init::Randn { mean: 0.0, stdev: 1.0 }) }
    }

    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, -1, false, false)
    }

    pub fn count(&self) -> i64 {
        self.weight.size()[0]
    }
}

/// SiLU, the activation of every SD1.x block.
pub fn silu(x: &Tensor) -> Tensor {
    x.silu()
}
