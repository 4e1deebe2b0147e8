//! Models with weights, one file per diffusers / transformers module type.

pub mod attention;
pub mod attention_processor;
pub mod autoencoder_kl;
pub mod checkpoint;
pub mod clip;
pub mod clip_text;
pub mod clip_vision;
pub mod controlnet;
pub mod embeddings;
pub mod nn;
pub mod resnet;
pub mod t2i_adapter;
pub mod tokenizer;
pub mod transformer_2d;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod vae;

pub use attention_processor::{Attention, AttnContext, AttnProcessor};
pub use autoencoder_kl::AutoencoderKL;
pub use clip_text::ClipTextTransformer;
pub use controlnet::{ControlNetModel, ControlResiduals};
pub use t2i_adapter::{AdapterFeatures, T2IAdapter};
pub use tokenizer::ClipTokenizer;
pub use unet_2d_condition::UNet2DConditionModel;
