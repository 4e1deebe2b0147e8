//! CLIP's byte-level BPE tokenizer, built with the `tokenizers` crate exactly as transformers'
//! `CLIPTokenizer` builds it: NFC + whitespace collapse + lower-casing, CLIP's split pattern, byte-level
//! symbols with a `</w>` end-of-word suffix, `<|startoftext|> … <|endoftext|>`, truncation to
//! `model_max_length` (77) and padding with the configured pad token.
//!
//! A tokenizer folder may hold `tokenizer.json` (what transformers 5 saves) or `vocab.json` + `merges.txt`
//! (the original CLIP files, as in the SD1.x repositories); `tokenizer_config.json` gives the special
//! tokens and the length.

use crate::config::{parse_config, TokenizerConfig};
use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::Tokenizer;

/// CLIP's split pattern (contractions, letter runs, single digits, punctuation runs).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A prompt turned into ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Exactly `max_length` ids (truncated, then padded).
    pub ids: Vec<i64>,
    /// Tokens the prompt had before truncation, special tokens included.
    pub full_len: usize,
}

impl Encoded {
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    pub max_length: usize,
    pub pad_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
}

/// The 256 printable stand-ins of bytes that byte-level BPE works on (GPT-2 / CLIP `bytes_to_unicode`).
pub fn byte_alphabet() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, u32)> = bs.into_iter().zip(cs).collect();
    pairs.sort();
    pairs.into_iter().map(|(_, c)| char::from_u32(c).unwrap_or('?')).collect()
}

impl ClipTokenizer {
    /// Loads a tokenizer folder (`tokenizer.json`, or `vocab.json` + `merges.txt`, with
    /// `tokenizer_config.json`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig = if cfg_path.exists() {
            parse_config(&crate::fsutil::read_text(&cfg_path, "tokenizer config")?, &cfg_path)?
        } else {
            serde_json::from_str("{}").expect("empty tokenizer config")
        };
        let json_path = dir.join("tokenizer.json");
        let (vocab_path, merges_path) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let spec = if json_path.exists() {
            let text = crate::fsutil::read_text(&json_path, "tokenizer")?;
            serde_json::from_str(&text)
                .map_err(|e| Error::bad_file(&json_path, format!("invalid tokenizer.json: {e}")))?
        } else if vocab_path.exists() && merges_path.exists() {
            let vocab_text = crate::fsutil::read_text(&vocab_path, "vocabulary")?;
            let vocab: Value = serde_json::from_str(&vocab_text)
                .map_err(|e| Error::bad_file(&vocab_path, format!("invalid vocab: {e}")))?;
            let merges_text = crate::fsutil::read_text(&merges_path, "merges")?;
            clip_spec(vocab, &merges_text, &config)
        } else {
            return Err(Error::bad_file(
                dir,
                "no tokenizer here: expected tokenizer.json, or vocab.json and merges.txt (CLIP's BPE files)",
            ));
        };
        Self::from_spec(spec, &config, dir)
    }

    /// A tokenizer from a vocabulary map and merge list in CLIP's format.
    pub fn from_vocab_merges(vocab: Value, merges: &str, config: &TokenizerConfig) -> Result<Self> {
        Self::from_spec(clip_spec(vocab, merges, config), config, Path::new("<memory>"))
    }

    /// A byte-level tokenizer without merges (every byte is a token): real CLIP tokenization, no training.
    pub fn bytes_only() -> Self {
        let mut vocab = serde_json::Map::new();
        let alphabet = byte_alphabet();
        for c in &alphabet {
            vocab.insert(c.to_string(), json!(vocab.len()));
        }
        for c in &alphabet {
            vocab.insert(format!("{c}</w>"), json!(vocab.len()));
        }
        for special in ["<|startoftext|>", "<|endoftext|>"] {
            vocab.insert(special.to_string(), json!(vocab.len()));
        }
        let config: TokenizerConfig = serde_json::from_str("{}").expect("empty tokenizer config");
        Self::from_vocab_merges(Value::Object(vocab), "#version: 0.2\n", &config).expect("the byte tokenizer builds")
    }

    fn from_spec(spec: Value, config: &TokenizerConfig, source: &Path) -> Result<Self> {
        let text = spec.to_string();
        let mut inner: Tokenizer =
            text.parse().map_err(|e| Error::bad_file(source, format!("cannot build the tokenizer: {e}")))?;
        let _ = inner.with_truncation(None);
        inner.with_padding(None);
        let id = |token: String| -> Result<i64> {
            inner
                .token_to_id(&token)
                .map(i64::from)
                .ok_or_else(|| Error::bad_file(source, format!("the vocabulary has no {token:?} token")))
        };
        let (bos_id, eos_id) = (id(config.bos())?, id(config.eos())?);
        let pad = config.pad();
        let pad_id = match inner.token_to_id(&pad) {
            Some(i) => i as i64,
            None => return Err(Error::bad_file(source, format!("the vocabulary has no pad token {pad:?}"))),
        };
        // transformers registers the special tokens (pad included) as added tokens, matched before BPE.
        let specials: Vec<tokenizers::AddedToken> = [config.bos(), config.eos(), config.unk(), pad]
            .into_iter()
            .map(|t| tokenizers::AddedToken::from(t, true))
            .collect();
        inner
            .add_special_tokens(specials)
            .map_err(|e| Error::bad_file(source, format!("cannot add special tokens: {e}")))?;
        Ok(ClipTokenizer { inner, max_length: config.max_length(), pad_id, bos_id, eos_id })
    }

    /// Ids of `text` with `<|startoftext|>` and `<|endoftext|>`, not truncated.
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<i64>> {
        let enc =
            self.inner.encode(text, true).map_err(|e| Error::Invalid(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Ids truncated to `max_length` (keeping the end-of-text token) and padded with the pad token.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let full = self.encode_unpadded(text)?;
        let full_len = full.len();
        let mut ids = full;
        if ids.len() > self.max_length {
            ids.truncate(self.max_length - 1);
            ids.push(self.eos_id);
        }
        ids.resize(self.max_length, self.pad_id);
        Ok(Encoded { ids, full_len })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// The tokenizer.json of transformers' `CLIPTokenizer` for a vocabulary and merges.
fn clip_spec(vocab: Value, merges: &str, config: &TokenizerConfig) -> Value {
    let merges: Vec<&str> = merges.lines().filter(|l| !l.starts_with("#version") && !l.trim().is_empty()).collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": [config.eos(), vocab.get(config.eos()).cloned().unwrap_or(json!(0))],
            "cls": [config.bos(), vocab.get(config.bos()).cloned().unwrap_or(json!(0))],
            "trim_offsets": false,
            "add_prefix_space": false
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": config.unk(),
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges
        }
    })
}
