//! The named combinations of modules (`inflate`'s presets), the training presets' partner in the video
//! model, and the module choices of each role as documentation lists them — policy kept beside the
//! registry it draws from, with tests of its own.

use super::processors::{Role, REGISTRY};
use super::VideoSpec;
use crate::error::{Error, Result};
use crate::video::processors::ModuleSpec;

/// The presets [`VideoSpec::preset`] knows, the default first.
pub const PRESETS: &[&str] = &["tune-a-video", "mask-guided", "dynamic-mask", "zero-shot", "p2p"];

impl VideoSpec {
    /// The project's recommended combination for editing with masks (`inflate(sd, #{preset:
    /// "mask-guided"})`): Tune-A-Video's sparse-causal and temporal attention, mask-guided cross-attention
    /// (MCA) in every block, and mask cross-attention on the text.
    pub fn mask_guided() -> VideoSpec {
        VideoSpec {
            mask: Some(ModuleSpec::named(Role::Mask, "mca").expect("registered")),
            cross: ModuleSpec::named(Role::Cross, "masked").expect("registered"),
            ..VideoSpec::default()
        }
    }

    /// Dynamic mask guidance's modules: mask-aware first-frame attention, temporal attention, mask
    /// cross-attention (`inflate(sd, #{preset: "dynamic-mask"})`), for generation from a mask motion with
    /// first-frame conditioning.
    pub fn dynamic_mask() -> VideoSpec {
        VideoSpec {
            spatial: ModuleSpec::parse("first_frame:mask=4").expect("registered"),
            cross: ModuleSpec::named(Role::Cross, "masked").expect("registered"),
            ..VideoSpec::default()
        }
    }

    /// FateZero's model for edits without tuning (`inflate(sd, #{preset: "zero-shot"})`): sparse-causal
    /// attention and nothing new to train — no temporal layers.
    pub fn zero_shot() -> VideoSpec {
        VideoSpec { temporal: None, ..VideoSpec::default() }
    }

    /// The preset called `name` (`"tav"` is `"tune-a-video"`; `"p2p"`, Video-P2P's, is Tune-A-Video's
    /// modules, also called `"video-p2p"`). EI² is not one: its modules are chosen by name, and the error
    /// says how.
    pub fn preset(name: &str) -> Result<VideoSpec> {
        match name {
            "tune-a-video" | "tav" | "p2p" | "video-p2p" => Ok(VideoSpec::default()),
            "zero-shot" => Ok(VideoSpec::zero_shot()),
            "mask-guided" => Ok(VideoSpec::mask_guided()),
            "dynamic-mask" => Ok(VideoSpec::dynamic_mask()),
            "ei2" | "ei²" => Err(Error::Invalid(
                "EI² is not a preset: its modules are chosen by name, #{spatial: \"ffam:2\", temporal: \"stam\"}, \
                 and tuned with tune(…, #{train: \"ei2\"}); scripts/ei2.rhai runs the whole recipe"
                    .into(),
            )),
            other => {
                let names: Vec<String> = PRESETS.iter().map(|p| format!("{p:?}")).collect();
                Err(Error::Invalid(format!(
                    "unknown preset {other:?}; expected {} or {}",
                    names[..names.len() - 1].join(", "),
                    names[names.len() - 1]
                )))
            }
        }
    }

    /// The modules `role` can take, as documentation lists them: the default first, then the others of the
    /// registry, a module with parameters also in its parameterised form (`"ffam:<ratio>"`,
    /// `"masked:strength=…,start=…,end=…"`), and `"none"` where the role may be left out.
    pub fn choices(role: Role) -> String {
        let d = VideoSpec::default();
        let default = match role {
            Role::Spatial => Some(d.spatial.name),
            Role::Cross => Some(d.cross.name),
            Role::Temporal => d.temporal.map(|m| m.name),
            Role::Mask => d.mask.map(|m| m.name),
        };
        let optional = matches!(role, Role::Temporal | Role::Mask);
        let mut names: Vec<&str> = REGISTRY.iter().filter(|e| e.role == role).map(|e| e.name).collect();
        if let Some(pos) = default.as_deref().and_then(|n| names.iter().position(|m| *m == n)) {
            let first = names.remove(pos);
            names.insert(0, first);
        }
        let mut out: Vec<String> = vec![];
        if optional && default.is_none() {
            out.push("\"none\" (default)".into());
        }
        for name in names {
            let e = super::processors::entry(role, name).expect("registered");
            let mark = if default.as_deref() == Some(name) { " (default)" } else { "" };
            out.push(format!("{name:?}{mark}"));
            match e.params {
                [] => {}
                [p] => out.push(format!("\"{name}:<{}>\"", p.name)),
                ps => {
                    let keys: Vec<String> = ps.iter().map(|p| format!("{}=…", p.name)).collect();
                    out.push(format!("\"{name}:{}\"", keys.join(",")));
                }
            }
        }
        if optional && default.is_some() {
            out.push("\"none\"".into());
        }
        out.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_name_their_modules_and_refuse_others_with_the_list() {
        assert_eq!(VideoSpec::preset("tav").unwrap(), VideoSpec::default());
        assert_eq!(
            VideoSpec::preset("mask-guided").unwrap().describe(),
            "sparse_causal + temporal + cross masked + mask mca"
        );
        assert_eq!(
            VideoSpec::preset("dynamic-mask").unwrap().spatial,
            ModuleSpec::parse("first_frame:mask=4").unwrap()
        );
        let e = VideoSpec::preset("fast").unwrap_err().to_string();
        assert!(
            e.ends_with("unknown preset \"fast\"; expected \"tune-a-video\", \"mask-guided\", \"dynamic-mask\", \"zero-shot\" or \"p2p\""),
            "{e}"
        );
        assert!(VideoSpec::preset("ei2").unwrap_err().to_string().contains("ffam:2"));
    }

    #[test]
    fn choices_come_from_the_registry_default_first() {
        assert_eq!(
            VideoSpec::choices(Role::Temporal),
            "\"temporal\" (default) | \"stam\" | \"gated\" | \"gated:<positions>\" | \"none\""
        );
        assert_eq!(VideoSpec::choices(Role::Mask), "\"none\" (default) | \"mca\" | \"mca:<width>\"");
        let spatial = VideoSpec::choices(Role::Spatial);
        assert!(spatial.starts_with("\"sparse_causal\" (default) | \"self\""), "{spatial}");
        assert!(spatial.contains("\"ffam:<ratio>\"") && spatial.contains("\"first_frame:<mask>\""), "{spatial}");
        assert!(VideoSpec::choices(Role::Cross).contains("\"masked:strength=…,start=…,end=…\""));
    }
}
