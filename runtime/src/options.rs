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

    /// What the option takes, for documentation: `number (default 7.5)`, `string (default "")`.
    pub fn takes(&self) -> String {
        let default = match self.default {
            Default::Unset => return self.kind.word().to_string(),
            Default::Number(x) => format_number(x),
            Default::Text(t) => format!("{t:?}"),
        };
        format!("{} (default {default})", self.kind.word())
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

/// Every shared option, for tools that list them.
pub const SHARED: &[Opt] = &[GUIDANCE, SAMPLE_STEPS, INVERT_STEPS, ETA, NEGATIVE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_document_and_check_themselves() {
        assert_eq!(GUIDANCE.takes(), "number (default 7.5)");
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
