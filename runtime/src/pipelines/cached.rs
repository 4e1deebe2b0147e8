//! Tuning, inversion and sampling (co-denoised or not) through the memo ([`crate::cache`]): the same
//! model, clip, prompt and options give the stored result without a single step. A sample is memoised
//! when it is reproducible: with a seed, or from inverted latents without fresh noise.

use super::codenoise::PromptSchedule;
use super::common::Latents;
use super::invert::{invert, InvertOptions};
use super::null_text::NullText;
use super::sample::{sample_prompts, FirstFrame, SampleOptions};
use super::tune::{tune_clips, TuneClip, TuneOptions};
use crate::cache::{CacheCounters, DiskCache, DiskUsage, KeyBuilder, MemoryCache};
use crate::error::Result;
use crate::media::Video;
use crate::video::tuned::{load_tuned, save_tuned};
use crate::video::VideoModel;
use crate::weights::safetensors_io;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use tch::Tensor;

struct Memo {
    tuned: MemoryCache<Rc<VideoModel>>,
    latents: MemoryCache<Latents>,
    videos: MemoryCache<(Video, u64)>,
    disk: RefCell<DiskCache>,
    counters: Cell<CacheCounters>,
}

thread_local! {
    static MEMO: Memo = Memo {
        tuned: MemoryCache::default(),
        latents: MemoryCache::default(),
        videos: MemoryCache::default(),
        disk: RefCell::new(DiskCache::from_env()),
        counters: Cell::new(CacheCounters::default()),
    };
}

fn bump(f: impl FnOnce(&mut CacheCounters)) {
    MEMO.with(|m| {
        let mut c = m.counters.get();
        f(&mut c);
        m.counters.set(c);
    });
}

/// The key of a tuning run: the model, every clip (frames, prompt, masks by content) and the options.
pub fn tune_key(model: &VideoModel, clips: &[TuneClip], opts: &TuneOptions) -> String {
    let o = TuneOptions { checkpoint_every: None, checkpoint_path: None, ..opts.clone() };
    let mut k = KeyBuilder::new("tune").text(&model.identity).text(&model.base.memo_identity());
    for c in clips {
        k = k.video(&c.video).text(&c.prompt);
        k = match &c.masks {
            Some(m) => k.text("masks").tensor(m.tensor()),
            None => k.text("no masks"),
        };
        if !c.controls.is_empty() {
            k = k.controls(&c.controls);
        }
    }
    k.text(&format!("{o:?}")).finish()
}

/// The key of an inversion: the model, the clip, the steps and prompt, and the masks by content.
pub fn invert_key(model: &VideoModel, clip: &Video, opts: &InvertOptions) -> String {
    let k = KeyBuilder::new("invert")
        .text(&model.identity)
        .text(&model.base.memo_identity())
        .video(clip)
        .text(&format!("steps {} prompt {:?}", opts.steps, opts.prompt))
        .text(&match &opts.windows {
            Some(w) => format!("windows {w:?}"),
            None => "whole clip".into(),
        });
    // Without null-text the key is the one made before it existed, so memoised inversions stay valid.
    let k = match &opts.null_text {
        Some(nt) => k.text(&format!("null-text {nt:?}")),
        None => k,
    };
    let k = match &opts.store {
        Some(s) => k.text(&format!("store {s:?}")),
        None => k,
    };
    match &opts.masks {
        Some(m) => k.text("masks").tensor(m.tensor()),
        None => k.text("no masks"),
    }
    .finish()
}

/// The key of a sample (one window or co-denoised): the model, the prompts, the starting latents (with
/// their trajectory and clip) by content, the masks and a first-frame image by content, and every other
/// option. `None` when the run draws noise without a seed: each such call is a new sample.
pub fn sample_key(
    model: &VideoModel,
    prompts: &PromptSchedule,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Option<String> {
    let reproducible = opts.seed.is_some() || (latents.is_some() && opts.eta == 0.0 && opts.renoise == 0.0);
    if !reproducible {
        return None;
    }
    let plain = SampleOptions { masks: None, controls: vec![], ..opts.clone() };
    let mut k = KeyBuilder::new("sample")
        .text(&model.identity)
        .text(&model.base.memo_identity())
        .text(&format!("{prompts:?}"))
        // Without controls the key is the one made before controls existed, so memoised results stay valid.
        .text(&format!("{plain:?}").replace(", controls: []", "").replace(", fusion: None", ""));
    if !opts.controls.is_empty() {
        k = k.controls(&opts.controls);
    }
    k = match &opts.masks {
        Some(m) => k.text("masks").tensor(m.tensor()),
        None => k.text("no masks"),
    };
    if let Some(FirstFrame::Image(img)) = &opts.first_frame {
        k = k.text("first frame").tensor(img.tensor());
    }
    match latents {
        None => k = k.text("from noise"),
        Some(l) => {
            k = k.text(&format!("latents {} {:?}", l.steps, l.prompt)).tensor(&l.latents).tensor(&l.source);
            if let Some(tr) = &l.trajectory {
                for level in tr.iter() {
                    k = k.tensor(level);
                }
            }
            if let Some(clip) = &l.clip {
                k = k.video(clip);
            }
            // Fusion reads what the inversion stored.
            if let (Some(st), Some(_)) = (&l.store, &opts.fusion) {
                k = k.text(&format!("store {:?}", st.options));
            }
            // Null-text embeddings change the sample (they stand for the empty negative prompt, or the source
            // branch's unconditional text).
            let branch = opts.fusion.as_ref().is_some_and(|f| f.source_branch);
            if let Some(nt) = l.null_text.as_ref().filter(|_| opts.negative.is_empty() || branch) {
                k = k.text("null-text");
                for e in nt.embeddings.iter() {
                    k = k.tensor(e);
                }
            }
        }
    }
    Some(k.finish())
}

/// Where a memoised result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Computed by this call (and stored, unless the cache could not be written).
    Computed,
    /// This process's memory.
    Memory,
    /// The disk cache.
    Disk,
}

/// A result with where it came from, its memo key and how long the call took.
#[derive(Debug, Clone)]
pub struct Memoised<T> {
    pub value: T,
    pub source: Source,
    pub key: String,
    pub seconds: f64,
    /// Why the result could not be stored (an unwritable cache): the result is still returned.
    pub store_warning: Option<String>,
}

impl<T> Memoised<T> {
    /// `tune: from the memo (key 3f2a1b2c…), 0.02 s` for hits, `None` for computed results.
    pub fn hit_note(&self, what: &str) -> Option<String> {
        let place = match self.source {
            Source::Computed => return None,
            Source::Memory => "from the memo",
            Source::Disk => "from the memo on disk",
        };
        Some(format!("{what}: {place} (key {}…), {:.2} s", &self.key[..8.min(self.key.len())], self.seconds))
    }
}

fn done<T>(value: T, source: Source, key: &str, start: std::time::Instant) -> Memoised<T> {
    Memoised { value, source, key: key.to_string(), seconds: start.elapsed().as_secs_f64(), store_warning: None }
}

/// Stores a computed result; a failure is a warning, never a lost result.
fn store(what: &str, write: impl FnOnce(&DiskCache) -> Result<()>) -> Option<String> {
    if !MEMO.with(|m| m.disk.borrow().enabled()) {
        return None; // VIDTUNE_CACHE_MAX_GB=0: no disk memo
    }
    let outcome = MEMO.with(|m| write(&m.disk.borrow()));
    outcome.err().map(|e| {
        let dir = MEMO.with(|m| m.disk.borrow().dir.clone());
        format!(
            "the {what} result could not be stored in the memo ({e}); it is returned, but a rerun will compute it \
             again. Set VIDTUNE_CACHE to a writable folder (now {})",
            dir.display()
        )
    })
}

/// [`tune_clips`] of one clip without masks (the common case), memoised.
pub fn tune_cached(
    model: &VideoModel,
    clip: &Video,
    prompt: &str,
    opts: &TuneOptions,
    use_cache: bool,
) -> Result<Memoised<Rc<VideoModel>>> {
    let clips = [TuneClip { video: clip.clone(), prompt: prompt.to_string(), masks: None, controls: vec![] }];
    tune_clips_cached(model, &clips, opts, use_cache)
}

/// [`tune_clips`], memoised in memory and on disk unless `use_cache` is false.
pub fn tune_clips_cached(
    model: &VideoModel,
    clips: &[TuneClip],
    opts: &TuneOptions,
    use_cache: bool,
) -> Result<Memoised<Rc<VideoModel>>> {
    opts.validate()?;
    let start = std::time::Instant::now();
    let key = tune_key(model, clips, opts);
    if !use_cache {
        return Ok(done(Rc::new(tune_clips(model, clips, opts)?), Source::Computed, &key, start));
    }
    // A stored result gets the warning a fresh one would (tune_clips gives it when it runs).
    let few = || {
        if let Some(w) = crate::pipelines::tune::few_steps_warning(&model.base, opts.steps) {
            crate::progress::warn(w);
        }
    };
    if let Some(hit) = MEMO.with(|m| m.tuned.get(&key)) {
        bump(|c| c.memory_hits += 1);
        few();
        return Ok(done(hit, Source::Memory, &key, start));
    }
    let disk_path = MEMO.with(|m| m.disk.borrow().get(&key, "vidtune.safetensors"));
    if let Some(path) = disk_path {
        if let Ok(mut loaded) = load_tuned(model.base.clone(), &path) {
            bump(|c| c.disk_hits += 1);
            loaded.identity = key.clone();
            let loaded = Rc::new(loaded);
            MEMO.with(|m| m.tuned.insert(&key, loaded.clone()));
            few();
            return Ok(done(loaded, Source::Disk, &key, start));
        }
    }
    bump(|c| c.misses += 1);
    let mut tuned = tune_clips(model, clips, opts)?;
    tuned.identity = key.clone();
    let interrupted = tuned.record.as_ref().is_some_and(|r| r.interrupted);
    let tuned = Rc::new(tuned);
    let mut out = done(tuned.clone(), Source::Computed, &key, start);
    if !interrupted {
        MEMO.with(|m| m.tuned.insert(&key, tuned.clone()));
        out.store_warning =
            store("tune", |disk| disk.put(&key, "vidtune.safetensors", |path| save_tuned(&tuned, path).map(|_| ())));
    }
    Ok(out)
}

/// [`invert`], memoised in memory and on disk unless `use_cache` is false.
pub fn invert_cached(
    model: &VideoModel,
    clip: &Video,
    opts: &InvertOptions,
    use_cache: bool,
) -> Result<Memoised<Latents>> {
    let start = std::time::Instant::now();
    let key = invert_key(model, clip, opts);
    if !use_cache {
        return Ok(done(invert(model, clip, opts)?, Source::Computed, &key, start));
    }
    if let Some(hit) = MEMO.with(|m| m.latents.get(&key)) {
        bump(|c| c.memory_hits += 1);
        return Ok(done(hit, Source::Memory, &key, start));
    }
    if let Some(path) = MEMO.with(|m| m.disk.borrow().get(&key, "latents.safetensors")) {
        let meta = safetensors_io::read_metadata(&path).unwrap_or_default();
        if let Ok(mut t) = crate::weights::read_safetensors(&path) {
            if let (Some(latents), Some(source)) = (t.remove("latents"), t.remove("source")) {
                let here = |x: Tensor| x.to_device(model.base.device).to_kind(model.kind());
                let trajectory = t.remove("trajectory").map(|tr| Rc::new(tr.unbind(0).into_iter().map(here).collect()));
                let l = Latents {
                    latents: here(latents),
                    source: here(source),
                    trajectory,
                    clip: Some(clip.clone()),
                    steps: opts.steps,
                    prompt: opts.prompt.clone(),
                    fps: meta.get("fps").and_then(|f| f.parse().ok()).unwrap_or(clip.fps()),
                    null_text: match (t.remove("null_text"), meta.get("null_text_guidance")) {
                        (Some(e), Some(g)) => Some(std::rc::Rc::new(NullText {
                            embeddings: std::rc::Rc::new(e.unbind(0).into_iter().map(here).collect()),
                            guidance: g.parse().unwrap_or(7.5),
                        })),
                        _ => None,
                    },
                    store: meta.get("store").and_then(|m| super::store::store_from(m, &mut t)).map(Rc::new),
                };
                // (An entry that lacks the embeddings or maps it was keyed for is recomputed.)
                if (opts.null_text.is_none() || l.null_text.is_some()) && (opts.store.is_none() || l.store.is_some()) {
                    bump(|c| c.disk_hits += 1);
                    MEMO.with(|m| m.latents.insert(&key, l.clone()));
                    return Ok(done(l, Source::Disk, &key, start));
                }
            }
        }
    }
    bump(|c| c.misses += 1);
    let l = invert(model, clip, opts)?;
    MEMO.with(|m| m.latents.insert(&key, l.clone()));
    let mut out = done(l.clone(), Source::Computed, &key, start);
    // A store kept on disk stays out of the disk memo (writing it there would read every step into memory).
    if l.store.as_ref().is_some_and(|s| s.disk.is_some()) {
        return Ok(out);
    }
    out.store_warning = store("invert", |disk| {
        let mut meta =
            HashMap::from([("fps".to_string(), l.fps.to_string()), ("steps".to_string(), l.steps.to_string())]);
        let mut tensors =
            vec![("latents".to_string(), l.latents.shallow_clone()), ("source".to_string(), l.source.shallow_clone())];
        if let Some(tr) = &l.trajectory {
            tensors.push(("trajectory".to_string(), Tensor::stack(tr, 0)));
        }
        if let Some(nt) = &l.null_text {
            tensors.push(("null_text".to_string(), Tensor::stack(&nt.embeddings, 0)));
            meta.insert("null_text_guidance".to_string(), nt.guidance.to_string());
        }
        if let Some(st) = &l.store {
            meta.insert("store".to_string(), super::store::store_to(st, &mut tensors));
        }
        disk.put(&key, "latents.safetensors", |path| safetensors_io::write(path, &tensors, meta))
    });
    Ok(out)
}

/// [`sample_prompts`] (a sample, or a co-denoised clip with `opts.windows`), memoised in memory and on disk
/// when reproducible ([`sample_key`]) and `use_cache`. Returns the video and the seed it used.
pub fn sample_cached(
    model: &VideoModel,
    prompts: &PromptSchedule,
    latents: Option<&Latents>,
    opts: &SampleOptions,
    use_cache: bool,
) -> Result<Memoised<(Video, u64)>> {
    let start = std::time::Instant::now();
    let key = sample_key(model, prompts, latents, opts).filter(|_| use_cache);
    let Some(key) = key else {
        return Ok(done(sample_prompts(model, prompts, latents, opts)?, Source::Computed, "", start));
    };
    if let Some(hit) = MEMO.with(|m| m.videos.get(&key)) {
        bump(|c| c.memory_hits += 1);
        return Ok(done(hit, Source::Memory, &key, start));
    }
    if let Some(path) = MEMO.with(|m| m.disk.borrow().get(&key, "video.safetensors")) {
        let meta = safetensors_io::read_metadata(&path).unwrap_or_default();
        let seed = meta.get("seed").and_then(|s| s.parse().ok());
        let fps = meta.get("fps").and_then(|s| s.parse().ok());
        if let (Ok(mut t), Some(seed), Some(fps)) = (crate::weights::read_safetensors(&path), seed, fps) {
            if let Some(video) = t.remove("frames").and_then(|f| Video::new(f, fps).ok()) {
                bump(|c| c.disk_hits += 1);
                MEMO.with(|m| m.videos.insert(&key, (video.clone(), seed)));
                return Ok(done((video, seed), Source::Disk, &key, start));
            }
        }
    }
    bump(|c| c.misses += 1);
    let (video, seed) = sample_prompts(model, prompts, latents, opts)?;
    MEMO.with(|m| m.videos.insert(&key, (video.clone(), seed)));
    let mut out = done((video.clone(), seed), Source::Computed, &key, start);
    out.store_warning = store("sample", |disk| {
        let meta =
            HashMap::from([("fps".to_string(), video.fps().to_string()), ("seed".to_string(), seed.to_string())]);
        disk.put(&key, "video.safetensors", |path| {
            safetensors_io::write(path, &[("frames".to_string(), video.frames().shallow_clone())], meta)
        })
    });
    Ok(out)
}

/// Hits and misses so far, entries in memory, and the disk cache's use.
pub fn memo_status() -> (CacheCounters, usize, DiskUsage) {
    MEMO.with(|m| (m.counters.get(), m.tuned.len() + m.latents.len() + m.videos.len(), m.disk.borrow().usage()))
}

/// Empties the memory and disk caches; returns the number of disk entries removed.
pub fn memo_clear() -> Result<usize> {
    MEMO.with(|m| {
        m.tuned.clear();
        m.latents.clear();
        m.videos.clear();
        m.disk.borrow().clear()
    })
}

/// Points the disk cache elsewhere (tests, notebooks).
pub fn set_disk_cache(disk: DiskCache) {
    MEMO.with(|m| *m.disk.borrow_mut() = disk);
}
