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

use super::sample::{SampleOptions, SHARED_NOISE};
use super::tune::{train_preset, TuneOptions};
use crate::error::{Error, Result};
use crate::video::VideoSpec;

/// The canonical name of a preset (`"tav"` is `"tune-a-video"`), or the module presets' error for an
/// unknown one. A module preset without steps of its own here takes the defaults.
fn canonical(name: &str) -> Result<&str> {
    VideoSpec::preset(name)?;
    Ok(if name == "tav" { "tune-a-video" } else { name })
}

/// The tuning options of the recipe called `name`.
pub fn tune(name: &str) -> Result<TuneOptions> {
    let d = TuneOptions::default();
    Ok(match canonical(name)? {
        "dynamic-mask" => {
            TuneOptions { first_frame: true, train: train_preset("dynamic-mask").expect("a train preset"), ..d }
        }
        _ => d,
    })
}

/// The sampling options of the recipe called `name`.
pub fn sample(name: &str) -> Result<SampleOptions> {
    let d = SampleOptions::default();
    Ok(match canonical(name)? {
        "dynamic-mask" => SampleOptions { shared_noise: Some(SHARED_NOISE), ..d },
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
}
