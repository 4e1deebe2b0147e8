//! ControlNet against diffusers: tiny random `ControlNetModel`s saved by `save_pretrained` beside the tiny
//! pipelines, loaded through the real loading code; their residuals, the UNet they control and the whole
//! seeded `StableDiffusionControlNetPipeline` compared (fp32, CPU).

mod common;
use common::cpu;

use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels_tests::{assert_close_rel, fixtures_dir, load_fixture};
use vidtune_runtime::models::{AttnContext, ControlResiduals};
use vidtune_runtime::pipelines::t2i::{t2i, T2iOptions};
use vidtune_runtime::{load_controlnet, load_sd, Control, ControlNet, SdLoadOptions};

const CONFIGS: [&str; 2] = ["tiny-conv", "tiny-linear"];
const TOL: f64 = 1e-4;

fn controlnet(config: &str, opts: &SdLoadOptions) -> ControlNet {
    let dir = fixtures_dir().join(config).join("controlnet");
    load_controlnet(dir.to_str().unwrap(), opts).unwrap_or_else(|e| panic!("{config}: {e}"))
}

fn residual_count(f: &std::collections::HashMap<String, Tensor>, tag: &str) -> usize {
    (0..).take_while(|i| f.contains_key(&format!("{tag}_down_{i}"))).count()
}

#[test]
fn residuals_and_the_controlled_unet_match_diffusers() {
    for config in CONFIGS {
        let sd = load_sd(fixtures_dir().join(config).join("pipeline").to_str().unwrap(), &cpu()).unwrap();
        let net = controlnet(config, &cpu());
        let f = load_fixture(&format!("{config}/controlnet.safetensors"));
        for (tag, guess) in [("plain", false), ("guess", true)] {
            let r = tch::no_grad(|| {
                net.model.forward(&f["sample"], &f["timesteps"], &f["encoder_hidden_states"], &f["image"], 0.7, guess)
            })
            .unwrap();
            assert_eq!(r.down.len(), residual_count(&f, tag), "{config} {tag}: residual count");
            for (i, d) in r.down.iter().enumerate() {
                assert_close_rel(d, &f[&format!("{tag}_down_{i}")], TOL, &format!("{config} {tag}: residual {i}"));
            }
            assert_close_rel(&r.mid, &f[&format!("{tag}_mid")], TOL, &format!("{config} {tag}: mid residual"));
            let mut ctx = AttnContext::default();
            ctx.data.insert(r);
            let out = tch::no_grad(|| {
                sd.unet.model.forward(&f["sample"], &f["timesteps"], &f["encoder_hidden_states"], &ctx)
            })
            .unwrap();
            assert_close_rel(&out, &f[&format!("{tag}_unet")], TOL, &format!("{config} {tag}: controlled UNet"));
        }
    }
}

#[test]
fn seeded_controlnet_txt2img_equals_the_diffusers_pipeline() {
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("tokenizers/ids.json")).unwrap()).unwrap();
    let prompt = ids["prompts"][1].as_str().unwrap().to_string();
    for config in CONFIGS {
        let sd = load_sd(fixtures_dir().join(config).join("pipeline").to_str().unwrap(), &cpu()).unwrap();
        let net = Rc::new(controlnet(config, &cpu()));
        let f = load_fixture(&format!("{config}/controlnet.safetensors"));
        for (tag, start, end, guess) in
            [("plain", 0.0, 1.0, false), ("window", 0.2, 0.7, false), ("guess", 0.0, 1.0, true)]
        {
            let control = Control {
                scale: 0.8,
                start,
                end,
                guess_mode: guess,
                ..Control::new(net.clone(), &f["pipe_control"]).unwrap()
            };
            let opts = T2iOptions {
                steps: 10,
                guidance: 7.5,
                seed: Some(1234),
                width: Some(48),
                height: Some(64),
                controls: vec![control],
                ..Default::default()
            };
            let out = t2i(&sd, &prompt, &opts).unwrap();
            assert_close_rel(
                &out.latents,
                &f[&format!("pipe_{tag}_latents")],
                TOL,
                &format!("{config} {tag}: latents"),
            );
            let image01 = (out.image.tensor() + 1.0) / 2.0;
            let diff = (image01.unsqueeze(0) - &f[&format!("pipe_{tag}_image")]).abs().max().double_value(&[]);
            assert!(diff <= 1.0 / 255.0, "{config} {tag}: image differs by {diff} (more than 1/255)");
        }
        // Two ControlNets add their residuals (MultiControlNet): the same net twice at half the scale is
        // the net once at the full scale.
        let half = |c: Control| Control { scale: 0.4, ..c };
        let one = Control { scale: 0.8, ..Control::new(net.clone(), &f["pipe_control"]).unwrap() };
        let opts = |controls: Vec<Control>| T2iOptions {
            steps: 3,
            seed: Some(9),
            width: Some(48),
            height: Some(64),
            controls,
            ..Default::default()
        };
        let single = t2i(&sd, &prompt, &opts(vec![one.clone()])).unwrap();
        let double = t2i(&sd, &prompt, &opts(vec![half(one.clone()), half(one)])).unwrap();
        assert_close_rel(&double.latents, &single.latents, TOL, &format!("{config}: two controls add"));
    }
}

#[test]
fn controlnets_load_as_fp16_variants_and_single_files() {
    let f32_net = controlnet("tiny-conv", &cpu());
    let half =
        controlnet("tiny-conv", &SdLoadOptions { variant: Some("fp16".into()), dtype: Some("fp16".into()), ..cpu() });
    assert_eq!(half.kind(), Kind::Half);
    let (a, b) = (f32_net.vars.variables(), half.vars.variables());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(b[name].to_kind(Kind::Float), t.to_kind(Kind::Half).to_kind(Kind::Float), "{name}");
    }
    // One file with diffusers' names, its config beside it or given.
    let src = fixtures_dir().join("tiny-conv/controlnet");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my-controlnet.safetensors");
    std::fs::copy(src.join("diffusion_pytorch_model.safetensors"), &file).unwrap();
    let e = load_controlnet(file.to_str().unwrap(), &cpu()).unwrap_err().to_string();
    assert!(e.contains("my-controlnet.safetensors") && e.contains("needs its config"), "{e}");
    let given = SdLoadOptions { config: Some(src.join("config.json")), ..cpu() };
    let single = load_controlnet(file.to_str().unwrap(), &given).unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let beside = load_controlnet(file.to_str().unwrap(), &cpu()).unwrap();
    for net in [single, beside] {
        for (name, t) in net.vars.variables() {
            assert!(t.equal(&a[&name]), "{name}");
        }
    }
    // One file in the ControlNet authors' layout (control_model.*), as diffusers' from_single_file reads it.
    for config in CONFIGS {
        let folder = fixtures_dir().join(config).join("controlnet_standard");
        let file = fixtures_dir().join(config).join("controlnet_single_file.safetensors");
        let reference = load_controlnet(folder.to_str().unwrap(), &cpu()).unwrap();
        let opts = SdLoadOptions { config: Some(folder.clone()), ..cpu() };
        let single = load_controlnet(file.to_str().unwrap(), &opts).unwrap_or_else(|e| panic!("{config}: {e}"));
        let want = reference.vars.variables();
        for (name, t) in single.vars.variables() {
            assert!(t.equal(&want[&name]), "{config}: {name}");
        }
        // Without a config, the conditioning widths come from the file (the rest is SD 1.x's).
        let tensors = vidtune_runtime::weights::read_safetensors(&file).unwrap();
        let mut guessed: vidtune_runtime::config::ControlNetConfig = serde_json::from_str("{}").unwrap();
        guessed.read_widths(&tensors);
        assert_eq!(guessed.conditioning_embedding_out_channels, [4, 8, 8, 16], "{config}");
        assert_eq!((guessed.conditioning_channels, guessed.unet.in_channels), (3, 4), "{config}");
    }
    // A whole Stable Diffusion folder is not a ControlNet.
    let e = load_controlnet(fixtures_dir().join("tiny-conv/pipeline").to_str().unwrap(), &cpu()).unwrap_err();
    assert!(e.to_string().contains("load_sd"), "{e}");
}

#[test]
fn bad_controls_are_refused_naming_what_is_wrong() {
    let sd = load_sd(fixtures_dir().join("tiny-linear/pipeline").to_str().unwrap(), &cpu()).unwrap();
    let conv = Rc::new(controlnet("tiny-conv", &cpu()));
    let linear = Rc::new(controlnet("tiny-linear", &cpu()));
    let run = |control: Control| {
        let opts =
            T2iOptions { steps: 1, width: Some(48), height: Some(64), controls: vec![control], ..Default::default() };
        t2i(&sd, "x", &opts).unwrap_err().to_string()
    };
    let image = Tensor::rand([3, 64, 48], (Kind::Float, tch::Device::Cpu));
    // Another base model: the tiny-conv ControlNet's text is 16 wide, this UNet's 24.
    let e = run(Control::new(conv, &image).unwrap());
    assert!(
        e.contains("cross_attention_dim") && e.contains("16") && e.contains("24") && e.contains("another base model"),
        "{e}"
    );
    // The wrong size.
    let small = Tensor::rand([3, 32, 48], (Kind::Float, tch::Device::Cpu));
    let e = run(Control::new(linear.clone(), &small).unwrap());
    assert!(e.contains("48x32") && e.contains("48x64"), "{e}");
    // The wrong channel count.
    let grey = Tensor::rand([1, 64, 48], (Kind::Float, tch::Device::Cpu));
    let e = Control::new(linear.clone(), &grey).unwrap_err().to_string();
    assert!(e.contains("3 channels") && e.contains("got [1, 64, 48]"), "{e}");
    // Residuals that do not fit the UNet they are given to.
    let mut ctx = AttnContext::default();
    ctx.data.insert(ControlResiduals {
        down: vec![Tensor::zeros([1, 8, 8, 6], (Kind::Float, tch::Device::Cpu))],
        mid: Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)),
    });
    let x = Tensor::zeros([1, 4, 8, 6], (Kind::Float, tch::Device::Cpu));
    let text = Tensor::zeros([1, 77, 24], (Kind::Float, tch::Device::Cpu));
    let e = sd.unet.model.forward(&x, &Tensor::from(10i64), &text, &ctx).unwrap_err().to_string();
    assert!(e.contains("1 down residuals") && e.contains("skip connections"), "{e}");
}
