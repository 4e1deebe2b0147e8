//! What a run leaves to reproduce and measure it: the run record in sidecars, `vidtune run --from`, and
//! `vidtune bench`'s figures.

mod common;
use common::*;

#[test]
fn a_sidecar_records_the_run_and_run_from_reproduces_it_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let model = inflate(load_sd("random:tiny"));
let clip = synthetic_clip(#{frames: 2, size: 32, seed: 4}).video;
let tuned = tune(model, clip, "a circle", #{steps: param("steps", 2), learning_rate: 1e-4});
let edit = sample(tuned, param("edit", "a red circle"), #{frames: 2, steps: 2});
save_video(edit, "out/edit.gif", #{sidecar: #{note: "first"}});
save_video(edit, "out/frames");
save_video(edit, "out/edit.mp4");
"#;
    let out = run_script(dir.path(), "make.rhai", script, &["--set", "edit=\"a blue circle\""]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = std::fs::read(dir.path().join("out/edit.gif")).unwrap();
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/edit.json")).unwrap()).unwrap();
    let record = &sidecar["record"];
    assert_eq!(sidecar["note"], "first");
    assert_eq!(record["script"]["text"].as_str().unwrap(), script);
    assert_eq!(record["params"]["edit"], "a blue circle");
    assert_eq!(record["vidtune_version"], env!("CARGO_PKG_VERSION"));
    assert!(record["libtorch_version"].as_str().unwrap().starts_with("2."), "{record}");
    let calls = record["calls"].as_array().unwrap();
    let names: Vec<&str> = calls.iter().map(|c| c["function"].as_str().unwrap()).collect();
    assert_eq!(names, ["tune", "sample"]);
    let (tune, sample) = (&calls[0], &calls[1]);
    assert_eq!(tune["options"]["lr"], 1e-4, "the alias is recorded under its vidtune name");
    assert_eq!(tune["resolved"]["steps"], 2, "{tune}");
    assert_eq!(tune["resolved"]["lr"], 1e-4, "{tune}");
    assert_eq!(tune["resolved"]["train"][0], "attn1.to_q", "{tune}");
    assert!(tune["model"]["identity"].as_str().unwrap().len() >= 32);
    assert_eq!(tune["model"]["modules"], sample["model"]["modules"]);
    assert_ne!(tune["model"]["identity"], sample["model"]["identity"], "the tuned model is another model");
    assert_eq!(sample["seed_given"], false);
    assert!(sample["seed"].as_u64().is_some());
    assert_eq!(sample["resolved"]["guidance"], 7.5, "{sample}");
    assert_eq!(sample["resolved"]["frames"], 2, "{sample}");
    assert!(sample["resolved"]["masks"].is_null() && sample["resolved"]["seed"].is_null(), "{sample}");
    assert_eq!(sample["resolved"]["prompts"][0]["prompt"], "a blue circle", "{sample}");
    // Rerun from the sidecar: same script, parameters and drawn seed — the same bytes, written under a
    // folder of the rerun's own, so the run it came from stays as it was.
    let sidecar_text = std::fs::read_to_string(dir.path().join("out/edit.json")).unwrap();
    std::fs::write(dir.path().join("make.rhai"), "print(\"the script on disk changed\");").unwrap();
    let again = vidtune(dir.path()).args(["run", "--from", "out/edit.json"]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("rerunning make.rhai from out/edit.json"), "{}", stdout(&again));
    assert!(stdout(&again).contains("its outputs go under rerun-1/"), "{}", stdout(&again));
    // The frames are the same because the rerun uses the recorded run's CPU threads, whatever the load now.
    let recorded_threads = record["threads"].as_u64().expect("the run record keeps its thread count");
    if std::env::var_os("VIDTUNE_THREADS").is_none() {
        let said = format!("{recorded_threads} thread(s) as recorded");
        assert!(stdout(&again).contains(&said), "{}", stdout(&again));
    }
    assert!(std::fs::read(dir.path().join("rerun-1/out/edit.gif")).unwrap() == first, "the rerun made another GIF");
    assert!(std::fs::read(dir.path().join("out/edit.gif")).unwrap() == first, "the rerun wrote over its source");
    assert_eq!(std::fs::read_to_string(dir.path().join("out/edit.json")).unwrap(), sidecar_text);
    assert!(dir.path().join("rerun-1/out/edit.json").is_file(), "the rerun's own sidecar");
    // The frames and the mp4 carry the same record inside (PNG text chunks, container metadata).
    let from_png: serde_json::Value = serde_json::from_str(
        &vidtune_runtime::media::image::png_text(dir.path().join("out/frames/00000.png"))
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "vidtune")
            .expect("a vidtune text chunk")
            .1,
    )
    .unwrap();
    assert_eq!((&from_png["script"], &from_png["params"]), (&record["script"], &record["params"]));
    assert_eq!(from_png["calls"][1]["seed"], record["calls"][1]["seed"]);
    let from_mp4 = vidtune_runtime::media::ffmpeg::read_metadata(&dir.path().join("out/edit.mp4")).unwrap();
    let from_mp4: serde_json::Value =
        serde_json::from_str(&from_mp4.into_iter().find(|(k, _)| k == "vidtune").expect("mp4 metadata").1).unwrap();
    assert_eq!(from_mp4["script"], record["script"]);
    // From a frame, into a folder given: the same pixels (the record inside differs: timings, memo hits).
    let pixels = |p: &str| image::open(dir.path().join(p)).unwrap().to_rgb8().into_raw();
    let again = vidtune(dir.path()).args(["run", "--from", "out/frames/00000.png", "--out", "again"]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("its outputs go under again/"), "{}", stdout(&again));
    assert!(pixels("again/out/frames/00001.png") == pixels("out/frames/00001.png"), "the rerun made other pixels");
    // Another rerun without --out takes the next free folder.
    let third = vidtune(dir.path()).args(["run", "--from", "out/edit.json"]).output().unwrap();
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(dir.path().join("rerun-2/out/edit.gif").is_file(), "{}", stdout(&third));
    // A file without a record is named.
    std::fs::write(dir.path().join("plain.json"), "{}").unwrap();
    let out = vidtune(dir.path()).args(["run", "--from", "plain.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("plain.json: no run record"), "{}", stderr(&out));
}

#[test]
fn bench_runs_the_job_on_the_tiny_shape_and_writes_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = vidtune(dir.path())
        .args(["bench", "--config", "tiny", "--frames", "2", "--size", "32", "--tune-steps", "2", "--steps", "2"])
        .args(["--device", "cpu", "--json", "bench.json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("| stage | time | steps/s | peak RSS | GFLOP | GFLOP/s | of peak |"), "{text}");
    assert!(text.contains("| stage | linear | conv | attention | backward | optimizer | other |"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench.json")).unwrap()).unwrap();
    let stages = json["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["load", "inflate", "tune", "invert", "sample"]);
    for s in &stages[2..] {
        assert_eq!(s["steps"], 2);
        assert!(s["seconds"].as_f64().unwrap() > 0.0 && s["gflop"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["peak_rss_mb"].as_f64().unwrap() > 10.0, "{s}");
        // CPU time over all threads: the stage did work in user mode, and kernel time is never negative.
        let cpu = &s["cpu"];
        assert!(cpu["user_seconds"].as_f64().unwrap() > 0.0, "{s}");
        assert!(cpu["kernel_seconds"].as_f64().unwrap() >= 0.0 && cpu["page_faults"].as_i64().unwrap() >= 0, "{s}");
    }
    assert!(text.contains("| stage | user | kernel | page faults |"), "{text}");
    // Utilisation: each working stage's rate as a share of the measured fp32 matrix-product rate, and its
    // time split by kind of work, adding up to the stage's time; only tuning has a backward and optimiser.
    let peak = json["matmul_peak_gflops"]["fp32"].as_f64().unwrap();
    assert!(peak > 1.0, "{json}");
    for s in &stages[2..] {
        let share = s["share_of_peak"].as_f64().unwrap();
        let rate = s["gflop_per_second"].as_f64().unwrap();
        assert!((share - rate / peak).abs() < 1e-9, "{s}");
        let by = s["time_by_work"].as_object().unwrap();
        let keys: Vec<&str> = by.keys().map(String::as_str).collect();
        assert_eq!(keys, ["attention", "backward", "conv", "linear", "optimizer", "other"], "{s}");
        let sum: f64 = by.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - s["seconds"].as_f64().unwrap()).abs() < 1e-3, "{s}");
        assert!(by["conv"].as_f64().unwrap() > 0.0 && by["linear"].as_f64().unwrap() > 0.0, "{s}");
        let trains = s["name"] == "tune";
        assert_eq!(by["backward"].as_f64().unwrap() > 0.0, trains, "{s}");
        assert_eq!(by["optimizer"].as_f64().unwrap() > 0.0, trains, "{s}");
    }
    // Sampling with guidance runs the UNet twice a step where inversion runs it once, and decodes the
    // clip, while inversion reads the encoding tuning made: more than twice the work, less than 4.5 times
    // (3.6 on this shape).
    let (inv, smp) = (stages[3]["gflop"].as_f64().unwrap(), stages[4]["gflop"].as_f64().unwrap());
    assert!(smp > 2.0 * inv && smp < 4.5 * inv, "invert {inv} GFLOP, sample {smp} GFLOP");
    assert_eq!(json["attention_backend"], "flash (CPU); explicit product where keys are few", "{json}");
    let amd_avx512 = vidtune_runtime::cpu::mkl_dispatch() == vidtune_runtime::cpu::MklDispatch::AmdAvx512;
    assert_eq!(json["cpu_math"].as_str().unwrap().contains("AVX-512 kernels"), amd_avx512, "{json}");
    assert_eq!((json["precision"].as_str(), json["checkpointing"].as_bool()), (Some("Float"), Some(false)));
    let plain_tune = stages[2]["gflop"].as_f64().unwrap();

    // Mixed precision and checkpointing reach the tuning loop; a saved official run is compared stage by
    // stage (its `load` against vidtune's load and inflate).
    let official = serde_json::json!({"stages": [
        {"name": "load", "seconds": 4.0, "peak_rss_mb": 900.0},
        {"name": "tune", "seconds": 8.0, "peak_rss_mb": 1000.0},
        {"name": "invert", "seconds": 2.0, "peak_rss_mb": 950.0},
        {"name": "sample", "seconds": 4.0, "peak_rss_mb": 990.0}],
        "trainable_tensors": 112, "trained_tensors": 70});
    std::fs::write(dir.path().join("official.json"), official.to_string()).unwrap();
    let out = vidtune(dir.path())
        .args(["bench", "--config", "tiny", "--frames", "2", "--size", "32", "--tune-steps", "2", "--steps", "2"])
        .args(["--device", "cpu", "--precision", "bf16", "--checkpointing", "true", "--json", "bench2.json"])
        .args(["--compare", "official.json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("tuning in BFloat16 with checkpointing"), "{text}");
    assert!(text.contains("| stage | official | vidtune | speed-up |") && text.contains("| tune | 8.00 s |"), "{text}");
    // Each program's share of the matrix-product peak, at vidtune's count of the work: the official
    // run's is vidtune's scaled by the ratio of the times.
    let row = text.lines().find(|l| l.starts_with("| tune | 8.00 s |")).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let (secs, theirs, ours) = (cells[3], cells[5], cells[6]);
    let pct = |c: &str| c.trim_end_matches(" %").parse::<f64>().unwrap();
    let secs = secs.trim_end_matches(" s").parse::<f64>().unwrap();
    assert!((pct(theirs) - pct(ours) * secs / 8.0).abs() <= 1.0, "{row}");
    assert!(text.contains("peak RSS: official 1000 MB"), "{text}");
    // An official run whose checkpointing left tensors untrained is said to do less.
    assert!(text.contains("the official tuning trained 70 of its 112 trainable tensors"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench2.json")).unwrap()).unwrap();
    assert_eq!((json["precision"].as_str(), json["checkpointing"].as_bool()), (Some("BFloat16"), Some(true)));
    let tune = json["stages"][2]["gflop"].as_f64().unwrap();
    // Checkpointing recomputes the blocks that need a gradient: more work, at most one forward more.
    assert!(tune > plain_tune && tune <= 1.51 * plain_tune, "checkpointed work {tune} vs plain {plain_tune}");
    assert_eq!(json["official"]["stages"][1]["seconds"], 8.0);

    // --same-settings gives the official run vidtune's allocator settings and thread count (and on AMD
    // CPUs with AVX-512, MKL's answer); a stand-in for its Python reports what it was given.
    let tav = dir.path().join("tav");
    std::fs::create_dir_all(tav.join("tuneavideo")).unwrap();
    let fake = dir.path().join("fake-python");
    std::fs::write(
        &fake,
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in --json) out=\"$2\"; shift;; --threads) t=\"$2\"; shift;; \
         --no-checkpointing|--train-all) job=\"$1\";; esac; shift; done\nprintf '{\"stages\": [{\"name\": \"tune\", \"seconds\": 1.0}], \
         \"mmap\": \"%s\", \"top\": \"%s\", \"threads\": \"%s\", \"preload\": \"%s\", \"job\": \"%s\"}' \
         \"$MALLOC_MMAP_THRESHOLD_\" \"$MALLOC_TOP_PAD_\" \"$t\" \"$LD_PRELOAD\" \"$job\" > \"$out\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = vidtune(dir.path())
        .env_remove("VIDTUNE_MALLOC")
        .args(["--threads", "1", "bench", "--config", "medium", "--frames", "2", "--size", "32"])
        .args(["--tune-steps", "1", "--steps", "1", "--device", "cpu", "--json", "same.json", "--compare", "official"])
        .args(["--same-settings", "--official-python"])
        .arg(&fake)
        .arg("--official-dir")
        .arg(&tav)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("the official run had vidtune's process settings: MALLOC_MMAP_THRESHOLD_=33554432"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("same.json")).unwrap()).unwrap();
    let off = &json["official"];
    assert_eq!(
        (off["mmap"].as_str(), off["top"].as_str(), off["threads"].as_str()),
        (Some("33554432"), Some("268435456"), Some("1")),
        "{off}"
    );
    let amd_avx512 = vidtune_runtime::cpu::mkl_dispatch() == vidtune_runtime::cpu::MklDispatch::AmdAvx512;
    assert_eq!(off["preload"].as_str().unwrap().contains("libvidtune_mkl_answer.so"), amd_avx512, "{off}");
    // The same job: vidtune tunes on the CPU without checkpointing, so the official run does too.
    assert_eq!(off["job"].as_str(), Some("--no-checkpointing"), "{off}");
    assert!(off["same_settings"].as_str().unwrap().contains("1 threads; the same job: tuning without"), "{off}");

    // Without a checkout, --compare official says what it needs.
    let out = vidtune(dir.path())
        .env_remove("TUNE_A_VIDEO_DIR")
        .args(["bench", "--config", "tiny", "--frames", "2", "--size", "32", "--tune-steps", "1", "--steps", "1"])
        .args(["--device", "cpu", "--compare", "official"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--official-dir"), "{}", stderr(&out));
}

#[test]
fn the_gpu_script_names_every_phase_in_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let tav = dir.path().join("Tune-A-Video");
    std::fs::create_dir_all(tav.join("tuneavideo")).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::process::Command::new("bash")
        .arg(root.join("examples/bench/gpu.sh"))
        .args(["--dry-run", "--out"])
        .arg(dir.path().join("run"))
        .env("TUNE_A_VIDEO_DIR", &tav)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for line in [
        "[build] cargo build --release --no-default-features -p vidtune --target-dir target/gpu",
        "[smoke-fp16] ",
        "bench --config tiny --frames 4 --size 64 --tune-steps 2 --steps 2 --device cuda --dtype fp16",
        "[parity-fp32] env VIDTUNE_TEST_DEVICE=cuda VIDTUNE_TEST_DTYPE=fp32 ",
        "[parity-fp16] env VIDTUNE_TEST_DEVICE=cuda VIDTUNE_TEST_DTYPE=fp16 ",
        "--test-threads 1 --nocapture clip_text_encoder_matches_transformers vae_matches_diffusers",
        "bench --config sd14 --frames 8 --size 512 --tune-steps 500 --steps 50 --device cuda --dtype fp16 \
         --checkpointing true",
        "examples/bench/official_tav.py --tav",
        "--config sd14 --device cuda --frames 8 --size 512 --tune-steps 500 --steps 50 --precision fp16",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Nothing ran; the summary is JSON naming each phase.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/gpu.json")).unwrap()).unwrap();
    let phases: Vec<&str> = json["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert_eq!(
        phases,
        ["build", "doctor", "smoke-fp32", "smoke-fp16", "parity-fp32", "parity-fp16", "warm-up", "bench", "official"],
        "{json}"
    );
    assert!(json["phases"].as_array().unwrap().iter().all(|p| p["status"] == "dry-run"), "{json}");
    assert!(json["bench"].is_null(), "{json}");
}
