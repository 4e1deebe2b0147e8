//! CLIP scoring against transformers: the model, `CLIPImageProcessor`'s preprocessing, the metrics, the
//! ViT-L/14 architecture, and the bad inputs.

use std::collections::BTreeMap;
use tch::{Kind, Tensor};
use vidtune_kernels::metrics::{self, Pairs};
use vidtune_kernels_tests::{assert_close_rel, fixtures_dir, load_fixture};
use vidtune_runtime::config::clip::ClipConfig;
use vidtune_runtime::models::clip::ClipModel;
use vidtune_runtime::score::{score, Comparison, ScoreOptions};
use vidtune_runtime::synthetic::{synthetic_clip, SyntheticSpec};

fn tiny_clip() -> ClipModel {
    ClipModel::load(fixtures_dir().join("clip/model").to_str().unwrap(), "cpu", None).unwrap()
}

fn rgb(t: &Tensor) -> (Vec<u8>, usize, usize) {
    let s = t.size();
    (Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(), s[1] as usize, s[0] as usize)
}

#[test]
fn image_and_text_embeddings_equal_transformers() {
    let clip = tiny_clip();
    let f = load_fixture("clip/clip.safetensors");
    assert_close_rel(
        &clip.image_embeds(&f["tiny_pixel_values"]).unwrap(),
        &f["image_embeds"],
        1e-4,
        "image embeddings",
    );
    assert_close_rel(&clip.text_embeds(&f["input_ids"]).unwrap(), &f["text_embeds"], 1e-4, "text embeddings");
}

#[test]
fn preprocessing_equals_clip_image_processor() {
    let clip = tiny_clip();
    let f = load_fixture("clip/clip.safetensors");
    for i in 0..5 {
        let (px, w, h) = rgb(&f[&format!("tiny_image{i}")]);
        let got = clip.processor.preprocess(&px, w, h, 32).unwrap();
        assert_close_rel(&got, &f["tiny_pixel_values"].get(i), 1e-6, &format!("tiny processor, image {i} ({w}x{h})"));
    }
    // The default processor (224, OpenAI mean / std), several sizes and aspect ratios, up- and down-scaling.
    let default = serde_json::from_str::<vidtune_runtime::models::clip::ClipImageProcessorConfig>("{}").unwrap();
    for i in 0..6 {
        let (px, w, h) = rgb(&f[&format!("pp_image{i}")]);
        let got = default.preprocess(&px, w, h, 224).unwrap();
        assert_close_rel(&got, &f[&format!("pp_pixels{i}")], 1e-6, &format!("default processor, image {i} ({w}x{h})"));
    }
}

#[test]
fn metrics_equal_numpy() {
    let f = load_fixture("clip/clip.safetensors");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("clip/metrics.json")).unwrap()).unwrap();
    let close = |got: f64, key: &str| {
        let w = want[key].as_f64().unwrap();
        assert!((got - w).abs() < 1e-4, "{key}: {got} vs numpy {w}");
    };
    let (e, t) = (&f["metric_image_embeds"], &f["metric_text_embed"]);
    close(metrics::frame_consistency(e, Pairs::All).unwrap().0, "frame_consistency_all");
    let (adj, pairs) = metrics::frame_consistency(e, Pairs::Adjacent).unwrap();
    close(adj, "frame_consistency_adjacent");
    assert_eq!(pairs.len(), 5);
    close(metrics::text_alignment(e, t, false).unwrap().0, "text_alignment");
    close(metrics::text_alignment(e, t, true).unwrap().0, "text_alignment_clamped");
    close(metrics::temporal_flickering(&f["flicker_video"]).unwrap(), "temporal_flickering");
    // Mask IoU: identical masks 1, disjoint 0, both empty 1.
    let a = Tensor::zeros([3, 1, 4, 4], (Kind::Float, tch::Device::Cpu));
    let _ = a.get(0).narrow(1, 0, 2).fill_(1.0);
    let _ = a.get(1).narrow(1, 0, 2).fill_(1.0);
    let b = a.copy();
    let _ = b.get(1).fill_(0.0);
    let _ = b.get(1).narrow(1, 2, 2).fill_(1.0);
    let (mean, per) = metrics::mask_iou(&a, &b).unwrap();
    assert_eq!(per, vec![1.0, 0.0, 1.0]);
    assert!((mean - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn vit_l14_architecture_equals_transformers() {
    let config: ClipConfig =
        serde_json::from_str(include_str!("../configs/clip-vit-large-patch14/config.json")).unwrap();
    let tokenizer = vidtune_runtime::models::ClipTokenizer::bytes_only();
    let _ = tokenizer;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let b = vidtune_runtime::models::nn::Builder::new(vs.root(), vidtune_runtime::models::nn::InitMode::Empty);
    // The same constructor ClipModel::load uses.
    let _text = vidtune_runtime::models::ClipTextTransformer::new(&b, &config.text_config).unwrap();
    let _vision = vidtune_runtime::models::clip_vision::ClipVisionTransformer::new(&b, &config.vision_config).unwrap();
    let _vp = vidtune_runtime::models::nn::Linear::new(&b.sub("visual_projection"), 1024, 768, false);
    let _tp = vidtune_runtime::models::nn::Linear::new(&b.sub("text_projection"), 768, 768, false);
    let _ = b.param("logit_scale", &[], tch::nn::Init::Const(2.6592));
    let got: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(k, v)| (k, v.size())).collect();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("clip/vit_l14_parameters.json")).unwrap())
            .unwrap();
    let want: BTreeMap<String, Vec<i64>> = want
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect()))
        .collect();
    let missing: Vec<_> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).map(|(k, _)| k).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "differs from transformers: missing or wrong {missing:?}, extra {extra:?}"
    );
    assert_eq!(
        got.values().map(|s| s.iter().product::<i64>()).sum::<i64>(),
        427_616_513,
        "ViT-L/14 CLIP parameter count"
    );
}

#[test]
fn scoring_a_clip_and_comparing() {
    let clip = tiny_clip();
    let v = synthetic_clip(&SyntheticSpec { frames: 4, width: 48, height: 40, seed: 1, ..Default::default() })
        .unwrap()
        .video;
    let s = score(&clip, &v, "a red circle moving right", &ScoreOptions::default()).unwrap();
    assert_eq!((s.frames, s.per_frame_alignment.len(), s.pair_similarity.len()), (4, 4, 6));
    assert!(s.frame_consistency <= 100.0 + 1e-9 && s.flicker > 0.0 && s.flicker <= 1.0);
    // The mean is the mean of the per-frame values.
    let m: f64 = s.per_frame_alignment.iter().sum::<f64>() / 4.0;
    assert!((m - s.text_alignment).abs() < 1e-9);
    let adj =
        score(&clip, &v, "a red circle moving right", &ScoreOptions { pairs: Pairs::Adjacent, ..Default::default() })
            .unwrap();
    assert_eq!(adj.pair_similarity.len(), 3);
    let table = Comparison { rows: vec![("all".into(), s.clone()), ("adjacent".into(), adj)], edits: vec![] };
    assert!(table.to_pretty().contains("frame consistency") && table.to_pretty().lines().count() == 6);
    assert!(table.to_markdown().starts_with("| name | text alignment"));
    let csv = table.to_csv();
    assert_eq!(csv.lines().count(), 3);
    let dir = tempfile::tempdir().unwrap();
    for ext in ["md", "csv", "html", "json"] {
        table.save(&dir.path().join(format!("t.{ext}"))).unwrap();
    }
    assert!(table.save(&dir.path().join("t.xlsx")).unwrap_err().to_string().contains("cannot save a table as .xlsx"));
}

#[test]
fn bad_inputs_are_named() {
    let e =
        ClipModel::load(fixtures_dir().join("clip/not_clip").to_str().unwrap(), "cpu", None).unwrap_err().to_string();
    assert!(e.contains("model_type Some(\"bert\") is not a CLIPModel"), "{e}");
    let e = ClipModel::load(fixtures_dir().join("tiny-conv/pipeline").to_str().unwrap(), "cpu", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json is missing"), "{e}");
    let clip = tiny_clip();
    let one = synthetic_clip(&SyntheticSpec { frames: 1, width: 32, height: 32, ..Default::default() }).unwrap().video;
    let e = score(&clip, &one, "x", &ScoreOptions::default()).unwrap_err().to_string();
    assert!(e.contains("at least 2 frames"), "{e}");
    // A prompt longer than 77 tokens is truncated, not refused.
    let v = synthetic_clip(&SyntheticSpec { frames: 2, width: 32, height: 32, ..Default::default() }).unwrap().video;
    assert!(score(&clip, &v, &"a very long prompt ".repeat(40), &ScoreOptions::default()).is_ok());
}

/// LOVEU-TGVE-2023's CLIP-T and CLIP-F as its evaluation script computes them (frames resized to 480² by
/// Pillow, the processor, the image–text logit, the mean cosine over ordered pairs of distinct frames),
/// equal to transformers on the tiny model.
#[test]
fn loveu_clip_metrics_equal_the_challenge_script() {
    use vidtune_runtime::eval::metrics::{clip_metrics, loveu_frames};
    let clip = tiny_clip();
    let f = load_fixture("clip/clip.safetensors");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("clip/metrics.json")).unwrap()).unwrap();
    let frames = f["loveu_frames"].permute([0, 3, 1, 2]).to_kind(Kind::Float) / 127.5 - 1.0;
    let video = vidtune_runtime::media::Video::new(frames, 8.0).unwrap();
    let resized = loveu_frames(&video).unwrap();
    assert_eq!((resized.width(), resized.height(), resized.len()), (480, 480, 4));
    let m = clip_metrics(&clip, &resized, want["loveu_prompt"].as_str().unwrap()).unwrap();
    let (t, fc) = (want["loveu_clip_t"].as_f64().unwrap(), want["loveu_clip_f"].as_f64().unwrap());
    assert!((m.clip_t - t).abs() < 1e-3 * t.abs().max(1.0), "CLIP-T {} vs transformers {t}", m.clip_t);
    assert!((m.clip_f - fc).abs() < 1e-4, "CLIP-F {} vs transformers {fc}", m.clip_f);
}
