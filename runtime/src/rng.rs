//! Seeded noise that equals what diffusers draws: `torch.randn(shape, generator=torch.Generator("cpu")
//! .manual_seed(seed), dtype=dtype)` — libtorch's CPU generator is the same one, so the same seed gives the
//! same latents here and in Python. Noise is drawn on the CPU and moved to the model's device, as
//! diffusers' `randn_tensor` does with a CPU generator.
//!
//! The draws come from libtorch's process-wide CPU generator: [`Noise::new`] reseeds it, and every draw
//! continues its sequence (as a Python generator object would).

use tch::{Device, Kind, Tensor};

/// A seeded source of standard-normal noise.
#[derive(Debug)]
pub struct Noise {
    pub seed: u64,
}

impl Noise {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        tch::manual_seed(seed as i64);
        Noise { seed }
    }

    /// A seed from the clock, for calls without one (the caller reports it).
    pub fn fresh_seed() -> u64 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        (nanos as u64 ^ (nanos >> 64) as u64) % (1 << 31)
    }

    /// The next `shape` of noise in `kind`, on `device`.
    pub fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Tensor {
        Tensor::randn(shape, (kind, Device::Cpu)).to_device(device)
    }
}

impl Noise {
    /// One integer uniformly in `0..high`, as `torch.randint(0, high, (1,))`, on `device`.
    pub fn randint(&mut self, high: i64, device: Device) -> Tensor {
        Tensor::randint(high, [1], (Kind::Int64, Device::Cpu)).to_device(device)
    }
}
