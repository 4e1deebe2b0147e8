//! The memo's keys cover every input that changes a result: an edited config misses, a copied folder
//! hits, a reproducible sample (or co-denoised clip) is stored and an unseeded one is not, and a cache
//! that cannot be written returns the result with a warning.

mod common;
use common::serial;

use std::path::Path;
use std::rc::Rc;
use vidtune_runtime::cache::DiskCache;
use vidtune_runtime::pipelines::cached::{invert_cached, sample_cached, set_disk_cache, tune_cached, Source};
use vidtune_runtime::pipelines::codenoise::{PromptSchedule, WindowOptions};
use vidtune_runtime::pipelines::invert::InvertOptions;
use vidtune_runtime::pipelines::sample::SampleOptions;
use vidtune_runtime::pipelines::tune::TuneOptions;
use vidtune_runtime::synthetic::{synthetic_clip, SyntheticSpec};
use vidtune_runtime::video::{inflate, VideoSpec};
use vidtune_runtime::{load_sd, SdLoadOptions};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn set_scaling_factor(dir: &Path, value: f64) {
    let p = dir.join("vae").join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["scaling_factor"] = value.into();
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn an_edited_config_misses_and_a_copied_folder_hits() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    set_disk_cache(DiskCache { dir: tmp.path().join("memo"), max_bytes: 1 << 30 });
    let folder = tmp.path().join("model");
    copy_dir(&vidtune_runtime::toy::toy_dir().unwrap(), &folder);
    let cpu = SdLoadOptions { device: "cpu".into(), ..Default::default() };
    let clip = synthetic_clip(&SyntheticSpec { frames: 2, width: 32, height: 32, seed: 3, ..Default::default() })
        .unwrap()
        .video;
    let opts = InvertOptions { steps: 2, ..Default::default() };
    let invert_with = |dir: &Path| {
        let sd = Rc::new(load_sd(&dir.to_string_lossy(), &cpu).unwrap());
        let model = inflate(sd, &VideoSpec::default(), 0).unwrap();
        invert_cached(&model, &clip, &opts, true).unwrap()
    };
    let first = invert_with(&folder);
    assert_eq!(first.source, Source::Computed);
    assert_eq!(invert_with(&folder).source, Source::Memory, "the same model and clip hit");

    // The same bytes in another folder are the same model.
    let copy = tmp.path().join("copy");
    copy_dir(&folder, &copy);
    assert_eq!(invert_with(&copy).source, Source::Memory);

    // A changed scaling_factor changes the latents: the memo must miss, and the result differs.
    set_scaling_factor(&folder, 0.5);
    let edited = invert_with(&folder);
    assert_eq!(edited.source, Source::Computed, "an edited vae/config.json returned the stale memo");
    assert_ne!(edited.key, first.key);
    assert!(!edited.value.latents.allclose(&first.value.latents, 1e-6, 1e-6, false));

    // The inflation seed changes the new layers: another key.
    let sd = Rc::new(load_sd(&copy.to_string_lossy(), &cpu).unwrap());
    let (a, b) =
        (inflate(sd.clone(), &VideoSpec::default(), 0).unwrap(), inflate(sd, &VideoSpec::default(), 1).unwrap());
    assert_ne!(a.identity, b.identity);
}

#[test]
fn an_unwritable_cache_returns_the_result_with_a_warning() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let not_a_folder = tmp.path().join("memo");
    std::fs::write(&not_a_folder, "a file where the cache folder should be").unwrap();
    set_disk_cache(DiskCache { dir: not_a_folder.clone(), max_bytes: 1 << 30 });
    let sd = Rc::new(load_sd("random:tiny", &SdLoadOptions { device: "cpu".into(), ..Default::default() }).unwrap());
    let model = inflate(sd, &VideoSpec::default(), 0).unwrap();
    let clip = synthetic_clip(&SyntheticSpec { frames: 2, width: 32, height: 32, ..Default::default() }).unwrap().video;
    let out = tune_cached(&model, &clip, "a circle", &TuneOptions { steps: 1, ..Default::default() }, true).unwrap();
    assert_eq!(out.source, Source::Computed);
    let warning = out.store_warning.expect("a warning that the result was not stored");
    assert!(warning.contains("could not be stored") && warning.contains("VIDTUNE_CACHE"), "{warning}");
    assert_eq!(std::fs::read_to_string(&not_a_folder).unwrap(), "a file where the cache folder should be");
    // In this process the result is still memoised.
    let again = tune_cached(&model, &clip, "a circle", &TuneOptions { steps: 1, ..Default::default() }, true).unwrap();
    assert_eq!(again.source, Source::Memory);
}

#[test]
fn reproducible_samples_and_co_denoised_clips_are_memoised_and_unseeded_ones_are_not() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let memo = tmp.path().join("memo");
    set_disk_cache(DiskCache { dir: memo.clone(), max_bytes: 1 << 30 });
    let model = || {
        let sd =
            Rc::new(load_sd("random:tiny", &SdLoadOptions { device: "cpu".into(), ..Default::default() }).unwrap());
        inflate(sd, &VideoSpec::default(), 0).unwrap()
    };
    let m = model();
    let prompts = PromptSchedule::single("a red circle");
    let windows = Some(WindowOptions { stride: 2, ..WindowOptions::new(3) });
    let o = SampleOptions { steps: 2, guidance: 3.0, seed: Some(5), frames: Some(5), windows, ..Default::default() };
    let first = sample_cached(&m, &prompts, None, &o, true).unwrap();
    assert_eq!(first.source, Source::Computed);
    let again = sample_cached(&m, &prompts, None, &o, true).unwrap();
    assert_eq!(again.source, Source::Memory);
    assert!(again.value.0.frames().equal(first.value.0.frames()));
    assert_eq!(again.value.1, 5);
    assert!(again.hit_note("co_denoise").unwrap().starts_with("co_denoise: from the memo (key "));
    // Another seed, another window or `cache: false` computes.
    let other = SampleOptions { seed: Some(6), ..o.clone() };
    assert_eq!(sample_cached(&m, &prompts, None, &other, true).unwrap().source, Source::Computed);
    let wider = SampleOptions { windows: Some(WindowOptions::new(4)), ..o.clone() };
    assert_eq!(sample_cached(&m, &prompts, None, &wider, true).unwrap().source, Source::Computed);
    assert_eq!(sample_cached(&m, &prompts, None, &o, false).unwrap().source, Source::Computed);
    // Without a seed each call is a new sample: nothing is stored.
    let unseeded = SampleOptions { seed: None, ..o.clone() };
    let (a, b) = (
        sample_cached(&m, &prompts, None, &unseeded, true).unwrap(),
        sample_cached(&m, &prompts, None, &unseeded, true).unwrap(),
    );
    assert_eq!((a.source, b.source), (Source::Computed, Source::Computed));
    assert!(!a.value.0.frames().equal(b.value.0.frames()));
    // Another thread has an empty memory: the clip comes from disk, bit for bit.
    let want = first.value.0.frames().copy();
    let memo2 = memo.clone();
    // The options hold controls (shared, not Send): the thread builds its own copy.
    let same = format!("{:?}", o.to_json());
    let from_disk = std::thread::spawn(move || {
        set_disk_cache(DiskCache { dir: memo2, max_bytes: 1 << 30 });
        let windows = Some(WindowOptions { stride: 2, ..WindowOptions::new(3) });
        let o =
            SampleOptions { steps: 2, guidance: 3.0, seed: Some(5), frames: Some(5), windows, ..Default::default() };
        assert_eq!(format!("{:?}", o.to_json()), same);
        let out = sample_cached(&model(), &prompts, None, &o, true).unwrap();
        (out.source, out.value.0.frames().copy(), out.value.1)
    })
    .join()
    .unwrap();
    assert_eq!(from_disk.0, Source::Disk);
    assert!(from_disk.1.equal(&want));
    assert_eq!(from_disk.2, 5);
}
