//! Loading Stable Diffusion: the real SD1.4 architecture against diffusers' parameter list, the tiny random
//! model, and every bad input with its message.

mod common;
use common::cpu;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use vidtune_kernels_tests::fixtures_dir;
use vidtune_runtime::config::{parse_config, AutoencoderKLConfig, ClipTextConfig, UNet2DConditionConfig};
use vidtune_runtime::models::nn::{Builder, InitMode};
use vidtune_runtime::models::{AutoencoderKL, ClipTextTransformer, UNet2DConditionModel};
use vidtune_runtime::pipelines::t2i::{t2i, T2iOptions};
use vidtune_runtime::{load_sd, SdLoadOptions};

fn bundled(component: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sd-v1-4").join(component).join("config.json");
    std::fs::read_to_string(path).unwrap()
}

fn shapes(vs: &VarStore, strip: &str) -> BTreeMap<String, Vec<i64>> {
    vs.variables().into_iter().map(|(k, v)| (k.strip_prefix(strip).unwrap_or(&k).to_string(), v.size())).collect()
}

fn expected(component: &str) -> BTreeMap<String, Vec<i64>> {
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("sd14_parameters.json")).unwrap()).unwrap();
    all[component]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect()))
        .collect()
}

#[test]
fn sd14_architecture_names_and_shapes_equal_diffusers() {
    // Built without initialising (no memory is touched), from the committed SD1.4 configs.
    let unet_c: UNet2DConditionConfig = parse_config(&bundled("unet"), Path::new("unet/config.json")).unwrap();
    let vae_c: AutoencoderKLConfig = parse_config(&bundled("vae"), Path::new("vae/config.json")).unwrap();
    let text_c: ClipTextConfig = parse_config(&bundled("text_encoder"), Path::new("text_encoder/config.json")).unwrap();
    let vs = VarStore::new(tch::Device::Cpu);
    let _unet = UNet2DConditionModel::new(&Builder::new(vs.root(), InitMode::Empty), &unet_c, None).unwrap();
    let got = shapes(&vs, "");
    assert_eq!(got, expected("unet"), "UNet parameters differ from diffusers'");
    assert_eq!(got.values().map(|s| s.iter().product::<i64>()).sum::<i64>(), 859_520_964, "SD1.4 UNet parameter count");

    let vs = VarStore::new(tch::Device::Cpu);
    let _vae = AutoencoderKL::new(&Builder::new(vs.root(), InitMode::Empty), &vae_c).unwrap();
    let got = shapes(&vs, "");
    assert_eq!(got, expected("vae"), "VAE parameters differ from diffusers'");
    assert_eq!(got.values().map(|s| s.iter().product::<i64>()).sum::<i64>(), 83_653_863, "SD1.4 VAE parameter count");

    let vs = VarStore::new(tch::Device::Cpu);
    let _text = ClipTextTransformer::new(&Builder::new(vs.root(), InitMode::Empty), &text_c).unwrap();
    // transformers 5 names CLIPTextModel's tensors without `text_model.`; checkpoints on disk carry it.
    let got = shapes(&vs, "text_model.");
    assert_eq!(got, expected("text_encoder"), "text encoder parameters differ from transformers'");
    assert_eq!(
        got.values().map(|s| s.iter().product::<i64>()).sum::<i64>(),
        123_060_480,
        "CLIP ViT-L/14 text parameter count"
    );
}

#[test]
fn random_tiny_model_generates_an_image() {
    let sd = load_sd("random:tiny", &SdLoadOptions { seed: 3, ..cpu() }).unwrap();
    assert!(sd.random && sd.summary().contains("RANDOM WEIGHTS"), "{}", sd.summary());
    assert_eq!(sd.default_size(), 64);
    let out = t2i(&sd, "a red circle", &T2iOptions { steps: 3, seed: Some(5), ..Default::default() }).unwrap();
    assert_eq!((out.image.width(), out.image.height()), (64, 64));
    let again = t2i(&sd, "a red circle", &T2iOptions { steps: 3, seed: Some(5), ..Default::default() }).unwrap();
    assert!(out.image.tensor().equal(again.image.tensor()), "same seed, same image");
    let other = t2i(&sd, "a red circle", &T2iOptions { steps: 3, seed: Some(6), ..Default::default() }).unwrap();
    assert!(!out.image.tensor().equal(other.image.tensor()), "another seed, another image");
    let err = load_sd("random:huge", &cpu()).unwrap_err().to_string();
    assert!(err.contains("expected \"random:tiny\""), "{err}");
}

/// A copy of the tiny fixture pipeline to break.
fn copy_pipeline(tmp: &Path) -> PathBuf {
    let src = fixtures_dir().join("tiny-conv/pipeline");
    let dst = tmp.join("pipe");
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        let to = dst.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    dst
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn load_err(path: &Path, opts: &SdLoadOptions) -> String {
    match load_sd(path.to_str().unwrap(), opts) {
        Ok(_) => panic!("{} loaded, expected an error", path.display()),
        Err(e) => e.to_string(),
    }
}

fn rewrite_unet(pipe: &Path, edit: impl FnOnce(&mut Vec<(String, tch::Tensor)>)) {
    let file = pipe.join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = tch::Tensor::read_safetensors(&file).unwrap();
    edit(&mut tensors);
    tch::Tensor::write_safetensors(&tensors, &file).unwrap();
}

#[test]
fn bad_checkpoints_are_named() {
    let tmp = tempfile::tempdir().unwrap();

    // An SDXL UNet config.
    let pipe = copy_pipeline(tmp.path());
    let cfg = pipe.join("unet/config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["addition_embed_type"] = "text_time".into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let e = load_err(&pipe, &cpu());
    assert!(e.contains("SDXL UNet") && e.contains("addition_embed_type"), "{e}");
    std::fs::remove_dir_all(&pipe).unwrap();

    // A missing and a wrongly shaped tensor.
    let pipe = copy_pipeline(tmp.path());
    rewrite_unet(&pipe, |t| t.retain(|(k, _)| k != "conv_in.weight"));
    let e = load_err(&pipe, &cpu());
    assert!(e.contains("1 missing tensor(s): conv_in.weight"), "{e}");
    rewrite_unet(&pipe, |t| {
        t.push(("conv_in.weight".into(), tch::Tensor::zeros([8, 4, 5, 5], (tch::Kind::Float, tch::Device::Cpu))))
    });
    let e = load_err(&pipe, &cpu());
    assert!(e.contains("wrong shape: conv_in.weight: file [8, 4, 5, 5] vs model [8, 4, 3, 3]"), "{e}");
    std::fs::remove_dir_all(&pipe).unwrap();

    // Pickles are refused, in folders and as single files.
    let pipe = copy_pipeline(tmp.path());
    std::fs::rename(
        pipe.join("unet/diffusion_pytorch_model.safetensors"),
        pipe.join("unet/diffusion_pytorch_model.bin"),
    )
    .unwrap();
    let e = load_err(&pipe, &cpu());
    assert!(e.contains("diffusion_pytorch_model.bin") && e.contains("pickle") && e.contains("safetensors"), "{e}");
    let ckpt = tmp.path().join("model.ckpt");
    std::fs::write(&ckpt, b"not really").unwrap();
    let e = load_err(&ckpt, &cpu());
    assert!(e.contains("model.ckpt") && e.contains("pickle checkpoint"), "{e}");

    // A component folder missing, no weights at all, not a pipeline, not a checkpoint.
    std::fs::remove_dir_all(pipe.join("vae")).unwrap();
    let e = load_err(&pipe, &cpu());
    assert!(e.contains("vae/config.json is missing"), "{e}");
    let e = load_err(tmp.path(), &cpu());
    assert!(e.contains("is not a diffusers Stable Diffusion folder"), "{e}");
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ").unwrap();
    let e = load_err(&junk, &cpu());
    assert!(e.contains("junk.safetensors"), "{e}");
    let e = load_err(&tmp.path().join("nowhere"), &cpu());
    assert!(e.contains("no such file or directory") && e.contains("nowhere"), "{e}");
}

#[test]
fn bad_options_are_named() {
    let pipe = fixtures_dir().join("tiny-conv/pipeline");
    let e = load_err(&pipe, &SdLoadOptions { dtype: Some("fp8".into()), ..cpu() });
    assert!(e.contains("unknown dtype \"fp8\"") && e.contains("\"bf16\""), "{e}");
    let e = load_err(&pipe, &SdLoadOptions { device: "tpu".into(), ..cpu() });
    assert!(e.contains("unknown device \"tpu\""), "{e}");
    if !tch::Cuda::is_available() {
        let e = load_err(&pipe, &SdLoadOptions { device: "cuda:0".into(), ..cpu() });
        assert!(e.contains("cuda:0 is not available"), "{e}");
    }
    let sd = load_sd(pipe.to_str().unwrap(), &cpu()).unwrap();
    let e = t2i(&sd, "x", &T2iOptions { width: Some(100), height: Some(64), steps: 1, ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("100x64 is not a multiple of 8"), "{e}");
    let long = "word ".repeat(100);
    let enc = sd.tokenizer.encode(&long).unwrap();
    assert!(enc.truncated() && enc.ids.len() == 77 && enc.ids[76] == sd.tokenizer.eos_id);
}

#[test]
fn fp32_vae_with_a_half_precision_model() {
    // bf16 matmuls run on the CPU too: the UNet and text encoder in bf16, the VAE kept in fp32.
    let pipe = fixtures_dir().join("tiny-conv/pipeline");
    let opts = SdLoadOptions { dtype: Some("bf16".into()), vae_dtype: Some("fp32".into()), ..cpu() };
    let sd = load_sd(pipe.to_str().unwrap(), &opts).unwrap();
    assert_eq!(sd.unet.model.kind(), tch::Kind::BFloat16);
    assert_eq!(sd.vae.model.kind(), tch::Kind::Float);
    let out = t2i(
        &sd,
        "a photo",
        &T2iOptions { steps: 2, seed: Some(1), width: Some(32), height: Some(32), ..Default::default() },
    )
    .unwrap();
    assert_eq!(out.image.tensor().kind(), tch::Kind::Float);
    assert!(out.image.tensor().isfinite().all().int64_value(&[]) == 1);
    // The bf16 UNet stays within bf16 rounding of the fp32 one on the reference inputs.
    let reference = load_sd(pipe.to_str().unwrap(), &cpu()).unwrap();
    let f = vidtune_kernels_tests::load_fixture("tiny-conv/unet.safetensors");
    let ctx = vidtune_runtime::models::AttnContext::default();
    let bf = |t: &tch::Tensor| t.to_kind(tch::Kind::BFloat16);
    let half = tch::no_grad(|| {
        sd.unet.model.forward(&bf(&f["sample"]), &f["timesteps"], &bf(&f["encoder_hidden_states"]), &ctx)
    })
    .unwrap();
    let full =
        tch::no_grad(|| reference.unet.model.forward(&f["sample"], &f["timesteps"], &f["encoder_hidden_states"], &ctx))
            .unwrap();
    let rel = (half.to_kind(tch::Kind::Float) - &full).norm().double_value(&[]) / full.norm().double_value(&[]);
    assert!(rel < 0.03, "bf16 UNet relative error {rel}");
}
