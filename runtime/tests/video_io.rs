//! Video round trips through every container, frame-exact sampling, and the bad inputs of `load_video`.

use vidtune_kernels::image::{psnr, Fit};
use vidtune_runtime::synthetic::{read_counter, synthetic_clip, SyntheticSpec};
use vidtune_runtime::{load_video, save_video, LoadOptions, Video};

fn clip(frames: usize, counter: bool) -> Video {
    let spec = SyntheticSpec { frames, width: 64, height: 48, seed: 3, counter, fps: 12.0, ..Default::default() };
    synthetic_clip(&spec).unwrap().video
}

fn round_trip(name: &str, min_psnr: f64) {
    let dir = tempfile::tempdir().unwrap();
    let source = clip(10, false);
    let path = dir.path().join(name);
    save_video(&source, &path).unwrap();
    let back = load_video(&path, &LoadOptions::default()).unwrap();
    assert_eq!(back.len(), 10, "{name}: frame count");
    assert_eq!((back.width(), back.height()), (64, 48), "{name}: size");
    let db = psnr(source.frames(), back.frames()).unwrap();
    eprintln!("{name}: PSNR {db:.2} dB");
    assert!(db >= min_psnr, "{name}: PSNR {db:.2} dB below {min_psnr}");
    if !name.contains('.') {
        assert_eq!(back.fps(), vidtune_runtime::media::frames_dir::DEFAULT_FPS);
    } else {
        assert!((back.fps() - 12.0).abs() < 0.6, "{name}: fps {}", back.fps());
    }
    // The clip and, for a file, its folder's manifest (which records it as vidtune's).
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".vidtune-manifest.json")
        .collect();
    assert_eq!(leftovers.len(), 1, "{name}: temporary files left: {leftovers:?}");
}

#[test]
fn png_directory_is_lossless() {
    round_trip("frames", f64::INFINITY);
}

#[test]
fn gif_round_trip() {
    round_trip("clip.gif", 27.0);
}

#[cfg(feature = "ffmpeg")]
#[test]
fn mp4_round_trip() {
    round_trip("clip.mp4", 30.0);
}

#[cfg(feature = "ffmpeg")]
#[test]
fn mov_mkv_webm_round_trip() {
    round_trip("clip.mov", 30.0);
    round_trip("clip.mkv", 30.0);
    round_trip("clip.webm", 27.0);
}

fn sampled_indices(path: &std::path::Path, opts: &LoadOptions) -> Vec<i64> {
    let v = load_video(path, opts).unwrap();
    (0..v.len() as i64).map(|i| read_counter(&v.frames().get(i))).collect()
}

#[test]
fn sampling_picks_exact_frames_in_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let source = clip(30, true);
    let mut paths = vec![dir.path().join("frames"), dir.path().join("c.gif")];
    if cfg!(feature = "ffmpeg") {
        paths.push(dir.path().join("c.mp4"));
    }
    for path in &paths {
        save_video(&source, path).unwrap();
        let opts = LoadOptions { start: 3, every: 4, frames: Some(5), ..Default::default() };
        assert_eq!(sampled_indices(path, &opts), vec![3, 7, 11, 15, 19], "{}", path.display());
        let tail = LoadOptions { start: 25, ..Default::default() };
        assert_eq!(sampled_indices(path, &tail), vec![25, 26, 27, 28, 29], "{}", path.display());
        let strided = load_video(path, &LoadOptions { every: 2, ..Default::default() }).unwrap();
        assert_eq!(strided.len(), 15);
    }
}

#[test]
fn sampled_fps_keeps_real_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.gif");
    save_video(&clip(8, false), &path).unwrap();
    let v = load_video(&path, &LoadOptions { every: 2, ..Default::default() }).unwrap();
    assert!((v.fps() - 6.0).abs() < 0.4, "fps {}", v.fps());
}

#[test]
fn resize_crop_and_pad() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames");
    save_video(&clip(2, false), &path).unwrap();
    for (fit, size) in [(Fit::Resize, (32, 32)), (Fit::Crop, (32, 32)), (Fit::Pad, (40, 16))] {
        let v = load_video(&path, &LoadOptions { size: Some(size), fit, ..Default::default() }).unwrap();
        assert_eq!((v.width(), v.height()), size, "{fit:?}");
    }
    // Pad keeps the whole frame: 64x48 into 40x16 is 21x16 in the middle, black bars at the sides.
    let v = load_video(&path, &LoadOptions { size: Some((40, 16)), fit: Fit::Pad, ..Default::default() }).unwrap();
    let left_bar = v.frames().narrow(3, 0, 9).max().double_value(&[]);
    assert_eq!(left_bar, -1.0);
}

fn load_err(path: &std::path::Path, opts: LoadOptions) -> String {
    load_video(path, &opts).unwrap_err().to_string()
}

#[test]
fn bad_inputs_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mp4");
    let msg = load_err(&missing, LoadOptions::default());
    assert!(msg.contains("no such file") && msg.contains("missing.mp4"), "{msg}");

    let text = dir.path().join("notes.gif");
    std::fs::write(&text, "hello, not a gif").unwrap();
    let msg = load_err(&text, LoadOptions::default());
    assert!(msg.contains("notes.gif") && msg.contains("not a readable GIF"), "{msg}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let msg = load_err(&empty, LoadOptions::default());
    assert!(msg.contains("empty") && msg.contains("no .png"), "{msg}");

    let frames = dir.path().join("frames");
    save_video(&clip(6, false), &frames).unwrap();
    let msg = load_err(&frames, LoadOptions { start: 6, ..Default::default() });
    assert!(msg.contains("start 6 is past the end") && msg.contains("6 frames"), "{msg}");
    let msg = load_err(&frames, LoadOptions { frames: Some(4), every: 2, ..Default::default() });
    assert!(msg.contains("asked for 4 frames") && msg.contains("only 3"), "{msg}");
    let msg = load_err(&frames, LoadOptions { size: Some((0, 0)), ..Default::default() });
    assert!(msg.contains("size must be positive"), "{msg}");
    let msg = load_err(&frames, LoadOptions { every: 0, ..Default::default() });
    assert!(msg.contains("every must be at least 1"), "{msg}");

    let fit = Fit::parse("stretch").unwrap_err().to_string();
    assert!(fit.contains("\"stretch\"") && fit.contains("\"resize\", \"crop\", \"pad\""), "{fit}");

    let msg = save_video(&clip(2, false), dir.path().join("x.avi")).unwrap_err().to_string();
    assert!(msg.contains("x.avi") && msg.contains(".mp4"), "{msg}");
}

#[cfg(feature = "ffmpeg")]
#[test]
fn corrupt_and_fake_videos_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.mp4");
    std::fs::write(&fake, vec![7u8; 4096]).unwrap();
    let msg = load_err(&fake, LoadOptions::default());
    assert!(msg.contains("fake.mp4") && msg.contains("not a readable video"), "{msg}");

    let good = dir.path().join("good.mp4");
    save_video(&clip(10, false), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let msg = load_err(&cut, LoadOptions::default());
    assert!(msg.contains("cut.mp4"), "{msg}");
}

#[test]
fn model_sizes_must_be_multiples_of_8() {
    let msg = vidtune_runtime::media::check_model_size(100, 64).unwrap_err().to_string();
    assert!(msg.contains("100x64") && msg.contains("multiple of 8") && msg.contains("nearest: 104x64"), "{msg}");
    assert!(vidtune_runtime::media::check_model_size(512, 256).is_ok());
}

#[test]
fn video_accessors_and_errors() {
    let v = clip(6, false);
    assert_eq!(v.slice(1, 4).unwrap().len(), 3);
    assert!(v.slice(4, 4).unwrap_err().to_string().contains("slice(4, 4)"));
    assert!(v.frame(6).unwrap_err().to_string().contains("frame index 6 out of range"));
    let sheet = v.grid(3).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (3 * 64 + 4 * 2, 2 * 48 + 3 * 2));
}
