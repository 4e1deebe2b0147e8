//! The options the pipelines share, each declared once: its name, what it takes, its default, its range,
//! the names users know it by from diffusers and Tune-A-Video, and its documentation. The pipelines' option
//! structs take their defaults from here and check values against the ranges here; the scripting layer
//! parses, completes and documents the same declarations, writing no name, default or range of its own.

use crate::error::{Error, Result};

/// What an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Integer,
    Number,
    Text,
}

impl Kind {
    /// The word a message uses: "an integer", "a number", "a string".
    pub fn article(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Text => "a string",
        }
    }

    /// The word documentation uses: "integer", "number", "string".
    pub fn word(self) -> &'static str {
        match self {
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::Text => "string",
        }
    }
}

/// A default value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    /// None: the option is off unless given (a random seed, no masks, …), as `doc` says.
    Unset,
    Number(f64),
    Text(&'static str),
}

/// One option, declared once.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub kind: Kind,
    pub default: Default,
    /// Inclusive bounds of numeric values (`f64::MIN_POSITIVE` as the low end reads "above 0").
    pub range: Option<(f64, f64)>,
    /// Other names users know it by (diffusers', Tune-A-Video's), accepted for it.
    pub aliases: &'static [&'static str],
    pub doc: &'static str,
}

impl Opt {
    /// The numeric default (0 when the option has none).
    pub const fn number(&self) -> f64 {
        match self.default {
            Default::Number(x) => x,
            _ => 0.0,
        }
    }

    /// The integer default.
    pub const fn integer(&self) -> i64 {
        self.number() as i64
    }

    /// The text default (empty when the option has none).
    pub const fn text(&self) -> &'static str {
        match self.default {
            Default::Text(t) => t,
            _ => "",
        }
    }

    /// Checks a numeric value against the range, in the words of [`check_range`].
    pub fn check(&self, value: f64) -> Result<()> {
        match self.range {
            Some((lo, hi)) => check_range(self.name, value, lo, hi, self.kind.article()),
            None => Ok(()),
        }
    }

    /// What the option takes, for documentation: `number in [0, 100] (default 7.5)`, `integer (default
    /// 50)`, `string (default "")`; an integer's range is left to its errors, a number's is shown (`(0, 1]`
    /// when its low end is "above 0").
    pub fn takes(&self) -> String {
        let mut out = self.kind.word().to_string();
        if let (Kind::Number, Some((lo, hi))) = (self.kind, self.range) {
            let low = if lo == f64::MIN_POSITIVE { "(0".to_string() } else { format!("[{}", format_number(lo)) };
            out.push_str(&format!(" in {low}, {}]", format_number(hi)));
        }
        match self.default {
            Default::Unset => {}
            Default::Number(x) => out.push_str(&format!(" (default {})", format_number(x))),
            Default::Text(t) => out.push_str(&format!(" (default {t:?})")),
        }
        out
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// `name` must be a finite `what` in `lo..=hi` (`lo` = `f64::MIN_POSITIVE` reads "above 0").
pub fn check_range(name: &str, value: f64, lo: f64, hi: f64, what: &str) -> Result<()> {
    if value.is_finite() && value >= lo && value <= hi {
        return Ok(());
    }
    let range = if lo == f64::MIN_POSITIVE {
        format!("above 0 and at most {}", format_number(hi))
    } else {
        format!("between {} and {}", format_number(lo), format_number(hi))
    };
    Err(Error::Invalid(format!("{name} must be {what} {range}, got {value}")))
}

/// Classifier-free guidance scale (`sample`, `t2i`, `co_denoise`, `extend`).
pub const GUIDANCE: Opt = Opt {
    name: "guidance",
    kind: Kind::Number,
    default: Default::Number(7.5),
    range: Some((0.0, 100.0)),
    aliases: &["guidance_scale"],
    doc: "classifier-free guidance; 1 turns it off",
};

/// DDIM sampling steps.
pub const SAMPLE_STEPS: Opt = Opt {
    name: "steps",
    kind: Kind::Integer,
    default: Default::Number(50.0),
    range: Some((1.0, 100_000.0)),
    aliases: &["num_inference_steps"],
    doc: "",
};

/// DDIM inversion steps.
pub const INVERT_STEPS: Opt = Opt { aliases: &["num_inference_steps", "num_inv_steps"], ..SAMPLE_STEPS };

/// DDIM's η.
pub const ETA: Opt = Opt {
    name: "eta",
    kind: Kind::Number,
    default: Default::Number(0.0),
    range: Some((0.0, 1.0)),
    aliases: &[],
    doc: "DDIM's η: 0 is deterministic, 1 is DDPM-like",
};

/// The negative prompt.
pub const NEGATIVE: Opt = Opt {
    name: "negative",
    kind: Kind::Text,
    default: Default::Text(""),
    range: None,
    aliases: &["negative_prompt"],
    doc: "the negative prompt (read only under guidance > 1)",
};

/// The sampling seed (noise, η).
pub const SEED: Opt = Opt {
    name: "seed",
    kind: Kind::Integer,
    default: Default::Unset,
    range: None,
    aliases: &["generator"],
    doc: "the noise and η's draws (default: random, printed)",
};

/// The most frames one `sample` call makes without latents.
pub const MAX_FRAMES: i64 = 100_000;

/// Frames of a clip sampled without latents.
pub const FRAMES: Opt = Opt {
    name: "frames",
    kind: Kind::Integer,
    default: Default::Unset,
    range: Some((1.0, MAX_FRAMES as f64)),
    aliases: &["video_length", "num_frames"],
    doc: "without latents: the clip's length (default: the masks' count, else 8)",
};

/// The frame rate of a sampled clip.
pub const FPS: Opt = Opt {
    name: "fps",
    kind: Kind::Number,
    default: Default::Unset,
    range: Some((f64::MIN_POSITIVE, 1000.0)),
    aliases: &[],
    doc: "the clip's frame rate (default: the inverted clip's, else 8)",
};

/// How far the edit reaches beyond the masks under `keep_background`.
pub const FEATHER: Opt = Opt {
    name: "feather",
    kind: Kind::Integer,
    default: Default::Number(0.0),
    range: Some((0.0, 64.0)),
    aliases: &[],
    doc: "latent pixels the edit reaches beyond the masks (any latent pixel they touch) under keep_background",
};

/// First-frame shared noise's α.
pub const SHARED_NOISE_ALPHA: Opt = Opt {
    name: "shared_noise",
    kind: Kind::Number,
    default: Default::Unset,
    range: Some((0.0, 1.0)),
    aliases: &[],
    doc: "mix the first frame's latent into the other frames' noise (dynamic mask guidance Eq. 8)",
};

/// img2img's strength from inverted latents.
pub const STRENGTH: Opt = Opt {
    name: "strength",
    kind: Kind::Number,
    default: Default::Number(1.0),
    range: Some((f64::MIN_POSITIVE, 1.0)),
    aliases: &[],
    doc: "with latents: run this share of the schedule, starting part-way up the inversion (img2img's strength); \
          lower keeps more of the clip",
};

/// The share of fresh noise inside the masks.
pub const RENOISE: Opt = Opt {
    name: "renoise",
    kind: Kind::Number,
    default: Default::Number(0.0),
    range: Some((0.0, 1.0)),
    aliases: &[],
    doc: "with latents and masks: inside the masks, this share of the starting latents is fresh noise, so the \
          subject is drawn anew where the clip's own was",
};

/// The most tuning steps one call takes (Tune-A-Video uses 300–500; the toy world 40).
pub const MAX_TUNE_STEPS: i64 = 1_000_000;

/// Tuning steps.
pub const TUNE_STEPS: Opt = Opt {
    name: "steps",
    kind: Kind::Integer,
    default: Default::Number(500.0),
    range: Some((1.0, MAX_TUNE_STEPS as f64)),
    aliases: &["max_train_steps"],
    doc: "training steps",
};

/// The tuning learning rate.
pub const LR: Opt = Opt {
    name: "lr",
    kind: Kind::Number,
    default: Default::Number(3e-5),
    range: Some((f64::MIN_POSITIVE, 1.0)),
    aliases: &["learning_rate"],
    doc: "AdamW's learning rate",
};

/// The tuning seed (timesteps, noise, windows).
pub const TUNE_SEED: Opt = Opt {
    name: "seed",
    kind: Kind::Integer,
    default: Default::Number(33.0),
    range: None,
    aliases: &["generator"],
    doc: "the training draws: timesteps, noise, windows",
};

/// Gradient-norm clipping.
pub const MAX_GRAD_NORM: Opt = Opt {
    name: "max_grad_norm",
    kind: Kind::Number,
    default: Default::Number(1.0),
    range: Some((f64::MIN_POSITIVE, 1e6)),
    aliases: &[],
    doc: "gradient-norm clipping",
};

/// AdamW's weight decay.
pub const WEIGHT_DECAY: Opt = Opt {
    name: "weight_decay",
    kind: Kind::Number,
    default: Default::Number(1e-2),
    range: Some((0.0, 1.0)),
    aliases: &[],
    doc: "AdamW's weight decay",
};

/// Random windows of a long clip in tuning.
pub const TUNE_WINDOW: Opt = Opt {
    name: "window",
    kind: Kind::Integer,
    default: Default::Unset,
    range: Some((1.0, 100_000.0)),
    aliases: &[],
    doc: "long clips: each step trains on a random window of this many frames (memory follows the window; \
          default: the whole clip)",
};

/// How often a tuning checkpoint is written.
pub const CHECKPOINT_EVERY: Opt = Opt {
    name: "checkpoint_every",
    kind: Kind::Integer,
    default: Default::Unset,
    range: Some((1.0, MAX_TUNE_STEPS as f64)),
    aliases: &[],
    doc: "steps between checkpoints",
};

/// Every declared option, for tools that list them (aliases are read from here).
pub const SHARED: &[Opt] = &[
    GUIDANCE,
    SAMPLE_STEPS,
    INVERT_STEPS,
    ETA,
    NEGATIVE,
    SEED,
    FRAMES,
    FPS,
    FEATHER,
    SHARED_NOISE_ALPHA,
    STRENGTH,
    RENOISE,
    TUNE_STEPS,
    LR,
    TUNE_SEED,
    MAX_GRAD_NORM,
    WEIGHT_DECAY,
    TUNE_WINDOW,
    CHECKPOINT_EVERY,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_document_and_check_themselves() {
        assert_eq!(GUIDANCE.takes(), "number in [0, 100] (default 7.5)");
        assert_eq!(STRENGTH.takes(), "number in (0, 1] (default 1)");
        assert_eq!(LR.takes(), "number in (0, 1] (default 0.00003)");
        assert_eq!(SAMPLE_STEPS.takes(), "integer (default 50)");
        assert_eq!(NEGATIVE.takes(), "string (default \"\")");
        assert_eq!(GUIDANCE.number(), 7.5);
        assert!(GUIDANCE.check(100.0).is_ok());
        let e = GUIDANCE.check(101.0).unwrap_err().to_string();
        assert_eq!(e, "guidance must be a number between 0 and 100, got 101");
        let e = SAMPLE_STEPS.check(0.0).unwrap_err().to_string();
        assert_eq!(e, "steps must be an integer between 1 and 100000, got 0");
        let e = check_range("lr", 0.0, f64::MIN_POSITIVE, 1.0, "a number").unwrap_err().to_string();
        assert_eq!(e, "lr must be a number above 0 and at most 1, got 0");
    }
}
