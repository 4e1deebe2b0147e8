//! `T2IAdapter` (diffusers `adapter.py`), full and light: a small convolutional network that turns a
//! control image (pixel-unshuffled to the latents' size) into one feature map per UNet down block, which
//! the UNet adds inside those blocks ([`AdapterFeatures`] in its call data).

use super::nn::{Builder, Conv2d};
use crate::config::adapter::T2IAdapterConfig;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// What T2I-Adapters add to one UNet call: one feature map per down block, in order (a feature left over
/// after the down blocks goes to the mid block's output when it has its shape).
#[derive(Debug)]
pub struct AdapterFeatures {
    pub features: Vec<Tensor>,
}

impl AdapterFeatures {
    /// The sum of two adapters' features (diffusers' MultiAdapter with the weights already applied).
    pub fn plus(self, other: AdapterFeatures) -> Result<AdapterFeatures> {
        if self.features.len() != other.features.len()
            || self.features.iter().zip(&other.features).any(|(a, b)| a.size() != b.size())
        {
            return Err(Error::Invalid("control: two T2I-Adapters whose features differ in count or shape".into()));
        }
        Ok(AdapterFeatures { features: self.features.iter().zip(&other.features).map(|(a, b)| a + b).collect() })
    }
}

/// A residual block: conv (3×3), ReLU, conv (1×1 in the full adapter, 3×3 in the light one), plus the input.
#[derive(Debug)]
struct ResBlock {
    block1: Conv2d,
    block2: Conv2d,
}

impl ResBlock {
    fn new(b: &Builder, c: i64, light: bool) -> Self {
        let k = if light { 3 } else { 1 };
        ResBlock {
            block1: Conv2d::new(&b.sub("block1"), c, c, 3, 1, 1),
            block2: Conv2d::new(&b.sub("block2"), c, c, k, 1, k / 2),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.block2.forward(&self.block1.forward(x).relu()) + x
    }
}

/// One block: optional 2×2 average pooling (ceil mode), an optional 1×1 conv in, residual blocks, and in the
/// light adapter a 1×1 conv out.
#[derive(Debug)]
struct Block {
    down: bool,
    in_conv: Option<Conv2d>,
    resnets: Vec<ResBlock>,
    out_conv: Option<Conv2d>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h =
            if self.down { x.avg_pool2d([2, 2], [2, 2], [0, 0], true, true, None::<i64>) } else { x.shallow_clone() };
        if let Some(c) = &self.in_conv {
            h = c.forward(&h);
        }
        for r in &self.resnets {
            h = r.forward(&h);
        }
        match &self.out_conv {
            Some(c) => c.forward(&h),
            None => h,
        }
    }
}

#[derive(Debug)]
pub struct T2IAdapter {
    pub config: T2IAdapterConfig,
    conv_in: Option<Conv2d>,
    body: Vec<Block>,
}

impl T2IAdapter {
    /// Builds the network of `config` under `b` (the root of the adapter's weights).
    pub fn new(b: &Builder, config: &T2IAdapterConfig) -> Result<Self> {
        let (ch, n, f) = (&config.channels, config.num_res_blocks, config.downscale_factor);
        let unshuffled = config.in_channels * f * f;
        let b = b.sub("adapter");
        let light = config.adapter_type == "light_adapter";
        let block = |i: usize, in_c: i64, out_c: i64, down: bool| {
            let bb = b.sub("body").sub(i);
            if light {
                let mid = out_c / 4;
                Block {
                    down,
                    in_conv: Some(Conv2d::new(&bb.sub("in_conv"), in_c, mid, 1, 1, 0)),
                    resnets: (0..n).map(|j| ResBlock::new(&bb.sub("resnets").sub(j), mid, true)).collect(),
                    out_conv: Some(Conv2d::new(&bb.sub("out_conv"), mid, out_c, 1, 1, 0)),
                }
            } else {
                Block {
                    down,
                    in_conv: (in_c != out_c).then(|| Conv2d::new(&bb.sub("in_conv"), in_c, out_c, 1, 1, 0)),
                    resnets: (0..n).map(|j| ResBlock::new(&bb.sub("resnets").sub(j), out_c, false)).collect(),
                    out_conv: None,
                }
            }
        };
        let (conv_in, body) = if light {
            let mut body = vec![block(0, unshuffled, ch[0], false)];
            for i in 0..ch.len() - 1 {
                body.push(block(i + 1, ch[i], ch[i + 1], true));
            }
            body.push(block(ch.len(), ch[ch.len() - 1], ch[ch.len() - 1], true));
            (None, body)
        } else {
            let mut body = vec![block(0, ch[0], ch[0], false)];
            for i in 1..ch.len() {
                body.push(block(i, ch[i - 1], ch[i], true));
            }
            (Some(Conv2d::new(&b.sub("conv_in"), unshuffled, ch[0], 3, 1, 1)), body)
        };
        Ok(T2IAdapter { config: config.clone(), conv_in, body })
    }

    /// The features of control images `[N, in_channels, H, W]` in [0, 1] (`H`, `W` multiples of the
    /// downscale factor), each multiplied by `scale`.
    pub fn forward(&self, image: &Tensor, scale: f64) -> Result<AdapterFeatures> {
        crate::cpu::settle_threads();
        let s = image.size();
        let f = self.config.downscale_factor;
        if s.len() != 4 || s[1] != self.config.in_channels || s[2] % f != 0 || s[3] % f != 0 {
            return Err(Error::Invalid(format!(
                "T2I-Adapter image: expected [N, {}, H, W] with H and W multiples of {f}, got {s:?}",
                self.config.in_channels
            )));
        }
        let mut x = image.to_kind(self.kind()).pixel_unshuffle(f);
        if let Some(c) = &self.conv_in {
            x = c.forward(&x);
        }
        let mut features = Vec::with_capacity(self.body.len());
        for block in &self.body {
            x = block.forward(&x);
            features.push(&x * scale);
        }
        Ok(AdapterFeatures { features })
    }

    pub fn kind(&self) -> Kind {
        self.body[0].resnets.first().map_or(Kind::Float, |r| r.block1.weight.kind())
    }
}
