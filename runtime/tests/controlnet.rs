//! ControlNet against diffusers: tiny random `ControlNetModel`s saved by `save_pretrained` beside the tiny
//! pipelines, loaded through the real loading code; their residuals, the UNet they control and the whole
//! seeded `StableDiffusionControlNetPipeline` compared (fp32, CPU).

mod common;
use common::{cpu, serial};

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

/// `t2i` with `control` and the settings the fixture script's pipelines ran with.
fn fixture_pipeline(
    sd: &vidtune_runtime::StableDiffusion,
    prompt: &str,
    control: Control,
) -> vidtune_runtime::pipelines::t2i::T2iOutput {
    let opts = T2iOptions {
        steps: 10,
        guidance: 7.5,
        seed: Some(1234),
        width: Some(48),
        height: Some(64),
        controls: vec![control],
        ..Default::default()
    };
    t2i(sd, prompt, &opts).unwrap()
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
    let _serial = serial();
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
            let out = fixture_pipeline(&sd, &prompt, control);
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
    let _serial = serial();
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

/// The tiny-conv pipeline inflated to video, with its ControlNet, and a clip of `frames` frames of 16×16.
fn video_setup(frames: i64) -> (vidtune_runtime::video::VideoModel, Rc<ControlNet>, Tensor) {
    let sd = Rc::new(load_sd(fixtures_dir().join("tiny-conv/pipeline").to_str().unwrap(), &cpu()).unwrap());
    let model = vidtune_runtime::video::inflate(sd, &Default::default(), 0).unwrap();
    let net = Rc::new(controlnet("tiny-conv", &cpu()));
    tch::manual_seed(4);
    let images = Tensor::rand([frames, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
    (model, net, images)
}

#[test]
fn a_control_video_conditions_each_frame_with_its_own_frame_and_windows_with_theirs() {
    let _serial = serial();
    use vidtune_runtime::control::{residuals, CallStep};
    let (_, net, images) = video_setup(4);
    let control = Control::new(net.clone(), &images).unwrap();
    tch::manual_seed(5);
    // Two clips of 4 frames (a guided batch), frames as the batch: [2·4, C, 8, 8].
    let x = Tensor::randn([8, 4, 8, 8], (Kind::Float, tch::Device::Cpu));
    let t = Tensor::from_slice(&[500i64; 8]);
    let text = Tensor::randn([8, 77, 16], (Kind::Float, tch::Device::Cpu));
    let r = residuals(std::slice::from_ref(&control), CallStep::default(), &x, &t, &text, 4).unwrap().unwrap();
    for i in 0..8 {
        let one = |v: &Tensor| v.narrow(0, i, 1);
        let frame = images.narrow(0, i % 4, 1);
        let alone = tch::no_grad(|| net.model.forward(&one(&x), &one(&t), &one(&text), &frame, 1.0, false)).unwrap();
        assert_close_rel(&one(&r.mid), &alone.mid, TOL, &format!("row {i}: the mid residual of its own frame"));
        for (k, d) in r.down.iter().enumerate() {
            assert_close_rel(&one(d), &alone.down[k], TOL, &format!("row {i}: residual {k}"));
        }
    }
    // A window of the clip gets the control's frames of that window.
    let cond = vidtune_runtime::video::Conditioning::text(&text.narrow(0, 0, 1)).with_controls(vec![control.clone()]);
    let w = cond.window(1, 2);
    assert!(w.controls[0].images.equal(&images.narrow(0, 1, 2)));
    // One image stays one image (every frame gets it).
    let still = Control::new(net, &images.get(0)).unwrap();
    assert_eq!(still.window(2, 2).images.size(), [1, 3, 16, 16]);
}

#[test]
fn sampling_and_tuning_take_controls_into_their_memo_keys_and_check_them() {
    let _serial = serial();
    use vidtune_runtime::pipelines::cached::{sample_key, tune_key};
    use vidtune_runtime::pipelines::codenoise::PromptSchedule;
    use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
    use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
    let (model, net, images) = video_setup(3);
    let o = SampleOptions {
        steps: 2,
        seed: Some(1),
        frames: Some(3),
        width: Some(16),
        height: Some(16),
        ..Default::default()
    };
    let with =
        |images: &Tensor| SampleOptions { controls: vec![Control::new(net.clone(), images).unwrap()], ..o.clone() };
    let prompts = PromptSchedule::single("a cat");
    let plain = sample_key(&model, &prompts, None, &o).unwrap();
    let controlled = sample_key(&model, &prompts, None, &with(&images)).unwrap();
    let other = sample_key(&model, &prompts, None, &with(&(&images * 0.5))).unwrap();
    assert!(plain != controlled && controlled != other, "controls are in the key, by content");
    let a = sample(&model, "a cat", None, &o).unwrap().0;
    let b = sample(&model, "a cat", None, &with(&images)).unwrap().0;
    assert!(!a.frames().equal(b.frames()), "the control changes the clip");
    // A control video shorter than the clip.
    let e = sample(&model, "a cat", None, &with(&images.narrow(0, 0, 2))).unwrap_err().to_string();
    assert!(e.contains("2 frames for a clip of 3"), "{e}");
    // Tuning: conditioned on the control as sampling will be; the control is in the key.
    let clip = vidtune_runtime::Video::new(&images * 2.0 - 1.0, 8.0).unwrap();
    let clips =
        |controls: Vec<Control>| [TuneClip { video: clip.clone(), prompt: "a cat".into(), masks: None, controls }];
    let t = TuneOptions { steps: 2, ..Default::default() };
    let bare = clips(vec![]);
    let guided = clips(vec![Control::new(net.clone(), &images).unwrap()]);
    assert_ne!(tune_key(&model, &bare, &t), tune_key(&model, &guided, &t));
    let tuned = tune_clips(&model, &guided, &t).unwrap();
    let untuned = tune_clips(&model, &bare, &t).unwrap();
    let after = |m: &vidtune_runtime::video::VideoModel| {
        let vars = m.vars.variables();
        m.trained.iter().map(|n| vars[n].shallow_clone()).collect::<Vec<_>>()
    };
    assert!(!tuned.trained.is_empty());
    let differs = after(&tuned).iter().zip(after(&untuned)).any(|(a, b)| !a.equal(&b));
    assert!(differs, "the control reaches the tuned weights");
}

/// The T2I-Adapters of a tiny config: the full one, and the light one where the widths allow.
fn adapters(config: &str) -> Vec<&'static str> {
    if config == "tiny-linear" {
        vec!["t2i_adapter", "t2i_adapter_light"]
    } else {
        vec!["t2i_adapter"]
    }
}

#[test]
fn t2i_adapter_features_the_adapted_unet_and_the_seeded_pipeline_match_diffusers() {
    let _serial = serial();
    let ids: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("tokenizers/ids.json")).unwrap()).unwrap();
    let prompt = ids["prompts"][1].as_str().unwrap().to_string();
    for config in CONFIGS {
        let sd = load_sd(fixtures_dir().join(config).join("pipeline").to_str().unwrap(), &cpu()).unwrap();
        for name in adapters(config) {
            let dir = fixtures_dir().join(config).join(name);
            let adapter = Rc::new(vidtune_runtime::load_t2i_adapter(dir.to_str().unwrap(), &cpu()).unwrap());
            let f = load_fixture(&format!("{config}/{name}.safetensors"));
            let features = tch::no_grad(|| adapter.model.forward(&f["image"], 1.0)).unwrap();
            assert_eq!(features.features.len(), (0..).take_while(|i| f.contains_key(&format!("feature_{i}"))).count());
            for (i, x) in features.features.iter().enumerate() {
                assert_close_rel(x, &f[&format!("feature_{i}")], TOL, &format!("{config} {name}: feature {i}"));
            }
            let mut ctx = AttnContext::default();
            ctx.data.insert(tch::no_grad(|| adapter.model.forward(&f["image"], 0.7)).unwrap());
            let out = tch::no_grad(|| {
                sd.unet.model.forward(&f["sample"], &f["timesteps"], &f["encoder_hidden_states"], &ctx)
            })
            .unwrap();
            assert_close_rel(&out, &f["unet"], TOL, &format!("{config} {name}: adapted UNet"));
            let control = Control { scale: 0.8, ..Control::new(adapter.clone(), &f["pipe_control"]).unwrap() };
            let out = fixture_pipeline(&sd, &prompt, control);
            assert_close_rel(&out.latents, &f["pipe_latents"], TOL, &format!("{config} {name}: latents"));
            let image01 = ((out.image.tensor() + 1.0) / 2.0).permute([1, 2, 0]).unsqueeze(0);
            let diff = (image01 - &f["pipe_image"]).abs().max().double_value(&[]);
            assert!(diff <= 1.0 / 255.0, "{config} {name}: image differs by {diff}");
        }
    }
    // fp16 variants load; an adapter for another base model is refused.
    let dir = fixtures_dir().join("tiny-conv/t2i_adapter");
    let half = vidtune_runtime::load_t2i_adapter(
        dir.to_str().unwrap(),
        &SdLoadOptions { variant: Some("fp16".into()), dtype: Some("fp16".into()), ..cpu() },
    )
    .unwrap();
    assert_eq!(half.model.kind(), Kind::Half);
    let linear = load_sd(fixtures_dir().join("tiny-linear/pipeline").to_str().unwrap(), &cpu()).unwrap();
    let conv_adapter = Rc::new(vidtune_runtime::load_t2i_adapter(dir.to_str().unwrap(), &cpu()).unwrap());
    let image = Tensor::rand([3, 64, 48], (Kind::Float, tch::Device::Cpu));
    let opts = T2iOptions {
        steps: 1,
        width: Some(48),
        height: Some(64),
        controls: vec![Control::new(conv_adapter.clone(), &image).unwrap()],
        ..Default::default()
    };
    let e = t2i(&linear, "x", &opts).unwrap_err().to_string();
    assert!(e.contains("downscale_factor 2") && e.contains("another base model"), "{e}");
    let guess = Control { guess_mode: true, ..Control::new(conv_adapter, &image).unwrap() };
    let conv = load_sd(fixtures_dir().join("tiny-conv/pipeline").to_str().unwrap(), &cpu()).unwrap();
    let e = t2i(&conv, "x", &T2iOptions { controls: vec![guess], ..opts }).unwrap_err().to_string();
    assert!(e.contains("guess_mode is for ControlNets"), "{e}");
}

#[test]
fn t2i_adapters_in_their_authors_layout_load_without_a_config_and_match_diffusers() {
    // TencentARC's names (`conv_in`, a flat `body.K`; the light adapter's `body.I.body.J`), as a
    // `t2iadapter_*_sd14v1.pth` converted to safetensors has them, with no config.json beside them.
    let dir = fixtures_dir().join("t2i_adapter_original");
    for (name, summary) in [
        ("full", "full_adapter; 3 channels of control image at 8x the latents; features [16, 32, 64, 64]"),
        ("light", "light_adapter; 3 channels of control image at 8x the latents; features [16, 32, 64, 64]"),
        ("sketch", "full_adapter; 1 channels of control image at 8x the latents; features [16, 32, 64, 64]"),
    ] {
        let file = dir.join(format!("{name}.safetensors"));
        let adapter = vidtune_runtime::load_t2i_adapter(file.to_str().unwrap(), &cpu()).unwrap();
        assert!(adapter.summary().contains(summary), "{name}: {}", adapter.summary());
        let f = load_fixture(&format!("t2i_adapter_original/{name}_features.safetensors"));
        let features = tch::no_grad(|| adapter.model.forward(&f["image"], 1.0)).unwrap();
        assert_eq!(features.features.len(), 4, "{name}");
        for (i, x) in features.features.iter().enumerate() {
            assert_close_rel(x, &f[&format!("feature_{i}")], TOL, &format!("{name}: feature {i}"));
        }
    }
    // A config that contradicts the weights is refused, naming the file.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, r#"{"_class_name": "T2IAdapter", "channels": [16, 32, 64, 64], "num_res_blocks": 4}"#)
        .unwrap();
    let file = dir.join("full.safetensors");
    let e = vidtune_runtime::load_t2i_adapter(file.to_str().unwrap(), &SdLoadOptions { config: Some(config), ..cpu() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("full.safetensors") && e.contains("body.2.in_conv.bias"), "{e}");
}
