//! `model_index.json` of a diffusers pipeline and `tokenizer/tokenizer_config.json`.

use super::ExtraFields;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `model_index.json`: the pipeline class and, per component, `[library, class]` (or nulls).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelIndex {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(rename = "_diffusers_version", default)]
    pub diffusers_version: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for ModelIndex {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        // Every component entry is "extra" here; nothing to report.
        static EMPTY: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        &EMPTY
    }
}

impl ModelIndex {
    /// The class of a component (`"UNet2DConditionModel"`), if present and not null.
    pub fn component_class(&self, name: &str) -> Option<String> {
        let entry = self.extra.get(name)?.as_array()?;
        entry.get(1)?.as_str().map(str::to_string)
    }
}

/// A special token given as a string or as transformers' `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenSpec {
    Text(String),
    Added { content: String },
}

impl TokenSpec {
    pub fn content(&self) -> &str {
        match self {
            TokenSpec::Text(s) | TokenSpec::Added { content: s } => s,
        }
    }
}

/// `tokenizer_config.json` of a `CLIPTokenizer`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizerConfig {
    #[serde(default)]
    pub tokenizer_class: Option<String>,
    #[serde(default)]
    pub model_max_length: Option<f64>,
    #[serde(default)]
    pub bos_token: Option<TokenSpec>,
    #[serde(default)]
    pub eos_token: Option<TokenSpec>,
    #[serde(default)]
    pub unk_token: Option<TokenSpec>,
    #[serde(default)]
    pub pad_token: Option<TokenSpec>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ExtraFields for TokenizerConfig {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extra
    }
}

impl TokenizerConfig {
    pub fn max_length(&self) -> usize {
        match self.model_max_length {
            Some(n) if (2.0..1e6).contains(&n) => n as usize,
            _ => 77,
        }
    }

    fn token(spec: &Option<TokenSpec>, default: &str) -> String {
        spec.as_ref().map(|t| t.content().to_string()).unwrap_or_else(|| default.to_string())
    }

    pub fn bos(&self) -> String {
        Self::token(&self.bos_token, "<|startoftext|>")
    }
    pub fn eos(&self) -> String {
        Self::token(&self.eos_token, "<|endoftext|>")
    }
    pub fn unk(&self) -> String {
        Self::token(&self.unk_token, "<|endoftext|>")
    }
    pub fn pad(&self) -> String {
        Self::token(&self.pad_token, "<|endoftext|>")
    }
}
