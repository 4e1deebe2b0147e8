//! The image model's own attention in both roles: `self` (per-frame self-attention) and `plain` (attention
//! to the text).

use super::{Build, Entry, Role, NO_PARAMS};
use crate::models::attention_processor::PlainAttention;

/// The `self` module's entry in the registry.
pub const SELF: Entry = Entry {
    role: Role::Spatial,
    name: "self",
    summary: "per-frame self-attention (the image model's)",
    params: NO_PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Processor(|_| Box::new(PlainAttention)),
};

/// The `plain` module's entry in the registry.
pub const PLAIN: Entry = Entry {
    role: Role::Cross,
    name: "plain",
    summary: "attention to the text (the image model's)",
    params: NO_PARAMS,
    needs_masks: false,
    trains: &[],
    prepare: None,
    build: Build::Processor(|_| Box::new(PlainAttention)),
};
