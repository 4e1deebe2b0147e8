//! The options of a pipeline call as plain JSON with typed fields — numbers as numbers, absent options as
//! `null`, masks and images by size and content hash — for run records that another program reads back.

use super::codenoise::{Anchor, PromptSchedule, WindowOptions};
use super::fuse::FuseOptions;
use super::invert::InvertOptions;
use super::sample::{FirstFrame, SampleOptions};
use super::t2i::T2iOptions;
use super::tune::TuneOptions;
use crate::cache::KeyBuilder;
use crate::control::Control;
use crate::device::{device_name, dtype_name};
use crate::masks::Masks;
use serde_json::{json, Value};
use vidtune_kernels::codenoise::Weighting;

/// Masks by size and content: `{frames, width, height, mean_area, hash}`.
pub fn masks_json(m: &Masks) -> Value {
    let area = m.area();
    let mean = area.iter().sum::<f64>() / area.len().max(1) as f64;
    json!({
        "frames": m.len(),
        "width": m.width(),
        "height": m.height(),
        "mean_area": (mean * 1e4).round() / 1e4,
        "hash": KeyBuilder::new("masks").tensor(m.tensor()).finish(),
    })
}

fn weighting_name(w: Weighting) -> String {
    match w {
        Weighting::Uniform => "uniform".into(),
        Weighting::Triangular => "triangular".into(),
        Weighting::Gaussian { sigma } => format!("gaussian:{sigma}"),
    }
}

impl WindowOptions {
    /// `{window, stride, weights, batch, anchor, devices}`.
    pub fn to_json(&self) -> Value {
        json!({
            "window": self.window,
            "stride": self.stride,
            "weights": weighting_name(self.weights),
            "batch": self.batch,
            "anchor": match self.anchor { Anchor::Window => "window", Anchor::Global => "global" },
            "devices": self.devices.iter().map(|d| device_name(*d)).collect::<Vec<_>>(),
        })
    }
}

impl PromptSchedule {
    /// `[{first, last, prompt}]` (`last` is `null` for "to the end").
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|s| json!({"first": s.first, "last": (s.last != i64::MAX).then_some(s.last), "prompt": s.prompt}))
                .collect(),
        )
    }
}

impl SampleOptions {
    /// Every option after defaults, typed.
    pub fn to_json(&self) -> Value {
        let first_frame = self.first_frame.as_ref().map(|f| match f {
            FirstFrame::Source => json!("source"),
            FirstFrame::Edit => json!("edit"),
            FirstFrame::Image(img) => json!({
                "image": {"width": img.width(), "height": img.height(),
                          "hash": KeyBuilder::new("image").tensor(img.tensor()).finish()}
            }),
        });
        let mut v = json!({
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "negative": self.negative,
            "eta": self.eta,
            "frames": self.frames,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "masks": self.masks.as_ref().map(masks_json),
            "subject": self.subject,
            "keep_background": self.keep_background,
            "feather": self.feather,
            "first_frame": first_frame,
            "shared_noise": self.shared_noise,
            "variance_preserving": self.variance_preserving,
            "strength": self.strength,
            "renoise": self.renoise,
            "windows": self.windows.as_ref().map(WindowOptions::to_json),
            "until": self.until,
            "controls": self.controls.iter().map(Control::to_json).collect::<Vec<_>>(),
            "fusion": self.fusion.as_ref().map(|f| json!({
                "cross_replace": f.cross_replace,
                "self_replace": [f.self_replace.0, f.self_replace.1],
                "blend_words": f.blend_words,
                "blend_threshold": f.blend_threshold,
                "blend_masks": f.blend_masks,
                "source_branch": f.source_branch,
                "local_blend": f.local_blend.as_ref().map(|l| json!({
                    "source": l.source_words,
                    "target": l.target_words,
                    "threshold": l.threshold,
                    "start": l.start,
                })),
            })),
        });
        // Written only when on, so records (and memo keys) made before the option are unchanged.
        if self.shared_noise_follow {
            v["shared_noise_follow"] = json!(true);
        }
        if self.subject_guide > 0.0 {
            v["subject_guide"] = json!(self.subject_guide);
        }
        v
    }
}

impl InvertOptions {
    /// Every option after defaults, typed.
    pub fn to_json(&self) -> Value {
        json!({
            "steps": self.steps,
            "prompt": self.prompt,
            "masks": self.masks.as_ref().map(masks_json),
            "windows": self.windows.as_ref().map(WindowOptions::to_json),
            "null_text": self.null_text.as_ref().map(|n| json!({
                "inner_steps": n.inner_steps, "lr": n.lr, "guidance": n.guidance, "epsilon": n.epsilon,
            })),
            "store": self.store.as_ref().map(|s| json!({
                "self": s.self_attn, "cross": s.cross, "resolutions": s.resolutions,
            })),
        })
    }
}

impl TuneOptions {
    /// Every option after defaults, typed.
    pub fn to_json(&self) -> Value {
        json!({
            "steps": self.steps,
            "lr": self.lr,
            "train": self.train,
            "seed": self.seed,
            "max_grad_norm": self.max_grad_norm,
            "betas": [self.betas.0, self.betas.1],
            "weight_decay": self.weight_decay,
            "eps": self.eps,
            "checkpoint_every": self.checkpoint_every,
            "checkpoint": self.checkpoint_path.as_ref().map(|p| p.display().to_string()),
            "first_frame": self.first_frame,
            "loss": {"all": self.loss.all, "fg": self.loss.fg, "bg": self.loss.bg},
            "subject": self.subject,
            "window": self.window,
            "precision": self.precision.map(dtype_name),
            "checkpointing": self.checkpointing,
            "sync_every": self.sync_every,
        })
    }
}

impl T2iOptions {
    /// Every option after defaults, typed.
    pub fn to_json(&self) -> Value {
        json!({
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "negative": self.negative,
            "width": self.width,
            "height": self.height,
            "eta": self.eta,
            "controls": self.controls.iter().map(Control::to_json).collect::<Vec<_>>(),
        })
    }
}

impl Control {
    /// The model, its settings and the images' shape (the images are in the memo key, by content).
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model.source(),
            "kind": match self.model {
                crate::control::ControlModel::ControlNet(_) => "controlnet",
                crate::control::ControlModel::Adapter(_) => "t2i_adapter",
            },
            "identity": self.model.identity(),
            "images": self.images.size(),
            "scale": self.scale,
            "start": self.start,
            "end": self.end,
            "guess_mode": self.guess_mode,
        })
    }
}

impl FuseOptions {
    /// Every option after defaults, typed.
    pub fn to_json(&self) -> Value {
        json!({"samples": self.samples, "at": self.at, "w_bg": self.w_bg, "w_fg": self.w_fg})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_record_as_typed_json() {
        let o = SampleOptions { seed: Some(3), windows: Some(WindowOptions::new(8)), ..SampleOptions::default() };
        let j = o.to_json();
        assert_eq!(j["steps"], 50);
        assert_eq!(j["guidance"], 7.5);
        assert_eq!(j["seed"], 3);
        assert!(j["masks"].is_null() && j["first_frame"].is_null());
        assert_eq!(j["windows"]["stride"], 4);
        assert_eq!(j["windows"]["weights"], "uniform");
        let t = TuneOptions::default().to_json();
        assert_eq!(t["steps"], 500);
        assert_eq!(t["betas"][1], 0.999);
        assert_eq!(t["train"][0], "attn1.to_q");
        let schedule = PromptSchedule::single("a car").to_json();
        assert_eq!(schedule, json!([{"first": 0, "last": null, "prompt": "a car"}]));
        // Round trip through text: another program reads the same numbers back.
        let back: Value = serde_json::from_str(&j.to_string()).unwrap();
        assert_eq!(back["eta"].as_f64(), Some(0.0));
    }
}
