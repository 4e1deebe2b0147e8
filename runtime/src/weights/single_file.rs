//! Single-file SD1.x checkpoints in the original (LDM / CompVis) key layout — `model.diffusion_model.*`,
//! `first_stage_model.*`, `cond_stage_model.transformer.*` — mapped key by key onto the diffusers names,
//! as diffusers' `convert_ldm_unet_checkpoint` / `convert_ldm_vae_checkpoint` do.

use super::TensorMap;
use crate::error::{Error, Result};

const UNET_PREFIX: &str = "model.diffusion_model.";
const VAE_PREFIXES: [&str; 2] = ["first_stage_model.", "vae."];
const CLIP_PREFIXES: [&str; 2] = ["cond_stage_model.transformer.", "conditioner.embedders.0.transformer."];

/// The three components of a single-file checkpoint, in diffusers names.
#[derive(Debug, Default)]
pub struct Converted {
    pub unet: TensorMap,
    pub vae: TensorMap,
    pub text_encoder: TensorMap,
    /// Keys that belong to none of them (EMA copies, optimizer state, …).
    pub unused: Vec<String>,
}

/// Whether these tensors are a single-file SD checkpoint.
pub fn is_single_file(tensors: &TensorMap) -> bool {
    tensors.keys().any(|k| k.starts_with(UNET_PREFIX))
}

/// Refuses checkpoints of other families, by their telltale keys.
pub fn check_family(tensors: &TensorMap) -> Result<()> {
    if tensors.keys().any(|k| k.starts_with("conditioner.embedders.1.")) {
        return Err(Error::Invalid(
            "this single-file checkpoint is SDXL (two text encoders); vidtune runs SD1.x".into(),
        ));
    }
    if tensors.keys().any(|k| k.starts_with("cond_stage_model.model.")) {
        return Err(Error::Invalid(
            "this single-file checkpoint uses an OpenCLIP text encoder (SD 2.x); convert it to a diffusers folder \
             (diffusers' StableDiffusionPipeline.from_single_file(...).save_pretrained(DIR)) and load that"
                .into(),
        ));
    }
    Ok(())
}

fn resnet_rest(rest: &str) -> String {
    const MAP: [(&str, &str); 6] = [
        ("in_layers.0", "norm1"),
        ("in_layers.2", "conv1"),
        ("out_layers.0", "norm2"),
        ("out_layers.3", "conv2"),
        ("emb_layers.1", "time_emb_proj"),
        ("skip_connection", "conv_shortcut"),
    ];
    for (ldm, diffusers) in MAP {
        if let Some(tail) = rest.strip_prefix(ldm) {
            return format!("{diffusers}{tail}");
        }
    }
    rest.to_string()
}

/// `input_blocks.4.1.proj_in.weight` → (4, 1, "proj_in.weight").
fn indexed<'a>(key: &'a str, head: &str) -> Option<(i64, i64, &'a str)> {
    let rest = key.strip_prefix(head)?.strip_prefix('.')?;
    let mut it = rest.splitn(3, '.');
    let i = it.next()?.parse().ok()?;
    let j = it.next()?.parse().ok()?;
    Some((i, j, it.next()?))
}

/// The diffusers name of an LDM UNet key (without `model.diffusion_model.`).
pub fn unet_key(key: &str, layers_per_block: i64) -> Option<String> {
    const FIXED: [(&str, &str); 5] = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (ldm, diffusers) in FIXED {
        if let Some(tail) = key.strip_prefix(ldm) {
            return Some(format!("{diffusers}{tail}"));
        }
    }
    let per = layers_per_block + 1;
    if let Some((i, j, rest)) = indexed(key, "input_blocks") {
        let (block, layer) = ((i - 1) / per, (i - 1) % per);
        return match j {
            0 => Some(match rest.strip_prefix("op.") {
                Some(tail) => format!("down_blocks.{block}.downsamplers.0.conv.{tail}"),
                None => format!("down_blocks.{block}.resnets.{layer}.{}", resnet_rest(rest)),
            }),
            1 => Some(format!("down_blocks.{block}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (k, rest) = rest.split_once('.')?;
        let k: i64 = k.parse().ok()?;
        return Some(if k % 2 == 0 {
            format!("mid_block.resnets.{}.{}", k / 2, resnet_rest(rest))
        } else {
            format!("mid_block.attentions.{}.{rest}", (k - 1) / 2)
        });
    }
    if let Some((i, j, rest)) = indexed(key, "output_blocks") {
        let (block, layer) = (i / per, i % per);
        return match (j, rest.strip_prefix("conv.")) {
            (0, _) => Some(format!("up_blocks.{block}.resnets.{layer}.{}", resnet_rest(rest))),
            (1 | 2, Some(tail)) => Some(format!("up_blocks.{block}.upsamplers.0.conv.{tail}")),
            (1, None) => Some(format!("up_blocks.{block}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    None
}

/// The diffusers name of an LDM VAE key (without `first_stage_model.`); `blocks` = number of levels.
pub fn vae_key(key: &str, blocks: i64) -> Option<String> {
    for side in ["encoder", "decoder"] {
        let Some(rest) = key.strip_prefix(side).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let mapped = if let Some(tail) = rest.strip_prefix("norm_out.") {
            format!("conv_norm_out.{tail}")
        } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
            rest.to_string()
        } else if let Some(tail) = rest.strip_prefix("mid.block_1.") {
            format!("mid_block.resnets.0.{}", tail.replace("nin_shortcut", "conv_shortcut"))
        } else if let Some(tail) = rest.strip_prefix("mid.block_2.") {
            format!("mid_block.resnets.1.{}", tail.replace("nin_shortcut", "conv_shortcut"))
        } else if let Some(tail) = rest.strip_prefix("mid.attn_1.") {
            let (layer, leaf) = tail.split_once('.')?;
            let layer = match layer {
                "norm" => "group_norm",
                "q" => "to_q",
                "k" => "to_k",
                "v" => "to_v",
                "proj_out" => "to_out.0",
                _ => return None,
            };
            format!("mid_block.attentions.0.{layer}.{leaf}")
        } else {
            let (level_key, kind) = if side == "encoder" { ("down.", "down_blocks") } else { ("up.", "up_blocks") };
            let tail = rest.strip_prefix(level_key)?;
            let (level, tail) = tail.split_once('.')?;
            let mut level: i64 = level.parse().ok()?;
            if side == "decoder" {
                level = blocks - 1 - level;
            }
            if let Some(t) = tail.strip_prefix("block.") {
                format!("{kind}.{level}.resnets.{}", t.replace("nin_shortcut", "conv_shortcut"))
            } else if let Some(t) =
                tail.strip_prefix("downsample.conv.").or_else(|| tail.strip_prefix("upsample.conv."))
            {
                let sampler = if side == "encoder" { "downsamplers" } else { "upsamplers" };
                format!("{kind}.{level}.{sampler}.0.conv.{t}")
            } else {
                return None;
            }
        };
        return Some(format!("{side}.{mapped}"));
    }
    if key.starts_with("quant_conv.") || key.starts_with("post_quant_conv.") {
        return Some(key.to_string());
    }
    None
}

/// Whether these tensors are a ControlNet in its authors' layout (`control_model.input_hint_block.*`, or
/// the same without the prefix).
pub fn is_original_controlnet(tensors: &TensorMap) -> bool {
    tensors.keys().any(|k| k.starts_with("control_model.input_hint_block.") || k.starts_with("input_hint_block."))
}

/// A ControlNet in its authors' layout, in diffusers names: the encoder as the UNet's (`input_blocks`,
/// `middle_block`, `time_embed`), the hint convolutions (`input_hint_block.{0, 2, 4, …}`: the first is
/// `conv_in`, the last `conv_out`, the others `blocks.{0, 1, …}`), `zero_convs.N.0` and `middle_block_out.0`.
pub fn convert_controlnet(tensors: TensorMap, layers_per_block: i64) -> Result<(TensorMap, Vec<String>)> {
    let prefix = if tensors.keys().any(|k| k.starts_with("control_model.")) { "control_model." } else { "" };
    let hint = |k: &str| -> Option<i64> { k.strip_prefix("input_hint_block.")?.split('.').next()?.parse().ok() };
    let last = tensors.keys().filter_map(|k| hint(k.strip_prefix(prefix)?)).max();
    let (mut out, mut unused) = (TensorMap::new(), vec![]);
    for (key, value) in tensors {
        let Some(rest) = key.strip_prefix(prefix) else {
            unused.push(key);
            continue;
        };
        let leaf = rest.rsplit('.').next().unwrap_or_default();
        let name = if let Some(i) = hint(rest) {
            Some(match i {
                0 => format!("controlnet_cond_embedding.conv_in.{leaf}"),
                i if Some(i) == last => format!("controlnet_cond_embedding.conv_out.{leaf}"),
                i => format!("controlnet_cond_embedding.blocks.{}.{leaf}", i / 2 - 1),
            })
        } else if let Some(tail) = rest.strip_prefix("zero_convs.") {
            tail.split_once(".0.").map(|(i, leaf)| format!("controlnet_down_blocks.{i}.{leaf}"))
        } else if let Some(leaf) = rest.strip_prefix("middle_block_out.0.") {
            Some(format!("controlnet_mid_block.{leaf}"))
        } else {
            unet_key(rest, layers_per_block)
        };
        match name {
            Some(n) => {
                out.insert(n, value);
            }
            None => unused.push(key),
        }
    }
    if !out.keys().any(|k| k.starts_with("controlnet_cond_embedding.conv_out.")) {
        return Err(Error::Invalid("not a ControlNet: its input_hint_block has no final convolution".into()));
    }
    unused.sort();
    Ok((out, unused))
}

/// Splits a single-file checkpoint into its components with diffusers names.
pub fn convert(tensors: TensorMap, layers_per_block: i64, vae_blocks: i64) -> Result<Converted> {
    check_family(&tensors)?;
    let mut out = Converted::default();
    for (key, value) in tensors {
        if let Some(rest) = key.strip_prefix(UNET_PREFIX) {
            match unet_key(rest, layers_per_block) {
                Some(k) => {
                    out.unet.insert(k, value);
                }
                None => out.unused.push(key),
            }
        } else if let Some(rest) = VAE_PREFIXES.iter().find_map(|p| key.strip_prefix(p)) {
            match vae_key(rest, vae_blocks) {
                Some(k) => {
                    let v = if k.contains(".attentions.")
                        && k.ends_with("weight")
                        && !k.contains("group_norm")
                        && value.dim() > 2
                    {
                        value.flatten(1, -1)
                    } else {
                        value
                    };
                    out.vae.insert(k, v);
                }
                None => out.unused.push(key),
            }
        } else if let Some(rest) = CLIP_PREFIXES.iter().find_map(|p| key.strip_prefix(p)) {
            out.text_encoder.insert(rest.to_string(), value);
        } else {
            out.unused.push(key);
        }
    }
    if out.unet.is_empty() {
        return Err(Error::Invalid("not a single-file SD checkpoint: no model.diffusion_model.* tensors".into()));
    }
    out.unused.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_keys_map_like_diffusers() {
        let cases = [
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
            ("input_blocks.0.0.weight", "conv_in.weight"),
            ("input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"),
            (
                "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
                "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
            ),
            ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
            ("input_blocks.4.0.skip_connection.bias", "down_blocks.1.resnets.0.conv_shortcut.bias"),
            ("middle_block.0.emb_layers.1.weight", "mid_block.resnets.0.time_emb_proj.weight"),
            ("middle_block.1.proj_out.weight", "mid_block.attentions.0.proj_out.weight"),
            ("middle_block.2.out_layers.3.bias", "mid_block.resnets.1.conv2.bias"),
            ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
            ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
            ("output_blocks.5.1.norm.weight", "up_blocks.1.attentions.2.norm.weight"),
            ("output_blocks.11.0.out_layers.0.weight", "up_blocks.3.resnets.2.norm2.weight"),
            ("out.2.weight", "conv_out.weight"),
        ];
        for (ldm, want) in cases {
            assert_eq!(unet_key(ldm, 2).as_deref(), Some(want), "{ldm}");
        }
    }

    #[test]
    fn vae_keys_map_like_diffusers() {
        let cases = [
            ("encoder.down.0.block.1.nin_shortcut.weight", "encoder.down_blocks.0.resnets.1.conv_shortcut.weight"),
            ("encoder.down.2.downsample.conv.bias", "encoder.down_blocks.2.downsamplers.0.conv.bias"),
            ("decoder.up.3.block.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight"),
            ("decoder.up.1.upsample.conv.weight", "decoder.up_blocks.2.upsamplers.0.conv.weight"),
            ("decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight"),
            ("encoder.mid.attn_1.norm.bias", "encoder.mid_block.attentions.0.group_norm.bias"),
            ("encoder.mid.block_2.norm1.weight", "encoder.mid_block.resnets.1.norm1.weight"),
            ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (ldm, want) in cases {
            assert_eq!(vae_key(ldm, 4).as_deref(), Some(want), "{ldm}");
        }
    }
}
