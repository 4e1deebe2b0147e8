//! Configs of random models (`random:tiny`, `random:medium`, `random:sd14`): SD1.x's architecture at three
//! widths, for trying things without weights, tests and benchmarks.

use crate::config::{AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};

/// Configs of the tiny random model: SD1.x's architecture, narrow (UNet 32/64 channels, VAE with four levels
/// so latents are 1/8 of the image as in SD, a 2-layer text encoder over a byte-level vocabulary).
pub fn tiny_configs(vocab_size: i64) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    let unet = serde_json::from_value(serde_json::json!({
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "attention_head_dim": 4,
        "cross_attention_dim": 32,
        "norm_num_groups": 8,
        "sample_size": 8
    }))
    .expect("tiny unet config");
    let vae = serde_json::from_value(serde_json::json!({
        "block_out_channels": [16, 16, 32, 32],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 64
    }))
    .expect("tiny vae config");
    let text = serde_json::from_value(serde_json::json!({
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1
    }))
    .expect("tiny text config");
    (unet, vae, text)
}

/// Configs of a medium SD1.x shape (UNet 64-128-256-256, 2 layers a block, 8 heads, cross-attention 256;
/// a 4-layer 256-wide text tower; VAE 32-64-64-64 with factor 8): benchmarks where compute and overhead
/// both count.
pub fn medium_configs(vocab_size: i64) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    sd_shaped([64, 128, 256, 256], 8, 256, [32, 64, 64, 64], (256, 1024, 4, 4), 16, vocab_size)
}

/// Configs of Stable Diffusion 1.4's exact architecture (UNet 320-640-1280-1280, 859,520,964 parameters;
/// the 12-layer 768-wide text tower; the 128-256-512-512 VAE), for benchmarks with random weights.
pub fn sd14_configs(vocab_size: i64) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    sd_shaped([320, 640, 1280, 1280], 8, 768, [128, 256, 512, 512], (768, 3072, 12, 12), 64, vocab_size)
}

fn sd_shaped(
    unet_channels: [i64; 4],
    heads: i64,
    cross: i64,
    vae_channels: [i64; 4],
    (width, inner, layers, text_heads): (i64, i64, i64, i64),
    sample: i64,
    vocab_size: i64,
) -> (UNet2DConditionConfig, AutoencoderKLConfig, ClipTextConfig) {
    let unet = serde_json::from_value(serde_json::json!({
        "block_out_channels": unet_channels,
        "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "attention_head_dim": heads,
        "cross_attention_dim": cross,
        "norm_num_groups": 32,
        "sample_size": sample
    }))
    .expect("SD-shaped unet config");
    let vae = serde_json::from_value(serde_json::json!({
        "block_out_channels": vae_channels,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": sample * 8
    }))
    .expect("SD-shaped vae config");
    let text = serde_json::from_value(serde_json::json!({
        "vocab_size": vocab_size,
        "hidden_size": width,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": text_heads,
        "max_position_embeddings": 77,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1
    }))
    .expect("SD-shaped text config");
    (unet, vae, text)
}
