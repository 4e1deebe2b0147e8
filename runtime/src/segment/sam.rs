//! Segment Anything through ONNX Runtime (`ort`, the onnxruntime library loaded at run time): an image
//! encoder and a prompt-encoder / mask-decoder with the official export signature (SAM ViT-B/L/H,
//! MobileSAM, SAM-HQ and EdgeSAM exports share it).
//!
//! Preprocessing is SAM's: longest side to 1024 (Pillow bilinear, as `ResizeLongestSide`), pixel mean /
//! std, zero padding right and bottom. Clicks map into that frame (`x · new_w / w`, `y · new_h / h`); a
//! `(0, 0)` point labelled −1 pads prompts without a box; masks are the logits above 0; the low-resolution
//! logits of one frame are fed back as `mask_input` of the next while propagating. Embeddings are
//! computed once per distinct frame.

use super::Frame;
use super::{frame_rgb, FrameMask, FrameSegmenter, Point, Prompt, Step};
use crate::error::{Error, Result};
use crate::media::Video;
use ort::session::Session;
use ort::value::Tensor as OrtTensor;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vidtune_kernels::pil::{resize_u8, Filter};

/// SAM's input side.
pub const SIZE: usize = 1024;
const LOW_RES: usize = 256;
const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const STD: [f32; 3] = [58.395, 57.12, 57.375];
const ENCODER_NAMES: [&str; 5] =
    ["encoder.onnx", "image_encoder.onnx", "vision_encoder.onnx", "sam_image_encoder.onnx", "*encoder*.onnx"];
const DECODER_NAMES: [&str; 5] = [
    "decoder.onnx",
    "mask_decoder.onnx",
    "prompt_encoder_mask_decoder.onnx",
    "sam_mask_decoder.onnx",
    "*decoder*.onnx",
];
const DECODER_INPUTS: [&str; 6] =
    ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"];
const DECODER_OUTPUTS: [&str; 3] = ["masks", "iou_predictions", "low_res_masks"];

fn environment() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let dylib = crate::env::onnxruntime_dylib().filter(|p| p.exists()).ok_or_else(|| {
            "ONNX Runtime not found: install the onnxruntime wheel (./dev.sh does) or set ORT_DYLIB_PATH".to_string()
        })?;
        let builder =
            ort::init_from(&dylib).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", dylib.display()))?;
        builder.with_name("vidtune").build().map_err(|e| format!("ONNX Runtime failed to start: {e}"))
    })
    .as_ref()
    .map_err(|e| Error::Unsupported(e.clone()))
}

/// Finds the first file of `dir` matching one of `names` (a leading `*` matches any prefix).
fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    for name in names {
        if let Some(pattern) = name.strip_prefix('*') {
            let (mid, ext) = pattern.split_once('*').unwrap_or((pattern, ""));
            let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.contains(mid) && n.ends_with(ext)
                    })
                })
                .collect();
            hits.sort();
            if let Some(h) = hits.into_iter().next() {
                return Some(h);
            }
        } else if dir.join(name).is_file() {
            return Some(dir.join(name));
        }
    }
    None
}

/// How the encoder takes its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncoderInput {
    /// `[1, 3, 1024, 1024]`, preprocessed here.
    Preprocessed,
    /// `[H, W, 3]` floats 0–255 (exports that preprocess inside the model).
    Raw,
}

/// Embeddings kept per loaded SAM (a clip of up to this many frames embeds each frame once).
const EMBEDDING_CACHE: usize = 128;

/// A loaded SAM (encoder + decoder sessions) with its embedding cache.
pub struct Sam {
    encoder: Session,
    decoder: Session,
    encoder_input: EncoderInput,
    encoder_input_name: String,
    pub files: (PathBuf, PathBuf),
    pub provider: &'static str,
    cache: HashMap<String, std::rc::Rc<Vec<f32>>>,
    /// Keys of `cache`, oldest first (at most `EMBEDDING_CACHE` are kept: 4 MB each at SAM's size).
    order: std::collections::VecDeque<String>,
    /// How many times the encoder ran (memoised embeddings run it once per frame).
    pub encoder_runs: usize,
}

impl std::fmt::Debug for Sam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sam({}, {}, {})", self.files.0.display(), self.files.1.display(), self.provider)
    }
}

fn names(outlets: &[ort::value::Outlet]) -> Vec<String> {
    outlets.iter().map(|o| o.name().to_string()).collect()
}

/// Whether the ONNX Runtime library in use has the CUDA execution provider (a GPU build): without it,
/// asking for CUDA is refused, never answered by the CPU.
pub fn cuda_available() -> bool {
    use ort::ep::ExecutionProvider;
    environment().is_ok() && ort::ep::CUDA::is_available().unwrap_or(false)
}

impl Sam {
    /// Loads `dir`'s encoder and decoder. `cuda` asks for the CUDA execution provider; failing to register
    /// it is an error, never a silent fallback.
    pub fn load(dir: &Path, cuda: bool) -> Result<Sam> {
        if !dir.is_dir() {
            return Err(if dir.exists() {
                Error::bad_file(dir, "is not a folder of SAM ONNX files")
            } else {
                Error::NotFound(dir.to_path_buf())
            });
        }
        let missing = |what: &str, names: &[&str]| {
            Error::bad_file(dir, format!("has no SAM {what}; looked for {}", names.join(", ")))
        };
        let encoder_path = find(dir, &ENCODER_NAMES).ok_or_else(|| missing("image encoder", &ENCODER_NAMES))?;
        let decoder_path =
            find(dir, &DECODER_NAMES).ok_or_else(|| missing("prompt encoder / mask decoder", &DECODER_NAMES))?;
        let env = environment()?;
        let open = |path: &Path| -> Result<Session> {
            let fail = |e: &dyn std::fmt::Display| Error::bad_file(path, format!("cannot open with ONNX Runtime: {e}"));
            let builder = Session::builder(env).map_err(|e| fail(&e))?;
            let mut builder = if cuda {
                if !cuda_available() {
                    return Err(Error::Unsupported(format!(
                        "the CUDA execution provider could not be registered for {}: this ONNX Runtime library has \
                         none (a GPU build of onnxruntime, e.g. the onnxruntime-gpu wheel, has it)",
                        path.display()
                    )));
                }
                builder.with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()]).map_err(
                    |e| {
                        Error::Unsupported(format!(
                            "the CUDA execution provider could not be registered for {}: {e}",
                            path.display()
                        ))
                    },
                )?
            } else {
                builder.with_execution_providers([ort::ep::CPU::default().build()]).map_err(|e| fail(&e))?
            };
            builder.commit_from_file(path).map_err(|e| fail(&e))
        };
        let encoder = open(&encoder_path)?;
        let decoder = open(&decoder_path)?;
        let (din, dout) = (names(decoder.inputs()), names(decoder.outputs()));
        if DECODER_INPUTS.iter().any(|n| !din.iter().any(|d| d == n))
            || DECODER_OUTPUTS.iter().any(|n| !dout.iter().any(|d| d == n))
        {
            return Err(Error::bad_file(
                &decoder_path,
                format!(
                    "does not have SAM's decoder signature: expected inputs {DECODER_INPUTS:?} and outputs {DECODER_OUTPUTS:?}, got inputs {din:?} and outputs {dout:?}"
                ),
            ));
        }
        let (ein, eout) = (names(encoder.inputs()), names(encoder.outputs()));
        if ein.len() != 1 || !eout.iter().any(|n| n == "image_embeddings") {
            return Err(Error::bad_file(
                &encoder_path,
                format!("does not have SAM's encoder signature: expected one image input and an image_embeddings output, got inputs {ein:?} and outputs {eout:?}"),
            ));
        }
        let rank = encoder.inputs()[0].dtype().tensor_shape().map(|s| s.len()).unwrap_or(4);
        let encoder_input = if rank == 3 { EncoderInput::Raw } else { EncoderInput::Preprocessed };
        Ok(Sam {
            encoder_input_name: ein[0].clone(),
            encoder,
            decoder,
            encoder_input,
            files: (encoder_path, decoder_path),
            provider: if cuda { "CUDA" } else { "CPU" },
            cache: HashMap::new(),
            order: Default::default(),
            encoder_runs: 0,
        })
    }

    /// The image embedding of an 8-bit RGB frame, computed once per distinct frame.
    pub fn embed(&mut self, frame: &Frame) -> Result<std::rc::Rc<Vec<f32>>> {
        let key = format!("{:x}{}x{}", Sha256::digest(&frame.rgb), frame.width, frame.height);
        if let Some(e) = self.cache.get(&key) {
            return Ok(e.clone());
        }
        let input = match self.encoder_input {
            EncoderInput::Preprocessed => {
                OrtTensor::from_array((vec![1i64, 3, SIZE as i64, SIZE as i64], preprocess(frame).0))
            }
            EncoderInput::Raw => OrtTensor::from_array((
                vec![frame.height as i64, frame.width as i64, 3],
                frame.rgb.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
            )),
        }
        .map_err(|e| Error::Invalid(format!("SAM encoder input: {e}")))?;
        let name = self.encoder_input_name.clone();
        let outputs = self
            .encoder
            .run(ort::inputs![name => input])
            .map_err(|e| Error::Invalid(format!("SAM encoder failed: {e}")))?;
        let (shape, data) = outputs["image_embeddings"]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::Invalid(format!("SAM encoder output: {e}")))?;
        if shape.iter().product::<i64>() != 256 * 64 * 64 {
            return Err(Error::Invalid(format!("SAM encoder output has shape {shape:?}, expected [1, 256, 64, 64]")));
        }
        let emb = std::rc::Rc::new(data.to_vec());
        self.encoder_runs += 1;
        if self.order.len() >= EMBEDDING_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.cache.insert(key, emb.clone());
        Ok(emb)
    }

    /// Decodes one prompt; returns the best mask (by predicted IoU) at the frame's size.
    pub fn decode(
        &mut self,
        embedding: &[f32],
        prompt: &Prompt,
        width: usize,
        height: usize,
        mask_input: Option<&[f32]>,
    ) -> Result<FrameMask> {
        let (coords, labels) = prompt_arrays(prompt, width, height);
        let n = labels.len() as i64;
        let t = |shape: Vec<i64>, data: Vec<f32>| {
            OrtTensor::from_array((shape, data)).map_err(|e| Error::Invalid(format!("SAM decoder input: {e}")))
        };
        let mask = match mask_input {
            Some(m) => m.to_vec(),
            None => vec![0.0; LOW_RES * LOW_RES],
        };
        let inputs = ort::inputs![
            "image_embeddings" => t(vec![1, 256, 64, 64], embedding.to_vec())?,
            "point_coords" => t(vec![1, n, 2], coords)?,
            "point_labels" => t(vec![1, n], labels)?,
            "mask_input" => t(vec![1, 1, LOW_RES as i64, LOW_RES as i64], mask)?,
            "has_mask_input" => t(vec![1], vec![if mask_input.is_some() { 1.0 } else { 0.0 }])?,
            "orig_im_size" => t(vec![2], vec![height as f32, width as f32])?,
        ];
        let outputs = self.decoder.run(inputs).map_err(|e| Error::Invalid(format!("SAM decoder failed: {e}")))?;
        let fail = |e: &dyn std::fmt::Display| Error::Invalid(format!("SAM decoder output: {e}"));
        let (mshape, masks) = outputs["masks"].try_extract_tensor::<f32>().map_err(|e| fail(&e))?;
        let (_, ious) = outputs["iou_predictions"].try_extract_tensor::<f32>().map_err(|e| fail(&e))?;
        let (_, low) = outputs["low_res_masks"].try_extract_tensor::<f32>().map_err(|e| fail(&e))?;
        let k = mshape.get(1).copied().unwrap_or(1).max(1) as usize;
        if mshape.len() != 4 || mshape[2] as usize != height || mshape[3] as usize != width {
            return Err(Error::Invalid(format!(
                "SAM decoder returned masks of shape {mshape:?} for a {width}x{height} frame"
            )));
        }
        let best = (0..k).max_by(|&a, &b| ious[a].total_cmp(&ious[b])).unwrap_or(0);
        let plane = width * height;
        let mask: Vec<bool> = masks[best * plane..(best + 1) * plane].iter().map(|&v| v > 0.0).collect();
        let lr = low[best * LOW_RES * LOW_RES..(best + 1) * LOW_RES * LOW_RES].to_vec();
        let area = mask.iter().filter(|&&m| m).count();
        Ok(FrameMask { width, height, mask, confidence: ious[best] as f64, flagged: area == 0, low_res: Some(lr) })
    }
}

/// SAM's preprocessing: `[3, 1024, 1024]` floats and the resized size `(new_w, new_h)`.
pub fn preprocess(frame: &Frame) -> (Vec<f32>, (usize, usize)) {
    let (w, h) = (frame.width, frame.height);
    let (nw, nh) = resized_size(w, h);
    let px =
        if (nw, nh) == (w, h) { frame.rgb.clone() } else { resize_u8(&frame.rgb, w, h, 3, nw, nh, Filter::Bilinear) };
    let mut out = vec![0f32; 3 * SIZE * SIZE];
    for y in 0..nh {
        for x in 0..nw {
            for c in 0..3 {
                out[c * SIZE * SIZE + y * SIZE + x] = (px[(y * nw + x) * 3 + c] as f32 - MEAN[c]) / STD[c];
            }
        }
    }
    (out, (nw, nh))
}

/// `get_preprocess_shape`: longest side 1024, the other `int(side · scale + 0.5)`.
pub fn resized_size(w: usize, h: usize) -> (usize, usize) {
    let scale = SIZE as f64 / w.max(h) as f64;
    (((w as f64 * scale) + 0.5) as usize, ((h as f64 * scale) + 0.5) as usize)
}

/// Point coordinates in the 1024 frame and labels: clicks (1 / 0), box corners (2, 3), or the padding
/// point `(0, 0)` labelled −1 when there is no box.
pub fn prompt_arrays(prompt: &Prompt, width: usize, height: usize) -> (Vec<f32>, Vec<f32>) {
    let (nw, nh) = resized_size(width, height);
    let (sx, sy) = (nw as f64 / width as f64, nh as f64 / height as f64);
    let mut coords = vec![];
    let mut labels = vec![];
    for p in &prompt.points {
        coords.extend([(p.x * sx) as f32, (p.y * sy) as f32]);
        labels.push(if p.positive { 1.0 } else { 0.0 });
    }
    match prompt.bbox {
        Some([x0, y0, x1, y1]) => {
            coords.extend([(x0 * sx) as f32, (y0 * sy) as f32, (x1 * sx) as f32, (y1 * sy) as f32]);
            labels.extend([2.0, 3.0]);
        }
        None => {
            coords.extend([0.0, 0.0]);
            labels.push(-1.0);
        }
    }
    (coords, labels)
}

/// SAM as a [`FrameSegmenter`]: propagation prompts each next frame with the previous mask's box (grown by
/// 10 %) and centroid and its low-resolution logits; when the result's area or overlap with the previous
/// mask is implausible, it re-prompts without the mask input and keeps the better of the two, flagging the
/// frame if neither passes.
impl FrameSegmenter for Sam {
    fn name(&self) -> String {
        format!(
            "Segment Anything ({}, {} execution provider)",
            self.files.1.file_name().unwrap_or_default().to_string_lossy(),
            self.provider
        )
    }

    fn first(&mut self, video: &Video, index: usize, prompt: &Prompt) -> Result<FrameMask> {
        let (frame, _) = frame_rgb(video, index, usize::MAX)?;
        let emb = self.embed(&frame)?;
        self.decode(&emb, prompt, frame.width, frame.height, None)
    }

    fn next(&mut self, video: &Video, step: &Step) -> Result<FrameMask> {
        let prev = step.prev;
        let (frame, _) = frame_rgb(video, step.index, usize::MAX)?;
        let (Some(bbox), Some((cx, cy))) = (prev.bbox(), prev.centroid()) else {
            return Ok(FrameMask { confidence: 0.0, flagged: true, ..prev.clone() });
        };
        let (w, h) = (frame.width as f64, frame.height as f64);
        let (gw, gh) = (0.1 * (bbox[2] - bbox[0]), 0.1 * (bbox[3] - bbox[1]));
        let grown = [(bbox[0] - gw).max(0.0), (bbox[1] - gh).max(0.0), (bbox[2] + gw).min(w), (bbox[3] + gh).min(h)];
        let prompt = Prompt { points: vec![Point { x: cx, y: cy, positive: true }], bbox: Some(grown) };
        let emb = self.embed(&frame)?;
        let sane = |m: &FrameMask| {
            let ratio = m.area() as f64 / prev.area().max(1) as f64;
            (0.5..=2.0).contains(&ratio) && m.iou(prev) >= 0.3
        };
        let first = self.decode(&emb, &prompt, frame.width, frame.height, prev.low_res.as_deref())?;
        if sane(&first) {
            return Ok(first);
        }
        let second = self.decode(&emb, &prompt, frame.width, frame.height, None)?;
        let mut best = if second.iou(prev) > first.iou(prev) { second } else { first };
        if !sane(&best) {
            best.flagged = true;
            best.confidence *= 0.5;
        }
        Ok(best)
    }
}
