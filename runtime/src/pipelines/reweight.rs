//! Word weights in a prompt, as users of A1111 and ComfyUI write them: `"a (red:1.5) car"`. The prompt is
//! encoded without the markup (`"a red car"`); the weights scale the cross-attention probabilities of the
//! words' tokens (prompt-to-prompt's reweighting, Hertz et al. §3.2, "attention re-weighting"), in the
//! conditional half of every UNet call — or, with fusion, on top of the source's mapped maps inside its
//! cross-attention window, as FateZero's `eq_params` do. The rows are not renormalised, as in the
//! reference.

use crate::control::CallStep;
use crate::error::{Error, Result};
use crate::models::attention_processor::{MapControl, Site};
use crate::models::ClipTokenizer;
use crate::video::conditioning::MapsLoop;
use std::cell::Cell;
use std::rc::Rc;
use tch::Tensor;
use vidtune_kernels::fusion as kf;

/// The weights a user may give a word.
pub const WEIGHT_RANGE: std::ops::RangeInclusive<f64> = 0.0..=10.0;

/// A weighted run of words: where it starts in the plain prompt (bytes), its words and weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    pub start: usize,
    pub words: String,
    pub weight: f64,
}

/// `prompt` without its `(words:weight)` markup, and the weighted runs. Parentheses that do not close on
/// `:number)` are kept as written.
pub fn parse_weights(prompt: &str) -> Result<(String, Vec<Weighted>)> {
    let mut plain = String::new();
    let mut runs = vec![];
    let mut rest = prompt;
    while let Some(open) = rest.find('(') {
        plain.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let parsed = after.find(')').and_then(|close| {
            let inner = &after[..close];
            let (words, weight) = inner.rsplit_once(':')?;
            let weight: f64 = weight.trim().parse().ok()?;
            Some((words.trim().to_string(), weight, close))
        });
        match parsed {
            Some((words, weight, close)) => {
                if words.is_empty() || words.contains('(') {
                    return Err(Error::Invalid(format!(
                        "prompt {prompt:?}: a weight needs words, one level deep: \"a (red car:1.5)\""
                    )));
                }
                if !weight.is_finite() || !WEIGHT_RANGE.contains(&weight) {
                    return Err(Error::Invalid(format!(
                        "prompt {prompt:?}: the weight of {words:?} must be between {} and {}, got {weight}",
                        WEIGHT_RANGE.start(),
                        WEIGHT_RANGE.end()
                    )));
                }
                runs.push(Weighted { start: plain.len(), words: words.clone(), weight });
                plain.push_str(&words);
                rest = &after[close + 1..];
            }
            None => {
                plain.push('(');
                rest = after;
            }
        }
    }
    plain.push_str(rest);
    Ok((plain, runs))
}

/// The weight of each of the tokenizer's `max_length` positions for `plain` (1 but at the weighted words'
/// tokens): the tokens of the text before a run, then the run's own.
pub fn token_weights(tokenizer: &ClipTokenizer, plain: &str, runs: &[Weighted]) -> Result<Vec<f32>> {
    let len = tokenizer.max_length;
    let mut w = vec![1f32; len];
    for r in runs {
        // Without the start and end tokens.
        let before = tokenizer.encode_unpadded(&plain[..r.start])?.len().saturating_sub(2);
        let own = tokenizer.encode_unpadded(&r.words)?.len().saturating_sub(2);
        for p in (1 + before..1 + before + own).filter(|&p| p < len.saturating_sub(1)) {
            w[p] = r.weight as f32;
        }
    }
    Ok(w)
}

/// Reweighting alone: the cross-attention of the conditional clip, at every layer and step.
#[derive(Debug)]
pub struct Reweight {
    weights: Vec<f32>,
    rows: Cell<(i64, i64)>,
}

impl Reweight {
    pub fn new(weights: Vec<f32>) -> Self {
        Reweight { weights, rows: Cell::new((0, 0)) }
    }
}

/// The rows of a call's batch that belong to the conditional clip (`[uncond, cond]` when guided).
pub fn cond_rows(guided: bool, batch: i64, frames: i64) -> (i64, i64) {
    if guided && batch >= 2 {
        ((batch - 1) * frames, frames)
    } else {
        (0, batch * frames)
    }
}

/// `probs` with rows `start..start + len` replaced by `f` of them.
pub fn on_rows(probs: Tensor, (start, len): (i64, i64), f: impl FnOnce(Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let n = probs.size()[0];
    if start == 0 && len == n {
        return f(probs);
    }
    let done = f(probs.narrow(0, start, len))?;
    let mut parts = vec![];
    if start > 0 {
        parts.push(probs.narrow(0, 0, start));
    }
    parts.push(done);
    if start + len < n {
        parts.push(probs.narrow(0, start + len, n - start - len));
    }
    Ok(Tensor::cat(&parts, 0))
}

impl MapsLoop for Reweight {
    fn call(self: Rc<Self>, step: CallStep, batch: i64, frames: i64) -> Result<Rc<dyn MapControl>> {
        self.rows.set(cond_rows(step.guided, batch, frames));
        Ok(self)
    }
}

impl MapControl for Reweight {
    fn wants(&self, site: Site, _spatial: (i64, i64)) -> bool {
        site == Site::Cross
    }

    fn edit(&self, _site: Site, _spatial: (i64, i64), probs: Tensor) -> Result<Tensor> {
        on_rows(probs, self.rows.get(), |p| Ok(kf::reweight(&p, &self.weights)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_read_as_a1111_writes_them() {
        let (plain, runs) = parse_weights("a (red:1.5) car on (a sunny beach:0.8)").unwrap();
        assert_eq!(plain, "a red car on a sunny beach");
        assert_eq!(
            runs,
            [
                Weighted { start: 2, words: "red".into(), weight: 1.5 },
                Weighted { start: 13, words: "a sunny beach".into(), weight: 0.8 },
            ]
        );
        assert_eq!(&plain[13..], "a sunny beach");
        // Parentheses without a weight are text.
        let (plain, runs) = parse_weights("a car (seen from above) at 3:00").unwrap();
        assert_eq!((plain.as_str(), runs.len()), ("a car (seen from above) at 3:00", 0));
        let e = parse_weights("a (red:20) car").unwrap_err().to_string();
        assert!(e.contains("the weight of \"red\" must be between 0 and 10, got 20"), "{e}");
        assert!(parse_weights("a (:2) car").is_err());
    }

    #[test]
    fn only_the_conditional_rows_are_touched() {
        let probs = Tensor::ones([6, 1, 2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let out = on_rows(probs, cond_rows(true, 2, 3), |p| Ok(p * 2.0)).unwrap();
        let per_row: Vec<f64> = (0..6).map(|i| out.get(i).mean(tch::Kind::Float).double_value(&[])).collect();
        assert_eq!(per_row, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(cond_rows(false, 1, 3), (0, 3));
    }
}
