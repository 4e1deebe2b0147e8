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
    KeyBuilder::new("tune").text(&model.identity).video(clip).text(prompt).text(&format!("{o:?}")).finish()
}

/// The key of an inversion.
pub fn invert_key(model: &VideoModel, clip: &Video, opts: &InvertOptions) -> String {
    KeyBuilder::new("invert").text(&model.identity).video(clip).text(&format!("{opts:?}")).finish()
}

/// [`tune`], memoised in memory and on disk unless `use_cache` is false.
pub fn tune_cached(
    model: &VideoModel,
    clip: &Video,
    prompt: &str,
    opts: &TuneOptions,
    use_cache: bool,
) -> Result<Rc<VideoModel>> {
    if !use_cache {
        return Ok(Rc::new(tune(model, clip, prompt, opts)?));
    }
    let key = tune_key(model, clip, prompt, opts);
    if let Some(hit) = MEMO.with(|m| m.tuned.get(&key)) {
        bump(|c| c.memory_hits += 1);
        return Ok(hit);
    }
    let disk_path = MEMO.with(|m| m.disk.borrow().get(&key, "vidtune.safetensors"));
    if let Some(path) = disk_path {
        if let Ok(mut loaded) = load_tuned(model.base.clone(), &path) {
            bump(|c| c.disk_hits += 1);
            loaded.identity = key.clone();
            let loaded = Rc::new(loaded);
            MEMO.with(|m| m.tuned.insert(&key, loaded.clone()));
            return Ok(loaded);
        }
    }
    bump(|c| c.misses += 1);
    let mut tuned = tune(model, clip, prompt, opts)?;
    tuned.identity = key.clone();
    let interrupted = tuned.record.as_ref().is_some_and(|r| r.interrupted);
    let tuned = Rc::new(tuned);
    if !interrupted {
        MEMO.with(|m| -> Result<()> {
            m.tuned.insert(&key, tuned.clone());
            let disk = m.disk.borrow();
            let path = disk.path(&key, "vidtune.safetensors");
            save_tuned(&tuned, &path)?;
            disk.commit(&path)
        })?;
    }
    Ok(tuned)
}

/// [`invert`], memoised in memory and on disk unless `use_cache` is false.
pub fn invert_cached(model: &VideoModel, clip: &Video, opts: &InvertOptions, use_cache: bool) -> Result<Latents> {
    if !use_cache {
        return invert(model, clip, opts);
    }
    let key = invert_key(model, clip, opts);
    if let Some(hit) = MEMO.with(|m| m.latents.get(&key)) {
        bump(|c| c.memory_hits += 1);
        return Ok(hit);
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
                return Ok(l);
            }
        }
    }
    bump(|c| c.misses += 1);
    let l = invert(model, clip, opts)?;
    MEMO.with(|m| -> Result<()> {
        m.latents.insert(&key, l.clone());
        let disk = m.disk.borrow();
        let path = disk.path(&key, "latents.safetensors");
        let meta = HashMap::from([("fps".to_string(), l.fps.to_string()), ("steps".to_string(), l.steps.to_string())]);
        safetensors_io::write(&path, &[("latents".to_string(), l.latents.shallow_clone())], meta)?;
        disk.commit(&path)
    })?;
    Ok(l)
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
