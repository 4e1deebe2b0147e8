//! Byte-level BPE training in CLIP's format: words are split as CLIP splits them (lower-cased letter runs,
//! single digits, punctuation runs), spelt in the 256-symbol byte alphabet with `</w>` on the last symbol,
//! and the most frequent adjacent pair is merged until every word is one token (or `max_merges`). The
//! vocabulary is laid out as CLIP's: the 256 byte symbols, the same with `</w>`, one entry per merge, then
//! `<|startoftext|>` and `<|endoftext|>`.

use crate::models::tokenizer::byte_alphabet;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// A trained BPE: the merges in order and the vocabulary they make.
#[derive(Debug, Clone, PartialEq)]
pub struct Bpe {
    pub merges: Vec<(String, String)>,
    pub vocab: Vec<String>,
}

/// CLIP's pre-tokenisation of `text` (the same split the tokenizer applies).
pub fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = vec![];
    let mut cur = String::new();
    let mut class = 0u8; // 1 letters, 2 punctuation
    for c in lower.chars() {
        let k = if c.is_alphabetic() {
            1
        } else if c.is_numeric() {
            3
        } else if c.is_whitespace() {
            0
        } else {
            2
        };
        if (k != class || k == 3 || k == 0) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if k != 0 {
            cur.push(c);
        }
        class = k;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn spell(word: &str, alphabet: &[char]) -> Vec<String> {
    let mut symbols: Vec<String> = word.bytes().map(|b| alphabet[b as usize].to_string()).collect();
    if let Some(last) = symbols.last_mut() {
        last.push_str("</w>");
    }
    symbols
}

/// Learns merges from `texts`. Ties between equally frequent pairs go to the lexically smallest, so the
/// result depends on the texts only.
pub fn train(texts: &[String], max_merges: usize) -> Bpe {
    let alphabet = byte_alphabet();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for t in texts {
        for w in words(t) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut spelt: Vec<(Vec<String>, u64)> = counts.iter().map(|(w, &n)| (spell(w, &alphabet), n)).collect();
    let mut merges = vec![];
    while merges.len() < max_merges {
        let mut pairs: HashMap<(String, String), u64> = HashMap::new();
        for (symbols, n) in &spelt {
            for p in symbols.windows(2) {
                *pairs.entry((p[0].clone(), p[1].clone())).or_default() += n;
            }
        }
        let Some((best, _)) = pairs.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0))) else {
            break;
        };
        for (symbols, _) in spelt.iter_mut() {
            let mut i = 0;
            while i + 1 < symbols.len() {
                if symbols[i] == best.0 && symbols[i + 1] == best.1 {
                    let joined = format!("{}{}", symbols[i], symbols[i + 1]);
                    symbols.splice(i..i + 2, [joined]);
                }
                i += 1;
            }
        }
        merges.push(best);
    }
    let mut vocab: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    vocab.extend(alphabet.iter().map(|c| format!("{c}</w>")));
    for (a, b) in &merges {
        vocab.push(format!("{a}{b}"));
    }
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    Bpe { merges, vocab }
}

impl Bpe {
    /// `vocab.json` (token → id, in id order).
    pub fn vocab_json(&self) -> Value {
        let mut m = Map::new();
        for (i, t) in self.vocab.iter().enumerate() {
            m.insert(t.clone(), json!(i));
        }
        Value::Object(m)
    }

    /// `merges.txt` as CLIP writes it.
    pub fn merges_txt(&self) -> String {
        let mut s = String::from("#version: 0.2\n");
        for (a, b) in &self.merges {
            s.push_str(&format!("{a} {b}\n"));
        }
        s
    }

    /// `tokenizer_config.json` of a CLIP tokenizer over this vocabulary (SD pads with `<|endoftext|>`).
    pub fn tokenizer_config() -> Value {
        json!({
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": 77,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "do_lower_case": true,
            "errors": "replace",
            "add_prefix_space": false
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ClipTokenizer;

    #[test]
    fn splits_like_clip() {
        assert_eq!(words("A red-ish  circle, 42!"), ["a", "red", "-", "ish", "circle", ",", "4", "2", "!"]);
    }

    #[test]
    fn merges_until_words_are_tokens_and_the_tokenizer_agrees() {
        let texts: Vec<String> =
            ["a red circle moving right", "a blue square moving left", "a red square"].map(String::from).to_vec();
        let bpe = train(&texts, 1000);
        assert_eq!(bpe.vocab.len(), 512 + bpe.merges.len() + 2);
        let config = serde_json::from_value(Bpe::tokenizer_config()).unwrap();
        let tok = ClipTokenizer::from_vocab_merges(bpe.vocab_json(), &bpe.merges_txt(), &config).unwrap();
        let ids = tok.encode_unpadded("a red circle moving right").unwrap();
        // <|startoftext|>, one id per word, <|endoftext|>.
        assert_eq!(ids.len(), 7, "{ids:?}");
        let id = |t: &str| bpe.vocab.iter().position(|v| v == t).unwrap() as i64;
        assert_eq!(ids[2], id("red</w>"));
        assert_eq!(ids[0], id("<|startoftext|>"));
        // Unseen words still tokenize (into pieces).
        assert!(tok.encode_unpadded("a purple hexagon").unwrap().len() > 5);
        // Deterministic.
        assert_eq!(train(&texts, 1000), bpe);
    }
}
