//! The recipes' steps by name: what `tune` and `sample` start from under `#{preset: …}`. The names are
//! `inflate`'s module presets ([`crate::video::presets::PRESETS`]), so a recipe is one word in three calls
//! and a script writes only what differs from it.
//!
//! - `"tune-a-video"` and `"mask-guided"`: the plain defaults (Tune-A-Video's tuning, DDIM sampling); the
//!   mask-guided recipe's masks, subject and `keep_background` belong to the clip, not to the preset.
//! - `"dynamic-mask"` (dynamic mask guidance, §III, §IV-A): tuning keeps the first latent clean and trains
//!   the self- and cross-attention layers with the new temporal ones (`train: "dynamic-mask"`); sampling
//!   needs a first frame and the mask sequence, and mixes the first frame's latent into the other frames'
//!   noise at the paper's α = 0.2 (Eq. 8).
//! - `"zero-shot"` (FateZero, as `scripts/zero-shot.rhai` runs it): no tuning; the inversion stores its
//!   attention maps, and the edit fuses them — the source's cross-attention for the first 20 % of the
//!   steps, its self-attention outside the blend mask for all of them (the settings chosen on `toy:dev`).
//! - `"p2p"` (Video-P2P, also `"video-p2p"`): Tune-A-Video's tuning, null-text inversion, and the edit
//!   with the source branch beside it (cross-attention 0.2, self-attention 0.5 of the steps) and a local
//!   blend of the words the edit adds (threshold 0.3, from 20 % of the steps), as Video-P2P's configs.

use super::fusion::{FusionOptions, LocalBlend};
use super::invert::InvertOptions;
use super::null_text::NullTextOptions;
use super::sample::{SampleOptions, SHARED_NOISE};
use super::store::StoreOptions;
use super::tune::{train_preset, TuneOptions};
use crate::error::{Error, Result};
use crate::video::VideoSpec;

/// The canonical name of a preset (`"tav"` is `"tune-a-video"`), or the module presets' error for an
/// unknown one. A module preset without steps of its own here takes the defaults.
fn canonical(name: &str) -> Result<&str> {
    VideoSpec::preset(name)?;
    Ok(match name {
        "tav" => "tune-a-video",
        "video-p2p" => "p2p",
        _ => name,
    })
}

/// The tuning options of the recipe called `name`; `"zero-shot"` does not tune.
pub fn tune(name: &str) -> Result<TuneOptions> {
    let d = TuneOptions::default();
    Ok(match canonical(name)? {
        "dynamic-mask" => {
            TuneOptions { first_frame: true, train: train_preset("dynamic-mask").expect("a train preset"), ..d }
        }
        "zero-shot" => return Err(Error::Invalid(
            "preset \"zero-shot\" edits without tuning: invert(model, clip, #{preset: \"zero-shot\", prompt: …}) and \
                 sample(model, edit, #{preset: \"zero-shot\", latents: …}) on the inflated model"
                .into(),
        )),
        _ => d,
    })
}

/// The inversion options of the recipe called `name`: the zero-shot recipe stores the attention maps,
/// Video-P2P's inverts with null-text embeddings.
pub fn invert(name: &str) -> Result<InvertOptions> {
    let d = InvertOptions::default();
    Ok(match canonical(name)? {
        "zero-shot" => InvertOptions { store: Some(StoreOptions::default()), ..d },
        "p2p" => InvertOptions { null_text: Some(NullTextOptions::default()), ..d },
        _ => d,
    })
}

/// The sampling options of the recipe called `name`.
pub fn sample(name: &str) -> Result<SampleOptions> {
    let d = SampleOptions::default();
    Ok(match canonical(name)? {
        "dynamic-mask" => SampleOptions { shared_noise: Some(SHARED_NOISE), ..d },
        "zero-shot" => SampleOptions {
            fusion: Some(FusionOptions { cross_replace: 0.2, self_replace: (0.0, 1.0), ..Default::default() }),
            ..d
        },
        "p2p" => SampleOptions {
            fusion: Some(FusionOptions {
                cross_replace: 0.2,
                self_replace: (0.0, 0.5),
                source_branch: true,
                local_blend: Some(LocalBlend::default()),
                ..Default::default()
            }),
            ..d
        },
        _ => d,
    })
}

/// Refuses a call that lacks what the recipe called `name` samples from (`what`: the call, for the
/// message).
pub fn check_sample(name: &str, opts: &SampleOptions, what: &str) -> Result<()> {
    if canonical(name)? == "dynamic-mask" {
        let missing: Vec<&str> = [("first_frame", opts.first_frame.is_none()), ("masks", opts.masks.is_none())]
            .iter()
            .filter(|(_, absent)| *absent)
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            return Err(Error::Invalid(format!(
                "{what}: preset \"dynamic-mask\" generates from a first frame and the subject's mask sequence: give {} \
                 (first_frame: an Image, \"source\" or \"edit\"; masks: one per frame)",
                missing.join(" and ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masks::Masks;
    use crate::pipelines::sample::FirstFrame;

    #[test]
    fn dynamic_mask_names_the_papers_steps_and_the_others_are_the_defaults() {
        let t = tune("dynamic-mask").unwrap();
        assert!(t.first_frame);
        assert_eq!(t.train, ["attn1", "attn2", "attn_temp"]);
        assert_eq!(t.steps, TuneOptions::default().steps);
        assert_eq!(sample("dynamic-mask").unwrap().shared_noise, Some(0.2));
        for name in ["tav", "tune-a-video", "mask-guided"] {
            let t = tune(name).unwrap();
            assert!(!t.first_frame);
            assert_eq!(t.train, TuneOptions::default().train);
            assert_eq!(sample(name).unwrap().shared_noise, None);
        }
    }

    #[test]
    fn unknown_names_and_missing_inputs_are_refused_by_name() {
        let e = tune("fast").unwrap_err().to_string();
        assert!(e.contains("unknown preset \"fast\""), "{e}");
        assert!(sample("ei2").unwrap_err().to_string().contains("not a preset"));
        let mut o = sample("dynamic-mask").unwrap();
        let e = check_sample("dynamic-mask", &o, "sample").unwrap_err().to_string();
        assert!(e.starts_with("sample: preset \"dynamic-mask\""), "{e}");
        assert!(e.contains("give first_frame and masks"), "{e}");
        o.first_frame = Some(FirstFrame::Source);
        let e = check_sample("dynamic-mask", &o, "sample").unwrap_err().to_string();
        assert!(e.contains("give masks ("), "{e}");
        o.masks = Some(Masks::new(tch::Tensor::ones([2, 1, 8, 8], (tch::Kind::Float, tch::Device::Cpu))).unwrap());
        check_sample("dynamic-mask", &o, "sample").unwrap();
        check_sample("tav", &SampleOptions::default(), "sample").unwrap();
    }

    #[test]
    fn zero_shot_stores_and_fuses_without_tuning_and_p2p_runs_the_source_branch() {
        assert!(tune("zero-shot").unwrap_err().to_string().contains("edits without tuning"));
        assert_eq!(invert("zero-shot").unwrap().store, Some(StoreOptions::default()));
        let f = sample("zero-shot").unwrap().fusion.unwrap();
        assert_eq!((f.cross_replace, f.self_replace, f.source_branch), (0.2, (0.0, 1.0), false));
        assert!(VideoSpec::preset("zero-shot").unwrap().temporal.is_none());
        for name in ["p2p", "video-p2p"] {
            assert_eq!(tune(name).unwrap().train, TuneOptions::default().train);
            assert!(invert(name).unwrap().null_text.is_some() && invert(name).unwrap().store.is_none());
            let f = sample(name).unwrap().fusion.unwrap();
            assert_eq!((f.cross_replace, f.self_replace, f.source_branch), (0.2, (0.0, 0.5), true));
            assert_eq!(f.local_blend, Some(LocalBlend::default()));
        }
        assert!(invert("tav").unwrap().store.is_none() && sample("mask-guided").unwrap().fusion.is_none());
    }
}
