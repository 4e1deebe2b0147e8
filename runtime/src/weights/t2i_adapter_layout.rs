//! T2I-Adapters in their authors' key layout (TencentARC's `Adapter` and `Adapter_light`, the
//! `t2iadapter_*_sd14v1` files once converted from `.pth` to `.safetensors`), mapped onto diffusers'
//! `T2IAdapter` names, as diffusers' `convert_original_t2iadapter.py` does:
//!
//! - full: `conv_in.*` → `adapter.conv_in.*`; the flat `body.K.{block1, block2}` (`num_res_blocks` per
//!   block) → `adapter.body.{K / n}.resnets.{K % n}.*`, and `body.K.in_conv` → `adapter.body.{K / n}.in_conv`;
//! - light: `body.I.body.J.*` → `adapter.body.I.resnets.J.*`, `body.I.{in_conv, out_conv}` unchanged
//!   under `adapter.`.
//!
//! These files ship without a config, so one is read from the weights' shapes: SD 1.x's four blocks, the
//! 8× pixel unshuffle (`in_channels` = the first convolution's inputs / 64). A config given beside the file
//! or with `#{config: …}` is used instead.

use super::TensorMap;
use crate::config::adapter::T2IAdapterConfig;
use crate::error::{Error, Result};
use std::collections::BTreeSet;

/// The pixel unshuffle of the authors' SD 1.x adapters.
const UNSHUFFLE: i64 = 8;
/// Blocks of a full adapter for SD 1.x: one per UNet down block.
const SD1_BLOCKS: i64 = 4;

/// Whether these tensors are a T2I-Adapter in its authors' layout (no `adapter.` prefix, a flat `body`).
pub fn is_original(tensors: &TensorMap) -> bool {
    !tensors.keys().any(|k| k.starts_with("adapter."))
        && tensors.keys().any(|k| k.starts_with("body.0."))
        && (tensors.contains_key("conv_in.weight") || tensors.contains_key("body.0.in_conv.weight"))
}

fn light(tensors: &TensorMap) -> bool {
    !tensors.contains_key("conv_in.weight")
}

/// The indices `i` of keys `{prefix}{i}.…`.
fn indices(tensors: &TensorMap, prefix: &str) -> BTreeSet<i64> {
    tensors.keys().filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse().ok()).collect()
}

fn size(tensors: &TensorMap, key: &str) -> Result<Vec<i64>> {
    tensors
        .get(key)
        .map(|t| t.size())
        .ok_or_else(|| Error::Invalid(format!("not a T2I-Adapter in its authors' layout: {key} is missing")))
}

fn in_channels(unshuffled: i64, key: &str) -> Result<i64> {
    if unshuffled % (UNSHUFFLE * UNSHUFFLE) != 0 {
        return Err(Error::Invalid(format!(
            "{key} takes {unshuffled} channels, not a multiple of {}: not an SD 1.x adapter with an {UNSHUFFLE}x \
             pixel unshuffle (pass #{{config: \"…/config.json\"}})",
            UNSHUFFLE * UNSHUFFLE
        )));
    }
    Ok(unshuffled / (UNSHUFFLE * UNSHUFFLE))
}

/// The diffusers config these weights describe.
pub fn config(tensors: &TensorMap) -> Result<T2IAdapterConfig> {
    if tensors.keys().any(|k| k.contains(".skep.")) {
        return Err(Error::Invalid(
            "a T2I-Adapter with skip convolutions (`skep`, TencentARC's sk=False variant): diffusers' T2IAdapter, \
             and so vidtune, has no such block"
                .into(),
        ));
    }
    let (channels, num_res_blocks, in_channels, adapter_type) = if light(tensors) {
        let blocks = indices(tensors, "body.").len() as i64;
        let res = indices(tensors, "body.0.body.").len() as i64;
        let widths = (0..blocks)
            .map(|i| size(tensors, &format!("body.{i}.out_conv.weight")).map(|s| s[0]))
            .collect::<Result<Vec<i64>>>()?;
        if blocks < 2 || widths[widths.len() - 1] != widths[widths.len() - 2] {
            return Err(Error::Invalid(format!(
                "a light T2I-Adapter whose last block changes width ({widths:?}): diffusers' light adapter repeats \
                 the last width"
            )));
        }
        let unshuffled = size(tensors, "body.0.in_conv.weight")?[1];
        (widths[..widths.len() - 1].to_vec(), res, in_channels(unshuffled, "body.0.in_conv")?, "light_adapter")
    } else {
        let flat = indices(tensors, "body.").len() as i64;
        if flat == 0 || flat % SD1_BLOCKS != 0 {
            return Err(Error::Invalid(format!(
                "a full T2I-Adapter with {flat} residual blocks, not a multiple of SD 1.x's {SD1_BLOCKS} blocks \
                 (pass #{{config: \"…/config.json\"}})"
            )));
        }
        let res = flat / SD1_BLOCKS;
        let widths = (0..SD1_BLOCKS)
            .map(|i| size(tensors, &format!("body.{}.block1.weight", i * res)).map(|s| s[0]))
            .collect::<Result<Vec<i64>>>()?;
        let kernel = size(tensors, "body.0.block2.weight")?[2];
        if kernel != 1 {
            return Err(Error::Invalid(format!(
                "a full T2I-Adapter whose second convolutions are {kernel}x{kernel} (TencentARC's ksize={kernel} \
                 variant): diffusers' T2IAdapter has 1x1"
            )));
        }
        let unshuffled = size(tensors, "conv_in.weight")?[1];
        (widths, res, in_channels(unshuffled, "conv_in")?, "full_adapter")
    };
    Ok(T2IAdapterConfig {
        class_name: Some("T2IAdapter".into()),
        in_channels,
        channels,
        num_res_blocks,
        downscale_factor: UNSHUFFLE,
        adapter_type: adapter_type.into(),
        extra: Default::default(),
    })
}

/// The weights in diffusers' names, for the adapter `config` describes. Keys it does not know keep their
/// names, so that loading reports them as unexpected.
pub fn convert(tensors: TensorMap, config: &T2IAdapterConfig) -> Result<TensorMap> {
    let light = config.adapter_type == "light_adapter";
    let n = config.num_res_blocks;
    let mut out = TensorMap::new();
    // In name order, so that an error names the same key every time.
    let mut tensors: Vec<_> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in tensors {
        let name = match key.strip_prefix("body.").and_then(|r| r.split_once('.')) {
            Some((k, rest)) => match k.parse::<i64>() {
                Ok(k) if light => match rest.strip_prefix("body.") {
                    Some(res) => format!("adapter.body.{k}.resnets.{res}"),
                    None => format!("adapter.body.{k}.{rest}"),
                },
                Ok(k) if rest.starts_with("in_conv.") => {
                    if k % n != 0 {
                        return Err(Error::Invalid(format!(
                            "{key}: an input convolution inside a block, not at its first residual block \
                             (num_res_blocks {n})"
                        )));
                    }
                    format!("adapter.body.{}.{rest}", k / n)
                }
                Ok(k) => format!("adapter.body.{}.resnets.{}.{rest}", k / n, k % n),
                Err(_) => key,
            },
            None if key.starts_with("conv_in.") => format!("adapter.{key}"),
            None => key,
        };
        out.insert(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn full(widths: &[i64], res: i64, cin: i64) -> TensorMap {
        let mut t = TensorMap::new();
        let z = |s: &[i64]| Tensor::zeros(s, (Kind::Float, tch::Device::Cpu));
        t.insert("conv_in.weight".into(), z(&[widths[0], cin, 3, 3]));
        for (i, &w) in widths.iter().enumerate() {
            for j in 0..res {
                let k = i as i64 * res + j;
                t.insert(format!("body.{k}.block1.weight"), z(&[w, w, 3, 3]));
                t.insert(format!("body.{k}.block2.weight"), z(&[w, w, 1, 1]));
                if j == 0 && i > 0 && widths[i - 1] != w {
                    t.insert(format!("body.{k}.in_conv.weight"), z(&[w, widths[i - 1], 1, 1]));
                }
            }
        }
        t
    }

    #[test]
    fn the_sd14_full_adapter_reads_as_diffusers_defaults_and_renames_block_by_block() {
        let t = full(&[320, 640, 1280, 1280], 2, 192);
        assert!(is_original(&t));
        let c = config(&t).unwrap();
        assert_eq!((c.in_channels, c.channels.clone(), c.num_res_blocks), (3, vec![320, 640, 1280, 1280], 2));
        assert_eq!((c.downscale_factor, c.adapter_type.as_str()), (8, "full_adapter"));
        let names: BTreeSet<String> = convert(t, &c).unwrap().into_keys().collect();
        for k in ["adapter.conv_in.weight", "adapter.body.1.in_conv.weight", "adapter.body.3.resnets.1.block2.weight"] {
            assert!(names.contains(k), "{k} not in {names:?}");
        }
        assert!(!names.iter().any(|k| !k.starts_with("adapter.")), "{names:?}");
    }

    #[test]
    fn variants_diffusers_lacks_and_odd_shapes_are_refused_by_name() {
        let mut t = full(&[32, 64, 64, 64], 2, 64);
        t.insert("body.2.skep.weight".into(), Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)));
        assert!(config(&t).unwrap_err().to_string().contains("skep"));
        let t = full(&[32, 64, 64], 2, 64);
        assert!(config(&t).unwrap_err().to_string().contains("6 residual blocks"));
        let t = full(&[32, 64, 64, 64], 2, 48);
        assert!(config(&t).unwrap_err().to_string().contains("48 channels"));
        assert!(!is_original(&TensorMap::from([(
            "adapter.conv_in.weight".to_string(),
            Tensor::zeros([1], (Kind::Float, tch::Device::Cpu))
        )])));
    }
}
