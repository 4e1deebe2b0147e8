//! Segmentation with clicks: SAM's whole path through tiny ONNX models with its exact signature (known
//! outputs), the built-in segmenter on synthetic clips against ground truth, mask operations, bad inputs.

use tch::{Kind, Tensor};
use vidtune_kernels_tests::{assert_close_rel, fixtures_dir, load_fixture};
use vidtune_runtime::segment::sam::{preprocess, prompt_arrays, Sam};
use vidtune_runtime::segment::Frame;
use vidtune_runtime::segment::{segment, Builtin, Click, Point, Prompt, SegmentOptions};
use vidtune_runtime::synthetic::{synthetic_clip, Motion, Shape, SyntheticSpec, Texture};
use vidtune_runtime::{Masks, Video};

fn frame_of(t: &Tensor) -> Frame {
    let s = t.size();
    Frame { width: s[1] as usize, height: s[0] as usize, rgb: Vec::<u8>::try_from(t.flatten(0, -1)).unwrap() }
}

fn sam() -> Sam {
    Sam::load(&fixtures_dir().join("sam"), false).unwrap()
}

fn prompt_of(f: &std::collections::HashMap<String, Tensor>, key: &str) -> Prompt {
    let clicks = &f[&format!("{key}.clicks")];
    let n = clicks.size()[0];
    let points = (0..n)
        .map(|i| Point {
            x: clicks.double_value(&[i, 0]),
            y: clicks.double_value(&[i, 1]),
            positive: clicks.double_value(&[i, 2]) > 0.5,
        })
        .collect();
    let bbox = f.get(&format!("{key}.box")).map(|b| [0, 1, 2, 3].map(|k| b.double_value(&[k])));
    Prompt { points, bbox }
}

#[test]
fn sam_preprocessing_prompts_decoding_and_thresholding_equal_the_reference() {
    let f = load_fixture("sam/sam.safetensors");
    let mut sam = sam();
    for i in 0..3 {
        let frame = frame_of(&f[&format!("image{i}")]);
        let (pre, _) = preprocess(&frame);
        let pre = Tensor::from_slice(&pre).view([1, 3, 1024, 1024]);
        assert_close_rel(&pre, &f[&format!("preprocessed{i}")], 1e-5, &format!("image {i}: SAM preprocessing"));
        let emb = sam.embed(&frame).unwrap();
        let emb_t = Tensor::from_slice(&emb).view([1, 256, 64, 64]);
        assert_close_rel(&emb_t, &f[&format!("embedding{i}")], 1e-4, &format!("image {i}: embeddings"));
        for name in ["point", "points", "box"] {
            let key = format!("{name}{i}");
            let prompt = prompt_of(&f, &key);
            let (coords, labels) = prompt_arrays(&prompt, frame.width, frame.height);
            let want = &f[&format!("{key}.coords")];
            // Coordinates reach 1024: float32 spacing there is 1.2e-4.
            assert_close_rel(
                &Tensor::from_slice(&coords).view(want.size().as_slice()),
                want,
                2e-4,
                &format!("{key}: coordinates"),
            );
            // The padding point is there exactly when there is no box.
            assert_eq!(labels.iter().filter(|&&l| l == -1.0).count(), usize::from(prompt.bbox.is_none()), "{key}");
            let out = sam.decode(&emb, &prompt, frame.width, frame.height, None).unwrap();
            let mask = Tensor::from_slice(&out.mask.iter().map(|&b| b as u8).collect::<Vec<_>>()).view([
                1,
                1,
                frame.height as i64,
                frame.width as i64,
            ]);
            assert!(mask.to_kind(Kind::Bool).equal(&f[&format!("{key}.masks")]), "{key}: thresholded masks differ");
            assert!((out.confidence - f[&format!("{key}.iou")].double_value(&[0, 0])).abs() < 1e-6, "{key}: iou");
            let low = Tensor::from_slice(out.low_res.as_ref().unwrap()).view([1, 1, 256, 256]);
            // The logits reach ~5e4 here: compare relative to their size (float32).
            let want = &f[&format!("{key}.low_res")];
            let scale = want.abs().max().double_value(&[]).max(1.0);
            assert_close_rel(&low, want, 1e-6 * scale, &format!("{key}: low-res logits"));
        }
    }
    // Embeddings are memoised: decoding again did not run the encoder.
    assert_eq!(sam.encoder_runs, 3);
    let frame = frame_of(&f["image0"]);
    sam.embed(&frame).unwrap();
    assert_eq!(sam.encoder_runs, 3);
}

#[test]
fn sam_propagation_feeds_back_the_previous_mask() {
    let f = load_fixture("sam/sam.safetensors");
    let img = f["image0"].permute([2, 0, 1]).to_kind(Kind::Float) / 127.5 - 1.0;
    let video = Video::new(Tensor::stack(&[&img, &img, &img], 0), 8.0).unwrap();
    let mut sam = sam();
    let seg = segment(
        &video,
        &[Click::Point { x: 40.3, y: 50.2, positive: true, frame: None }],
        &mut sam,
        &SegmentOptions::default(),
    )
    .unwrap();
    // Frame 0: no mask input, one padding point: 0.5 + 0.001.
    assert!(
        (seg.provenance.as_ref().unwrap().confidence[0] - 0.501).abs() < 1e-6,
        "{:?}",
        seg.provenance.as_ref().unwrap().confidence
    );
    // Frame 1: box + centroid (no padding point) and the previous low-res logits as mask input.
    let emb = sam.embed(&frame_of(&f["image0"])).unwrap();
    let first = sam
        .decode(&emb, &Prompt { points: vec![Point { x: 40.3, y: 50.2, positive: true }], bbox: None }, 120, 90, None)
        .unwrap();
    let positives = first.low_res.unwrap().iter().filter(|&&v| v > 0.0).count() as f64;
    assert!(
        (seg.provenance.as_ref().unwrap().confidence[1] - (0.75 + 1e-6 * positives)).abs() < 1e-6,
        "{:?} vs {positives} positives",
        seg.provenance.as_ref().unwrap().confidence
    );
    assert_eq!(sam.encoder_runs, 1, "identical frames embed once");
    assert!(seg.provenance.as_ref().unwrap().method.contains("Segment Anything"));
}

#[test]
fn sam_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = Sam::load(dir.path(), false).unwrap_err().to_string();
    assert!(
        e.contains("has no SAM image encoder") && e.contains("encoder.onnx") && e.contains("vision_encoder.onnx"),
        "{e}"
    );
    std::fs::copy(fixtures_dir().join("sam/encoder.onnx"), dir.path().join("encoder.onnx")).unwrap();
    let e = Sam::load(dir.path(), false).unwrap_err().to_string();
    assert!(e.contains("has no SAM prompt encoder / mask decoder") && e.contains("decoder.onnx"), "{e}");
    let e = Sam::load(&fixtures_dir().join("sam/bad"), false).unwrap_err().to_string();
    assert!(e.contains("does not have SAM's decoder signature") && e.contains("point_coords"), "{e}");
    // The CUDA execution provider is opt-in and never a silent fallback: with a library that has it, the
    // model runs on it; without it (the CPU wheel), asking for it is an error.
    let available = vidtune_runtime::segment::sam::cuda_available();
    match Sam::load(&fixtures_dir().join("sam"), true) {
        Ok(sam) => {
            assert!(available, "CUDA was asked for, this ONNX Runtime has no CUDA provider, and {sam:?} loaded anyway");
            assert_eq!(sam.provider, "CUDA", "{sam:?}");
        }
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("CUDA execution provider could not be registered"), "{e}");
            if !available {
                assert!(e.contains("has none"), "{e}");
            }
        }
    }
    assert_eq!(Sam::load(&fixtures_dir().join("sam"), false).unwrap().provider, "CPU");
    std::fs::write(dir.path().join("decoder.onnx"), b"not onnx").unwrap();
    let e = Sam::load(dir.path(), false).unwrap_err().to_string();
    assert!(e.contains("decoder.onnx") && e.contains("cannot open"), "{e}");
}

/// A click where a user would put it: the mask pixel deepest inside the subject (nearest its centroid
/// among the deepest).
fn centroid_click(masks: &Masks, frame: i64) -> Click {
    let mut m = masks.tensor().narrow(0, frame, 1);
    loop {
        let inner = vidtune_kernels::masks::erode(&m, 1).unwrap();
        if inner.sum(Kind::Float).double_value(&[]) == 0.0 {
            break;
        }
        m = inner;
    }
    let m = m.squeeze();
    let (h, w) = (m.size()[0], m.size()[1]);
    let ys = Tensor::arange(h, (Kind::Float, tch::Device::Cpu)).view([h, 1]) + 0.5;
    let xs = Tensor::arange(w, (Kind::Float, tch::Device::Cpu)).view([1, w]) + 0.5;
    let area = m.sum(Kind::Float).double_value(&[]);
    let cx = (&m * &xs).sum(Kind::Float).double_value(&[]) / area;
    let cy = (&m * &ys).sum(Kind::Float).double_value(&[]) / area;
    let d2: Tensor = (xs - cx).square() + (ys - cy).square() + (m.ones_like() - &m) * 1e9;
    let k = d2.flatten(0, -1).argmin(0, false).int64_value(&[]);
    Click::Point { x: (k % w) as f64 + 0.5, y: (k / w) as f64 + 0.5, positive: true, frame: Some(frame as usize) }
}

#[test]
fn builtin_segmenter_follows_synthetic_subjects() {
    // Every shape, texture and motion; occluders; the frame counter; two frame sizes; 16 clips.
    let shapes = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond];
    let textures = [Texture::Stripes, Texture::Noise, Texture::Gradient, Texture::Plain];
    let motions = [Motion::Right, Motion::Bounce, Motion::Circle, Motion::Grow, Motion::Left];
    let (mut all, mut clicked, mut rest) = (vec![], vec![], vec![]);
    for i in 0..16usize {
        let (width, height) = if i % 2 == 0 { (96, 80) } else { (160, 112) };
        let spec = SyntheticSpec {
            shape: Some(shapes[i % 4]),
            background: Some(textures[(i / 4 + i) % 4]),
            motion: Some(motions[i % 5]),
            occluder: i % 3 == 1,
            counter: i % 5 == 2,
            frames: 12,
            width,
            height,
            seed: 100 + i as u64,
            ..Default::default()
        };
        let clip = synthetic_clip(&spec).unwrap();
        let seg = segment(
            &clip.video,
            &[centroid_click(&clip.masks, 0)],
            &mut Builtin::default(),
            &SegmentOptions::default(),
        )
        .unwrap();
        let (mean, per) = seg.iou(&clip.masks).unwrap();
        let others = per[1..].iter().sum::<f64>() / (per.len() - 1) as f64;
        eprintln!(
            "{:<60} mean IoU {mean:.3} (min {:.3}; clicked frame {:.3}, others {others:.3})",
            clip.caption,
            per.iter().cloned().fold(1.0, f64::min),
            per[0]
        );
        all.push(mean);
        clicked.push(per[0]);
        rest.push(others);
    }
    let overall = all.iter().sum::<f64>() / all.len() as f64;
    assert!(overall >= 0.95, "mean IoU {overall:.3} over {all:?}");
    assert!(all.iter().all(|&m| m >= 0.9), "a clip fell below 0.9: {all:?}");
    // The clicked frame is segmented at least as well as the frames propagated from it.
    let (c, r) = (clicked.iter().sum::<f64>() / 16.0, rest.iter().sum::<f64>() / 16.0);
    eprintln!("clicked frames {c:.4}, propagated frames {r:.4}");
    assert!(c >= r, "clicked frames {c:.4} < propagated {r:.4}: {clicked:?}");
}

/// A clip whose subject touches a patch of its own colour (shifted by `shift` in red, −`shift`/2 in green,
/// in [−1, 1] units) on frame 0, left of it.
fn clip_with_lookalike(shift: f32) -> (Video, Masks, Tensor) {
    let spec = SyntheticSpec {
        shape: Some(Shape::Circle),
        background: Some(Texture::Plain),
        motion: Some(Motion::Left),
        frames: 6,
        width: 96,
        height: 80,
        seed: 7,
        ..Default::default()
    };
    let clip = synthetic_clip(&spec).unwrap();
    let [x0, y0, _, y1] = clip.masks.bboxes().unwrap()[0].unwrap();
    let cy = (y0 + y1) / 2;
    let subject = clip.masks.tensor().get(0).get(0).gt(0.5);
    let colour =
        clip.video.frames().get(0).select(1, cy).select(1, x0 + 3) + Tensor::from_slice(&[shift, -shift * 0.5, 0.0]);
    let mut patch = Tensor::zeros([80, 96], (Kind::Bool, tch::Device::Cpu));
    let _ = patch.narrow(0, cy - 8, 16).narrow(1, x0 - 18, 20).fill_(1);
    patch = patch.logical_and(&subject.logical_not());
    let frames = clip.video.frames().copy();
    let f0 = frames.get(0).where_self(&patch.logical_not().unsqueeze(0), &colour.view([3, 1, 1]));
    frames.get(0).copy_(&f0);
    (Video::new(frames, 8.0).unwrap(), clip.masks, patch)
}

#[test]
fn a_negative_click_removes_a_wrongly_included_region() {
    // A loose box takes the look-alike patch with the subject; a negative click on the patch removes it.
    // The same colour as the subject, and a slightly different one; with the click and with the box.
    for shift in [0.0, 0.25] {
        let (video, truth, patch) = clip_with_lookalike(shift);
        let [x0, y0, x1, y1] = truth.bboxes().unwrap()[0].unwrap();
        let [px0, py0, px1, py1] =
            vidtune_kernels::masks::bboxes(&patch.to_kind(Kind::Float).view([1, 1, 80, 96])).unwrap()[0].unwrap();
        let loose = Click::Box {
            x0: (x0.min(px0) - 4) as f64,
            y0: (y0.min(py0) - 4) as f64,
            x1: (x1.max(px1) + 4) as f64,
            y1: (y1.max(py1) + 4) as f64,
            frame: None,
        };
        let centre = Click::Point { x: (x0 + x1) as f64 / 2.0, y: (y0 + y1) as f64 / 2.0, positive: true, frame: None };
        let opts = SegmentOptions { propagate: false, ..Default::default() };
        let frame0 = |m: &Masks| m.tensor().get(0).get(0).gt(0.5);
        let patch_area = patch.sum(Kind::Int64).int64_value(&[]);
        let one = segment(&video, &[loose, centre], &mut Builtin::default(), &opts).unwrap();
        let included = frame0(&one).logical_and(&patch).sum(Kind::Int64).int64_value(&[]);
        assert!(
            included * 2 > patch_area,
            "shift {shift}: the loose box should take the patch ({included} of {patch_area})"
        );
        let negative = Click::Point {
            x: (px0 + px1) as f64 / 2.0 - 3.0,
            y: (py0 + py1) as f64 / 2.0,
            positive: false,
            frame: None,
        };
        let two = segment(&video, &[loose, centre, negative], &mut Builtin::default(), &opts).unwrap();
        let left = frame0(&two).logical_and(&patch).sum(Kind::Int64).int64_value(&[]);
        assert!(
            left * 10 < patch_area,
            "shift {shift}: after the negative click {left} of {patch_area} patch pixels remain"
        );
        let first = |m: &Masks| Masks::new(m.tensor().narrow(0, 0, 1)).unwrap();
        let (iou, _) = first(&two).iou(&first(&truth)).unwrap();
        assert!(iou >= 0.9, "shift {shift}: frame 0 IoU after the negative click {iou:.3}");
        // Unclicked frames stay empty without propagation.
        assert_eq!(two.area()[1..], [0.0; 5]);
    }
}

#[test]
fn bad_clicks_are_clear_errors() {
    let (video, _, _) = clip_with_lookalike(0.0);
    let mut b = Builtin::default();
    let opts = SegmentOptions::default();
    let err = |clicks: &[Click], opts: &SegmentOptions, b: &mut Builtin| {
        segment(&video, clicks, b, opts).unwrap_err().to_string()
    };
    let e = err(&[], &opts, &mut b);
    assert!(e.contains("at least one click"), "{e}");
    let e = err(&[Click::Point { x: 120.0, y: 10.0, positive: true, frame: None }], &opts, &mut b);
    assert!(e.contains("click(120, 10)") && e.contains("outside the 96x80 frame"), "{e}");
    let e = err(&[Click::Point { x: 10.0, y: -1.0, positive: true, frame: None }], &opts, &mut b);
    assert!(e.contains("outside"), "{e}");
    let e = err(&[Click::Point { x: 10.0, y: 10.0, positive: true, frame: Some(6) }], &opts, &mut b);
    assert!(e.contains("frame 6") && e.contains("6 frames"), "{e}");
    let e = err(&[Click::Box { x0: 50.0, y0: 10.0, x1: 20.0, y1: 30.0, frame: None }], &opts, &mut b);
    assert!(e.contains("box(50, 10, 20, 30)") && e.contains("x0 < x1"), "{e}");
    let e = err(&[Click::Point { x: 10.0, y: 10.0, positive: false, frame: None }], &opts, &mut b);
    assert!(e.contains("positive click or a box"), "{e}");
    let e = err(
        &[Click::Point { x: 10.0, y: 10.0, positive: true, frame: None }],
        &SegmentOptions { frame: 9, ..Default::default() },
        &mut b,
    );
    assert!(e.contains("frame 9"), "{e}");
}

#[test]
fn a_box_alone_segments_the_subject() {
    let spec = SyntheticSpec {
        shape: Some(Shape::Square),
        background: Some(Texture::Stripes),
        frames: 4,
        width: 96,
        height: 80,
        seed: 3,
        ..Default::default()
    };
    let clip = synthetic_clip(&spec).unwrap();
    let [x0, y0, x1, y1] = clip.masks.bboxes().unwrap()[0].unwrap();
    let b =
        Click::Box { x0: x0 as f64 - 4.0, y0: y0 as f64 - 4.0, x1: x1 as f64 + 4.0, y1: y1 as f64 + 4.0, frame: None };
    let seg = segment(&clip.video, &[b], &mut Builtin::default(), &SegmentOptions::default()).unwrap();
    let (mean, _) = seg.iou(&clip.masks).unwrap();
    assert!(mean >= 0.9, "{mean}");
    assert!(seg.provenance.as_ref().unwrap().method.contains("built-in"));
}

#[test]
fn clicks_on_several_frames_anchor_their_neighbourhoods() {
    let spec = SyntheticSpec {
        shape: Some(Shape::Triangle),
        background: Some(Texture::Gradient),
        motion: Some(Motion::Bounce),
        frames: 10,
        width: 96,
        height: 80,
        seed: 11,
        ..Default::default()
    };
    let clip = synthetic_clip(&spec).unwrap();
    let clicks = [centroid_click(&clip.masks, 0), centroid_click(&clip.masks, 9)];
    let seg = segment(&clip.video, &clicks, &mut Builtin::default(), &SegmentOptions::default()).unwrap();
    let (mean, per) = seg.iou(&clip.masks).unwrap();
    assert!(mean >= 0.9 && per.iter().all(|&v| v > 0.5), "{per:?}");
    assert_eq!(seg.provenance.as_ref().unwrap().confidence.len(), 10);
    assert!(
        seg.provenance.as_ref().unwrap().confidence.iter().all(|&c| (0.0..=1.0).contains(&c)),
        "{:?}",
        seg.provenance.as_ref().unwrap().confidence
    );
}

#[test]
fn mask_operations_and_round_trips() {
    let spec = SyntheticSpec { frames: 3, width: 64, height: 48, seed: 5, ..Default::default() };
    let clip = synthetic_clip(&spec).unwrap();
    let m = clip.masks.clone().with_source(&clip.video).unwrap();
    let area = |m: &Masks| m.tensor().sum(Kind::Float).double_value(&[]);
    let (grown, shrunk) = (m.dilate(2).unwrap(), m.erode(2).unwrap());
    assert!(area(&grown) > area(&m) && area(&shrunk) < area(&m));
    assert!(grown.source.is_some(), "same-size results keep their clip");
    assert_eq!(m.union(&shrunk).unwrap().iou(&m).unwrap().0, 1.0);
    assert_eq!(m.intersect(&grown).unwrap().iou(&m).unwrap().0, 1.0);
    assert_eq!(area(&m.invert().unwrap()) + area(&m), 3.0 * 64.0 * 48.0);
    assert_eq!(m.invert().unwrap().intersect(&m).unwrap().area(), vec![0.0; 3]);
    let small = m.resize(8, 6).unwrap();
    assert_eq!((small.width(), small.height(), small.len()), (8, 6, 3));
    assert!(small.source.is_none(), "a resized mask no longer matches its clip");
    assert!((area(&small) * 64.0 - area(&m)).abs() < 1e-3, "area-averaged: the covered fraction is kept");
    // PNG directory and GIF round trips are exact for binary masks.
    let dir = tempfile::tempdir().unwrap();
    for name in ["masks", "masks.gif"] {
        let saved = m.save(&dir.path().join(name)).unwrap();
        let back = Masks::load(&saved, &Default::default()).unwrap();
        assert!(back.tensor().equal(m.tensor()), "{name} round trip");
    }
    // Masks drawn elsewhere: grey-scale PNGs with anti-aliased edges, thresholded at mid-grey.
    let drawn = dir.path().join("drawn");
    std::fs::create_dir(&drawn).unwrap();
    for f in 0..2 {
        let mut img = image::GrayImage::new(20, 10);
        for (x, _, p) in img.enumerate_pixels_mut() {
            p.0 = [if x < 5 + f {
                255
            } else if x == 5 + f {
                140
            } else {
                20
            }];
        }
        img.save(drawn.join(format!("{f:03}.png"))).unwrap();
    }
    let loaded = Masks::load(&drawn, &Default::default()).unwrap();
    assert_eq!(loaded.area(), vec![6.0 / 20.0, 7.0 / 20.0]);
    // Mismatches name both sides.
    let e = m.iou(&loaded).unwrap_err().to_string();
    assert!(e.contains("3 frames at 64x48") && e.contains("2 frames at 20x10"), "{e}");
    let e = loaded.overlay(&clip.video).unwrap_err().to_string();
    assert!(e.contains("masks (2 frames, 20x10) do not match the video (3 frames, 64x48)"), "{e}");
    let e = Masks::load(&dir.path().join("nothing"), &Default::default()).unwrap_err().to_string();
    assert!(e.contains("nothing"), "{e}");
    let overlay = m.overlay(&clip.video).unwrap();
    assert_eq!(overlay.frames().size(), clip.video.frames().size());
}

/// A subject of two very different colours (its upper part painted near-black in every frame, as a dog's
/// black head on a white body), clicked twice on its light part in frame 0: the clicked frame's mask
/// holds the whole subject as the frames propagated from it do — its IoU within 0.05 of theirs.
#[test]
fn a_two_colour_subject_clicked_on_one_colour_is_whole_in_the_clicked_frame() {
    let mut report = vec![];
    for (i, (shape, texture, motion)) in [
        (Shape::Circle, Texture::Plain, Motion::Right),
        (Shape::Square, Texture::Noise, Motion::Left),
        (Shape::Diamond, Texture::Gradient, Motion::Bounce),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = SyntheticSpec {
            shape: Some(shape),
            background: Some(texture),
            motion: Some(motion),
            color: Some("white".into()),
            frames: 8,
            width: 96,
            height: 80,
            seed: 40 + i as u64,
            ..Default::default()
        };
        let clip = synthetic_clip(&spec).unwrap();
        let frames = clip.video.frames().copy();
        let boxes = clip.masks.bboxes().unwrap();
        for (f, b) in boxes.iter().enumerate() {
            let [_, y0, _, y1] = b.unwrap();
            let top = ((y1 - y0) as f64 * 0.4).round() as i64;
            let subject = clip.masks.tensor().get(f as i64).get(0).gt(0.5);
            let rows = Tensor::arange(80, (Kind::Int64, tch::Device::Cpu)).view([80, 1]).expand([80, 96], false);
            let head = subject.logical_and(&rows.lt(y0 + top));
            let dark = Tensor::from_slice(&[-0.85f32, -0.85, -0.8]).view([3, 1, 1]);
            let painted = frames.get(f as i64).where_self(&head.logical_not().unsqueeze(0), &dark);
            frames.get(f as i64).copy_(&painted);
        }
        let video = Video::new(frames, 8.0).unwrap();
        let [x0, y0, x1, y1] = boxes[0].unwrap();
        let (cx, h) = ((x0 + x1) as f64 / 2.0, (y1 - y0) as f64);
        let clicks =
            [0.65, 0.8].map(|at| Click::Point { x: cx, y: y0 as f64 + h * at, positive: true, frame: Some(0) });
        let seg = segment(&video, &clicks, &mut Builtin::default(), &SegmentOptions::default()).unwrap();
        let (_, per) = seg.iou(&clip.masks).unwrap();
        let others = per[1..].iter().sum::<f64>() / (per.len() - 1) as f64;
        report.push(format!("{shape:?}/{texture:?}: clicked frame {:.3}, propagated {others:.3}", per[0]));
        assert!(others >= 0.85, "{report:?}");
        assert!(per[0] >= others - 0.05, "{report:?}");
    }
    eprintln!("{report:#?}");
}
