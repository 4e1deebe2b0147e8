//! How much memory a tuning step takes, and whether it checkpoints: the estimate of a step without
//! gradient checkpointing, and the default that turns checkpointing on where that would not fit.

use super::tune::{train_patterns, trainable_names, TuneClip, TuneOptions};
use crate::error::Result;
use crate::video::VideoModel;

/// Values a tuning step without gradient checkpointing keeps for its backward, per frame, per channel of
/// the UNet's first level and per latent pixel. Measured on SD1.4's architecture with Tune-A-Video's
/// modules in float32 on the CPU, as tuning's peak RSS less the inflated model's (`vidtune bench
/// --config sd14 --frames 8 --tune-steps 2 --checkpointing false`): 0.68 MB per frame and latent pixel
/// between 128² and 192² at 320 channels, 533 values. With it, [`step_memory`] gave 1.5, 2.6 and 13.9 GB
/// at 64², 128² and 384², where tuning took 1.6, 2.3 and 13.3 GB.
const STEP_VALUES: f64 = 540.0;
/// Bytes each trained value adds to a step: its float32 gradient, AdamW's two moments and its copy.
const BYTES_PER_TRAINED: f64 = 16.0;
/// The share of the memory available that a step without checkpointing may take before the CPU default
/// turns checkpointing on; the rest is left to the allocator's slack and to other programs.
const FIT_SHARE: f64 = 0.85;

/// An estimate of the memory a tuning step without gradient checkpointing adds to the loaded model, in
/// bytes: the gradients and optimiser state of what it trains, and the activations its backward keeps
/// for the largest clip (frames per step — the window's when there is one —, latent pixels, the
/// precision, a ControlNet's share).
pub fn step_memory(model: &VideoModel, clips: &[TuneClip], opts: &TuneOptions) -> Result<f64> {
    let vars = model.vars.variables();
    let trained: f64 =
        trainable_names(model, &train_patterns(model, opts))?.iter().map(|n| vars[n].numel() as f64).sum();
    let base = &model.base;
    let (f, c0) = (base.vae_scale_factor(), base.unet.model.config.block_out_channels[0]);
    let bytes = opts.precision.unwrap_or(model.kind()).elt_size_in_bytes() as f64;
    let largest = clips
        .iter()
        .map(|c| {
            let len = c.video.len() as i64;
            let frames = opts.window.map_or(len, |w| w.min(len));
            crate::memory::bytes_of(&[frames, c0, c.video.height() / f, c.video.width() / f], 1.0)
                * crate::control::memory_factor(&c.controls)
        })
        .fold(0.0, f64::max);
    Ok(trained * BYTES_PER_TRAINED + largest * STEP_VALUES * bytes)
}

/// Whether a tune checkpoints, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpointing {
    pub on: bool,
    /// Why, when the default chose: the estimate and the memory it was held against.
    pub reason: Option<String>,
}

/// The default when `checkpointing` is not set: on for accelerators (the official configs' setting); on
/// the CPU, off — recomputing every block costs a third more time there — unless a step without it
/// (`step_bytes`, [`step_memory`]) would take more than 85 % of the memory `available`. SD1.4 in float32
/// at 8 × 512² (Tune-A-Video's clips) needs about 24 GB above the model without it (the estimate) and
/// took 5.7 GB with it (measured).
pub fn default_checkpointing(device: tch::Device, step_bytes: f64, available: Option<f64>) -> Checkpointing {
    if device != tch::Device::Cpu {
        return Checkpointing { on: true, reason: None };
    }
    match available {
        Some(a) if step_bytes > FIT_SHARE * a => Checkpointing {
            on: true,
            reason: Some(format!(
                "tune: gradient checkpointing on: a step without it would take about {} of the {} \
                 available (it recomputes each block in the backward, about a third more time; \
                 checkpointing: false turns it off)",
                crate::memory::human_bytes(step_bytes),
                crate::memory::human_bytes(a)
            )),
        },
        _ => Checkpointing { on: false, reason: None },
    }
}

/// Whether a tune of `clips` on `model` with `opts` checkpoints: `opts.checkpointing` when set, else
/// [`default_checkpointing`] against the memory available now.
pub fn resolve_checkpointing(model: &VideoModel, clips: &[TuneClip], opts: &TuneOptions) -> Result<Checkpointing> {
    if let Some(on) = opts.checkpointing {
        return Ok(Checkpointing { on, reason: None });
    }
    let device = model.device();
    if device != tch::Device::Cpu {
        return Ok(default_checkpointing(device, 0.0, None));
    }
    let step = step_memory(model, clips, opts)?;
    Ok(default_checkpointing(device, step, crate::memory::host_available().map(|b| b as f64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_default_checkpoints_only_when_a_step_would_not_fit() {
        let (gb, cpu) = (1e9, tch::Device::Cpu);
        let fits = default_checkpointing(cpu, 10.0 * gb, Some(20.0 * gb));
        assert_eq!(fits, Checkpointing { on: false, reason: None });
        let tight = default_checkpointing(cpu, 18.0 * gb, Some(20.0 * gb));
        assert!(tight.on);
        let why = tight.reason.unwrap();
        assert!(
            why.contains("18.0 GB") && why.contains("20.0 GB available") && why.contains("checkpointing: false"),
            "{why}"
        );
        // Memory unknown: the CPU's default, off.
        assert!(!default_checkpointing(cpu, 1e15, None).on);
        // Accelerators: on, as the official configs have it, with no message.
        assert_eq!(default_checkpointing(tch::Device::Cuda(0), 0.0, None), Checkpointing { on: true, reason: None });
    }
}
