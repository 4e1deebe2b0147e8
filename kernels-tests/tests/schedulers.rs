//! Scheduler arithmetic against diffusers (`DDIMScheduler`, `DDPMScheduler`), from the reference fixtures.

use serde_json::Value;
use tch::Tensor;
use vidtune_kernels::schedulers::ddim::{Ddim, DdimParams};
use vidtune_kernels::schedulers::{ddpm, BetaSchedule, NoiseSchedule, Prediction, Spacing};
use vidtune_kernels_tests::{assert_close_rel, fixtures_dir, load_fixture};

fn ddim_from(config: &Value) -> Ddim {
    let s = |k: &str| config[k].as_str().unwrap().to_string();
    let f = |k: &str| config[k].as_f64().unwrap();
    let b = |k: &str| config[k].as_bool().unwrap();
    let schedule = NoiseSchedule::new(
        config["num_train_timesteps"].as_i64().unwrap(),
        f("beta_start"),
        f("beta_end"),
        BetaSchedule::parse(&s("beta_schedule")).unwrap(),
        None,
        b("rescale_betas_zero_snr"),
    )
    .unwrap();
    Ddim::new(
        schedule,
        DdimParams {
            prediction: Prediction::parse(&s("prediction_type")).unwrap(),
            clip_sample: b("clip_sample"),
            clip_sample_range: f("clip_sample_range"),
            thresholding: b("thresholding"),
            dynamic_thresholding_ratio: f("dynamic_thresholding_ratio"),
            sample_max_value: f("sample_max_value"),
            set_alpha_to_one: b("set_alpha_to_one"),
            steps_offset: config["steps_offset"].as_i64().unwrap(),
            spacing: Spacing::parse(&s("timestep_spacing")).unwrap(),
        },
    )
}

#[test]
fn ddim_matches_diffusers_for_every_config() {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("schedulers.json")).unwrap()).unwrap();
    let t = load_fixture("schedulers.safetensors");
    let variants = meta.as_object().unwrap();
    assert!(variants.len() >= 5);
    for (name, v) in variants {
        let mut ddim = ddim_from(&v["config"]);
        assert_close_rel(
            &ddim.schedule.alphas_cumprod,
            &t[&format!("{name}.alphas_cumprod")],
            1e-7,
            &format!("{name}: alphas_cumprod"),
        );
        ddim.set_timesteps(25).unwrap();
        let want: Vec<i64> = v["timesteps"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!(ddim.timesteps(), want.as_slice(), "{name}: timesteps");
        for k in 0..3 {
            let get = |s: &str| &t[&format!("{name}.{k}.{s}")];
            let step = get("t").int64_value(&[]);
            let (sample, out, noise) = (get("sample"), get("model_output"), get("noise"));
            let r = ddim.step(out, step, sample, 0.0, None, false).unwrap();
            assert_close_rel(&r.prev_sample, get("eta0"), 1e-5, &format!("{name} t={step} eta 0"));
            assert_close_rel(&r.pred_original_sample, get("eta0.x0"), 1e-5, &format!("{name} t={step} x0"));
            let r = ddim.step(out, step, sample, 0.7, Some(noise), false).unwrap();
            assert_close_rel(&r.prev_sample, get("eta07"), 1e-5, &format!("{name} t={step} eta 0.7"));
            let r = ddim.step(out, step, sample, 0.7, Some(noise), true).unwrap();
            assert_close_rel(
                &r.prev_sample,
                get("eta07_clipped"),
                1e-5,
                &format!("{name} t={step} eta 0.7 clipped output"),
            );
        }
    }
}

#[test]
fn ddpm_noise_and_velocity_match_diffusers() {
    let t = load_fixture("schedulers.safetensors");
    let schedule = NoiseSchedule::new(1000, 0.00085, 0.012, BetaSchedule::ScaledLinear, None, false).unwrap();
    let (x0, noise, ts) = (&t["ddpm.x0"], &t["ddpm.noise"], &t["ddpm.t"]);
    assert_close_rel(&ddpm::add_noise(&schedule, x0, noise, ts).unwrap(), &t["ddpm.noisy"], 1e-6, "add_noise");
    assert_close_rel(&ddpm::get_velocity(&schedule, x0, noise, ts).unwrap(), &t["ddpm.velocity"], 1e-6, "get_velocity");
}

#[test]
fn bad_scheduler_inputs_are_named() {
    let schedule = NoiseSchedule::new(1000, 0.00085, 0.012, BetaSchedule::ScaledLinear, None, false).unwrap();
    let x = Tensor::zeros([1, 4, 2, 2], (tch::Kind::Float, tch::Device::Cpu));
    let e = ddpm::add_noise(&schedule, &x, &x, &Tensor::from_slice(&[1000i64])).unwrap_err().to_string();
    assert!(e.contains("timesteps must lie in 0..1000"), "{e}");
    assert!(BetaSchedule::parse("cosine").unwrap_err().to_string().contains("\"squaredcos_cap_v2\""));
    let mut d = Ddim::new(
        schedule,
        DdimParams {
            prediction: Prediction::Epsilon,
            clip_sample: false,
            clip_sample_range: 1.0,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            set_alpha_to_one: false,
            steps_offset: 1,
            spacing: Spacing::Leading,
        },
    );
    assert!(d.step(&x, 1, &x, 0.0, None, false).unwrap_err().to_string().contains("set_timesteps"));
    assert!(d.set_timesteps(0).unwrap_err().to_string().contains("steps must be in 1..=1000"));
    d.set_timesteps(10).unwrap();
    assert!(d.step(&x, 1, &x, 0.5, None, false).unwrap_err().to_string().contains("variance noise"));
}
