//! Tuning and inversion through the memo ([`crate::cache`]): the same model, clip, prompt and options
//! give the stored result without a single step.

use super::invert::{invert, InvertOptions, Latents};
use super::tune::{tune, TuneOptions};
use crate::cache::{CacheCounters, DiskCache, DiskUsage, KeyBuilder, MemoryCache};
use crate::error::Result;
use crate::media::Video;
use crate::video::tuned::{load_tuned, save_tuned};
use crate::video::VideoModel;
use crate::weights::safetensors_io;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

struct Memo {
    tuned: MemoryCache<Rc<VideoModel>>,
    latents: MemoryCache<Latents>,
    disk: RefCell<DiskCache>,
    counters: Cell<CacheCounters>,
}

thread_local! {
    static MEMO: Memo = Memo {
        tuned: MemoryCache::default(),
        latents: MemoryCache::default(),
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

/// The key of a tuning run.
pub fn tune_key(model: &VideoModel, clip: &Video, prompt: &str, opts: &TuneOptions) -> String {
    let o = TuneOptions { checkpoint_every: None, checkpoint_path: None, ..opts.clone() };
    KeyBuilder::new("tune")
        .text(&model.identity)
        .text(&model.base.memo_identity())
        .video(clip)
        .text(prompt)
        .text(&format!("{o:?}"))
        .finish()
}

/// The key of an inversion.
pub fn invert_key(model: &VideoModel, clip: &Video, opts: &InvertOptions) -> String {
    KeyBuilder::new("invert")
        .text(&model.identity)
        .text(&model.base.memo_identity())
        .video(clip)
        .text(&format!("{opts:?}"))
        .finish()
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

/// [`tune`], memoised in memory and on disk unless `use_cache` is false.
pub fn tune_cached(
    model: &VideoModel,
    clip: &Video,
    prompt: &str,
    opts: &TuneOptions,
    use_cache: bool,
) -> Result<Memoised<Rc<VideoModel>>> {
    opts.validate()?;
    let start = std::time::Instant::now();
    let key = tune_key(model, clip, prompt, opts);
    if !use_cache {
        return Ok(done(Rc::new(tune(model, clip, prompt, opts)?), Source::Computed, &key, start));
    }
    if let Some(hit) = MEMO.with(|m| m.tuned.get(&key)) {
        bump(|c| c.memory_hits += 1);
        return Ok(done(hit, Source::Memory, &key, start));
    }
    let disk_path = MEMO.with(|m| m.disk.borrow().get(&key, "vidtune.safetensors"));
    if let Some(path) = disk_path {
        if let Ok(mut loaded) = load_tuned(model.base.clone(), &path) {
            bump(|c| c.disk_hits += 1);
            loaded.identity = key.clone();
            let loaded = Rc::new(loaded);
            MEMO.with(|m| m.tuned.insert(&key, loaded.clone()));
            return Ok(done(loaded, Source::Disk, &key, start));
        }
    }
    bump(|c| c.misses += 1);
    let mut tuned = tune(model, clip, prompt, opts)?;
    tuned.identity = key.clone();
    let interrupted = tuned.record.as_ref().is_some_and(|r| r.interrupted);
    let tuned = Rc::new(tuned);
    let mut out = done(tuned.clone(), Source::Computed, &key, start);
    if !interrupted {
        MEMO.with(|m| m.tuned.insert(&key, tuned.clone()));
        out.store_warning = store("tune", |disk| {
            let path = disk.path(&key, "vidtune.safetensors");
            save_tuned(&tuned, &path)?;
            disk.commit(&path)
        });
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
            if let Some(latents) = t.remove("latents") {
                bump(|c| c.disk_hits += 1);
                let l = Latents {
                    latents: latents.to_device(model.base.device).to_kind(model.kind()),
                    steps: opts.steps,
                    prompt: opts.prompt.clone(),
                    fps: meta.get("fps").and_then(|f| f.parse().ok()).unwrap_or(clip.fps()),
                };
                MEMO.with(|m| m.latents.insert(&key, l.clone()));
                return Ok(done(l, Source::Disk, &key, start));
            }
        }
    }
    bump(|c| c.misses += 1);
    let l = invert(model, clip, opts)?;
    MEMO.with(|m| m.latents.insert(&key, l.clone()));
    let mut out = done(l.clone(), Source::Computed, &key, start);
    out.store_warning = store("invert", |disk| {
        let path = disk.path(&key, "latents.safetensors");
        let meta = HashMap::from([("fps".to_string(), l.fps.to_string()), ("steps".to_string(), l.steps.to_string())]);
        safetensors_io::write(&path, &[("latents".to_string(), l.latents.shallow_clone())], meta)?;
        disk.commit(&path)
    });
    Ok(out)
}

/// Hits and misses so far, entries in memory, and the disk cache's use.
pub fn memo_status() -> (CacheCounters, usize, DiskUsage) {
    MEMO.with(|m| (m.counters.get(), m.tuned.len() + m.latents.len(), m.disk.borrow().usage()))
}

/// Empties the memory and disk caches; returns the number of disk entries removed.
pub fn memo_clear() -> Result<usize> {
    MEMO.with(|m| {
        m.tuned.clear();
        m.latents.clear();
        m.disk.borrow().clear()
    })
}

/// Points the disk cache elsewhere (tests, notebooks).
pub fn set_disk_cache(disk: DiskCache) {
    MEMO.with(|m| *m.disk.borrow_mut() = disk);
}
