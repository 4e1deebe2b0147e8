//! Devices and dtypes as users name them: `auto | cpu | cuda | cuda:N` and `fp32 | fp16 | bf16`.

use crate::error::{Error, Result};
use tch::{Device, Kind};

/// Parses a device name; `auto` is the first CUDA device when there is one, else the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
    match name.trim() {
        "auto" | "" => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => cuda(n),
            None => Err(Error::Invalid(format!(
                "unknown device {other:?}; expected \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""
            ))),
        },
    }
}

fn cuda(n: usize) -> Result<Device> {
    let count = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
    if n >= count {
        return Err(Error::Invalid(format!(
            "device cuda:{n} is not available (this machine has {count} CUDA device(s)); use \"cpu\" or \"auto\""
        )));
    }
    Ok(Device::Cuda(n))
}

/// Parses a dtype name.
pub fn parse_dtype(name: &str) -> Result<Kind> {
    match name.trim() {
        "fp32" | "float32" | "float" => Ok(Kind::Float),
        "fp16" | "float16" | "half" => Ok(Kind::Half),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        other => Err(Error::Invalid(format!("unknown dtype {other:?}; expected \"fp32\", \"fp16\" or \"bf16\""))),
    }
}

/// The default dtype on a device: fp32 on the CPU; on CUDA bf16 where the device computes it, else fp16.
pub fn default_dtype(device: Device) -> Kind {
    match device {
        Device::Cuda(_) if supports_bf16(device) => Kind::BFloat16,
        Device::Cuda(_) => Kind::Half,
        _ => Kind::Float,
    }
}

/// Whether `device` runs bf16 matrix products (Ampere and later).
pub fn supports_bf16(device: Device) -> bool {
    std::panic::catch_unwind(|| {
        let a = tch::Tensor::ones([8, 8], (Kind::BFloat16, device));
        a.matmul(&a).double_value(&[0, 0]) == 8.0
    })
    .unwrap_or(false)
}

/// The short name of a dtype.
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "fp32",
        Kind::Half => "fp16",
        Kind::BFloat16 => "bf16",
        Kind::Double => "fp64",
        _ => "other",
    }
}

/// The name of a device as users write it.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
