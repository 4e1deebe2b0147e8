//! The Stable Diffusion core against diffusers and transformers: tiny random components saved by
//! `save_pretrained`, loaded here through the real loading code, compared output for output (fp32, CPU).

mod common;
use common::{cpu, serial};

use std::path::PathBuf;
use tch::{Kind, Tensor};
use vidtune_kernels_tests::{assert_close_rel, fixtures_dir, load_fixture};
use vidtune_runtime::models::AttnContext;
use vidtune_runtime::pipelines::common::decode_latents;
use vidtune_runtime::pipelines::denoise::{denoise as denoise_loop, DenoiseSpec, NoHooks};
use vidtune_runtime::pipelines::t2i::{denoise_image, t2i, T2iOptions};
use vidtune_runtime::pipelines::Loop;
use vidtune_runtime::rng::Noise;
use vidtune_runtime::video::Conditioning;
use vidtune_runtime::{load_sd, SdLoadOptions, StableDiffusion};

const CONFIGS: [&str; 2] = ["tiny-conv", "tiny-linear"];
const TOL: f64 = 1e-4;

fn dir(config: &str, sub: &str) -> PathBuf {
    fixtures_dir().join(config).join(sub)
}

fn load(config: &str) -> StableDiffusion {
    let path = dir(config, "pipeline");
    load_sd(path.to_str().unwrap(), &cpu()).unwrap_or_else(|e| panic!("{config}: {e}"))
}

fn prompts() -> Vec<String> {
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("tokenizers/ids.json")).unwrap()).unwrap();
    ids["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

#[test]
fn clip_text_encoder_matches_transformers() {
    for config in CONFIGS {
        let sd = load(config);
        let f = load_fixture(&format!("{config}/clip_text.safetensors"));
        let text = &sd.text_encoder.model;
        let out = tch::no_grad(|| text.forward(&f["input_ids"])).unwrap();
        assert_close_rel(&out, &f["last_hidden_state"], TOL, &format!("{config}: last hidden state"));
        assert_close_rel(&text.pooled(&out, &f["input_ids"]), &f["pooler_output"], TOL, &format!("{config}: pooled"));
    }
}

#[test]
fn vae_matches_diffusers() {
    let _serial = serial();
    for config in CONFIGS {
        let sd = load(config);
        let f = load_fixture(&format!("{config}/vae.safetensors"));
        let vae = &sd.vae.model;
        let dist = tch::no_grad(|| vae.encode(&f["image"])).unwrap();
        assert_close_rel(&dist.mean, &f["mean"], TOL, &format!("{config}: latent mean"));
        assert_close_rel(&dist.std(), &f["std"], TOL, &format!("{config}: latent std"));
        let mut noise = Noise::new(7);
        let eps = noise.randn(&dist.mean.size(), Kind::Float, tch::Device::Cpu);
        assert_close_rel(&dist.sample_with(&eps), &f["sample_seed7"], TOL, &format!("{config}: seeded sample"));
        let decoded = tch::no_grad(|| vae.decode(&f["z"])).unwrap();
        assert_close_rel(&decoded, &f["decoded"], TOL, &format!("{config}: decode"));
    }
}

#[test]
fn unet_matches_diffusers() {
    for config in CONFIGS {
        let sd = load(config);
        let f = load_fixture(&format!("{config}/unet.safetensors"));
        let unet = &sd.unet.model;
        let ctx = AttnContext::default();
        let out =
            tch::no_grad(|| unet.forward(&f["sample"], &f["timesteps"], &f["encoder_hidden_states"], &ctx)).unwrap();
        assert_close_rel(&out, &f["out"], TOL, &format!("{config}: UNet"));
        let context = f["encoder_hidden_states"].narrow(0, 0, 1);
        let odd = tch::no_grad(|| unet.forward(&f["sample_odd"], &Tensor::from(999i64), &context, &ctx)).unwrap();
        assert_close_rel(&odd, &f["out_odd"], TOL, &format!("{config}: UNet at odd latent sizes"));
        // The math backend (explicit softmax) agrees with the fused kernel.
        let math = AttnContext { backend: vidtune_kernels::attention::Backend::Math, ..Default::default() };
        let out_math =
            tch::no_grad(|| unet.forward(&f["sample"], &f["timesteps"], &f["encoder_hidden_states"], &math)).unwrap();
        assert_close_rel(&out_math, &f["out"], TOL, &format!("{config}: UNet, math attention"));
    }
}

#[test]
fn ddim_loop_and_inversion_match_diffusers() {
    let _serial = serial();
    let prompts = prompts();
    for config in CONFIGS {
        let sd = load(config);
        let f = load_fixture(&format!("{config}/ddim_loop.safetensors"));
        let cond = sd.encode_prompt(&prompts[0]).unwrap();
        let uncond = sd.encode_prompt("").unwrap();
        assert_close_rel(&cond, &f["cond"], TOL, &format!("{config}: prompt embedding"));
        assert_close_rel(&uncond, &f["uncond"], TOL, &format!("{config}: empty-prompt embedding"));
        let opts = T2iOptions { steps: 10, guidance: 7.5, ..Default::default() };
        let mut noise = Noise::new(0);
        let latents =
            denoise_image(&sd, f["latents0"].shallow_clone(), &cond, Some(&uncond), &opts, &mut noise).unwrap();
        assert_close_rel(&latents, &f["latents"], TOL, &format!("{config}: 10-step DDIM latents"));
        let image = decode_latents(&sd, &latents).unwrap();
        assert_close_rel(&image, &f["image"].clamp(-1.0, 1.0), TOL, &format!("{config}: 10-step DDIM image"));

        // DDIM inversion (Tune-A-Video): null prompt, no guidance, timesteps upwards — the shared loop,
        // walking up and recording the trajectory.
        let spec = DenoiseSpec::up("invert", 10, Loop::Invert);
        let up =
            denoise_loop(&sd, f["latents0"].shallow_clone(), &Conditioning::text(&uncond), &spec, None, &mut NoHooks)
                .unwrap();
        let steps: Vec<Tensor> = up.trajectory[1..].iter().map(Tensor::shallow_clone).collect();
        assert_close_rel(&Tensor::stack(&steps, 0), &f["inverted"], TOL, &format!("{config}: DDIM inversion"));
        let x = up.latents;
        let back = denoise_image(
            &sd,
            x,
            &uncond,
            None,
            &T2iOptions { steps: 10, guidance: 1.0, ..Default::default() },
            &mut noise,
        )
        .unwrap();
        assert_close_rel(&back, &f["reconstructed"], TOL, &format!("{config}: sampling back from the inversion"));
    }
}

#[test]
fn seeded_txt2img_equals_the_diffusers_pipeline() {
    let _serial = serial();
    let prompts = prompts();
    for config in CONFIGS {
        let sd = load(config);
        let f = load_fixture(&format!("{config}/ddim_loop.safetensors"));
        for (tag, negative, eta) in [("plain", "", 0.0), ("negative", prompts[2].as_str(), 0.0), ("eta", "", 0.5)] {
            let opts = T2iOptions {
                steps: 10,
                guidance: 7.5,
                seed: Some(1234),
                negative: negative.to_string(),
                width: Some(48),
                height: Some(64),
                eta,
                controls: vec![],
            };
            let out = t2i(&sd, &prompts[1], &opts).unwrap();
            assert_close_rel(
                &out.latents,
                &f[&format!("pipe_{tag}_latents")],
                TOL,
                &format!("{config} {tag}: latents"),
            );
            let image01 = (out.image.tensor() + 1.0) / 2.0;
            assert_close_rel(
                &image01.unsqueeze(0),
                &f[&format!("pipe_{tag}_image")],
                TOL,
                &format!("{config} {tag}: image"),
            );
        }
    }
}

fn ids_case(case: &str) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("tokenizers/ids.json")).unwrap()).unwrap();
    let to = |x: &serde_json::Value| -> Vec<Vec<i64>> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect())
            .collect()
    };
    (to(&v["cases"][case]["padded"]), to(&v["cases"][case]["unpadded"]))
}

#[test]
fn tokenizer_ids_equal_transformers() {
    use vidtune_runtime::models::ClipTokenizer;
    let prompts = prompts();
    for (case, folder) in [
        ("pad_eos", "tokenizers/pad_eos"),
        ("pad_bang", "tokenizers/pad_bang"),
        ("pad_eos", "tiny-conv/pipeline/tokenizer"),
    ] {
        let tok = ClipTokenizer::from_dir(&fixtures_dir().join(folder)).unwrap();
        let (padded, unpadded) = ids_case(case);
        for (i, p) in prompts.iter().enumerate() {
            assert_eq!(tok.encode_unpadded(p).unwrap(), unpadded[i], "{folder}: {p:?}");
            let enc = tok.encode(p).unwrap();
            assert_eq!(enc.ids, padded[i], "{folder} padded: {p:?}");
            assert_eq!(enc.truncated(), unpadded[i].len() > 77);
        }
    }
}

fn outputs(sd: &StableDiffusion, config: &str) -> (Tensor, Tensor, Tensor) {
    let fu = load_fixture(&format!("{config}/unet.safetensors"));
    let fv = load_fixture(&format!("{config}/vae.safetensors"));
    let fc = load_fixture(&format!("{config}/clip_text.safetensors"));
    tch::no_grad(|| {
        (
            sd.unet
                .model
                .forward(&fu["sample"], &fu["timesteps"], &fu["encoder_hidden_states"], &AttnContext::default())
                .unwrap(),
            sd.vae.model.decode(&fv["z"]).unwrap(),
            sd.text_encoder.model.forward(&fc["input_ids"]).unwrap(),
        )
    })
}

#[test]
fn every_checkpoint_layout_loads_to_the_same_model() {
    for config in CONFIGS {
        let reference = outputs(&load(config), config);
        let check = |sd: &StableDiffusion, what: &str, tol: f64| {
            let (u, v, t) = outputs(sd, config);
            assert_close_rel(&u, &reference.0, tol, &format!("{config} {what}: UNet"));
            assert_close_rel(&v, &reference.1, tol, &format!("{config} {what}: VAE"));
            assert_close_rel(&t, &reference.2, tol, &format!("{config} {what}: text encoder"));
        };
        for layout in ["sharded", "legacy_vae"] {
            check(&load_sd(dir(config, layout).to_str().unwrap(), &cpu()).unwrap(), layout, 0.0);
        }
        // The plain file wins when both exist; the fp16 variant on request (fp16 rounding only).
        let variants = dir(config, "variants");
        check(&load_sd(variants.to_str().unwrap(), &cpu()).unwrap(), "plain file beside a variant", 0.0);
        let fp16 =
            load_sd(variants.to_str().unwrap(), &SdLoadOptions { variant: Some("fp16".into()), ..cpu() }).unwrap();
        check(&fp16, "fp16 variant", 5e-2);
        // A single-file LDM checkpoint: its architecture from a diffusers folder's configs (as diffusers'
        // `from_single_file(config=...)`), or the tokenizer given on its own.
        let single = fixtures_dir().join(config).join("single_file.safetensors");
        let opts = SdLoadOptions { config: Some(dir(config, "pipeline")), ..cpu() };
        check(
            &load_sd(single.to_str().unwrap(), &opts).unwrap_or_else(|e| panic!("{config} single file: {e}")),
            "single file",
            0.0,
        );
    }
}

#[test]
fn hugging_face_cache_repo_ids_resolve() {
    // HF_HUB_CACHE names the fixtures' cache; no other test reads it.
    std::env::set_var("HF_HUB_CACHE", fixtures_dir().join("tiny-conv/hf_home/hub"));
    let sd = load_sd("vidtune/tiny-sd", &cpu()).unwrap();
    let reference = outputs(&load("tiny-conv"), "tiny-conv");
    assert_close_rel(&outputs(&sd, "tiny-conv").0, &reference.0, 0.0, "UNet from the cache");
    let err = load_sd("vidtune/not-there", &cpu()).unwrap_err().to_string();
    assert!(
        err.contains("vidtune/not-there is not in the Hugging Face cache") && err.contains("does not download"),
        "{err}"
    );
    let err = load_sd("vidtune/tiny-sd", &SdLoadOptions { revision: "v2".into(), ..cpu() }).unwrap_err().to_string();
    assert!(err.contains("revision \"v2\" has no snapshot"), "{err}");
    // Control models come from the cache the same way.
    let same = |a: &tch::nn::VarStore, b: &tch::nn::VarStore| {
        let (a, b) = (a.variables(), b.variables());
        a.len() == b.len() && a.iter().all(|(k, v)| v.equal(&b[k]))
    };
    let folder = |name: &str| fixtures_dir().join("tiny-conv").join(name).to_string_lossy().into_owned();
    let cached = vidtune_runtime::load_controlnet("vidtune/tiny-controlnet", &cpu()).unwrap();
    assert!(same(&cached.vars, &vidtune_runtime::load_controlnet(&folder("controlnet"), &cpu()).unwrap().vars));
    let cached = vidtune_runtime::load_t2i_adapter("vidtune/tiny-t2i-adapter", &cpu()).unwrap();
    assert!(same(&cached.vars, &vidtune_runtime::load_t2i_adapter(&folder("t2i_adapter"), &cpu()).unwrap().vars));
}
